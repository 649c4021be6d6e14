"""Metrics: two-nearest kernel vs brute force, f_mem and its bootstrap, FD/KID, feature net, quality reference."""

import math
import types

import numpy as np
import pytest
import scipy.linalg
import torch

from diffmem.errors import DiffmemError
from diffmem.metrics import memorization_fraction, nearest_ratios, two_nearest
from diffmem.metrics.memorization import bootstrap_fraction
from diffmem.metrics.nn import choose_blocks
from diffmem.metrics.quality import (
    FIDInceptionV3,
    GaussianStats,
    extract_features,
    find_inception_weights,
    frechet_distance,
    frechet_distance_features,
    inception_features,
    kid,
    load_feature_net,
    load_inception,
    save_feature_net,
    train_feature_net,
)


def brute_two_nearest(q, r):
    """float64 broadcast reference: sorted distances and the full index order."""
    q = torch.as_tensor(q, dtype=torch.float64).reshape(len(q), -1)
    r = torch.as_tensor(r, dtype=torch.float64).reshape(len(r), -1)
    d = (q[:, None, :] - r[None, :, :]).pow(2).sum(-1).sqrt()
    v, i = d.sort(1)
    return v[:, 0].numpy(), v[:, 1].numpy(), i[:, 0].numpy()


def _data(m=53, n=97, d=11, seed=0, offset=3.0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(m, d, generator=g) + offset
    r = torch.randn(n, d, generator=g) + offset
    r[10] = q[0]  # exact duplicate
    r[20] = q[1]  # duplicated twice in the references: d1 = d2 = 0
    r[21] = q[1]
    r[30] = q[2] + 1e-3  # near duplicate
    return q, r


# ----------------------------------------------------------------------------- two_nearest

@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("blocks", [(None, None), (7, 5), (1, 2), (53, 97), (16, 96), (17, 3)])
def test_two_nearest_matches_brute_force(dtype, blocks):
    q, r = _data()
    b1, b2, bi = brute_two_nearest(q, r)
    d1, d2, i1 = two_nearest(q, r, block_q=blocks[0], block_r=blocks[1], dtype=dtype)
    assert d1.dtype == dtype and i1.dtype == torch.long
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(d1.numpy(), b1, rtol=tol, atol=tol)
    np.testing.assert_allclose(d2.numpy(), b2, rtol=tol, atol=tol)
    ties = np.isclose(b1, b2, rtol=0, atol=1e-9)
    assert (i1.numpy()[~ties] == bi[~ties]).all()
    # exact duplicates give exactly zero; a doubled one gives d1 = d2 = 0
    assert d1[0] == 0 and int(i1[0]) == 10
    assert d1[1] == 0 and d2[1] == 0 and int(i1[1]) in (20, 21)
    assert abs(float(d1[2]) - 1e-3 * math.sqrt(11)) < 1e-5


def test_two_nearest_numpy_flattening_and_no_refine():
    q, r = _data(m=9, n=40, d=12)
    qn, rn = q.numpy().reshape(9, 3, 4), r.numpy().reshape(40, 2, 6)  # flattened per row
    d1, d2, i1 = two_nearest(qn, rn)
    assert isinstance(d1, np.ndarray) and d1.shape == (9,)
    b1, b2, _ = brute_two_nearest(q, r)
    np.testing.assert_allclose(d1, b1, atol=1e-5)
    # without refinement the matmul distances are still close (clamped at 0)
    e1, e2, _ = two_nearest(q, r, refine=False, centre=False)
    np.testing.assert_allclose(e1.numpy(), b1, atol=5e-3)
    np.testing.assert_allclose(e2.numpy(), b2, atol=5e-3)
    assert (e1 >= 0).all()
    # one-dimensional input = N scalars
    d1, d2, i1 = two_nearest(np.array([0.1, 5.0]), np.array([0.0, 1.0, 4.0, 7.0]))
    np.testing.assert_allclose(d1, [0.1, 1.0], atol=1e-6)
    np.testing.assert_allclose(d2, [0.9, 2.0], atol=1e-6)
    assert list(i1) == [0, 2]


def test_two_nearest_tiny_budget_and_memmap(tmp_path):
    q, r = _data(m=31, n=77, d=9)
    np.save(tmp_path / "r.npy", r.numpy())
    rm = np.load(tmp_path / "r.npy", mmap_mode="r")
    b1, b2, _ = brute_two_nearest(q, r)
    d1, d2, _ = two_nearest(q.numpy(), rm, max_bytes=4096)
    np.testing.assert_allclose(d1, b1, atol=1e-5)
    np.testing.assert_allclose(d2, b2, atol=1e-5)


def test_choose_blocks_respects_budget():
    for m, n, d in [(20000, 100000, 1024), (1000, 4096, 1024), (5, 3, 2)]:
        for budget in (1 << 20, 1 << 26, 1 << 30):
            bq, br = choose_blocks(m, n, d, 4, budget)
            assert 1 <= bq <= m and 2 <= br <= max(n, 2)
            assert 4 * (3 * bq * br + (bq + 2 * br) * d) <= budget
    with pytest.raises(DiffmemError):
        choose_blocks(10, 10, 10**6, 4, 1000)


def test_two_nearest_errors():
    with pytest.raises(DiffmemError, match="at least 2 reference"):
        two_nearest(torch.zeros(3, 2), torch.zeros(1, 2))
    with pytest.raises(DiffmemError, match="features"):
        two_nearest(torch.zeros(3, 2), torch.zeros(5, 3))
    with pytest.raises(DiffmemError, match="numeric"):
        two_nearest(np.array([["a", "b"]]), np.zeros((3, 2)))


# ----------------------------------------------------------------------------- f_mem

def test_fmem_copies_fresh_and_mixture():
    g = torch.Generator().manual_seed(1)
    d = 32
    train = torch.randn(400, d, generator=g)
    copies = train[:200] + 1e-3 * torch.randn(200, d, generator=g)
    fresh = torch.randn(300, d, generator=g)
    r = memorization_fraction(copies, train)
    assert r["f_mem"] == 1.0 and r["memorized"] == list(range(200)) and r["nearest_train"] == list(range(200))
    assert memorization_fraction(fresh, train)["f_mem"] == 0.0  # false-positive rate ~ k^d, negligible
    mix = torch.cat([copies[:60], fresh[:240]])  # 20 % copies
    r = memorization_fraction(mix, train, n_boot=2000, seed=3)
    assert r["f_mem"] == pytest.approx(0.2) and r["memorized"] == list(range(60))
    assert r["n_samples"] == 300 and r["n_train"] == 400 and r["threshold"] == pytest.approx(1 / 3)
    lo, hi = r["ci95"]
    assert lo < 0.2 < hi
    assert r["stderr"] == pytest.approx(math.sqrt(0.2 * 0.8 / 300), rel=0.1)
    # deterministic given the seed; a different seed moves only the error bars
    assert memorization_fraction(mix, train, n_boot=2000, seed=3) == r
    assert memorization_fraction(mix, train, n_boot=2000, seed=4)["f_mem"] == r["f_mem"]


def test_fmem_ratio_definition_and_threshold():
    train = np.array([[0.0], [1.0], [10.0], [10.0]])
    samples = np.array([[0.2], [0.3], [10.0], [0.5]])  # ratios 0.25, 0.3/0.7, 0 (d1 = d2 = 0), 1
    r = nearest_ratios(samples, train)
    np.testing.assert_allclose(r["ratio"], [0.25, 0.3 / 0.7, 0.0, 1.0], atol=1e-6)
    assert memorization_fraction(samples, train)["memorized"] == [0, 2]
    assert memorization_fraction(samples, train, threshold=0.5)["memorized"] == [0, 1, 2]
    # strict inequality: a ratio equal to the threshold is not memorised
    assert memorization_fraction(samples, train, threshold=0.25)["memorized"] == [2]


def test_bootstrap_matches_index_resampling():
    flags = np.zeros(500, bool)
    flags[:150] = True
    b = bootstrap_fraction(flags, n_boot=4000, seed=0)
    rng = np.random.default_rng(1)
    idx_boot = flags[rng.integers(0, 500, size=(4000, 500))].mean(1)
    assert b["stderr"] == pytest.approx(idx_boot.std(ddof=1), rel=0.06)
    assert b["ci95"][0] == pytest.approx(np.percentile(idx_boot, 2.5), abs=0.01)
    assert b["ci95"][1] == pytest.approx(np.percentile(idx_boot, 97.5), abs=0.01)
    a = bootstrap_fraction(flags, n_boot=0)  # analytic
    assert a["stderr"] == pytest.approx(math.sqrt(0.3 * 0.7 / 500))
    assert a["ci95"][0] < 0.3 < a["ci95"][1]


@pytest.mark.parametrize("case,match", [
    ("nan_samples", "samples contain NaN"),
    ("inf_train", "training points contain NaN"),
    ("dims", "features per row"),
    ("one_train", "at least 2 training points"),
    ("empty", "no samples"),
    ("threshold0", "threshold"),
    ("threshold_big", "threshold"),
])
def test_fmem_validation(case, match):
    s, t, thr = np.zeros((5, 4)), np.random.default_rng(0).normal(size=(6, 4)), 1 / 3
    if case == "nan_samples":
        s[3, 1] = np.nan
    elif case == "inf_train":
        t[2, 0] = np.inf
    elif case == "dims":
        t = t[:, :3]
    elif case == "one_train":
        t = t[:1]
    elif case == "empty":
        s = s[:0]
    elif case == "threshold0":
        thr = 0.0
    elif case == "threshold_big":
        thr = 1.5
    with pytest.raises(DiffmemError, match=match):
        memorization_fraction(s, t, threshold=thr)


# ----------------------------------------------------------------------------- Fréchet distance and KID

def _scipy_fd(mu1, c1, mu2, c2):
    covmean = scipy.linalg.sqrtm(c1 @ c2).real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(c1) + np.trace(c2) - 2 * np.trace(covmean))


