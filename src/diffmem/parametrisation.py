"""Parametrisations: how a backbone becomes a denoiser and how it is trained, as one record.

A :class:`Parametrisation` bundles the four choices that must agree with each
other (DESIGN principle 2, converted in one place):

* ``precondition(backbone) -> denoiser``: the wrapper that turns a network
  ``F(x, label)`` into a denoiser ``D(x, σ)`` (VE convention);
* ``sigma_sampler``: how training draws the noise level of each example;
* ``weighting``: the loss weighting passed to :func:`diffmem.losses.dsm_loss`;
* ``sigma_data``: the data scale the preconditioning assumes.

Named records (``model.parametrisation=...``):

* ``eps_ddpm`` (BUBM25): ε-prediction on the 1000-step linear-β DDPM schedule,
  index drawn uniformly in [1, 999], noise-MSE loss.  ``sigma_data`` is not used.
* ``edm`` (Karras et al. 2022; KK26): ``c_skip, c_out, c_in, c_noise``
  preconditioning, ``ln σ ~ N(−1.2, 1.2²)``, weight ``(σ² + σ_d²)/(σ σ_d)²``;
  ``sigma_data`` (default 0.5) from ``model.sigma_data``.
* ``bdkos25_vp`` (BDKOS25's neural experiments, SPEC §4): the backbone is a
  *VP score* network ``s(x_vp, t)`` of BDKOS25's VP SDE (``β(t) = 0.001 +
  t(3 − 0.001)``, ``α = ∫β``, ``m = e^{−α/2}``, ``σ_vp² = 1 − e^{−α}``); training
  times ``t ~ U(1e-5, 1)`` (:class:`~diffmem.losses.BDKOS25SigmaSampler`); loss
  weighting ``eps``, which *is* their loss ``mean((σ_vp s + z)²)`` (see
  :class:`BDKOS25VPDenoiser`).  The Tikhonov option (``loss_tikhonov_c``)
  penalises this VP score, as their code does.  ``sigma_data`` is not used.

Each record also names the score the Tikhonov term ``c mean s²`` penalises
(``score``: ``"ve"`` for ``eps_ddpm`` and ``edm``, ``"vp"`` for ``bdkos25_vp``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .denoiser import EDMDenoiser, EpsDenoiser, _bcast
from .errors import DiffmemError
from .losses import BDKOS25SigmaSampler, DDPMSigmaSampler, LogNormalSigmaSampler

__all__ = ["Parametrisation", "PARAMETRISATIONS", "get_parametrisation", "DEFAULT_PARAMETRISATION",
           "BDKOS25VPDenoiser", "bdkos25_vp_t_of_sigma"]

DEFAULT_PARAMETRISATION = "eps_ddpm"


@dataclass(frozen=True)
class Parametrisation:
    name: str
    precondition: Callable[[nn.Module], nn.Module]
    sigma_sampler: Callable
    weighting: str
    sigma_data: float
    uses_sigma_data: bool
    score: str = "ve"  # the score the Tikhonov term penalises (diffmem.losses.tikhonov_term)
    sigma_range: tuple = (0.002, 80.0)  # the VE σ range the model is trained on (the per-σ gap's grid)


def bdkos25_vp_t_of_sigma(sigma: Tensor) -> Tensor:
    """BDKOS25 VP time t of a VE level σ: solve ``α(t) = ln(1 + σ²)`` (float64; no cancellation at small t)."""
    from .schedules import BDKOS25_BETA_MAX, BDKOS25_BETA_MIN

    a = torch.log1p(sigma.to(torch.float64) ** 2)
    k = 0.5 * (BDKOS25_BETA_MAX - BDKOS25_BETA_MIN)
    return 2 * a / (BDKOS25_BETA_MIN + torch.sqrt(BDKOS25_BETA_MIN**2 + 4 * k * a))


class BDKOS25VPDenoiser(nn.Module):
    """A BDKOS25 VP score network as a VE denoiser: ``D(x, σ) = x + σ² m s(m x, t(σ))``.

    The VE state ``x = y + σ n`` is the VP state divided by ``m = 1/sqrt(1 + σ²)``
    (``x_vp = m y + σ_vp n`` with ``σ_vp = m σ``, the same n), so the VP score is
    ``s_vp = s_ve/m`` and ``D = x + σ² s_ve = x + σ² m s_vp``.  With it
    ``(D − y)/σ = σ_vp s_vp + n``: the ``eps`` loss weighting
    ``mean_dims (D − y)²/σ²`` equals BDKOS25's ``mean((σ_vp s + z)²)``.
    :meth:`vp_score` returns the backbone's VP score directly.
    """

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def vp_score(self, x: Tensor, sigma: Tensor) -> Tensor:
        """The backbone's VP score at the VP state of VE state ``x`` and level ``sigma``."""
        s = _bcast(sigma, x)
        m = torch.rsqrt(1 + s**2)
        return self.backbone(m * x, bdkos25_vp_t_of_sigma(sigma).to(x.dtype))

    def forward(self, x: Tensor, sigma: Tensor) -> Tensor:
        s = _bcast(sigma, x)
        return x + s**2 * torch.rsqrt(1 + s**2) * self.vp_score(x, sigma)


