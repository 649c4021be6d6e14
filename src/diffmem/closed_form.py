"""Closed-form denoisers: exact posterior means, no training (BDKOS25, KK26, BUBM25).

All satisfy the denoiser protocol ``D(x [B, *shape], sigma [B]) -> [B, *shape]``
(VE convention), so every sampler, metric, the audit and the report work on
them unchanged, and the model registry offers them as models
(``model.name=empirical|gaussian|exact``): a closed-form "run" has no
training steps, only evaluation.

* :class:`EmpiricalDenoiser` -- the exact minimiser of the empirical
  denoising loss: the posterior mean under the empirical distribution of the
  training set.  Memorises by construction.
* :class:`TikhonovDenoiser`, :class:`ConsistencyDenoiser` -- BDKOS25's two
  regularised empirical scores (``model.name=tikhonov:c=1e-4``,
  ``model.name=consistency:tau=0.1``); ``c = 0`` / ``τ = 0`` are the empirical
  denoiser.  :func:`vp_score` / :func:`bdkos25_score` give the score in
  BDKOS25's VP or VE form.
* :class:`GaussianDenoiser` -- the exact denoiser of ``N(mean, cov)`` (linear).
* :class:`ExactDenoiser` -- wraps a known distribution with a ``denoise(x, sigma)``
  method (e.g. :class:`diffmem.data.GaussianMixture`) as a denoiser.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EmpiricalDenoiser", "TikhonovDenoiser", "ConsistencyDenoiser", "GaussianDenoiser", "ExactDenoiser",
           "vp_score", "bdkos25_score"]


class EmpiricalDenoiser:
    """Exact denoiser of the empirical distribution of ``train`` (BDKOS25, KK26).

    ``D(x, σ) = Σ_n w_n y_n``, ``w = softmax_n(−‖x − y_n‖²/(2σ²))``: the
    posterior mean of the mixture ``(1/N) Σ_n N(y_n, σ² I)``, whose score
    ``(D − x)/σ²`` is BDKOS25's empirical minimiser ``s_N`` (SPEC §4).  It
    memorises by construction.  Computed in blocks of the training set with a
    running log-sum-exp and matmul distances: memory is ``O(B·block + B·d)``,
    never a ``[B, n, d]`` tensor.

    ``train``: ``[n, *shape]`` tensor (any float dtype, any device: the
    computation runs in its dtype and on its device), or a numpy array /
    ``np.memmap`` (read block by block, converted to ``dtype``, default
    float32; never loaded whole).  ``block``: training points per block.

    VP form (BDKOS25): the mixture ``(1/N) Σ N(m y_n, σ_vp² I)`` at a VP state
    ``x_vp`` is this denoiser at the VE state ``x_vp/m`` and ``σ = σ_vp/m``; see
    :func:`vp_score` / :func:`bdkos25_score`.
    """

    def __init__(self, train, block: int = 4096, dtype: torch.dtype | None = None):
        from .errors import DiffmemError

        if int(block) < 1:
            raise DiffmemError(f"block must be a positive number of training points, got {block}")
        if train.ndim < 2 or train.shape[0] == 0:
            raise DiffmemError(f"the empirical denoiser needs a training set of shape (n ≥ 1, ...), got shape "
                               f"{tuple(train.shape)}")
        self.block = int(block)
        self.shape = tuple(int(s) for s in train.shape[1:])
        self.n = int(train.shape[0])
        if isinstance(train, torch.Tensor):
            self.train = train.reshape(train.shape[0], -1)
            if dtype is not None:
                self.train = self.train.to(dtype)
            self.sq = (self.train**2).sum(1)
            self._array = None
        else:  # numpy array or memmap: blocks are read on demand
            self.train = None
            self._array = train.reshape(train.shape[0], -1)
            self._dtype = dtype or torch.float32

    @property
    def dtype(self) -> torch.dtype:
        return self.train.dtype if self.train is not None else self._dtype

    def _blocks(self, device):
        """Yield ``(offset, y [b, d], ‖y‖² [b])`` over the training set."""
        for i in range(0, self.n, self.block):
            if self.train is not None:
                yield i, self.train[i : i + self.block], self.sq[i : i + self.block]
            else:
                import numpy as np

                y = torch.from_numpy(np.ascontiguousarray(self._array[i : i + self.block])).to(self._dtype)
                y = y.to(device)
                yield i, y, (y**2).sum(1)

    def _flat(self, x: Tensor, sigma: Tensor):
        from .errors import DiffmemError

        xf = x.reshape(x.shape[0], -1).to(self.dtype)
        d = self.train.shape[1] if self.train is not None else self._array.shape[1]
        if xf.shape[1] != d:
            raise DiffmemError(f"states have {xf.shape[1]} features per row but the training points have {d}")
        sig = torch.as_tensor(sigma).to(device=xf.device, dtype=xf.dtype).reshape(-1, 1)
        return xf, 1.0 / (2 * sig**2)

    def log_weights_and_mean(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(log Σ_n K_n [B], ŷ = Σ_n K_n y_n / Σ_n K_n [B, d])``, ``K_n = exp(−‖x−y_n‖²/2σ²)``.

        ``x``: ``[B, *shape]``, ``sigma``: ``[B]`` (VE).  One blocked pass; the
        log-sum-exp is exact in the dtype of the training set.
        """
        xf, inv = self._flat(x, sigma)
        xsq = (xf**2).sum(1, keepdim=True)
        m = torch.full((xf.shape[0], 1), -torch.inf, dtype=xf.dtype, device=xf.device)
        acc = torch.zeros_like(xf)
        z = torch.zeros_like(m)
        for _, y, ysq in self._blocks(xf.device):
            d2 = (xsq - 2 * xf @ y.T + ysq).clamp_min(0)
            logits = -d2 * inv
            m_new = torch.maximum(m, logits.max(1, keepdim=True).values)
            scale = torch.exp(m - m_new)
            p = torch.exp(logits - m_new)
            acc = acc * scale + p @ y
            z = z * scale + p.sum(1, keepdim=True)
            m = m_new
        return (m + torch.log(z)).squeeze(1), acc / z

    def mixture_stats(self, x: Tensor, sigma: Tensor) -> dict:
        """Posterior weights along a trajectory (BDKOS25's collapse diagnostics), one blocked pass.

        Returns ``log_z [B]`` (log Σ K_n), ``max_weight [B]`` (largest w_n),
        ``argmax [B]`` (its training index), ``entropy [B]`` (``−Σ w log w``,
        nats; 0 = collapsed onto one point, ``log n`` = uniform).
        """
        xf, inv = self._flat(x, sigma)
        xsq = (xf**2).sum(1, keepdim=True)
        B = xf.shape[0]
        m = torch.full((B, 1), -torch.inf, dtype=xf.dtype, device=xf.device)
        z = torch.zeros_like(m)
        el = torch.zeros_like(m)  # Σ p·(logit − m), kept relative to the running max m
        arg = torch.zeros(B, dtype=torch.long, device=xf.device)
        for off, y, ysq in self._blocks(xf.device):
            logits = -(xsq - 2 * xf @ y.T + ysq).clamp_min(0) * inv
            bmax, barg = logits.max(1, keepdim=True)
            arg = torch.where(bmax.squeeze(1) > m.squeeze(1), barg.squeeze(1) + off, arg)
            m_new = torch.maximum(m, bmax)
            scale = torch.exp(m - m_new)
            p = torch.exp(logits - m_new)
            shift = torch.where(z > 0, z * (m - m_new), torch.zeros_like(z))  # re-reference Σ p·(l − m)
            el = (el + shift) * scale + (p * (logits - m_new)).sum(1, keepdim=True)
            z = z * scale + p.sum(1, keepdim=True)
            m = m_new
        # with l' = logit − m: log Z = m + log z', H = log z' − Σ p' l' / z'
        lz = torch.log(z)
        return {"log_z": (m + lz).squeeze(1), "max_weight": torch.exp(-lz).squeeze(1),
                "argmax": arg, "entropy": (lz - el / z).squeeze(1).clamp_min(0)}

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        _, mean = self.log_weights_and_mean(x, sigma)
        return mean.reshape(x.shape).to(x.dtype)