def test_frechet_closed_forms():
    rng = np.random.default_rng(0)
    d = 6
    a = rng.normal(size=(d, d))
    b = rng.normal(size=(d, d))
    c1, c2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    assert frechet_distance(mu1, mu2, c1, c2) == pytest.approx(_scipy_fd(mu1, c1, mu2, c2), rel=1e-8)
    # same covariance, shifted means: exactly ‖Δμ‖²
    assert frechet_distance(mu1, mu2, c1, c1) == pytest.approx(((mu1 - mu2) ** 2).sum(), rel=1e-8)
    # 1-D Gaussians: (μ1-μ2)² + (σ1-σ2)²
    assert frechet_distance([0.0], [1.0], [[4.0]], [[1.0]]) == pytest.approx(1.0 + 1.0)
    # a singular covariance is fine
    c3 = np.diag([1.0, 0.0, 2.0])
    assert frechet_distance(np.zeros(3), np.zeros(3), c3, c3) == pytest.approx(0.0, abs=1e-10)


def test_frechet_from_features():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(500, 5)) @ rng.normal(size=(5, 5))
    y = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5)) + 0.5
    assert frechet_distance_features(x, x) == pytest.approx(0.0, abs=1e-9)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0])
    assert frechet_distance_features(x, x + shift) == pytest.approx((shift**2).sum(), rel=1e-9)
    ref = _scipy_fd(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
    assert frechet_distance_features(x, y) == pytest.approx(ref, rel=1e-7)
    # fewer points than dimensions: the data factor path equals the moment path
    xs, ys = rng.normal(size=(8, 20)), rng.normal(size=(12, 20)) + 0.3
    sx, sy = GaussianStats.from_features(xs), GaussianStats.from_features(ys)
    assert sx.factor.shape == (20, 8)
    with pytest.warns(UserWarning, match="rank-deficient"):
        fd = frechet_distance(sx, sy)
    direct = frechet_distance(xs.mean(0), ys.mean(0), np.cov(xs, rowvar=False), np.cov(ys, rowvar=False))
    assert fd == pytest.approx(direct, rel=1e-7)


def test_kid_same_and_shifted():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(600, 16)), rng.normal(size=(600, 16))
    m, s = kid(x, y, n_subsets=20, subset_size=200, seed=0)
    assert abs(m) < 3 * s / math.sqrt(20) + 1e-3
    m2, s2 = kid(x, y + 0.5, n_subsets=20, subset_size=200, seed=0)
    assert m2 > 10 * max(abs(m), s)
    assert kid(x, y, n_subsets=5, subset_size=100, seed=1) == kid(x, y, n_subsets=5, subset_size=100, seed=1)
    with pytest.raises(DiffmemError):
        kid(x[:1], y)


