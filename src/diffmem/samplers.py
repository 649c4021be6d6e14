"""Pure samplers over the denoiser protocol (DESIGN principle 3; k-diffusion style).

Every sampler is a function ``sampler(den, z, sigmas, noise=None, callback=None, **opts)``:

* ``den``: any denoiser ``D(x [B,*shape], sigma [B]) -> [B,*shape]`` (VE form);
* ``z``: ``[B, *shape]`` standard-normal latents (each sampler scales them);
* ``sigmas``: the decreasing σ grid (float64), from :mod:`diffmem.schedules`
  (``karras_sigmas``, ``ddpm_sigmas``, ``ou_sigmas``); any grid works;
* ``noise``: a :class:`PerSampleNoise` for stochastic samplers (injected
  randomness: sample ``j`` always draws from its own generator, so the same
  seed gives the same sample whatever the batch size or device);
* ``callback(i, x, denoised, sigma)``: sees the trajectory (KK26, BDKOS25);
* returns clean samples ``[B, *shape]`` in data space.

:func:`generate` draws the latents from per-sample seeds, builds the sampler's
default grid for a number of ``steps`` (every sampler accepts one), and runs
it in batches.  Reusing the same seeds at every checkpoint lets one follow the
same sample over training.

=========  ===========  ==============  ==================================================
name       default σ    default steps   what
=========  ===========  ==============  ==================================================
``heun``   karras       32              EDM's 2nd-order probability-flow ODE (deterministic)
``ddim``   ddpm         100             DDIM, η = 0 by default (deterministic; BUBM25 code)
``ddpm``   ddpm         1000            ancestral DDPM (posterior variance β; stochastic)
``em``     ou           1000            Euler–Maruyama on the reverse OU SDE (BUBM25 GMM)
=========  ===========  ==============  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from .denoiser import Denoiser
from .errors import DiffmemError
from .schedules import sigma_grid, sigma_to_ou_t

__all__ = ["PerSampleNoise", "ddpm_ancestral", "ddim", "euler_maruyama", "heun", "generate", "SAMPLERS",
           "SamplerSpec", "default_sigmas"]

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


def _grid(sigmas) -> np.ndarray:
    sg = np.asarray(sigmas, dtype=np.float64).ravel()
    if sg.size < 2 or not np.all(np.isfinite(sg)) or np.any(sg < 0) or np.any(np.diff(sg) >= 0):
        raise DiffmemError("a σ grid must hold at least 2 finite, non-negative, strictly decreasing values")
    return sg


def _ab(sigma: float) -> float:
    """ᾱ of a VE σ (VP ↔ VE: ᾱ = 1/(1 + σ²))."""
    return 1.0 / (1.0 + sigma * sigma)


def _vp_predict(den: Denoiser, x: Tensor, sigma: float, k: int, callback: Callback):
    """Denoise a VP state ``x`` at VE level σ: returns ``(ᾱ, x̂0, ε̂)`` (and shows the step to ``callback``)."""
    ab = _ab(sigma)
    s = _full(x, sigma)
    x_ve = x / np.sqrt(ab)
    x0 = den(x_ve, s)
    if callback is not None:
        callback(k, x_ve, x0, s)
    return ab, x0, (x_ve - x0) / sigma


@torch.no_grad()
def ddpm_ancestral(den: Denoiser, z: Tensor, sigmas, noise: PerSampleNoise | None = None,
                   callback: Callback = None) -> Tensor:
    """Ancestral DDPM sampling in VP form on ``sigmas`` (variance β of each step, as in DDPM).

    Between grid points σ_i > σ_j: ``β = 1 − ᾱ_i/ᾱ_j``; ``x ← (x − β ε̂/√(1−ᾱ_i))/√(1−β) + √β ξ``
    (no noise on the last step).  On the full DDPM grid (``ddpm_sigmas(1000)``) this is the
    DDPM sampler of the BUBM25 code.
    """
    if noise is None:
        raise DiffmemError("ddpm sampler is stochastic: it needs per-sample noise (seeds)")
    sg = _grid(sigmas)
    x = z
    for k in range(len(sg) - 1):
        ab_i, _, eps = _vp_predict(den, x, float(sg[k]), k, callback)
        beta = 1.0 - ab_i / _ab(float(sg[k + 1]))
        x = (x - beta / np.sqrt(1 - ab_i) * eps) / np.sqrt(1 - beta)
        if k < len(sg) - 2:
            x = x + np.sqrt(beta) * noise.randn(x.shape[1:], x.dtype, x.device)
    return x / np.sqrt(_ab(float(sg[-1])))


@torch.no_grad()
def ddim(den: Denoiser, z: Tensor, sigmas, noise: PerSampleNoise | None = None, callback: Callback = None,
         eta: float = 0.0) -> Tensor:
    """DDIM in VP form on ``sigmas`` (BUBM25 code: ``ddpm_sigmas(100)``); η = 0 is deterministic."""
    if eta > 0 and noise is None:
        raise DiffmemError("ddim with eta > 0 needs per-sample noise (seeds)")
    sg = _grid(sigmas)
    x = z
    for k in range(len(sg) - 1):
        ab_i, x0, eps = _vp_predict(den, x, float(sg[k]), k, callback)
        ab_prev = _ab(float(sg[k + 1]))
        if ab_prev >= 1.0:
            return x0
        sd = eta * np.sqrt((1 - ab_prev) / (1 - ab_i) * (1 - ab_i / ab_prev))
        x = np.sqrt(ab_prev) * x0 + np.sqrt(max(1 - ab_prev - sd**2, 0.0)) * eps
        if sd > 0:
            x = x + sd * noise.randn(x.shape[1:], x.dtype, x.device)
    return x / np.sqrt(_ab(float(sg[-1])))


@torch.no_grad()
def euler_maruyama(den: Denoiser, z: Tensor, sigmas, noise: PerSampleNoise | None = None,
                   callback: Callback = None, denoise_last: bool = True) -> Tensor:
    """Euler–Maruyama on the reverse OU SDE ``−dx = [x + 2 s(x,t)] dt + dB`` (SPEC §0, BUBM25 GMM).

    The grid is converted to OU times ``t = ½ log(1 + σ²)`` (BUBM25: ``ou_sigmas(1000)``,
    uniform in t from 5 to 1e-3).  The VP score is ``s_vp(x, t) = e^{t} s_ve(e^{t} x, σ(t))``.
    Returns the data-space state ``e^{t_min} x`` (or its denoised mean if ``denoise_last``).
    """
    if noise is None:
        raise DiffmemError("euler_maruyama is stochastic: it needs per-sample noise (seeds)")
    sg = _grid(sigmas)
    if sg[-1] <= 0:
        raise DiffmemError("euler_maruyama needs a grid that stops above σ = 0 (e.g. ou_sigmas)")
    ts = sigma_to_ou_t(sg)
    x = z
    for k in range(len(ts) - 1):
        t, h = ts[k], ts[k] - ts[k + 1]
        a = np.exp(-t)
        s = _full(x, float(sg[k]))
        x_ve = x / a
        d = den(x_ve, s)
        score_vp = (d - x_ve) / (s.reshape(-1, *([1] * (x.ndim - 1))) ** 2) / a
        if callback is not None:
            callback(k, x_ve, d, s)
        x = x + (x + 2 * score_vp) * h + np.sqrt(2 * h) * noise.randn(x.shape[1:], x.dtype, x.device)
    x_ve = x * np.exp(ts[-1])
    if denoise_last:
        return den(x_ve, _full(x, float(sg[-1])))
    return x_ve


@torch.no_grad()
def heun(den: Denoiser, z: Tensor, sigmas, noise: PerSampleNoise | None = None,
         callback: Callback = None) -> Tensor:
    """Probability-flow ODE ``dx/dσ = (x − D(x, σ))/σ`` with Heun's method (EDM, deterministic)."""
    sg = _grid(sigmas)
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


