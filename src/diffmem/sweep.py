"""Sweeps over (n, width, seed): a directory of run directories plus ``sweep.json``.

Executors share one interface, :meth:`Executor.map` ``(fn, jobs) -> (job, error or None)`` as runs
complete:

* ``"local"`` (default): a process pool on this machine; the CPU threads are
  split between workers (``threads = cores // workers``).  A SIGTERM to the
  sweep (and Ctrl-C) terminates the workers before the sweep exits; a worker
  also gets SIGTERM if the sweep process dies without cleaning up (Linux), so
  no orphan keeps writing into a run directory.
* ``"serial"``: in this process (debugging, tests).
* ``"submitit"``: a SLURM job array through `submitit` (optional extra
  ``diffmem[cluster]``, imported only when asked for).  :func:`cluster_options`
  turns ``partition``, ``time`` (minutes), ``gpus``, ``mem`` (GB), ``cpus``,
  ``array_parallelism``, ``account``, ``qos``, ``constraint`` (from the
  command line or a TOML file) into submitit's parameters; ``cluster="local"``
  runs the same job array as local subprocesses (submitit's own local
  executor: what the tests use), ``"debug"`` in this process.

``SWEEP/sweep.json`` records each run's ``status`` (``pending``, ``done``,
``failed`` with its ``error``, ``interrupted``) and ``attempts``; it is rewritten (atomically) as each run completes.  A run that
raises is recorded and the others go on.  Re-running the same sweep skips
finished runs, retries failed ones and resumes interrupted ones from their
own ``state.pt``.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import math
import multiprocessing as mp
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

from .config import RunConfig
from .errors import DiffmemError
from .rundir import Run, read_sweep_index, write_sweep_index
from .train import train

__all__ = ["plan_sweep", "run_sweep", "cluster_options", "EXECUTORS", "SweepTerminated", "sweep_failures",
           "load_cluster_options", "CLUSTER_KEYS"]

EXECUTORS = ("local", "serial", "submitit")


def run_name(n: int, width: int | None, seed: int) -> str:
    return f"n{n:06d}_w{width:04d}_s{seed}" if width is not None else f"n{n:06d}_s{seed}"


def plan_sweep(base: RunConfig, ns: list[int], widths: list[int] | None = None, seeds: list[int] | None = None,
               steps_for=None) -> list[tuple[str, RunConfig]]:
    """One config per (width, n, seed).  ``steps_for(n, width) -> steps`` lets the
    training length grow with n (τ_mem ∝ n needs it); default: ``base.steps``."""
    if not ns:
        raise DiffmemError("a sweep needs at least one value of n")
    out = []
    for w in widths or [base.model.width]:
        for n in ns:
            for s in seeds or [base.seed]:
                cfg = dataclasses.replace(base, n=int(n), seed=int(s),
                                          model=dataclasses.replace(base.model, width=None if w is None else int(w)))
                if steps_for is not None:
                    cfg.steps = int(steps_for(int(n), w))
                cfg.validate()
                out.append((run_name(n, w, s), cfg))
    return out


def _run_one(args) -> str:
    """One run (in a worker process, a SLURM job or this process)."""
    cfg_dict, run_dir, threads = args
    cfg = RunConfig.from_dict(cfg_dict)
    if threads:
        cfg.threads = threads
    train(cfg, run_dir, resume=True, progress=False)
    return run_dir


# ---------------------------------------------------------------------------
# cluster options


# name -> (submitit parameter, type, help)
CLUSTER_KEYS = {
    "partition": ("slurm_partition", str, "SLURM partition"),
    "time": ("timeout_min", int, "time limit per run, minutes (default 1440)"),
    "gpus": ("gpus_per_node", int, "GPUs per run"),
    "mem": ("mem_gb", float, "memory per run, GB"),
    "cpus": ("cpus_per_task", int, "CPU cores per run (also the run's torch threads)"),
    "array_parallelism": ("slurm_array_parallelism", int, "runs of the array at once"),
    "account": ("slurm_account", str, "SLURM account"),
    "qos": ("slurm_qos", str, "SLURM quality of service"),
    "constraint": ("slurm_constraint", str, "SLURM constraint"),
    "cluster": ("cluster", str, "slurm (default where sbatch exists), local (subprocesses here) or debug"),
}
DEFAULT_TIME_MIN = 24 * 60  # submitit's own defaults (5 min on SLURM, 2 min locally) kill real runs


def cluster_options(values: dict) -> dict:
    """Validate cluster options (names of :data:`CLUSTER_KEYS`, e.g. from ``--slurm-*`` flags or a TOML
    ``[slurm]`` table) and return submitit's parameters (``cluster`` kept apart)."""
    out: dict = {}
    for key, v in values.items():
        if v is None:
            continue
        if key not in CLUSTER_KEYS:
            raise DiffmemError(f"unknown cluster option {key!r}; known: {', '.join(CLUSTER_KEYS)}")
        name, typ, _ = CLUSTER_KEYS[key]
        try:
            v = typ(v) if not isinstance(v, bool) else None
        except (TypeError, ValueError):
            v = None
        if v is None or (typ is not str and not (math.isfinite(v) and v > 0)) or (typ is str and not v.strip()):
            raise DiffmemError(f"cluster option {key} must be a {'non-empty string' if typ is str else 'positive number'}"
                               f", got {values[key]!r}")
        out[name] = v
    if out.get("cluster") not in (None, "slurm", "local", "debug"):
        raise DiffmemError(f"cluster must be slurm, local or debug, got {out['cluster']!r}")
    out.setdefault("timeout_min", DEFAULT_TIME_MIN)
    return out


