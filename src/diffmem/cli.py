"""The ``diffmem`` command: thin wrappers over the library (DESIGN principle 5).

Each subcommand parses options, builds a config and calls one library
function.  A user error (:class:`~diffmem.errors.DiffmemError`) prints one line
``diffmem: error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import DiffmemError


def _add_config_args(p: argparse.ArgumentParser, default_preset: str | None = "digits") -> None:
    p.add_argument("--preset", default=default_preset, help="named preset (see `diffmem presets`)")
    p.add_argument("--config", help="TOML file of config keys (applied after the preset)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. n=64 steps=5000 model.width=128 optim.lr=0.01")


def _resolve(args):
    from .config import resolve_config

    return resolve_config(args.preset, args.config, args.overrides)


def cmd_presets(args) -> int:
    from .config import PRESETS, preset_dict

    for name in PRESETS:
        print(f"{name}: {json.dumps(preset_dict(name, args.full))}")
    return 0


def cmd_train(args) -> int:
    from .train import train

    cfg = _resolve(args)
    out = train(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress)
    print(out.path)
    return 0


def cmd_sample(args) -> int:
    import numpy as np

    from .rundir import Run
    from .samplers import generate

    den, cfg = Run(args.run).load_denoiser(args.step, device=args.device)
    shape = Run(args.run).data_shape()
    if args.n_samples < 1:
        raise DiffmemError(f"--n-samples must be positive, got {args.n_samples}")
    seeds = list(range(args.seed, args.seed + args.n_samples))
    params = {} if args.steps is None else {"steps": args.steps}
    x = generate(den, shape, seeds, sampler=args.sampler, device=args.device, **params)
    out = Path(args.out)
    if out.suffix != ".npy":
        raise DiffmemError(f"--out must be a .npy file, got {out}")
    tmp = out.with_name(out.stem + ".tmp.npy")
    np.save(tmp, x.numpy())
    tmp.replace(out)
    print(f"wrote {len(x)} samples of shape {shape} to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run

    recs = evaluate_run(args.run, steps=args.step or None, overrides=args.overrides, out=args.out)
    if args.json:
        print(json.dumps(recs))
    else:
        for r in recs:
            print(f"step {r['step']:>8d}  {r['metric']:<24s} {r['value']:.6g}")
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DiffmemError(f"expected a comma-separated list of integers, got {text!r}") from None


def _add_report_args(q) -> None:
    """Options of the analysis (shared by ``report`` and ``sweep``)."""
    q.add_argument("--quality-metric", help="metric for tau_gen, e.g. quality/fd_pixel (default: fid, fd_feat, kid, "
                   "fd_pixel, the first present)")
    q.add_argument("--rel-tol", type=float, default=0.1, help="tau_gen tolerance (default 0.1)")
    q.add_argument("--tau-gen-reference", default="best", choices=["best", "improvement", "common"],
                   help="tau_gen: within rel-tol of the run's best | (1-rel-tol) of its improvement | "
                        "the level every run of a width attains")
    q.add_argument("--tau-mem-method", default="significant", choices=["significant", "level"],
                   help="tau_mem: first significant f_mem > 0 | f_mem/f_mem(end) crosses 0.5")
    q.add_argument("--phase-multiples", default="1,3,8",
                   help="phase-diagram times as multiples of tau_gen (default 1,3,8 as BUBM25; the demo uses 10,30,100)")


def _report_kwargs(args) -> dict:
    from .theory.cli import _floats

    return dict(quality_metric=args.quality_metric, rel_tol=args.rel_tol, tau_gen_reference=args.tau_gen_reference,
                tau_mem_method=args.tau_mem_method,
                phase_multiples=_floats(args.phase_multiples, "--phase-multiples"))


def cmd_sweep(args) -> int:
    from .report import make_report
    from .sweep import plan_sweep, run_sweep

    report_kwargs = _report_kwargs(args)  # validated before any training
    base = _resolve(args)
    steps_for = None
    if args.steps_per_n is not None:
        if not args.steps_per_n > 0:
            raise DiffmemError(f"--steps-per-n must be positive, got {args.steps_per_n}")
        steps_for = lambda n, w: max(1, round(args.steps_per_n * n))  # noqa: E731
    plan = plan_sweep(base, _int_list(args.n), _int_list(args.width) if args.width else None,
                      _int_list(args.seeds) if args.seeds else None, steps_for=steps_for)
    out = run_sweep(plan, args.out, workers=args.workers, executor=args.executor)
    summary = make_report(out, Path(out) / "report", **report_kwargs)
    print(json.dumps(summary, indent=2) if args.json else f"sweep done: {out}  (report in {Path(out) / 'report'})")
    return 0


def cmd_report(args) -> int:
    from .report import make_report

    summary = make_report(args.sweep, args.out or Path(args.sweep) / "report", **_report_kwargs(args))
    print(json.dumps(summary, indent=2))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    summary = run_demo(args.out, quick=args.quick, workers=args.workers)
    keys = ("n", "tau_gen", "tau_mem", "slope", "slope_ci")
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"figures and summary.json in {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffmem", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"diffmem {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    q = sub.add_parser("presets", help="list the named presets")
    q.add_argument("--full", action="store_true", help="print the fully resolved configs")
    q.set_defaults(func=cmd_presets)

    q = sub.add_parser("train", help="train one model, evaluating on a log-spaced checkpoint schedule")
    _add_config_args(q)
    q.add_argument("--out", required=True, help="run directory (resumed if it already holds this run)")
    q.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser("sample", help="generate samples from a run's checkpoint")
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("--step", type=int, help="checkpoint step (default: last)")
    q.add_argument("--n-samples", type=int, default=1000, help="number of samples (default 1000)")
    q.add_argument("--seed", type=int, default=0, help="first per-sample seed")
    q.add_argument("--sampler", default="ddim", help="ddim, ddpm, em, heun")
    q.add_argument("--steps", type=int, help="sampler steps")
    q.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    q.add_argument("--out", required=True, help="output .npy file")
    q.set_defaults(func=cmd_sample)

    q = sub.add_parser("evaluate", help="re-evaluate saved checkpoints of a run")
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("--step", type=int, action="append", help="checkpoint step (repeatable; default: all)")
    q.add_argument("--out", help="JSON-lines file for the records (default RUN/evaluations.jsonl)")
    q.add_argument("--json", action="store_true", help="print the records as one JSON list")
    q.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="eval overrides, e.g. eval.n_samples=1000")
    q.set_defaults(func=cmd_evaluate)

    q = sub.add_parser("sweep", help="train over n (and width, seeds), then report")
    _add_config_args(q)
    q.add_argument("--n", required=True, help="comma-separated training-set sizes")
    q.add_argument("--width", help="comma-separated model widths")
    q.add_argument("--seeds", help="comma-separated seeds")
    q.add_argument("--steps-per-n", type=float,
                   help="train each run for this many steps per training sample (steps = K n; the demo uses 480); "
                        "default: the config's steps for every n")
    q.add_argument("--workers", type=int, default=1, help="runs in parallel (local executor; default 1)")
    q.add_argument("--executor", default="local", help="local, serial or submitit (SLURM)")
    q.add_argument("--out", required=True, help="sweep directory: a run directory per (width, n, seed), sweep.json and report/ (re-running resumes)")
    q.add_argument("--json", action="store_true", help="print the report summary as JSON")
    _add_report_args(q)
    q.set_defaults(func=cmd_sweep)

    q = sub.add_parser("report", help="timescales, power-law fit and figures of a sweep directory")
    q.add_argument("--sweep", required=True, help="sweep directory")
    q.add_argument("--out", help="output folder (default SWEEP/report)")
    _add_report_args(q)
    q.set_defaults(func=cmd_report)

    from .audit import add_audit_parser

    add_audit_parser(sub)

    q = sub.add_parser("demo", help="the generalisation -> memorisation experiment on the embedded digits")
    q.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    q.add_argument("--quick", action="store_true", help="a 1-2 minute smoke version (fewer steps, smaller n)")
    q.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    q.set_defaults(func=cmd_demo)

    from .theory.cli import register

    register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DiffmemError as e:
        print(f"diffmem: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("diffmem: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
