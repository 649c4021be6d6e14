"""The ``diffmem`` command: thin wrappers over the library (DESIGN principle 5).

Each subcommand parses options, builds a config and calls one library
function.  A user error (:class:`~diffmem.errors.DiffmemError`) prints one line
``diffmem: error: ...`` on stderr and exits with status 2; every input is
checked before anything is written.  ``key=value`` config overrides may come
anywhere on the command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .errors import DiffmemError


# ---------------------------------------------------------------------------
# shared option groups


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", help="named preset (see `diffmem presets`); this or --config is required")
    p.add_argument("--config", help="TOML file of config keys (applied after the preset)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, anywhere on the line, e.g. n=64 steps=5000 model.width=128 optim.lr=0.01")


def _resolve(args):
    from .config import PRESETS, resolve_config

    if args.preset is None and args.config is None:
        raise DiffmemError(f"choose a configuration: --preset {'|'.join(PRESETS)} (digits is the embedded "
                           "default data set) or --config FILE.toml")
    return resolve_config(args.preset, args.config, args.overrides)


def _positive(value: int | float | None, name: str):
    if value is not None and not value > 0:
        raise DiffmemError(f"{name} must be positive, got {value}")
    return value


def _int_list(text: str, name: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DiffmemError(f"{name}: expected a comma-separated list of integers, got {text!r}") from None


def _add_report_args(q) -> None:
    """Options of the timescale definitions (shared by ``report`` and ``sweep``)."""
    q.add_argument("--quality-metric", help="metric for tau_gen, e.g. quality/fd_pixel (default: fid, fd_feat, kid, "
                   "fd_pixel, the first present)")
    q.add_argument("--rel-tol", type=float, default=0.1, help="tau_gen tolerance (default 0.1)")
    q.add_argument("--tau-gen-reference", default="best", choices=["best", "improvement", "common"],
                   help="tau_gen: within rel-tol of the run's best | (1-rel-tol) of its improvement | "
                        "the level every run of a width attains")
    q.add_argument("--tau-mem-method", default="significant", choices=["significant", "level"],
                   help="tau_mem: first significant f_mem > 0 | f_mem/f_mem(end) crosses 0.5")
    q.add_argument("--tau-mem-interval", default="wilson", choices=["wilson", "bootstrap"],
                   help="lower bound of the significant rule: Wilson 95%% (default; honest at f_mem = 0) | "
                        "bootstrap percentile (the rule before issue #12)")
    q.add_argument("--phase-multiples", default="1,3,8",
                   help="phase-diagram times as multiples of tau_gen (default 1,3,8 as BUBM25; the demo uses 10,30,100)")


def _add_gallery_args(q) -> None:
    q.add_argument("--gallery-steps", default="last", help="checkpoints of report.html's nearest-neighbour gallery: "
                   "comma-separated last, tau_mem, tau_gen, step numbers, or none (default last)")
    q.add_argument("--gallery-k", type=int, default=8, help="samples per gallery (default 8)")


def _definitions(args):
    from .analysis import TauDefinitions
    from .theory.cli import _floats

    return TauDefinitions(quality_metric=args.quality_metric, rel_tol=args.rel_tol,
                          tau_gen_reference=args.tau_gen_reference, tau_mem_method=args.tau_mem_method,
                          tau_mem_interval=args.tau_mem_interval,
                          phase_multiples=tuple(_floats(args.phase_multiples, "--phase-multiples")))


def _print_summary(summary: dict, as_json: bool, where: Path | None = None) -> None:
    from .report import summary_table

    if as_json:
        print(json.dumps(summary, indent=2))
        return
    print(summary_table(summary))
    if where is not None:
        print(f"figures and summary.json in {where}")


# ---------------------------------------------------------------------------
# commands


def cmd_presets(args) -> int:
    from .config import PRESETS, preset_dict

    for name in PRESETS:
        print(f"{name}: {json.dumps(preset_dict(name, args.full))}")
    return 0


def cmd_train(args) -> int:
    from .train import train

    cfg = _resolve(args)
    run = train(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress)
    status = run.read_status()
    if status.get("steps") == 0:
        print(f"{run.path}  (closed form: no training; evaluated at step 0)")
        return 0
    how = "finished" if status.get("finished") else f"stopped at step {status.get('step')}"
    print(f"{run.path}  ({how}; {status.get('train_seconds', 0):.1f} s of training in total)")
    return 0


def cmd_sample(args) -> int:
    from .evaluate import sample_run
    from .export import check_output, to_space, write_rows
    from .rundir import Run

    out, kind, space = check_output(args.out, args.space, "model", Run(args.run).data_shape())
    x, info = sample_run(args.run, args.step, n_samples=args.n_samples, seed=args.seed, sampler=args.sampler,
                         steps=args.steps, device=args.device)
    write_rows(out, kind, to_space(Run(args.run), x, space))
    print(f"wrote {len(x)} samples ({info['sampler']}, {info['steps']} steps, seeds {info['seeds'][0]}.."
          f"{info['seeds'][1]}, step {info['step']}) of shape {tuple(x.shape[1:])} in {space} space to {out}"
          + (" (PNG images)" if kind == "png" else ""))
    return 0


def cmd_export_train(args) -> int:
    from .export import check_output, run_training_set, write_rows
    from .rundir import Run

    out, kind, space = check_output(args.out, args.space, "data", Run(args.run).data_shape())
    x, info = run_training_set(args.run, space)
    write_rows(out, kind, x)
    print(f"wrote the {len(x)} training images of {args.run} (data {info['data']!r}, n = {info['n']}, subset_seed "
          f"{info['subset_seed']}) in {space} space to {out}" + (" (PNG images)" if kind == "png" else ""))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run

    def show(step, recs):
        if args.json:
            return
        for r in recs:
            at = "".join(f" {k}={r[k]:g}" for k in ("t", "sigma") if r.get(k) is not None)
            err = "" if r.get("error") is None else f" ± {r['error']:.3g}"
            print(f"step {r['step']:>8d}  {r['metric'] + at:<40s} {r['value']:.6g}{err}")

    if args.n_samples is not None:
        args.overrides.append(f"eval.n_samples={args.n_samples}")
    recs = evaluate_run(args.run, steps=args.step or None, overrides=args.overrides, out=args.out,
                        device=args.device, on_records=show)
    if args.json:
        print(json.dumps(recs))
    return 0


def cmd_sweep(args) -> int:
    from .report import make_report
    from .report_html import parse_gallery_steps
    from .sweep import CLUSTER_KEYS, load_cluster_options, plan_sweep, run_sweep, sweep_failures

    defs, steps = _definitions(args), parse_gallery_steps(args.gallery_steps)  # validated before any training
    _positive(args.steps_per_n, "--steps-per-n")
    _positive(args.workers, "--workers")
    _positive(args.gallery_k, "--gallery-k")
    slurm = load_cluster_options(args.cluster_config, {k: getattr(args, f"slurm_{k}") for k in CLUSTER_KEYS})
    if slurm is not None and args.executor != "submitit":
        raise DiffmemError("--slurm-* options and --cluster-config need --executor submitit")
    base = _resolve(args)
    steps_for = None if args.steps_per_n is None else (lambda n, w: max(1, round(args.steps_per_n * n)))
    plan = plan_sweep(base, _int_list(args.n, "--n"), _int_list(args.width, "--width") if args.width else None,
                      _int_list(args.seeds, "--seeds") if args.seeds else None, steps_for=steps_for)
    out = run_sweep(plan, args.out, workers=args.workers, executor=args.executor, slurm=slurm)
    failed = sweep_failures(out)
    if len(failed) < len(plan):
        summary = make_report(out, Path(out) / "report", defs, gallery_steps=steps, gallery_k=args.gallery_k)
        _print_summary(summary, args.json, Path(out) / "report")
    for f in failed:
        print(f"diffmem: run {f['dir']} failed (attempt {f['attempts']}): {f['error']}", file=sys.stderr)
    if failed:
        print(f"diffmem: {len(failed)} of {len(plan)} runs failed (recorded in {Path(out) / 'sweep.json'}); "
              "re-run the same command to retry them", file=sys.stderr)
    return 1 if failed else 0


def cmd_report(args) -> int:
    from .report import make_report
    from .report_html import parse_gallery_steps
    from .rundir import Run, list_runs

    defs = _definitions(args)
    steps = parse_gallery_steps(args.gallery_steps)
    _positive(args.gallery_k, "--gallery-k")
    if (args.sweep is None) == (args.run is None):
        raise DiffmemError("give --sweep SWEEP or --run RUN (one of them)")
    if args.sweep is not None:
        list_runs(args.sweep)  # a sweep, not a run directory; every listed run present
    elif not Run(args.run).exists():
        raise DiffmemError(f"--run {args.run} is not a diffmem run directory (no config.json)")
    src = args.sweep or args.run
    out = Path(args.out) if args.out else Path(src) / "report"
    summary = make_report(src, out, defs, gallery_steps=steps, gallery_k=args.gallery_k)
    _print_summary(summary, args.json, out)
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    _positive(args.workers, "--workers")
    summary = run_demo(args.out, quick=args.quick, workers=args.workers)
    keys = ("n", "tau_gen", "tau_mem", "slope", "slope_ci")
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=2))
    print(f"figures and summary.json in {args.out}")
    return 0


# ---------------------------------------------------------------------------
# parser


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
    q.add_argument("--out", required=True, help="run directory (resumed if it holds this run; a larger steps= "
                   "extends a finished run)")
    q.add_argument("--no-resume", action="store_true", help="refuse to continue an existing run")
    q.add_argument("--no-progress", action="store_true", help="no progress bar")
    q.set_defaults(func=cmd_train)

    q = sub.add_parser("sample", help="generate samples from a run's checkpoint (default: the run's own "
                       "evaluation settings, so it reproduces RUN/samples)")
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("--step", type=int, help="checkpoint step (default: last)")
    q.add_argument("--n-samples", type=int, help="number of samples (default: the run's eval.n_samples)")
    q.add_argument("--seed", type=int, help="first per-sample seed (default: the run's eval.sample_seed)")
    q.add_argument("--sampler", help="heun, ddim, ddpm, em (default: the run's eval.sampler)")
    q.add_argument("--steps", type=int, help="sampler steps (default: the run's eval.sampler_steps for its own "
                   "sampler, else the sampler's default)")
    q.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    q.add_argument("--space", choices=["model", "data"],
                   help="model: centred as in training, as RUN/samples (default for .npy); data: uncentred [-1, 1], "
                        "the space of image files (always for PNGs)")
    q.add_argument("--out", required=True, help="output .npy file, or a new folder for PNG images (data space)")
    q.set_defaults(func=cmd_sample)

    q = sub.add_parser("export-train", help="write a run's training subset (data space by default; .npy or PNGs)")
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("--space", choices=["data", "model"], help="data (default): uncentred [-1, 1], as image files; "
                   "model: centred as in training")
    q.add_argument("--out", required=True, help="output .npy file, or a new folder for PNG images (data space)")
    q.set_defaults(func=cmd_export_train)

    q = sub.add_parser("evaluate", help="re-evaluate saved checkpoints of a run")
    q.add_argument("--run", required=True, help="run directory")
    q.add_argument("--step", type=int, action="append", help="checkpoint step (repeatable; default: all)")
    q.add_argument("--n-samples", type=int, help="shorthand for eval.n_samples=N")
    q.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    q.add_argument("--out", help="JSON-lines file for the records, appended after each checkpoint "
                   "(default RUN/evaluations.jsonl)")
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
    q.add_argument("--executor", default="local", choices=["local", "serial", "submitit"],
                   help="local (process pool, default), serial, or submitit (SLURM job array; --slurm-cluster local: "
                        "the same array as local subprocesses)")
    from .sweep import CLUSTER_KEYS

    for key, (_, typ, text) in CLUSTER_KEYS.items():
        q.add_argument(f"--slurm-{key.replace('_', '-')}", dest=f"slurm_{key}", type=typ, help=text)
    q.add_argument("--cluster-config", help="TOML file of cluster options (a [slurm] table: partition, time, gpus, "
                   "mem, cpus, ...); --slurm-* flags override it")
    q.add_argument("--out", required=True, help="sweep directory: a run directory per (width, n, seed), sweep.json "
                   "and report/ (re-running resumes)")
    q.add_argument("--json", action="store_true", help="print the report summary as JSON")
    _add_report_args(q)
    _add_gallery_args(q)
    q.set_defaults(func=cmd_sweep)

    q = sub.add_parser("report", help="timescales, power-law fit, figures and one self-contained report.html of a "
                       "sweep or a run")
    q.add_argument("--sweep", help="sweep directory")
    q.add_argument("--run", help="one run directory (instead of --sweep)")
    q.add_argument("--out", help="output folder (default SWEEP/report or RUN/report)")
    _add_gallery_args(q)
    q.add_argument("--json", action="store_true", help="print the whole summary as JSON (default: a short table)")
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
    from .closedform_cli import register as register_closedform

    register_closedform(sub)
    from .toy_cli import register as register_toy

    register_toy(sub)
    from .grammar_cli import register as register_grammar

    register_grammar(sub)
    return p


def _parse(parser: argparse.ArgumentParser, argv):
    """Parse, accepting ``key=value`` overrides anywhere (also after options) for commands that take them."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in x and not x.startswith("-") for x in extra):
            args.overrides = list(args.overrides or []) + extra
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _plain(message: str) -> str:
    """One line, numbers as a user wrote them (``np.float64(-5.0)`` -> ``-5.0``)."""
    import re

    message = re.sub(r"np\.(?:float|int|uint)\d*\(([^()]*)\)", r"\1", message)
    return " ".join(message.split())


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = _parse(parser, argv)
    try:
        return int(args.func(args) or 0)
    except DiffmemError as e:
        print(f"diffmem: error: {_plain(str(e))}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `diffmem presets --full | head`
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during a sweep (diffmem.sweep.SweepTerminated)
        print(f"diffmem: {e}" if str(e) else "diffmem: interrupted", file=sys.stderr)
        return 143 if type(e).__name__ == "SweepTerminated" else 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
