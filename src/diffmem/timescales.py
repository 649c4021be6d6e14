"""Estimators of the two timescales τ_gen and τ_mem, the law τ_mem = κ n^α,
the FSW25 stopping rule and the (n, p) phase boundary (SPEC §1, §3).

BUBM25 give no formal definition of τ_gen and τ_mem.  The ones used here are
documented in each function, every knob is an argument, and every estimate
carries an interval.  Inputs are plain arrays over the checkpoints of one run
(``steps`` sorted increasing, as returned by :func:`diffmem.rundir.metric_series`).

Definitions (defaults)
----------------------
τ_gen  (:func:`tau_gen`)
    Smooth the quality curve q (lower is better) with a running median over 3
    consecutive checkpoints; ``q_best = min(q_smooth)`` over the whole run.
    τ_gen is the first checkpoint with ``q_smooth ≤ q_best + rel_tol·|q_best|``
    (``rel_tol = 0.1``: "within 10 % of the best value").  Interval: the
    bracketing checkpoints [previous, this], widened by the 2.5–97.5 %
    percentiles of a parametric bootstrap over the per-checkpoint errors
    when they are given.  A later worsening of quality (memorisation) does not
    move τ_gen: the first crossing is always at or before the best point.
τ_mem  (:func:`tau_mem`)
    ``method="significant"`` (default): the first checkpoint where f_mem is
    significantly above 0 — lower bound ``ci_low > 0`` (the analysis passes
    the Wilson 95 % bound, honest at f_mem = 0; a bootstrap bound also works) (else
    ``f − 1.96·stderr > 0``, else ``f > 0``) — and stays so for ``persist = 2``
    consecutive checkpoints (or until the end of the run).  Interval: the
    bracketing checkpoints [previous, this], widened by a parametric
    bootstrap of the curve (f ± stderr) when errors are given.
    ``method="level"``: the first crossing of ``level = 0.5`` by
    ``f_mem(τ)/f_mem(τ_max)`` (τ_max = last checkpoint), interpolated linearly
    in log τ between the bracketing checkpoints; interval: the bracket widened
    by a parametric bootstrap of the whole curve (f ± stderr, clipped to
    [0, 1], reference point included).
    Never reached → ``Estimate(value=inf, reached=False)``, never a fake number.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import DiffmemError

__all__ = [
    "Estimate",
    "running_median",
    "parametric_noise",
    "tau_gen",
    "tau_mem",
    "fit_power_law",
    "stopping_time",
    "value_at",
    "phase_boundary",
]

_Z95 = 1.959963984540054


@dataclass
class Estimate:
    """A timescale estimate (in training steps) with its interval.

    ``value`` is ``inf`` and ``reached`` False when the event never happens
    within the run; ``low`` is then the last checkpoint (a lower bound) and
    ``high`` is ``inf``.
    """

    value: float
    low: float
    high: float
    method: str
    reached: bool = True
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """JSON-friendly dict (inf → None)."""
        d = asdict(self)
        for k in ("value", "low", "high"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


def _as_arrays(steps, values, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(steps, dtype=np.float64).ravel()
    v = np.asarray(values, dtype=np.float64).ravel()
    if s.shape != v.shape:
        raise DiffmemError(f"{name}: steps and values have different lengths ({s.size} vs {v.size})")
    if s.size == 0:
        raise DiffmemError(f"{name}: no checkpoints")
    if np.any(np.diff(s) <= 0):
        raise DiffmemError(f"{name}: steps must be strictly increasing")
    return s, v


def _opt(a, size: int) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a, dtype=np.float64).ravel()
    if a.size != size:
        raise DiffmemError(f"expected {size} values, got {a.size}")
    return a


def running_median(x: np.ndarray, window: int) -> np.ndarray:
    """Centred running median over ``window`` consecutive points (NaN-aware).

    Works along the last axis of ``x`` ([..., K]).  The window shrinks
    symmetrically at the ends (the first and last points are kept as they
    are), so the output has the input's shape.  ``window <= 1`` returns a copy.
    """
    x = np.asarray(x, dtype=np.float64)
    out = x.copy()
    k = x.shape[-1]
    if window <= 1 or k < 3:
        return out
    h = window // 2
    radius = np.minimum(np.minimum(np.arange(k), k - 1 - np.arange(k)), h)
    for r in range(1, h + 1):
        idx = np.flatnonzero(radius == r)
        if idx.size:
            stack = np.stack([x[..., idx + d] for d in range(-r, r + 1)], axis=-1)
            out[..., idx] = np.nanmedian(stack, axis=-1)
    return out


def parametric_noise(errors: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """The one bootstrap helper of the estimators: perturbations ``errors · N(0, 1)`` [n_boot, K].

    Row b is replicate b's perturbation of a curve whose points have standard
    errors ``errors [K]`` (NaN counts as 0).  Drawn from ``default_rng(seed)``
    in one call, so a replicate's draws do not depend on how many are taken.
    """
    e = np.nan_to_num(np.asarray(errors, dtype=np.float64), nan=0.0)
    return e * np.random.default_rng(seed).standard_normal((int(n_boot), e.size))


def _bracket(s: np.ndarray, i: int) -> tuple[float, float]:
    return (float(s[i - 1]) if i > 0 else float(s[0])), float(s[i])


# ---------------------------------------------------------------------------
# τ_gen


def _threshold(qs: np.ndarray, rel_tol: float, abs_tol: float, reference: str,
               target: float | None = None) -> np.ndarray:
    best = np.nanmin(qs, axis=-1, keepdims=True)
    if reference == "target":
        return np.full_like(best, float(target))
    if reference == "improvement":
        # within rel_tol of the total improvement from the first checkpoint to the best
        span = np.abs(qs[..., :1] - best)
        return best + np.maximum(rel_tol * span, abs_tol)
    return best + np.maximum(rel_tol * np.abs(best), abs_tol)


def _first_within(q: np.ndarray, rel_tol: float, abs_tol: float, smooth: int,
                  reference: str = "best", target: float | None = None) -> np.ndarray:
    """Index of the first point within tolerance of the best, per row of q [..., K]
    (-1 where a ``target`` level is never reached)."""
    qs = running_median(q, smooth)
    thr = _threshold(qs, rel_tol, abs_tol, reference, target)
    ok = qs <= thr
    # argmax of a boolean = first True (the best itself qualifies unless the reference is a target)
    return np.where(ok.any(axis=-1), np.argmax(ok, axis=-1), -1)


def tau_gen(
    steps: Sequence[float],
    quality: Sequence[float],
    errors: Sequence[float] | None = None,
    rel_tol: float = 0.1,
    smooth: int = 3,
    abs_tol: float = 0.0,
    n_boot: int = 500,
    seed: int = 0,
    reference: str = "best",
    target: float | None = None,
) -> Estimate:
    """Generalisation time: first checkpoint where quality is near its best.

    ``reference="best"``: tolerance ``rel_tol·|q_best|`` (within x % of the
    best value).  ``reference="improvement"``: tolerance
    ``rel_tol·(q_s[0] − q_best)`` — the first checkpoint that has made
    ``1 − rel_tol`` of the run's total improvement.  The second does not
    depend on the level of the best value, which differs between training-set
    sizes (a model of 16 images can never match the held-out set as well as a
    model of 128), so it compares runs of different n more fairly.

    Definition: with ``q_s`` = running median of ``quality`` over ``smooth``
    consecutive checkpoints (1 = no smoothing) and ``q_best = min q_s``,
    τ_gen is the first checkpoint with
    ``q_s ≤ q_best + max(rel_tol·|q_best|, abs_tol)``.
    ``abs_tol`` guards metrics whose best value is near 0 (KID).

    Args:
        steps: checkpoint steps [K], strictly increasing.
        quality: quality metric [K], lower is better (FID, FD, KID).  NaNs are
            ignored.
        errors: per-checkpoint standard deviation of ``quality`` [K]
            (optional; enables the parametric bootstrap).
        rel_tol: relative tolerance "within x %" (0.1 = 10 %).
        smooth: running-median window in checkpoints (odd; 1 disables).
        abs_tol: absolute tolerance floor.
        n_boot: parametric bootstrap replicates (used only with ``errors``).
        seed: bootstrap seed.

    Returns:
        :class:`Estimate` with ``value`` = the checkpoint step, interval
        ``[previous checkpoint, this checkpoint]`` widened by the bootstrap
        2.5–97.5 % percentiles.  ``details`` holds ``best``, ``best_step``,
        ``threshold`` and the bracket.
    """
    s, q = _as_arrays(steps, quality, "tau_gen")
    if rel_tol < 0 or abs_tol < 0:
        raise DiffmemError("tau_gen: tolerances must be non-negative")
    if target is not None:
        reference = "target"
        if not math.isfinite(float(target)):
            raise DiffmemError(f"tau_gen: target must be finite, got {target!r}")
    if reference not in ("best", "improvement", "target"):
        raise DiffmemError(f"tau_gen: reference must be 'best', 'improvement' or a target level, got {reference!r}")
    ok = np.isfinite(q)
    if not ok.any():
        raise DiffmemError("tau_gen: quality has no finite value")
    s, q = s[ok], q[ok]
    err = _opt(errors, ok.size)
    err = None if err is None else err[ok]

    i = int(_first_within(q, rel_tol, abs_tol, smooth, reference, target))
    qs = running_median(q, smooth)
    if i < 0:  # a target level never reached: open-ended at the last checkpoint
        details = {"best": float(np.nanmin(qs)), "threshold": float(target), "reference": reference,
                   "rel_tol": rel_tol, "smooth": smooth}
        return Estimate(math.inf, float(s[-1]), math.inf,
                        f"tau_gen: first checkpoint with median{smooth}(q) <= {float(target):.6g} (not reached)",
                        False, details)
    lo, hi = _bracket(s, i)
    best = float(np.nanmin(qs))
    details: dict[str, Any] = {
        "best": best,
        "best_step": float(s[int(np.nanargmin(qs))]),
        "threshold": float(_threshold(qs, rel_tol, abs_tol, reference, target)[0]),
        "reference": reference,
        "bracket": [lo, hi],
        "rel_tol": rel_tol,
        "smooth": smooth,
    }
    tol = "|best|" if reference == "best" else "(q_start - best)"
    method = f"tau_gen: first checkpoint with median{smooth}(q) <= best + {rel_tol:g}*{tol}"
    if reference == "target":
        method = f"tau_gen: first checkpoint with median{smooth}(q) <= {float(target):.6g} (common level)"
    if err is not None and n_boot > 0 and np.any(np.nan_to_num(err) > 0):
        idx = _first_within(q + parametric_noise(err, n_boot, seed), rel_tol, abs_tol, smooth, reference, target)
        idx = np.where(idx < 0, q.size - 1, idx)
        bs = s[idx]
        b_lo, b_hi = np.percentile(bs, [2.5, 97.5])
        # the bootstrap index i* also has a bracket [s[i*-1], s[i*]]
        b_lo = min(b_lo, float(np.percentile(s[np.maximum(idx - 1, 0)], 2.5)))
        details["bootstrap"] = [float(b_lo), float(b_hi)]
        lo, hi = min(lo, float(b_lo)), max(hi, float(b_hi))
    return Estimate(float(s[i]), lo, hi, method, True, details)


# ---------------------------------------------------------------------------
# τ_mem


def _significant(f, ci_low, stderr, z, threshold) -> tuple[np.ndarray, str]:
    if ci_low is not None:
        return np.nan_to_num(ci_low, nan=-np.inf) > threshold, f"ci_low > {threshold:g}"
    if stderr is not None:
        return f - z * np.nan_to_num(stderr, nan=np.inf) > threshold, f"f - {z:.3g}*stderr > {threshold:g}"
    return np.nan_to_num(f, nan=-np.inf) > threshold, f"f > {threshold:g}"


def _stderr_or_from_bound(f, stderr, ci_low, z):
    """The standard errors, or (only the lower bound known) the symmetric approximation ``(f − low)/z``."""
    if stderr is None and ci_low is not None:
        return np.maximum(f - np.nan_to_num(ci_low, nan=0.0), 0.0) / z
    return stderr


def _first_persistent(sig: np.ndarray, persist: int) -> int | None:
    """First index starting a run of ``persist`` True values (a run reaching
    the last checkpoint counts even if shorter)."""
    k = sig.size
    for i in range(k):
        if not sig[i]:
            continue
        need = min(persist, k - i)
        if sig[i : i + need].all():
            return i
    return None


def _level_cross(s: np.ndarray, g: np.ndarray, level: float) -> tuple[float, int] | None:
    """First crossing of ``level`` by g (g[i] >= level), log-linear interpolation."""
    above = np.flatnonzero(np.nan_to_num(g, nan=-np.inf) >= level)
    if above.size == 0:
        return None
    i = int(above[0])
    if i == 0:
        return float(s[0]), 0
    g0, g1 = g[i - 1], g[i]
    w = (level - g0) / (g1 - g0) if g1 != g0 else 1.0
    w = float(np.clip(w, 0.0, 1.0))
    if s[i - 1] > 0:
        val = math.exp(math.log(s[i - 1]) + w * (math.log(s[i]) - math.log(s[i - 1])))
    else:  # step 0 has no logarithm: interpolate linearly
        val = s[i - 1] + w * (s[i] - s[i - 1])
    return float(val), i


def tau_mem(
    steps: Sequence[float],
    f_mem: Sequence[float],
    ci_low: Sequence[float] | None = None,
    stderr: Sequence[float] | None = None,
    method: str = "significant",
    level: float = 0.5,
    persist: int = 2,
    threshold: float = 0.0,
    z: float = _Z95,
    n_boot: int = 500,
    seed: int = 0,
) -> Estimate:
    """Memorisation time from an f_mem curve.

    ``method="significant"``: first checkpoint where f_mem is significantly
    above ``threshold`` (0) — ``ci_low > threshold`` if lower bootstrap
    bounds are given, else ``f − z·stderr > threshold``, else
    ``f > threshold`` — and stays significant for ``persist`` consecutive
    checkpoints (a run of significant checkpoints that reaches the end of the
    training counts even if shorter; ``details["truncated_by_end"]`` flags
    it).  ``value`` = that checkpoint; interval = ``[previous checkpoint,
    this checkpoint]``, widened (when errors are known) by a parametric
    bootstrap: every point moved by ``stderr·N(0,1)`` (its ``ci_low``
    shifted alike), the detection repeated, 2.5 % of the lower brackets and
    97.5 % of the detections taken (``high = inf`` when more than 2.5 % of
    replicates never detect).

    ``method="level"``: normalise by the final value, ``g = f/f(τ_max)``;
    τ_mem is the first crossing of ``level`` by g, interpolated linearly in
    log τ between the bracketing checkpoints.  Requires the final point to be
    significant (same test as above, no persistence), otherwise not reached.
    Interval: the bracket, widened by the 2.5–97.5 % percentiles of a
    parametric bootstrap (each point f + stderr·N(0,1), clipped to [0, 1],
    re-normalised by its own perturbed final value).

    Args:
        steps: checkpoint steps [K], strictly increasing.
        f_mem: memorised fraction [K] in [0, 1].
        ci_low: lower bootstrap bound of f_mem [K] (optional).
        stderr: bootstrap standard error of f_mem [K] (optional).
        method: ``"significant"`` or ``"level"``.
        level: crossing level for ``"level"``, in (0, 1].
        persist: consecutive significant checkpoints required (>= 1).
        threshold: f_mem must be significantly above this value.
        z: normal quantile used with ``stderr`` when ``ci_low`` is absent.
        n_boot: bootstrap replicates for ``"level"``.
        seed: bootstrap seed.

    Returns:
        :class:`Estimate`; if never reached, ``value = inf``,
        ``reached = False``, ``low`` = last checkpoint (τ_mem is larger than
        the run), ``high = inf``.
    """
    s, f = _as_arrays(steps, f_mem, "tau_mem")
    cl = _opt(ci_low, s.size)
    se = _opt(stderr, s.size)
    if persist < 1:
        raise DiffmemError(f"tau_mem: persist must be >= 1, got {persist}")
    sig, test = _significant(f, cl, se, z, threshold)

    def not_reached(method_str: str, why: str) -> Estimate:
        return Estimate(math.inf, float(s[-1]), math.inf, method_str, False, {"why": why, "test": test})

    if method == "significant":
        m = f"tau_mem: first checkpoint with {test} for {persist} consecutive checkpoints"
        i = _first_persistent(sig, persist)
        if i is None:
            return not_reached(m, "f_mem never significantly above threshold")
        lo, hi = _bracket(s, i)
        details = {"bracket": [lo, hi], "test": test, "persist": persist,
                   "truncated_by_end": bool(s.size - i < persist)}
        se_b = _stderr_or_from_bound(f, se, cl, z)
        if se_b is not None and n_boot > 0:
            hits = []
            for noise in parametric_noise(se_b, n_boot, seed):
                fb = np.clip(f + noise, 0.0, 1.0)
                sb, _ = _significant(fb, None if cl is None else cl + noise, None if cl is not None else se, z,
                                     threshold)
                j = _first_persistent(sb, persist)
                hits.append(math.inf if j is None else j)
            hits_a = np.array(hits)
            fin = hits_a[np.isfinite(hits_a)].astype(int)
            if fin.size:
                b_lo = float(np.percentile(s[np.maximum(fin - 1, 0)], 2.5))
                b_hi = float(np.percentile(s[fin], 97.5)) if fin.size >= 0.975 * n_boot else math.inf
                details["bootstrap"] = [b_lo, b_hi]
                lo, hi = min(lo, b_lo), max(hi, b_hi)
        return Estimate(float(s[i]), lo, hi, m, True, details)

    if method == "level":
        if not 0 < level <= 1:
            raise DiffmemError(f"tau_mem: level must be in (0, 1], got {level}")
        m = f"tau_mem: f_mem/f_mem(tau_max) first crosses {level:g} (log-linear interpolation)"
        if not sig[-1]:
            return not_reached(m, "f_mem(tau_max) not significantly above threshold")
        cross = _level_cross(s, f / f[-1], level)
        assert cross is not None  # g[-1] == 1 >= level
        val, i = cross
        lo, hi = _bracket(s, i)
        details: dict[str, Any] = {"bracket": [lo, hi], "level": level, "f_ref": float(f[-1]), "test": test}
        se = _stderr_or_from_bound(f, se, cl, z)
        if se is not None and n_boot > 0:
            vals = []
            for noise in parametric_noise(se, n_boot, seed):
                fb = np.clip(f + noise, 0.0, 1.0)
                if fb[-1] <= 0:
                    continue
                c = _level_cross(s, fb / fb[-1], level)
                if c is not None:
                    vals.append(c[0])
            if vals:
                b_lo, b_hi = np.percentile(vals, [2.5, 97.5])
                details["bootstrap"] = [float(b_lo), float(b_hi)]
                lo, hi = min(lo, float(b_lo)), max(hi, float(b_hi))
        return Estimate(val, lo, hi, m, True, details)

    raise DiffmemError(f"tau_mem: unknown method {method!r} (use 'significant' or 'level')")


# ---------------------------------------------------------------------------
# power law τ = κ n^α


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise OLS slope and intercept; x, y: [B, m]."""
    xm = x.mean(axis=-1, keepdims=True)
    ym = y.mean(axis=-1, keepdims=True)
    sxx = ((x - xm) ** 2).sum(axis=-1)
    sxy = ((x - xm) * (y - ym)).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        a = sxy / sxx
    b = ym[..., 0] - a * xm[..., 0]
    return a, b


