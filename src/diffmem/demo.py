"""The embedded-default experiment: τ_gen independent of n, τ_mem ∝ n, on the digits.

``diffmem demo --out DIR`` trains the ``digits`` preset on nested subsets
n ∈ {16, 32, 64, 128} of scikit-learn's 8×8 digits (d = 64), each for
``640·n`` steps (so that every run covers the same range of τ/n), evaluates on
the log-spaced schedule, then writes ``DIR/summary.json`` and the figures of
:func:`diffmem.report.make_report`.

The regime (what was learned making it appear on a 2-core CPU; see README):

* EDM preconditioning (log-normal σ, Heun sampler).  The BUBM25 ε-prediction
  on the 1000-step DDPM schedule (σ up to 157 for data of scale 0.5) needs
  ~5000 steps before samples are sensible, so τ_gen and τ_mem overlap at
  this scale.
* SGD, lr 0.01, momentum 0.95 (BUBM25), MLP of width 256 (≈0.46 M params,
  p ≫ n).
* A fixed batch of 16 (≤ the smallest n).  With full-batch steps
  (batch = n) the onset of memorisation grew only like n^0.5 over n = 16…64
  at this scale; with a fixed batch every training point is visited once
  per n/16 steps and the onset grows ∝ n.
"""

from __future__ import annotations

import json
from pathlib import Path

from .config import resolve_config
from .report import make_report
from .sweep import plan_sweep, run_sweep
from .train import atomic_write_text

__all__ = ["run_demo", "DEMO_NS", "STEPS_PER_N"]

DEMO_NS = [16, 32, 64, 128]
STEPS_PER_N = 640


def run_demo(out: str | Path, quick: bool = False, workers: int = 2, progress: bool = True) -> dict:
    """Run the demo sweep into ``out`` and return the summary (also in ``out/summary.json``)."""
    out = Path(out)
    if quick:
        ns, per_n, over = [16, 32], 60, ["eval.n_samples=128", "eval.quality=fd_pixel"]
    else:
        ns, per_n, over = DEMO_NS, STEPS_PER_N, []
    base = resolve_config("digits", None, over)
    plan = plan_sweep(base, ns, steps_for=lambda n, w: per_n * n)
    run_sweep(plan, out / "runs", workers=workers, progress=progress)
    summary = make_report(out / "runs", out)
    summary["protocol"] = {"preset": "digits", "n": ns, "steps": {str(n): per_n * n for n in ns},
                           "overrides": over}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=float))
    return summary