def load_cluster_options(path: str | None, given: dict | None = None) -> dict | None:
    """Cluster options from a TOML file (a ``[slurm]`` table, or top-level keys) overridden by ``given``
    (e.g. the ``--slurm-*`` flags; None values ignored); validated by :func:`cluster_options`.
    None when neither gives any."""
    vals: dict = {}
    if path:
        try:
            import tomllib
        except ImportError:  # Python 3.10
            import tomli as tomllib  # type: ignore
        p = Path(path)
        if not p.is_file():
            raise DiffmemError(f"cluster config file not found: {p}")
        try:
            data = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise DiffmemError(f"cannot parse TOML cluster config {p}: {str(e).splitlines()[0]}") from None
        table = data.get("slurm", data)
        if not isinstance(table, dict):
            raise DiffmemError(f"{path}: [slurm] must be a table of cluster options")
        vals.update(table)
    vals.update({k: v for k, v in (given or {}).items() if v is not None})
    return cluster_options(vals) if vals else None


# ---------------------------------------------------------------------------
# executors


class SweepTerminated(KeyboardInterrupt):
    """The sweep process got SIGTERM; its runs were stopped and are resumable.  A ``KeyboardInterrupt``
    (not an ``Exception``), so that no ``except Exception`` records it as a failed run."""


def _one_line(e: BaseException) -> str:
    """An error as one line, ``Type: message``; a job's traceback (submitit's error text) is reduced to the
    exception line it ends with."""
    lines = str(e).splitlines()
    if any(ln.startswith("Traceback (most recent call last)") for ln in lines):
        start = max(i for i, ln in enumerate(lines) if ln.startswith("Traceback (most recent call last)"))
        last = [ln for ln in lines[start + 1:] if ln.strip() and not ln.startswith((" ", "\t", "-"))]
        if last:
            kind, sep, msg = last[0].partition(": ")
            return " ".join(f"{kind.rsplit('.', 1)[-1]}{sep}{msg}".split())
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _die_with_parent() -> None:  # worker initializer
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: SIGTERM when the sweep process dies
    except Exception:  # not Linux: the sweep's own SIGTERM handler still terminates the workers
        pass


class Executor:
    """Runs ``fn(job)`` for every job; yields ``(job, error)`` as each completes (``error`` None on success)."""

    def map(self, fn, jobs: list) -> Iterator[tuple[object, str | None]]:
        raise NotImplementedError


class SerialExecutor(Executor):
    def map(self, fn, jobs):
        for j in jobs:
            try:
                fn(j)
            except Exception as e:  # a run that fails is recorded; the others go on
                yield j, _one_line(e)
            else:
                yield j, None


class LocalExecutor(Executor):
    def __init__(self, workers: int):
        self.workers = workers

    def map(self, fn, jobs):
        ex = cf.ProcessPoolExecutor(max_workers=self.workers, mp_context=mp.get_context("spawn"),
                                    initializer=_die_with_parent)
        clean = False
        try:
            futures = {ex.submit(fn, j): j for j in jobs}
            for fut in cf.as_completed(futures):
                err = fut.exception()
                yield futures[fut], None if err is None else _one_line(err)
            clean = True
        finally:
            if clean:
                ex.shutdown(wait=True)
            else:  # SIGTERM, Ctrl-C or the consumer stopped: no worker may go on writing into a run directory
                procs = list((getattr(ex, "_processes", None) or {}).values())
                ex.shutdown(wait=False, cancel_futures=True)
                for p in procs:
                    if p.is_alive():
                        p.terminate()
                for p in procs:
                    p.join(timeout=30)


