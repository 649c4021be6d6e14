"""Noise parametrisations and their conversions, all in one place.

Three equivalent ways to say "how noisy" (SPEC §0):

* **VE noise level σ** (EDM, KK26): ``x = y + σ n``.  This is the currency of
  the whole toolkit: every denoiser takes ``(x, sigma)`` in VE form.
* **OU / VP time t** (BUBM25 theory): ``x_t = e^{-t} y + sqrt(1 - e^{-2t}) ξ``.
  Dividing a VP state by ``e^{-t}`` gives a VE state with ``σ² = e^{2t} − 1``.
* **Discrete DDPM index i** (BUBM25 code): ``T = 1000`` steps, β linear from
  1e-4 to 2e-2, ``ᾱ_i = Π_{s≤i}(1 − β_s)``, ``t = −½ log ᾱ_i``,
  ``σ_i² = (1 − ᾱ_i)/ᾱ_i``.

"What σ is t = 0.01?" -> ``ou_t_to_sigma(0.01)`` (0.14213).

σ grids for the samplers (decreasing, float64, ending in 0) also live here:
:func:`karras_sigmas` (EDM), :func:`ddpm_sigmas` (a sub-grid of the DDPM
indices, BUBM25's DDIM), :func:`ou_sigmas` (uniform in OU time, BUBM25's
Euler–Maruyama); :func:`sigma_grid` picks one by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "ou_t_to_sigma",
    "sigma_to_ou_t",
    "vp_scale",
    "DDPMSchedule",
    "karras_sigmas",
    "ddpm_sigmas",
    "ou_sigmas",
    "GRIDS",
    "sigma_grid",
]


def ou_t_to_sigma(t):
    """VE σ of OU time t: ``σ² = e^{2t} − 1``.  Works on floats, numpy, torch."""
    if isinstance(t, torch.Tensor):
        return torch.sqrt(torch.expm1(2 * t))
    return np.sqrt(np.expm1(2 * np.asarray(t, dtype=np.float64)))


def sigma_to_ou_t(sigma):
    """OU time of VE σ: ``t = ½ log(1 + σ²)``."""
    if isinstance(sigma, torch.Tensor):
        return 0.5 * torch.log1p(sigma**2)
    return 0.5 * np.log1p(np.asarray(sigma, dtype=np.float64) ** 2)


def vp_scale(sigma):
    """``e^{-t} = 1/sqrt(1 + σ²)``: multiply a VE state by this to get the VP state."""
    if isinstance(sigma, torch.Tensor):
        return torch.rsqrt(1 + sigma**2)
    return 1.0 / np.sqrt(1.0 + np.asarray(sigma, dtype=np.float64) ** 2)


@dataclass(frozen=True)
class DDPMSchedule:
    """The discrete DDPM schedule of the BUBM25 code (linear β).

    Arrays are float64 numpy of length ``T``; index ``i`` runs over ``0..T-1``.
    """

    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 2e-2

    @property
    def betas(self) -> np.ndarray:
        return np.linspace(self.beta_start, self.beta_end, self.T, dtype=np.float64)

    @property
    def alphas_bar(self) -> np.ndarray:
        return np.cumprod(1.0 - self.betas)

    @property
    def sigmas(self) -> np.ndarray:
        """VE σ_i = sqrt((1 − ᾱ_i)/ᾱ_i), increasing in i."""
        ab = self.alphas_bar
        return np.sqrt((1.0 - ab) / ab)

    @property
    def ou_times(self) -> np.ndarray:
        """OU time t_i = −½ log ᾱ_i."""
        return -0.5 * np.log(self.alphas_bar)

    def index_to_sigma(self, i):
        """σ of integer index/indices i (numpy or torch, same type back)."""
        s = self.sigmas
        if isinstance(i, torch.Tensor):
            return torch.as_tensor(s, dtype=torch.float64, device=i.device)[i.long()]
        return s[np.asarray(i, dtype=np.int64)]

    def index_to_t(self, i):
        return self.ou_times[np.asarray(i, dtype=np.int64)]

    def sigma_to_index(self, sigma):
        """Continuous (fractional) index of σ: linear interpolation in log σ.

        Used as the noise label fed to networks trained on DDPM indices, so that
        such networks can be queried at any σ inside the schedule's range.
        """
        log_s = np.log(self.sigmas)
        idx = np.arange(self.T, dtype=np.float64)
        if isinstance(sigma, torch.Tensor):
            ls = torch.as_tensor(log_s, dtype=sigma.dtype, device=sigma.device)
            x = torch.log(sigma.clamp_min(1e-12))
            j = torch.searchsorted(ls, x.contiguous()).clamp(1, self.T - 1)
            lo, hi = ls[j - 1], ls[j]
            w = ((x - lo) / (hi - lo)).clamp(0.0, 1.0)
            return (j - 1).to(sigma.dtype) + w
        return np.interp(np.log(np.asarray(sigma, dtype=np.float64)), log_s, idx)

    def t_to_index(self, t) -> int:
        """Nearest DDPM index of OU time t (e.g. t = 0.01 -> 39)."""
        return int(np.argmin(np.abs(self.ou_times - t)))


def karras_sigmas(n: int, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0) -> np.ndarray:
    """EDM time discretisation: n decreasing σ from σ_max to σ_min, then a final 0.

    Returns float64 array of length ``n + 1``.
    """
    _check_steps(n, "the Karras grid")
    i = np.arange(n, dtype=np.float64)
    ramp = i / max(n - 1, 1)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return np.append(s, 0.0)


def _check_steps(n, what: str) -> int:
    from .errors import DiffmemError

    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise DiffmemError(f"{what} needs a positive integer number of steps, got {n!r}")
    return int(n)


def ddpm_sigmas(n: int, schedule: DDPMSchedule | None = None) -> np.ndarray:
    """σ at ``n`` DDPM indices ``round(linspace(0, T−1, n))`` (BUBM25's DDIM grid), decreasing, then 0.

    ``n = T`` visits every index (DDPM ancestral sampling).  Returns float64 of
    length ``≤ n + 1``.
    """
    sch = schedule or DDPMSchedule()
    n = _check_steps(n, "the DDPM grid")
    if n > sch.T:
        from .errors import DiffmemError

        raise DiffmemError(f"the DDPM grid has {sch.T} indices; {n} steps is more than it holds")
    idx = np.unique(np.round(np.linspace(0, sch.T - 1, n)).astype(int))[::-1]
    return np.append(sch.sigmas[idx], 0.0)


def ou_sigmas(n: int, t_max: float = 5.0, t_min: float = 1e-3) -> np.ndarray:
    """σ of ``n + 1`` OU times uniform from ``t_max`` to ``t_min`` (BUBM25's Euler–Maruyama grid).

    Unlike the other grids it does not end in 0: the SDE stops at ``t_min``.
    """
    n = _check_steps(n, "the OU-time grid")
    return ou_t_to_sigma(np.linspace(t_max, t_min, n + 1))


GRIDS = {"karras": karras_sigmas, "ddpm": ddpm_sigmas, "ou": ou_sigmas}


def sigma_grid(name: str, steps: int, **kw) -> np.ndarray:
    """The σ grid ``name`` (``karras``, ``ddpm``, ``ou``) with ``steps`` steps."""
    from .errors import DiffmemError

    if name not in GRIDS:
        raise DiffmemError(f"unknown σ grid {name!r}; choose one of {', '.join(GRIDS)}")
    if name == "karras":
        _check_steps(steps, "the Karras grid")
    return GRIDS[name](steps, **kw)


# ---------------------------------------------------------------------------
# BDKOS25 (Baptista et al. 2025, SPEC §4): the VP and VE SDEs of the authors'
# notebooks, on diffusion time t ∈ [0, 1].  Everything converts to the VE σ of
# the denoiser protocol: a VP state x_vp = m x_0 + σ_vp z is the VE state
# x_ve = x_vp / m with σ_ve = σ_vp / m; a VE state needs no conversion.

BDKOS25_BETA_MIN = 0.001
BDKOS25_BETA_MAX = 3.0
BDKOS25_SIGMA0 = 10.0
BDKOS25_SCHEDULES = ("ve", "vp")


def _np_or_torch(t):
    return t if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)


def bdkos25_vp_alpha(t):
    """BDKOS25 VP: ``α(t) = ∫₀ᵗ β = β_min t + ½ (β_max − β_min) t²`` with ``β(t) = 0.001 + t(3 − 0.001)``."""
    t = _np_or_torch(t)
    return BDKOS25_BETA_MIN * t + 0.5 * (BDKOS25_BETA_MAX - BDKOS25_BETA_MIN) * t * t


def bdkos25_vp_m(t):
    """BDKOS25 VP mean factor ``m(t) = e^{−α(t)/2}``."""
    a = bdkos25_vp_alpha(t)
    return torch.exp(-a / 2) if isinstance(a, torch.Tensor) else np.exp(-a / 2)


def bdkos25_vp_sigma(t):
    """BDKOS25 VP standard deviation ``σ(t) = sqrt(1 − e^{−α(t)})``."""
    a = bdkos25_vp_alpha(t)
    return torch.sqrt(-torch.expm1(-a)) if isinstance(a, torch.Tensor) else np.sqrt(-np.expm1(-a))


def bdkos25_ve_sigma(t, sigma0: float = BDKOS25_SIGMA0):
    """BDKOS25 VE: ``σ(t)² = (σ₀^{2t} − 1)/(2 ln σ₀)`` (σ₀ = 10); ``σ(0) = 0``."""
    t = _np_or_torch(t)
    lg = float(np.log(sigma0))
    if isinstance(t, torch.Tensor):
        return torch.sqrt(torch.expm1(2 * t * lg) / (2 * lg))
    return np.sqrt(np.expm1(2 * t * lg) / (2 * lg))


def bdkos25_ve_dsigma_dt(t, sigma0: float = BDKOS25_SIGMA0):
    """``dσ/dt`` of the BDKOS25 VE schedule: ``dσ²/dt = σ₀^{2t}``, so ``dσ/dt = σ₀^{2t}/(2σ(t))``."""
    t = np.asarray(t, dtype=np.float64)
    return sigma0 ** (2 * t) / (2 * bdkos25_ve_sigma(t, sigma0))


def bdkos25_ve_t(sigma, sigma0: float = BDKOS25_SIGMA0):
    """Inverse of :func:`bdkos25_ve_sigma`: ``t = ln(1 + 2 ln σ₀ σ²)/(2 ln σ₀)``."""
    lg = float(np.log(sigma0))
    s = np.asarray(sigma, dtype=np.float64)
    return np.log1p(2 * lg * s * s) / (2 * lg)


def bdkos25_sigma(t, schedule: str = "ve"):
    """VE-protocol σ of BDKOS25 time ``t`` under ``schedule``.

    ``"ve"``: :func:`bdkos25_ve_sigma`.  ``"vp"``: ``σ_vp/m = sqrt(e^{α(t)} − 1)``
    (the VP state divided by m is a VE state of this σ).
    """
    if schedule == "ve":
        return bdkos25_ve_sigma(t)
    if schedule == "vp":
        a = bdkos25_vp_alpha(t)
        return torch.sqrt(torch.expm1(a)) if isinstance(a, torch.Tensor) else np.sqrt(np.expm1(a))
    from .errors import DiffmemError

    raise DiffmemError(f"unknown BDKOS25 schedule {schedule!r}; choose one of {', '.join(BDKOS25_SCHEDULES)}")


def bdkos25_ou_t(t, schedule: str = "ve"):
    """OU time (SPEC §0, ``σ² = e^{2 t_OU} − 1``) of BDKOS25 time ``t``.

    For ``"vp"`` this is exactly ``α(t)/2`` (the BDKOS25 VP process is an OU
    process run at speed β(t)/2)."""
    return sigma_to_ou_t(bdkos25_sigma(t, schedule))


__all__ += ["bdkos25_vp_alpha", "bdkos25_vp_m", "bdkos25_vp_sigma", "bdkos25_ve_sigma", "bdkos25_ve_dsigma_dt",
            "bdkos25_ve_t", "bdkos25_sigma", "bdkos25_ou_t", "BDKOS25_SIGMA0", "BDKOS25_SCHEDULES"]
