"""The :class:`Dataset` record every loader returns (:mod:`diffmem.data` for images and vectors,
:mod:`diffmem.grammar` for token sequences): a pool, a held-out set, nested subsets.

``meta["kind"] == "tokens"`` marks int64 token sequences ``[N, seq_len]`` over
``range(meta["vocab"])`` (the mask token of masked diffusion is ``vocab``);
anything else is continuous data in model space.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .errors import DiffmemError

__all__ = ["Dataset"]


@dataclass
class Dataset:
    name: str
    pool: torch.Tensor  # [N, *shape] training-eligible points, model space
    test: torch.Tensor  # [N_test, *shape] held out
    labels: torch.Tensor | None = None  # aligned with pool
    mean: torch.Tensor | None = None  # per-pixel centring offset (model = pixels − mean)
    exact: "GaussianMixture | None" = None  # known data distribution (diffmem.data.GaussianMixture), if any
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple:
        return tuple(self.pool.shape[1:])

    @property
    def is_tokens(self) -> bool:
        """Token sequences (masked discrete diffusion) rather than continuous data."""
        return self.meta.get("kind") == "tokens"

    def subset(self, n: int, seed: int = 0, offset: int = 0) -> torch.Tensor:
        """The first ``n`` points of the pool shuffled with ``seed`` (nested in n); with ``offset``, the
        ``n`` points after the first ``offset`` (``offset = n``: disjoint from the first ``n``)."""
        n, offset = int(n), int(offset)
        if n < 1:
            raise DiffmemError(f"training-set size n must be positive, got {n}")
        if offset < 0:
            raise DiffmemError(f"subset_offset must be ≥ 0, got {offset}")
        if n + offset > len(self.pool):
            extra = f" after subset_offset = {offset}" if offset else ""
            raise DiffmemError(f"n = {n}{extra} exceeds the {len(self.pool)} training-eligible points of {self.name!r}")
        return self.pool[self.subset_indices(n, seed, offset)]

    def subset_indices(self, n: int, seed: int = 0, offset: int = 0) -> torch.Tensor:
        perm = torch.randperm(len(self.pool), generator=torch.Generator().manual_seed(int(seed)))
        return perm[int(offset): int(offset) + int(n)]

    def to_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """Model space → [−1, 1] pixel space (undo the centring)."""
        return x if self.mean is None else x + self.mean.to(x)