class SubmititExecutor(Executor):
    def __init__(self, folder: Path, params: dict):
        try:
            import submitit
        except ImportError:
            raise DiffmemError("executor 'submitit' needs the submitit package: pip install 'diffmem[cluster]'") from None
        params = dict(params)
        cluster = params.pop("cluster", None)
        try:
            self.ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
            self.ex.update_parameters(**params)
        except (RuntimeError, ValueError, NameError) as e:
            raise DiffmemError(f"submitit: {_one_line(e)}") from None
        self.poll = 0.5 if self.ex.cluster in ("local", "debug") else 15.0

    def map(self, fn, jobs):
        from submitit.helpers import as_completed

        submitted = self.ex.map_array(fn, jobs)
        by_id = {id(job): j for job, j in zip(submitted, jobs)}
        clean = False
        try:
            for job in as_completed(submitted, poll_frequency=self.poll):
                try:
                    job.result()
                except Exception as e:
                    yield by_id[id(job)], _one_line(e)
                else:
                    yield by_id[id(job)], None
            clean = True
        finally:
            if not clean:
                for job in submitted:
                    with contextlib.suppress(Exception):
                        if not job.done():
                            job.cancel(check=False)


@contextlib.contextmanager
def _sigterm_raises():
    """Turn SIGTERM into :class:`SweepTerminated` while the sweep runs (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SweepTerminated("terminated by SIGTERM; its runs were stopped: re-run the same command to resume")

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ---------------------------------------------------------------------------
# the sweep


def _finished(run_dir: Path, cfg: RunConfig) -> bool:
    """Whether ``run_dir`` holds this run, finished (or stopped by a callback) at this length."""
    run = Run(run_dir)
    if not run.exists():
        return False
    st = run.read_status()
    if not (st.get("finished") or st.get("stopped_by")):
        return False
    with contextlib.suppress(Exception):
        return run.read_config().get("steps") == cfg.steps
    return False


def run_sweep(plan: list[tuple[str, RunConfig]], out_dir: str | Path, workers: int = 1, executor: str = "local",
              slurm: dict | None = None, progress: bool = True) -> Path:
    """Run every config of ``plan`` into ``out_dir/<name>``; record each run's status in ``out_dir/sweep.json``.

    A run that fails is recorded with its error (``status: failed``) and the
    others finish; finished runs are skipped, failed and interrupted ones run
    again.  ``slurm``: submitit options for ``executor="submitit"``
    (:func:`cluster_options` names or submitit's own parameter names).
    Returns ``out_dir``.
    """
    if executor not in EXECUTORS:
        raise DiffmemError(f"unknown executor {executor!r}; choose {', '.join(EXECUTORS)}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DiffmemError(f"--out {out} is a file, not a directory")
    params = None
    if executor == "submitit":
        raw = dict(slurm or {})
        named = {k: raw.pop(k) for k in list(raw) if k in CLUSTER_KEYS}
        params = {**cluster_options(named), **raw}
    old = {e.get("dir"): e for e in read_sweep_index(out)} if (out / "sweep.json").exists() else {}
    entries, todo = {}, []
    for name, c in plan:
        prev = old.get(name, {})
        done = _finished(out / name, c)
        entries[name] = {"dir": name, "n": c.n, "width": c.model.width, "seed": c.seed,
                         "status": "done" if done else "pending", "error": None,
                         "attempts": int(prev.get("attempts", 1 if done else 0))}
        if not done:
            todo.append((name, c))
    out.mkdir(parents=True, exist_ok=True)

    def save():
        write_sweep_index(out, list(entries.values()))

    cores = os.cpu_count() or 1
    workers = max(1, min(workers, max(len(todo), 1)))
    threads = max(1, cores // workers)
    if executor == "submitit":
        threads = int(params.get("cpus_per_task", 0))
        ex: Executor = SubmititExecutor(out / "slurm", params)
    elif executor == "serial":
        threads, ex = 0, SerialExecutor()
    else:
        ex = SerialExecutor() if workers == 1 else LocalExecutor(workers)
    jobs = [(c.to_dict(), str(out / name), threads) for name, c in todo]
    # Longest runs first so the pool is not left waiting on one straggler.
    jobs.sort(key=lambda j: -j[0]["steps"] * min(j[0]["n"], j[0]["batch_max"]))
    for _, run_dir, _ in jobs:
        entries[Path(run_dir).name]["attempts"] += 1
    save()
    bar = None
    if progress and jobs:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="sweep runs", unit="run", dynamic_ncols=True)
    try:
        with _sigterm_raises(), contextlib.closing(ex.map(_run_one, jobs)) as results:
            for job, err in results:
                e = entries[Path(job[1]).name]
                e.update(status="failed" if err else "done", error=err)
                save()
                if bar:
                    bar.update(1)
    finally:
        interrupted = [e for e in entries.values() if e["status"] == "pending"]
        for e in interrupted:
            e["status"] = "interrupted"
        if interrupted:
            save()
        if bar:
            bar.close()
    return out


def sweep_failures(out_dir: str | Path) -> list[dict]:
    """The runs of a sweep recorded as failed (``dir``, ``error``, ``attempts``)."""
    return [e for e in read_sweep_index(out_dir) if e.get("status") == "failed"]
