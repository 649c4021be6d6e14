"""Bottom-up parsing of token sequences under an RHM grammar: validity per level, whole-sequence validity, root class.

Parse level ``k = 0`` is the bottom: the ``s**L`` tokens are cut into
``s**(L−1)`` consecutive s-tuples, each looked up among the right-hand sides of
the deepest rule level (``L − 1``); a tuple that is a right-hand side becomes
its parent symbol (unique: right-hand sides are distinct within a level) and
its rule index.  Level ``k + 1`` parses the parents the same way, up to the root
(rule level 0), whose parent is a root class.

Per level two fractions (FSW25; the definition is ours, SPEC §3):

* ``valid_per_level[k]``: among the level-k s-tuples whose ``s`` members all
  parsed (the parse *continued on the valid ones*), the fraction that are a
  right-hand side.  For uniformly random tokens each is ≈ the rule density
  ``m·v / v**s`` (``nc·m / v**s`` at the root);
* ``parsed_per_level[k]``: the fraction of all level-k tuples that parsed.

A sequence is valid iff its parse reaches a root class.  At the bottom every
tuple is considered; one holding a token outside ``range(v)`` (e.g. a left-over
mask token) is not a right-hand side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .rhm import RHM

__all__ = ["ParseResult", "parse"]


@dataclass
class ParseResult:
    valid: np.ndarray  # [N] bool: the parse reaches a root class
    root: np.ndarray  # [N] int64: the parsed root class, −1 if invalid
    digits: np.ndarray  # [N, K] int64: breadth-first rule indices (RHM.index_digits order), −1 where unparsed
    considered: list  # per parse level (bottom first): tuples whose members all parsed
    accepted: list  # per parse level (bottom first): of those, right-hand sides of some rule
    total: list  # per parse level (bottom first): all tuples (N · s**(L−1−k))

    @property
    def n(self) -> int:
        return int(len(self.valid))

    @property
    def valid_fraction(self) -> float:
        return float(self.valid.mean()) if self.n else float("nan")

    @property
    def valid_per_level(self) -> list:
        """Bottom level first; ``nan`` where no tuple of the level was reached."""
        return [a / c if c else float("nan") for a, c in zip(self.accepted, self.considered)]

    @property
    def parsed_per_level(self) -> list:
        return [a / t if t else float("nan") for a, t in zip(self.accepted, self.total)]

    def summary(self) -> dict:
        """JSON-ready (``nan`` → ``None``): ``valid``, ``valid_per_level``, ``parsed_per_level``, counts, ``n``."""
        def clean(xs):
            return [None if x != x else float(x) for x in xs]

        return {"valid": None if self.n == 0 else self.valid_fraction, "n": self.n, "n_valid": int(self.valid.sum()),
                "valid_per_level": clean(self.valid_per_level), "parsed_per_level": clean(self.parsed_per_level),
                "tuples_considered": [int(c) for c in self.considered],
                "tuples_accepted": [int(a) for a in self.accepted]}


def parse(grammar: RHM, x) -> ParseResult:
    """Parse sequences ``x [N, s**L]`` (ints; numpy or torch) bottom-up under ``grammar``."""
    x = np.asarray(x.cpu() if hasattr(x, "cpu") else x)
    if x.ndim == 1:
        x = x[None]
    if x.ndim != 2 or x.shape[1] != grammar.seq_len:
        raise ValueError(f"sequences must be [N, {grammar.seq_len}], got {tuple(x.shape)}")
    N, v, s = len(x), grammar.v, grammar.s
    sym = x.astype(np.int64)
    in_vocab = (sym >= 0) & (sym < v)  # a bottom tuple holding any other token is simply not a right-hand side
    ok = np.ones_like(in_vocab)
    weights = v ** np.arange(s - 1, -1, -1, dtype=np.int64)
    digits = np.full((N, grammar.num_nodes), -1, dtype=np.int64)
    considered, accepted, total = [], [], []
    for lv in reversed(range(grammar.L)):  # rule level lv: parents are the s**lv nodes of tree level lv
        n_t = s ** lv
        parent_of, rule_of = grammar.lookup(lv)
        members_ok = ok.reshape(N, n_t, s).all(-1)
        code = (np.where(ok & in_vocab, sym, 0).reshape(N, n_t, s) * weights).sum(-1)
        parent, rule = parent_of[code], rule_of[code]
        good = members_ok & in_vocab.reshape(N, n_t, s).all(-1) & (parent >= 0)
        in_vocab = np.ones((N, n_t), dtype=bool)
        considered.append(int(members_ok.sum()))
        accepted.append(int(good.sum()))
        total.append(N * n_t)
        off = (s ** lv - 1) // (s - 1)
        digits[:, off:off + n_t] = np.where(good, rule, -1)
        sym, ok = np.where(good, parent, -1), good
    valid = ok[:, 0]
    return ParseResult(valid, np.where(valid, sym[:, 0], -1), digits, considered, accepted, total)
