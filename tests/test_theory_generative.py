"""The random-features model as a generative model (issue #13 item 4): closed form = GD, protocol, memorisation."""

import math

import numpy as np
import pytest
import torch

from diffmem.metrics.memorization import memorization_fraction
from diffmem.samplers import generate
from diffmem.schedules import karras_sigmas, ou_t_to_sigma
from diffmem.theory.curves import simulate_gd
from diffmem.theory.generative import RFDenoiser, closed_form_B, fit_levels
from diffmem.theory.rf import make_problem, real_matrices


def test_closed_form_A_equals_gradient_descent():
    """Closed-form B(τ) = A(τ)/√p from the real-feature U, V equals the GD iterate of the existing simulation."""
    prob = make_problem(6, 8, 1, 0.1, seed=1)
    m = real_matrices(prob, n_noise=64)
    lam, Q = np.linalg.eigh(m["U"])
    tau = 200.0
    sim = simulate_gd(m, [tau], dtau=0.02, basis="direct")
    B_cf = closed_form_B(lam, Q, Q.T @ m["V"], prob.delta, prob.psi_p, tau)
    rel = np.linalg.norm(sim["B"] - B_cf) / np.linalg.norm(B_cf)
    assert rel < 1e-3, rel
    # and the GD step is what makes the difference: a 10x larger step is 10x further off
    rel10 = np.linalg.norm(simulate_gd(m, [tau], dtau=0.2, basis="direct")["B"] - B_cf) / np.linalg.norm(B_cf)
    assert 5 < rel10 / rel < 15


@pytest.fixture(scope="module")
def tiny():
    sig = karras_sigmas(12, sigma_min=0.01, sigma_max=20.0)
    return sig, fit_levels(6, 64 / 6, 4, sig, seed=0, n_rows=2048)


def test_denoiser_is_tweedie_of_the_level_score(tiny):
    sig, m = tiny
    den = RFDenoiser(m, float("inf"))
    k = 3
    s, t = float(sig[k]), m.ts[k]
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = den(x, torch.full((5,), s, dtype=torch.float64)).numpy()
    xt = x.numpy() * math.exp(-t)
    score = np.tanh(xt @ m.W.T / math.sqrt(6)) @ den.B[k].T
    delta = 1 - math.exp(-2 * t)
    assert np.allclose(y, math.exp(t) * (xt + delta * score), rtol=1e-12, atol=1e-12)
    assert abs(float(ou_t_to_sigma(t)) / s - 1) < 1e-12


def _fmem(sig, m, tau):
    S = generate(RFDenoiser(m, tau), (m.d,), list(range(64)), sampler="heun", sigmas=sig, dtype=torch.float64)
    return memorization_fraction(S.numpy(), m.X, n_boot=0)["f_mem"]


def test_memorisation_rises_with_tau_at_small_n_and_vanishes_for_n_much_larger_than_p(tiny):
    """p = 64 features, d = 6.  n = 4: copies appear only late in training (f_mem(τ=10) ≈ 0, f_mem(∞) ≥ 0.3;
    about ½ at most: the bias-free tanh model is odd and half its copies are mirror images −x_i, see
    tests/test_theory_generative_cli.py and the README).  n = 256 ≫ p: no copies."""
    sig, m = tiny
    early, late = _fmem(sig, m, 10.0), _fmem(sig, m, float("inf"))
    assert late >= 0.3 and early < 0.1, (early, late)
    big = fit_levels(6, 64 / 6, 256, sig, seed=0, n_rows=2048)
    assert _fmem(sig, big, float("inf")) <= 0.05