@dataclass(frozen=True)
class SamplerSpec:
    fn: Callable
    grid: str  # a name of diffmem.schedules.GRIDS
    default_steps: int
    stochastic: bool


SAMPLERS: dict[str, SamplerSpec] = {
    "heun": SamplerSpec(heun, "karras", 32, False),
    "ddim": SamplerSpec(ddim, "ddpm", 100, False),
    "ddpm": SamplerSpec(ddpm_ancestral, "ddpm", 1000, True),
    "em": SamplerSpec(euler_maruyama, "ou", 1000, True),
}


def _spec(sampler: str) -> SamplerSpec:
    if sampler not in SAMPLERS:
        raise DiffmemError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    return SAMPLERS[sampler]


def default_sigmas(sampler: str, steps: int | None = None) -> np.ndarray:
    """The σ grid ``sampler`` uses by default, with ``steps`` steps (default: the sampler's own)."""
    spec = _spec(sampler)
    return sigma_grid(spec.grid, spec.default_steps if steps is None else steps)


def generate(den: Denoiser, shape: Sequence[int], seeds: Sequence[int], sampler: str = "heun",
             steps: int | None = None, sigmas=None, batch_size: int = 512, device=None, dtype=torch.float32,
             callback: Callback = None, **opts) -> Tensor:
    """Generate ``len(seeds)`` samples of ``shape``; sample ``j`` depends only on ``seeds[j]``.

    ``sigmas`` (a grid) or ``steps`` (the sampler's default grid with that many
    steps; default: the sampler's default number).  Latents and per-step noise
    come from a generator seeded by ``seeds[j]`` (latents first, then noise),
    so results do not depend on ``batch_size``.
    """
    spec = _spec(sampler)
    if sigmas is not None and steps is not None:
        raise DiffmemError("give a σ grid or a number of steps, not both")
    sg = default_sigmas(sampler, steps) if sigmas is None else _grid(sigmas)
    out = []
    for b in range(0, len(seeds), batch_size):
        ns = PerSampleNoise(seeds[b : b + batch_size])
        z = ns.randn(shape, dtype, device)
        out.append(spec.fn(den, z, sg, noise=ns, callback=callback, **opts).cpu())
    if not out:
        return torch.empty((0, *shape), dtype=dtype)
    return torch.cat(out)
