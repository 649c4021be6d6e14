"""The run directory: its one owner (DESIGN principle 7, "the run directory is the database").

Layout (no other module builds a file name inside a run)::

    RUN/config.json          resolved configuration (+ n_params, batch_size, data_shape, model_options; data_vocab for tokens)
    RUN/schedule.json        {"checkpoints": [0, 1, 2, ..., steps]}
    RUN/metrics.jsonl        append-only, long format: {"step", "metric", "value", "error", ...extra keys}
    RUN/checkpoints/step_00001234.safetensors   weights at each checkpoint step
    RUN/state.pt             latest resumable state: weights, optimiser, step, RNG, callback states
                             (plain tensors and numbers only: loaded with ``weights_only=True``)
    RUN/status.json          step reached, cumulative training seconds, finished / stopped-by
    RUN/samples/step_00001234.npy               generated samples (same seeds at every checkpoint)
    RUN/evaluations.jsonl    re-evaluations by ``diffmem evaluate`` (same format; never mixed into metrics.jsonl)
    RUN/quality_net.safetensors                 the feature net of the quality metrics (if trained here)

    SWEEP/sweep.json         {"runs": [{"dir": ..., "n": ..., "width": ..., "seed": ..., "status": ..., "error": ...}, ...]}
    SWEEP/<run>/             one run directory per (width, n, seed)

Every write is atomic (a temporary file in the same folder, then a rename), so
a reader never sees half a file, and files get the usual permissions
(``0666 & ~umask``).  Nothing here executes code on load: weights are
safetensors, ``state.pt`` is read with ``torch.load(weights_only=True)``,
arrays with ``allow_pickle=False``.  A corrupt, truncated or pickled-payload
file is refused with a :class:`~diffmem.errors.DiffmemError` naming it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import DiffmemError
from .fileio import atomic_write, atomic_write_json, atomic_write_npy, atomic_write_text

__all__ = [
    "Run",
    "load_denoiser",
    "append_jsonl",
    "atomic_write",
    "atomic_write_text",
    "atomic_write_json",
    "read_metrics",
    "metric_series",
    "read_config",
    "read_schedule",
    "list_runs",
    "write_sweep_index",
    "read_sweep_index",
    "run_n",
    "run_width",
    "run_steps",
    "run_n_params",
]


def _load_torch_state(path: Path, device) -> dict:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line DiffmemError.

    ``weights_only=True`` unpickles only tensors, numbers, strings and
    containers: a file carrying a pickled object (code that would run on
    load) is refused before anything in it executes.
    """
    import pickle
    import zipfile

    import torch

    try:
        st = torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DiffmemError(f"{path} is refused: it holds more than tensors and numbers ({first[:160]}); "
                           "it may carry code that would run on load") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as e:
        raise DiffmemError(f"{path} is corrupt or truncated ({type(e).__name__}); delete it to restart the run "
                           "from scratch") from None
    if not isinstance(st, dict):
        raise DiffmemError(f"{path} is not a diffmem state file (it holds a {type(st).__name__})")
    return st


# ---------------------------------------------------------------------------
# one run


