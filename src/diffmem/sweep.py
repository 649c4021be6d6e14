"""Sweeps over (n, width, seed): a directory of run directories plus ``sweep.json``.

Executors share one interface, ``concurrent.futures.Executor.map``-like:

* ``"local"`` (default): a process pool on this machine; the CPU threads are
  split between workers (``threads = cores // workers``).
* ``"serial"``: in this process (debugging, tests).
* ``"submitit"``: a SLURM job array through `submitit` (optional dependency,
  imported only when asked for); ``slurm`` options are passed to
  ``AutoExecutor.update_parameters``.

A sweep is restartable: each run resumes from its own ``state.pt``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import os
from pathlib import Path

from .config import RunConfig
from .errors import DiffmemError
from .rundir import write_sweep_index
from .train import train

__all__ = ["plan_sweep", "run_sweep"]


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
    cfg_dict, run_dir, threads = args
    cfg = RunConfig.from_dict(cfg_dict)
    if threads:
        cfg.threads = threads
    train(cfg, run_dir, resume=True, progress=False)
    return run_dir


def run_sweep(plan: list[tuple[str, RunConfig]], out_dir: str | Path, workers: int = 1, executor: str = "local",
              slurm: dict | None = None, progress: bool = True) -> Path:
    """Run every config of ``plan`` into ``out_dir/<name>``; write ``out_dir/sweep.json``."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DiffmemError(f"--out {out} is a file, not a directory")
    write_sweep_index(out, [{"dir": name, "n": c.n, "width": c.model.width, "seed": c.seed} for name, c in plan])
    cores = os.cpu_count() or 1
    workers = max(1, min(workers, len(plan)))
    threads = max(1, cores // workers)
    jobs = [(c.to_dict(), str(out / name), threads if executor == "local" else 0) for name, c in plan]
    # Longest runs first so the pool is not left waiting on one straggler.
    jobs.sort(key=lambda j: -j[0]["steps"] * min(j[0]["n"], j[0]["batch_max"]))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(jobs), desc="sweep runs", unit="run", dynamic_ncols=True)
    try:
        if executor == "serial" or (executor == "local" and workers == 1):
            for j in jobs:
                _run_one((j[0], j[1], j[2] if executor == "local" else 0))
                if bar:
                    bar.update(1)
        elif executor == "local":
            ctx = mp.get_context("spawn")
            with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as ex:
                for fut in cf.as_completed([ex.submit(_run_one, j) for j in jobs]):
                    fut.result()
                    if bar:
                        bar.update(1)
        elif executor == "submitit":
            try:
                import submitit
            except ImportError:
                raise DiffmemError("executor 'submitit' needs the submitit package: pip install submitit") from None
            ex = submitit.AutoExecutor(folder=str(out / "slurm"))
            ex.update_parameters(**(slurm or {}))
            for job in ex.map_array(_run_one, jobs):
                job.result()
                if bar:
                    bar.update(1)
        else:
            raise DiffmemError(f"unknown executor {executor!r}; choose local, serial or submitit")
    finally:
        if bar:
            bar.close()
    return out
