"""Denoising score-matching losses (DESIGN principle 4).

A loss draws (or is given) a noise level per sample and returns the per-sample
loss *together with* that noise level, so that train/test loss per noise level
(the earliest memorisation signal) is a by-product, not a separate code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .denoiser import Denoiser, _bcast
from .schedules import DDPMSchedule

__all__ = ["dsm_loss", "DDPMSigmaSampler", "LogNormalSigmaSampler", "LossOut"]


@dataclass
class LossOut:
    loss: Tensor  # [B] per-sample loss
    sigma: Tensor  # [B] the noise level it was measured at


def dsm_loss(den: Denoiser, y: Tensor, sigma: Tensor, noise: Tensor | None = None,
             weighting: str = "eps", sigma_data: float = 0.5,
             generator: torch.Generator | None = None) -> LossOut:
    """Per-sample DSM loss of ``den`` on clean data ``y [B, ...]`` at ``sigma [B]``.

    weighting:
      * ``"eps"``: ``mean_dims (ε̂ − n)²`` — the DDPM noise-MSE of BUBM25 (with
        :class:`~diffmem.denoiser.EpsDenoiser` it is *exactly* the DDPM loss);
      * ``"edm"``: ``λ(σ) mean_dims (D − y)²`` with ``λ = (σ² + σ_d²)/(σ σ_d)²``;
      * ``"x0"``: ``mean_dims (D − y)²`` (the KK26 per-noise-level error e(σ)).
    """
    if noise is None:
        noise = torch.randn(y.shape, generator=generator, dtype=y.dtype, device=y.device)
    s = _bcast(sigma, y)
    x = y + s * noise
    d = den(x, sigma)
    err = (d - y).reshape(y.shape[0], -1).pow(2).mean(1)
    if weighting == "eps":
        loss = err / sigma.to(err.dtype) ** 2
    elif weighting == "edm":
        sd2 = sigma_data**2
        loss = err * (sigma.to(err.dtype) ** 2 + sd2) / (sigma.to(err.dtype) ** 2 * sd2)
    elif weighting == "x0":
        loss = err
    else:
        raise ValueError(f"unknown weighting {weighting!r}")
    return LossOut(loss=loss, sigma=sigma)


class DDPMSigmaSampler:
    """σ of a DDPM index drawn uniformly in ``[low, high]`` (BUBM25: [1, 999]; 0 never trained)."""

    def __init__(self, schedule: DDPMSchedule | None = None, low: int = 1, high: int | None = None):
        self.schedule = schedule or DDPMSchedule()
        self.low = low
        self.high = self.schedule.T - 1 if high is None else high
        self._sig = torch.as_tensor(self.schedule.sigmas, dtype=torch.float32)

    def __call__(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        i = torch.randint(self.low, self.high + 1, (n,), generator=generator)
        return self._sig[i].to(device)


class LogNormalSigmaSampler:
    """EDM: ``ln σ ~ N(P_mean, P_std²)``."""

    def __init__(self, p_mean: float = -1.2, p_std: float = 1.2):
        self.p_mean, self.p_std = p_mean, p_std

    def __call__(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        z = torch.randn(n, generator=generator)
        return torch.exp(self.p_mean + self.p_std * z).to(device)
