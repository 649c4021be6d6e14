"""The random-features score model as a generative model (issue #13 item 4).

One random-features score ``s_k(x_t) = (A_k/√p) σ(W x_t/√d)`` per noise level
t_k of a σ grid (t_k = ``sigma_to_ou_t(σ_k)``; one frozen W [p, d] and one
training set X [n, d] ~ N(0, I) shared by all levels, from
:func:`diffmem.theory.rf.make_problem` with one seed), each trained on its own
loss (:mod:`.rf`) with the **real** features: U_k, V_k from
:func:`~diffmem.theory.rf.real_matrices` (the ξ expectation by Monte Carlo,
``n_rows`` feature rows per level).  Gradient flow from A = 0 has the closed
form (SPEC §2) ``B_k(τ) = A_k/√p = −(1/√Δ_k) V_kᵀ U_k⁻¹ (I − e^{−2Δ_k U_k τ/ψ_p})``,
evaluated from one eigendecomposition of U_k per level at any τ (τ = ∞:
U_k⁻¹), so no gradient descent is needed to generate at any training time.

:class:`RFDenoiser` wraps the levels under diffmem's one protocol
``D(x, σ) → E[y | x]``: with ``t = sigma_to_ou_t(σ)`` and the OU state
``x_t = vp_scale(σ) x`` (conversions of :mod:`diffmem.schedules`), Tweedie
gives ``D = e^{t} (x_t + Δ_t s_k(x_t))``, s_k the level nearest to σ in log σ.
Sample with the σ grid the levels were built on (``model.sigmas``) so every
evaluation hits its own level.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import DiffmemError
from ..schedules import sigma_to_ou_t, vp_scale
from .constants import activation
from .rf import make_problem, real_matrices

__all__ = ["RFGenerative", "fit_levels", "RFDenoiser", "closed_form_B"]


@dataclass
class RFGenerative:
    """Eigen-systems of U_k per level: ``lam`` [K, p], ``Q`` [K, p, p], ``C = Qᵀ V`` [K, p, d]."""

    sigmas: np.ndarray  # [K] the positive σ of the grid, decreasing
    ts: np.ndarray  # [K] OU times
    deltas: np.ndarray  # [K]
    lam: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    W: np.ndarray  # [p, d]
    X: np.ndarray  # [n, d] training set
    psi_p: float
    act: str
    seconds: float

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def p(self) -> int:
        return self.W.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[0]


def closed_form_B(lam: np.ndarray, Q: np.ndarray, C: np.ndarray, delta: float, psi_p: float, tau: float) -> np.ndarray:
    """``B(τ) = A(τ)/√p`` [d, p] of the gradient flow from 0 (τ = inf: −Vᵀ U⁺/√Δ).

    Eigenvalues at or below ``p·eps·max λ`` (e.g. dead ReLU features) are the null space of U: the flow
    from A = 0 never moves there at τ = ∞ (pseudo-inverse, the minimum-norm limit) and moves linearly,
    ``D = 2Δτ/ψ_p``, at finite τ (the λ → 0 limit of ``(1 − e^{−2Δλτ/ψ_p})/λ``)."""
    lam = np.asarray(lam, float)
    null = lam <= lam.size * np.finfo(float).eps * max(float(np.max(np.abs(lam))), 1e-300)
    safe = np.where(null, 1.0, lam)
    if math.isinf(tau):
        D = np.where(null, 0.0, 1.0 / safe)
    else:
        D = np.where(null, 2.0 * delta * tau / psi_p, -np.expm1(-2.0 * delta * safe * tau / psi_p) / safe)
    return -((Q * D[None, :]) @ C).T / math.sqrt(delta)


def fit_levels(d: int, psi_p: float, n: int, sigmas: Sequence[float], seed: int = 0, n_rows: int = 8192,
               act: str = "tanh") -> RFGenerative:
    """Build one level per positive σ of ``sigmas`` (see the module doc); cost K · n_rows · p² flops."""
    sg = np.asarray(sigmas, float)
    sg = sg[sg > 0]
    if sg.size == 0 or not np.all(np.isfinite(sg)):
        raise DiffmemError("sigmas must hold at least one positive finite noise level")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise DiffmemError(f"n must be a positive integer, got {n!r}")
    t0 = time.perf_counter()
    lams, Qs, Cs, ts, deltas = [], [], [], [], []
    prob = None
    for s in sg:
        t = float(sigma_to_ou_t(s))
        prob = make_problem(d, psi_p, n / d, t, seed=seed, act=act)
        m = real_matrices(prob, n_noise=max(2, int(math.ceil(n_rows / n))), tilde=False)
        lam, Q = np.linalg.eigh(m["U"])
        lams.append(lam)
        Qs.append(Q)
        Cs.append(Q.T @ m["V"])
        ts.append(t)
        deltas.append(prob.delta)
    return RFGenerative(sigmas=sg, ts=np.array(ts), deltas=np.array(deltas), lam=np.array(lams), Q=np.array(Qs),
                        C=np.array(Cs), W=prob.W, X=prob.X, psi_p=prob.psi_p, act=act,
                        seconds=time.perf_counter() - t0)


class RFDenoiser:
    """``D(x [B, d], σ [B]) → [B, d]`` from the levels of ``model`` at training time ``tau`` (inf allowed)."""

    def __init__(self, model: RFGenerative, tau: float):
        if not (tau > 0):
            raise DiffmemError(f"tau must be positive (or inf), got {tau!r}")
        self.model = model
        self.tau = float(tau)
        self.B = [closed_form_B(model.lam[k], model.Q[k], model.C[k], model.deltas[k], model.psi_p, self.tau)
                  for k in range(model.sigmas.size)]
        self._act = activation(model.act)[0]
        self._logs = np.log(model.sigmas)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        m = self.model
        xs = x.detach().cpu().double().numpy().reshape(x.shape[0], -1)
        if xs.shape[1] != m.d:
            raise DiffmemError(f"the random-features model has d = {m.d}, got states of size {xs.shape[1]}")
        sg = sigma.detach().cpu().double().numpy().reshape(-1)
        out = np.empty_like(xs)
        for s in np.unique(sg):
            rows = sg == s
            k = int(np.argmin(np.abs(self._logs - math.log(s))))
            t = float(sigma_to_ou_t(s))
            xt = xs[rows] * float(vp_scale(s))
            score = self._act(xt @ m.W.T / math.sqrt(m.d)) @ self.B[k].T
            out[rows] = math.exp(t) * (xt - math.expm1(-2.0 * t) * score)  # e^t (x_t + Δ s), Δ = −expm1(−2t)
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device).reshape(x.shape)
