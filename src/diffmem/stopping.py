"""FSW25's early-stopping rule as a library object (SPEC §3, issue #11 item 6): usable for images and sequences.

Memorisation starts at ``τ_mem ≈ κ n`` training steps.  Pilot runs at small n
give κ; a run on n samples is stopped at ``α κ n`` steps, before it starts
copying its training set::

    rule = EarlyStopping.from_pilots("runs/pilots")      # κ with a 95 % interval from the pilots' τ_mem
    rule.predict_tau_mem(4096)                            # {"value", "low", "high"} in steps
    rule.stop(4096, batch_size=64)                        # {"steps", "epochs", ...}
    train(cfg, "runs/big", callbacks=[rule.callback(4096)])   # a diffmem callback (the issue #12 monitor)
    monitor = MemorizationMonitor(train_x, total_steps=T, rules=[rule.rule(4096)])  # any PyTorch loop

* **κ** (:func:`estimate_kappa`): ``log κ = mean_i (log τ_i − log n_i)`` over
  the pilots that reached τ_mem (the least-squares fit of ``log τ = log κ +
  log n`` with the slope fixed at 1, the law the rule assumes); its 95 %
  interval by a bootstrap that resamples the pilots and moves each log τ
  within its own interval (a split normal putting ``τ_low``/``τ_high`` at its
  2.5/97.5 % points, as :func:`diffmem.timescales.fit_power_law`).  A single
  pilot gives the interval of its own τ_mem only.
* **α** defaults to **0.5** (:data:`DEFAULT_ALPHA`): a factor 2 below the
  predicted onset, which covers a κ interval of ± a factor 1.5 and the
  checkpoint bracket of τ_mem; FSW25 only require α < 1.
* **epochs** = ``steps · batch / n`` with the run's batch (diffmem:
  ``min(n, batch_max)``).

The rule object is :class:`diffmem.monitor.StopAtTime` (the issue #12
monitor's pluggable rule); :meth:`EarlyStopping.rule` builds it and
:meth:`EarlyStopping.callback` wraps it in a
:class:`~diffmem.monitor.MemorizationMonitor`, which is a diffmem callback
(it also logs f_mem's history and restores its state on resume).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .errors import DiffmemError

__all__ = ["KappaEstimate", "estimate_kappa", "EarlyStopping", "DEFAULT_ALPHA"]

DEFAULT_ALPHA = 0.5
_Z95 = 1.959963984540054


@dataclass(frozen=True)
class KappaEstimate:
    """κ = τ_mem / n (steps per training sample) with its 95 % interval, and the pilots it came from."""

    kappa: float
    low: float
    high: float
    n: list
    tau: list
    tau_low: list = field(default_factory=list)
    tau_high: list = field(default_factory=list)
    method: str = ""

    def to_dict(self) -> dict:
        def f(x):
            return None if x is None or not math.isfinite(x) else float(x)

        return {"kappa": f(self.kappa), "kappa_ci": [f(self.low), f(self.high)], "n": list(self.n),
                "tau": [f(t) for t in self.tau], "tau_low": [f(t) for t in self.tau_low],
                "tau_high": [f(t) for t in self.tau_high], "method": self.method}


def estimate_kappa(n: Sequence[float], tau: Sequence[float], tau_low: Sequence[float] | None = None,
                   tau_high: Sequence[float] | None = None, n_boot: int = 2000, seed: int = 0) -> KappaEstimate:
    """κ from pilots ``(n_i, τ_i)`` (module docstring); pilots with τ None / inf / ≤ 0 (not reached) are left out."""
    n_a = np.asarray(n, dtype=np.float64).ravel()

    def arr(a):
        out = np.array([np.nan if v is None else float(v) for v in (a if a is not None else [None] * n_a.size)])
        if out.size != n_a.size:
            raise DiffmemError(f"estimate_kappa: expected {n_a.size} values, got {out.size}")
        return out

    t, lo, hi = arr(tau), arr(tau_low), arr(tau_high)
    keep = np.isfinite(t) & (t > 0) & (n_a > 0)
    if not keep.any():
        raise DiffmemError("no pilot run reached τ_mem: κ is unknown; train the pilots longer (or use smaller n)")
    n_a, t, lo, hi = n_a[keep], t[keep], lo[keep], hi[keep]
    y = np.log(t) - np.log(n_a)  # log κ_i
    k = float(np.exp(y.mean()))
    sd_lo = np.where(np.isfinite(lo) & (lo > 0), np.maximum(np.log(t) - np.log(np.where(lo > 0, lo, 1)), 0) / _Z95, 0.0)
    sd_hi = np.where(np.isfinite(hi), np.maximum(np.log(np.where(np.isfinite(hi), hi, 1)) - np.log(t), 0) / _Z95, sd_lo)
    rng = np.random.default_rng(seed)
    m = y.size
    idx = rng.integers(0, m, size=(int(n_boot), m)) if m > 1 else np.zeros((int(n_boot), 1), dtype=int)
    z = rng.standard_normal(idx.shape)
    boot = (y[idx] + np.where(z < 0, sd_lo[idx], sd_hi[idx]) * z).mean(1)
    low, high = (float(np.exp(q)) for q in np.percentile(boot, [2.5, 97.5])) if n_boot > 0 else (k, k)
    return KappaEstimate(k, min(low, k), max(high, k), n_a.tolist(), t.tolist(), lo.tolist(), hi.tolist(),
                         f"geometric mean of tau_mem/n over {m} pilot(s); 95% bootstrap over pilots and their "
                         f"tau_mem intervals ({int(n_boot)} replicates)")


@dataclass(frozen=True)
class EarlyStopping:
    """Stop a run on n samples at ``alpha · κ · n`` steps (FSW25); κ from :func:`estimate_kappa`."""

    kappa: KappaEstimate
    alpha: float = DEFAULT_ALPHA

    def __post_init__(self):
        if not 0 < self.alpha:
            raise DiffmemError(f"EarlyStopping: alpha must be positive (FSW25: < 1), got {self.alpha}")

    @classmethod
    def from_pilots(cls, source, alpha: float = DEFAULT_ALPHA, definitions=None, n_boot: int = 2000,
                    seed: int = 0) -> "EarlyStopping":
        """κ from pilot run directories (a sweep, a run, or a list): their τ_mem (:func:`diffmem.analysis.analyse`
        with ``definitions``, from f_mem; for token runs f_mem is the exact-copy fraction)."""
        from .analysis import TauDefinitions, analyse

        a = analyse(source, definitions or TauDefinitions())
        runs = [r for r in a.runs if r.tau_mem is not None]
        return cls(estimate_kappa([r.n for r in runs], [r.tau_mem.value if r.tau_mem.reached else None for r in runs],
                                  [r.tau_mem.low for r in runs], [r.tau_mem.high for r in runs], n_boot, seed),
                   float(alpha))

    def predict_tau_mem(self, n: float) -> dict[str, float]:
        """Predicted memorisation time of a run on ``n`` samples, ``κ n``, with κ's interval, in steps."""
        k = self.kappa
        return {"value": k.kappa * n, "low": k.low * n, "high": k.high * n}

    def stop(self, n: int, batch_size: int | None = None) -> dict[str, Any]:
        """When to stop a run on ``n`` samples: ``steps = alpha κ n`` (and ``steps_ci`` from κ's interval);
        ``epochs = steps · batch_size / n`` when the batch is given."""
        from .timescales import stopping_time

        st = stopping_time(self.kappa.kappa, n, self.alpha, batch_size)
        ci = [self.alpha * self.kappa.low * n, self.alpha * self.kappa.high * n]
        ep_ci = None if batch_size is None else [s * batch_size / n for s in ci]
        return {"n": int(n), "alpha": self.alpha, "kappa": self.kappa.kappa, "steps": st["steps"],
                "steps_ci": ci, "epochs": st["epochs"], "epochs_ci": ep_ci,
                "tau_mem_predicted": self.predict_tau_mem(n)}

    def rule(self, n: int):
        """The stopping rule for a run on ``n`` samples, as the monitor's pluggable :class:`~diffmem.monitor.StopAtTime`."""
        from .monitor import StopAtTime

        return StopAtTime(self.kappa.kappa, int(n), self.alpha)

    def callback(self, n: int, **monitor_kw):
        """A diffmem callback that stops a run on ``n`` samples at ``alpha κ n`` steps (a
        :class:`~diffmem.monitor.MemorizationMonitor` with :meth:`rule`; ``monitor_kw`` go to the monitor)."""
        from .monitor import MemorizationMonitor

        return MemorizationMonitor(rules=[self.rule(n)], **monitor_kw)
