import numpy as np
import pytest
import torch

from diffmem.data import GaussianMixture, load_dataset, parse_spec
from diffmem.errors import DiffmemError


def test_digits_embedded_default():
    ds = load_dataset("digits")
    assert ds.shape == (1, 8, 8)
    assert len(ds.pool) == 1500 and len(ds.test) == 297
    # centred per pixel on the pool; pixel range [-1, 1] before centring
    assert ds.pool.mean(0).abs().max() < 1e-5
    px = ds.to_pixels(ds.pool)
    assert px.min() >= -1 - 1e-6 and px.max() <= 1 + 1e-6
    assert ds.labels is not None and len(ds.labels) == 1500
    # pool and test are disjoint images
    flat_p = {tuple(r) for r in ds.to_pixels(ds.pool).reshape(1500, -1).round(decimals=4).tolist()}
    overlap = sum(tuple(r) in flat_p for r in ds.to_pixels(ds.test).reshape(297, -1).round(decimals=4).tolist())
    assert overlap <= 3  # digits has a handful of exact duplicate images, nothing more


def test_subsets_are_nested_and_seeded():
    ds = load_dataset("digits")
    a, b = ds.subset(64, 3), ds.subset(128, 3)
    assert torch.equal(a, b[:64])
    assert not torch.equal(ds.subset(64, 3), ds.subset(64, 4))
    with pytest.raises(DiffmemError, match="exceeds"):
        ds.subset(5000, 0)
    with pytest.raises(DiffmemError, match="positive"):
        ds.subset(0, 0)


def test_gmm_exact_score_matches_autograd():
    gm = GaussianMixture(torch.ones(8, dtype=torch.float64).float())
    x = torch.randn(64, 8, dtype=torch.float32) * 2
    for sigma in (0.0, 0.3, 2.0):
        xr = x.clone().requires_grad_(True)
        lp = gm.log_prob(xr, torch.full((64,), sigma))
        (g,) = torch.autograd.grad(lp.sum(), xr)
        torch.testing.assert_close(gm.score(x, torch.full((64,), sigma)), g, atol=1e-5, rtol=1e-5)
    # denoiser = posterior mean: at sigma -> large it tends to 0 (the data mean)
    assert gm.denoise(x, torch.full((64,), 1e4)).abs().max() < 1e-3


def test_gmm_log_prob_normalised_in_1d():
    gm = GaussianMixture(torch.tensor([1.5]))
    xs = torch.linspace(-12, 12, 20001)[:, None]
    p = gm.log_prob(xs, torch.full((len(xs),), 0.7)).exp()
    assert abs(float(torch.trapezoid(p, xs[:, 0])) - 1) < 1e-4


def test_gmm_dataset_has_exact_and_moments():
    ds = load_dataset("gmm:d=4,pool=4000,test=500,seed=1")
    assert ds.shape == (4,) and ds.exact is not None and len(ds.test) == 500
    x = ds.pool
    assert abs(float((x @ torch.ones(4) / 4).abs().mean()) - 1) < 0.1  # half the mass at +-1


def _write_pngs(folder, n, size=(20, 14)):
    from PIL import Image

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(a).save(folder / f"img_{i:03d}.png")


def test_image_folder_loader(tmp_path):
    _write_pngs(tmp_path / "imgs" / "sub", 12)
    ds = load_dataset(str(tmp_path / "imgs") + "?size=8&test=2")
    assert ds.shape == (1, 8, 8)
    assert len(ds.pool) == 10 and len(ds.test) == 2
    assert ds.pool.mean(0).abs().max() < 1e-5
    px = ds.to_pixels(ds.pool)
    assert px.min() >= -1 - 1e-6 and px.max() <= 1 + 1e-6
    rgb = load_dataset(str(tmp_path / "imgs") + "?size=6&gray=0&test=0.25")
    assert rgb.shape == (3, 6, 6) and len(rgb.test) == 3


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DiffmemError, match="holds 0 images"):
        load_dataset(str(tmp_path / "empty"))
    _write_pngs(tmp_path / "bad", 3)
    (tmp_path / "bad" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(DiffmemError, match="cannot read image"):
        load_dataset(str(tmp_path / "bad"))


def test_array_loaders(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, size=(20, 8, 8), dtype=np.uint8)
    np.save(tmp_path / "a.npy", imgs)
    ds = load_dataset(str(tmp_path / "a.npy") + "?test=4")
    assert ds.shape == (1, 8, 8) and len(ds.pool) == 16
    torch.testing.assert_close(ds.to_pixels(ds.test).min(), torch.tensor(-1.0), atol=0.01, rtol=0)
    np.savez(tmp_path / "b.npz", x=rng.normal(size=(30, 5)).astype(np.float32), y=np.arange(30))
    ds = load_dataset(str(tmp_path / "b.npz") + "?centre=0&test=10")
    assert ds.shape == (5,) and ds.mean is None and ds.labels is not None and len(ds.labels) == 20
    hwc = rng.normal(size=(10, 6, 6, 3)).astype(np.float32)
    np.save(tmp_path / "c.npy", hwc)
    assert load_dataset(str(tmp_path / "c.npy")).shape == (3, 6, 6)


@pytest.mark.parametrize("make, match", [
    (lambda p: np.save(p / "x.npy", np.array([[0.0, np.nan]] * 5)), "NaN or inf"),
    (lambda p: np.save(p / "x.npy", np.zeros((2, 3))), "need at least 2 training points"),
    (lambda p: np.save(p / "x.npy", np.zeros(7)), "shape \\(N, ...\\)"),
    (lambda p: np.savez(p / "x.npz", a=np.zeros((5, 2)), b=np.zeros((5, 2))), "say which"),
])
def test_array_bad_input(tmp_path, make, match):
    make(tmp_path)
    f = next(tmp_path.iterdir())
    with pytest.raises(DiffmemError, match=match):
        load_dataset(str(f))


def test_spec_errors(tmp_path):
    with pytest.raises(DiffmemError, match="data not found"):
        load_dataset(str(tmp_path / "missing"))
    with pytest.raises(DiffmemError, match="takes no option"):
        load_dataset("gmm:d=8,width=3")
    with pytest.raises(DiffmemError, match="empty data spec"):
        parse_spec("")
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(DiffmemError, match="unsupported file type"):
        load_dataset(str(tmp_path / "t.txt"))