class Run:
    """A run directory: every path, read and write of its files.

    ``Run(path)`` does not touch the disk; :meth:`exists` says whether it
    already holds a run (a ``config.json``).
    """

    CONFIG = "config.json"
    SCHEDULE = "schedule.json"
    METRICS = "metrics.jsonl"
    EVALUATIONS = "evaluations.jsonl"
    STATE = "state.pt"
    STATUS = "status.json"
    CHECKPOINTS = "checkpoints"
    SAMPLES = "samples"
    FEATURE_NET = "quality_net.safetensors"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / self.CONFIG
        self.metrics_path = self.path / self.METRICS
        self.evaluations_path = self.path / self.EVALUATIONS
        self.state_path = self.path / self.STATE
        self.feature_net_path = self.path / self.FEATURE_NET

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    def checkpoint_path(self, step: int) -> Path:
        return self.path / self.CHECKPOINTS / f"step_{int(step):08d}.safetensors"

    def samples_path(self, step: int) -> Path:
        return self.path / self.SAMPLES / f"step_{int(step):08d}.npy"

    def exists(self) -> bool:
        return self.config_path.is_file()

    def has_state(self) -> bool:
        return self.state_path.exists()

    # -- creation
    def create(self, config: dict, schedule: list[int]) -> None:
        """Make the directory and write the config, the schedule and an empty metrics file."""
        if self.path.exists() and not self.path.is_dir():
            raise DiffmemError(f"--out {self.path} is a file, not a directory")
        (self.path / self.CHECKPOINTS).mkdir(parents=True, exist_ok=True)
        self.write_config(config)
        self.write_schedule(schedule)
        atomic_write_text(self.metrics_path, "")

    # -- config and schedule
    def read_config(self) -> dict:
        return read_config(self.path)

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.config_path, json.dumps(config, indent=2))

    def read_schedule(self) -> list[int]:
        return read_schedule(self.path)

    def write_schedule(self, steps: list[int]) -> None:
        atomic_write_text(self.path / self.SCHEDULE, json.dumps({"checkpoints": [int(s) for s in steps]}))

    def data_shape(self) -> tuple[int, ...]:
        cfg = self.read_config()
        if "data_shape" not in cfg:
            raise DiffmemError(f"{self.config_path} has no data_shape (not written by diffmem train)")
        return tuple(int(s) for s in cfg["data_shape"])

    def data_vocab(self) -> int | None:
        """Token runs: the number of symbols v (the mask token is v); None for continuous data."""
        v = self.read_config().get("data_vocab")
        return None if v is None else int(v)

    def load_config(self):
        """The run's :class:`~diffmem.config.RunConfig` (resolved extras such as n_params are ignored)."""
        from dataclasses import fields

        from .config import RunConfig

        d = self.read_config()
        return RunConfig.from_dict({k: v for k, v in d.items() if k in {f.name for f in fields(RunConfig)}})

    def is_closed_form(self) -> bool:
        from .models import MODELS

        name = (self.read_config().get("model") or {}).get("name")
        return name in MODELS and MODELS[name].kind == "closed_form"

    def evaluation_steps(self) -> list[int]:
        """Steps that can be evaluated: the saved checkpoints (a closed form: step 0 only)."""
        return [0] if self.is_closed_form() else self.checkpoint_steps()

    def load_denoiser(self, step: int | None = None, device="cpu", dataset=None):
        """The denoiser at checkpoint ``step`` (default: the last one), in eval mode; returns ``(den, cfg)``.

        A closed-form run (``model.name=empirical`` ...) is rebuilt from its
        data and training subset; its only step is 0.
        """
        from .data import load_dataset
        from .models import MODELS, build_model

        cfg = self.load_config()
        shape = self.data_shape()
        if MODELS[cfg.model.name].kind == "closed_form":
            if step not in (None, 0):
                raise DiffmemError(f"run {self.path} is a closed form ({cfg.model.name}): its only step is 0")
            ds = dataset if dataset is not None else load_dataset(cfg.data)
            den, _ = build_model(cfg.model, shape, ds, ds.subset(cfg.n, cfg.subset_seed, cfg.subset_offset).to(device))
            return den, cfg
        steps = self.checkpoint_steps()
        if not steps:
            raise DiffmemError(f"run {self.path} has no checkpoints")
        state = self.load_weights(steps[-1] if step is None else step, device)
        den, _ = build_model(cfg.model, shape, vocab=self.data_vocab())
        den = den.to(device)
        try:
            den.load_state_dict(state)
        except RuntimeError as e:
            raise DiffmemError(f"checkpoint of {self.path} does not fit its config's model "
                               f"({str(e).splitlines()[0][:120]})") from None
        den.eval()
        return den, cfg

    # -- status (wall time, how the run ended)
    def read_status(self) -> dict:
        p = self.path / self.STATUS
        if not p.exists():
            return {}
        try:
            return json.loads(p.read_text())
        except json.JSONDecodeError:
            return {}

    def write_status(self, status: dict) -> None:
        atomic_write_json(self.path / self.STATUS, status)

    # -- metrics
    def read_metrics(self) -> list[dict]:
        return read_metrics(self.path)

    def append_metrics(self, records: Iterable[dict]) -> None:
        """Append records, one JSON object per line (the only way metrics are written)."""
        append_jsonl(self.metrics_path, records)

    def read_evaluations(self) -> list[dict]:
        """Records of later re-evaluations (``diffmem evaluate``), kept apart from the training metrics."""
        return _read_jsonl(self.evaluations_path)

    def truncate_metrics(self, last_step: int) -> None:
        """Keep only complete metric lines with ``step <= last_step`` (after a kill)."""
        if not self.metrics_path.exists():
            return
        keep = []
        for line in self.metrics_path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("step", -1) <= last_step:
                keep.append(line)
        atomic_write_text(self.metrics_path, "".join(line + "\n" for line in keep))

    def metric_series(self, name: str, **kw):
        return metric_series(self.path, name, **kw)

    # -- checkpoints
    def checkpoint_steps(self) -> list[int]:
        d = self.path / self.CHECKPOINTS
        if not d.is_dir():
            return []
        out = []
        for p in d.glob("step_*.safetensors"):
            try:
                out.append(int(p.stem.split("_")[1]))
            except (IndexError, ValueError):
                continue
        return sorted(out)

    def save_weights(self, step: int, module) -> Path:
        from safetensors.torch import save_file

        tensors = {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}
        path = self.checkpoint_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write(path, lambda p: save_file(tensors, str(p)))

    def load_weights(self, step: int, device="cpu") -> dict:
        """The state dict saved at ``step`` (a one-line error naming the file if it is missing or bad)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        path = self.checkpoint_path(step)
        if not path.is_file():
            have = self.checkpoint_steps()
            raise DiffmemError(f"run {self.path} has no checkpoint at step {step}"
                               + (f" (it has {len(have)}, from {have[0]} to {have[-1]})" if have else ""))
        try:
            return load_file(str(path), device=str(device))
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DiffmemError(f"checkpoint {path} is corrupt or truncated ({msg[:120]})") from None

    # -- resumable state
    def save_state(self, state: dict) -> None:
        import torch

        atomic_write(self.state_path, lambda p: torch.save(state, p))

    def load_state(self, device="cpu") -> dict:
        st = _load_torch_state(self.state_path, device)
        missing = {"model", "optim", "step"} - set(st)
        if missing:
            raise DiffmemError(f"{self.state_path} is not a diffmem state file (missing {', '.join(sorted(missing))})")
        return st

    # -- samples
    def save_samples(self, step: int, x: np.ndarray) -> Path:
        path = self.samples_path(step)
        path.parent.mkdir(parents=True, exist_ok=True)
        x = np.asarray(x)  # token sequences stay integers; anything else is stored as float32
        return atomic_write_npy(path, x.astype(np.int64 if np.issubdtype(x.dtype, np.integer) else np.float32))

    def sample_steps(self) -> list[int]:
        d = self.path / self.SAMPLES
        return sorted(int(p.stem.split("_")[1]) for p in d.glob("step_*.npy")) if d.is_dir() else []

    def load_samples(self, step: int) -> np.ndarray:
        path = self.samples_path(step)
        if not path.is_file():
            raise DiffmemError(f"run {self.path} has no samples at step {step} (eval.save_samples was off?)")
        try:
            return np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise DiffmemError(f"cannot read samples {path}: {e}") from None


def load_denoiser(run_dir: str | Path, step: int | None = None, device="cpu"):
    """``Run(run_dir).load_denoiser(step, device)``: the denoiser of a run at a checkpoint, and its config."""
    return Run(run_dir).load_denoiser(step, device)


# ---------------------------------------------------------------------------
# reading (module-level functions kept for the analysis code)


def read_metrics(run_dir: str | Path) -> list[dict]:
    """All metric records of ``RUN/metrics.jsonl``, in file order.

    A run killed mid-write can leave a truncated last line; it is skipped.
    A malformed line anywhere else is an error (the file is append-only, so
    only the last line can be partial).  A missing file gives ``[]``.
    """
    return _read_jsonl(Path(run_dir) / Run.METRICS)


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append records to a JSON-lines file in one write (metrics, evaluations)."""
    lines = "".join(json.dumps(r) + "\n" for r in records)
    if lines:
        with Path(path).open("a") as f:
            f.write(lines)


