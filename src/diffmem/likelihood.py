"""Exact likelihoods by the probability-flow ODE, and ``KL(P_θ ‖ P_0)`` (BUBM25's Gaussian-mixture measure).

The probability-flow ODE of any denoiser (VE, in ``u = ln σ``) is
``dx/du = x − D(x, σ)``.  Along a solution the log-density of the flowed
distribution changes by the divergence of the velocity (instantaneous change
of variables, Chen et al. 2018):

    d/du log p_σ(x(u)) = −div_x (x − D) = −(dim − tr ∂D/∂x).

:func:`flow_with_logdet` integrates the state and ``∫ −(dim − tr J) du``
together with scipy's adaptive RK45 (the error control covers both).  The
trace is exact (``dim`` vector-Jacobian products per evaluation: cheap in low
dimension) or Hutchinson's estimate ``εᵀ J ε`` with one fixed Rademacher ``ε``
per sample for the whole solve (FFJORD; unbiased, one product per evaluation).

* :func:`log_likelihood` -- ``log p_θ(x)`` of given points at ``sigma_min``:
  flow up to ``sigma_max`` and add the prior's log-density there.
* :func:`sample_with_log_likelihood` -- samples of the model's ODE
  distribution *and* their log-density in one solve (prior → data).
* :func:`kl_divergence` -- ``KL(P_θ ‖ P_0) = E_{x∼P_θ}[log p_θ(x) − log p_0(x)]``
  with its standard error, where ``P_θ`` is the distribution of the PF-ODE
  started from the VE prior ``N(0, σ_max² I)`` and stopped at ``sigma_min``
  (no final denoising step), and ``log p_0`` a known log-density (for diffmem's
  ``gmm:`` data, the mixture smoothed by ``sigma_min``, which is the exact
  target of a model stopped there).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .errors import DiffmemError

__all__ = ["trace_jacobian", "flow_with_logdet", "log_likelihood", "sample_with_log_likelihood",
           "kl_divergence", "gaussian_prior_logp", "DIVERGENCES", "EXACT_MAX_DIM"]

DIVERGENCES = ("exact", "hutchinson")
EXACT_MAX_DIM = 256  # above this, the exact trace costs too many backward passes: use hutchinson


def gaussian_prior_logp(sigma_max: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``log N(x; 0, σ_max² I)`` per row of ``x [B, ...]`` (the VE prior every sampler starts from)."""
    def logp(x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(len(x), -1).double()
        dim = x.shape[1]
        return -0.5 * x.pow(2).sum(1) / sigma_max**2 - 0.5 * dim * math.log(2 * math.pi * sigma_max**2)
    return logp


def trace_jacobian(den, x: torch.Tensor, sigma: torch.Tensor, probes: torch.Tensor | None = None):
    """``(D(x, σ), tr ∂D/∂x)`` per row: exact (``probes=None``) or Hutchinson with ``probes [B, ...]``."""
    b = x.shape[0]
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        out = den(xr, sigma)
        flat = out.reshape(b, -1)
        if probes is not None:
            (g,) = torch.autograd.grad((flat * probes.reshape(b, -1)).sum(), xr)
            tr = (g.reshape(b, -1) * probes.reshape(b, -1)).sum(1)
        else:
            dim = flat.shape[1]
            tr = torch.zeros(b, dtype=flat.dtype, device=flat.device)
            for j in range(dim):
                (g,) = torch.autograd.grad(flat[:, j].sum(), xr, retain_graph=j < dim - 1)
                tr = tr + g.reshape(b, -1)[:, j]
    return out.detach(), tr.detach()


def _check(x: torch.Tensor, sigma_a: float, sigma_b: float, divergence: str, rtol: float, atol: float) -> None:
    if divergence not in DIVERGENCES:
        raise DiffmemError(f"unknown divergence {divergence!r}; choose one of {', '.join(DIVERGENCES)}")
    lo, hi = sorted((float(sigma_a), float(sigma_b)))
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < hi):
        raise DiffmemError(f"the likelihood ODE needs 0 < sigma_min < sigma_max, got {sigma_a} and {sigma_b}")
    if not (rtol > 0 and atol > 0):
        raise DiffmemError(f"rtol and atol must be positive, got {rtol} and {atol}")
    dim = x[0].numel() if len(x) else 0
    if divergence == "exact" and dim > EXACT_MAX_DIM:
        raise DiffmemError(f"the exact divergence needs {dim} backward passes per step in dimension {dim}; "
                           f"use divergence='hutchinson' above {EXACT_MAX_DIM} dimensions")


