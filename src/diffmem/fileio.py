"""Atomic file writes (used by the run directory, reports and the audit).

A file is written to a temporary name in the same folder, then renamed over
its target, so a reader never sees half a file; a killed writer leaves only a
``.NAME.tmp``, which the next write of that file replaces (one writer per file).  The result gets the usual
permissions, ``0666 & ~umask``, not the 0600 of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_json", "atomic_write_npy", "atomic_write_folder",
           "save_figure", "check_out_file"]



def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Write ``path`` atomically: ``write(tmp)`` fills a temporary file next to it, then it is renamed.

    The temporary file is removed if ``write`` fails.  The result has mode
    ``0666 & ~umask`` (like any file a program creates), not the 0600 of
    :func:`tempfile.mkstemp`.
    """
    path = Path(path)
    # a fixed name per target: a writer killed mid-write leaves a .tmp that the next write of the
    # same file (a resumed run redoes it) replaces, instead of one stale file per killed process
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent) + ("\n" if indent else ""))


def atomic_write_npy(path: str | Path, array) -> Path:
    """Write a numeric array as ``.npy`` (float arrays as float32), atomically."""
    import numpy as np

    a = np.asarray(array)
    a = a.astype(np.float32) if a.dtype.kind == "f" else a

    def write(p: Path) -> None:
        with p.open("wb") as f:
            np.save(f, a, allow_pickle=False)

    return atomic_write(path, write)


def save_figure(fig, path: str | Path, **savefig_kw) -> Path:
    """Render a matplotlib figure to PNG in memory, then write it atomically (a reader never sees half a PNG)."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", **savefig_kw)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(path, lambda p: p.write_bytes(buf.getvalue()))


def atomic_write_folder(path: str | Path, fill: Callable[[Path], None]) -> Path:
    """Create the folder ``path`` atomically: ``fill(tmp)`` writes into a temporary sibling folder, which is
    then renamed to ``path``.  ``path`` must not exist, or be an empty folder; on failure nothing is left."""
    import shutil

    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise FileExistsError(f"{path} exists and is not an empty folder")
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        fill(tmp)
        if path.exists():
            path.rmdir()
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def check_out_file(path, suffixes: tuple[str, ...]) -> Path:
    """Check an output file name before any work: its suffix (one of ``suffixes``), that it is not a
    folder and that its folder exists (one-line :class:`~diffmem.errors.DiffmemError` otherwise)."""
    from .errors import DiffmemError

    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise DiffmemError(f"--out must end in {' or '.join(suffixes)}, got {out}")
    if out.is_dir():
        raise DiffmemError(f"--out {out} is a directory; give a file name")
    if not out.parent.is_dir():
        raise DiffmemError(f"--out {out}: folder {out.parent} does not exist")
    return out