def _read_jsonl(path: Path) -> list[dict]:
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
) -> tuple[np.ndarray, ...]:
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
        more than once the last record wins.
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

    return (steps, col("value"), col("error")) + tuple(col(k) for k in extra)


def read_config(run_dir: str | Path) -> dict:
    """``RUN/config.json`` as a dict (DiffmemError if missing or invalid)."""
    path = Path(run_dir) / Run.CONFIG
    try:
        d = json.loads(path.read_text())
    except FileNotFoundError:
        raise DiffmemError(f"{run_dir} is not a run directory (no config.json)") from None
    except json.JSONDecodeError as e:
        raise DiffmemError(f"{path}: invalid JSON ({e.msg})") from None
    if not isinstance(d, dict):
        raise DiffmemError(f"{path}: expected a JSON object")
    return d


def read_schedule(run_dir: str | Path) -> list[int]:
    """Checkpoint steps of ``RUN/schedule.json`` (``[]`` if absent)."""
    path = Path(run_dir) / Run.SCHEDULE
    if not path.exists():
        return []
    return [int(s) for s in json.loads(path.read_text()).get("checkpoints", [])]


def run_n(config: dict) -> int:
    """Training-set size of a resolved config."""
    return int(config["n"])


def run_width(config: dict) -> int | None:
    """Model width: ``model.width``, else the resolved backbone option, else None."""
    for sec in ("model", "model_options"):
        d = config.get(sec) or {}
        if isinstance(d, dict) and d.get("width") is not None:
            return int(d["width"])
    return None


