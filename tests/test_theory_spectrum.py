"""Spectrum of U (BUBM25 Theorem 3.1/3.2): normalisation, closed-form limits,
Gaussian-equivalent eigenvalues, Theorem 3.2 edges, naive reference, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from diffmem.errors import DiffmemError
from diffmem.theory.constants import rf_constants
from diffmem.theory.spectrum import (
    drop_delta,
    empirical_cdf,
    kolmogorov_distance,
    naive_density,
    plot_spectrum,
    spectrum,
    stieltjes,
    theorem32_edges,
    theory_cdf,
)

FIG4 = dict(psi_p=64.0, psi_n=8.0, t=0.01)


@pytest.fixture(scope="module")
def fig4():
    return spectrum(**FIG4)


@pytest.fixture(scope="module")
def fig4_two():
    return spectrum(**FIG4, sigma_spectrum=(0.5, 1.5))


def _ge_eigenvalues(d, psi_p, psi_n, t, spec=(1.0,), seed=0):
    """U = s_t² I + H Hᵀ of Lemma C.1 (SVD of H), written out here so the test is self-contained."""
    k = rf_constants(t, sigma_x=math.sqrt(np.mean(spec)))
    rng = np.random.default_rng(seed)
    p, n = int(round(psi_p * d)), int(round(psi_n * d))
    sig = np.repeat(np.asarray(spec, float), d // len(spec))
    W = rng.standard_normal((p, d))
    X = rng.standard_normal((d, n)) * np.sqrt(sig)[:, None]
    G = math.exp(-t) * k.a_t * W @ X / math.sqrt(d) + math.sqrt(k.v_t2) * rng.standard_normal((p, n))
    H = np.hstack([G / math.sqrt(n), k.b_t * W / math.sqrt(d)])
    sv = np.linalg.svd(H, compute_uv=False)
    return np.sort(np.concatenate([k.s_t2 + sv**2, np.full(p - sv.size, k.s_t2)]))


@pytest.mark.parametrize("which", ["fig4", "fig4_two"])
def test_density_normalised_and_nonnegative(which, request):
    r = request.getfixturevalue(which)
    assert min(r["density"]) >= 0.0
    assert len(r["lambda"]) == 400 and np.all(np.diff(r["lambda"]) >= 0)
    masses = np.array([b[2] for b in r["bulks"]])
    assert r["delta_mass"] == pytest.approx(1 - 9 / 64, abs=1e-15)
    assert r["total_mass"] == pytest.approx(1.0, abs=1e-8)
    assert r["delta_mass_check"] == pytest.approx(r["delta_mass"], abs=1e-8)
    assert r["delta_mass_contour"] == pytest.approx(r["delta_mass"], abs=1e-10)
    np.testing.assert_allclose(masses, r["bulk_mass_contour"], rtol=1e-8)
    assert r["warnings"] == []
    # rank counting: d/p near s_t², (n−d)/p in the ρ₁ bulk, d/p on top (two atoms: each d/p bulk splits in two)
    expected = [1 / 64, 7 / 64, 1 / 64] if which == "fig4" else [1 / 128, 1 / 128, 7 / 64, 1 / 128, 1 / 128]
    np.testing.assert_allclose(masses, expected, rtol=1e-8)


def test_fig4_edges_match_spec(fig4):
    """SPEC §2 (d = 100 eigenvalues): top bulk ≈ [10.05, 43.5], small bulk ≈ [0.09, 0.36], within 3 %."""
    top, small = fig4["bulks"][-1], fig4["bulks"][1]
    for got, ref in zip(top[:2] + small[:2], [10.05, 43.5, 0.09, 0.36]):
        assert abs(got / ref - 1) < 0.03
    lo, hi = theorem32_edges(64, 8, 0.01)
    assert lo == pytest.approx(0.0873, abs=1e-4) and hi == pytest.approx(0.3762, abs=1e-4)


def test_edges_are_sharp():
    """Density is 0 just outside each computed edge and positive just inside."""
    r0 = spectrum(**FIG4)
    pts = []
    for lo, hi, _ in r0["bulks"]:
        w = hi - lo
        pts += [lo - 1e-7 * w, lo + 1e-7 * w, hi - 1e-7 * w, hi + 1e-7 * w]
    rho = np.array(spectrum(**FIG4, lambdas=pts)["density"]).reshape(-1, 4)
    assert np.all(rho[:, [0, 3]] == 0.0)
    assert np.all(rho[:, [1, 2]] > 0.0)


def test_marchenko_pastur_limit():
    """Even activation σ(x) = x² − 1 (σ_x = 1): a_t = b_t = 0, so U = s_t² I + v_t² ΩΩᵀ/n — the
    Marchenko–Pastur law with ratio y = ψ_p/ψ_n, shifted by s_t², scaled by v_t²."""
    act = lambda x: x * x - 1.0  # noqa: E731
    k = rf_constants(0.1, act=act)
    for psi_p, psi_n in [(4.0, 1.0), (0.5, 2.0)]:
        r = spectrum(psi_p, psi_n, 0.1, act=act)
        y = psi_p / psi_n
        a, b = (1 - math.sqrt(y)) ** 2, (1 + math.sqrt(y)) ** 2
        assert len(r["bulks"]) == 1
        lo, hi, mass = r["bulks"][0]
        assert lo == pytest.approx(k.s_t2 + k.v_t2 * a, rel=1e-10)
        assert hi == pytest.approx(k.s_t2 + k.v_t2 * b, rel=1e-10)
        assert r["delta_mass"] == pytest.approx(max(0.0, 1 - 1 / y), abs=1e-15)
        assert mass == pytest.approx(min(1.0, 1 / y), rel=1e-9)
        lam, dens = np.array(r["lambda"]), np.array(r["density"])
        # the grid contains the bulk edges themselves, where ρ = 0 exactly; evaluating the
        # MP formula there would give sqrt(rounding error) ~ 1e-8, so they are checked apart
        edge = (lam == lo) | (lam == hi)
        assert edge.sum() == 2 and np.all(dens[edge] == 0.0)
        x = (lam[~edge] - k.s_t2) / k.v_t2
        mp = np.sqrt(np.clip((b - x) * (x - a), 0, None)) / (2 * np.pi * y * x) / k.v_t2
        np.testing.assert_allclose(dens[~edge], mp, atol=1e-9 * mp.max())


def test_theorem32_regimes():
    """Regime I (ψ_p > ψ_n ≫ 1) and II (ψ_n > ψ_p ≫ 1): the ρ₁ bulk approaches the Theorem 3.2 interval."""
    r8 = spectrum(64, 8, 0.01)
    r1 = spectrum(1000, 100, 0.01)
    r2 = spectrum(100, 1000, 0.01)

    def err(r):
        big = max(r["bulks"], key=lambda b: b[2])
        e = r["theorem32_edges"]
        return max(abs(big[0] / e[0] - 1), abs(big[1] / e[1] - 1))

    assert r1["regime"] == "I" and r2["regime"] == "II"
    assert err(r1) < 5e-3 and err(r2) < 5e-3 and err(r8) > 5 * err(r1)
    # masses: regime I (ψ_n − 1)/ψ_p for ρ₁ (d/p sits near s_t²), 1/ψ_p on top; regime II 1 − 1/ψ_p and 1/ψ_p
    assert max(b[2] for b in r1["bulks"]) == pytest.approx(99 / 1000, rel=1e-8)
    assert r1["bulks"][-1][2] == pytest.approx(1 / 1000, rel=1e-8)
    assert [b[2] for b in r2["bulks"]] == pytest.approx([0.99, 0.01], rel=1e-8)
    assert r2["delta_mass"] == 0.0


def test_stieltjes_matches_resolvent_trace():
    """q(z) = (1/p) Tr(U − z)⁻¹ from Gaussian-equivalent eigenvalues at moderate Im z."""
    ev = _ge_eigenvalues(40, 64, 8, 0.01, seed=1)
    z = np.array([0.005, 0.2, 1.0, 20.0]) + 1j * np.array([0.002, 0.05, 0.2, 3.0])
    q = stieltjes(z, 64, 8, 0.01)["q"]
    q_emp = np.mean(1.0 / (ev[:, None] - z[None, :]), axis=0)
    np.testing.assert_allclose(q, q_emp, rtol=0.02)
    assert np.all(q.imag > 0)


@pytest.mark.parametrize("spec", [(1.0,), (0.5, 1.5)])
def test_agrees_with_gaussian_equivalent_small_d(spec, fig4, fig4_two):
    r = fig4 if len(spec) == 1 else fig4_two
    ev = _ge_eigenvalues(24, 64, 8, 0.01, spec=spec, seed=2)
    assert np.sum(np.abs(ev - r["delta_position"]) < 1e-10) == 64 * 24 - 9 * 24
    assert kolmogorov_distance(r, ev) < 0.05


def test_cdf_and_kolmogorov(fig4):
    x = np.linspace(0, 50, 2001)
    F = theory_cdf(fig4, x)
    assert F[0] == 0.0 and F[-1] == pytest.approx(1.0, abs=1e-12)
    assert np.all(np.diff(F) >= -1e-12)
    # between bulks the CDF equals the cumulative bulk mass (renormalised to the non-δ part)
    m = np.array([b[2] for b in fig4["bulks"]])
    assert theory_cdf(fig4, 1.0) == pytest.approx(m[:2].sum() / m.sum(), abs=1e-10)
    # exact theory quantiles (plus a δ part) have KS distance 1/(2N)
    N = 900
    grid = np.concatenate([np.linspace(lo, hi, 4000) for lo, hi, _ in fig4["bulks"]])
    Fg = theory_cdf(fig4, grid)
    quant = np.interp((np.arange(N) + 0.5) / N, Fg, grid)
    ev = np.concatenate([np.full(5500, fig4["delta_position"]), quant])
    assert kolmogorov_distance(fig4, ev) == pytest.approx(0.5 / N, abs=2e-4)
    assert len(drop_delta(ev, fig4["delta_mass"])) == N
    assert empirical_cdf(ev, [0.0, 1.0, 100.0], fig4["delta_mass"]) == pytest.approx([0.0, 800 / 900, 1.0])


def test_naive_reference_agrees(fig4):
    lam = np.array(fig4["lambda"])
    rho = np.array(fig4["density"])
    idx = [5, 180, 300]  # interior Chebyshev nodes of the three bulks
    got = naive_density(lam[idx], 64, 8, 0.01)
    np.testing.assert_allclose(got, rho[idx], rtol=1e-4, atol=1e-6)


def test_plot(tmp_path, fig4):
    ev = _ge_eigenvalues(10, 64, 8, 0.01)
    path = plot_spectrum(fig4, tmp_path / "fig4.png", eigenvalues=ev)
    assert path.stat().st_size > 10_000


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(psi_p=-1.0, psi_n=8, t=0.01), "psi_p"),
        (dict(psi_p=64, psi_n=0, t=0.01), "psi_n"),
        (dict(psi_p=64, psi_n=8, t=0.0), "t must be"),
        (dict(psi_p=64, psi_n=8, t=-1.0), "t must be"),
        (dict(psi_p=64, psi_n=8, t=0.01, sigma_spectrum=(0.5, 1.5), sigma_weights=(0.5, 0.6)), "sum to 1"),
        (dict(psi_p=64, psi_n=8, t=0.01, sigma_spectrum=(0.5, 1.5), sigma_weights=(1.0,)), "entries"),
        (dict(psi_p=64, psi_n=8, t=0.01, sigma_spectrum=(-1.0,)), "sigma_spectrum"),
        (dict(psi_p=64, psi_n=8, t=0.01, sigma_spectrum=()), "sigma_spectrum"),
        (dict(psi_p=64, psi_n=8, t=0.01, n_lambda=5), "n_lambda"),
        (dict(psi_p=64, psi_n=8, t=0.01, lambdas=[1.0, float("nan")]), "lambdas"),
        (dict(psi_p=64, psi_n=8, t=0.01, act="nope"), "activation"),
        (dict(psi_p=64, psi_n=8, t=0.01, act="linear"), "v_t"),
    ],
)
def test_bad_input(kwargs, match):
    with pytest.raises(DiffmemError, match=match):
        spectrum(**kwargs)


def test_bad_input_helpers(fig4):
    with pytest.raises(DiffmemError):
        stieltjes(np.array([1.0 - 0.1j]), 64, 8, 0.01)
    with pytest.raises(DiffmemError):
        kolmogorov_distance({"bulks": []}, [1.0])
    with pytest.raises(DiffmemError):
        kolmogorov_distance(fig4, [])
    with pytest.raises(DiffmemError):
        drop_delta([1.0, 2.0], 1.5)
