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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from .denoiser import EDMDenoiser, EpsDenoiser
from .errors import DiffmemError
from .losses import DDPMSigmaSampler, LogNormalSigmaSampler

__all__ = ["Parametrisation", "PARAMETRISATIONS", "get_parametrisation", "DEFAULT_PARAMETRISATION"]

DEFAULT_PARAMETRISATION = "eps_ddpm"


@dataclass(frozen=True)
class Parametrisation:
    name: str
    precondition: Callable[[nn.Module], nn.Module]
    sigma_sampler: Callable
    weighting: str
    sigma_data: float
    uses_sigma_data: bool


def _eps_ddpm(sigma_data: float | None) -> Parametrisation:
    if sigma_data is not None:
        raise DiffmemError("model.sigma_data is not used by parametrisation 'eps_ddpm' (only by 'edm'); remove it")
    return Parametrisation("eps_ddpm", lambda b: EpsDenoiser(b, label="ddpm"), DDPMSigmaSampler(), "eps", 0.5, False)


def _edm(sigma_data: float | None) -> Parametrisation:
    sd = 0.5 if sigma_data is None else float(sigma_data)
    if not sd > 0:
        raise DiffmemError(f"model.sigma_data must be positive, got {sigma_data}")
    return Parametrisation("edm", lambda b: EDMDenoiser(b, sigma_data=sd), LogNormalSigmaSampler(), "edm", sd, True)


PARAMETRISATIONS: dict[str, Callable[[float | None], Parametrisation]] = {"eps_ddpm": _eps_ddpm, "edm": _edm}


def get_parametrisation(name: str | None, sigma_data: float | None = None) -> Parametrisation:
    """The record named ``name`` (default ``eps_ddpm``); ``sigma_data`` only for ``edm``."""
    name = name or DEFAULT_PARAMETRISATION
    if name not in PARAMETRISATIONS:
        raise DiffmemError(f"unknown parametrisation {name!r}; choose one of {', '.join(PARAMETRISATIONS)}")
    return PARAMETRISATIONS[name](sigma_data)
