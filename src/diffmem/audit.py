"""Audit any generator's samples against its training set: ``diffmem audit``.

    diffmem audit --train TRAIN --samples SAMPLES [--threshold 0.3333] [--n-boot N] [--seed S]
                  [--json] [--out FILE]

TRAIN and SAMPLES are ``.npy`` or ``.npz`` arrays of shape ``(N, ...)``,
flattened per row and compared in L2 as given (use the same scaling and
centring for both).  A sample is memorised when ``d1/d2 < threshold``
(BUBM25; see :mod:`diffmem.metrics.memorization`).  ``--json`` prints one JSON
object with ``f_mem``, ``stderr``, ``ci95`` ([low, high]), ``n_samples``,
``n_train``, ``memorized`` (sample indices) and ``nearest_train`` (their
nearest training rows); otherwise a short summary.  ``--out`` writes the JSON
object to a file (atomically).

In an ``.npz`` the array is the only one, or the one named like the role
(``train`` / ``samples``), or ``arr_0`` / ``x``; ``FILE.npz?key=KEY`` picks one
explicitly (the data-spec syntax of ``data=``).  Large ``.npy`` files are memory-mapped: only blocks are ever
converted, so the memory stays bounded.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .data import load_array
from .errors import DiffmemError
from .fileio import atomic_write_text
from .metrics.memorization import memorization_fraction

__all__ = ["audit", "load_array", "add_audit_parser", "cmd_audit", "main"]

def audit(train, samples, threshold: float = 1 / 3, n_boot: int = 1000, seed: int = 0, **nn_kwargs) -> dict:
    """Memorisation audit of ``samples [M, ...]`` against ``train [N, ...]`` (arrays or tensors).

    Returns the :func:`~diffmem.metrics.memorization.memorization_fraction`
    dict (``f_mem``, ``stderr``, ``ci95``, ``boot_mean``, ``n_samples``,
    ``n_train``, ``threshold``, ``n_boot``, ``memorized``, ``nearest_train``)
    plus ``ratio_quantiles`` (5, 25, 50, 75, 95 % of ``d1/d2`` over samples).
    """
    out = memorization_fraction(samples, train, threshold=threshold, n_boot=n_boot, seed=seed, details=True,
                                **nn_kwargs)
    ratio = out.pop("ratio")
    for k in ("d1", "d2", "nearest"):
        out.pop(k)
    q = np.percentile(ratio, [5, 25, 50, 75, 95])
    out["ratio_quantiles"] = {f"p{p}": float(v) for p, v in zip((5, 25, 50, 75, 95), q)}
    return out


def _summary(r: dict, train_path, samples_path) -> str:
    lo, hi = r["ci95"]
    k = len(r["memorized"])
    lines = [
        f"f_mem = {r['f_mem']:.4f} ± {r['stderr']:.4f}  (95% CI [{lo:.4f}, {hi:.4f}], {r['n_boot']} bootstrap "
        f"resamples)",
        f"{k} of {r['n_samples']} samples in {samples_path} have d1/d2 < {r['threshold']:.4g} against the "
        f"{r['n_train']} training points in {train_path}",
        f"median d1/d2 = {r['ratio_quantiles']['p50']:.3f}",
    ]
    if k:
        show = ", ".join(f"{s}->{t}" for s, t in zip(r["memorized"][:10], r["nearest_train"][:10]))
        lines.append(f"memorised (sample->train): {show}{' ...' if k > 10 else ''}")
    return "\n".join(lines)


def cmd_audit(args) -> int:
    """Handler of ``diffmem audit``: all input is checked before anything is written."""
    if args.n_boot < 0:
        raise DiffmemError(f"--n-boot must be ≥ 0, got {args.n_boot}")
    out = Path(args.out) if args.out else None
    if out is not None and out.is_dir():
        raise DiffmemError(f"--out {out} is a directory; give a file name")

    train = load_array(args.train, role="train")
    samples = load_array(args.samples, role="samples")
    r = audit(train, samples, threshold=args.threshold, n_boot=args.n_boot, seed=args.seed)
    r["train"], r["samples"] = str(args.train), str(args.samples)
    text = json.dumps(r)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, text + "\n")
    print(text if args.json else _summary(r, args.train, args.samples))
    return 0


def add_audit_parser(sub) -> argparse.ArgumentParser:
    """Add the ``audit`` subcommand to an argparse subparsers object."""
    q = sub.add_parser("audit", help="memorisation audit of any generator's samples against its training set",
                       description="Flag samples whose nearest training point is much closer than the second "
                                   "nearest (d1/d2 < threshold, BUBM25) and report the memorised fraction "
                                   "with a bootstrap interval.")
    q.add_argument("--train", required=True, help="training set: .npy or .npz of shape (N, ...) (FILE.npz?key=KEY)")
    q.add_argument("--samples", required=True, help="generated samples: .npy or .npz of shape (M, ...)")
    q.add_argument("--threshold", type=float, default=1 / 3, help="ratio threshold d1/d2 (default 1/3)")
    q.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (0: binomial error bars)")
    q.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--out", help="also write the JSON object to this file (atomically)")
    q.set_defaults(func=cmd_audit)
    return q


def main(argv: list[str] | None = None) -> int:
    """``python -m diffmem.audit ...``: the audit command on its own (same options and exit codes)."""
    p = argparse.ArgumentParser(prog="diffmem")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_audit_parser(sub)
    args = p.parse_args(["audit", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args) or 0)
    except DiffmemError as e:
        print(f"diffmem: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
