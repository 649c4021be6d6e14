"""``diffmem closedform sample | table``: BDKOS25's closed-form scores (thin wrappers over :mod:`diffmem.bdkos25`).

``sample`` integrates the probability-flow ODE of one closed form
(``empirical``, ``tikhonov:c=C``, ``consistency:tau=T``) with RK45 and prints
the fraction of samples within ``--tol`` of a training point (read it against
σ(t_end), printed too); ``table`` prints BDKOS25's reference table and writes
``table.json`` and ``table.png``.  Every option is checked before any file is
written; a bad one is a one-line error (exit 2).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["register"]

_JSON_SKIP = ("samples", "nearest", "distance", "train", "traj", "traj_t", "traj_sigma", "diagnostics")


def _train(spec: str):
    from .data import load_dataset

    return load_dataset(spec).pool


def _public(res: dict) -> dict:
    return {k: v for k, v in res.items() if k not in _JSON_SKIP}


def cmd_sample(args) -> int:
    from .bdkos25 import build_closed_form, check_sampling_args, plot_collapse, sample_closed_form
    from .fileio import atomic_write_json, save_figure

    check_sampling_args(args.schedule, args.n_samples, args.t_end, args.tol, args.rtol, args.atol, args.n_boot)
    train = _train(args.data)
    build_closed_form(args.model, train, args.schedule)
    res = sample_closed_form(train, args.model, args.schedule, args.n_samples, args.seed, args.t_end, args.tol,
                             args.rtol, args.atol, args.n_boot, record=40 if args.out else 0)
    out = _public(res)
    if args.out:
        d = Path(args.out)
        d.mkdir(parents=True, exist_ok=True)
        save_figure(plot_collapse(res), d / "collapse.png", dpi=120)
        atomic_write_json(d / "result.json", out)
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.model} ({args.schedule}): {out['fraction_within']:.3f} of {out['n_samples']} samples within "
              f"{args.tol:g} of a training point, 95% CI [{out['ci95'][0]:.3f}, {out['ci95'][1]:.3f}]; "
              f"f_mem {out['f_mem']}; sigma(t_end) = {out['sigma_end']:.3g}")
    return 0


def cmd_table(args) -> int:
    from .bdkos25 import check_sampling_args, plot_table, reference_table
    from .fileio import atomic_write_json, save_figure

    check_sampling_args("ve", args.n_samples, args.t_end, args.tol, n_boot=args.n_boot)
    train = _train(args.data)
    tab = reference_table(train, args.n_samples, args.seed, args.t_end, args.tol, n_boot=args.n_boot)
    d = Path(args.out)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "table.json", tab)
    save_figure(plot_table(tab), d / "table.png", dpi=120)
    if args.json:
        print(json.dumps(tab))
        return 0
    print(f"BDKOS25 VE (sigma0 = 10), n = {tab['n_train']}, {tab['n_samples']} latents (seeds "
          f"{tab['latent_seeds']}), RK45 rtol = atol = 1e-5, t 1 -> {tab['t_end']:g} "
          f"(sigma_end = {tab['sigma_end']:.3g}); fraction within {tab['tol']:g}:")
    for r in tab["rows"]:
        print(f"  {r['model']:22s} {r['fraction_within']:.3f}  [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]  "
              f"f_mem {'n/a' if r['f_mem'] is None else format(r['f_mem'], '.3f')}")
    print(f"table.json and table.png in {d}")
    return 0


def register(sub) -> None:
    """Add ``closedform sample`` and ``closedform table`` to an argparse subparsers object."""
    p = sub.add_parser("closedform", help="BDKOS25: closed-form (empirical, Tikhonov, consistency) scores sampled "
                       "with RK45")
    cs = p.add_subparsers(dest="closedform_cmd", required=True)

    def common(q):
        q.add_argument("--data", default="bdkos25-2d", help="data spec; the whole pool is the training set "
                       "(default bdkos25-2d: the 20 BDKOS25 points)")
        q.add_argument("--n-samples", type=int, default=1000, help="number of latents (default 1000)")
        q.add_argument("--seed", type=int, default=0, help="latent j uses seed SEED + j (default 0)")
        q.add_argument("--t-end", type=float, default=1e-5, help="end time in (0, 1) (default 1e-5: sigma ~ 0.003)")
        q.add_argument("--tol", type=float, default=1e-2, help="distance to a training point counted as a copy "
                       "(default 1e-2; read it against sigma(t_end))")
        q.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
        q.add_argument("--json", action="store_true", help="print one JSON object")

    q = cs.add_parser("sample", help="sample one closed form; fraction within tol, CI, f_mem")
    q.add_argument("--model", default="empirical", help="empirical | tikhonov:c=C | consistency:tau=T")
    q.add_argument("--schedule", default="ve", help="ve (sigma0 = 10) or vp (beta 0.001 -> 3)")
    q.add_argument("--rtol", type=float, default=1e-5, help="RK45 relative tolerance (default 1e-5)")
    q.add_argument("--atol", type=float, default=1e-5, help="RK45 absolute tolerance (default 1e-5)")
    q.add_argument("--out", help="folder for result.json and collapse.png (trajectory diagnostics)")
    common(q)
    q.set_defaults(func=cmd_sample)

    q = cs.add_parser("table", help="BDKOS25's reference table (c = 0, Tikhonov, consistency), JSON + PNG")
    q.add_argument("--out", default="runs/closedform_table", help="folder for table.json and table.png")
    common(q)
    q.set_defaults(func=cmd_table)