def _check_nonneg(value, name: str, model: str) -> float:
    import math

    from .errors import DiffmemError

    try:
        v = float(value)
    except (TypeError, ValueError):
        raise DiffmemError(f"{model}: {name} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0:
        raise DiffmemError(f"{model}: {name} must be a finite number ≥ 0, got {value}")
    return v


class TikhonovDenoiser(EmpiricalDenoiser):
    """BDKOS25's Tikhonov-regularised empirical score as a denoiser (SPEC §4).

    Adding ``c E‖s‖²`` to the denoising loss gives the minimiser
    ``s_c = (m ŷ − x)/(σ² + c) = σ²/(σ² + c) · s_N``: a bounded score as t → 0,
    no collapse onto training points.  ``c = 0`` is :class:`EmpiricalDenoiser`
    exactly.

    ``schedule="ve"`` (m = 1; the regulariser on the VE score): in the VE
    protocol ``D = x + σ² s_c = x + σ²/(σ² + c) (ŷ − x)``.  ``schedule="vp"``
    (the regulariser on the VP score of BDKOS25's VP SDE, ``m² = 1/(1 + σ²)``
    with σ the VE level): the VE score is ``(ŷ − x)/(σ² + c/m²)``, so ``c`` acts
    as ``c (1 + σ²)``.  ``x``: ``[B, *shape]``, ``sigma``: ``[B]``.
    """

    def __init__(self, train, c: float, schedule: str = "ve", block: int = 4096, dtype=None):
        from .errors import DiffmemError

        self.c = _check_nonneg(c, "c", "tikhonov")
        if schedule not in ("ve", "vp"):
            raise DiffmemError(f"tikhonov: unknown schedule {schedule!r}; choose ve or vp")
        self.schedule = schedule
        super().__init__(train, block, dtype)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        _, mean = self.log_weights_and_mean(x, sigma)
        if self.c == 0:
            return mean.reshape(x.shape).to(x.dtype)
        xf = x.reshape(x.shape[0], -1).to(mean.dtype)
        s2 = torch.as_tensor(sigma).to(device=mean.device, dtype=mean.dtype).reshape(-1, 1) ** 2
        c = self.c * (1 + s2) if self.schedule == "vp" else self.c
        return (xf + s2 / (s2 + c) * (mean - xf)).reshape(x.shape).to(x.dtype)


class ConsistencyDenoiser(EmpiricalDenoiser):
    """BDKOS25's asymptotic-consistency regulariser as a denoiser (SPEC §4).

    ``K_n = exp(−‖x − m y_n‖²/(2σ²))``, ``w_n = K_n / max(Σ_k K_k, τ)``,
    ``s = (m Σ w_n y_n − (Σ w_n) x)/σ²``.  With ``ρ = Σ_n w_n =
    min(1, Σ K / τ)`` this is ``s = ρ s_N``; far from every training point
    (``Σ K < τ``) the score is damped.  ``log Σ K`` comes from the same blocked
    log-sum-exp as ``ŷ`` and ``ρ = exp(log Σ K − max(log Σ K, log τ))`` is
    taken in logs (no underflow).  K is invariant under the VP ↔ VE map
    (``‖x_vp − m y‖/σ_vp = ‖x_ve − y‖/σ_ve``), so one form serves both.  In
    the VE protocol ``D = x + ρ (ŷ − x)``; ``τ = 0`` (and every state with
    ``Σ K ≥ τ``) gives :class:`EmpiricalDenoiser` exactly.
    """

    def __init__(self, train, tau: float, block: int = 4096, dtype=None):
        self.tau = _check_nonneg(tau, "tau", "consistency")
        super().__init__(train, block, dtype)

    def weight_sum(self, x: Tensor, sigma: Tensor) -> Tensor:
        """``ρ = Σ_n w_n = min(1, Σ K/τ)`` ``[B]``."""
        log_z, _ = self.log_weights_and_mean(x, sigma)
        return self._rho(log_z)

    def _rho(self, log_z: Tensor) -> Tensor:
        import math

        if self.tau == 0:
            return torch.ones_like(log_z)
        return torch.exp(log_z - torch.clamp_min(log_z, math.log(self.tau)))

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        log_z, mean = self.log_weights_and_mean(x, sigma)
        rho = self._rho(log_z).reshape(-1, 1)
        xf = x.reshape(x.shape[0], -1).to(mean.dtype)
        out = torch.where(rho >= 1, mean, xf + rho * (mean - xf))
        return out.reshape(x.shape).to(x.dtype)


def vp_score(den, x_vp: Tensor, m, sigma_vp) -> Tensor:
    """The VP score of a VE-protocol denoiser (BDKOS25's VP form).

    A VP state ``x_vp = m y + σ_vp z`` is the VE state ``x = x_vp/m`` at
    ``σ = σ_vp/m``; ``p_vp(x_vp) ∝ p_ve(x_vp/m)``, so
    ``s_vp(x_vp) = s_ve(x_vp/m)/m = (D(x, σ) − x)/(m σ²)``.  For the empirical
    denoiser this is ``(m ŷ − x_vp)/σ_vp²``, BDKOS25's ``s_N``.
    ``x_vp``: ``[B, *shape]``; ``m``, ``sigma_vp``: floats or ``[B]``.
    """
    shape = (-1,) + (1,) * (x_vp.ndim - 1)
    m = torch.as_tensor(m, dtype=x_vp.dtype, device=x_vp.device).reshape(-1)
    sv = torch.as_tensor(sigma_vp, dtype=x_vp.dtype, device=x_vp.device).reshape(-1)
    m, sv = m.expand(x_vp.shape[0]), sv.expand(x_vp.shape[0])
    s_ve = sv / m
    x = x_vp / m.reshape(shape)
    return (den(x, s_ve) - x) / (m.reshape(shape) * s_ve.reshape(shape) ** 2)


def bdkos25_score(den, x: Tensor, t, schedule: str = "ve") -> Tensor:
    """Score ``s(x, t)`` of a denoiser under BDKOS25's SDEs at time ``t ∈ (0, 1]`` (SPEC §4).

    ``"ve"`` (σ₀ = 10): ``x`` is the VE state, ``s = (D(x, σ(t)) − x)/σ(t)²``.
    ``"vp"`` (β linear 0.001 → 3): ``x`` is the VP state, ``s`` the VP score
    (:func:`vp_score` with ``m(t) = e^{−α/2}``, ``σ_vp² = 1 − e^{−α}``).
    ``x``: ``[B, *shape]``; ``t``: a float.  Returns ``[B, *shape]``.
    """
    from .denoiser import score
    from .errors import DiffmemError
    from .schedules import bdkos25_ve_sigma, bdkos25_vp_m, bdkos25_vp_sigma

    t = float(t)
    if not 0 < t <= 1:
        raise DiffmemError(f"BDKOS25 time t must be in (0, 1], got {t}")
    if schedule == "ve":
        s = torch.full((x.shape[0],), float(bdkos25_ve_sigma(t)), dtype=x.dtype, device=x.device)
        return score(den, x, s)
    if schedule == "vp":
        return vp_score(den, x, float(bdkos25_vp_m(t)), float(bdkos25_vp_sigma(t)))
    raise DiffmemError(f"unknown BDKOS25 schedule {schedule!r}; choose ve or vp")


class GaussianDenoiser:
    """Exact denoiser of ``N(mean, cov)``: ``D = μ + Σ (Σ + σ² I)^{-1} (x − μ)``.

    ``mean``: ``[d]``, ``cov``: ``[d, d]``; ``x`` is ``[B, d]``.
    """

    def __init__(self, mean: Tensor, cov: Tensor):
        self.mean = mean
        self.evals, self.evecs = torch.linalg.eigh(cov)

    @classmethod
    def fit(cls, data: Tensor) -> "GaussianDenoiser":
        """The Gaussian with the mean and covariance of ``data [n, *shape]``."""
        x = data.reshape(data.shape[0], -1).to(torch.float64)
        return cls(x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]))

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        xf = x.reshape(x.shape[0], -1).to(self.mean.dtype)
        c = (xf - self.mean) @ self.evecs
        g = self.evals / (self.evals + sigma.to(xf.dtype).reshape(-1, 1) ** 2)
        return (self.mean + (c * g) @ self.evecs.T).reshape(x.shape).to(x.dtype)


class ExactDenoiser:
    """A known distribution's exact denoiser ``dist.denoise(x [B, d], sigma [B])`` under the protocol."""

    def __init__(self, dist):
        if not hasattr(dist, "denoise"):
            raise TypeError(f"{type(dist).__name__} has no exact denoiser (no denoise method)")
        self.dist = dist

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        xf = x.reshape(x.shape[0], -1)
        return self.dist.denoise(xf, sigma).reshape(x.shape)
