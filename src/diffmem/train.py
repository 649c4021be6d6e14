"""The training loop: ``train(cfg, run, callbacks)`` with log-spaced checkpoints and exact resume.

What happens at a checkpoint (evaluation, metric logging, a progress bar, a
stopping rule) is done by callbacks (:mod:`diffmem.callbacks`); the run
directory's files are written through :class:`diffmem.rundir.Run` only.

Randomness is *reseeded from (seed, step)* at every step (edm2 practice): the
batch of step k, its noise levels, its noise draws and dropout masks depend
only on ``(seed, k)``.  A run killed at any point and resumed from its last
checkpoint therefore reproduces the uninterrupted run bit for bit (same
device, same thread count).  For the same reason a finished run can be
extended: ``diffmem train --out RUN steps=LARGER`` continues it, and its
weights at every step equal those of a run trained for LARGER steps from the
start (the checkpoint schedule keeps the old points and adds the new
schedule's points beyond the old end).

Batch policy (BUBM25): ``batch = min(n, batch_max)``; when ``n <= batch_max``
every step is a full-batch step over the n training points; otherwise the
batches walk through a fresh seeded permutation of the n points each epoch.

A closed-form model (``model.name=empirical|gaussian|exact``) has no training
steps: its "run" is one evaluation at step 0.

Token sequences (``data=rhm:...`` with ``model.name=transformer``, FSW25) go
through the same loop: the step's loss is the masked-diffusion loss
(:func:`diffmem.masked_diffusion.masked_diffusion_loss`, antithetic times and
masks from the step's generator) instead of the denoising loss, and the
checkpoint measurements are :class:`diffmem.evaluate_tokens.SequenceEvaluator`'s.

``loss_tikhonov_c = c > 0`` adds BDKOS25's Tikhonov term ``c mean_dims s²`` to
each sample's loss (:func:`diffmem.losses.tikhonov_term`), ``s`` the score named
by the parametrisation (the VP score for ``bdkos25_vp``, else the VE score);
with ``c = 0`` (the default) the loss is computed exactly as without it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import __version__
from .callbacks import Callback, TrainContext, standard_callbacks
from .checkpoints import log_checkpoint_schedule
from .config import EXECUTION_KEYS, RunConfig
from .errors import DiffmemError
from .evaluate import evaluator_class
from .losses import dsm_loss
from .masked_diffusion import masked_diffusion_loss
from .models import MODELS, build_model, count_params, parametrisation_name
from .parametrisation import get_parametrisation
from .rundir import Run

__all__ = ["train", "step_seed"]


def step_seed(seed: int, step: int, stream: int = 0) -> int:
    """A 63-bit seed for (run seed, step, stream), via numpy's SeedSequence."""
    return int(np.random.SeedSequence([int(seed), int(step), int(stream)]).generate_state(1, np.uint64)[0] >> np.uint64(1))


