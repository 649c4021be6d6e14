"""Learning curves of the random-features score model (BUBM25 §3, SPEC §2).

Units and conventions
---------------------
Parameters ``A`` [d, p], model ``s_A(x) = (A/√p) σ(Wx/√d)``, loss divided by
d (see :mod:`diffmem.theory.rf`).  Write ``B = A/√p``; then

    L_train(B) = 1 + (Δ/d) Tr(B U Bᵀ) + (2√Δ/d) Tr(B V)

and gradient descent ``A ← A − η ∇_A L`` is ``B ← B − (η/p) ∇_B L``.  In the
limit of small η this is the gradient flow

    dB/dτ = −(2Δ/ψ_p) (B U + Vᵀ/√Δ),     τ = k η / d²            (*)

(k steps of size η; ψ_p = p/d).  So **one GD step of learning rate η on A
advances τ by η/d²**.  The authors' scripts use ``s = A σ`` without the 1/√p;
then ``B = A`` and one step advances τ by ``η p/d² = η ψ_p/d``: a time
recorded as k·η must be multiplied by ψ_p/d to be the paper's τ
(:func:`dtau_per_step`).

Solution of (*) from A = 0, with ``E = e^{−2ΔUτ/ψ_p}``, ``M = I − E``::

    B(τ) = −(1/√Δ) Vᵀ U⁻¹ M
    L_train(τ) = 1 − (1/d) Σ_λ (‖Vᵀ q_λ‖²/λ) (1 − e^{−4Δλτ/ψ_p})
    L_test(τ)  = 1 + (1/d) Tr(Vᵀ U⁻¹ M Ũ M U⁻¹ V) − (2/d) Tr(Vᵀ U⁻¹ M Ṽ)
    E_score(τ) = (L_test − L*)/Δ,   L* = 1 − (Δ/d) Tr Σ_t⁻¹   (= 1 − Δ for Σ = I)

E_score is the mean squared distance, per dimension, between s_A and the
exact score of P_t.  Each eigenvalue λ of U relaxes on the time ψ_p/(Δλ).

For the Gaussian-equivalent U = s_t² I + H Hᵀ (H [p, n+d]) everything is
computed from the thin SVD ``H = Q S Rᵀ``: U = s_t² + S² on span(Q) and s_t²
elsewhere; V lies in span(Q) (it is ∝ W, and W/√d is a block of H), so only
the r = n+d eigenpairs enter — the p − n − d eigenvalues of the δ peak never
do.  With ``D_i(τ) = (1 − e^{−2Δλ_iτ/ψ_p})/λ_i``, ``C = Qᵀ V`` [r, d],
``C̃ = Qᵀ Ṽ`` and ``Ĝ = Qᵀ Ũ Q`` [r, r]::

    L_test = 1 + (1/d) Dᵀ (Ĝ ∘ C Cᵀ) D − (2/d) Σ_i D_i (C C̃ᵀ)_ii

which costs r² per τ point.

Timescales (Thm 3.2): ``τ_gen ~ 1/Δ_t``; ``τ_mem = ψ_p/(Δ_t λ_min)`` with
``λ_min = s_t² + v_t² (1 − √(ψ_p/ψ_n))²`` the left edge of the ρ₁ bulk.
Caution (SPEC §2): at finite ψ_n about d eigenvalues sit just above s_t²,
below λ_min; they carry a slow tail of the train loss on the time
ψ_p/(Δ s_t²); λ_min is *not* the smallest non-δ eigenvalue of an empirical U.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from ..errors import DiffmemError
from ..fileio import save_figure
from .rf import RFProblem, gaussian_equivalent, make_problem

__all__ = [
    "EigenSystem",
    "eigensystem",
    "learning_curves",
    "predicted_timescales",
    "dtau_per_step",
    "lr_for_dtau",
    "simulate_gd",
    "crossing_time",
    "lambda_max",
    "curves",
    "plot_curves",
]


# --------------------------------------------------------------------------- time units

def dtau_per_step(lr: float, d: int, psi_p: float = 1.0, parametrisation: str = "paper") -> float:
    """τ advanced by one gradient step of learning rate ``lr`` on the loss (divided by d).

    ``paper``: s = (A/√p) σ(Wx/√d) → η/d².  ``no_sqrt_p`` (the authors'
    scripts): s = A σ(Wx/√d) → η ψ_p/d (= η p/d²).
    """
    if parametrisation == "paper":
        return float(lr) / d**2
    if parametrisation == "no_sqrt_p":
        return float(lr) * psi_p / d
    raise DiffmemError(f"parametrisation must be 'paper' or 'no_sqrt_p', got {parametrisation!r}")


def lr_for_dtau(dtau: float, d: int, psi_p: float = 1.0, parametrisation: str = "paper") -> float:
    """Learning rate η that advances τ by ``dtau`` per step (inverse of :func:`dtau_per_step`)."""
    return float(dtau) / dtau_per_step(1.0, d, psi_p, parametrisation)


# --------------------------------------------------------------------------- eigen-system

@dataclass
class EigenSystem:
    """U restricted to the subspace the dynamics can reach, in its eigenbasis.

    ``lam`` [r] eigenvalues of U; ``Q`` [p, r] orthonormal eigenvectors;
    ``C = Qᵀ V``, ``Ct = Qᵀ Ṽ`` [r, d]; ``G = Qᵀ Ũ Q`` [r, r];
    ``meta`` holds d, p, n, psi_p, psi_n, delta, s_t2, v_t2, min_test_loss.
    """

    lam: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    Ct: np.ndarray
    G: np.ndarray
    meta: dict
    source: dict = field(default_factory=dict, repr=False)  # matrices it came from (for simulations)
    K: np.ndarray | None = None  # [r, d] with G = K Kᵀ + shift·I (Gaussian equivalent only)
    shift: float = 0.0


def _meta_of(obj) -> dict:
    keys = ("d", "p", "n", "psi_p", "psi_n", "t", "delta", "s_t2", "v_t2", "min_test_loss")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise DiffmemError(f"matrices dict lacks {missing}; build it with gaussian_equivalent() or real_matrices()")
    return {k: obj[k] for k in keys}


def eigensystem(obj) -> EigenSystem:
    """Eigen-system of U from an :class:`RFProblem` (Gaussian equivalent), a
    :func:`gaussian_equivalent` dict (SVD of H) or a dict with dense ``U``,
    ``V``, ``U_tilde``, ``V_tilde`` (e.g. :func:`real_matrices`; eigh of U)."""
    if isinstance(obj, RFProblem):
        obj = gaussian_equivalent(obj, dense=False)
    if not isinstance(obj, dict):
        raise DiffmemError(f"expected an RFProblem or a dict of matrices, got {type(obj).__name__}")
    meta = _meta_of(obj)
    s2 = meta["s_t2"]
    V = obj["V"]
    Vt = obj.get("V_tilde", V)
    if "H" in obj:
        H = obj["H"]
        Q, S, _ = np.linalg.svd(H, full_matrices=False)
        lam = s2 + S**2
        # components of V, Ṽ outside span(H) (none for the exact Lemma C.1 V) live in the s_t² eigenspace
        both = np.concatenate([V, Vt], axis=1)
        nb2 = float(np.sum(both**2))
        out2 = nb2 - float(np.sum((Q.T @ both) ** 2))  # ‖(I − QQᵀ)[V, Ṽ]‖²
        if out2 > 1e-18 * nb2 and Q.shape[1] < Q.shape[0]:
            resid = both - Q @ (Q.T @ both)
            qr, rr = np.linalg.qr(resid)
            keep = np.abs(np.diag(rr)) > 1e-12 * np.abs(np.diag(rr)).max()
            qr = qr[:, keep]
            qr -= Q @ (Q.T @ qr)
            qr, _ = np.linalg.qr(qr)
            Q = np.concatenate([Q, qr], axis=1)
            lam = np.concatenate([lam, np.full(qr.shape[1], s2)])
        K = Q.T @ obj["Ut_factor"]
        G = K @ K.T
        G[np.diag_indices_from(G)] += obj["Ut_shift"]
        extra = {"K": K, "shift": float(obj["Ut_shift"])}
    elif "U" in obj:
        if "U_tilde" not in obj:
            raise DiffmemError("a dense matrices dict needs U, V, U_tilde (and optionally V_tilde)")
        lam, Q = np.linalg.eigh(obj["U"])
        G = Q.T @ obj["U_tilde"] @ Q
        extra = {}
    else:
        raise DiffmemError("matrices dict needs either H (Gaussian equivalent) or U (dense)")
    if np.any(lam <= 0):
        raise DiffmemError(f"U is not positive definite (smallest eigenvalue {lam.min():.3g})")
    return EigenSystem(lam=lam, Q=Q, C=Q.T @ V, Ct=Q.T @ Vt, G=G, meta=meta, source=obj, **extra)


# --------------------------------------------------------------------------- closed form

def predicted_timescales(psi_p: float, psi_n: float, consts) -> dict:
    """Thm 3.2 timescales: ``lambda_min = s² + v²(1 − √(ψ_p/ψ_n))²``,
    ``tau_mem = ψ_p/(Δ λ_min)``, ``tau_gen = 1/Δ`` (order of magnitude only),
    ``tau_slow = ψ_p/(Δ s²)`` (relaxation time of the ~d eigenvalues just
    above s_t², the slow tail of the train loss).  ``consts`` is a
    :class:`~diffmem.theory.constants.Constants` or a dict with delta, s_t2, v_t2."""
    get = (lambda k: consts[k]) if isinstance(consts, dict) else (lambda k: getattr(consts, k))
    delta, s2, v2 = get("delta"), get("s_t2"), get("v_t2")
    lam_min = s2 + v2 * (1.0 - math.sqrt(psi_p / psi_n)) ** 2
    lam_max1 = s2 + v2 * (1.0 + math.sqrt(psi_p / psi_n)) ** 2
    return {"lambda_min": lam_min, "lambda_max_rho1": lam_max1, "tau_mem": psi_p / (delta * lam_min),
            "tau_gen": 1.0 / delta, "tau_slow": psi_p / (delta * s2)}


def _closed_form(es: EigenSystem, taus: np.ndarray, block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    d, psi_p, delta = es.meta["d"], es.meta["psi_p"], es.meta["delta"]
    lam = es.lam
    cn = np.einsum("ij,ij->i", es.C, es.C)  # ‖Vᵀq_i‖²
    cct = np.einsum("ij,ij->i", es.C, es.Ct)  # (C C̃ᵀ)_ii
    P = es.G * (es.C @ es.C.T)  # Ĝ ∘ C Cᵀ   [r, r]
    train = np.empty(taus.size)
    test = np.empty(taus.size)
    for lo in range(0, taus.size, block):
        tb = taus[lo:lo + block]
        x = (2.0 * delta / psi_p) * tb[:, None] * lam[None, :]  # [T, r]
        Dm = -np.expm1(-x) / lam[None, :]  # (1 − e^{−2Δλτ/ψ_p})/λ
        train[lo:lo + block] = 1.0 - (-np.expm1(-2.0 * x)) @ (cn / lam) / d
        test[lo:lo + block] = 1.0 + np.einsum("ti,ti->t", Dm @ P, Dm) / d - 2.0 * (Dm @ cct) / d
    return train, test


def _as_taus(taus) -> np.ndarray:
    t = np.asarray(taus, dtype=float).ravel()
    if t.size == 0 or not np.all(np.isfinite(t)) or np.any(t < 0):
        raise DiffmemError("taus must be a non-empty list of finite, non-negative times")
    return t


def learning_curves(prob_or_matrices, taus, eig: EigenSystem | None = None) -> dict:
    """Closed-form gradient-flow curves at times ``taus`` (τ = kη/d², see module doc).

    Accepts an :class:`RFProblem` (Gaussian equivalent, SVD of H), a matrices
    dict (see :func:`eigensystem`) or a precomputed ``eig``.  Returns numpy
    arrays ``tau``, ``train_loss``, ``test_loss``, ``gap`` (= test − train),
    ``score_error`` (= (L_test − L*)/Δ), the predicted ``tau_mem``,
    ``tau_gen``, ``lambda_min``, ``tau_slow``, and the eigen-system ``eig``.
    """
    taus = _as_taus(taus)
    es = eig if eig is not None else eigensystem(prob_or_matrices)
    train, test = _closed_form(es, taus)
    m = es.meta
    ts = predicted_timescales(m["psi_p"], m["psi_n"], m)
    return {"tau": taus, "train_loss": train, "test_loss": test, "gap": test - train,
            "score_error": (test - m["min_test_loss"]) / m["delta"], **ts, "eig": es}


def crossing_time(tau, y, frac: float = 0.5, ref: float | None = None) -> float:
    """First τ at which ``y`` reaches ``frac · ref`` (``ref`` = last value of y by
    default), log-linearly interpolated between logged points; nan if never."""
    tau = np.asarray(tau, float)
    y = np.asarray(y, float)
    ref = y[-1] if ref is None else ref
    level = frac * ref
    above = (y >= level) if ref >= 0 else (y <= level)
    idx = np.flatnonzero(above)
    if idx.size == 0:
        return float("nan")
    i = idx[0]
    if i == 0:
        return float(tau[0])
    t0, t1, y0, y1 = tau[i - 1], tau[i], y[i - 1], y[i]
    if t0 <= 0:
        return float(t1)
    w = (level - y0) / (y1 - y0) if y1 != y0 else 1.0
    return float(math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0))))


# --------------------------------------------------------------------------- simulation

def _loss_evaluator(obj, es: EigenSystem | None, where: str):
    """Return f(B) -> (train, test) using matrix-level formulas, B = A/√p [d, p] or b = B Q [d, r]."""
    meta = _meta_of(obj)
    d, delta = meta["d"], meta["delta"]
    sd = math.sqrt(delta)
    if where == "basis":
        lam, C, Ct, G, K = es.lam, es.C, es.Ct, es.G, es.K

        def f(b):  # b = B Q  [d, r]
            tr_u = np.einsum("ij,j,ij->", b, lam, b)
            if K is not None:  # Qᵀ Ũ Q = K Kᵀ + shift I
                tr_ut = np.sum((b @ K) ** 2) + es.shift * np.einsum("ij,ij->", b, b)
            else:
                tr_ut = np.einsum("ij,ij->", b @ G, b)
            return (1 + delta / d * tr_u + 2 * sd / d * np.einsum("ij,ji->", b, C),
                    1 + delta / d * tr_ut + 2 * sd / d * np.einsum("ij,ji->", b, Ct))
        return f
    V, Vt = obj["V"], obj.get("V_tilde", obj["V"])
    if "H" in obj:
        H, s2, K0, beta = obj["H"], meta["s_t2"], obj["Ut_factor"], obj["Ut_shift"]

        def f(B):
            bb = np.einsum("ij,ij->", B, B)
            tr_u = s2 * bb + np.sum((B @ H) ** 2)
            tr_ut = beta * bb + np.sum((B @ K0) ** 2)
            return (1 + delta / d * tr_u + 2 * sd / d * np.einsum("ij,ji->", B, V),
                    1 + delta / d * tr_ut + 2 * sd / d * np.einsum("ij,ji->", B, Vt))
        return f
    U, Ut = obj["U"], obj["U_tilde"]

    def f(B):
        return (1 + delta / d * np.einsum("ij,ij->", B @ U, B) + 2 * sd / d * np.einsum("ij,ji->", B, V),
                1 + delta / d * np.einsum("ij,ij->", B @ Ut, B) + 2 * sd / d * np.einsum("ij,ji->", B, Vt))
    return f


def lambda_max(obj, iters: int = 200, seed: int = 0) -> float:
    """Largest eigenvalue of U by power iteration (+1 % margin), from H or dense U;
    GD with step dτ is stable for dτ < ψ_p/(Δ λ_max)."""
    rng = np.random.default_rng(seed)
    if "H" in obj:
        H = obj["H"]
        x = rng.standard_normal(H.shape[1])
        lam = 0.0
        for _ in range(iters):
            y = H.T @ (H @ x)
            lam = float(np.linalg.norm(y))
            x = y / lam
        return 1.01 * (lam + obj["s_t2"])
    U = obj["U"]
    x = rng.standard_normal(U.shape[0])
    lam = 0.0
    for _ in range(iters):
        y = U @ x
        lam = float(np.linalg.norm(y))
        x = y / lam
    return 1.01 * lam


def _log_steps(taus: np.ndarray, dtau: float) -> np.ndarray:
    return np.maximum(np.rint(taus / dtau).astype(np.int64), 0)


def simulate_gd(prob_or_matrices, taus, method: str = "gd", dtau: float | None = None, lr: float | None = None,
                basis: str = "eigen", parametrisation: str = "paper", prob: RFProblem | None = None,
                seed: int = 0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                max_steps: int = 10_000_000, eig: EigenSystem | None = None) -> dict:
    """Gradient-descent simulation of the random-features model, logged at ``taus``.

    ``method``:

    * ``"gd"`` — full-batch GD on the exact-expectation loss L_train(A) (the
      same U, V, Ũ, Ṽ as the closed form), A(0) = 0;
    * ``"gd_noise"`` — the paper's variant: every step draws one ξ per training
      point and descends the empirical loss (1/(nd)) Σ_ν ‖√Δ s_A(x_t^ν) + ξ^ν‖²
      with the real features (needs ``prob``; cost ~3 n p d per step);
    * ``"adam"`` — Adam (``betas``, ``eps``) on the exact loss, on the entries
      of A (Adam is not rotation invariant, so this runs in the original basis;
      its τ = kη/d² axis is nominal: Adam is not a discretised gradient flow).

    Time: ``dtau`` (τ per step) or ``lr`` (η on A); one step advances τ by
    :func:`dtau_per_step` (η/d² for the paper's parametrisation, η ψ_p/d for
    ``parametrisation="no_sqrt_p"``, i.e. GD on A' = A/√p).  Logged at steps
    ``round(τ/dτ)``; the returned ``tau`` are the exact step·dτ.  GD is
    stable for dτ < ψ_p/(Δ λ_max).  Default dτ: ``0.25 ψ_p/(Δ λ_max)`` (gd,
    gd_noise), and for Adam η = 1e-3 (on A).

    ``basis`` (gd only): ``"eigen"`` iterates B Q [d, r] in the eigenbasis
    of U (exactly the iterates of GD on A, since A stays in span(Q); carried
    by r scalars, O(r) per step); ``"kernel"`` (Gaussian equivalent only) iterates Z with
    B = Z Hᵀ, using HᵀH [(n+d)², no eigendecomposition]; ``"direct"`` iterates
    A [d, p] with products by U (via H when available).  Losses are computed
    from the iterate with the matrix formulas of :mod:`rf` (not from the
    closed form).  Returns ``tau``, ``train_loss``, ``test_loss``, ``gap``,
    ``score_error``, ``steps``, ``dtau``, ``lr``, ``seconds``, and for GD
    with ``basis="direct"`` the iterate ``B`` = A/√p [d, p] at the last τ.
    """
    taus = _as_taus(taus)
    if method not in ("gd", "gd_noise", "adam"):
        raise DiffmemError(f"method must be 'gd', 'gd_noise' or 'adam', got {method!r}")
    if basis not in ("eigen", "kernel", "direct"):
        raise DiffmemError(f"basis must be 'eigen', 'kernel' or 'direct', got {basis!r}")
    obj = prob_or_matrices
    if isinstance(obj, RFProblem):
        prob = obj if prob is None else prob
        obj = gaussian_equivalent(obj, dense=False)
    if not isinstance(obj, dict):
        raise DiffmemError(f"expected an RFProblem or a dict of matrices, got {type(obj).__name__}")
    meta = _meta_of(obj)
    d, p, psi_p, delta = meta["d"], meta["p"], meta["psi_p"], meta["delta"]
    sd = math.sqrt(delta)
    last_B = None  # the final iterate B = A/√p [d, p] (basis="direct" GD only)
    need_eig = method == "gd" and basis == "eigen"
    es = eig if eig is not None else (eigensystem(obj) if need_eig else None)
    if dtau is not None and lr is not None:
        raise DiffmemError("give either dtau or lr, not both")
    if lr is not None:
        dtau = dtau_per_step(lr, d, psi_p, parametrisation)
    if dtau is None:
        if method == "adam":
            dtau = dtau_per_step(1e-3, d, psi_p, parametrisation)
        else:
            lam_max = float(es.lam.max()) if es is not None else lambda_max(obj)
            dtau = 0.25 * psi_p / (delta * lam_max)
    if not (dtau > 0 and math.isfinite(dtau)):
        raise DiffmemError(f"dtau/lr must be positive, got dtau={dtau!r}")
    lr = lr_for_dtau(dtau, d, psi_p, parametrisation)
    # B ← B − h ∇_B L with h = η/p (paper) or η (no_sqrt_p); both equal dtau·d/ψ_p... = dtau · d²/p
    h = dtau * d * d / p
    steps = _log_steps(taus, dtau)
    if steps.max() > max_steps:
        raise DiffmemError(f"simulation needs {int(steps.max())} steps (> max_steps={max_steps}); increase dtau")
    order = np.argsort(steps, kind="stable")
    out_train = np.empty(taus.size)
    out_test = np.empty(taus.size)
    g_lin = 2.0 * sd / d  # ∇_B L = (2Δ/d) B U + (2√Δ/d) Vᵀ
    g_quad = 2.0 * delta / d
    t0 = time.perf_counter()

    if method == "gd" and basis == "eigen":
        # b = B Q [d, r] obeys b ← b (I − h (2Δ/d) Λ) − h (2√Δ/d) Cᵀ; from b = 0 every
        # column stays proportional to the column of Cᵀ, b = Cᵀ diag(φ), so the iterate
        # is carried exactly by the r scalars φ (same GD iterates, O(r) per step).
        lam = es.lam
        Ct = es.C.T  # [d, r]
        phi = np.zeros_like(lam)
        f = _loss_evaluator(obj, es, "basis")
        decay = 1.0 - h * g_quad * lam  # per-mode factor of one step
        force = h * g_lin
        k = 0
        for j in order:
            while k < steps[j]:
                phi *= decay
                phi -= force
                k += 1
            out_train[j], out_test[j] = f(Ct * phi[None, :])
    elif method == "gd" and basis == "kernel":
        if "H" not in obj:
            raise DiffmemError("basis='kernel' needs Gaussian-equivalent matrices (with H)")
        H = obj["H"]
        r = H.shape[1]
        KK = H.T @ H
        n = r - d
        # Vᵀ = E Hᵀ: V = (μ₁√Δ/Γ) W/√d and H[:, n:] = b_t W/√d
        Vn = obj["V"]
        coef = float(np.vdot(H[:, n:], Vn) / np.vdot(H[:, n:], H[:, n:]))
        E = np.zeros((d, r))
        E[:, n:] = coef * np.eye(d)
        if not np.allclose(H[:, n:] * coef, Vn, rtol=1e-10, atol=1e-14):
            raise DiffmemError("basis='kernel' needs V ∝ the W-block of H (exact Lemma C.1 matrices)")
        Z = np.zeros((d, r))
        A_step = (1.0 - h * g_quad * meta["s_t2"]) * np.eye(r) - h * g_quad * KK  # Z ← Z A_step − h g_lin E
        force = h * g_lin * E
        f = _loss_evaluator(obj, None, "original")
        k = 0
        for j in order:
            while k < steps[j]:
                Z = Z @ A_step - force
                k += 1
            out_train[j], out_test[j] = f(Z @ H.T)
    else:
        V = obj["V"]
        if "H" in obj:
            H, s2 = obj["H"], meta["s_t2"]

            def BU(B):
                return s2 * B + (B @ H) @ H.T
        else:
            U = obj["U"]

            def BU(B):
                return B @ U
        f = _loss_evaluator(obj, None, "original")
        B = np.zeros((d, p))
        k = 0
        if method == "gd":
            for j in order:
                while k < steps[j]:
                    B -= h * (g_quad * BU(B) + g_lin * V.T)
                    k += 1
                out_train[j], out_test[j] = f(B)
            last_B = B.copy()
        elif method == "adam":
            # Adam on A (paper: A = √p B; no_sqrt_p: A = B), learning rate lr
            scale = math.sqrt(p) if parametrisation == "paper" else 1.0
            A = np.zeros((d, p))
            m1 = np.zeros_like(A)
            m2 = np.zeros_like(A)
            b1, b2 = betas
            for j in order:
                while k < steps[j]:
                    k += 1
                    B = A / scale
                    g = (g_quad * BU(B) + g_lin * V.T) / scale
                    m1 = b1 * m1 + (1 - b1) * g
                    m2 = b2 * m2 + (1 - b2) * g * g
                    A -= lr * (m1 / (1 - b1**k)) / (np.sqrt(m2 / (1 - b2**k)) + eps)
                out_train[j], out_test[j] = f(A / scale)
        else:  # gd_noise
            if prob is None:
                raise DiffmemError("method='gd_noise' needs the RFProblem (prob=...) for the real features")
            from .constants import activation

            act, _ = activation(prob.act)
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), 77]))
            Wt = prob.W.T / math.sqrt(d)
            et = math.exp(-prob.t)
            xw = et * (prob.X @ Wt)  # [n, p] clean part of the pre-activations
            noise_w = sd * Wt
            nn = prob.n
            for j in order:
                while k < steps[j]:
                    xi = rng.standard_normal((nn, d))
                    F = act(xw + xi @ noise_w)  # [n, p]
                    R = sd * (F @ B.T) + xi  # residual √Δ s + ξ, [n, d]
                    B -= h * (2.0 * sd / (nn * d)) * (R.T @ F)
                    k += 1
                out_train[j], out_test[j] = f(B)
    secs = time.perf_counter() - t0
    return {"tau": steps * dtau, "train_loss": out_train, "test_loss": out_test, "gap": out_test - out_train,
            "score_error": (out_test - meta["min_test_loss"]) / delta, "steps": steps, "dtau": dtau, "lr": lr,
            "method": method, "basis": basis if method == "gd" else "direct", "seconds": secs,
            **({"B": last_B} if last_B is not None else {})}


# --------------------------------------------------------------------------- convenience + plot

def _jsonable(x):
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


def curves(psi_p: float, psi_n: float, t: float, d: int, seed: int = 0, n_tau: int = 200,
           tau_max: float | None = None, tau_min: float | None = None,
           sigma_spectrum: Sequence[float] = (1.0,), sigma_weights: Sequence[float] | None = None,
           act: str = "tanh") -> dict:
    """Closed-form curves for one Gaussian-equivalent problem, as a JSON-able dict.

    ``n_tau`` log-spaced τ from ``tau_min`` (default 0.01) to ``tau_max``
    (default 30 · max(τ_mem, τ_slow)), τ = kη/d².  Keys: ``tau``,
    ``train_loss``, ``test_loss``, ``gap``, ``score_error``, ``tau_mem``,
    ``tau_gen``, ``lambda_min``, ``tau_slow``, ``tau_mem_half_gap`` (first τ
    where the gap reaches half its last value), ``params``, ``seconds``.
    """
    if not (isinstance(n_tau, (int, np.integer)) and n_tau >= 2):
        raise DiffmemError(f"n_tau must be an integer >= 2, got {n_tau!r}")
    t0 = time.perf_counter()
    prob = make_problem(d, psi_p, psi_n, t, sigma_spectrum=sigma_spectrum, sigma_weights=sigma_weights,
                        seed=seed, act=act)
    ts = predicted_timescales(prob.psi_p, prob.psi_n, prob.consts)
    tmin = 0.01 if tau_min is None else float(tau_min)
    tmax = 30.0 * max(ts["tau_mem"], ts["tau_slow"]) if tau_max is None else float(tau_max)
    if not (0 < tmin < tmax and math.isfinite(tmax)):
        raise DiffmemError(f"need 0 < tau_min < tau_max, got {tmin}, {tmax}")
    taus = np.logspace(math.log10(tmin), math.log10(tmax), int(n_tau))
    res = learning_curves(prob, taus)
    res.pop("eig")
    res["tau_mem_half_gap"] = crossing_time(res["tau"], res["gap"], 0.5)
    res["params"] = prob.summary()
    res["seconds"] = time.perf_counter() - t0
    return {k: _jsonable(v) if not isinstance(v, dict) else {kk: _jsonable(vv) for kk, vv in v.items()}
            for k, v in res.items()}


def plot_curves(result, path, sim: dict | Sequence[dict] | None = None) -> str:
    """PNG in the spirit of BUBM25 Fig. 5A/B.

    ``result``: one dict from :func:`curves`/:func:`learning_curves` or a list
    of them (e.g. several ψ_n).  Left: train (dashed) and test (solid) loss vs
    τ; right: the same against τ/τ_mem (predicted).  ``sim``: optional
    simulation dict(s) (same order) drawn as markers.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [result] if isinstance(result, dict) else list(result)
    sims = [None] * len(results) if sim is None else ([sim] if isinstance(sim, dict) else list(sim))
    if not results:
        raise DiffmemError("plot_curves needs at least one result")
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    cmap = plt.get_cmap("viridis")
    for i, (r, s) in enumerate(zip(results, sims)):
        col = cmap(i / max(1, len(results) - 1) * 0.85)
        tau = np.asarray(r["tau"])
        psi_n = r.get("params", {}).get("psi_n", r.get("psi_n", None))
        lab = f"ψ_n={psi_n:g}" if psi_n is not None else None
        tm = float(r["tau_mem"])
        for ax, x in ((axes[0], tau), (axes[1], tau / tm)):
            ax.plot(x, r["test_loss"], "-", color=col, label=lab)
            ax.plot(x, r["train_loss"], "--", color=col)
        axes[2].plot(tau / tm, np.asarray(r["test_loss"]) - np.asarray(r["train_loss"]), color=col, label=lab)
        if s is not None:
            st = np.asarray(s["tau"])
            sel = st > 0
            axes[0].plot(st[sel], np.asarray(s["test_loss"])[sel], "o", ms=3, color=col, mfc="none")
            axes[0].plot(st[sel], np.asarray(s["train_loss"])[sel], "x", ms=3, color=col)
    axes[0].set_xlabel("τ = kη/d²")
    axes[0].set_title("train (dashed) and test (solid) loss")
    axes[1].set_xlabel("τ / τ_mem (predicted)")
    axes[1].set_title("rescaled by τ_mem = ψ_p/(Δ λ_min)")
    axes[2].set_xlabel("τ / τ_mem (predicted)")
    axes[2].set_title("generalisation gap L_test − L_train")
    for ax in axes:
        ax.set_xscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss (per dimension)")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return str(path)
