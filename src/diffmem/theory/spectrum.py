"""Spectrum of the random-features matrix U (BUBM25 Theorem 3.1 and 3.2, SPEC §2).

``U = (1/n) Σ_ν E_ξ[σ σᵀ]`` (p × p) has, in the limit d, n, p → ∞ with
``ψ_p = p/d``, ``ψ_n = n/d``, a spectral density ρ whose Stieltjes transform
``q(z) = (1/p) Tr (U − z)⁻¹`` solves (Theorem 3.1, with SPEC's corrections:
1/d in the traces r, s and ψ_p/ψ_n inside D)::

    ŝ = b_t² ψ_p + 1/q
    D = 1 + (a_t² e^{−2t} ψ_p/ψ_n) r + (ψ_p v_t²/ψ_n) q,     r̂ = ψ_p a_t² e^{−2t} / D
    s = ∫ dρ_Σ(ℓ) / (ŝ + ℓ r̂),     r = ∫ dρ_Σ(ℓ) ℓ / (ŝ + ℓ r̂)
    ψ_p (s_t² − z) + ψ_p v_t²/D + (1 − ψ_p)/q − s/q² = 0

and ``ρ(λ) = (1/π) Im q(λ + i0⁺)``.  ρ_Σ is any discrete spectrum
``Σ_k ω_k δ(ℓ − ℓ_k)`` of the data covariance.

**Unknowns used by the solver.**  We solve for ``(w, r)`` with ``w = 1/q``.
Writing ``E = w(1 + c₁ r) + c₂`` (``c₁ = a_t² e^{−2t} ψ_p/ψ_n``,
``c₂ = ψ_p v_t²/ψ_n``, so that ``D = E/w``) every term is rational without
poles at ``w = 0`` (the δ peak)::

    F₁(w, r) = r − Σ_k ω_k ℓ_k / den_k,        den_k = b_t² ψ_p + w + ℓ_k κ w/E,   κ = ψ_p a_t² e^{−2t}
    F₂(w, r; z) = ψ_p (s_t² − z) + ψ_p v_t² w/E + (1 − ψ_p) w − s w²,   s = Σ_k ω_k / den_k

F₂ is linear in z, so on the real axis ``z = Z(w) := s_t² + v_t² w/E + ((1 − ψ_p)w − s w²)/ψ_p``
with r = R(w) from F₁ = 0.  ``q ↦ z`` is the functional inverse of the Stieltjes
transform: the complement of the support is where ``dZ/dw < 0`` (i.e. ``dz/dq > 0``)
on the real w line, and the **edges of the bulks are the critical values of Z**
(``dZ/dw = 0``).  The physical root has ``Im q > 0`` (``Im w < 0``) for
``Im z > 0`` and ``q ≈ −1/z`` (``w ≈ −z``) for large ``|z|``.

**Solver.**  Damped complex Newton on (w, r) with the analytic 2 × 2 Jacobian,
vectorised over all points at once, by continuation in ``log Im z`` from a
large ``Im z`` (where ``w = −z`` is the physical root) down to the target, with
a per-point adaptive step (a step is rejected when Newton does not converge,
the root leaves the physical half-plane Im w ≤ 0, or w or r jumps by > 70 %).

**Bulks.**  A log grid in ``λ − s_t²`` (10⁻⁸ … 1 of the spectrum's scale)
is solved at ``Im z = 10⁻¹⁰ (λ − s_t²)``: complex roots mark bulk points,
real roots gap points.  Each edge is then found exactly by walking along the
real branch of F₁ = 0 from the neighbouring gap point until dZ/dw changes
sign, then bisecting (machine precision; a λ-bisection on the complex root is
the fallback).  Densities inside a bulk are evaluated at
``Im z = 10⁻¹² × half-width`` on Gauss–Chebyshev nodes ``c − h cos θ_j``;
the masses ``∫ρ = ∫_0^π ρ(c − h cos θ) h sin θ dθ`` converge exponentially
for square-root edges (the node count is tripled until converged) and are
cross-checked by the contour integral ``−(1/2πi)∮ q dz`` around each bulk.

**δ peak.**  ``U = s_t² I + H Hᵀ`` with H of rank ≤ n + d, so ρ has an atom at
s_t² of mass ``1 − (1 + ψ_n)/ψ_p`` when ``ψ_p > 1 + ψ_n`` (else 0; rank ≤ n,
i.e. ``1 − ψ_n/ψ_p``, when b_t = 0); the result checks it against
``1 − Σ bulk masses`` and the residue of −q at s_t².

**Limits.**  A bulk narrower than ~10⁻⁸ of the scale (e.g. ρ₁ at large t,
where v_t² → 0) is not resolved; the result then carries a warning with the
missing mass.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from ..errors import DiffmemError
from ..fileio import save_figure
from .constants import Constants, rf_constants

__all__ = [
    "SpectrumProblem",
    "spectrum_problem",
    "stieltjes",
    "spectrum",
    "theorem32_edges",
    "theory_cdf",
    "empirical_cdf",
    "drop_delta",
    "kolmogorov_distance",
    "plot_spectrum",
    "naive_density",
]


# --------------------------------------------------------------------------- problem


@dataclass(frozen=True)
class SpectrumProblem:
    """Parameters of Theorem 3.1: ψ's, constants, ρ_Σ = Σ_k ω_k δ(ℓ − ℓ_k)."""

    psi_p: float
    psi_n: float
    constants: Constants
    ell: np.ndarray  # (K,) eigenvalues of Σ
    omega: np.ndarray  # (K,) weights, sum 1

    def __post_init__(self):
        k = self.constants
        alpha = k.a_t**2 * math.exp(-2.0 * k.t)
        derived = {
            "alpha": alpha,  # a_t² e^{−2t}
            "kappa": self.psi_p * alpha,  # ψ_p a_t² e^{−2t}
            "c1": alpha * self.psi_p / self.psi_n,  # a_t² e^{−2t} ψ_p/ψ_n
            "c2": self.psi_p * k.v_t2 / self.psi_n,  # ψ_p v_t²/ψ_n
            "b2p": k.b_t**2 * self.psi_p,  # b_t² ψ_p
            "m1": float(self.omega @ self.ell),  # ∫ ℓ dρ_Σ
            # plain-float copies for the scalar real-axis code
            "_ell_list": [float(v) for v in self.ell],
            "_om_list": [float(v) for v in self.omega],
        }
        for key, val in derived.items():
            object.__setattr__(self, key, val)

    @property
    def delta_mass(self) -> float:
        """Mass of the atom at s_t²: ``max(0, 1 − (ψ_n + 1)/ψ_p)`` (rank of H ≤ n + d).

        When b_t = 0 (an even activation) the block b_t W/√d of H vanishes and the
        rank bound is n: ``max(0, 1 − ψ_n/ψ_p)``.
        """
        k = self.constants
        rank_d = 1.0 if abs(k.b_t) > 1e-12 * math.sqrt(max(k.sigma_norm2, 1e-300)) else 0.0
        return max(0.0, 1.0 - (self.psi_n + rank_d) / self.psi_p)

    @property
    def scale(self) -> float:
        """A generous upper bound on the top of the spectrum (sets the continuation start)."""
        k = self.constants
        top_rho1 = k.v_t2 * (1.0 + math.sqrt(self.psi_p / self.psi_n)) ** 2
        top_rho2 = (k.b_t**2 + self.alpha * float(self.ell.max()) * (1 + 1 / math.sqrt(self.psi_n)) ** 2) * (
            math.sqrt(self.psi_p) + 1.0) ** 2
        return float(k.s_t2 + top_rho1 + top_rho2 + 1e-3)


