"""Diffusion core: parametrisations, denoiser views, DSM loss, samplers."""

import math

import numpy as np
import pytest
import torch

from diffmem.closed_form import EmpiricalDenoiser, GaussianDenoiser
from diffmem.denoiser import EpsDenoiser, eps_pred, score
from diffmem.errors import DiffmemError
from diffmem.losses import DDPMSigmaSampler, dsm_loss
from diffmem.samplers import generate
from diffmem.schedules import DDPMSchedule, karras_sigmas, ou_t_to_sigma, sigma_to_ou_t, vp_scale


def test_ddpm_schedule_reference_times():
    s = DDPMSchedule()
    t = s.ou_times
    # SPEC §0: index 39/40 <-> t ≈ 0.01, 136 <-> 0.1, 999 <-> 5.06
    assert min(abs(t[39] - 0.01), abs(t[40] - 0.01)) < 5e-4
    assert abs(t[136] - 0.1) < 2e-3
    assert abs(t[999] - 5.06) < 5e-3
    assert s.t_to_index(0.1) == 136


def test_conversions_roundtrip_and_consistency():
    t = np.array([1e-3, 0.01, 0.1, 1.0, 3.0])
    sig = ou_t_to_sigma(t)
    np.testing.assert_allclose(sigma_to_ou_t(sig), t, rtol=1e-12)
    np.testing.assert_allclose(vp_scale(sig), np.exp(-t), rtol=1e-12)
    s = DDPMSchedule()
    np.testing.assert_allclose(s.sigmas, ou_t_to_sigma(s.ou_times), rtol=1e-10)
    # the fractional index of a grid σ is the index itself, numpy and torch alike
    idx = np.array([1, 39, 500, 998])
    np.testing.assert_allclose(s.sigma_to_index(s.sigmas[idx]), idx, atol=1e-9)
    got = s.sigma_to_index(torch.tensor(s.sigmas[idx], dtype=torch.float64))
    np.testing.assert_allclose(got.numpy(), idx, atol=1e-6)
    # torch and numpy conversions agree
    np.testing.assert_allclose(ou_t_to_sigma(torch.tensor(t)).numpy(), sig, rtol=1e-12)


def test_karras_grid():
    g = karras_sigmas(32)
    assert len(g) == 33 and g[-1] == 0 and math.isclose(g[0], 80) and math.isclose(g[-2], 0.002)
    assert np.all(np.diff(g) < 0)


class _Lin(torch.nn.Module):
    """A backbone with a label dependence, for parametrisation checks."""

    def __init__(self, d):
        super().__init__()
        self.a = torch.nn.Linear(d, d)

    def forward(self, x, label):
        return self.a(x) * (1 + label[:, None] / 1000)


def test_eps_denoiser_loss_equals_ddpm_loss():
    """Through EpsDenoiser the eps-weighted DSM loss is exactly the DDPM noise MSE in VP form."""
    torch.manual_seed(0)
    d, B = 5, 64
    net = _Lin(d).double()
    den = EpsDenoiser(net)
    s = DDPMSchedule()
    i = torch.randint(1, 1000, (B,))
    ab = torch.as_tensor(s.alphas_bar)[i]
    y, n = torch.randn(B, d, dtype=torch.float64), torch.randn(B, d, dtype=torch.float64)
    x_vp = ab.sqrt()[:, None] * y + (1 - ab).sqrt()[:, None] * n
    ref = ((net(x_vp, i.double()) - n) ** 2).mean(1)
    sigma = torch.as_tensor(s.sigmas)[i]
    got = dsm_loss(den, y, sigma, noise=n).loss
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-9)


