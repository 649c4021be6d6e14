"""The memorisation monitor as a PyTorch Lightning callback (optional extra: ``pip install diffmem[lightning]``).

A thin wrapper: every decision is :class:`diffmem.monitor.MemorizationMonitor`'s::

    from diffmem.monitor import MemorizationMonitor, FmemAbove
    from diffmem.monitor_lightning import MemorizationCallback

    monitor = MemorizationMonitor(train_images, total_steps=20_000, rules=[FmemAbove(0.1)])
    trainer = lightning.Trainer(max_steps=20_000, callbacks=[MemorizationCallback(monitor)])
    trainer.fit(module, loader)

After each training batch (``trainer.global_step`` optimiser steps done) the
monitor measures when the step is on its schedule, logs ``diffmem/f_mem``
(and ``diffmem/gap_peak``) through ``pl_module.log``, and sets
``trainer.should_stop`` when a rule fires; the reason is in
``monitor.stop_reason``.  The model is sampled as a denoiser: by default the
LightningModule itself (``forward(x, sigma)``), else ``denoiser(pl_module)``,
or through ``sample_fn(pl_module, n)`` for any other generator.  The
monitor's state goes into Lightning checkpoints (``state_dict``), so
``trainer.fit(..., ckpt_path=...)`` continues its history.
"""

from __future__ import annotations

from typing import Callable

try:
    from lightning.pytorch import Callback as _LightningCallback
except ImportError:  # pragma: no cover - the older package name
    try:
        from pytorch_lightning import Callback as _LightningCallback
    except ImportError:
        from .errors import DiffmemError

        raise DiffmemError("the Lightning callback needs PyTorch Lightning: pip install 'diffmem[lightning]'") from None

from .monitor import MemorizationMonitor

__all__ = ["MemorizationCallback"]


class MemorizationCallback(_LightningCallback):
    """Run a :class:`~diffmem.monitor.MemorizationMonitor` inside ``Trainer.fit`` (module docstring)."""

    def __init__(self, monitor: MemorizationMonitor, denoiser: Callable | None = None,
                 sample_fn: Callable | None = None, log: bool = True):
        self.monitor, self.denoiser, self.sample_fn, self.log = monitor, denoiser, sample_fn, log

    def _model(self, pl_module) -> dict:
        if self.sample_fn is not None:
            return {"sample_fn": lambda n: self.sample_fn(pl_module, n)}
        return {"denoiser": self.denoiser(pl_module) if self.denoiser is not None else pl_module}

    def _step(self, trainer, pl_module, step: int) -> None:
        entry = self.monitor.step(step, **self._model(pl_module))
        if entry is not None and self.log and entry.get("f_mem") is not None:
            pl_module.log("diffmem/f_mem", float(entry["f_mem"]))
            if entry.get("gap_peak") is not None:
                pl_module.log("diffmem/gap_peak", float(entry["gap_peak"]))
        if self.monitor.should_stop:
            trainer.should_stop = True

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.global_step == 0:
            self.monitor.step(0, **self._model(pl_module))  # the initial model (step 0 of the schedule)
        if self.monitor.should_stop:
            trainer.should_stop = True

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._step(trainer, pl_module, int(trainer.global_step))

    def state_dict(self) -> dict:
        return self.monitor.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.monitor.load_state_dict(state_dict)
