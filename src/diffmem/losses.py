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

__all__ = ["dsm_loss", "tikhonov_term", "BDKOS25SigmaSampler", "DDPMSigmaSampler", "LogNormalSigmaSampler", "LossOut"]


@dataclass
class LossOut:
    loss: Tensor  # [B] per-sample loss
    sigma: Tensor  # [B] the noise level it was measured at


def dsm_loss(den: Denoiser, y: Tensor, sigma: Tensor, noise: Tensor | None = None,
             weighting: str = "eps", sigma_data: float = 0.5,
             generator: torch.Generator | None = None, tikhonov_c: float = 0.0,
             tikhonov_score: str = "ve") -> LossOut:
    """Per-sample DSM loss of ``den`` on clean data ``y [B, ...]`` at ``sigma [B]``.

    weighting:
      * ``"eps"``: ``mean_dims (ε̂ − n)²`` — the DDPM noise-MSE of BUBM25 (with
        :class:`~diffmem.denoiser.EpsDenoiser` it is *exactly* the DDPM loss);
      * ``"edm"``: ``λ(σ) mean_dims (D − y)²`` with ``λ = (σ² + σ_d²)/(σ σ_d)²``;
      * ``"x0"``: ``mean_dims (D − y)²`` (the KK26 per-noise-level error e(σ)).

    ``tikhonov_c > 0`` adds BDKOS25's Tikhonov term ``c mean_dims s²`` to each
    sample's loss (:func:`tikhonov_term`; ``tikhonov_score`` names the score it
    penalises, ``"ve"`` or ``"vp"``).  It is a separate addition after the
    weighted loss above; with ``c = 0`` (the default) nothing is added and the
    loss is the same tensor, bit for bit, as without the option.
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
    if tikhonov_c > 0:
        loss = loss + tikhonov_term(d, x, sigma, tikhonov_c, tikhonov_score)
    return LossOut(loss=loss, sigma=sigma)


def tikhonov_term(d: Tensor, x: Tensor, sigma: Tensor, c: float, score: str = "ve") -> Tensor:
    """BDKOS25's Tikhonov penalty per sample, ``c mean_dims s²``, of a denoiser output ``d = D(x, σ)``.

    ``score="ve"``: the VE score ``s = (D − x)/σ²`` (the protocol every model
    shares).  ``score="vp"``: the score of BDKOS25's VP SDE at the VP state
    ``x_vp = m x`` (``m = 1/sqrt(1 + σ²)``), ``s_vp = s_ve/m = (D − x) sqrt(1 + σ²)/σ²``
    -- the quantity their code penalises, ``mean((σ_vp s + z)²) + c mean(s²)``.

    Why the convention matters: with the ε-MSE loss ``mean_dims (D − y)²/σ²
    = mean_dims (σ s_ve + n)² = mean_dims (σ_vp s_vp + n)²`` (one identity:
    σ s_ve = σ_vp s_vp), loss + ``c mean s²`` is minimised by ``s = σ²/(σ² + c) s_N``
    in the convention the penalty uses, i.e. by
    :class:`~diffmem.closed_form.TikhonovDenoiser` with ``schedule="ve"`` or
    ``"vp"`` (where c acts as ``c (1 + σ²)`` on the VE score).  ``d``, ``x``:
    ``[B, ...]``; ``sigma``: ``[B]`` (VE level).  Returns ``[B]``.
    """
    s2 = _bcast(sigma, x) ** 2
    s = (d - x) / s2
    if score == "vp":
        s = s * torch.sqrt(1 + s2)
    elif score != "ve":
        raise ValueError(f"unknown Tikhonov score convention {score!r}; choose ve or vp")
    return float(c) * s.reshape(x.shape[0], -1).pow(2).mean(1)


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


class BDKOS25SigmaSampler:
    """BDKOS25's VP training times: ``t ~ U(t_min, 1)``, returned as the VE level ``σ = sqrt(e^{α(t)} − 1)``.

    ``α(t) = ∫₀ᵗ β``, ``β(t) = 0.001 + t(3 − 0.001)`` (:func:`diffmem.schedules.bdkos25_vp_alpha`).
    ``t_min = 1e-5`` (the end time of their ODE, and the usual ``eps`` of their
    reference code): ``t = 0`` would give ``σ = 0`` and a 0/0 loss.  σ is
    computed in float64 and returned as float32.
    """

    def __init__(self, t_min: float = 1e-5):
        self.t_min = float(t_min)

    def __call__(self, n: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        from .schedules import bdkos25_sigma

        t = self.t_min + (1 - self.t_min) * torch.rand(n, generator=generator, dtype=torch.float64)
        return bdkos25_sigma(t, "vp").to(torch.float32).to(device)