# ----------------------------------------------------------------------------- feature net

def _digits_like(n=300, seed=0, shape=(1, 8, 8)):
    """Ten noisy prototypes: labelled stand-in data."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.randn(10, *shape, generator=g)
    y = torch.arange(n) % 10
    return protos[y] + 0.3 * torch.randn(n, *shape, generator=g), y


def test_feature_net_deterministic_and_roundtrip(tmp_path):
    x, y = _digits_like()
    a = train_feature_net(x, y, seed=0, steps=60)
    b = train_feature_net(x, y, seed=0, steps=60)
    c = train_feature_net(x, y, seed=1, steps=60)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k
    assert not torch.equal(a.encoder[1].weight, c.encoder[1].weight)
    assert a.mode == "classifier" and a.arch == "mlp"
    state = torch.random.get_rng_state()
    train_feature_net(x, y, seed=0, steps=5)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    p = save_feature_net(a, tmp_path / "net.safetensors", meta={"data": "toy"})
    net, meta = load_feature_net(p, expected_shape=(1, 8, 8))
    assert meta == {"data": "toy"}
    np.testing.assert_array_equal(extract_features(net, x), extract_features(a, x))
    with pytest.raises(DiffmemError, match="shape"):
        load_feature_net(p, expected_shape=(64,))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(DiffmemError):
        load_feature_net(tmp_path / "junk.safetensors")


def test_feature_net_learns_and_separates():
    x, y = _digits_like(500)
    net = train_feature_net(x, y, seed=0, steps=300)
    with torch.no_grad():
        acc = (net(x).argmax(1) == y).float().mean()
    assert acc > 0.95
    f = extract_features(net, x)
    assert f.shape == (500, 64)
    assert abs(f.mean()) < 1e-4 and f.var(0, ddof=1).mean() == pytest.approx(1.0, rel=1e-3)  # standardised
    # unlabelled vectors -> denoising autoencoder; 16x16 images -> conv encoder
    dae = train_feature_net(x.reshape(500, -1), None, seed=0, steps=50)
    assert dae.mode == "dae" and dae.arch == "mlp"
    xi, yi = _digits_like(64, shape=(1, 16, 16))
    conv = train_feature_net(xi, yi, seed=0, steps=10)
    assert conv.arch == "conv" and extract_features(conv, xi).shape == (64, 64)


# ----------------------------------------------------------------------------- quality reference

def _stand_in_ds(n=400, n_test=200, labels=True):
    x, y = _digits_like(n + n_test, seed=5)
    return types.SimpleNamespace(name="toy", shape=(1, 8, 8), pool=x[:n], test=x[n:],
                                 labels=y[:n] if labels else None, mean=None,
                                 subset=lambda k, seed=0: x[:k], to_pixels=lambda z: z.clamp(-1, 1))


def _cfg(**ev):
    from diffmem.config import RunConfig

    cfg = RunConfig()
    for k, v in ev.items():
        setattr(cfg.eval, k, v)
    return cfg


def test_quality_reference_for_run(tmp_path, monkeypatch):
    import diffmem.quality
    from diffmem.quality import QualityReference

    monkeypatch.setattr(diffmem.quality, "FEATURE_NET_STEPS", 150)
    ds = _stand_in_ds()
    qr = QualityReference.for_run(_cfg(), ds, tmp_path / "quality_net.safetensors")
    net_file = tmp_path / "quality_net.safetensors"
    assert net_file.is_file()
    mtime = net_file.stat().st_mtime_ns
    names = ["fd_pixel", "fd_feat", "kid"]
    good = qr(ds.pool[:200], names)
    bad = qr(ds.pool[:200] + 1.0 * torch.randn(200, 1, 8, 8, generator=torch.Generator().manual_seed(0)), names)
    assert set(good) == set(names)
    for k in names:
        assert good[k][0] < bad[k][0], k
    assert good["fd_pixel"][1] is None and good["kid"][1] >= 0
    assert qr(ds.test, ["fd_feat"])["fd_feat"][0] == pytest.approx(0.0, abs=1e-6)
    # cached net is reused, deterministic results
    qr2 = QualityReference.for_run(_cfg(), ds, tmp_path / "quality_net.safetensors")
    assert net_file.stat().st_mtime_ns == mtime
    assert qr2(ds.pool[:200], names) == good
    # an explicit shared path is created once and then reused
    shared = tmp_path / "shared" / "net.safetensors"
    QualityReference.for_run(_cfg(feature_net=str(shared)), ds, tmp_path / "other")
    assert shared.is_file() and not (tmp_path / "other" / "quality_net.safetensors").exists()
    # unlabelled data -> DAE features; fewer than 2 samples -> NaN
    qd = QualityReference.for_run(_cfg(), _stand_in_ds(labels=False), tmp_path / "dae" / "quality_net.safetensors")
    assert qd.feature_net.mode == "dae"
    assert math.isnan(qd(ds.pool[:1], ["fd_feat"])["fd_feat"][0])


def test_quality_reference_errors(tmp_path, monkeypatch):
    from diffmem.quality import QualityReference

    ds = _stand_in_ds()
    with pytest.raises(DiffmemError, match="unknown quality metric 'fdd'"):
        QualityReference.for_run(_cfg(quality=["fdd"]), ds, tmp_path)
    qr = QualityReference.for_run(_cfg(quality=["fd_pixel"]), ds, tmp_path)
    with pytest.raises(DiffmemError, match="unknown quality metric"):
        qr(ds.pool[:10], ["is"])
    # no Inception weights on this machine: a clear message naming where to put them
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("DIFFMEM_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(DiffmemError, match=r"never downloads.*\.cache/diffmem/pt_inception-2015-12-05\.pth"):
        QualityReference.for_run(_cfg(quality=["fid"]), ds, tmp_path)
    monkeypatch.setenv("DIFFMEM_INCEPTION_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(DiffmemError, match="not a file"):
        find_inception_weights()


def test_inception_from_local_state_dict(tmp_path, monkeypatch):
    """Architecture plumbing only (random weights): load a pytorch-fid-style state dict, get 2048-d features."""
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    sd = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    n_params = sum(v.numel() for k, v in sd.items() if "running" not in k)
    # torchvision's inception_v3 has 27,161,264 parameters; minus its aux head (3,326,696) and with the
    # FID graph's 1008-way fc instead of 1000 (+16,392):
    assert n_params == 27_161_264 - 3_326_696 + 16_392
    path = tmp_path / "pt_inception.pth"
    torch.save(sd, path)
    monkeypatch.setenv("DIFFMEM_INCEPTION_WEIGHTS", str(path))
    assert find_inception_weights() == path
    loaded = load_inception()
    img = torch.rand(1, 1, 28, 28)
    f1 = inception_features(loaded, img)
    f2 = inception_features(net, img)
    assert f1.shape == (1, 2048)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    torch.save({"conv.weight": torch.zeros(3)}, tmp_path / "wrong.pth")
    with pytest.raises(DiffmemError, match="does not hold FID Inception weights"):
        load_inception(tmp_path / "wrong.pth")


class _Det(torch.nn.Module):
    """Stand-in for the TorchScript detector: [0, 255] images -> per-channel means and maxima."""

    def forward(self, x, return_features: bool = False):
        return torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)


def test_inception_torchscript_detector(tmp_path, monkeypatch):
    from diffmem.quality import QualityReference

    path = tmp_path / "inception-2015-12-05.pt"
    torch.jit.script(_Det()).save(str(path))
    f = inception_features(load_inception(path), torch.full((3, 1, 8, 8), 0.5))
    np.testing.assert_allclose(f, np.full((3, 6), 128.0), rtol=1e-6)  # quantised to 8 bits, grey -> RGB
    # fid through the run-level reference, with weights found via the environment
    monkeypatch.setenv("DIFFMEM_INCEPTION_WEIGHTS", str(path))
    ds = _stand_in_ds()
    qr = QualityReference.for_run(_cfg(quality=["fid"]), ds, tmp_path)
    same, _ = qr(ds.test, ["fid"])["fid"]
    other, _ = qr(ds.pool[:200] * 0.2, ["fid"])["fid"]
    assert same == pytest.approx(0.0, abs=1e-6) and other > 1.0
    vec = types.SimpleNamespace(**{**vars(ds), "shape": (64,)})
    with pytest.raises(DiffmemError, match="fid needs image data"):
        QualityReference.for_run(_cfg(quality=["fid"]), vec, tmp_path)


def test_finite_check_tolerates_overflowing_row_sums():
    train = np.full((4, 3), 3e38, dtype=np.float32)  # row sums overflow float32, values are finite
    train[1] *= -1
    train[2, 0] = 0
    r = memorization_fraction(np.zeros((2, 3), np.float32), train, n_boot=10)
    assert r["n_train"] == 4
