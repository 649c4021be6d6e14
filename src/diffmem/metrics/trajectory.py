"""Where sampling trajectories go, compared with noisy training points (KK26, SPEC §5).

KK26 explain why a model whose denoising objective overfits still generates
new images: its sampling trajectories stay far from the *noisy* training
points, where the overfitted denoiser would pull them onto a training image.
Two measurements, at each recorded noise level σ of the sampler's grid:

* **distance to the noisy training set**: for trajectory states ``x(σ)`` and,
  as reference, for fresh noisy training points ``y_j + σ n'_j``, the distance
  to the nearest point of the fixed noisy training set ``{y_i + σ n_i}``
  (divided by √dim).  Noisy training points are by construction close to it
  (≈ σ√2 at small σ); trajectory states that are not copying stay far.
* **what the denoiser makes of them**: the nearest-neighbour ratio test
  (``d1/d2 < threshold`` against the clean training set, BUBM25) and the
  nearest distance ``d1/√dim`` of the denoised states ``D(x(σ), σ)`` (the output
  of a sampler stopped at σ) and of the denoised noisy training points
  ``D(y_j + σ n'_j, σ)``.  Over training, reconstructions of noisy *training*
  images become copies long before the trajectories' do.

:class:`TrajectoryRecorder` is a sampler callback (k-diffusion style
``callback(i, x, denoised, sigma)``) that keeps the first ``k`` samples at
chosen grid indices, so the trajectories are those of the samples the
evaluator generates anyway (no extra sampling).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .memorization import _nearest

__all__ = ["TrajectoryRecorder", "record_indices", "trajectory_stats"]


def record_indices(sigmas: Sequence[float], max_points: int = 16) -> list[int]:
    """At most ``max_points`` indices of a decreasing σ grid, spread evenly in log σ (positive σ only)."""
    sg = np.asarray(sigmas, dtype=np.float64)
    pos = np.flatnonzero(sg > 0)
    if pos.size <= max_points:
        return [int(i) for i in pos]
    logs = np.log(sg[pos])
    targets = np.linspace(logs[0], logs[-1], max_points)
    chosen = sorted({int(pos[np.argmin(np.abs(logs - t))]) for t in targets})
    return chosen


class TrajectoryRecorder:
    """Sampler callback keeping states and denoised states of the first ``k`` samples at grid ``indices``.

    Works with :func:`diffmem.samplers.generate` in batches: a batch starts when step 0 is seen again;
    recording stops once ``k`` samples are held.
    """

    def __init__(self, k: int, indices: Sequence[int]):
        self.k, self.indices = int(k), set(int(i) for i in indices)
        self.states: dict[int, list[torch.Tensor]] = {}
        self.denoised: dict[int, list[torch.Tensor]] = {}
        self.sigma: dict[int, float] = {}
        self._held, self._batch_rows, self._recording = 0, 0, True

    def __call__(self, i: int, x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor) -> None:
        if i == 0:  # a new batch
            self._held += self._batch_rows
            self._recording = self._held < self.k
            self._batch_rows = 0
        if not self._recording:
            return
        take = min(self.k - self._held, x.shape[0])
        if i == 0:
            self._batch_rows = take
        if i in self.indices:
            self.states.setdefault(i, []).append(x[:take].detach().cpu())
            self.denoised.setdefault(i, []).append(denoised[:take].detach().cpu())
            self.sigma[i] = float(sigma.reshape(-1)[0])

    def result(self) -> list[tuple[float, torch.Tensor, torch.Tensor]]:
        """``[(σ, states [k, ...], denoised [k, ...])]`` in sampling order (decreasing σ)."""
        return [(self.sigma[i], torch.cat(self.states[i]), torch.cat(self.denoised[i])) for i in sorted(self.states)]


def _nn(queries: torch.Tensor, refs: torch.Tensor) -> dict:
    return _nearest(queries.reshape(len(queries), -1).float(), refs.reshape(len(refs), -1).float())


@torch.no_grad()
def trajectory_stats(den, recorded, train: torch.Tensor, noise: torch.Tensor, noise_ref: torch.Tensor,
                     n_ref: int, threshold: float = 1 / 3) -> list[dict]:
    """Per recorded σ: the two measurements of the module docstring, as plain numbers.

    ``recorded``: :meth:`TrajectoryRecorder.result`; ``train [n, ...]`` the clean training set;
    ``noise``/``noise_ref [n, ...]`` two fixed noise draws (the noisy training set and the reference
    points); ``n_ref``: how many training points serve as reference.
    """
    out = []
    dim = train[0].numel()
    scale = 1 / math.sqrt(dim)
    ref_y = train[:n_ref]
    for sigma, x, d in recorded:
        x, d = x.to(train.device), d.to(train.device)
        noisy = train + sigma * noise
        ref = ref_y + sigma * noise_ref[:n_ref]
        d_ref = den(ref, torch.full((len(ref),), sigma, dtype=ref.dtype, device=ref.device))
        traj_nn, ref_nn = _nn(x, noisy), _nn(ref, noisy)
        den_nn, den_ref_nn = _nn(d, train), _nn(d_ref, train)
        out.append({
            "sigma": float(sigma),
            "dist_noisy": float(traj_nn["d1"].mean() * scale),
            "dist_noisy_train": float(ref_nn["d1"].mean() * scale),
            "denoised_nn": float(den_nn["d1"].mean() * scale),
            "denoised_nn_train": float(den_ref_nn["d1"].mean() * scale),
            "denoised_copy": float((den_nn["ratio"] < threshold).mean()),
            "denoised_copy_train": float((den_ref_nn["ratio"] < threshold).mean()),
        })
    return out