def test_score_and_eps_views_on_gaussian():
    """For N(0, I) data the exact score at σ is −x/(1+σ²)."""
    den = GaussianDenoiser(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    x = torch.randn(10, 3, dtype=torch.float64)
    sig = torch.full((10,), 0.7, dtype=torch.float64)
    torch.testing.assert_close(score(den, x, sig), -x / (1 + 0.49))
    torch.testing.assert_close(eps_pred(den, x, sig), -0.7 * score(den, x, sig))


def test_ddpm_sigma_sampler_range():
    s = DDPMSigmaSampler()
    sig = s(10000, generator=torch.Generator().manual_seed(0)).double().numpy()
    assert sig.min() >= DDPMSchedule().sigmas[1] - 1e-6 and sig.max() <= DDPMSchedule().sigmas[999] * (1 + 1e-6)
    assert sig.min() > DDPMSchedule().sigmas[0]  # index 0 never trained


def test_empirical_denoiser_matches_brute_force_and_limits():
    torch.manual_seed(1)
    y = torch.randn(300, 6, dtype=torch.float64)
    x = torch.randn(17, 6, dtype=torch.float64) * 2
    for sigma in (0.05, 0.5, 3.0):
        s = torch.full((17,), sigma, dtype=torch.float64)
        w = torch.softmax(-((x[:, None] - y[None]) ** 2).sum(-1) / (2 * sigma**2), dim=1)
        ref = w @ y
        got = EmpiricalDenoiser(y, block=64)(x, s)  # several blocks: tests the running log-sum-exp
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)
    # σ -> 0: the nearest training point; σ -> ∞: the mean
    s0 = torch.full((17,), 1e-4, dtype=torch.float64)
    nn_idx = torch.cdist(x, y).argmin(1)
    torch.testing.assert_close(EmpiricalDenoiser(y, block=64)(x, s0), y[nn_idx])
    sinf = torch.full((17,), 1e4, dtype=torch.float64)
    torch.testing.assert_close(EmpiricalDenoiser(y)(x, sinf), y.mean(0).expand(17, 6), rtol=0, atol=1e-3)


@pytest.mark.parametrize("sampler,params,N", [("ddim", {"steps": 100}, 3000), ("heun", {"steps": 64}, 3000),
                                              ("em", {"steps": 300}, 1500), ("ddpm", {}, 800)])
def test_samplers_reproduce_gaussian_marginal(sampler, params, N):
    """With the exact denoiser of N(μ, Σ) every sampler must return N(μ, Σ) within sampling error."""
    g = torch.Generator().manual_seed(0)
    d = 3
    A = torch.randn(d, d, generator=g, dtype=torch.float64) * 0.4
    cov = A @ A.T + 0.3 * torch.eye(d, dtype=torch.float64)
    mu = torch.tensor([0.8, -0.5, 0.2], dtype=torch.float64)
    den = GaussianDenoiser(mu, cov)
    x = generate(den, (d,), list(range(N)), sampler=sampler, dtype=torch.float64, **params)
    sd = torch.sqrt(torch.diag(cov))
    # mean: 5 standard errors; covariance entries: 5 standard errors of a sample covariance
    assert torch.all((x.mean(0) - mu).abs() < 5 * sd / math.sqrt(N))
    c = torch.cov(x.T)
    se = torch.sqrt((cov**2 + torch.outer(torch.diag(cov), torch.diag(cov))) / N)
    assert torch.all((c - cov).abs() < 5 * se + 0.01), (c - cov)


def test_generate_independent_of_batch_size_and_seeded():
    den = GaussianDenoiser(torch.zeros(4), torch.eye(4) * 0.5)
    a = generate(den, (4,), [5, 6, 7, 8, 9], sampler="em", steps=50, batch_size=2)
    b = generate(den, (4,), [5, 6, 7, 8, 9], sampler="em", steps=50, batch_size=5)
    c = generate(den, (4,), [7], sampler="em", steps=50)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(a[2:3], c, rtol=0, atol=0)
    d = generate(den, (4,), [10, 11], sampler="em", steps=50)
    assert not torch.allclose(a[:2], d)


def test_unknown_sampler_is_user_error():
    den = GaussianDenoiser(torch.zeros(2), torch.eye(2))
    with pytest.raises(DiffmemError, match="unknown sampler"):
        generate(den, (2,), [0], sampler="nope")
