"""Checkpoint schedule: which training steps are saved and evaluated.

BUBM25 evaluates at log-spaced training times (step 0, dense early, about 90
points per pair of decades later).  The schedule is an explicit list of
integers written to ``RUN/schedule.json`` so that a run can be audited and
resumed without recomputing it.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import DiffmemError

__all__ = ["log_checkpoint_schedule"]


def log_checkpoint_schedule(
    total_steps: int,
    per_decade: int = 45,
    first: int = 1,
    include_zero: bool = True,
) -> list[int]:
    """Log-spaced integer checkpoint steps from 0 to ``total_steps`` inclusive.

    Construction (deterministic, no randomness): take ``K + 1`` points
    ``first · (total_steps/first)^(k/K)``, ``k = 0..K``, geometrically spaced
    with ``K = ceil(per_decade · log10(total_steps/first))`` (so at least
    ``per_decade`` points per decade), round each to the nearest integer,
    add 0 (when ``include_zero``) and ``total_steps``, and deduplicate.

    Rounding merges the points whose geometric spacing is below one step, so
    the schedule contains *every* step from ``first`` up to about
    ``per_decade / ln 10`` (≈ 20 steps for 45 per decade) and is then
    log-uniform with ratio ``10^(1/per_decade)`` between consecutive
    checkpoints.

    Args:
        total_steps: number of training steps (last checkpoint), > 0.
        per_decade: target points per decade of steps (BUBM25: ~45, i.e.
            ~90 per decade pair).  >= 1.
        first: first non-zero checkpoint, ``1 <= first <= total_steps``.
        include_zero: include step 0 (the initialisation).

    Returns:
        Sorted list of unique ints; starts at 0 (if ``include_zero``) and ends
        at ``total_steps``.

    Raises:
        DiffmemError: on a non-positive ``total_steps``/``per_decade`` or a
            ``first`` outside ``[1, total_steps]``.
    """
    if isinstance(total_steps, bool) or not isinstance(total_steps, (int, np.integer)):
        raise DiffmemError(f"number of steps must be an integer, got {total_steps!r}")
    total_steps = int(total_steps)
    if total_steps <= 0:
        raise DiffmemError(f"number of steps must be positive, got {total_steps}")
    if int(per_decade) < 1:
        raise DiffmemError(f"checkpoints per decade must be positive, got {per_decade}")
    first = int(first)
    if not 1 <= first <= total_steps:
        raise DiffmemError(f"first checkpoint must be in [1, {total_steps}], got {first}")

    decades = math.log10(total_steps / first)
    k = max(1, math.ceil(int(per_decade) * decades))
    pts = np.rint(np.geomspace(first, total_steps, k + 1)).astype(np.int64)
    steps = set(int(s) for s in pts)
    steps.add(first)
    steps.add(total_steps)
    if include_zero:
        steps.add(0)
    return sorted(steps)
