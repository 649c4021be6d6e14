"""The generalisation gap per noise level (KK26, SPEC §5).

On fixed images ``y`` with one fixed noise draw ``n`` per image (reused at
every σ and every checkpoint), the denoising error of ``D`` at noise level σ is

    e(σ) = mean_i ‖y_i − D(y_i + σ n_i, σ)‖² / dim

and the relative gap between held-out and training images is
``G(σ) = (e_val(σ) − e_train(σ)) / e_train(σ)``.  It needs no sampling: it is
the earliest and cheapest memorisation signal (KK26: largest at intermediate
σ, growing with training time and model size).

:func:`denoising_errors` evaluates all σ of a grid in a few large forward
passes (rows = σ × images, each row with its own σ), so the 64-σ curve costs
about as much as one sampling step per image.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from ..errors import DiffmemError

__all__ = ["gap_sigmas", "denoising_errors", "relative_gap", "peak"]


def gap_sigmas(sigma_min: float, sigma_max: float, count: int = 64) -> np.ndarray:
    """``count`` log-spaced σ from ``sigma_min`` to ``sigma_max`` (increasing; KK26 use 64 over [0.002, 80])."""
    if not (math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0 < sigma_min < sigma_max):
        raise DiffmemError(f"the gap's σ range must satisfy 0 < sigma_min < sigma_max, got [{sigma_min}, {sigma_max}]")
    if count < 2:
        raise DiffmemError(f"the gap needs at least 2 noise levels, got {count}")
    return np.exp(np.linspace(math.log(sigma_min), math.log(sigma_max), int(count)))


@torch.no_grad()
def denoising_errors(den, y: torch.Tensor, noise: torch.Tensor, sigmas: Sequence[float],
                     batch_rows: int = 4096, squared: bool = True) -> torch.Tensor:
    """``e(σ)`` for every σ of ``sigmas``: mean over images of ``‖y − D(y + σ n, σ)‖²/dim``.

    ``y``, ``noise``: ``[N, *shape]`` (one fixed draw per image); returns a float64 tensor ``[S]``.
    ``squared=False`` gives the un-squared ``‖·‖/√dim`` (KK26's toy model).  All ``S·N`` rows are
    batched, ``batch_rows`` at a time, each row carrying its own σ.
    """
    if y.shape != noise.shape:
        raise DiffmemError(f"images {tuple(y.shape)} and noise {tuple(noise.shape)} differ in shape")
    sg = torch.as_tensor(np.asarray(sigmas, dtype=np.float64), dtype=y.dtype, device=y.device)
    n, dim = y.shape[0], y[0].numel()
    if n == 0:
        raise DiffmemError("the gap needs at least one image per set")
    total = torch.zeros(len(sg), dtype=torch.float64, device=y.device)
    rows = len(sg) * n
    flat_y, flat_n = y.reshape(n, -1), noise.reshape(n, -1)
    for start in range(0, rows, batch_rows):
        idx = torch.arange(start, min(start + batch_rows, rows), device=y.device)
        si, ii = idx // n, idx % n
        s = sg[si]
        x = (flat_y[ii] + s[:, None] * flat_n[ii]).reshape(len(idx), *y.shape[1:])
        err = (den(x, s).reshape(len(idx), -1) - flat_y[ii]).double().pow(2).sum(1) / dim
        if not squared:
            err = err.sqrt()
        total.index_add_(0, si, err)
    return total / n


def relative_gap(e_train, e_val) -> np.ndarray:
    """``G = (e_val − e_train)/e_train`` elementwise (NaN where ``e_train`` is 0)."""
    tr, va = np.asarray(e_train, dtype=np.float64), np.asarray(e_val, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(tr > 0, (va - tr) / tr, np.nan)


def peak(sigmas, gap) -> tuple[float, float]:
    """``(σ, G)`` at the largest finite gap (NaN, NaN if none)."""
    g = np.asarray(gap, dtype=np.float64)
    if not np.isfinite(g).any():
        return math.nan, math.nan
    i = int(np.nanargmax(np.where(np.isfinite(g), g, -np.inf)))
    return float(np.asarray(sigmas)[i]), float(g[i])