def _ddpm_range() -> tuple:
    """σ of the trained DDPM indices 1..999 (index 0 is never trained)."""
    from .schedules import DDPMSchedule

    sg = DDPMSchedule().sigmas
    return float(sg[1]), float(sg[-1])


def _bdkos25_range() -> tuple:
    """VE σ of BDKOS25's VP SDE over its training times t ∈ [1e-5, 1]."""
    from .schedules import bdkos25_sigma

    return float(bdkos25_sigma(1e-5, "vp")), float(bdkos25_sigma(1.0, "vp"))


def _eps_ddpm(sigma_data: float | None) -> Parametrisation:
    if sigma_data is not None:
        raise DiffmemError("model.sigma_data is not used by parametrisation 'eps_ddpm' (only by 'edm'); remove it")
    return Parametrisation("eps_ddpm", lambda b: EpsDenoiser(b, label="ddpm"), DDPMSigmaSampler(), "eps", 0.5, False,
                           sigma_range=_ddpm_range())


def _edm(sigma_data: float | None) -> Parametrisation:
    sd = 0.5 if sigma_data is None else float(sigma_data)
    if not sd > 0:
        raise DiffmemError(f"model.sigma_data must be positive, got {sigma_data}")
    return Parametrisation("edm", lambda b: EDMDenoiser(b, sigma_data=sd), LogNormalSigmaSampler(), "edm", sd, True)


def _bdkos25_vp(sigma_data: float | None) -> Parametrisation:
    if sigma_data is not None:
        raise DiffmemError("model.sigma_data is not used by parametrisation 'bdkos25_vp' (only by 'edm'); remove it")
    return Parametrisation("bdkos25_vp", BDKOS25VPDenoiser, BDKOS25SigmaSampler(), "eps", 0.5, False, score="vp",
                           sigma_range=_bdkos25_range())


PARAMETRISATIONS: dict[str, Callable[[float | None], Parametrisation]] = {"eps_ddpm": _eps_ddpm, "edm": _edm,
                                                                          "bdkos25_vp": _bdkos25_vp}


def get_parametrisation(name: str | None, sigma_data: float | None = None) -> Parametrisation:
    """The record named ``name`` (default ``eps_ddpm``); ``sigma_data`` only for ``edm``.

    (A model may have its own default: ``diffmem.models.parametrisation_name``.)
    """
    name = name or DEFAULT_PARAMETRISATION
    if name not in PARAMETRISATIONS:
        raise DiffmemError(f"unknown parametrisation {name!r}; choose one of {', '.join(PARAMETRISATIONS)}")
    return PARAMETRISATIONS[name](sigma_data)
