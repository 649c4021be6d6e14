"""BDKOS25's neural regularisation: the Tikhonov loss option, the bdkos25_mlp backbone, bdkos25_vp (fast)."""

import math

import pytest
import torch

from diffmem.closed_form import TikhonovDenoiser
from diffmem.config import resolve_config
from diffmem.errors import DiffmemError
from diffmem.losses import BDKOS25SigmaSampler, dsm_loss, tikhonov_term
from diffmem.models import BDKOS25MLP, build_model, count_params
from diffmem.parametrisation import BDKOS25VPDenoiser, bdkos25_vp_t_of_sigma, get_parametrisation
from diffmem.schedules import bdkos25_sigma, bdkos25_vp_m, bdkos25_vp_sigma


def _den(seed=0, width=32):
    torch.manual_seed(seed)
    return BDKOS25VPDenoiser(BDKOS25MLP((2,), width=width, blocks=2)).double()


def _batch(seed=1, b=7):
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(b, 2, generator=g, dtype=torch.float64)
    sigma = torch.rand(b, generator=g, dtype=torch.float64) * 1.5 + 0.05
    noise = torch.randn(b, 2, generator=g, dtype=torch.float64)
    return y, sigma, noise


@pytest.mark.parametrize("score", ["ve", "vp"])
def test_tikhonov_term_matches_direct_computation(score):
    den = _den()
    y, sigma, noise = _batch()
    c = 1e-2
    base = dsm_loss(den, y, sigma, noise=noise, weighting="eps").loss
    with_t = dsm_loss(den, y, sigma, noise=noise, weighting="eps", tikhonov_c=c, tikhonov_score=score).loss
    x = y + sigma[:, None] * noise
    with torch.no_grad():
        d = den(x, sigma)
    s_ve = (d - x) / sigma[:, None] ** 2
    s = s_ve if score == "ve" else s_ve * torch.sqrt(1 + sigma[:, None] ** 2)
    direct = c * (s**2).mean(1)
    torch.testing.assert_close(with_t.detach() - base.detach(), direct, rtol=1e-10, atol=1e-12)
    if score == "vp":  # the VP score is the backbone's output itself
        with torch.no_grad():
            torch.testing.assert_close(s, den.vp_score(x, sigma), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(tikhonov_term(d, x, sigma, c, score), direct)


def test_bdkos25_loss_is_their_vp_loss():
    """eps weighting through BDKOS25VPDenoiser == mean((σ_vp s + z)²) at the VP state, + c mean(s²)."""
    den = _den()
    y, _, z = _batch()
    t = torch.tensor([1e-3, 0.01, 0.1, 0.3, 0.5, 0.8, 1.0], dtype=torch.float64)
    sigma = bdkos25_sigma(t, "vp")
    m, s_vp = bdkos25_vp_m(t)[:, None], bdkos25_vp_sigma(t)[:, None]
    c = 1e-3
    ours = dsm_loss(den, y, sigma, noise=z, weighting="eps", tikhonov_c=c, tikhonov_score="vp").loss
    with torch.no_grad():
        sc = den.backbone(m * y + s_vp * z, t)
    theirs = ((s_vp * sc + z) ** 2).mean(1) + c * (sc**2).mean(1)
    torch.testing.assert_close(ours.detach(), theirs, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(bdkos25_vp_t_of_sigma(sigma), t, rtol=1e-10, atol=1e-14)


def test_c_zero_is_bit_identical():
    torch.manual_seed(0)
    cfg = resolve_config("digits", None, ["n=16"])
    den, _ = build_model(cfg.model, (64,))
    g = torch.Generator().manual_seed(3)
    y = torch.randn(16, 64, generator=g)
    sigma = torch.exp(torch.randn(16, generator=g))
    noise = torch.randn(16, 64, generator=g)
    for w in ("eps", "edm", "x0"):
        a = dsm_loss(den, y, sigma, noise=noise, weighting=w).loss
        b = dsm_loss(den, y, sigma, noise=noise, weighting=w, tikhonov_c=0.0, tikhonov_score="vp").loss
        assert torch.equal(a, b)
        assert torch.equal(a.mean(), b.mean())


def test_backbone_shape_and_time_dependence():
    torch.manual_seed(0)
    net = BDKOS25MLP((2,), width=256, blocks=2)
    assert count_params(net) == (2 + 8) * 256 + 256 + 256 * 256 + 256 + 256 * 2 + 2
    x = torch.randn(5, 2)
    out = net(x, torch.full((5,), 0.1))
    assert out.shape == (5, 2)
    assert not torch.allclose(out, net(x, torch.full((5,), 0.9)))
    img = BDKOS25MLP((1, 4, 4), width=16, blocks=1)
    assert img(torch.randn(3, 1, 4, 4), torch.rand(3)).shape == (3, 1, 4, 4)
    assert "embed.freqs" in net.state_dict()  # the Fourier frequencies travel with the weights


def test_registry_and_config():
    cfg = resolve_config(None, None, ["data=bdkos25-2d", "n=20", "model.name=bdkos25_mlp", "model.width=16",
                                      "loss_tikhonov_c=1e-3"])
    den, opts = build_model(cfg.model, (2,))
    assert opts == {"width": 16, "blocks": 2}
    assert isinstance(den, BDKOS25VPDenoiser)
    assert get_parametrisation("bdkos25_vp").score == "vp" and get_parametrisation("edm").score == "ve"
    assert resolve_config("digits").loss_tikhonov_c == 0.0


@pytest.mark.parametrize("ov, msg", [
    (["model.name=empirical", "loss_tikhonov_c=1e-3"], "closed form"),
    (["model.name=tikhonov:c=1e-3", "loss_tikhonov_c=1e-3"], "closed form"),
    (["model.name=bdkos25_mlp", "model.parametrisation=edm"], "bdkos25_vp"),
    (["model.name=bdkos25_mlp", "model.dropout=0.1"], "model.dropout"),
    (["loss_tikhonov_c=-1"], "loss_tikhonov_c"),
    (["model.name=bdkos25_mlp", "model.sigma_data=0.5"], "sigma_data"),
])
def test_config_errors(ov, msg):
    with pytest.raises(DiffmemError, match=msg):
        resolve_config(None, None, ["data=bdkos25-2d", "n=20", *ov])


def test_sigma_sampler_range():
    s = BDKOS25SigmaSampler()(10000, generator=torch.Generator().manual_seed(0))
    assert s.dtype == torch.float32 and bool((s > 0).all())
    assert float(s.max()) <= float(bdkos25_sigma(1.0, "vp")) * (1 + 1e-6)
    assert float(s.min()) >= float(bdkos25_sigma(1e-5, "vp")) * (1 - 1e-6)


def test_tikhonov_minimiser_is_closed_form():
    """At a point x, the per-σ minimiser of E[(σ s + n)²] + c s² (VP convention) is TikhonovDenoiser(vp)."""
    train = torch.tensor([[0.0, 0.0], [1.0, 0.5]], dtype=torch.float64)
    x = torch.tensor([[0.4, 0.2]], dtype=torch.float64)
    sigma = torch.tensor([0.3], dtype=torch.float64)
    c = 0.05
    emp_d = TikhonovDenoiser(train, c=0.0)(x, sigma)
    # E[n | x] = (x − ŷ)/σ; VP: minimise over s_vp: E(σ_vp s + n)² + c s², σ_vp = σ m
    m = 1 / math.sqrt(1 + 0.09)
    s_vp = -(m * 0.3) * ((x - emp_d) / 0.3) / ((m * 0.3) ** 2 + c)
    d = x + 0.09 * m * s_vp
    torch.testing.assert_close(d, TikhonovDenoiser(train, c=c, schedule="vp")(x, sigma))
