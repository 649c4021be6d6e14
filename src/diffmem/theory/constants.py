"""Constants of the random-features score model (BUBM25 §3, SPEC §2).

With u, v, z iid N(0, 1), ``c = e^{-t} σ_x``, ``Δ_t = 1 − e^{-2t}`` and
``Γ_t² = c² + Δ_t``::

    b_t  = E[v σ(cu + √Δ v)]
    a_t  = E[σ(cu + √Δ v) u] / c
    v_t² = E_u[(E_v σ(cu + √Δ v))²] − a_t² c²
    s_t² = E[σ(Γz)²] − a_t² c² − v_t² − b_t²
    μ₁   = E[σ(Γz) z],      ‖σ‖² = E[σ(Γz)²]

All expectations are computed by (tensor-product) Gauss–Hermite quadrature;
Monte Carlo with 5·10⁵ samples is off by ±40 % on ``s_t²`` at t = 0.01
because ``s_t²`` is a small difference of O(1) terms.  Stein's lemma gives
the cross-checks ``a_t = E[σ'(Γz)] = μ₁/Γ``, ``b_t = √Δ μ₁/Γ`` and
``a_t² c² + b_t² = μ₁²`` (see :func:`stein_checks`).

**Large t.**  ``a_t = E[σ u]/c`` divides an O(c) number by c = e^{-t}σ_x, and
``v_t²`` is a difference of O(1) numbers that is O(ρ⁴)–O(ρ⁶) small, with
``ρ² = c²/Γ²``; on the 2-D grid both lose every digit beyond t ≈ 20 (a_t came
out as −2.3e38 at t = 400).  Below c = 10⁻⁶ we use ``a_t = μ₁/Γ`` (Stein; at c =
10⁻⁶ the grid value still has ~10 digits), and when ρ² ≤ 1/4 and the grid's
v_t² is below 10⁻⁶ ‖σ‖² (≤ 10 digits left) Mehler's formula
``E_u[(E_v σ)²] = E[σ(Γz) σ(Γz')]`` with corr(z, z') = ρ², i.e.
``v_t² = m₀² + Σ_{k≥2} ρ^{2k} μ̂_k²`` with ``μ̂_k = E[σ(Γz) h_k(z)]`` on the
orthonormal Hermite polynomials h_k (m₀ = μ̂₀, μ₁ = μ̂₁); ``s_t² = ‖σ‖² −
μ₁² − v_t²`` (the two forms agree to ~1e-17 where both are accurate, and the
switch never fires for relu, whose v_t² → m₀² is O(1)).  b_t has no cancellation and stays on the grid (so the b_t
Stein check stays independent).  At σ_x = 1, a_t = μ₁ = 0.605706 for every t;
as t → ∞, v_t² → m₀² (0 for odd σ) and s_t² → ‖σ‖² − μ₁² − m₀².
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from ..errors import DiffmemError

__all__ = ["Constants", "rf_constants", "activation", "gauss_hermite", "stein_checks", "ACTIVATIONS"]


def _erf(x):
    from scipy.special import erf

    return erf(x)


ACTIVATIONS: dict[str, tuple[Callable, Callable]] = {
    "tanh": (np.tanh, lambda x: 1.0 / np.cosh(x) ** 2),
    "erf": (_erf, lambda x: 2.0 / math.sqrt(math.pi) * np.exp(-x * x)),
    "relu": (lambda x: np.maximum(x, 0.0), lambda x: np.heaviside(x, 0.5)),  # σ'(0) = ½
    "linear": (lambda x: x, lambda x: np.ones_like(x)),
}


def activation(name: str | Callable) -> tuple[Callable, Callable | None]:
    """(σ, σ') for a named activation; a callable σ comes with σ' = None."""
    if callable(name):
        return name, None
    if name not in ACTIVATIONS:
        raise DiffmemError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)} or pass a callable")
    return ACTIVATIONS[name]


def gauss_hermite(order: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights with ``Σ w f(x) ≈ E_{z~N(0,1)} f(z)`` (numpy's rule overflows above ~250 nodes)."""
    if not 1 <= order <= 250:
        raise DiffmemError(f"Gauss-Hermite order must be in [1, 250], got {order}")
    x, w = np.polynomial.hermite_e.hermegauss(order)
    return x, w / math.sqrt(2.0 * math.pi)


_RHO2_STABLE = 0.25  # ρ² = c²/Γ² at or below which Mehler's series may replace the grid's v_t²
_V_CANCEL = 1e-6  # ... when the grid's v_t² is below this fraction of ‖σ‖² (< 10 digits left)
_C_STABLE = 1e-6  # below this c, a_t = μ₁/Γ (Stein) instead of E[σ u]/c
_MEHLER_TERMS = 64  # ρ^{2k} ≤ 4^{-64}: far below double precision


def _hermite_coeffs(fz: np.ndarray, x: np.ndarray, w: np.ndarray, m: int) -> np.ndarray:
    """μ̂_k = E[f(z) h_k(z)], k < m, on the orthonormal probabilists' Hermite
    polynomials (h_{k+1} = (x h_k − √k h_{k−1})/√(k+1)), by the quadrature (x, w)."""
    out = np.empty(m)
    h_prev, h = np.zeros_like(x), np.ones_like(x)
    for k in range(m):
        out[k] = float(w @ (fz * h))
        h_prev, h = h, (x * h - math.sqrt(k) * h_prev) / math.sqrt(k + 1)
    return out


@dataclass(frozen=True)
class Constants:
    t: float
    sigma_x: float
    delta: float  # Δ_t = 1 − e^{-2t}
    gamma2: float  # Γ_t²
    a_t: float
    b_t: float
    v_t2: float
    s_t2: float
    mu1: float
    sigma_norm2: float  # ‖σ‖² = E[σ(Γz)²]

    def to_dict(self) -> dict:
        return asdict(self)


def rf_constants(t: float, sigma_x: float = 1.0, act: str | Callable = "tanh", order: int = 201) -> Constants:
    """The constants at diffusion time ``t`` for data scale ``σ_x² = Tr Σ / d``.

    ``order`` Gauss–Hermite nodes per dimension (201 gives ~1e-12 for tanh).
    """
    if not (t > 0 and math.isfinite(t)):
        raise DiffmemError(f"t must be a positive finite number, got {t!r}")
    if not (sigma_x > 0 and math.isfinite(sigma_x)):
        raise DiffmemError(f"sigma_x must be positive and finite, got {sigma_x!r}")
    f, _ = activation(act)
    x, w = gauss_hermite(order)
    delta = -math.expm1(-2.0 * t)
    c = math.exp(-t) * sigma_x
    sd = math.sqrt(delta)
    gamma2 = c * c + delta
    if not (math.isfinite(gamma2) and gamma2 > 0):
        raise DiffmemError(f"Gamma_t^2 = e^(-2t) sigma_x^2 + Delta_t = {gamma2!r} is not a positive finite number "
                           f"(t={t!r}, sigma_x={sigma_x!r})")
    gamma = math.sqrt(gamma2)
    rho2 = (c / gamma) ** 2
    # 2-D tensor grid: rows u, columns v
    F = f(c * x[:, None] + sd * x[None, :])
    inner_v = F @ w  # E_v σ(cu + √Δ v) as a function of u
    b_t = float(w @ (F @ (w * x)))
    fz = f(gamma * x)
    sigma_norm2 = float(w @ fz**2)
    mu1 = float(w @ (fz * x))
    a_grid = float((w * x) @ inner_v)  # = a_t c, exact to ~1e-16 absolute
    a_t = a_grid / c if c > _C_STABLE else mu1 / gamma  # Stein form once a_grid/c would lose > 6 digits
    v_t2 = float(w @ inner_v**2) - a_t**2 * c**2
    s_t2 = sigma_norm2 - a_t**2 * c**2 - v_t2 - b_t**2
    if rho2 <= _RHO2_STABLE and v_t2 < _V_CANCEL * sigma_norm2:
        # large t, v_t² a tiny difference of O(1) numbers: Mehler's series (see the module doc)
        coef = _hermite_coeffs(fz, x, w, _MEHLER_TERMS)
        # quadrature round-off (~1e-16 of ‖σ‖) is not a coefficient: an odd activation's E f = 0 exactly,
        # and its squared residue would otherwise print as a spurious v_t² ~ 1e-34
        coef = np.where(np.abs(coef) < 1e-13 * math.sqrt(sigma_norm2), 0.0, coef)
        v_t2 = float(coef[0] ** 2 + np.sum(rho2 ** np.arange(2, coef.size) * coef[2:] ** 2))
        s_t2 = sigma_norm2 - mu1**2 - v_t2
    vals = {"a_t": a_t, "b_t": b_t, "v_t2": v_t2, "s_t2": s_t2, "mu1": mu1, "sigma_norm2": sigma_norm2}
    bad = [k for k, v in vals.items() if not math.isfinite(v)]
    if bad:
        raise DiffmemError(f"random-features constants {bad} are not finite at t={t!r}, sigma_x={sigma_x!r}")
    return Constants(t=float(t), sigma_x=float(sigma_x), delta=delta, gamma2=gamma2, a_t=a_t, b_t=b_t,
                     v_t2=v_t2, s_t2=s_t2, mu1=mu1, sigma_norm2=sigma_norm2)


def stein_checks(k: Constants, act: str | Callable = "tanh", order: int = 201) -> dict[str, float]:
    """Residuals of the Stein identities (all ≈ 0 when the quadrature is right)."""
    f, df = activation(act)
    x, w = gauss_hermite(order)
    gamma = math.sqrt(k.gamma2)
    c = math.exp(-k.t) * k.sigma_x
    out = {
        "b_t - sqrt(delta) mu1 / gamma": k.b_t - math.sqrt(k.delta) * k.mu1 / gamma,
        "a_t - mu1 / gamma": k.a_t - k.mu1 / gamma,
        "a_t^2 c^2 + b_t^2 - mu1^2": k.a_t**2 * c**2 + k.b_t**2 - k.mu1**2,
    }
    if df is not None:
        out["a_t - E[sigma'(gamma z)]"] = k.a_t - float(w @ df(gamma * x))
    return out