def flow_with_logdet(den, x0: torch.Tensor, sigma_start: float, sigma_end: float, *, divergence: str = "exact",
                     probes: torch.Tensor | None = None, rtol: float = 1e-5, atol: float = 1e-5):
    """Integrate the PF-ODE from ``sigma_start`` to ``sigma_end`` (either direction) with the log-density change.

    Returns ``(x_end, delta [B] float64, info)`` with ``log p_end(x_end) = log p_start(x0) + delta``.
    ``den`` is called in ``x0``'s dtype and device; scipy's state is float64.
    """
    from scipy.integrate import solve_ivp

    _check(x0, sigma_start, sigma_end, divergence, rtol, atol)
    if divergence == "hutchinson" and probes is None:
        raise DiffmemError("the Hutchinson divergence needs probes (one fixed Rademacher draw per sample)")
    shape, dtype, device = x0.shape, x0.dtype, x0.device
    b, size = shape[0], x0[0].numel() * shape[0]
    pr = None if divergence == "exact" else probes.to(dtype=dtype, device=device)

    def rhs(u, y):
        x = torch.from_numpy(y[:size]).reshape(shape).to(dtype=dtype, device=device)
        s = torch.full((b,), math.exp(u), dtype=dtype, device=device)
        d, tr = trace_jacobian(den, x, s, pr)
        dx = (x - d).double().cpu().numpy().ravel()
        dl = -(x[0].numel() - tr.double()).cpu().numpy()
        return np.concatenate([dx, dl])

    y0 = np.concatenate([x0.detach().double().cpu().numpy().ravel(), np.zeros(b)])
    sol = solve_ivp(rhs, (math.log(sigma_start), math.log(sigma_end)), y0, method="RK45", rtol=rtol, atol=atol)
    if sol.status != 0 or not np.all(np.isfinite(sol.y[:, -1])):
        raise DiffmemError(f"the likelihood ODE solve failed ({sol.message}); the denoiser may return non-finite "
                           "values")
    y = sol.y[:, -1]
    x_end = torch.from_numpy(np.ascontiguousarray(y[:size].reshape(shape))).to(dtype=dtype, device=device)
    return x_end, torch.from_numpy(y[size:].copy()), {"nfev": int(sol.nfev)}


def _probes(shape: Sequence[int], seeds: Sequence[int], dtype, device) -> torch.Tensor:
    """One Rademacher draw per sample, from a generator seeded by the sample's own seed (offset)."""
    rows = []
    for s in seeds:
        g = torch.Generator().manual_seed(int(s) + 7_000_003)
        rows.append(torch.randint(0, 2, tuple(shape), generator=g, dtype=torch.int64) * 2 - 1)
    return torch.stack(rows).to(dtype=dtype, device=device)


def log_likelihood(den, x: torch.Tensor, sigma_min: float, sigma_max: float, *, prior_logp=None,
                   divergence: str = "exact", seeds: Sequence[int] | None = None, rtol: float = 1e-5,
                   atol: float = 1e-5) -> torch.Tensor:
    """``log p_θ(x)`` (float64 ``[B]``) of points ``x`` taken at noise level ``sigma_min``.

    ``prior_logp``: log-density at ``sigma_max`` (default the VE prior ``N(0, σ_max² I)``).
    ``seeds``: per-row seeds of the Hutchinson probes (default ``0..B-1``).
    """
    probes = None
    if divergence == "hutchinson":
        probes = _probes(x.shape[1:], seeds if seeds is not None else range(len(x)), x.dtype, x.device)
    x_end, delta, _ = flow_with_logdet(den, x, sigma_min, sigma_max, divergence=divergence, probes=probes,
                                       rtol=rtol, atol=atol)
    prior = prior_logp or gaussian_prior_logp(sigma_max)
    return prior(x_end).double().cpu() - delta


def sample_with_log_likelihood(den, shape: Sequence[int], seeds: Sequence[int], sigma_min: float, sigma_max: float,
                               *, prior_logp=None, divergence: str = "exact", rtol: float = 1e-5, atol: float = 1e-5,
                               dtype=torch.float32, device=None):
    """Samples of the PF-ODE from the VE prior (latents as :func:`diffmem.samplers.generate` draws them, so
    sample j depends on ``seeds[j]``), stopped at ``sigma_min``, and their ``log p_θ`` (float64).

    Returns ``(x [B, *shape], logp [B])``.
    """
    from .samplers import PerSampleNoise

    device = torch.device(device or "cpu")
    z = PerSampleNoise(list(seeds)).randn(tuple(shape), dtype, device)
    x0 = z * float(sigma_max)
    probes = _probes(shape, seeds, dtype, device) if divergence == "hutchinson" else None
    x, delta, _ = flow_with_logdet(den, x0, sigma_max, sigma_min, divergence=divergence, probes=probes,
                                   rtol=rtol, atol=atol)
    prior = prior_logp or gaussian_prior_logp(sigma_max)
    return x, prior(x0).double().cpu() + delta


def kl_divergence(den, log_p0, shape: Sequence[int], seeds: Sequence[int], sigma_min: float, sigma_max: float, *,
                  divergence: str = "exact", rtol: float = 1e-5, atol: float = 1e-5, batch_size: int = 1024,
                  device=None) -> dict:
    """``KL(P_θ ‖ P_0)`` by Monte Carlo over the model's own ODE samples: ``{"kl", "stderr", "n"}``.

    ``log_p0(x [B, ...]) -> [B]``: the reference log-density (e.g. ``lambda x: mix.log_prob(x, sigma_min)``).
    """
    seeds = list(seeds)
    if len(seeds) < 2:
        raise DiffmemError(f"KL needs at least 2 samples for its standard error, got {len(seeds)}")
    diffs = []
    for b in range(0, len(seeds), batch_size):
        x, lp = sample_with_log_likelihood(den, shape, seeds[b : b + batch_size], sigma_min, sigma_max,
                                           divergence=divergence, rtol=rtol, atol=atol, device=device)
        with torch.no_grad():
            diffs.append(lp - log_p0(x).double().cpu())
    d = torch.cat(diffs).numpy()
    return {"kl": float(d.mean()), "stderr": float(d.std(ddof=1) / math.sqrt(d.size)), "n": int(d.size)}