def fit_power_law(
    n: Sequence[float],
    tau: Sequence[float | None],
    tau_low: Sequence[float | None] | None = None,
    tau_high: Sequence[float | None] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    resample: str = "points+errors",
) -> dict[str, Any]:
    """Fit ``τ = κ n^α`` by least squares on ``log τ = log κ + α log n``.

    Points whose τ is None, NaN, infinite or ≤ 0 (never reached) are excluded
    and listed in ``excluded_n``.

    Uncertainty:
      * bootstrap (``n_boot`` replicates): ``resample`` contains ``"points"``
        → resample the (n, τ) pairs with replacement (replicates with a
        single distinct n are redrawn); contains ``"errors"`` → jitter each
        log τ by a split normal whose sides put ``tau_low``/``tau_high`` at
        its 2.5/97.5 % points (only where given; an infinite ``tau_high``
        mirrors the lower side).  ``alpha_ci``/``kappa_ci``
        are the 2.5–97.5 % percentiles.
      * with ≥ 3 points, the classical OLS standard errors and t-intervals
        (``alpha_se``, ``alpha_ci_t``, ``kappa_ci_t``).

    Returns:
        dict with ``alpha``, ``alpha_ci``, ``kappa``, ``kappa_ci``,
        ``alpha_se``, ``alpha_ci_t``, ``kappa_ci_t`` (NaN when undefined),
        ``n_points``, ``n_used`` (list), ``excluded_n`` (list), ``ok`` (False
        with fewer than 2 distinct n), ``method``, and the bootstrap samples
        ``boot_alpha``/``boot_log_kappa`` (numpy arrays, for prediction
        bands; not JSON).
    """
    n_arr = np.asarray(n, dtype=np.float64).ravel()

    def clean(a) -> np.ndarray:
        if a is None:
            return np.full(n_arr.size, np.nan)
        out = np.array([np.nan if v is None else float(v) for v in a], dtype=np.float64)
        if out.size != n_arr.size:
            raise DiffmemError(f"fit_power_law: expected {n_arr.size} values, got {out.size}")
        return out

    t_arr, t_lo, t_hi = clean(tau), clean(tau_low), clean(tau_high)
    keep = np.isfinite(t_arr) & (t_arr > 0) & np.isfinite(n_arr) & (n_arr > 0)
    nan = float("nan")
    res: dict[str, Any] = {
        "alpha": nan, "alpha_ci": [nan, nan], "kappa": nan, "kappa_ci": [nan, nan],
        "alpha_se": nan, "alpha_ci_t": [nan, nan], "kappa_ci_t": [nan, nan],
        "n_points": int(keep.sum()), "n_used": n_arr[keep].tolist(),
        "excluded_n": n_arr[~keep].tolist(), "ok": False,
        "method": f"OLS of log tau on log n; bootstrap ({resample}, {n_boot} replicates)",
        "boot_alpha": np.empty(0), "boot_log_kappa": np.empty(0),
    }
    x, y = np.log(n_arr[keep]), np.log(t_arr[keep])
    m = x.size
    if m < 2 or np.unique(x).size < 2:
        res["why"] = "fewer than 2 distinct n with a reached timescale"
        return res
    a, b = _ols(x[None], y[None])
    alpha, logk = float(a[0]), float(b[0])
    res.update(alpha=alpha, kappa=math.exp(logk), ok=True)

    if m >= 3:
        from scipy import stats

        resid = y - (logk + alpha * x)
        s2 = float(resid @ resid) / (m - 2)
        sxx = float(((x - x.mean()) ** 2).sum())
        se_a = math.sqrt(s2 / sxx)
        se_b = math.sqrt(s2 * (1.0 / m + x.mean() ** 2 / sxx))
        tq = float(stats.t.ppf(0.975, m - 2))
        res.update(
            alpha_se=se_a,
            alpha_ci_t=[alpha - tq * se_a, alpha + tq * se_a],
            kappa_ci_t=[math.exp(logk - tq * se_b), math.exp(logk + tq * se_b)],
            kappa_log_se=se_b,
        )

    if n_boot > 0:
        rng = np.random.default_rng(seed)
        lo_l = np.log(t_lo[keep])
        hi_l = np.log(t_hi[keep])
        sd_lo = np.where(np.isfinite(lo_l), np.maximum(y - lo_l, 0.0) / _Z95, 0.0)
        sd_hi = np.where(np.isfinite(hi_l), np.maximum(hi_l - y, 0.0) / _Z95, sd_lo)  # open upper end: mirror
        if "points" in resample:
            idx = rng.integers(0, m, size=(n_boot, m))
            bad = np.ptp(x[idx], axis=1) == 0
            while bad.any():  # redraw degenerate replicates (one distinct n)
                idx[bad] = rng.integers(0, m, size=(int(bad.sum()), m))
                bad = np.ptp(x[idx], axis=1) == 0
        else:
            idx = np.broadcast_to(np.arange(m), (n_boot, m))
        yb = y[idx]
        if "errors" in resample:
            zz = rng.standard_normal((n_boot, m))
            yb = yb + np.where(zz < 0, sd_lo[idx], sd_hi[idx]) * zz
        ab, bb = _ols(x[idx], yb)
        okb = np.isfinite(ab)
        ab, bb = ab[okb], bb[okb]
        if ab.size:
            res["alpha_ci"] = [float(v) for v in np.percentile(ab, [2.5, 97.5])]
            res["kappa_ci"] = [float(v) for v in np.exp(np.percentile(bb, [2.5, 97.5]))]
            res["boot_alpha"], res["boot_log_kappa"] = ab, bb
    return res


