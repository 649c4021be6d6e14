"""``diffmem toy gap | table | figures | score1d``: KK26's error-prone toy model and BUBM25's 1-D score picture.

Thin wrappers over :mod:`diffmem.kk26_toy` and :mod:`diffmem.score1d`.
``gap --json`` is a contract other tools rely on: one JSON object with at
least ``sigma`` and ``gap`` (lists over the 64 log-spaced σ of [0.002, 80]),
``peak_gap`` and ``peak_sigma``.  Every option is checked before any work or
write; a bad one is a one-line error (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["register"]


def _floats(text: str, name: str) -> list[float]:
    from .errors import DiffmemError

    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DiffmemError(f"{name}: expected a comma-separated list of numbers, got {text!r}") from None


def _ints(text: str, name: str) -> list[int]:
    from .errors import DiffmemError

    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DiffmemError(f"{name}: expected a comma-separated list of integers, got {text!r}") from None


def _out_dir(path: str) -> Path:
    from .errors import DiffmemError

    d = Path(path)
    if d.exists() and not d.is_dir():
        raise DiffmemError(f"--out {d} is a file, not a folder")
    return d


def cmd_gap(args) -> int:
    from .fileio import atomic_write_json, save_figure
    from .kk26_toy import check_toy_args, plot_gap, toy_gap

    check_toy_args(args.n_points, args.delta, args.draws, args.radius, args.seed)
    out = _out_dir(args.out) if args.out else None
    res = toy_gap(args.n_points, args.delta, args.draws, args.seed, args.radius)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "gap.json", res)
        save_figure(plot_gap([res]), out / "gap.png", dpi=120)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"KK26 toy, N = {res['n_points']} ({res['n_train']} train, {res['n_val']} validation), "
              f"delta = {res['delta']:g}, {res['draws']} draws, seed {res['seed']}: peak relative gap "
              f"{res['peak_gap']:.4f} ± {res['peak_gap_se']:.4f} at sigma = {res['peak_sigma']:.4g} "
              f"(grid point {res['peak_index']} of {len(res['sigma'])})")
    return 0


def cmd_table(args) -> int:
    from .fileio import atomic_write_json
    from .kk26_toy import gap_table

    deltas, ns = _floats(args.deltas, "--deltas"), _ints(args.n_points, "--n-points")
    out = _out_dir(args.out) if args.out else None
    tab = gap_table(deltas, ns, args.draws, args.seed, args.radius)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "table.json", tab)
    if args.json:
        print(json.dumps(tab))
        return 0
    print(f"KK26 toy: peak relative gap (± standard error) and its sigma; {tab['draws']} draws, seed {tab['seed']}")
    print(f"  {'N':>4} {'delta':>6} {'peak gap':>10} {'± se':>8} {'sigma':>8}")
    for r in tab["rows"]:
        print(f"  {r['n_points']:>4} {r['delta']:>6g} {r['peak_gap']:>10.4f} {r['peak_gap_se']:>8.4f} "
              f"{r['peak_sigma']:>8.4g}")
    return 0


def cmd_figures(args) -> int:
    from .kk26_toy import check_toy_args, write_figures

    check_toy_args(args.n_points, args.delta, args.draws, args.radius, args.seed)
    s = write_figures(_out_dir(args.out), args.n_points, args.delta, args.draws, args.samples, args.seed,
                      args.radius)
    if args.json:
        print(json.dumps(s))
        return 0
    for g in s["gaps"]:
        print(f"delta = {g['delta']:g}: peak gap {g['peak_gap']:.4f} ± {g['peak_gap_se']:.4f} at sigma = "
              f"{g['peak_sigma']:.4g}")
    for st in s["samples"]:
        print(f"samples, delta = {st['delta']:g}: mean distance to the nearest training point "
              f"{st['mean_dist_train']:.3f}, nearer a validation point {st['frac_nearer_val']:.3f}")
    print(f"gap.png, flow.png, samples.png, figures.json in {args.out}")
    return 0


def cmd_score1d(args) -> int:
    from .score1d import Score1DOptions, score_picture

    opts = Score1DOptions(n=args.n, steps=args.steps, width=args.width, lr=args.lr, t=_floats(args.t, "--t"),
                          seed=args.seed, data=args.data, threads=args.threads, subset_seed=args.subset_seed).check()
    res = score_picture(_out_dir(args.out), opts, progress=not args.json)
    if args.json:
        print(json.dumps(res))
        return 0
    print(f"1-D score, n = {res['n']} points {[round(v, 2) for v in res['train_points']]}, {res['steps']} steps "
          f"({res['train_seconds']:.0f} s); RMS distance under P_t of the learned score to the empirical / "
          "population score:")
    for tm in res["times"]:
        print(f" t = {tm['t']:g} (sigma = {tm['sigma']:.3g}); empirical to population {tm['empirical_to_population']:.3f}")
        for r in tm["rows"]:
            print(f"  step {r['step']:>7}: {r['to_empirical']:.3f} / {r['to_population']:.3f}")
    print(f"figure {res['figure']}")
    return 0


def register(sub) -> None:
    """Add ``toy gap``, ``toy table``, ``toy figures`` and ``toy score1d`` to an argparse subparsers object."""
    p = sub.add_parser("toy", help="KK26's analytic error-prone toy model; BUBM25's 1-D score picture")
    ts = p.add_subparsers(dest="toy_cmd", required=True)

    def common(q, draws=2000):
        q.add_argument("--n-points", type=int, default=20, help="points on the circle, alternating train / "
                       "validation (even, default 20)")
        q.add_argument("--delta", type=float, default=1.6, help="error scale delta ≥ 0 (default 1.6; 0 = optimal)")
        q.add_argument("--draws", type=int, default=draws, help=f"fixed noise draws per point (default {draws})")
        q.add_argument("--seed", type=int, default=0, help="seed of the noise draws / sample latents (default 0)")
        q.add_argument("--radius", type=float, default=10.0, help="circle radius (default 10)")
        q.add_argument("--json", action="store_true", help="print one JSON object")

    q = ts.add_parser("gap", help="relative gap (e_val - e_train)/e_train on 64 log-spaced sigma in [0.002, 80]")
    common(q)
    q.add_argument("--out", help="also write gap.json and gap.png into this folder")
    q.set_defaults(func=cmd_gap)

    q = ts.add_parser("table", help="peak gap over delta x N (default 0.8,1.6,3.2 x 20,40)")
    q.add_argument("--deltas", default="0.8,1.6,3.2", help="comma-separated delta values (default 0.8,1.6,3.2)")
    q.add_argument("--n-points", default="20,40", help="comma-separated N values (default 20,40)")
    q.add_argument("--draws", type=int, default=2000, help="fixed noise draws per point (default 2000)")
    q.add_argument("--seed", type=int, default=0, help="seed of the noise draws (default 0)")
    q.add_argument("--radius", type=float, default=10.0, help="circle radius (default 10)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--out", help="also write table.json into this folder")
    q.set_defaults(func=cmd_table)

    q = ts.add_parser("figures", help="gap, flow-field and sample figures of the toy model")
    common(q)
    q.add_argument("--samples", type=int, default=500, help="samples per delta in samples.png (default 500)")
    q.add_argument("--out", default="runs/kk26_toy", help="output folder (default runs/kk26_toy)")
    q.set_defaults(func=cmd_figures)

    q = ts.add_parser("score1d", help="BUBM25 Fig. 1 (top): learned score over training vs empirical and "
                      "population score, 1-D")
    q.add_argument("--out", default="runs/score1d", help="output folder (default runs/score1d; the run is OUT/run)")
    q.add_argument("--data", default="gmm:d=1,mu=1.5", help="a 1-D data spec with a known distribution "
                   "(default gmm:d=1,mu=1.5)")
    q.add_argument("--n", type=int, default=8, help="training points (default 8)")
    q.add_argument("--subset-seed", type=int, default=2, help="which n points of the pool (default 2: both modes, "
                   "no wide gap)")
    q.add_argument("--steps", type=int, default=30000, help="training steps (default 30000)")
    q.add_argument("--width", type=int, default=64, help="MLP width (default 64)")
    q.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    q.add_argument("--t", default="0.05,0.2", help="OU times of the picture, comma-separated (default 0.05,0.2: "
                   "sigma = 0.32, 0.67)")
    q.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    q.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    q.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    q.set_defaults(func=cmd_score1d)