@functools.lru_cache(maxsize=4)
def _epoch_permutation(n: int, epoch: int, seed: int) -> torch.Tensor:
    """The data order of one epoch (cached: consecutive steps share it; callers only slice it)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(step_seed(seed, epoch, 1)))


def _batch_indices(n: int, batch: int, step: int, seed: int) -> torch.Tensor:
    """Indices of the batch of ``step`` (1-based); a function of (n, batch, step, seed) only."""
    if batch >= n:
        return torch.arange(n)
    start = (step - 1) * batch
    out, pos = [], start
    while pos < start + batch:
        epoch, off = divmod(pos, n)
        perm = _epoch_permutation(n, epoch, seed)
        take = min(n - off, start + batch - pos)
        out.append(perm[off : off + take])
        pos += take
    return torch.cat(out)


def _make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    o = cfg.optim
    # foreach=True: one fused call per update instead of a Python loop over the parameters
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, foreach=True)
    return torch.optim.Adam(params, lr=o.lr, betas=(o.beta1, o.beta2), weight_decay=o.weight_decay, foreach=True)


def _seed_global(seed: int, device: torch.device) -> None:
    """Seed the global RNG of the device in use (dropout draws from it).

    Same effect as ``torch.manual_seed`` for that device, without the latter's
    lazy seeding of every accelerator backend, which formats a Python stack
    trace on each call (~0.4 ms per training step).
    """
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def _callback_keys(callbacks: Sequence[Callback]) -> list[str]:
    keys, seen = [], {}
    for cb in callbacks:
        name = type(cb).__name__
        seen[name] = seen.get(name, 0) + 1
        keys.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return keys


# config keys added later, with the value that means "as before" (dotted: inside a section)
_ADDED_KEYS = {"loss_tikhonov_c": 0.0, "model.heads": None}


def _resume_plan(run: Run, cfg: RunConfig, schedule: list[int]) -> list[int]:
    """Check that ``run`` holds this config; return the schedule to use (extended if steps grew)."""
    old = run.read_config()
    for key, default in _ADDED_KEYS.items():  # a run written before a key existed holds its default
        *sec, k = key.split(".")
        node = old if not sec else old.setdefault(sec[0], {})
        node.setdefault(k, default)
    new = {k: v for k, v in cfg.to_dict().items() if k not in EXECUTION_KEYS}
    diff = sorted(k for k in new if k != "steps" and old.get(k) != new[k])
    if diff:
        raise DiffmemError(f"run directory {run.path} holds a run with a different config ({', '.join(diff)} "
                           "differ); use another --out")
    old_steps = int(old.get("steps", cfg.steps))
    if cfg.steps < old_steps:
        raise DiffmemError(f"run directory {run.path} holds a run of {old_steps} steps; give steps ≥ {old_steps} "
                           "to extend it, or another --out")
    old_sched = run.read_schedule() or schedule
    if cfg.steps == old_steps:
        return old_sched
    return sorted(set(old_sched) | {s for s in schedule if s > old_steps})


def train(cfg: RunConfig, run: str | Path | Run, callbacks: Sequence[Callback] = (), *, resume: bool = True,
          progress: bool = True, dataset=None, stop_after: int | None = None) -> Run:
    """Train one model on the checkpoint schedule; return its :class:`~diffmem.rundir.Run`.

    Args:
        cfg: the run's configuration (validated here).
        run: the run directory (created; resumed if it holds this run).
        callbacks: extra callbacks, called after the standard ones (evaluation,
            running loss, metrics file, progress bar).
        resume: continue a run found in ``run`` (else refuse to touch it).
        progress: show a progress bar.
        dataset: an already loaded :class:`diffmem.data.Dataset` (else loaded from ``cfg.data``).
        stop_after: stop as if killed after this step (for tests of resume).

    Everything is checked (config, data, model, evaluation settings, an
    existing run's state file) before the first write.
    """
    from .data import load_dataset

    cfg.validate()
    run = run if isinstance(run, Run) else Run(run)
    if run.path.exists() and not run.path.is_dir():
        raise DiffmemError(f"--out {run.path} is a file, not a directory")
    if run.path.is_dir() and not run.exists() and any(run.path.iterdir()):
        raise DiffmemError(f"--out {run.path} exists and is not a diffmem run directory (no config.json); "
                           "choose an empty or new folder")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = torch.device(cfg.device)

    ds = dataset if dataset is not None else load_dataset(cfg.data)
    train_set = ds.subset(cfg.n, cfg.subset_seed, cfg.subset_offset).to(device)
    ev_cls = evaluator_class(cfg, ds)  # Evaluator, or SequenceEvaluator for token data (a mismatch is an error)
    ev_cls.check(cfg, ds)
    closed = MODELS[cfg.model.name].kind == "closed_form"
    tokens = ds.is_tokens
    batch = min(cfg.n, cfg.batch_max)
    schedule = [0] if closed else log_checkpoint_schedule(cfg.steps, per_decade=cfg.checkpoints_per_decade)

    torch.manual_seed(step_seed(cfg.seed, 0, 2))
    den, opts = build_model(cfg.model, ds.shape, ds, train_set)
    den = den.to(device) if isinstance(den, torch.nn.Module) else den
    opt = None if closed else _make_optimizer(cfg, den.parameters())

    start, state = 0, None
    if run.exists():
        if not resume:
            raise DiffmemError(f"run directory {run.path} already holds a run; choose another --out (or drop "
                               "--no-resume to continue it)")
        if closed:
            schedule = run.read_schedule()
            _resume_plan(run, cfg, schedule)
            if run.read_status().get("finished"):
                return run
        else:
            schedule = _resume_plan(run, cfg, schedule)
        if run.has_state():
            state = run.load_state(device)  # weights_only: a pickled payload is refused, never run
            den.load_state_dict(state["model"])
            opt.load_state_dict(state["optim"])
            start = int(state["step"])
    resolved = cfg.to_dict() | {
        "n_params": None if closed else count_params(den), "batch_size": None if closed else batch,
        "data_shape": list(ds.shape), "model_options": opts, "diffmem_version": __version__,
    } | ({"data_vocab": int(ds.meta["vocab"])} if tokens else {})
    if state is None:
        run.create(resolved, schedule)
    else:
        run.write_config(resolved)
        run.write_schedule(schedule)
        run.truncate_metrics(start)
    evaluator = ev_cls(cfg, ds, train_set, run, device)
    cbs = standard_callbacks(evaluator, progress=progress and not closed) + list(callbacks)
    keys = _callback_keys(cbs)
    if state is not None:
        for k, cb in zip(keys, cbs):
            if k in state.get("callbacks", {}):
                cb.load_state_dict(state["callbacks"][k])
    ctx = TrainContext(cfg=cfg, run=run, dataset=ds, train_set=train_set, device=device, denoiser=den,
                       optimizer=opt, callbacks=cbs, step=start)
    seconds = float(state.get("train_seconds", 0.0)) if state is not None else 0.0
    t0 = time.time()

    def checkpoint(step: int) -> None:
        if closed:
            for cb in cbs:
                cb.on_checkpoint(ctx, step, den)
            return
        den.eval()
        run.save_weights(step, den)
        for cb in cbs:
            cb.on_checkpoint(ctx, step, den)
        run.save_state({"model": den.state_dict(), "optim": opt.state_dict(), "step": step,
                        "callbacks": {k: cb.state_dict() for k, cb in zip(keys, cbs)},
                        "torch_rng": torch.get_rng_state(), "train_seconds": seconds + time.time() - t0})
        den.train()

    def status(finished: bool) -> None:
        run.write_status({"step": ctx.step, "steps": 0 if closed else cfg.steps, "finished": finished,
                          "stopped_by": ctx.stop_reason, "train_seconds": round(seconds + time.time() - t0, 3)})

    for cb in cbs:
        cb.on_train_start(ctx)
    if start == 0 and state is None:
        checkpoint(0)
    ckpt_set = set(schedule)
    if not closed:
        den.train()
        if not tokens:
            par = get_parametrisation(parametrisation_name(cfg.model), cfg.model.sigma_data)
            tik = {"tikhonov_c": cfg.loss_tikhonov_c, "tikhonov_score": par.score} if cfg.loss_tikhonov_c > 0 else {}
        for step in range(start + 1, cfg.steps + 1):
            if ctx.stop_reason is not None:  # asked in on_train_start (e.g. a stopped run re-run): no step
                break
            ctx.step = step
            _seed_global(step_seed(cfg.seed, step, 0), device)  # dropout and anything else on the global RNG
            g = torch.Generator().manual_seed(step_seed(cfg.seed, step, 3))
            y = train_set[_batch_indices(cfg.n, batch, step, cfg.seed).to(device)]
            if tokens:  # masked diffusion (FSW25): mask id = v, times and masks from g
                loss = masked_diffusion_loss(den, y, mask_id=int(ds.meta["vocab"]), generator=g)[0].mean()
            else:
                sigma = par.sigma_sampler(y.shape[0], generator=g, device=device)
                noise = torch.randn(y.shape, generator=g).to(device)
                loss = dsm_loss(den, y, sigma, noise=noise, weighting=par.weighting,
                                sigma_data=par.sigma_data, **tik).loss.mean()
            if not torch.isfinite(loss):
                raise DiffmemError(f"training diverged at step {step} (loss {loss.item()}); lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            lv = float(loss.detach())
            for cb in cbs:
                cb.on_step_end(ctx, step, lv)
            if step in ckpt_set:
                checkpoint(step)
            elif ctx.stop_reason is not None:
                checkpoint(step)  # a stopped run keeps (and evaluates) the weights it stopped with
            if ctx.stop_reason is not None or (stop_after is not None and step >= stop_after):
                break
    for cb in cbs:
        cb.on_train_end(ctx)
    status(finished=ctx.stop_reason is None and ctx.step >= (0 if closed else cfg.steps))
    return run