# ---------------------------------------------------------------------------
# FSW25 stopping rule and the phase boundary


def stopping_time(
    kappa: float,
    n: float | Sequence[float],
    alpha_frac: float = 0.5,
    batch_size: int | None = None,
    exponent: float = 1.0,
) -> dict[str, Any]:
    """FSW25 early-stopping rule: stop a run on n samples at ``α κ n``.

    ``kappa`` = τ_mem / n estimated on pilot runs (steps per sample), e.g. the
    ``kappa`` of :func:`fit_power_law` with α ≈ 1.  ``exponent`` generalises
    to ``α κ n^exponent`` when the fitted exponent is not 1.

    Returns:
        ``{"steps": ..., "epochs": ...}`` (floats or arrays, as ``n``);
        ``epochs = steps · batch_size / n`` when ``batch_size`` is given
        (use the run's batch, e.g. ``min(n, 512)``), else None.
    """
    if not 0 < alpha_frac:
        raise DiffmemError(f"stopping_time: alpha_frac must be positive, got {alpha_frac}")
    if not (kappa > 0 and math.isfinite(kappa)):
        raise DiffmemError(f"stopping_time: kappa must be positive and finite, got {kappa}")
    n_arr = np.asarray(n, dtype=np.float64)
    steps = alpha_frac * kappa * n_arr**exponent
    epochs = None if batch_size is None else steps * float(batch_size) / n_arr
    if n_arr.ndim == 0:
        return {"steps": float(steps), "epochs": None if epochs is None else float(epochs)}
    return {"steps": steps, "epochs": epochs}


