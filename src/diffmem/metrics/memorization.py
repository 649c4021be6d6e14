"""The memorisation fraction f_mem (BUBM25 §3; SPEC §1).

A generated sample is *memorised* when its nearest training point is much
closer than the second nearest: ``d1 / d2 < threshold`` (strict; plain L2
distances between flattened rows, in whatever centring the caller uses for
both sets; default threshold 1/3).  ``f_mem`` is the fraction of memorised
samples.  Conventions:

* ``d1 = d2 = 0`` (a sample equal to a training point that is itself
  duplicated in the training set) counts as memorised: its ratio is defined
  as 0.  Near-duplicates *inside the training set* otherwise hide copies of
  them (``d1 ≈ d2``); that is a property of the ratio test, kept as in BUBM25.
* Error bars come from a bootstrap over the samples.  For a 0/1 statistic the
  bootstrap mean of ``M`` resampled flags, ``k`` of them set, is exactly
  ``Binomial(M, k/M)/M``; we draw that directly (same distribution as
  resampling indices, ``O(n_boot)`` instead of ``O(n_boot · M)``).
  ``stderr`` is the standard deviation of the bootstrap means and ``ci95`` the
  2.5 / 97.5 % percentiles.  With ``n_boot = 0`` the binomial standard error
  ``sqrt(f(1−f)/M)`` and a Wilson 95 % interval are returned instead.
* The bootstrap interval collapses to ``[0, 0]`` when no sample is flagged
  (and to ``[1, 1]`` when all are): resampling zeros gives zeros.  Beside it
  every result carries two binomial intervals that stay honest at 0 and 1:
  ``ci95_wilson`` (Wilson score interval) and ``ci95_exact`` (Clopper–Pearson,
  never below nominal coverage).  0 of 200 flagged: Wilson [0, 0.0188],
  Clopper–Pearson [0, 0.0183].  :func:`binomial_interval` computes both.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..errors import DiffmemError
from .nn import _rows, two_nearest

__all__ = ["memorization_fraction", "nearest_ratios", "bootstrap_fraction", "binomial_interval", "validate_pair"]


def _check_finite(x, name: str, chunk: int = 8192) -> None:
    """Raise if ``x`` (2-D array or tensor) holds NaN or inf; chunked, bounded memory.

    Fast path: a row whose sum is finite has no NaN or inf (``torch.isfinite``
    on the whole array costs ~20× more); only a non-finite sum (possibly an
    overflow of large finite values) triggers the element-wise check.
    """
    if (x.dtype.is_floating_point if torch.is_tensor(x) else x.dtype.kind == "f") is False:
        return  # integers are always finite
    for s in range(0, x.shape[0], chunk):
        b = x[s : s + chunk]
        if torch.is_tensor(b):
            if bool(torch.isfinite(b.sum(1)).all()):
                continue
            ok = torch.isfinite(b).all(1)
        else:
            b = np.asarray(b)
            with np.errstate(over="ignore", invalid="ignore"):
                if np.isfinite(b.sum(1)).all():
                    continue
            ok = np.isfinite(b).all(1)
        if not bool(ok.all()):
            bad = np.flatnonzero(~np.asarray(ok.cpu() if torch.is_tensor(ok) else ok))
            raise DiffmemError(f"{name} contain NaN or infinite values (first bad row {s + int(bad[0])})")


def validate_pair(samples, train, threshold: float | None = None):
    """Flatten ``samples [M, ...]`` and ``train [N, ...]`` per row and check them.

    Returns the two 2-D views.  Raises :class:`DiffmemError` on an empty
    sample set, fewer than 2 training points, mismatched feature counts,
    non-numeric data, NaN or infinite values, or a threshold outside (0, 1].
    """
    if threshold is not None and not (0 < float(threshold) <= 1):
        raise DiffmemError(f"threshold must be in (0, 1], got {threshold}")
    S, T = _rows(samples, "samples"), _rows(train, "training points")
    if S.shape[0] == 0:
        raise DiffmemError("no samples given (the samples array has 0 rows)")
    if T.shape[0] < 2:
        raise DiffmemError(f"need at least 2 training points for the d1/d2 ratio test, got {T.shape[0]}")
    if S.shape[1] != T.shape[1]:
        raise DiffmemError(f"samples have {S.shape[1]} features per row but training points have "
                           f"{T.shape[1]} (shapes {tuple(np.shape(samples))} vs {tuple(np.shape(train))})")
    _check_finite(S, "samples")
    _check_finite(T, "training points")
    return S, T


def nearest_ratios(samples, train, **nn_kwargs) -> dict:
    """Per-sample nearest-neighbour distances and ratios (validated inputs).

    Returns numpy arrays ``d1 [M]``, ``d2 [M]``, ``nearest [M]`` (training
    row of the nearest point) and ``ratio [M] = d1/d2`` (0 where ``d1 = 0``),
    all float64 except ``nearest`` (int64).  Extra keyword arguments go to
    :func:`~diffmem.metrics.nn.two_nearest`.
    """
    return _nearest(*validate_pair(samples, train), **nn_kwargs)


def _nearest(S, T, **nn_kwargs) -> dict:
    d1, d2, i1 = two_nearest(S, T, **nn_kwargs)
    if torch.is_tensor(d1):
        d1, d2, i1 = d1.cpu().numpy(), d2.cpu().numpy(), i1.cpu().numpy()
    d1, d2 = d1.astype(np.float64), d2.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(d1 == 0, 0.0, d1 / d2)
    return {"d1": d1, "d2": d2, "nearest": i1.astype(np.int64), "ratio": ratio}


def binomial_interval(k: int, m: int, method: str = "wilson", level: float = 0.95) -> list[float]:
    """Two-sided interval ``[low, high]`` for a proportion from ``k`` successes in ``m`` trials.

    ``method="wilson"``: the Wilson score interval (Wilson 1927); ``"exact"``:
    Clopper–Pearson (beta quantiles; coverage never below ``level``).  Both
    give a positive upper bound at ``k = 0`` and a lower bound below 1 at
    ``k = m``, where a bootstrap interval degenerates to a point.
    """
    k, m = int(k), int(m)
    if m < 1 or not 0 <= k <= m:
        raise DiffmemError(f"binomial interval needs 0 ≤ k ≤ m and m ≥ 1, got k={k}, m={m}")
    alpha = 1.0 - float(level)
    if method == "wilson":
        from statistics import NormalDist

        z = NormalDist().inv_cdf(1 - alpha / 2)
        f = k / m
        den = 1 + z * z / m
        c = (f + z * z / (2 * m)) / den
        h = z * math.sqrt(f * (1 - f) / m + z * z / (4 * m * m)) / den
        lo, hi = max(0.0, c - h), min(1.0, c + h)
        return [0.0 if k == 0 else lo, 1.0 if k == m else hi]
    if method == "exact":
        from scipy.stats import beta

        lo = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, m - k + 1))
        hi = 1.0 if k == m else float(beta.ppf(1 - alpha / 2, k + 1, m - k))
        return [lo, hi]
    raise DiffmemError(f"unknown binomial interval {method!r}; use wilson or exact")


def bootstrap_fraction(flags: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fraction of set flags with bootstrap ``stderr``, ``ci95`` and ``boot_mean``, plus the binomial
    intervals ``ci95_wilson`` and ``ci95_exact`` (Clopper–Pearson) and the count ``n_flagged``."""
    flags = np.asarray(flags, dtype=bool)
    m, k = flags.size, int(flags.sum())
    f = k / m
    if n_boot < 0:
        raise DiffmemError(f"n_boot must be ≥ 0, got {n_boot}")
    exact = {"n_flagged": k, "ci95_wilson": binomial_interval(k, m, "wilson"),
             "ci95_exact": binomial_interval(k, m, "exact")}
    if n_boot == 0:
        return {"f_mem": f, "stderr": math.sqrt(f * (1 - f) / m), "ci95": list(exact["ci95_wilson"]),
                "boot_mean": f, **exact}
    boots = np.random.default_rng(seed).binomial(m, f, size=int(n_boot)) / m
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"f_mem": f, "stderr": float(boots.std(ddof=1)) if n_boot > 1 else 0.0,
            "ci95": [float(lo), float(hi)], "boot_mean": float(boots.mean()), **exact}


