"""Backbones: exact BUBM25 parameter counts, shapes, training behaviour, errors."""

import pytest
import torch

from diffmem.denoiser import EpsDenoiser
from diffmem.errors import DiffmemError
from diffmem.losses import DDPMSigmaSampler, dsm_loss
from diffmem.models import MLP, UNet, build_backbone, count_params, sinusoidal_embedding


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These models are tiny: intra-op threads only add overhead, and on a loaded
    # 2-core machine OpenMP spin-waits make a step up to 100x slower.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_gmm_preset_has_bubm25_parameter_count():
    assert count_params(build_backbone("gmm", (8,))) == 102_024


@pytest.mark.parametrize("width", [8, 16, 32])
def test_bubm25_unet_parameter_count(width):
    p = count_params(build_backbone("bubm25", (1, 32, 32), width=width))
    assert p == 3910 * width**2 + 606 * width + 1


def test_embedding_is_fixed_and_separates_labels():
    m = build_backbone("gmm", (8,))
    assert not any("embed" in name for name, _ in m.named_parameters())
    e = sinusoidal_embedding(torch.tensor([0.0, 10.5, 11.0, 999.0]), 64)
    assert e.shape == (4, 64)
    assert torch.allclose(e.norm(dim=1), torch.full((4,), 32**0.5))
    assert (e[1] - e[2]).abs().max() > 1e-2  # fractional labels are resolved
    assert sinusoidal_embedding(torch.zeros(2), 7).shape == (2, 7)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_unet_output_shape(size):
    torch.manual_seed(0)
    m = build_backbone("bubm25", (1, size, size), width=8)
    x = torch.randn(2, 1, size, size)
    y = m(x, torch.tensor([1.0, 998.5]))
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_unet_multichannel_and_custom_levels():
    m = build_backbone("unet", (3, 8, 8), width=16, mults=(1, 2), attn=(False, True), blocks=1, dropout=0.0)
    x = torch.randn(3, 3, 8, 8)
    assert m(x, torch.rand(3) * 999).shape == x.shape


def test_mlp_vectors_and_images():
    m = build_backbone("mlp", (5,), width=32, blocks=2)
    assert m(torch.randn(4, 5), torch.rand(4)).shape == (4, 5)
    m = build_backbone("mlp", (1, 8, 8), width=32)
    assert m(torch.randn(4, 1, 8, 8), torch.rand(4)).shape == (4, 1, 8, 8)
    assert count_params(MLP((8,), width=128, blocks=5)) == 102_024 + 2 * (2 * (128 * 128 + 128) + 2 * 128)


@pytest.mark.parametrize("name,shape,kw", [("gmm", (8,), {}), ("bubm25", (1, 8, 8), {"width": 8})])
def test_output_depends_on_label(name, shape, kw):
    torch.manual_seed(0)
    m = build_backbone(name, shape, **kw).eval()
    x = torch.randn(1, *shape).repeat(2, *([1] * len(shape)))
    y = m(x, torch.tensor([10.0, 900.0]))
    assert (y[0] - y[1]).abs().max() > 1e-4


@pytest.mark.parametrize("name,shape,kw", [("mlp", (1, 8, 8), {"width": 64}), ("bubm25", (1, 8, 8), {"width": 8})])
def test_backbone_with_eps_denoiser_learns(name, shape, kw):
    torch.manual_seed(0)
    net = EpsDenoiser(build_backbone(name, shape, **kw))
    g = torch.Generator().manual_seed(1)
    y = torch.randn(16, *shape, generator=g).sign() * 0.5  # a tiny, very structured data set
    sig = DDPMSigmaSampler()(16, generator=g)
    noise = torch.randn(y.shape, generator=g)

    def eval_loss():
        net.eval()
        with torch.no_grad():
            out = dsm_loss(net, y, sig, noise=noise).loss.mean().item()
        net.train()
        return out

    before = eval_loss()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    for _ in range(40):
        loss = dsm_loss(net, y, DDPMSigmaSampler()(16, generator=g), generator=g).loss.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.7 * before


def test_same_seed_same_init():
    def build():
        torch.manual_seed(123)
        return build_backbone("bubm25", (1, 16, 16), width=8)

    a, b = build().state_dict(), build().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    torch.manual_seed(124)
    c = build_backbone("bubm25", (1, 16, 16), width=8).state_dict()
    assert not torch.equal(a["inp.weight"], c["inp.weight"])


@pytest.mark.parametrize("name,shape,kw,match", [
    ("nope", (8,), {}, "unknown model preset 'nope'"),
    ("bubm25", (1, 30, 30), {}, "divisible by 4"),
    ("bubm25", (1, 32, 32), {"width": 12}, "GroupNorm"),
    ("bubm25", (64,), {}, r"\(C, H, W\)"),
    ("bubm25", (1, 32, 32), {"dropout": 0.2}, "no option 'dropout'"),
    ("unet", (1, 32, 32), {"mults": (1, 2), "attn": (True,)}, "one attention flag per level"),
    ("unet", (1, 32, 32), {"dropout": 1.5}, "dropout"),
    ("mlp", (8,), {"width": 0}, "width"),
])
def test_bad_config_raises_diffmem_error(name, shape, kw, match):
    with pytest.raises(DiffmemError, match=match):
        build_backbone(name, shape, **kw)


def test_unet_class_rejects_bad_shape_directly():
    with pytest.raises(DiffmemError):
        UNet((1, 8, 12), width=8, mults=(1, 2, 4, 8), attn=(False,) * 4)
