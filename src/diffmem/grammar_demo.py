"""The FSW25 demo on the random hierarchy model: ``diffmem grammar demo --out DIR`` (issue #11, SPEC §3).

Trains ``--preset rhm`` (masked diffusion, 2-block transformer) on nested
subsets n ∈ {32, 64, 128, 256} (8×) of a grammar, each for ``STEPS_PER_N · n``
steps, plus the second half of the two-halves test (n = 32 on the next 32
points of the same shuffle, ``subset_offset=32``; the first half is the n = 32
run itself), then writes ``DIR/summary.json`` and the figures of
:func:`diffmem.report.make_report` and :func:`diffmem.report_grammar.render_grammar`.

The settings, chosen before running (not tuned to the targets):

* Grammar ``v=6, m=3, s=2, L=3, nc=6`` (13 122 distinct sequences of 8
  tokens) rather than the preset's ``v=8, m=4`` (131 072): learning level ℓ
  needs of order ``v·m^(ℓ+1)`` data (the root ``nc·m^L``, SPEC §3): 162 here,
  below the largest n = 256, against 512 for the preset's grammar, where the
  upper levels could not be learned by any run of the demo.
* A fixed batch of 32 (``batch_max=32`` = the smallest n): every point is
  visited once per n/32 steps, so τ_mem ∝ n (as for the digits demo).
* ``80 · n`` steps: the n = 32 pilot on the preset's grammar had
  κ ≈ 30 steps per sample, so every run reaches ≈ 2.7 κ n, the same range of
  τ/n for all n.
* 256 samples per checkpoint (32 reveal steps), 8 checkpoints per decade, the
  loss probe on 256 sequences with 2 masks each: what the measured 3000-step
  pilots used (≈ 1 minute per run at n = 32 on one thread).
* Runs ordered largest n first so that the two workers finish together.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
from pathlib import Path

from .config import resolve_config
from .fileio import atomic_write_json
from .sweep import plan_sweep, run_sweep

__all__ = ["run_grammar_demo", "DEMO_NS", "STEPS_PER_N", "GRAMMAR"]

DEMO_NS = [32, 64, 128, 256]
STEPS_PER_N = 80
GRAMMAR = "rhm:v=6,m=3,s=2,L=3,nc=6,seed=0"
OVERRIDES = ["batch_max=32", "eval.n_samples=256", "checkpoints_per_decade=8", "eval.loss_draws=2",
             "eval.n_loss=256", "threads=1"]


def demo_plan(quick: bool = False):
    """(main sweep plan, two-halves plan): the configs of the demo."""
    ns, per_n = ([16, 32, 64, 128], 10) if quick else (DEMO_NS, STEPS_PER_N)
    over = [f"data={GRAMMAR}"] + OVERRIDES + (["eval.n_samples=64", "eval.n_loss=64"] if quick else [])
    base = resolve_config("rhm", None, over)
    plan = plan_sweep(base, sorted(ns, reverse=True), steps_for=lambda n, w: per_n * n)
    half = min(ns)
    first = next(cfg for _, cfg in plan if cfg.n == half)
    second = dataclasses.replace(first, subset_offset=half).validate()
    return plan, [("half_b", second)], over, ns, per_n


def run_grammar_demo(out: str | Path, quick: bool = False, workers: int = 2, progress: bool = True) -> dict:
    """Run the grammar demo into ``out`` (finished runs are skipped) and return the summary."""
    out = Path(out)
    plan, halves, over, ns, per_n = demo_plan(quick)
    # the second half in its own process beside the main sweep (its own sweep directory: the report's runs
    # are the nested n of out/runs only)
    other = multiprocessing.get_context("spawn").Process(target=run_sweep, args=(halves, out / "halves"),
                                                           kwargs={"workers": 1, "progress": False})
    other.start()
    try:
        run_sweep(plan, out / "runs", workers=workers, progress=progress)
    finally:
        other.join()
    if other.exitcode != 0:
        run_sweep(halves, out / "halves", workers=1, progress=progress)  # its error, in this process
    from .grammar_summary import grammar_summary

    summary = grammar_summary(out, plan, halves)
    summary["protocol"] = {"preset": "rhm", "data": GRAMMAR, "n": ns, "steps": {str(n): per_n * n for n in ns},
                           "overrides": over, "two_halves": {"n": min(ns), "subset_offset": [0, min(ns)]}}
    atomic_write_json(out / "summary.json", summary)
    return summary
