"""The explicit log-spaced checkpoint schedule."""

from __future__ import annotations

import numpy as np
import pytest

from diffmem.checkpoints import log_checkpoint_schedule
from diffmem.errors import DiffmemError


@pytest.mark.parametrize("total", [1, 2, 7, 100, 20_000, 2_000_000])
@pytest.mark.parametrize("per_decade", [3, 12, 45])
def test_schedule_basic_properties(total, per_decade):
    s = log_checkpoint_schedule(total, per_decade)
    assert all(isinstance(x, int) for x in s)
    assert s[0] == 0 and s[-1] == total
    assert s == sorted(set(s))  # sorted and unique
    assert log_checkpoint_schedule(total, per_decade) == s  # reproducible


def test_schedule_dense_early_and_log_density():
    per_decade = 45
    s = np.array(log_checkpoint_schedule(2_000_000, per_decade))
    # every step at the start
    assert s[:21].tolist() == list(range(21))
    # ~per_decade points in each full decade past the dense start
    for lo in (10**3, 10**4, 10**5):
        k = np.count_nonzero((s >= lo) & (s < 10 * lo))
        assert per_decade - 2 <= k <= per_decade + 2
    # log-uniform later: consecutive ratios close to 10^(1/per_decade)
    late = s[s >= 1000]
    ratios = late[1:] / late[:-1]
    assert np.allclose(ratios, 10 ** (1 / per_decade), rtol=0.01)


def test_schedule_options():
    s = log_checkpoint_schedule(1000, 10, first=10, include_zero=False)
    assert s[0] == 10 and s[-1] == 1000 and 0 not in s
    assert len(s) == 21


@pytest.mark.parametrize("bad", [0, -5])
def test_schedule_rejects_non_positive_steps(bad):
    with pytest.raises(DiffmemError, match=f"number of steps must be positive, got {bad}"):
        log_checkpoint_schedule(bad)


def test_schedule_rejects_bad_arguments():
    with pytest.raises(DiffmemError):
        log_checkpoint_schedule(2.5)  # type: ignore[arg-type]
    with pytest.raises(DiffmemError):
        log_checkpoint_schedule(100, per_decade=0)
    with pytest.raises(DiffmemError):
        log_checkpoint_schedule(100, first=101)