def memorization_fraction(samples, train, threshold: float = 1 / 3, n_boot: int = 1000, seed: int = 0,
                          *, details: bool = False, **nn_kwargs) -> dict:
    """BUBM25's memorisation fraction of ``samples [M, ...]`` against ``train [N, ...]``.

    Returns a JSON-serialisable dict: ``f_mem``, ``stderr``, ``ci95`` ([low,
    high]), ``boot_mean``, ``n_samples``, ``n_train``, ``threshold``, ``n_boot``,
    ``memorized`` (sample indices with ``d1/d2 < threshold``) and
    ``nearest_train`` (the nearest training row of each memorised sample).
    With ``details=True`` it also holds the per-sample numpy arrays ``ratio``,
    ``d1``, ``d2`` and ``nearest``.
    """
    S, T = validate_pair(samples, train, threshold)
    r = _nearest(S, T, **nn_kwargs)
    flags = r["ratio"] < float(threshold)
    out = bootstrap_fraction(flags, n_boot, seed)
    idx = np.flatnonzero(flags)
    out.update({
        "n_samples": int(flags.size),
        "n_train": int(T.shape[0]),
        "threshold": float(threshold),
        "n_boot": int(n_boot),
        "memorized": [int(i) for i in idx],
        "nearest_train": [int(i) for i in r["nearest"][idx]],
    })
    if details:
        out.update(r)
    return out