def run_steps(config: dict) -> int | None:
    """Total training steps (``train.steps`` or top-level ``steps``)."""
    train = config.get("train")
    if isinstance(train, dict) and "steps" in train:
        return int(train["steps"])
    return int(config["steps"]) if "steps" in config else None


def run_n_params(config: dict) -> int | None:
    """Trainable parameter count (``n_params``, top level or under ``model``)."""
    if "n_params" in config:
        return None if config["n_params"] is None else int(config["n_params"])
    model = config.get("model") or {}
    if isinstance(model, dict) and "n_params" in model:
        return int(model["n_params"])
    return None


# ---------------------------------------------------------------------------
# sweeps


def write_sweep_index(sweep_dir: str | Path, runs: list[dict]) -> Path:
    """``SWEEP/sweep.json``: ``{"runs": [{"dir": name, ...}, ...]}``."""
    sweep = Path(sweep_dir)
    sweep.mkdir(parents=True, exist_ok=True)
    return atomic_write_json(sweep / "sweep.json", {"runs": runs})


def read_sweep_index(sweep_dir: str | Path) -> list[dict]:
    """The entries of ``SWEEP/sweep.json`` as dicts (``dir`` and, written by :func:`diffmem.sweep.run_sweep`,
    ``status``, ``error``, ``attempts``); ``[]`` without an index."""
    index = Path(sweep_dir) / "sweep.json"
    if not index.exists():
        return []
    try:
        data = json.loads(index.read_text())
    except json.JSONDecodeError as e:
        raise DiffmemError(f"{index}: invalid JSON ({e.msg})") from None
    entries = data.get("runs", []) if isinstance(data, dict) else data
    return [e if isinstance(e, dict) else {"dir": e} for e in entries]


def list_runs(sweep_dir: str | Path) -> list[Path]:
    """Run directories of a sweep.

    With ``SWEEP/sweep.json``: every run it lists (a list, or ``{"runs":
    [...]}``; entries are paths relative to the sweep or dicts with a
    ``"dir"`` key); a listed run whose directory is missing is an error (a
    report that silently drops a run would be wrong); a run recorded as
    ``"status": "failed"`` is left out (the report lists it apart).  Without it: every
    sub-directory holding a ``config.json``, sorted by name.
    """
    sweep = Path(sweep_dir)
    if not sweep.is_dir():
        raise DiffmemError(f"sweep directory not found: {sweep}")
    if (sweep / Run.CONFIG).exists():
        raise DiffmemError(f"{sweep} is a run directory, not a sweep (a sweep holds run directories and "
                           "sweep.json); give the folder above it")
    index = sweep / "sweep.json"
    if index.exists():
        runs, missing = [], []
        for e in read_sweep_index(sweep):
            rel = e.get("dir") or e.get("path") or e.get("run_dir")
            if rel is None or e.get("status") == "failed":  # failed runs are reported apart, not analysed
                continue
            p = Path(rel)
            p = p if p.is_absolute() else sweep / p
            (runs if (p / Run.CONFIG).exists() else missing).append(p)
        if missing:
            raise DiffmemError(f"{index} lists {len(missing)} run(s) that do not exist or never started "
                               f"(first: {missing[0].name}); finish the sweep (re-run it) or remove them from "
                               "sweep.json")
        return runs
    return sorted(p for p in sweep.iterdir() if p.is_dir() and (p / Run.CONFIG).exists())
