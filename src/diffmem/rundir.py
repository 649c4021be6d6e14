"""Reading run and sweep directories (DESIGN principle 7: the run directory is the database).

Layout written by the trainer::

    RUN/config.json      resolved configuration (n, model.width, seed, n_params, ...)
    RUN/schedule.json    {"checkpoints": [0, 1, 2, ...]}
    RUN/metrics.jsonl    one JSON object per line, long format:
                         {"step": int, "metric": str, "value": float,
                          "error": float | null, ...extra keys (sigma, t, ci_low, ci_high)}
    SWEEP/sweep.json     lists the run directories of a sweep
    SWEEP/<run>/         one run directory per (n, width, seed)

Everything here is read-only; plots and reports are pure functions of these
files.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DiffmemError

__all__ = [
    "read_metrics",
    "metric_series",
    "read_config",
    "read_schedule",
    "list_runs",
    "run_n",
    "run_width",
    "run_steps",
    "run_n_params",
]


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All metric records of ``RUN/metrics.jsonl``, in file order.

    A run killed mid-write can leave a truncated last line; it is skipped.
    A malformed line anywhere else is an error (the file is append-only, so
    only the last line can be partial).  A missing file gives ``[]``.
    """
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    records: list[dict] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # partial last line of a killed run
                break
            raise DiffmemError(f"{path}: malformed JSON on line {i + 1}") from None
        if isinstance(rec, dict):
            records.append(rec)
    return records


def _matches(rec: dict, filters: dict[str, Any]) -> bool:
    for key, want in filters.items():
        if key not in rec:
            return False
        got = rec[key]
        if isinstance(want, float) or isinstance(got, float):
            try:
                if not math.isclose(float(got), float(want), rel_tol=1e-9, abs_tol=1e-12):
                    return False
            except (TypeError, ValueError):
                return False
        elif got != want:
            return False
    return True


def metric_series(
    run_dir: str | Path,
    name: str,
    records: list[dict] | None = None,
    extra: tuple[str, ...] = (),
    **filters: Any,
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | tuple[np.ndarray, ...]:
    """One metric as arrays sorted by step.

    Args:
        run_dir: run directory.
        name: metric name, e.g. ``"f_mem"``, ``"quality/kid"``, ``"loss/test"``.
        records: already-read records (avoids re-reading the file).
        extra: names of extra keys to return as additional arrays (NaN where
            absent), e.g. ``("ci_low", "ci_high")``.
        **filters: extra keys that must match, e.g. ``t=0.01`` (floats
            compared with a relative tolerance of 1e-9).

    Returns:
        ``(steps [K] int64, values [K] float64, errors [K] float64)`` then one
        array per ``extra`` key.  Missing errors are NaN.  If a step occurs
        more than once (a resumed run re-writing a checkpoint) the last record
        wins.
    """
    recs = read_metrics(run_dir) if records is None else records
    by_step: dict[int, dict] = {}
    for r in recs:
        if r.get("metric") != name or not _matches(r, filters):
            continue
        by_step[int(r["step"])] = r
    steps = np.array(sorted(by_step), dtype=np.int64)

    def col(key: str) -> np.ndarray:
        out = np.full(len(steps), np.nan)
        for i, s in enumerate(steps):
            v = by_step[int(s)].get(key)
            if v is not None:
                out[i] = float(v)
        return out

    arrays = (steps, col("value"), col("error")) + tuple(col(k) for k in extra)
    return arrays


def read_config(run_dir: str | Path) -> dict:
    """``RUN/config.json`` as a dict (DiffmemError if missing or invalid)."""
    path = Path(run_dir) / "config.json"
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DiffmemError(f"no config.json in run directory {run_dir}") from None
    except json.JSONDecodeError as e:
        raise DiffmemError(f"{path}: invalid JSON ({e.msg})") from None


def read_schedule(run_dir: str | Path) -> list[int]:
    """Checkpoint steps of ``RUN/schedule.json`` (``[]`` if absent)."""
    path = Path(run_dir) / "schedule.json"
    if not path.exists():
        return []
    return [int(s) for s in json.loads(path.read_text()).get("checkpoints", [])]


def run_n(config: dict) -> int:
    """Training-set size of a resolved config."""
    return int(config["n"])


def run_width(config: dict) -> int | None:
    """Model width (``model.width``), or None."""
    model = config.get("model") or {}
    w = model.get("width") if isinstance(model, dict) else None
    return None if w is None else int(w)


def run_steps(config: dict) -> int | None:
    """Total training steps (``train.steps`` or top-level ``steps``)."""
    train = config.get("train")
    if isinstance(train, dict) and "steps" in train:
        return int(train["steps"])
    return int(config["steps"]) if "steps" in config else None


def run_n_params(config: dict) -> int | None:
    """Trainable parameter count (``n_params``, top level or under ``model``)."""
    if "n_params" in config:
        return int(config["n_params"])
    model = config.get("model") or {}
    if isinstance(model, dict) and "n_params" in model:
        return int(model["n_params"])
    return None


def list_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories of a sweep.

    Uses ``SWEEP/sweep.json`` when present: either a list, or a dict with a
    ``"runs"`` list; each entry is a path (relative to the sweep directory) or
    a dict with a ``"dir"``/``"path"``/``"run_dir"`` key.  Otherwise every
    sub-directory holding a ``config.json``, sorted by name.  Entries whose
    directory does not exist (a run not started yet) are skipped.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise DiffmemError(f"sweep directory not found: {sweep}")
    index = sweep / "sweep.json"
    if index.exists():
        try:
            data = json.loads(index.read_text())
        except json.JSONDecodeError as e:
            raise DiffmemError(f"{index}: invalid JSON ({e.msg})") from None
        entries = data.get("runs", []) if isinstance(data, dict) else data
        runs = []
        for e in entries:
            if isinstance(e, dict):
                rel = e.get("dir") or e.get("path") or e.get("run_dir") or e.get("name")
            else:
                rel = e
            if rel is None:
                continue
            p = Path(rel)
            p = p if p.is_absolute() else sweep / p
            if (p / "config.json").exists():
                runs.append(p)
        if runs:
            return runs
    return sorted(p for p in sweep.iterdir() if p.is_dir() and (p / "config.json").exists())
