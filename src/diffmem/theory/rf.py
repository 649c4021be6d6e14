"""The random-features score model of BUBM25 §3 (SPEC §2) and its loss matrices.

Model and data (shapes in brackets)::

    s_A(x) = (A/√p) σ(W x/√d),   W [p, d] iid N(0, 1) frozen,  A [d, p] trained
    x ~ N(0, Σ),  Σ = diag(sigma_diag) [d],   x_t = e^{-t} x + √Δ ξ,  Δ = 1 − e^{-2t}

Loss at fixed diffusion time t, divided by d (exact expectation over ξ)::

    L(A) = 1 + (Δ/d) Tr(Aᵀ A U / p) + (2√Δ/d) Tr(A V / √p)
    U = (1/n) Σ_ν E_ξ[σ σᵀ]  [p, p],     V = (1/n) Σ_ν E_ξ[σ ξᵀ]  [p, d]

with σ = σ(W x_t^ν/√d) on the n training points (train loss); the test loss
uses Ũ = E_x U and Ṽ = E_x V.

Two ways to get the matrices:

* :func:`real_matrices` — from the actual features, the ξ expectation
  estimated by ``n_noise`` draws per training point (chunked, float64,
  bounded memory; symmetric rank-k updates);
* :func:`gaussian_equivalent` — Lemma C.1:
  ``U = s_t² I + H Hᵀ``, ``H = [G/√n, b_t W/√d]`` [p, n+d],
  ``G = e^{-t} a_t W X'/√d + v_t Ω`` with X' the problem's own data [d, n]
  and Ω [p, n] iid N(0, 1);
  ``Ũ = (μ₁²/Γ²) W Σ_t Wᵀ/d + (‖σ‖² − μ₁²) I`` with ``Σ_t = e^{-2t} Σ + Δ I``;
  ``V = Ṽ = (μ₁ √Δ/Γ) W/√d``.

The minimum of the test loss (the loss of the true score of P_t) is
``L* = 1 − (Δ/d) Tr Σ_t⁻¹`` (= 1 − Δ for Σ = I), so the distance to the true
score, per dimension, is ``E_score = (L_test − L*)/Δ``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import DiffmemError
from .constants import Constants, activation, rf_constants

__all__ = [
    "RFProblem",
    "make_problem",
    "gaussian_equivalent",
    "real_matrices",
    "ge_U_eigenvalues",
    "real_U_eigenvalues",
    "spectrum_counts",
]

# independent random streams of one problem seed
_STREAM_W, _STREAM_X, _STREAM_OMEGA, _STREAM_NOISE, _STREAM_TEST = range(5)


def _rng(seed: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), stream]))


def spectrum_counts(d: int, sigma_spectrum: Sequence[float], sigma_weights: Sequence[float] | None = None) -> np.ndarray:
    """Diagonal of Σ [d]: each eigenvalue of the discrete spectrum repeated on
    ``round(weight · d)`` coordinates (largest-remainder rounding, so the
    counts sum to d); equal weights when ``sigma_weights`` is None."""
    spec = np.asarray(list(sigma_spectrum), dtype=float).ravel()
    if spec.size == 0 or not np.all(np.isfinite(spec)) or np.any(spec <= 0):
        raise DiffmemError(f"sigma_spectrum must be a non-empty list of positive numbers, got {list(spec)}")
    if sigma_weights is None:
        wts = np.ones_like(spec)
    else:
        wts = np.asarray(list(sigma_weights), dtype=float).ravel()
        if wts.shape != spec.shape:
            raise DiffmemError(f"sigma_weights has {wts.size} entries but sigma_spectrum has {spec.size}")
        if not np.all(np.isfinite(wts)) or np.any(wts < 0) or wts.sum() <= 0:
            raise DiffmemError(f"sigma_weights must be non-negative with a positive sum, got {list(wts)}")
    wts = wts / wts.sum()
    raw = wts * d
    counts = np.floor(raw).astype(int)
    rest = d - counts.sum()
    if rest > 0:
        order = np.argsort(-(raw - counts), kind="stable")
        counts[order[:rest]] += 1
    return np.repeat(spec, counts)


@dataclass
class RFProblem:
    """One random-features problem: frozen weights, training data and constants.

    ``psi_p = p/d`` and ``psi_n = n/d`` are the *realised* ratios (p and n are
    rounded); the requested ones are kept in ``psi_p_requested`` etc.
    """

    d: int
    p: int
    n: int
    t: float
    act: str
    sigma_diag: np.ndarray  # [d] eigenvalues of Σ
    W: np.ndarray  # [p, d]
    X: np.ndarray  # [n, d] training data
    consts: Constants
    seed: int
    psi_p_requested: float = field(default=float("nan"))
    psi_n_requested: float = field(default=float("nan"))

    @property
    def psi_p(self) -> float:
        return self.p / self.d

    @property
    def psi_n(self) -> float:
        return self.n / self.d

    @property
    def delta(self) -> float:
        return self.consts.delta

    @property
    def sigma_t_diag(self) -> np.ndarray:
        """Diagonal of Σ_t = e^{-2t} Σ + Δ I [d]."""
        return math.exp(-2.0 * self.t) * self.sigma_diag + self.delta

    @property
    def min_test_loss(self) -> float:
        """L* = 1 − (Δ/d) Tr Σ_t⁻¹: test loss of the exact score of P_t."""
        return float(1.0 - self.delta * np.mean(1.0 / self.sigma_t_diag))

    def summary(self) -> dict:
        k = self.consts
        return {"d": self.d, "p": self.p, "n": self.n, "psi_p": self.psi_p, "psi_n": self.psi_n, "t": self.t,
                "act": self.act, "seed": self.seed, "sigma_x": k.sigma_x, "delta": k.delta, "a_t": k.a_t,
                "b_t": k.b_t, "v_t2": k.v_t2, "s_t2": k.s_t2, "mu1": k.mu1, "sigma_norm2": k.sigma_norm2}


def _check_pos(name: str, v, integer: bool = False):
    try:
        ok = v is not None and math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok or (integer and int(v) != float(v)):
        kind = "a positive integer" if integer else "a positive finite number"
        raise DiffmemError(f"{name} must be {kind}, got {v!r}")


def make_problem(d: int, psi_p: float, psi_n: float, t: float, sigma_spectrum: Sequence[float] = (1.0,),
                 sigma_weights: Sequence[float] | None = None, seed: int = 0, act: str = "tanh",
                 sigma_x: float | None = None) -> RFProblem:
    """Draw W [p, d] ~ N(0, 1) and X [n, d] ~ N(0, Σ), p = round(ψ_p d), n = round(ψ_n d).

    ``sigma_spectrum`` lists the eigenvalues (variances) of the diagonal Σ,
    spread over the d coordinates in proportions ``sigma_weights`` (equal by
    default).  The constants use ``σ_x² = Tr Σ/d`` unless ``sigma_x`` is given.
    """
    _check_pos("d", d, integer=True)
    _check_pos("psi_p", psi_p)
    _check_pos("psi_n", psi_n)
    _check_pos("t", t)
    if sigma_x is not None:
        _check_pos("sigma_x", sigma_x)
    try:
        seed = int(seed)
    except (TypeError, ValueError):
        raise DiffmemError(f"seed must be an integer, got {seed!r}") from None
    if seed < 0:
        raise DiffmemError(f"seed must be non-negative, got {seed}")
    d = int(d)
    p, n = int(round(psi_p * d)), int(round(psi_n * d))
    if p < 1 or n < 1:
        raise DiffmemError(f"psi_p*d and psi_n*d must round to at least 1 (got p={p}, n={n}); increase d")
    if p * max(n, d) > 4e8:
        raise DiffmemError(f"problem too large (p={p}, n={n}, d={d}); reduce d or the ratios")
    activation(act)  # validates the name
    sdiag = spectrum_counts(d, sigma_spectrum, sigma_weights)
    sx = float(sigma_x) if sigma_x is not None else math.sqrt(float(np.mean(sdiag)))
    consts = rf_constants(t, sigma_x=sx, act=act)
    W = _rng(seed, _STREAM_W).standard_normal((p, d))
    X = _rng(seed, _STREAM_X).standard_normal((n, d)) * np.sqrt(sdiag)[None, :]
    return RFProblem(d=d, p=p, n=n, t=float(t), act=act if isinstance(act, str) else "custom", sigma_diag=sdiag,
                     W=W, X=X, consts=consts, seed=seed, psi_p_requested=float(psi_p),
                     psi_n_requested=float(psi_n))


def _meta(prob: RFProblem, kind: str) -> dict:
    k = prob.consts
    return {"kind": kind, "d": prob.d, "p": prob.p, "n": prob.n, "psi_p": prob.psi_p, "psi_n": prob.psi_n,
            "t": prob.t, "delta": k.delta, "s_t2": k.s_t2, "v_t2": k.v_t2, "min_test_loss": prob.min_test_loss}


def gaussian_equivalent(prob: RFProblem, seed: int | None = None, dense: bool = True) -> dict:
    """Gaussian-equivalent matrices of Lemma C.1 (numpy float64).

    Returns ``H`` [p, n+d] with ``U = s_t² I + H Hᵀ``; ``Ut_factor`` [p, d]
    and ``Ut_shift`` with ``Ũ = Ut_factor Ut_factorᵀ + Ut_shift · I``
    (``Ut_factor = (μ₁/Γ) W Σ_t^{1/2}/√d``, ``Ut_shift = ‖σ‖² − μ₁²``);
    ``V`` = ``V_tilde`` [p, d]; plus scalars (``s_t2``, ``delta``, ``d``,
    ``psi_p``, ``min_test_loss`` ...).  With ``dense=True`` (default) also
    ``U`` and ``U_tilde`` [p, p] (p² floats each: 330 MB at p = 6400).

    ``seed`` draws Ω; None uses the problem's own Ω stream (deterministic).
    """
    k = prob.consts
    rng = _rng(prob.seed, _STREAM_OMEGA) if seed is None else _rng(int(seed), 100 + _STREAM_OMEGA)
    d, n, p = prob.d, prob.n, prob.p
    sqd = math.sqrt(d)
    omega = rng.standard_normal((p, n))
    # G = e^{-t} a_t W X'/√d + v_t Ω   [p, n]   (BUBM25 Lemma C.1)
    G = (math.exp(-prob.t) * k.a_t / sqd) * (prob.W @ prob.X.T) + math.sqrt(max(k.v_t2, 0.0)) * omega
    H = np.empty((p, n + d))
    H[:, :n] = G / math.sqrt(n)
    H[:, n:] = (k.b_t / sqd) * prob.W
    gamma = math.sqrt(k.gamma2)
    ut_factor = (k.mu1 / gamma / sqd) * prob.W * np.sqrt(prob.sigma_t_diag)[None, :]
    ut_shift = k.sigma_norm2 - k.mu1**2
    V = (k.mu1 * math.sqrt(k.delta) / gamma / sqd) * prob.W
    out = _meta(prob, "gaussian_equivalent")
    out.update(H=H, Ut_factor=ut_factor, Ut_shift=float(ut_shift), V=V, V_tilde=V)
    if dense:
        U = H @ H.T
        U[np.diag_indices(p)] += k.s_t2
        Ut = ut_factor @ ut_factor.T
        Ut[np.diag_indices(p)] += ut_shift
        out.update(U=U, U_tilde=Ut)
    return out


def _syrk_accumulate(C: np.ndarray, F: np.ndarray) -> None:
    """Lower triangle of C [p, p] (Fortran order) += Fᵀ F for F [m, p] (BLAS dsyrk, in place)."""
    from scipy.linalg.blas import dsyrk

    Ft = F.T  # [p, m], Fortran-contiguous when F is C-contiguous: no copy
    out = dsyrk(1.0, Ft, beta=1.0, c=C, trans=0, lower=1, overwrite_c=1)
    if out is not C:  # pragma: no cover - scipy had to copy
        C[...] = out


def _symmetrize_lower(C: np.ndarray) -> np.ndarray:
    """Copy the lower triangle to the upper one, block by block (no p² temporaries)."""
    p = C.shape[0]
    b = 512
    for lo in range(0, p, b):
        hi = min(p, lo + b)
        # rows lo:hi, columns > row: take from the lower triangle (transpose)
        blk = C[hi:, lo:hi]  # lower part below this diagonal block
        C[lo:hi, hi:] = blk.T
        sub = C[lo:hi, lo:hi]
        iu = np.triu_indices(hi - lo, 1)
        sub[iu] = sub.T[iu]
    return C


def real_matrices(prob: RFProblem, n_noise: int = 64, seed: int | None = None, n_test: int | None = None,
                  chunk_rows: int = 2048, tilde: bool = True, bias: np.ndarray | None = None) -> dict:
    """U, V, Ũ, Ṽ from the real features σ(W x_t/√d), float64.

    ``U = (1/n) Σ_ν (1/n_noise) Σ_k σ σᵀ`` with x_t = e^{-t} x^ν + √Δ ξ_k,
    ``n_noise`` fresh draws ξ_k per training point (unbiased for the exact
    E_ξ); V likewise with σ ξᵀ.  Ũ, Ṽ use ``n_test`` fresh (x, ξ) pairs
    (default ``n · n_noise``).  Work is done in blocks of ``chunk_rows`` rows
    of features, so memory is O(p² + chunk_rows · p); cost ≈ n · n_noise · p²
    flops (one symmetric rank-k update per block).  ``bias`` [p] (optional, not part of BUBM25's model)
    adds a fixed bias to every pre-activation: σ(W x_t/√d + b).
    """
    _check_pos("n_noise", n_noise, integer=True)
    _check_pos("chunk_rows", chunk_rows, integer=True)
    n_noise = int(n_noise)
    f, _ = activation(prob.act if prob.act != "custom" else "tanh")
    k = prob.consts
    d, n, p = prob.d, prob.n, prob.p
    sd, et, sqd = math.sqrt(k.delta), math.exp(-prob.t), math.sqrt(d)
    rng = _rng(prob.seed, _STREAM_NOISE) if seed is None else _rng(int(seed), 100 + _STREAM_NOISE)
    Wt = prob.W.T / sqd  # [d, p]
    b = np.zeros(p) if bias is None else np.asarray(bias, float).reshape(-1)
    if b.shape != (p,) or not np.all(np.isfinite(b)):
        raise DiffmemError(f"bias must hold p = {p} finite numbers, got shape {b.shape}")

    def features(xc, xi):
        return np.ascontiguousarray(f((et * xc + sd * xi) @ Wt + b))  # [m, p]

    # training matrices: blocks of whole points, each repeated n_noise times
    pts = max(1, int(chunk_rows) // n_noise)
    U = np.zeros((p, p), order="F")
    V = np.zeros((p, d))
    for lo in range(0, n, pts):
        xs = np.repeat(prob.X[lo:lo + pts], n_noise, axis=0)
        xi = rng.standard_normal(xs.shape)
        F = features(xs, xi)
        _syrk_accumulate(U, F)
        V += F.T @ xi
    U = np.ascontiguousarray(_symmetrize_lower(U)) / (n * n_noise)
    V /= n * n_noise
    out = _meta(prob, "real")
    out.update(U=U, V=V, n_noise=n_noise)
    if tilde:
        m = int(n_test) if n_test is not None else n * n_noise
        _check_pos("n_test", m, integer=True)
        trng = _rng(prob.seed, _STREAM_TEST) if seed is None else _rng(int(seed), 100 + _STREAM_TEST)
        Ut = np.zeros((p, p), order="F")
        Vt = np.zeros((p, d))
        sqrt_s = np.sqrt(prob.sigma_diag)[None, :]
        rows = int(chunk_rows)
        for lo in range(0, m, rows):
            mm = min(rows, m - lo)
            xs = trng.standard_normal((mm, d)) * sqrt_s
            xi = trng.standard_normal((mm, d))
            F = features(xs, xi)
            _syrk_accumulate(Ut, F)
            Vt += F.T @ xi
        Ut = np.ascontiguousarray(_symmetrize_lower(Ut)) / m
        out.update(U_tilde=Ut, V_tilde=Vt / m, n_test=m)
    return out


def ge_U_eigenvalues(prob: RFProblem, seed: int | None = None) -> np.ndarray:
    """Sorted eigenvalues [p] of the Gaussian-equivalent U = s_t² I + H Hᵀ,
    from the singular values of H (s_t² + S², padded with s_t² to p)."""
    ge = gaussian_equivalent(prob, seed=seed, dense=False)
    S = np.linalg.svd(ge["H"], compute_uv=False)
    lam = np.full(prob.p, prob.consts.s_t2)
    r = min(prob.p, S.size)
    lam[:r] += S[:r] ** 2
    return np.sort(lam)


def real_U_eigenvalues(prob: RFProblem, n_noise: int = 64, seed: int | None = None,
                       chunk_rows: int = 2048) -> np.ndarray:
    """Sorted eigenvalues [p] of the real-feature U (noise expectation by
    ``n_noise`` draws per point; see :func:`real_matrices`)."""
    m = real_matrices(prob, n_noise=n_noise, seed=seed, chunk_rows=chunk_rows, tilde=False)
    return np.sort(np.linalg.eigvalsh(m["U"]))
