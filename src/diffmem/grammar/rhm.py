"""The Random Hierarchy Model (RHM): a probabilistic context-free grammar with random rules (FSW25, SPEC §3).

Parameters: ``v`` symbols per level, ``nc`` root classes, ``m`` rules (right-hand
sides) per symbol, branching ``s``, depth ``L``; a datum is a sequence of
``s**L`` tokens in ``range(v)``.  Levels are numbered from the root: rule level 0
maps each of the ``nc`` classes to ``m`` s-tuples of level-1 symbols, rule level
``l ≥ 1`` maps each of the ``v`` symbols to ``m`` s-tuples; the right-hand sides
of one level are distinct (so a tuple names its parent and its rule), which
needs ``nc·m ≤ v**s`` at the root and ``m·v ≤ v**s`` below.

**The rule draw matches the RHM reference generator** of this field,
``sample_rules(v, n, m, s, L, seed)`` in Cagnetta et al.'s public code
(``fracagnetta/theory-language-modelling``, ``datasets/random_hierarchy_model.py``;
the same function appears in the RHM projects derived from it): Python's
``random`` seeded with ``seed``; ``tuples`` = the lexicographic list of all
``v**s`` s-tuples (``itertools.product(range(v), repeat=s)``); root rules =
``random.sample(tuples, nc·m)`` reshaped ``(nc, m, s)`` (class ``c`` gets draws
``c·m … c·m + m − 1``); then for each level 1 … L−1, ``random.sample(tuples,
v·m)`` reshaped ``(v, m, s)``, continuing the same stream.  ``tests/test_grammar.py``
re-derives the draw step by step from this description and compares.  (The
older ``pcsl-epfl/hierarchy-learning`` generator, s = 2 only, shuffles the
list and takes a prefix: a different stream, not matched.)

**Data.** A datum is a root class plus a rule choice at each of the
``K = (s**L − 1)/(s − 1)`` internal nodes; there are ``nc · m**K`` distinct data
(RHS disjoint within a level, so distinct choices give distinct sequences) and
uniform choices make them equiprobable.  The datum index follows the reference's
``sample_data_from_rules``: ``index = class · m**K + Σ_k d_k m**(K−1−k)`` with the
rule digits ``d_k`` in breadth-first order (root first, each level left to right),
so :meth:`RHM.from_indices` of ``range(num_data)`` is the reference's full data
set in its order, and :meth:`RHM.distinct` with a sample seed is the reference's
``random.seed(seed_sample); random.sample(range(max_data), k)`` decoded.
Sequences expand level by level: position ``i`` of level ``l`` has children
``i·s … i·s + s − 1`` at level ``l + 1``.
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass, field

import numpy as np

from ..errors import DiffmemError

__all__ = ["RHM", "parse_rhm_spec", "load_rhm", "check_params", "MAX_SEQ_LEN", "MAX_ENUMERATE"]

MAX_SEQ_LEN = 1 << 16  # s**L cap: one sequence must fit comfortably in memory
MAX_TUPLES = 1 << 22  # v**s cap: the lexicographic tuple list is materialised (as the reference does)
MAX_ENUMERATE = 1 << 22  # enumerate() refuses more data than this

_KEYS = ("v", "m", "s", "L", "nc", "seed")


def _as_int(value, name: str) -> int:
    if isinstance(value, (bool, np.bool_)):
        raise DiffmemError(f"grammar parameter {name} must be an integer, got {value!r}")
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise DiffmemError(f"grammar parameter {name} must be an integer, got {value!r}")


def check_params(v, m, s, L, nc, seed) -> tuple[int, int, int, int, int, int]:
    """Validate RHM parameters; a bad one raises a one-line :class:`DiffmemError`."""
    v, m, s, L, nc, seed = (_as_int(x, k) for x, k in zip((v, m, s, L, nc, seed), _KEYS))
    for name, val, lo in (("v", v, 2), ("m", m, 1), ("s", s, 2), ("L", L, 1), ("nc", nc, 1), ("seed", seed, 0)):
        if val < lo:
            raise DiffmemError(f"grammar parameter {name} must be ≥ {lo}, got {val}")
    if s * math.log2(v) > math.log2(MAX_TUPLES):
        raise DiffmemError(f"grammar v**s = {v}**{s} exceeds {MAX_TUPLES} tuples; use smaller v or s")
    if L * math.log2(s) > math.log2(MAX_SEQ_LEN):
        raise DiffmemError(f"grammar sequence length s**L = {s}**{L} exceeds {MAX_SEQ_LEN}; use smaller s or L")
    if nc * m > v ** s:
        raise DiffmemError(f"grammar needs nc·m ≤ v**s (distinct root right-hand sides), got nc·m = {nc * m} > "
                           f"v**s = {v ** s}")
    if L >= 2 and m * v > v ** s:
        raise DiffmemError(f"grammar needs m·v ≤ v**s (distinct right-hand sides per level), got m·v = {m * v} > "
                           f"v**s = {v ** s}")
    return v, m, s, L, nc, seed


def parse_rhm_spec(spec: str) -> dict:
    """``"rhm:v=8,m=4,s=2,L=3,nc=8,seed=0[,pool=P,test=T,sample_seed=K]"`` → dict of ints (checked).

    ``v, m, s, L, nc`` are required, ``seed`` defaults to 0; ``pool``, ``test`` and
    ``sample_seed`` are the data-set options of :meth:`RHM.dataset` (absent keys
    are left out).  Any problem is a one-line :class:`DiffmemError`.
    """
    if not isinstance(spec, str) or not spec.strip().startswith("rhm:"):
        raise DiffmemError(f"not an rhm data spec: {spec!r} (expected rhm:v=8,m=4,s=2,L=3,nc=8,seed=0)")
    body = spec.strip()[4:]
    allowed = set(_KEYS) | {"pool", "test", "sample_seed"}
    out: dict = {}
    for kv in filter(None, (x.strip() for x in body.replace("&", ",").split(","))):
        k, eq, val = kv.partition("=")
        k = k.strip()
        if not eq:
            raise DiffmemError(f"rhm option {kv!r} in {spec!r} is not key=value")
        if k not in allowed:
            raise DiffmemError(f"rhm takes no option {k!r}; options: {', '.join(sorted(allowed, key=str.lower))}")
        if k in out:
            raise DiffmemError(f"rhm option {k!r} given twice in {spec!r}")
        out[k] = _as_int(val, k)
    missing = [k for k in _KEYS[:5] if k not in out]
    if missing:
        raise DiffmemError(f"rhm spec {spec!r} lacks {', '.join(missing)} (e.g. rhm:v=8,m=4,s=2,L=3,nc=8,seed=0)")
    out.setdefault("seed", 0)
    check_params(*(out[k] for k in _KEYS))
    for k in ("pool", "test", "sample_seed"):
        if k in out and out[k] < (1 if k == "pool" else 0):
            raise DiffmemError(f"rhm option {k} must be ≥ {1 if k == 'pool' else 0}, got {out[k]}")
    return out


@dataclass(frozen=True)
class RHM:
    """One random hierarchy grammar.  ``rules[l]``: int64 array ``(nc if l == 0 else v, m, s)``, root first."""

    v: int
    m: int
    s: int
    L: int
    nc: int
    seed: int = 0
    rules: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        vals = check_params(self.v, self.m, self.s, self.L, self.nc, self.seed)
        for k, x in zip(_KEYS, vals):
            object.__setattr__(self, k, x)
        object.__setattr__(self, "rules", tuple(_reference_rules(*vals)))

    # -- construction -----------------------------------------------------
    @classmethod
    def from_spec(cls, spec: str) -> "RHM":
        p = parse_rhm_spec(spec)
        return cls(**{k: p[k] for k in _KEYS})

    @property
    def spec(self) -> str:
        return f"rhm:v={self.v},m={self.m},s={self.s},L={self.L},nc={self.nc},seed={self.seed}"

    @property
    def params(self) -> dict:
        return {k: getattr(self, k) for k in _KEYS}

    # -- sizes ------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        return self.s ** self.L

    @property
    def num_nodes(self) -> int:
        """Internal nodes of one derivation tree, ``K = (s**L − 1)/(s − 1)`` (one rule choice each)."""
        return (self.s ** self.L - 1) // (self.s - 1)

    @property
    def num_data(self) -> int:
        """Distinct data, ``nc · m**K`` (an exact Python int; may exceed int64)."""
        return self.nc * self.m ** self.num_nodes

    def density(self, level: int) -> float:
        """Fraction of the ``v**s`` s-tuples that are a right-hand side at rule level ``level`` (0 = root)."""
        return (self.nc if level == 0 else self.v) * self.m / self.v ** self.s

    def densities_bottom_up(self) -> list[float]:
        """Rule densities in the parser's order: the bottom level first, the root last."""
        return [self.density(lv) for lv in reversed(range(self.L))]

    def random_valid_probability(self) -> float:
        """Probability that a uniformly random sequence parses: ``Π_l density(l)**(s**l)``."""
        return math.exp(sum(self.s ** lv * math.log(self.density(lv)) for lv in range(self.L)))

    def rules_list(self) -> list:
        """The rules as nested lists (JSON): ``[level][symbol][rule] -> [s ints]``, root level first."""
        return [r.tolist() for r in self.rules]

    # -- generation -------------------------------------------------------
    def expand(self, classes: np.ndarray, digits: np.ndarray) -> np.ndarray:
        """Sequences from root classes ``[N]`` and breadth-first rule digits ``[N, K]`` in ``range(m)`` → ``[N, s**L]``."""
        classes = np.asarray(classes, dtype=np.int64)
        digits = np.asarray(digits, dtype=np.int64).reshape(len(classes), self.num_nodes)
        sym = classes[:, None]  # [N, 1]
        off = 0
        for lv in range(self.L):
            size = self.s ** lv
            sym = self.rules[lv][sym, digits[:, off:off + size]].reshape(len(classes), size * self.s)
            off += size
        return sym

    def sample(self, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` i.i.d. data (uniform class, uniform rule at every node): ``(x [n, s**L], classes [n])``.

        Prefix-stable: datum ``j`` uses the ``j``-th row of one ``(n, 1 + K)`` block
        of uniforms from ``numpy.random.default_rng(seed)``, so ``sample(n)[:k] ==
        sample(k)``.  Draws repeat data (with replacement); see :meth:`distinct`.
        """
        n = int(n)
        if n < 0:
            raise DiffmemError(f"number of sequences must be ≥ 0, got {n}")
        u = np.random.default_rng(int(seed)).random((n, 1 + self.num_nodes))
        classes = np.minimum((u[:, 0] * self.nc).astype(np.int64), self.nc - 1)
        digits = np.minimum((u[:, 1:] * self.m).astype(np.int64), self.m - 1)
        return self.expand(classes, digits), classes

    def index_digits(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """Datum indices (Python ints in ``range(num_data)``) → ``(classes [N], digits [N, K])``."""
        idx = [int(i) for i in indices]
        K, m = self.num_nodes, self.m
        per_class = m ** K
        if any(i < 0 or i >= self.num_data for i in idx):
            raise DiffmemError(f"datum index out of range(0, {self.num_data})")
        if self.num_data < 2 ** 62:
            a = np.asarray(idx, dtype=np.int64)
            classes, rest = a // per_class, a % per_class
            digits = np.empty((len(a), K), dtype=np.int64)
            for k in range(K - 1, -1, -1):
                rest, digits[:, k] = rest // m, rest % m
            return classes, digits
        classes = np.empty(len(idx), dtype=np.int64)
        digits = np.empty((len(idx), K), dtype=np.int64)
        for j, i in enumerate(idx):
            classes[j], rest = divmod(i, per_class)
            for k in range(K - 1, -1, -1):
                rest, digits[j, k] = divmod(rest, m)
        return classes, digits

    def index_of(self, classes, digits) -> list[int]:
        """Inverse of :meth:`index_digits`: the datum index of each (class, digits) row, as Python ints."""
        out = []
        for c, row in zip(np.asarray(classes).tolist(), np.asarray(digits).tolist()):
            i = int(c)
            for d in row:
                i = i * self.m + int(d)
            out.append(i)
        return out

    def from_indices(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """The data of given indices (the reference's ``sample_data_from_rules``): ``(x, classes)``."""
        classes, digits = self.index_digits(indices)
        return self.expand(classes, digits), classes

    def enumerate(self) -> tuple[np.ndarray, np.ndarray]:
        """Every datum, in index order: ``(x [num_data, s**L], classes)`` (refused above ``MAX_ENUMERATE``)."""
        if self.num_data > MAX_ENUMERATE:
            raise DiffmemError(f"{self.spec} has {self.num_data} distinct data; enumeration is limited to "
                               f"{MAX_ENUMERATE}")
        return self.from_indices(range(self.num_data))

    def distinct(self, count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """``count`` distinct data: ``random.Random(seed).sample(range(num_data), count)`` decoded (the reference's draw)."""
        count = int(count)
        if not 0 <= count <= self.num_data:
            raise DiffmemError(f"cannot draw {count} distinct data from the {self.num_data} of {self.spec}")
        return self.from_indices(random.Random(int(seed)).sample(range(self.num_data), count))

    def dataset(self, pool: int | None = None, test: int | None = None, sample_seed: int = 0):
        """A :class:`diffmem.data.Dataset` of token sequences (int64): training pool + disjoint held-out test.

        ``test + pool`` distinct data are drawn at once with :meth:`distinct`
        (``sample_seed``); the first ``pool`` are the pool, the next ``test`` the
        held-out set.  Defaults: ``test = min(1024, num_data // 5)`` (at least 1),
        ``pool = min(num_data − test, 16384)``.  Nested training sets come from
        ``Dataset.subset(n, subset_seed)`` (a prefix of one seeded shuffle of
        the pool); ``labels`` are the root classes.
        """
        from ..dataset import Dataset
        import torch

        N = self.num_data
        test = max(1, min(1024, N // 5)) if test is None else int(test)
        pool = min(N - test, 16384) if pool is None else int(pool)
        if test < 0 or pool < 1 or pool + test > N:
            raise DiffmemError(f"{self.spec}: pool = {pool} and test = {test} need 1 ≤ pool and pool + test ≤ "
                               f"{N} distinct data")
        x, c = self.distinct(pool + test, sample_seed)
        meta = {"rhm": self.params, "num_data": N, "sample_seed": int(sample_seed), "kind": "tokens",
                "vocab": self.v, "seq_len": self.seq_len}
        return Dataset(self.spec, torch.from_numpy(x[:pool]), torch.from_numpy(x[pool:]),
                       labels=torch.from_numpy(c[:pool]), meta=meta)

    def exact_conditional(self):
        """The exact conditionals ``p(x_i | unmasked)`` of the uniform distribution over all data (enumerates)."""
        from ..masked_diffusion import ExactConditional

        x, _ = self.enumerate()
        return ExactConditional(x, None, self.v)

    # -- parsing ----------------------------------------------------------
    def lookup(self, level: int) -> tuple[np.ndarray, np.ndarray]:
        """Parse tables of rule level ``level``: tuple code (base v, lexicographic) → (parent or −1, rule or −1)."""
        r = self.rules[level]
        code = r @ (self.v ** np.arange(self.s - 1, -1, -1, dtype=np.int64))  # [symbols, m]
        parent = np.full(self.v ** self.s, -1, dtype=np.int64)
        rule = np.full(self.v ** self.s, -1, dtype=np.int64)
        parent[code.ravel()] = np.repeat(np.arange(r.shape[0]), self.m)
        rule[code.ravel()] = np.tile(np.arange(self.m), r.shape[0])
        return parent, rule


def _reference_rules(v: int, m: int, s: int, L: int, nc: int, seed: int) -> list[np.ndarray]:
    """The reference draw (module docstring): one ``random.Random(seed)`` stream, root then levels 1 … L−1."""
    rng = random.Random(seed)  # same stream as random.seed(seed) followed by the module-level random.sample
    tuples = list(itertools.product(range(v), repeat=s))
    out = [np.asarray(rng.sample(tuples, nc * m), dtype=np.int64).reshape(nc, m, s)]
    for _ in range(1, L):
        out.append(np.asarray(rng.sample(tuples, v * m), dtype=np.int64).reshape(v, m, s))
    return out


def load_rhm(spec: str):
    """A data spec ``rhm:...`` → :class:`diffmem.data.Dataset` (see :meth:`RHM.dataset`)."""
    p = parse_rhm_spec(spec)
    ds = RHM(**{k: p[k] for k in _KEYS}).dataset(p.get("pool"), p.get("test"), p.get("sample_seed", 0))
    ds.name = spec.strip()
    return ds
