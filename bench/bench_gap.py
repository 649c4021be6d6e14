"""Cost of the KK26 measurements at one checkpoint of the demo (issue 10).

Builds the demo's evaluator (digits preset, ``eval.n_samples=1000``) for the
demo's largest run (n = 256) on a freshly initialised network (evaluation
cost does not depend on the weights) and times, from one run:

* the checkpoint's other evaluations (sampling 1000 samples with Heun 18
  steps, f_mem, the quality metrics, the loss probes): ``eval.gap_sigmas=0
  eval.trajectory=0 eval.fd_gap=false``;
* the per-σ gap (64 σ × ``eval.n_gap`` train + held-out images, all σ batched
  as rows) and its ratio to the above (goal ≤ 20 %);
* the gap computed the naive way -- one forward pass per (σ, image set) --
  and the batched path's speed-up over it;
* the trajectory analysis and the sample-level FD gap.

    python bench/bench_gap.py [--n 256] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from diffmem.config import resolve_config
from diffmem.data import load_dataset
from diffmem.evaluate import Evaluator
from diffmem.metrics.gap import denoising_errors
from diffmem.models import build_model


def best(fn, reps):
    t = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t = min(t, time.perf_counter() - t0)
    return t


def naive_gap(den, sets, sigmas):
    out = {}
    with torch.no_grad():
        for k, (y, nz) in sets.items():
            errs = []
            for s in sigmas:
                sv = torch.full((len(y),), float(s))
                errs.append(float((den(y + float(s) * nz, sv) - y).pow(2).reshape(len(y), -1).sum(1).mean()))
            out[k] = errs
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    over = ["eval.n_samples=1000", f"n={args.n}"]
    cfg_all = resolve_config("digits", None, over)
    cfg_base = resolve_config("digits", None, over + ["eval.gap_sigmas=0", "eval.trajectory=0", "eval.fd_gap=false"])
    ds = load_dataset(cfg_all.data)
    train_set = ds.subset(cfg_all.n, cfg_all.subset_seed)
    den, _ = build_model(cfg_all.model, ds.shape, ds, train_set)
    den.eval()
    import tempfile

    from diffmem.rundir import Run

    with tempfile.TemporaryDirectory() as tmp:
        run = Run(tmp)
        ev_base = Evaluator(cfg_base, ds, train_set, run, "cpu", save_samples=False)
        ev_all = Evaluator(cfg_all, ds, train_set, run, "cpu", save_samples=False)
        ev_base(den, 0)  # warm-up (feature-net statistics, caches)
        ev_all(den, 0)
        t_base = best(lambda: ev_base(den, 0), args.reps)
        t_all = best(lambda: ev_all(den, 0), args.reps)
        sigmas, sets = ev_all.gap
        t_gap = best(lambda: {k: denoising_errors(den, y, nz, sigmas, batch_rows=4096) for k, (y, nz) in sets.items()},
                     args.reps)
        t_naive = best(lambda: naive_gap(den, sets, sigmas), args.reps)
    rows = sum(len(y) for y, _ in sets.values()) * len(sigmas)
    res = {
        "n": args.n, "gap_sigmas": len(sigmas), "gap_rows": rows,
        "other_evaluations_s": round(t_base, 3),
        "gap_s": round(t_gap, 3),
        "gap_fraction_of_other": round(t_gap / t_base, 3),
        "naive_gap_s": round(t_naive, 3),
        "batched_vs_naive": round(t_naive / t_gap, 2),
        "all_kk26_extras_s": round(t_all - t_base, 3),
        "all_kk26_extras_fraction": round((t_all - t_base) / t_base, 3),
    }
    print(f"other evaluations {t_base:.2f} s; per-sigma gap ({len(sigmas)} sigma x {rows // len(sigmas)} images) "
          f"{t_gap:.3f} s = {100 * t_gap / t_base:.1f} % of them (goal <= 20 %); naive per-sigma loop {t_naive:.3f} s "
          f"-> batched {t_naive / t_gap:.1f}x; gap + trajectories + FD gap together {t_all - t_base:.2f} s "
          f"({100 * (t_all - t_base) / t_base:.1f} %)")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
