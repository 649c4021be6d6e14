"""Closed-form denoisers: exact posterior means, no training (BDKOS25, KK26, BUBM25).

All satisfy the denoiser protocol ``D(x [B, *shape], sigma [B]) -> [B, *shape]``
(VE convention), so every sampler, metric, the audit and the report work on
them unchanged, and the model registry offers them as models
(``model.name=empirical|gaussian|exact``): a closed-form "run" has no
training steps, only evaluation.

* :class:`EmpiricalDenoiser` -- the exact minimiser of the empirical
  denoising loss: the posterior mean under the empirical distribution of the
  training set.  Memorises by construction.
* :class:`GaussianDenoiser` -- the exact denoiser of ``N(mean, cov)`` (linear).
* :class:`ExactDenoiser` -- wraps a known distribution with a ``denoise(x, sigma)``
  method (e.g. :class:`diffmem.data.GaussianMixture`) as a denoiser.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["EmpiricalDenoiser", "GaussianDenoiser", "ExactDenoiser"]


class EmpiricalDenoiser:
    """Exact denoiser of the empirical distribution of ``train`` (BDKOS25, KK26).

    ``D(x, σ) = Σ_n w_n y_n``, ``w = softmax_n(−‖x − y_n‖²/(2σ²))``.  It
    memorises by construction.  Computed in blocks of the training set with a
    running log-sum-exp and matmul distances (never a ``[B, n, d]`` tensor).

    ``train``: ``[n, *shape]``.  ``block``: training points per block.
    """

    def __init__(self, train: Tensor, block: int = 4096):
        self.train = train.reshape(train.shape[0], -1)
        self.shape = tuple(train.shape[1:])
        self.sq = (self.train**2).sum(1)
        self.block = block

    def log_weights_and_mean(self, x: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(log Σ_n K_n, Σ_n K_n y_n / Σ_n K_n)`` with ``K_n = exp(−‖x−y_n‖²/2σ²)``."""
        xf = x.reshape(x.shape[0], -1).to(self.train.dtype)
        inv = 1.0 / (2 * sigma.to(xf.dtype).reshape(-1, 1) ** 2)
        xsq = (xf**2).sum(1, keepdim=True)
        m = torch.full((xf.shape[0], 1), -torch.inf, dtype=xf.dtype, device=xf.device)
        acc = torch.zeros_like(xf)
        z = torch.zeros_like(m)
        for i in range(0, self.train.shape[0], self.block):
            y = self.train[i : i + self.block]
            d2 = (xsq - 2 * xf @ y.T + self.sq[i : i + self.block]).clamp_min(0)
            logits = -d2 * inv
            m_new = torch.maximum(m, logits.max(1, keepdim=True).values)
            scale = torch.exp(m - m_new)
            p = torch.exp(logits - m_new)
            acc = acc * scale + p @ y
            z = z * scale + p.sum(1, keepdim=True)
            m = m_new
        return (m + torch.log(z)).squeeze(1), acc / z

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        _, mean = self.log_weights_and_mean(x, sigma)
        return mean.reshape(x.shape).to(x.dtype)


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