def _check_pos(name, x):
    try:
        x = float(x)
    except (TypeError, ValueError):
        raise DiffmemError(f"{name} must be a number, got {x!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise DiffmemError(f"{name} must be positive and finite, got {x!r}")
    return x


def spectrum_problem(psi_p: float, psi_n: float, t: float, sigma_spectrum: Sequence[float] = (1.0,),
                     sigma_weights: Sequence[float] | None = None, act: str | Callable = "tanh",
                     sigma_x: float | None = None) -> SpectrumProblem:
    """Validate inputs and compute the constants.

    ``sigma_spectrum``: eigenvalues ℓ_k ≥ 0 of Σ (at least one > 0);
    ``sigma_weights``: their weights ω_k ≥ 0 summing to 1 (default equal).
    ``sigma_x`` defaults to ``sqrt(Tr Σ / d) = sqrt(Σ ω_k ℓ_k)`` (SPEC §2).
    """
    psi_p = _check_pos("psi_p", psi_p)
    psi_n = _check_pos("psi_n", psi_n)
    try:
        ell = np.atleast_1d(np.asarray(sigma_spectrum, dtype=float))
    except (TypeError, ValueError):
        raise DiffmemError(f"sigma_spectrum must be a list of numbers, got {sigma_spectrum!r}") from None
    if ell.ndim != 1 or ell.size == 0:
        raise DiffmemError("sigma_spectrum must be a non-empty 1-D list of eigenvalues")
    if not np.all(np.isfinite(ell)) or np.any(ell < 0) or not np.any(ell > 0):
        raise DiffmemError(f"sigma_spectrum must be finite, ≥ 0 and not all zero, got {ell.tolist()}")
    if sigma_weights is None:
        omega = np.full(ell.size, 1.0 / ell.size)
    else:
        try:
            omega = np.atleast_1d(np.asarray(sigma_weights, dtype=float))
        except (TypeError, ValueError):
            raise DiffmemError(f"sigma_weights must be a list of numbers, got {sigma_weights!r}") from None
        if omega.shape != ell.shape:
            raise DiffmemError(f"sigma_weights has {omega.size} entries but sigma_spectrum has {ell.size}")
        if not np.all(np.isfinite(omega)) or np.any(omega < 0):
            raise DiffmemError(f"sigma_weights must be finite and ≥ 0, got {omega.tolist()}")
        if abs(omega.sum() - 1.0) > 1e-8:
            raise DiffmemError(f"sigma_weights must sum to 1, they sum to {omega.sum():.12g}")
    keep = omega > 0
    ell, omega = ell[keep], omega[keep] / omega[keep].sum()
    if sigma_x is None:
        sigma_x = math.sqrt(float(omega @ ell))
    k = rf_constants(t, sigma_x=sigma_x, act=act)
    if not k.v_t2 > 1e-14 * max(k.sigma_norm2, 1e-300):
        raise DiffmemError(f"degenerate activation at t={t}: v_t² = {k.v_t2:.3g} "
                           "(Theorem 3.1 needs v_t² > 0; a linear activation has v_t² = 0)")
    return SpectrumProblem(psi_p=psi_p, psi_n=psi_n, constants=k, ell=ell, omega=omega)


# --------------------------------------------------------------------------- equations


def _system(P: SpectrumProblem, w, r, z, jac=True):
    """Residuals (F₁, F₂) of Theorem 3.1 in the unknowns (w = 1/q, r) and their Jacobian.

    Shapes: w, r, z (N,) complex (or real).  Returns F1, F2 and, if ``jac``,
    J11 = ∂F₁/∂w, J12 = ∂F₁/∂r, J21 = ∂F₂/∂w, J22 = ∂F₂/∂r, plus s.
    """
    k = P.constants
    ell = P.ell[:, None]
    om = P.omega[:, None]
    c1, c2, kap, pp = P.c1, P.c2, P.kappa, P.psi_p
    E = w * (1.0 + c1 * r) + c2  # = w D
    g = w / E  # = q/D·(1/q)... = 1/D
    den = P.b2p + w + kap * ell * g  # ŝ + ℓ r̂   (K, N)
    inv = 1.0 / den
    s = (om * inv).sum(0)
    rr = (om * ell * inv).sum(0)
    F1 = r - rr
    F2 = pp * (k.s_t2 - z) + pp * k.v_t2 * g + (1.0 - pp) * w - s * w * w
    if not jac:
        return F1, F2, s
    dg_dw = c2 / (E * E)
    dg_dr = -c1 * w * w / (E * E)
    inv2 = inv * inv
    dden_dw = 1.0 + kap * ell * dg_dw
    dden_dr = kap * ell * dg_dr
    ds_dw = -(om * dden_dw * inv2).sum(0)
    ds_dr = -(om * dden_dr * inv2).sum(0)
    drr_dw = -(om * ell * dden_dw * inv2).sum(0)
    drr_dr = -(om * ell * dden_dr * inv2).sum(0)
    J11 = -drr_dw
    J12 = 1.0 - drr_dr
    J21 = pp * k.v_t2 * dg_dw + (1.0 - pp) - ds_dw * w * w - 2.0 * s * w
    J22 = pp * k.v_t2 * dg_dr - ds_dr * w * w
    return F1, F2, s, J11, J12, J21, J22


def _newton(P, w, r, z, maxit=40, tol=1e-13, cap=0.5):
    """Damped Newton on all points at once; returns (w, r, converged).

    Converged: a full step below ``tol`` relative, or residuals at rounding
    level relative to the size of their terms (near an edge the Jacobian is
    nearly singular and the step cannot get below ~1e-16/√(distance)).
    """
    k = P.constants
    w = w.copy()
    r = r.copy()
    conv = np.zeros(w.shape, bool)
    active = np.ones(w.shape, bool)
    for _ in range(maxit):
        idx = np.nonzero(active)[0]
        if idx.size == 0:
            break
        wa, ra, za = w[idx], r[idx], z[idx]
        F1, F2, sa, J11, J12, J21, J22 = _system(P, wa, ra, za)
        ga = wa / (wa * (1.0 + P.c1 * ra) + P.c2)
        scale2 = (P.psi_p * (k.s_t2 + np.abs(za)) + P.psi_p * k.v_t2 * np.abs(ga)
                  + abs(1.0 - P.psi_p) * np.abs(wa) + np.abs(sa) * np.abs(wa) ** 2)
        small = (np.abs(F1) <= 1e-14 * (2 * np.abs(ra) + 1e-300)) & (np.abs(F2) <= 1e-14 * scale2)
        det = J11 * J22 - J12 * J21
        dw = -(J22 * F1 - J12 * F2) / det
        dr = -(-J21 * F1 + J11 * F2) / det
        # step cap: relative change of w and r at most `cap` per iteration
        aw = np.abs(wa) + 1e-300
        ar = np.abs(ra) + 0.1 * P.m1 / aw  # r is O(m₁ |q|); it may cross 0 in a gap
        with np.errstate(divide="ignore", invalid="ignore"):
            fac = np.minimum(1.0, cap / np.maximum(np.abs(dw) / aw, np.abs(dr) / ar))
        fac = np.where(np.isfinite(fac), fac, 0.0)
        wn = wa + fac * dw
        rn = ra + fac * dr
        ok = np.isfinite(wn) & np.isfinite(rn)
        w[idx] = np.where(ok, wn, wa)
        r[idx] = np.where(ok, rn, ra)
        done = ok & (((fac == 1.0) & (np.abs(dw) <= tol * aw) & (np.abs(dr) <= tol * ar)) | small)
        bad = ~ok
        conv[idx[done]] = True
        active[idx[done | bad]] = False
    return w, r, conv


def _continuation(P: SpectrumProblem, x, eps, eps0=None, tol=1e-13, max_rounds=5000):
    """Solve at z = x + i·eps by continuation in log Im z from eps0 (vectorised, adaptive).

    x, eps: (N,) real arrays, eps > 0.  Every point follows the vertical line
    from ``x + i eps0`` (where w = −z is the physical root) down to its target;
    each point has its own step in ``log Im z`` (at most a factor 10, at least
    a factor 1 + 1e-8).  A step is accepted when Newton converges, Im w ≤ 0
    (Im q ≥ 0, the physical half-plane) and neither w nor r moves by more than
    70 %; otherwise it is cut by 0.4.  Returns w, r (complex (N,)) and a boolean
    array of the points that reached their target (the others are NaN).
    """
    x = np.asarray(x, float).ravel()
    eps = np.broadcast_to(np.asarray(eps, float), x.shape).copy()
    N = x.size
    if eps0 is None:
        eps0 = 10.0 * (P.scale + float(np.abs(x).max(initial=0.0)))
    le = np.full(N, math.log(eps0))
    le1 = np.minimum(np.log(eps), le)
    z0 = x + 1j * eps0
    w, r, conv = _newton(P, -z0, -P.m1 / z0, z0, tol=tol)
    if not conv.all():
        raise RuntimeError("Theorem 3.1 solver: no convergence at large Im z")
    step = np.full(N, 1.0)  # natural-log units
    fail = np.zeros(N, bool)
    for _ in range(max_rounds):
        act = np.nonzero((le > le1) & ~fail)[0]
        if act.size == 0:
            break
        ln = np.maximum(le1[act], le[act] - step[act])
        zn = x[act] + 1j * np.exp(ln)
        wo, ro = w[act], r[act]
        wn, rn, cv = _newton(P, wo, ro, zn, tol=tol)
        good = cv & (wn.imag <= 1e-9 * np.abs(wn)) & (np.abs(wn - wo) <= 0.7 * np.abs(wo)) & (
            np.abs(rn - ro) <= 0.7 * (np.abs(ro) + 0.1 * P.m1 / np.abs(wo)))
        ga, ba = act[good], act[~good]
        w[ga], r[ga], le[ga] = wn[good], rn[good], ln[good]
        step[ga] = np.minimum(math.log(10.0), step[ga] * 1.5)
        step[ba] *= 0.4
        fail[ba[step[ba] < 1e-8]] = True
    ok = (le <= le1) & ~fail
    w = np.where(ok, w, np.nan)
    r = np.where(ok, r, np.nan)
    return w, r, ok


def stieltjes(z, psi_p: float | SpectrumProblem, psi_n: float | None = None, t: float | None = None,
              sigma_spectrum: Sequence[float] = (1.0,), sigma_weights: Sequence[float] | None = None,
              act: str | Callable = "tanh", sigma_x: float | None = None) -> dict:
    """Solve Theorem 3.1 at complex points z (Im z > 0): q, r, s, D, ŝ, r̂ (arrays like z).

    Pass either ``(z, psi_p, psi_n, t, ...)`` or ``(z, problem)``.
    ``q(z) = (1/p) Tr (U − z)⁻¹``; the physical root (Im q > 0) is reached by
    continuation from large Im z (NaN at points where the continuation failed).
    """
    P = psi_p if isinstance(psi_p, SpectrumProblem) else spectrum_problem(
        psi_p, psi_n, t, sigma_spectrum, sigma_weights, act, sigma_x)
    z = np.asarray(z, complex)
    if np.any(~np.isfinite(z)) or np.any(z.imag <= 0):
        raise DiffmemError("stieltjes: every z must be finite with Im z > 0")
    w, r, ok = _continuation(P, z.real.ravel(), z.imag.ravel())
    q = 1.0 / w
    _, _, s = _system(P, w, r, z.ravel(), jac=False)
    D = 1.0 + P.c1 * r + P.c2 * q
    out = {"q": q, "r": r, "s": s, "D": D, "s_hat": P.b2p + w, "r_hat": P.kappa / D}
    return {k: v.reshape(z.shape) for k, v in out.items()}


# --------------------------------------------------------------------------- real axis: edges


def _real_eval(P: SpectrumProblem, w: float, r: float):
    """Pure-float evaluation on the real w line: F₁, ∂F₁/∂w, ∂F₁/∂r, Z(w, r) and dZ/dw along F₁ = 0."""
    k = P.constants
    c1, c2, kap, pp, b2p, v2 = P.c1, P.c2, P.kappa, P.psi_p, P.b2p, k.v_t2
    E = w * (1.0 + c1 * r) + c2
    g = w / E
    dg_dw = c2 / (E * E)
    dg_dr = -c1 * w * w / (E * E)
    s = rr = ds_dw = ds_dr = drr_dw = drr_dr = 0.0
    for l, o in zip(P._ell_list, P._om_list):
        den = b2p + w + kap * l * g
        i1 = 1.0 / den
        i2 = i1 * i1
        a = 1.0 + kap * l * dg_dw
        b = kap * l * dg_dr
        s += o * i1
        rr += o * l * i1
        ds_dw -= o * a * i2
        ds_dr -= o * b * i2
        drr_dw -= o * l * a * i2
        drr_dr -= o * l * b * i2
    F1 = r - rr
    J11, J12 = -drr_dw, 1.0 - drr_dr
    Z = k.s_t2 + v2 * g + ((1.0 - pp) * w - s * w * w) / pp
    Zw = v2 * dg_dw + ((1.0 - pp) - ds_dw * w * w - 2.0 * s * w) / pp
    Zr = v2 * dg_dr - ds_dr * w * w / pp
    dZ = Zw - Zr * J11 / J12 if J12 != 0 else math.nan
    return F1, J11, J12, Z, dZ


def _rscale(P, w, r) -> float:
    """Size of r for step control: |r| + 0.1 m₁/|w| (r ~ m₁ q may cross 0 inside a gap)."""
    return abs(r) + 0.1 * P.m1 / max(abs(w), 1e-300)


def _solve_r(P, w, r, maxit=60):
    """Real Newton (with backtracking on |F₁|) for F₁(w, r) = 0 in r from the guess r; None if it fails."""
    F1, _, J12, _, _ = _real_eval(P, w, r)
    for _ in range(maxit):
        if J12 == 0 or not math.isfinite(J12):
            return None
        dr = -F1 / J12
        lim = 0.5 * _rscale(P, w, r)
        if abs(dr) > lim:
            dr = math.copysign(lim, dr)
        for _ in range(30):  # backtracking
            Fn, _, Jn, _, _ = _real_eval(P, w, r + dr)
            if abs(Fn) < abs(F1) or abs(dr) <= 1e-15 * _rscale(P, w, r):
                break
            dr *= 0.5
        else:
            return None
        r, F1, J12 = r + dr, Fn, Jn
        if abs(dr) <= 1e-14 * _rscale(P, w, r) or F1 == 0.0:
            return r
    return None


def _march_edge(P: SpectrumProblem, w0: float, r0: float, up: bool):
    """From a real gap point (w0, r0) walk along the real branch of F₁ = 0 towards the
    bulk (λ increasing when ``up``) until dZ/dw changes sign; return the edge (λ, w, r).

    Z decreases with w on the physical branch, so ``up`` means decreasing w.
    The step doubles while the branch continues and halves when the real
    root is lost (the branch folds inside the bulk, past the edge).
    """
    sign = -1.0 if up else 1.0
    w, r = float(w0), float(r0)
    h = 1e-7 * max(abs(w), 1e-300)
    for _ in range(2000):
        wn = w + sign * h
        rn = _solve_r(P, wn, r)
        if rn is not None and abs(rn - r) > 0.5 * _rscale(P, w, r):
            rn = None
        if rn is None:
            h *= 0.5
            if h < 1e-15 * abs(w):  # the real branch ends without an edge: give up (caller falls back)
                raise RuntimeError("edge march: the real branch ends before dZ/dw changes sign")
            continue
        dZ = _real_eval(P, wn, rn)[4]
        if not (dZ < 0):
            # bisection on dZ/dw between (w, r) [dZ < 0] and (wn, rn) [dZ ≥ 0]
            wa, ra, wb, rb = w, r, wn, rn
            for _ in range(200):
                wm = 0.5 * (wa + wb)
                if wm in (wa, wb):
                    break
                rm = None
                for seed in (ra + (rb - ra) * (wm - wa) / (wb - wa), ra, rb):
                    rm = _solve_r(P, wm, seed)
                    if rm is not None and abs(rm - 0.5 * (ra + rb)) <= 2.0 * abs(rb - ra) + 1e-12 * _rscale(P, wm, rm):
                        break
                    rm = None
                if rm is None:
                    raise RuntimeError("edge refinement: lost the real branch")
                if _real_eval(P, wm, rm)[4] < 0:
                    wa, ra = wm, rm
                else:
                    wb, rb = wm, rm
            return _real_eval(P, wa, ra)[3], wa, ra
        w, r = wn, rn
        h *= 2.0
    raise RuntimeError("edge march did not terminate")


def _bisect_edge(P: SpectrumProblem, lam_gap: float, lam_bulk: float, iters: int = 45) -> float:
    """Fallback edge search: bisection in λ between a gap point and a bulk point, a point
    counting as inside the bulk when the root at ``Im z = 1e-13 × scale`` is complex
    (``|Im w| > 1e-7 |w|``).  Accurate to ~1e-12 of the interval."""
    a, b = float(lam_gap), float(lam_bulk)
    eps = 1e-13 * P.scale
    for _ in range(iters):
        m = 0.5 * (a + b)
        w, _, ok = _continuation(P, np.array([m]), np.array([eps]))
        if not ok[0]:
            break
        if abs(w[0].imag) > 1e-7 * abs(w[0]):
            b = m
        else:
            a = m
    return 0.5 * (a + b)


def _edge(P, lam_gap, w_gap, r_gap, lam_bulk, up):
    """Edge between a gap grid point and a bulk grid point: exact march, else bisection."""
    try:
        e = _march_edge(P, w_gap.real, r_gap.real, up=up)[0]
        if min(lam_gap, lam_bulk) <= e <= max(lam_gap, lam_bulk):
            return e
    except RuntimeError:
        pass
    return _bisect_edge(P, lam_gap, lam_bulk)


def _find_bulks(P: SpectrumProblem, n_grid: int = 600):
    """Bulks [(lo, hi), ...] of the continuous part of ρ.

    A log grid in ``x = λ − s_t²`` from 1e-8·scale to scale is solved at
    ``Im z = 1e-10 x``; points where the root is genuinely complex
    (``|Im w| > 1e-6 |w|``) lie in a bulk.  Each edge is then located exactly by
    :func:`_march_edge` from the neighbouring gap point (where the root is real).
    """
    s2 = P.constants.s_t2
    xs = np.geomspace(1e-8 * P.scale, P.scale, n_grid)
    lam = s2 + xs
    w, r, ok = _continuation(P, lam, 1e-10 * xs)
    if not ok.all():
        raise RuntimeError(f"Theorem 3.1 solver failed at {np.count_nonzero(~ok)} grid points")
    inb = np.abs(w.imag) > 1e-6 * np.abs(w)
    if inb[-1]:
        raise RuntimeError("spectrum extends beyond the estimated scale")
    bulks = []
    j = 0
    n = lam.size
    while j < n:
        if not inb[j]:
            j += 1
            continue
        k = j
        while k + 1 < n and inb[k + 1]:
            k += 1
        if j == 0:
            lo = s2  # the bulk reaches s_t² (hard edge at the δ position)
        else:
            lo = _edge(P, lam[j - 1], w[j - 1], r[j - 1], lam[j], up=True)
        hi = _edge(P, lam[k + 1], w[k + 1], r[k + 1], lam[k], up=False)
        bulks.append([float(lo), float(hi)])
        j = k + 1
    return bulks


# --------------------------------------------------------------------------- quadrature and contour checks


def _cheb_theta(m: int) -> np.ndarray:
    """Gauss–Chebyshev (first kind) angles θ_j = π(j + ½)/m, j = 0 … m−1."""
    return np.pi * (np.arange(m) + 0.5) / m


def _bulk_nodes(lo: float, hi: float, m: int) -> np.ndarray:
    """λ_j = c − h cos θ_j: increasing, clustered at both edges (θ = 0 ↔ lo)."""
    c, h = 0.5 * (lo + hi), 0.5 * (hi - lo)
    return c - h * np.cos(_cheb_theta(m))


def _density_in_bulks(P: SpectrumProblem, lam: np.ndarray, halfwidth: np.ndarray) -> np.ndarray:
    """ρ(λ) = (1/π) Im q(λ + iε) with ε = 1e-12 × (half-width of the bulk), for λ inside bulks."""
    if lam.size == 0:
        return np.zeros(0)
    w, _, ok = _continuation(P, lam, 1e-12 * halfwidth)
    if not ok.all():
        raise RuntimeError(f"Theorem 3.1 solver failed at λ = {lam[~ok][:5].tolist()}")
    rho = -w.imag / (np.pi * np.abs(w) ** 2)  # Im q = −Im w / |w|²
    return np.maximum(rho, 0.0)


def _bulk_mass(lo: float, hi: float, rho_nodes: np.ndarray) -> float:
    """∫_lo^hi ρ dλ = ∫_0^π ρ(c − h cos θ) h sin θ dθ by the midpoint rule in θ.

    With square-root edges ρ(c − h cos θ) h sin θ is smooth, even and
    2π-periodic in θ, so the rule converges exponentially.
    """
    m = rho_nodes.size
    h = 0.5 * (hi - lo)
    return float(np.pi / m * np.sum(rho_nodes * h * np.sin(_cheb_theta(m))))


def _cosine_coeffs(lo: float, hi: float, rho_nodes: np.ndarray) -> np.ndarray:
    """a_k = (2/m) Σ_j f_j cos kθ_j of f(θ) = ρ(c − h cos θ) h sin θ on the m Chebyshev angles."""
    m = rho_nodes.size
    th = _cheb_theta(m)
    f = rho_nodes * 0.5 * (hi - lo) * np.sin(th)
    return (2.0 / m) * (np.cos(np.outer(np.arange(m), th)) @ f)


def _converged(a: np.ndarray, rtol: float = 1e-11) -> bool:
    """Cosine coefficients decayed: the last quarter is below ``rtol`` × a_0."""
    tail = a[3 * a.size // 4:]
    return bool(np.max(np.abs(tail)) <= rtol * abs(a[0]))


def _adaptive_bulk_densities(P, bulks, m0: list[int], m_max: int = 7776, mass_rtol: float = 1e-9):
    """Density at m Chebyshev nodes per bulk, m tripled (old nodes reused) until converged.

    Converged: the cosine coefficients of ρ h sin θ have decayed below 1e-11
    (the usual square-root edges: exponential convergence), or the mass changed
    by less than ``mass_rtol`` (relative) in the last tripling (slower,
    algebraic convergence near a cusp or a nearly touching neighbour).
    """
    ms = list(m0)
    rho = [None] * len(bulks)
    mass_prev = [math.nan] * len(bulks)
    conv = [False] * len(bulks)
    todo = list(range(len(bulks)))
    while todo:
        lam, hw, sl = [], [], {}
        for b in todo:
            lo, hi = bulks[b]
            nodes = _bulk_nodes(lo, hi, ms[b])
            if rho[b] is not None:  # the old nodes are every third new node, starting at 1
                keep = np.ones(ms[b], bool)
                keep[1::3] = False
                nodes = nodes[keep]
            sl[b] = (len(lam), len(lam) + nodes.size)
            lam += nodes.tolist()
            hw += [0.5 * (hi - lo)] * nodes.size
        vals = _density_in_bulks(P, np.array(lam), np.array(hw))
        nxt = []
        for b in todo:
            new = vals[sl[b][0]:sl[b][1]]
            if rho[b] is None:
                rho[b] = new
            else:
                full = np.empty(ms[b])
                full[1::3] = rho[b]
                keep = np.ones(ms[b], bool)
                keep[1::3] = False
                full[keep] = new
                rho[b] = full
            lo, hi = bulks[b]
            mass = _bulk_mass(lo, hi, rho[b])
            conv[b] = _converged(_cosine_coeffs(lo, hi, rho[b])) or abs(mass - mass_prev[b]) <= mass_rtol * mass
            mass_prev[b] = mass
            if not conv[b] and 3 * ms[b] <= m_max:
                ms[b] *= 3
                nxt.append(b)
        todo = nxt
    return rho, conv


def _contour_masses(P: SpectrumProblem, bulks, m_max: int = 4096):
    """Mass enclosed by circles around each bulk and around s_t²: ``−(1/2πi)∮ q dz``.

    With q(z̄) = conj q(z) the circle ``c + R e^{iφ}`` gives
    ``mass = −(1/π) ∫_0^π Re(q(z) R e^{iφ}) dφ`` (midpoint rule in φ, i.e. the
    trapezoidal rule on the whole circle: error ~ (h/R)^m + (R/(h+g))^m for a
    bulk of half-width h whose nearest other singularity is g away).  R is the
    geometric mean of h and h + g, and m = 37/ln(R/h) points (error ~1e-16);
    a bulk needing more than ``m_max`` points (it nearly touches another) gets
    NaN.  The δ circle is centred on s_t² with radius half the gap to the
    lowest bulk (64 points).  Returns (bulk masses, δ mass).
    """
    s2 = P.constants.s_t2
    circles = []  # (centre, radius, m)
    for j, (lo, hi) in enumerate(bulks):
        c, h = 0.5 * (lo + hi), 0.5 * (hi - lo)
        below = lo - (bulks[j - 1][1] if j > 0 else s2)
        above = bulks[j + 1][0] - hi if j + 1 < len(bulks) else h
        g = min(below, above)
        if not g > 0:
            circles.append(None)
            continue
        R = math.sqrt(h * (h + g))
        m = int(math.ceil(37.0 / math.log(R / h)))
        circles.append((c, R, max(64, m)) if m <= m_max else None)
    lo0 = bulks[0][0] if bulks else s2 + 1.0
    circles.append((s2, 0.5 * (lo0 - s2), 64) if lo0 > s2 else None)
    zs, owner, rot = [], [], []
    for i, cr in enumerate(circles):
        if cr is None:
            continue
        c, R, m = cr
        e = np.exp(1j * _cheb_theta(m))
        zs.append(c + R * e)
        rot.append(R * e / m)
        owner.append(np.full(m, i))
    res = np.full(len(circles), np.nan)
    if zs:
        z = np.concatenate(zs)
        w, _, ok = _continuation(P, z.real, z.imag)
        vals = -((1.0 / w) * np.concatenate(rot)).real
        idx = np.concatenate(owner)
        sums = np.bincount(idx, weights=vals, minlength=len(circles))
        bad = np.bincount(idx, weights=~ok, minlength=len(circles)) > 0
        for i, cr in enumerate(circles):
            if cr is not None and not bad[i]:
                res[i] = sums[i]
    return res[:-1].tolist(), float(res[-1])


# --------------------------------------------------------------------------- public: spectrum


def theorem32_edges(psi_p: float, psi_n: float, t: float, act: str | Callable = "tanh",
                    sigma_x: float = 1.0) -> list[float]:
    """Support of ρ₁ in Theorem 3.2: ``s_t² + v_t² (1 ∓ √(ψ_p/ψ_n))²`` (valid for ψ_p, ψ_n ≫ 1)."""
    psi_p = _check_pos("psi_p", psi_p)
    psi_n = _check_pos("psi_n", psi_n)
    return _thm32(psi_p, psi_n, rf_constants(t, sigma_x=sigma_x, act=act))


def _thm32(psi_p: float, psi_n: float, k: Constants) -> list[float]:
    x = math.sqrt(psi_p / psi_n)
    return [k.s_t2 + k.v_t2 * (1 - x) ** 2, k.s_t2 + k.v_t2 * (1 + x) ** 2]


def spectrum(psi_p: float, psi_n: float, t: float, sigma_spectrum: Sequence[float] = (1.0,),
             sigma_weights: Sequence[float] | None = None, n_lambda: int = 400,
             lambdas: Sequence[float] | None = None, act: str | Callable = "tanh",
             sigma_x: float | None = None, contour_check: bool = True) -> dict:
    """Spectral density of U from Theorem 3.1: ρ = δ_mass·δ(λ − s_t²) + continuous bulks.

    Returns a JSON-serialisable dict:

    - ``lambda``, ``density``: the continuous part ρ(λ) (the δ atom excluded).
      By default ``n_lambda`` points adapted to the bulks: for each bulk its two
      edges (ρ = 0) and Gauss–Chebyshev nodes ``c − h cos θ_j`` clustered at the
      edges (bulks may live on scales 100× apart).  With ``lambdas`` the density
      at those points instead (exactly 0 outside the bulks).
    - ``bulks``: ``[[low, high, mass], ...]`` sorted by λ; edges are the critical
      values of z(q) on the real axis (machine precision), masses by
      Gauss–Chebyshev quadrature of ρ over each bulk.
    - ``bulk_mass_contour``: the same masses from ``−(1/2πi)∮ q dz`` around each
      bulk (independent check; only if ``contour_check``).
    - ``delta_mass``: ``1 − (1 + ψ_n)/ψ_p`` if ``ψ_p > 1 + ψ_n`` else 0, at
      ``delta_position`` = s_t²; ``delta_mass_check`` = 1 − Σ bulk masses and
      ``delta_mass_contour`` (residue of −q at s_t²).
    - ``theorem32_edges``: ρ₁ interval of Theorem 3.2, ``regime`` ("I": ψ_p > ψ_n,
      "II": ψ_n ≥ ψ_p), ``constants`` and ``params``.
    - ``quadrature``: per bulk ``{"low", "high", "density"}`` at the Chebyshev
      nodes (used by :func:`theory_cdf`); the node count is tripled until the
      cosine coefficients of ``ρ h sin θ`` have decayed to 1e-11
      (``quadrature_converged``).
    - ``warnings``: unresolved mass, unconverged quadrature, contour mismatch.
    """
    P = spectrum_problem(psi_p, psi_n, t, sigma_spectrum, sigma_weights, act, sigma_x)
    try:
        n_lambda = int(n_lambda)
    except (TypeError, ValueError):
        raise DiffmemError(f"n_lambda must be an integer, got {n_lambda!r}") from None
    try:
        return _spectrum(P, t, act, n_lambda, lambdas, contour_check)
    except (RuntimeError, FloatingPointError, ZeroDivisionError, OverflowError) as e:
        # the solver's own failures become a one-line refusal (never a traceback)
        raise DiffmemError(f"Theorem 3.1 solver failed at psi_p={P.psi_p:g}, psi_n={P.psi_n:g}, t={float(t):g}: "
                           f"{str(e).splitlines()[0] if str(e) else type(e).__name__} "
                           "(outside the range where it converges)") from None


def _spectrum(P: SpectrumProblem, t, act, n_lambda: int, lambdas, contour_check: bool) -> dict:
    t0 = time.perf_counter()
    bulks = _find_bulks(P)
    B = len(bulks)
    if B == 0:
        raise RuntimeError("no continuous spectrum found")
    if lambdas is None and n_lambda < 10 * B:
        raise DiffmemError(f"n_lambda must be at least {10 * B} here ({B} bulks), got {n_lambda}")
    # interior nodes per bulk for the default grid (sum with edges = n_lambda)
    base, extra = divmod(n_lambda - 2 * B, B)
    m_grid = [base + (1 if j < extra else 0) for j in range(B)]
    m_first = [max(m, 96) if lambdas is None else 128 for m in m_grid]
    rho_nodes, quad_ok = _adaptive_bulk_densities(P, bulks, m_first)
    m_quad = [r.size for r in rho_nodes]
    masses = [_bulk_mass(lo, hi, rho) for (lo, hi), rho in zip(bulks, rho_nodes)]
    if lambdas is None:
        lam_out, rho_out = [], []
        for (lo, hi), m, mq, rho in zip(bulks, m_grid, m_quad, rho_nodes):
            step = mq // m
            if mq % m == 0 and step % 2 == 1 and 3 ** round(math.log(step, 3)) == step:
                lam_b, rho_b = _bulk_nodes(lo, hi, m), rho[(step - 1) // 2::step]  # nested nodes
            else:
                lam_b = _bulk_nodes(lo, hi, m)
                rho_b = _density_in_bulks(P, lam_b, np.full(m, 0.5 * (hi - lo)))
            lam_out += [lo, *lam_b, hi]
            rho_out += [0.0, *rho_b, 0.0]
        lam_out, rho_out = np.array(lam_out), np.array(rho_out)
    else:
        try:
            lam_out = np.asarray(lambdas, dtype=float).ravel()
        except (TypeError, ValueError):
            raise DiffmemError("lambdas must be a list of numbers") from None
        if lam_out.size == 0 or not np.all(np.isfinite(lam_out)):
            raise DiffmemError("lambdas must be a non-empty list of finite numbers")
        rho_out = np.zeros(lam_out.size)
        for lo, hi in bulks:
            inside = (lam_out > lo) & (lam_out < hi)
            rho_out[inside] = _density_in_bulks(P, lam_out[inside], np.full(inside.sum(), 0.5 * (hi - lo)))
    if contour_check:
        mc, dmc = _contour_masses(P, bulks)
    else:
        mc, dmc = [math.nan] * B, math.nan
    k = P.constants
    regime = "I" if P.psi_p > P.psi_n else "II"
    warnings = []
    missing = 1.0 - P.delta_mass - float(sum(masses))
    if abs(missing) > 1e-6:
        warnings.append(f"bulk masses + δ mass differ from 1 by {missing:.3g}: part of the spectrum is unresolved "
                        f"(e.g. a bulk narrower than ~1e-8 of the scale; v_t² = {k.v_t2:.3g})")
    if not all(quad_ok):
        warnings.append("Chebyshev quadrature not converged for bulks "
                        f"{[j for j, ok in enumerate(quad_ok) if not ok]} (a bulk nearly touching another or s_t²)")
    for j, (m1_, m2_) in enumerate(zip(masses, mc)):
        if math.isfinite(m2_) and abs(m1_ - m2_) > 1e-6 * max(m1_, 1e-300) + 1e-12:
            warnings.append(f"bulk {j}: quadrature mass {m1_:.10g} vs contour mass {m2_:.10g}")
    return {
        "lambda": lam_out.tolist(),
        "density": rho_out.tolist(),
        "bulks": [[float(lo), float(hi), float(m)] for (lo, hi), m in zip(bulks, masses)],
        "bulk_mass_contour": [float(x) for x in mc],
        "delta_mass": P.delta_mass,
        "delta_position": k.s_t2,
        "delta_mass_check": 1.0 - float(sum(masses)),
        "delta_mass_contour": dmc,
        "total_mass": P.delta_mass + float(sum(masses)),
        "theorem32_edges": _thm32(P.psi_p, P.psi_n, k),
        "regime": regime,
        "constants": k.to_dict(),
        "params": {"psi_p": P.psi_p, "psi_n": P.psi_n, "t": float(t), "sigma_spectrum": P.ell.tolist(),
                   "sigma_weights": P.omega.tolist(), "act": act if isinstance(act, str) else repr(act),
                   "sigma_x": k.sigma_x},
        "quadrature": [{"low": float(lo), "high": float(hi), "density": rho.tolist()}
                       for (lo, hi), rho in zip(bulks, rho_nodes)],
        "quadrature_converged": [bool(x) for x in quad_ok],
        "warnings": warnings,
        "seconds": time.perf_counter() - t0,
    }


# --------------------------------------------------------------------------- CDFs and the Kolmogorov distance


def _check_result(result) -> None:
    if not isinstance(result, dict) or "quadrature" not in result or "delta_mass" not in result:
        raise DiffmemError("expected the dict returned by spectrum()")


def theory_cdf(result: dict, x) -> np.ndarray:
    """Conditional CDF of the continuous part of ρ (the δ atom at s_t² excluded).

    ``F_c(x) = Σ_b ∫_{lo_b}^{min(x, hi_b)} ρ(λ) dλ / Σ_b mass_b``.  Inside a bulk
    the integral is exact for the cosine interpolant of ``ρ(c − h cos θ) h sin θ``
    on the Gauss–Chebyshev nodes: with coefficients
    ``a_k = (2/m) Σ_j f_j cos kθ_j``, ``∫_0^Θ f = a_0 Θ/2 + Σ_{k≥1} a_k sin(kΘ)/k``,
    ``Θ = arccos((c − x)/h)`` (spectrally accurate, like the masses).
    """
    _check_result(result)
    x = np.asarray(x, dtype=float)
    flat = x.ravel()
    out = np.zeros(flat.size)
    total = 0.0
    for b in result["quadrature"]:
        lo, hi = b["low"], b["high"]
        rho = np.asarray(b["density"])
        m = rho.size
        th = _cheb_theta(m)
        h, c = 0.5 * (hi - lo), 0.5 * (lo + hi)
        f = rho * h * np.sin(th)
        k = np.arange(m)
        a = (2.0 / m) * (np.cos(np.outer(k, th)) @ f)
        mass = 0.5 * a[0] * np.pi
        out[flat >= hi] += mass
        inside = np.nonzero((flat > lo) & (flat < hi))[0]
        for s in range(0, inside.size, 4096):
            idx = inside[s:s + 4096]
            T = np.arccos(np.clip((c - flat[idx]) / h, -1.0, 1.0))
            S = np.sin(np.outer(T, k[1:])) / k[1:]
            out[idx] += 0.5 * a[0] * T + S @ a[1:]
        total += mass
    return np.clip(out / total, 0.0, 1.0).reshape(x.shape)


def drop_delta(eigenvalues, delta_mass: float) -> np.ndarray:
    """Sorted eigenvalues without the δ atom: the ``round(delta_mass · N)`` smallest are removed.

    (For U = s_t² I + H Hᵀ exactly the p − rank(H) = p − n − d eigenvalues
    equal to s_t²; for the real-feature U, whose atom is slightly broadened, the
    same count of smallest eigenvalues.)
    """
    ev = np.sort(np.asarray(eigenvalues, dtype=float).ravel())
    if ev.size == 0 or not np.all(np.isfinite(ev)):
        raise DiffmemError("eigenvalues must be a non-empty array of finite numbers")
    if not 0.0 <= delta_mass < 1.0:
        raise DiffmemError(f"delta_mass must be in [0, 1), got {delta_mass}")
    return ev[int(round(delta_mass * ev.size)):]


def empirical_cdf(eigenvalues, x, delta_mass: float = 0.0) -> np.ndarray:
    """Empirical CDF at x of the eigenvalues left by :func:`drop_delta`: ``#{λ_i ≤ x} / N'``."""
    ev = drop_delta(eigenvalues, delta_mass)
    return np.searchsorted(ev, np.asarray(x, dtype=float), side="right") / ev.size


def kolmogorov_distance(result: dict, eigenvalues, exclude_delta: bool = True) -> float:
    """``sup_x |F_c(x) − F̂_c(x)|`` between the theory and the empirical CDFs of the non-δ part.

    ``F_c`` is :func:`theory_cdf` (the continuous part of ρ, renormalised to 1);
    ``F̂_c`` the empirical CDF of the ``N' = N − round(δ_mass N)`` eigenvalues
    left by :func:`drop_delta`.  With sorted λ_(1) ≤ … ≤ λ_(N') the supremum is
    ``max_i max(i/N' − F_c(λ_(i)), F_c(λ_(i)) − (i−1)/N')``.
    ``exclude_delta=False`` keeps all eigenvalues (meaningful only without an atom).
    """
    _check_result(result)
    ev = drop_delta(eigenvalues, result["delta_mass"] if exclude_delta else 0.0)
    F = theory_cdf(result, ev)
    n = ev.size
    i = np.arange(1, n + 1)
    return float(max(np.max(i / n - F), np.max(F - (i - 1) / n)))


# --------------------------------------------------------------------------- figure


def plot_spectrum(result: dict, path, eigenvalues=None, title: str | None = None):
    """PNG in the spirit of BUBM25 Fig. 4: the density of U with eigenvalue histograms.

    Top: all bulks on a log λ axis as density per decade ``ln(10) λ ρ(λ)``
    (the δ atom at s_t² drawn as a bar labelled with its mass); bottom: one
    linear panel per bulk (ρ(λ)).  ``eigenvalues`` (all p of them, δ part
    included) are histogrammed with the same normalisation (fraction of all
    eigenvalues per decade / per unit λ).  Returns the path.
    """
    _check_result(result)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bulks = result["bulks"]
    B = len(bulks)
    ev = None if eigenvalues is None else np.sort(np.asarray(eigenvalues, float).ravel())
    fig = plt.figure(figsize=(max(8.0, 3.2 * B), 6.5))
    gs = fig.add_gridspec(2, B, height_ratios=[1.0, 1.0], hspace=0.45, wspace=0.3)
    ax0 = fig.add_subplot(gs[0, :])
    s2, dm = result["delta_position"], result["delta_mass"]
    curves = []
    for b in result["quadrature"]:
        lo, hi = b["low"], b["high"]
        m = len(b["density"])
        lam = np.concatenate([[lo], _bulk_nodes(lo, hi, m), [hi]])
        rho = np.concatenate([[0.0], b["density"], [0.0]])
        curves.append((lam, rho))
        ax0.plot(lam, np.log(10) * lam * rho, color="C3", lw=1.6)
    lo_all = min(s2, bulks[0][0]) / 2
    hi_all = bulks[-1][1] * 1.5
    if ev is not None:
        pos = ev[ev > 0]
        bins = np.geomspace(max(lo_all, pos.min() / 1.2), max(hi_all, pos.max() * 1.2), 120)
        cnt, e = np.histogram(pos, bins=bins)
        ax0.stairs(cnt / ev.size / np.diff(np.log10(e)), e, color="C0", alpha=0.5, fill=True,
                   label=f"eigenvalues (p = {ev.size})")
    if dm > 0:
        ax0.axvline(s2, color="k", lw=1, ls="--")
        ax0.annotate(f"δ at s_t² = {s2:.3g}\nmass {dm:.4g}", (s2, 0.9), xycoords=("data", "axes fraction"),
                     xytext=(5, 0), textcoords="offset points", fontsize=8, va="top")
    ax0.set_xscale("log")
    ax0.set_xlim(lo_all, hi_all)
    ymax = max(float(np.max(np.log(10) * lam * rho)) for lam, rho in curves)
    ax0.set_ylim(0, 1.3 * ymax)
    ax0.set_xlabel("λ")
    ax0.set_ylabel("density per decade")
    p = result["params"]
    ax0.set_title(title or f"Spectrum of U (Theorem 3.1): ψ_p = {p['psi_p']:g}, ψ_n = {p['psi_n']:g}, t = {p['t']:g}, "
                  f"ρ_Σ atoms {p['sigma_spectrum']}", fontsize=10)
    ax0.plot([], [], color="C3", label="theory")
    ax0.legend(fontsize=8, loc="upper center")
    for j, ((lo, hi, mass), (lam, rho)) in enumerate(zip(bulks, curves)):
        ax = fig.add_subplot(gs[1, j])
        if ev is not None:
            w = hi - lo
            bins = np.linspace(lo - 0.1 * w, hi + 0.1 * w, 40)
            cnt, e = np.histogram(ev, bins=bins)
            ax.stairs(cnt / ev.size / np.diff(e), e, color="C0", alpha=0.5, fill=True)
        ax.plot(lam, rho, color="C3", lw=1.6)
        ax.set_title(f"[{lo:.4g}, {hi:.4g}], mass {mass:.4g}", fontsize=9)
        ax.set_xlabel("λ")
        ax.tick_params(labelsize=7)
        if j == 0:
            ax.set_ylabel("ρ(λ)")
    save_figure(fig, path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# --------------------------------------------------------------------------- naive reference


def naive_density(lambdas, psi_p: float, psi_n: float, t: float, sigma_spectrum: Sequence[float] = (1.0,),
                  sigma_weights: Sequence[float] | None = None, act: str | Callable = "tanh",
                  sigma_x: float | None = None, eps_schedule: Sequence[float] | None = None,
                  method: str = "hybr") -> np.ndarray:
    """Reference solver of the kind the authors use (benchmarks only; slow).

    For every λ separately, a cold start ``q = s = −1/z``, ``r = −∫ℓ dρ_Σ/z`` at ``z = λ + 100i``
    and the schedule ``Im z = 100, 99, …, 1, 0.9, 0.7, 0.5, 0.3, 0.1, 10⁻², …, 10⁻⁹``
    (113 solves), each by ``scipy.optimize.root(method="lm")`` (finite-difference
    Jacobian) on the real and imaginary parts of the three equations of
    Theorem 3.1 in the unknowns (q, r, s), warm-started from the previous Im z::

        s − ∫dρ_Σ/(ŝ + ℓ r̂) = 0,  r − ∫dρ_Σ ℓ/(ŝ + ℓ r̂) = 0,
        ψ_p(s_t² − z) + ψ_p v_t²/D + (1 − ψ_p)/q − s/q² = 0.

    Returns ``ρ(λ) = Im q/π`` at the last Im z (10⁻⁹ by default).
    """
    from scipy.optimize import root

    P = spectrum_problem(psi_p, psi_n, t, sigma_spectrum, sigma_weights, act, sigma_x)
    k = P.constants
    ell, om = P.ell, P.omega
    c1, c2, kap, pp, b2p = P.c1, P.c2, P.kappa, P.psi_p, P.b2p
    if eps_schedule is None:
        eps_schedule = [100.0 - j for j in range(100)] + [0.9, 0.7, 0.5, 0.3, 0.1] + [10.0 ** -e for e in range(2, 10)]

    def eqs(v, z):
        q, r, s = complex(v[0], v[1]), complex(v[2], v[3]), complex(v[4], v[5])
        D = 1.0 + c1 * r + c2 * q
        den = b2p + 1.0 / q + ell * kap / D
        e1 = s - np.sum(om / den)
        e2 = r - np.sum(om * ell / den)
        e3 = pp * (k.s_t2 - z) + pp * k.v_t2 / D + (1.0 - pp) / q - s / q**2
        return [e1.real, e1.imag, e2.real, e2.imag, e3.real, e3.imag]

    out = []
    for lam in np.asarray(lambdas, float).ravel():
        q0 = -1.0 / complex(lam, eps_schedule[0])  # large-|z| behaviour q ≈ s ≈ −1/z, r ≈ −∫ℓ dρ_Σ/z
        v = np.array([q0.real, q0.imag, P.m1 * q0.real, P.m1 * q0.imag, q0.real, q0.imag])
        for e in eps_schedule:
            v = root(eqs, v, args=(complex(lam, e),), method=method).x
        out.append(abs(v[1]) / np.pi)
    return np.array(out)
