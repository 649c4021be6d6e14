"""``diffmem two-halves RUN_A RUN_B``: the two-halves test of two runs on disjoint halves (a thin wrapper over
:func:`diffmem.two_halves.two_halves`).  Train the halves as ordinary runs differing only in
``subset_offset`` (``0`` and ``n``)."""

from __future__ import annotations

import json

__all__ = ["register"]


def cmd_two_halves(args) -> int:
    from .errors import DiffmemError
    from .fileio import atomic_write_json
    from .two_halves import plot_two_halves, two_halves

    try:
        threshold = float(args.threshold)
    except ValueError:
        raise DiffmemError(f"--threshold must be a number in (0, 1], got {args.threshold!r}") from None
    if args.out is not None and not args.out.endswith(".json"):
        raise DiffmemError(f"--out must name a .json file, got {args.out!r}")
    res = two_halves(args.run_a, args.run_b, threshold)
    if args.out is not None:
        atomic_write_json(args.out, res)
        plot_two_halves(res, args.out[:-5] + ".png")
    if args.json:
        print(json.dumps(res))
        return 0
    for r in res["records"]:
        print(f"step {r['step']:>8d}  agreement {r['agreement']:.3f} ({r['n_agree']}/{r['n']})  distance "
              f"{r['distance']:.3f}")
    return 0


def register(sub) -> None:
    q = sub.add_parser("two-halves", help="agreement of two runs on disjoint halves (same sample seeds), per step")
    q.add_argument("run_a", help="run directory (subset_offset=0)")
    q.add_argument("run_b", help="run directory (subset_offset=n: the next n points, disjoint)")
    q.add_argument("--threshold", default=str(1 / 3), help="continuous data: nearest-neighbour ratio d1/d2 below "
                   "which sample j of A and of B match (default 1/3)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.add_argument("--out", default=None, help="write the result to this .json (and the figure beside it, .png)")
    q.set_defaults(func=cmd_two_halves)
