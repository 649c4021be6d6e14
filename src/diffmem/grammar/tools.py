"""What the ``diffmem grammar`` commands call: grammar from options, sequence files in and out, the check report."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DiffmemError
from ..fileio import check_out_file
from .parse import parse
from .rhm import RHM

__all__ = ["grammar_from_options", "rules_report", "write_sample", "read_sequences", "check_report"]


def grammar_from_options(v=None, m=None, s=None, L=None, nc=None, seed=0) -> RHM:
    """An :class:`RHM` from command-line values (strings or ints); a missing or bad one is a one-line error."""
    given = {"v": v, "m": m, "s": s, "L": L, "nc": nc, "seed": 0 if seed is None else seed}
    missing = [f"--{k}" for k, x in given.items() if x is None]
    if missing:
        raise DiffmemError(f"grammar needs {' '.join(missing)} (e.g. --v 8 --m 4 --s 2 --L 3 --nc 8 --seed 0)")
    return RHM(**given)


def rules_report(g: RHM) -> dict:
    """``{"rules": [level][symbol][rule] -> [s ints]`` (root level first), plus parameters and sizes."""
    return {"rules": g.rules_list(), "params": g.params, "seq_len": g.seq_len, "num_data": g.num_data,
            "density": [g.density(lv) for lv in range(g.L)]}


def _check_out(path) -> Path:
    return check_out_file(path, (".npy",))


def _int(value, name: str, lo: int) -> int:
    try:
        out = int(str(value).strip())
    except ValueError:
        raise DiffmemError(f"{name} must be an integer, got {value!r}") from None
    if out < lo:
        raise DiffmemError(f"{name} must be ≥ {lo}, got {out}")
    return out


def write_sample(g: RHM, n, sample_seed, out, distinct: bool = False) -> tuple[Path, np.ndarray]:
    """Draw ``n`` sequences (i.i.d., or distinct with the reference's index draw) and write ``out`` (.npy, atomic)."""
    from ..fileio import atomic_write_npy

    n, seed, path = _int(n, "--n", 1), _int(sample_seed, "--sample-seed", 0), _check_out(out)
    if distinct and n > g.num_data:
        raise DiffmemError(f"--distinct: {g.spec} has only {g.num_data} distinct data, asked for {n}")
    x, _ = g.distinct(n, seed) if distinct else g.sample(n, seed)
    atomic_write_npy(path, x.astype(np.int64))
    return path, x


def read_sequences(path, seq_len: int) -> np.ndarray:
    """An integer ``.npy`` of shape ``(N, seq_len)`` (integral floats accepted) → int64 array."""
    p = Path(path)
    if not p.is_file():
        raise DiffmemError(f"--sequences {p}: no such file")
    try:
        a = np.load(p, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's input
        raise DiffmemError(f"--sequences {p}: not a readable .npy array ({type(e).__name__})") from None
    if not isinstance(a, np.ndarray):
        raise DiffmemError(f"--sequences {p}: expected one .npy array, got an archive")
    if a.ndim == 1 and a.size == seq_len:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != seq_len:
        raise DiffmemError(f"--sequences {p}: expected shape (N, {seq_len}) for this grammar, got {a.shape}")
    if len(a) == 0:
        raise DiffmemError(f"--sequences {p}: the array holds no sequence")
    if a.dtype.kind == "f":
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise DiffmemError(f"--sequences {p}: float array with non-integer values; tokens are integers")
    elif a.dtype.kind not in "iub":
        raise DiffmemError(f"--sequences {p}: dtype {a.dtype} is not numeric")
    return a.astype(np.int64)


def check_report(g: RHM, x: np.ndarray) -> dict:
    """The parse summary (``valid``, ``valid_per_level`` bottom first, ``n``, …) with chance levels beside it."""
    out = parse(g, x).summary()
    out["density_per_level"] = g.densities_bottom_up()
    out["random_valid_probability"] = g.random_valid_probability()
    out["grammar"] = g.params
    return out
