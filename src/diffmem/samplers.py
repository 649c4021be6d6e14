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
``rk45``   karras       32              adaptive RK45 probability-flow ODE (scipy; BDKOS25)
=========  ===========  ==============  ==================================================

``rk45`` is adaptive: its σ grid only sets where it starts and stops and the
points a ``callback`` sees (the trajectory); the steps are scipy's.  All
samples of a batch form one state vector (as BDKOS25 integrate their 1000
latents), so a sample depends on its batch only through the step sizes, i.e.
within the solver tolerance (rtol = atol = 1e-5 by default, the authors' choice).
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
           "SamplerSpec", "default_sigmas", "rk45", "pf_ode_solve", "ODE_VARIABLES"]

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


def _ode_variable(name: str):
    """``(σ(u), dσ/du(u), u(σ))`` of an integration variable u of the PF-ODE (numpy, float64)."""
    from . import schedules as sc

    if name == "sigma":
        return (lambda u: u), (lambda u: 1.0), (lambda s: s)
    if name == "log_sigma":
        return np.exp, np.exp, np.log
    if name == "bdkos25-ve":  # σ(t)² = (σ₀^{2t} − 1)/(2 ln σ₀)
        return sc.bdkos25_ve_sigma, sc.bdkos25_ve_dsigma_dt, sc.bdkos25_ve_t
    if name == "bdkos25-vp":  # VE σ of the VP SDE: σ² = e^{α(t)} − 1, α = β_min t + ½(β_max − β_min) t²
        bmin, bmax = sc.BDKOS25_BETA_MIN, sc.BDKOS25_BETA_MAX

        def ds(t):
            return (bmin + t * (bmax - bmin)) * np.exp(sc.bdkos25_vp_alpha(t)) / (2 * sc.bdkos25_sigma(t, "vp"))

        def inv(s):  # solve α(t) = log(1 + σ²) for t ≥ 0
            a = np.log1p(np.asarray(s, dtype=np.float64) ** 2)
            k = 0.5 * (bmax - bmin)
            return (-bmin + np.sqrt(bmin * bmin + 4 * k * a)) / (2 * k)
        return (lambda t: sc.bdkos25_sigma(t, "vp")), ds, inv
    raise DiffmemError(f"unknown ODE variable {name!r}; choose one of {', '.join(ODE_VARIABLES)}")


ODE_VARIABLES = ("log_sigma", "sigma", "bdkos25-ve", "bdkos25-vp")


