"""One denoiser protocol for every model (DESIGN principle 1).

A *denoiser* is any callable ``D(x, sigma) -> y_hat`` with

* ``x``: ``[B, *shape]`` a VE-noisy state ``x = y + σ n``,
* ``sigma``: ``[B]`` the noise level of each row,
* returns ``[B, *shape]``, an estimate of the posterior mean ``E[y | x]``.

Neural networks (ε-prediction trained on DDPM indices, EDM-preconditioned:
the wrappers below, chosen through :mod:`diffmem.parametrisation`), the
closed forms of :mod:`diffmem.closed_form` (empirical, Gaussian, exact
mixture) all satisfy it, so every sampler and metric works on all of them.
Score and noise prediction are derived views below.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch
from torch import Tensor, nn

from .schedules import DDPMSchedule, sigma_to_ou_t, vp_scale

__all__ = [
    "Denoiser",
    "score",
    "eps_pred",
    "EpsDenoiser",
    "EDMDenoiser",
    "noise_label",
]


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor: ...


def _bcast(sigma: Tensor, x: Tensor) -> Tensor:
    """Reshape ``sigma [B]`` to broadcast against ``x [B, ...]``."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def score(den: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """VE score ``∇ log p_σ(x) = (D − x)/σ²``."""
    s = _bcast(sigma, x)
    return (den(x, sigma) - x) / s**2


def eps_pred(den: Denoiser, x: Tensor, sigma: Tensor) -> Tensor:
    """Noise prediction ``(x − D)/σ``."""
    s = _bcast(sigma, x)
    return (x - den(x, sigma)) / s


def noise_label(sigma: Tensor, kind: str, schedule: DDPMSchedule | None = None) -> Tensor:
    """The scalar a backbone is conditioned on.

    ``"ddpm"``: fractional DDPM index (BUBM25 code feeds the integer index);
    ``"ou_t"``: OU time t; ``"log_sigma"``: ``ln(σ)/4`` (EDM's c_noise).
    """
    if kind == "ddpm":
        return (schedule or DDPMSchedule()).sigma_to_index(sigma)
    if kind == "ou_t":
        return sigma_to_ou_t(sigma)
    if kind == "log_sigma":
        return torch.log(sigma) / 4
    raise ValueError(f"unknown noise label kind {kind!r}")


class EpsDenoiser(nn.Module):
    """Wrap an ε-predicting backbone trained in VP form (the BUBM25 setup).

    The backbone sees the VP state ``x_vp = x/sqrt(1+σ²)`` and a noise label and
    predicts the noise; ``D = x − σ ε̂``.  With ``label="ddpm"`` and σ on the
    DDPM grid this is exactly the DDPM network ``ε_θ(x_i, i)``, and the ε-MSE
    loss computed through this wrapper is exactly the DDPM loss.
    """

    def __init__(self, backbone: nn.Module, label: str = "ddpm", schedule: DDPMSchedule | None = None):
        super().__init__()
        self.backbone = backbone
        self.label = label
        self.schedule = schedule or DDPMSchedule()

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = _bcast(sigma, x)
        x_vp = x * vp_scale(s)
        lab = noise_label(sigma.to(torch.float32), self.label, self.schedule).to(x.dtype)
        eps = self.backbone(x_vp, lab)
        return x - s * eps


class EDMDenoiser(nn.Module):
    """EDM preconditioning (Karras et al. 2022): ``D = c_skip x + c_out F(c_in x, c_noise)``."""

    def __init__(self, backbone: nn.Module, sigma_data: float = 0.5):
        super().__init__()
        self.backbone = backbone
        self.sigma_data = float(sigma_data)

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = _bcast(sigma, x)
        sd2 = self.sigma_data**2
        c_skip = sd2 / (s**2 + sd2)
        c_out = s * self.sigma_data / torch.sqrt(s**2 + sd2)
        c_in = 1 / torch.sqrt(s**2 + sd2)
        c_noise = torch.log(sigma.to(x.dtype)) / 4
        return c_skip * x + c_out * self.backbone(c_in * x, c_noise)


DenoiserFn = Callable[[Tensor, Tensor], Tensor]
