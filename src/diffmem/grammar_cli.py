"""``diffmem grammar rules | sample | check``: the random hierarchy model (FSW25; thin wrappers over :mod:`diffmem.grammar`).

GRAMMAR is ``--v V --m M --s S --L L --nc NC [--seed SEED]``.  Contracts other
tools rely on:

* ``rules GRAMMAR --json`` → ``{"rules": [...]}``: L levels, the root level first
  (NC symbols), every other level V symbols; each symbol a list of its M
  right-hand sides, each a list of S ints (plus ``params``, ``num_data``, …).
* ``sample GRAMMAR --n N --sample-seed K --out X.npy`` writes an int64 array
  ``(N, S**L)`` atomically.
* ``check GRAMMAR --sequences X.npy --json`` → at least ``valid``,
  ``valid_per_level`` (bottom level first) and ``n``.

A bad parameter (``m·v > v**s``, ``L < 1``, …) is a one-line error, exit 2,
before anything is written.
"""

from __future__ import annotations

import json

__all__ = ["register"]


def _grammar(args):
    from .grammar.tools import grammar_from_options

    return grammar_from_options(args.v, args.m, args.s, args.L, args.nc, args.seed)


def cmd_rules(args) -> int:
    from .grammar.tools import rules_report

    rep = rules_report(_grammar(args))
    if args.json:
        print(json.dumps(rep))
        return 0
    names = ["class"] + ["symbol"] * (len(rep["rules"]) - 1)
    for lv, (level, name) in enumerate(zip(rep["rules"], names)):
        print(f"level {lv} (density {rep['density'][lv]:.3g}):")
        for a, rhs in enumerate(level):
            print(f"  {name} {a} -> " + " | ".join(" ".join(map(str, t)) for t in rhs))
    print(f"{rep['num_data']} distinct sequences of length {rep['seq_len']}")
    return 0


def cmd_sample(args) -> int:
    from .grammar.tools import write_sample

    path, x = write_sample(_grammar(args), args.n, args.sample_seed, args.out, args.distinct)
    print(f"{len(x)} sequences of length {x.shape[1]} written to {path}")
    return 0


def cmd_check(args) -> int:
    from .grammar.tools import check_report, read_sequences

    g = _grammar(args)
    rep = check_report(g, read_sequences(args.sequences, g.seq_len))
    if args.json:
        print(json.dumps(rep))
        return 0
    per = ", ".join("n/a" if x is None else f"{x:.3f}" for x in rep["valid_per_level"])
    chance = ", ".join(f"{x:.3f}" for x in rep["density_per_level"])
    print(f"{rep['n_valid']} of {rep['n']} sequences valid ({rep['valid']:.3f}); valid per level, bottom first: "
          f"{per} (chance: {chance})")
    return 0


def cmd_demo(args) -> int:
    from .errors import DiffmemError
    from .grammar_demo import run_grammar_demo

    try:
        workers = int(args.workers)
    except ValueError:
        workers = 0
    if workers < 1:
        raise DiffmemError(f"--workers must be a positive integer, got {args.workers!r}")
    summary = run_grammar_demo(args.out, quick=args.quick, workers=workers)
    print(json.dumps(summary.get("headline", {}), indent=2))
    print(f"figures and summary.json in {args.out}")
    return 0


def register(sub) -> None:
    """Add ``grammar rules | sample | check`` to an argparse subparsers object."""
    p = sub.add_parser("grammar", help="FSW25: the random hierarchy model (rules, samples, per-level validity)")
    gs = p.add_subparsers(dest="grammar_cmd", required=True)

    def grammar(q):
        for k, what in (("v", "symbols per level"), ("m", "rules per symbol"), ("s", "branching (tuple size)"),
                        ("L", "depth (sequence length s**L)"), ("nc", "root classes")):
            q.add_argument(f"--{k}", help=f"{what} (required)")
        q.add_argument("--seed", default="0", help="rule seed (default 0; the reference generator's draw)")

    q = gs.add_parser("rules", help="the rules of a grammar (root level first)")
    grammar(q)
    q.add_argument("--json", action="store_true", help='print {"rules": [...], ...}')
    q.set_defaults(func=cmd_rules)

    q = gs.add_parser("sample", help="sample sequences (uniform root class and rule at every node) to .npy")
    grammar(q)
    q.add_argument("--n", default="1000", help="number of sequences (default 1000)")
    q.add_argument("--sample-seed", default="0", help="data seed (default 0)")
    q.add_argument("--distinct", action="store_true", help="distinct data: the reference's random.sample of "
                   "datum indices, decoded")
    q.add_argument("--out", required=True, help="output .npy, int64 (N, s**L)")
    q.set_defaults(func=cmd_sample)

    q = gs.add_parser("check", help="parse sequences: validity per level and of whole sequences")
    grammar(q)
    q.add_argument("--sequences", required=True, help=".npy of integer sequences (N, s**L)")
    q.add_argument("--json", action="store_true", help="print one JSON object")
    q.set_defaults(func=cmd_check)

    q = gs.add_parser("demo", help="FSW25 demo: rhm runs at n = 32…256, levels, tau_mem ∝ n, stopping rule, two "
                      "halves (≈ 20 min on 2 cores)")
    q.add_argument("--out", required=True, help="output directory (finished runs in it are skipped)")
    q.add_argument("--quick", action="store_true", help="tiny version (seconds; a smoke test)")
    q.add_argument("--workers", default="2", help="parallel runs (default 2)")
    q.set_defaults(func=cmd_demo)
    from .two_halves_cli import register as register_two_halves

    register_two_halves(sub)  # top level: images too