@torch.no_grad()
def pf_ode_solve(den: Denoiser, x0: Tensor, sigma_start: float, sigma_end: float, rtol: float = 1e-5,
                 atol: float = 1e-5, variable: str = "log_sigma", record=None, method: str = "RK45"):
    """Adaptive probability-flow ODE ``dx/dσ = (x − D(x, σ))/σ`` (VE) with scipy's ``solve_ivp`` (BDKOS25).

    ``x0``: ``[B, *shape]`` the state at ``sigma_start``; integrated down to
    ``sigma_end > 0`` in the variable u (``dx/du = (dσ/du)(x − D)/σ``):
    ``"log_sigma"`` (default), ``"sigma"``, or BDKOS25's diffusion time t of the
    VE (``"bdkos25-ve"``, σ₀ = 10) or VP (``"bdkos25-vp"``, VE σ of the VP SDE)
    schedule -- the same ODE, only scipy's error control differs (on the VE
    state).  All B samples are one flattened float64 state vector; ``den`` is
    called in ``x0``'s dtype and device.  ``record``: σ values (in
    [sigma_end, sigma_start]) at which to return states (dense output).

    Returns ``(x_end [B, *shape], traj [K, B, *shape] or None, info)`` with
    ``info = {"nfev", "message"}``.  A failed solve raises
    :class:`DiffmemError`.
    """
    from scipy.integrate import solve_ivp

    if not (np.isfinite(sigma_start) and np.isfinite(sigma_end) and sigma_start > sigma_end > 0):
        raise DiffmemError(f"the ODE needs sigma_start > sigma_end > 0, got {sigma_start} and {sigma_end}")
    if not (rtol > 0 and atol > 0):
        raise DiffmemError(f"rtol and atol must be positive, got {rtol} and {atol}")
    sig, dsig, to_u = _ode_variable(variable)
    shape, dtype, device = x0.shape, x0.dtype, x0.device
    u0, u1 = float(to_u(sigma_start)), float(to_u(sigma_end))

    def rhs(u, y):
        s = float(sig(u))
        x = torch.from_numpy(y).reshape(shape).to(dtype=dtype, device=device)
        d = den(x, torch.full((shape[0],), s, dtype=dtype, device=device))
        return (float(dsig(u)) / s) * (x - d).double().cpu().numpy().ravel()

    t_eval, k = None, 0
    if record is not None:
        rec = np.asarray(record, dtype=np.float64).ravel()
        if rec.size and (rec.max() > sigma_start * (1 + 1e-12) or rec.min() < sigma_end * (1 - 1e-12)
                         or np.any(np.diff(rec) >= 0)):
            raise DiffmemError("record σ values must decrease strictly between sigma_start and sigma_end")
        k = rec.size
        t_eval = np.clip(to_u(rec), min(u0, u1), max(u0, u1))
        if not k or t_eval[-1] != u1:
            t_eval = np.append(t_eval, u1)
    y0 = x0.detach().double().cpu().numpy().ravel()
    sol = solve_ivp(rhs, (u0, u1), y0, method=method, rtol=rtol, atol=atol, t_eval=t_eval)
    if sol.status != 0 or not np.all(np.isfinite(sol.y)):
        raise DiffmemError(f"the probability-flow ODE solve failed ({sol.message}); the denoiser may return "
                           "non-finite values")
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dtype=dtype, device=device)  # noqa: E731
    x_end = to_t(sol.y[:, -1].reshape(shape))
    traj = None if record is None else to_t(sol.y[:, :k].T.reshape((k, *shape)))
    return x_end, traj, {"nfev": int(sol.nfev), "message": str(sol.message)}


@torch.no_grad()
def rk45(den: Denoiser, z: Tensor, sigmas, noise: PerSampleNoise | None = None, callback: Callback = None,
         rtol: float = 1e-5, atol: float = 1e-5, variable: str = "log_sigma", z_scale: float | None = None) -> Tensor:
    """Adaptive RK45 probability-flow ODE (scipy ``solve_ivp``, rtol = atol = 1e-5 as BDKOS25; deterministic).

    Starts at ``x = z_scale · z`` (default ``σ_max = sigmas[0]``, the VE prior
    ``N(0, σ_max² I)``), integrates :func:`pf_ode_solve` down to the last
    positive σ of the grid, and -- when the grid ends in 0 -- returns
    ``D(x, σ_last)`` (the last step of Heun on the same grid).  ``callback(i,
    x, D(x, σ_i), σ_i)`` sees the state at every positive grid point (dense
    output; costs one extra denoiser call per point, only with a callback).
    """
    sg = _grid(sigmas)
    pos = sg[sg > 0]
    if pos.size < 2:
        raise DiffmemError("rk45 needs a σ grid with at least 2 positive values")
    x = z * float(sg[0] if z_scale is None else z_scale)
    x, traj, _ = pf_ode_solve(den, x, float(pos[0]), float(pos[-1]), rtol, atol, variable,
                              record=pos if callback is not None else None)
    if callback is not None:
        for i, s in enumerate(pos):
            sv = _full(x, float(s))
            callback(i, traj[i], den(traj[i], sv), sv)
    if sg[-1] == 0:
        x = den(x, _full(x, float(pos[-1])))
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
    "rk45": SamplerSpec(rk45, "karras", 32, False),
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
