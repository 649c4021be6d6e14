"""Pure samplers over the denoiser protocol (DESIGN principle 3).

Every sampler is a function ``sampler(den, z, noise=None, callback=None, **params)``:

* ``den``: any denoiser ``D(x [B,*shape], sigma [B]) -> [B,*shape]`` (VE form);
* ``z``: ``[B, *shape]`` standard-normal latents (each sampler scales them);
* ``noise``: a :class:`PerSampleNoise` for stochastic samplers (injected
  randomness: sample ``j`` always draws from its own generator, so the same
  seed gives the same sample whatever the batch size or device);
* ``callback(i, x, denoised, sigma)``: sees the trajectory (KK26, BDKOS25);
* returns clean samples ``[B, *shape]`` in data space.

:func:`generate` draws the latents from per-sample seeds and runs a sampler in
batches.  Reusing the same seeds at every checkpoint lets one follow the same
sample over training.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .denoiser import Denoiser
from .errors import DiffmemError
from .schedules import DDPMSchedule, karras_sigmas, ou_t_to_sigma

__all__ = [
    "PerSampleNoise",
    "ddpm_ancestral",
    "ddim",
    "euler_maruyama",
    "heun",
    "generate",
    "SAMPLERS",
]

Callback = Callable[[int, Tensor, Tensor, Tensor], None] | None


class PerSampleNoise:
    """One CPU ``torch.Generator`` per sample (EDM's stacked generator).

    Draws on the CPU then moves to ``device`` so CPU and CUDA runs see the same
    numbers.
    """

    def __init__(self, seeds: Sequence[int]):
        self.gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def randn(self, shape: Sequence[int], dtype=torch.float32, device=None) -> Tensor:
        out = torch.stack([torch.randn(tuple(shape), generator=g, dtype=dtype) for g in self.gens])
        return out.to(device)


def _full(x: Tensor, value: float) -> Tensor:
    return torch.full((x.shape[0],), float(value), dtype=x.dtype, device=x.device)


@torch.no_grad()
def ddpm_ancestral(den: Denoiser, z: Tensor, noise: PerSampleNoise | None = None,
                   callback: Callback = None, schedule: DDPMSchedule | None = None) -> Tensor:
    """DDPM ancestral sampling over all T steps (posterior variance β_i), in VP form."""
    if noise is None:
        raise DiffmemError("ddpm sampler is stochastic: it needs per-sample noise (seeds)")
    sch = schedule or DDPMSchedule()
    betas, ab, sig = sch.betas, sch.alphas_bar, sch.sigmas
    x = z
    for i in range(sch.T - 1, -1, -1):
        s = _full(x, sig[i])
        x_ve = x / np.sqrt(ab[i])
        d = den(x_ve, s)
        eps = (x_ve - d) / sig[i]
        mean = (x - betas[i] / np.sqrt(1 - ab[i]) * eps) / np.sqrt(1 - betas[i])
        if callback is not None:
            callback(sch.T - 1 - i, x_ve, d, s)
        if i > 0:
            x = mean + np.sqrt(betas[i]) * noise.randn(x.shape[1:], x.dtype, x.device)
        else:
            x = mean
    return x


@torch.no_grad()
def ddim(den: Denoiser, z: Tensor, noise: PerSampleNoise | None = None, callback: Callback = None,
         schedule: DDPMSchedule | None = None, steps: int = 100, eta: float = 0.0) -> Tensor:
    """DDIM on ``linspace(0, T-1, steps)`` reversed (BUBM25 code); η = 0 is deterministic."""
    if eta > 0 and noise is None:
        raise DiffmemError("ddim with eta > 0 needs per-sample noise (seeds)")
    sch = schedule or DDPMSchedule()
    ab, sig = sch.alphas_bar, sch.sigmas
    idx = np.unique(np.round(np.linspace(0, sch.T - 1, steps)).astype(int))[::-1]
    x = z
    for k, i in enumerate(idx):
        s = _full(x, sig[i])
        x_ve = x / np.sqrt(ab[i])
        x0 = den(x_ve, s)
        eps = (x_ve - x0) / sig[i]
        if callback is not None:
            callback(k, x_ve, x0, s)
        ab_prev = ab[idx[k + 1]] if k + 1 < len(idx) else 1.0
        if ab_prev >= 1.0:
            x = x0
            break
        sd = eta * np.sqrt((1 - ab_prev) / (1 - ab[i]) * (1 - ab[i] / ab_prev))
        x = np.sqrt(ab_prev) * x0 + np.sqrt(max(1 - ab_prev - sd**2, 0.0)) * eps
        if sd > 0:
            x = x + sd * noise.randn(x.shape[1:], x.dtype, x.device)
    return x


@torch.no_grad()
def euler_maruyama(den: Denoiser, z: Tensor, noise: PerSampleNoise | None = None, callback: Callback = None,
                   t_max: float = 5.0, t_min: float = 1e-3, steps: int = 1000,
                   denoise_last: bool = True) -> Tensor:
    """Euler–Maruyama on the reverse OU SDE ``−dx = [x + 2 s(x,t)] dt + dB`` (SPEC §0, BUBM25 GMM).

    Uniform grid in t from ``t_max`` to ``t_min``.  The VP score is
    ``s_vp(x, t) = e^{t} s_ve(e^{t} x, σ(t))``.  Returns the data-space state
    ``e^{t_min} x`` (or its denoised mean if ``denoise_last``).
    """
    if noise is None:
        raise DiffmemError("euler_maruyama is stochastic: it needs per-sample noise (seeds)")
    ts = np.linspace(t_max, t_min, steps + 1)
    x = z
    for k in range(steps):
        t, h = ts[k], ts[k] - ts[k + 1]
        a = np.exp(-t)
        s = _full(x, float(ou_t_to_sigma(t)))
        x_ve = x / a
        d = den(x_ve, s)
        score_vp = (d - x_ve) / (s.reshape(-1, *([1] * (x.ndim - 1))) ** 2) / a
        if callback is not None:
            callback(k, x_ve, d, s)
        x = x + (x + 2 * score_vp) * h + np.sqrt(2 * h) * noise.randn(x.shape[1:], x.dtype, x.device)
    x_ve = x * np.exp(ts[-1])
    if denoise_last:
        return den(x_ve, _full(x, float(ou_t_to_sigma(ts[-1]))))
    return x_ve


@torch.no_grad()
def heun(den: Denoiser, z: Tensor, noise: PerSampleNoise | None = None, callback: Callback = None,
         steps: int = 32, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0,
         sigmas: Sequence[float] | None = None) -> Tensor:
    """Probability-flow ODE ``dx/dσ = (x − D(x, σ))/σ`` with Heun's method (EDM, deterministic)."""
    sg = np.asarray(sigmas, dtype=np.float64) if sigmas is not None else karras_sigmas(steps, sigma_min, sigma_max, rho)
    x = z * float(sg[0])
    for i in range(len(sg) - 1):
        s0, s1 = float(sg[i]), float(sg[i + 1])
        d0 = den(x, _full(x, s0))
        if callback is not None:
            callback(i, x, d0, _full(x, s0))
        slope = (x - d0) / s0
        x_next = x + (s1 - s0) * slope
        if s1 > 0:
            d1 = den(x_next, _full(x, s1))
            x_next = x + (s1 - s0) * 0.5 * (slope + (x_next - d1) / s1)
        x = x_next
    return x


SAMPLERS = {"ddpm": ddpm_ancestral, "ddim": ddim, "em": euler_maruyama, "heun": heun}


def generate(den: Denoiser, shape: Sequence[int], seeds: Sequence[int], sampler: str = "ddim",
             batch_size: int = 512, device=None, dtype=torch.float32, callback: Callback = None,
             **params) -> Tensor:
    """Generate ``len(seeds)`` samples of ``shape``; sample ``j`` depends only on ``seeds[j]``.

    Latents and per-step noise come from a generator seeded by ``seeds[j]``
    (latents first, then noise), so results do not depend on ``batch_size``.
    """
    if sampler not in SAMPLERS:
        raise DiffmemError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    fn = SAMPLERS[sampler]
    out = []
    for b in range(0, len(seeds), batch_size):
        ns = PerSampleNoise(seeds[b : b + batch_size])
        z = ns.randn(shape, dtype, device)
        out.append(fn(den, z, noise=ns, callback=callback, **params).cpu())
    if not out:
        return torch.empty((0, *shape), dtype=dtype)
    return torch.cat(out)