def value_at(steps: Sequence[float], values: Sequence[float], tau: float) -> float:
    """Value at training time ``tau``: the last checkpoint at or before
    ``tau`` (NaN if ``tau`` is before the first checkpoint or more than 0.1 %
    beyond the last one, i.e. the run was not trained that long)."""
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if s.size == 0 or tau < s[0] or tau > s[-1] * 1.001:
        return float("nan")
    i = int(np.searchsorted(s, tau * (1 + 1e-12), side="right")) - 1
    return float(v[max(i, 0)])


def phase_boundary(
    rows: Sequence[Mapping[str, Any]],
    taus: Mapping[Any, Sequence[float]] | Sequence[float],
    tol: float = 0.0,
    monotone: bool = True,
) -> list[dict[str, Any]]:
    """Smallest n with f_mem(τ) = 0, for each width and each τ (BUBM25 Fig. 3 right).

    Args:
        rows: one mapping per run with keys ``n``, ``width``, ``steps`` and
            ``f_mem`` (arrays over checkpoints), optionally ``p`` (parameters).
            Several seeds of the same (width, n) are averaged.
        taus: training times to test, either one list for all widths or a
            mapping width → list (e.g. ``[τ_gen, 3τ_gen, 8τ_gen]`` of that width).
        tol: f_mem ≤ tol counts as 0.
        monotone: require f_mem(τ) ≤ tol for this n *and every larger n* of the
            table (robust to an isolated zero at small n); False takes the
            smallest n with f_mem(τ) ≤ tol.

    f_mem(τ) of a run is its value at the last checkpoint ≤ τ; runs not
    trained up to τ are ignored.

    Returns:
        list of ``{"width", "p", "tau", "n_star", "n_tested", "status"}``;
        ``status = "found"`` when the boundary lies between two tested n,
        ``"at_or_below"`` when already the smallest tested n has f_mem(τ) = 0
        (``n_star`` is then only an upper bound); ``n_star`` is None when no tested n has f_mem(τ) = 0 (``status =
        "all_memorise"``: the boundary lies beyond the largest n) or no run
        was trained up to τ (``status = "not_trained"``).
    """
    by_w: dict[Any, list[Mapping[str, Any]]] = {}
    for r in rows:
        by_w.setdefault(r.get("width"), []).append(r)
    out = []
    for w, rs in sorted(by_w.items(), key=lambda kv: (kv[0] is None, kv[0])):
        ts = taus.get(w, []) if isinstance(taus, Mapping) else taus
        p = next((r.get("p") for r in rs if r.get("p") is not None), None)
        for tau in ts:
            per_n: dict[float, list[float]] = {}
            for r in rs:
                v = value_at(r["steps"], r["f_mem"], float(tau))
                if np.isfinite(v):
                    per_n.setdefault(float(r["n"]), []).append(v)
            ns = sorted(per_n)
            zero = [float(np.mean(per_n[k])) <= tol for k in ns]
            n_star = None
            if monotone:
                for j in range(len(ns) - 1, -1, -1):
                    if not zero[j]:
                        break
                    n_star = ns[j]
            else:
                n_star = next((k for k, z0 in zip(ns, zero) if z0), None)
            if n_star is None:
                status = "all_memorise" if ns else "not_trained"
            else:  # the smallest tested n already at 0: the boundary is at or below it, not found
                status = "at_or_below" if n_star == ns[0] else "found"
            out.append({"width": w, "p": p, "tau": float(tau), "n_star": n_star, "n_tested": ns, "status": status})
    return out
