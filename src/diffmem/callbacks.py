"""Training callbacks: how anything hooks into a run (evaluation, logging, progress, stopping).

:func:`diffmem.train.train` calls, in list order, on every callback:

=================================  ==========================================================
``on_train_start(ctx)``            once per session, after a resume has restored the state
``on_step_end(ctx, step, loss)``   after each optimiser step (``loss``: the batch loss, a float)
``on_checkpoint(ctx, step, den)``  at each checkpoint, after the weights are saved (``den`` in eval mode)
``on_log(ctx, records)``           whenever a callback logs metric records (``ctx.log``)
``on_train_end(ctx)``              once per session, when the loop ends (finished or stopped)
=================================  ==========================================================

``ctx`` is the :class:`TrainContext`: the config, the :class:`~diffmem.rundir.Run`,
the data, the denoiser, the optimiser and the current ``step``.  A callback
asks the run to stop with ``ctx.request_stop(reason)``; the trainer then
saves (and evaluates) a checkpoint at that step if it is not one already,
records the reason in ``RUN/status.json`` and returns.  A callback with
state implements ``state_dict()`` / ``load_state_dict(d)`` (plain numbers,
strings, lists, dicts and tensors): it is saved in ``RUN/state.pt`` at every
checkpoint and restored on resume, so a resumed run continues every
callback exactly.

A user callback, ten lines (the README's example)::

    class StopBelow(Callback):
        def __init__(self, value):
            self.value = value

        def on_step_end(self, ctx, step, loss):
            if loss < self.value:
                ctx.request_stop(f"training loss {loss:.4g} < {self.value}")

    train(cfg, "runs/r", callbacks=[StopBelow(0.2)])
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["Callback", "TrainContext", "Evaluation", "MetricsLogger", "RunningLoss", "ProgressBar",
           "standard_callbacks"]


@dataclass
class TrainContext:
    """What a callback sees of the run (attributes are live: ``step`` advances)."""

    cfg: Any
    run: Any  # diffmem.rundir.Run
    dataset: Any
    train_set: Any
    device: Any
    denoiser: Any
    optimizer: Any
    callbacks: list
    step: int = 0
    stop_reason: str | None = None

    def log(self, records: list[dict]) -> None:
        """Hand metric records (long format) to every callback's ``on_log``."""
        if records:
            for cb in self.callbacks:
                cb.on_log(self, records)

    def request_stop(self, reason: str) -> None:
        """Ask the trainer to stop after the current step (the first reason is kept)."""
        if self.stop_reason is None:
            self.stop_reason = str(reason)


class Callback:
    """Base class: every hook does nothing.  Override the ones you need."""

    def on_train_start(self, ctx: TrainContext) -> None:
        pass

    def on_step_end(self, ctx: TrainContext, step: int, loss: float) -> None:
        pass

    def on_checkpoint(self, ctx: TrainContext, step: int, denoiser) -> None:
        pass

    def on_log(self, ctx: TrainContext, records: list[dict]) -> None:
        pass

    def on_train_end(self, ctx: TrainContext) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class Evaluation(Callback):
    """Measure the model at every checkpoint (:class:`diffmem.evaluate.Evaluator`) and log the records."""

    def __init__(self, evaluator):
        self.evaluator = evaluator

    def on_checkpoint(self, ctx, step, denoiser):
        ctx.log(self.evaluator(denoiser, step))


class RunningLoss(Callback):
    """Log ``train/loss_running``: the mean batch loss since the previous checkpoint."""

    def __init__(self):
        self.loss_sum, self.loss_count = 0.0, 0

    def on_step_end(self, ctx, step, loss):
        self.loss_sum += loss
        self.loss_count += 1

    def on_checkpoint(self, ctx, step, denoiser):
        if self.loss_count:
            ctx.log([{"step": step, "metric": "train/loss_running", "value": self.loss_sum / self.loss_count,
                      "error": None}])
        self.loss_sum, self.loss_count = 0.0, 0

    def state_dict(self):
        return {"loss_sum": self.loss_sum, "loss_count": self.loss_count}

    def load_state_dict(self, state):
        self.loss_sum, self.loss_count = float(state["loss_sum"]), int(state["loss_count"])


class MetricsLogger(Callback):
    """Append every logged record to ``RUN/metrics.jsonl``."""

    def on_log(self, ctx, records):
        ctx.run.append_metrics(records)


class ProgressBar(Callback):
    """A tqdm bar over the training steps (on stderr)."""

    def __init__(self, desc: str | None = None):
        self.desc, self.bar = desc, None

    def on_train_start(self, ctx):
        from tqdm import tqdm

        desc = self.desc or f"train n={ctx.cfg.n}" + (f" W={ctx.cfg.model.width}" if ctx.cfg.model.width else "")
        self.bar = tqdm(total=ctx.cfg.steps, initial=ctx.step, desc=desc, unit="step", dynamic_ncols=True,
                        leave=False)

    def on_step_end(self, ctx, step, loss):
        self.bar.update(1)

    def on_train_end(self, ctx):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def standard_callbacks(evaluator, progress: bool = True) -> list[Callback]:
    """What ``diffmem train`` uses: evaluation, the running loss, the metrics file, a progress bar."""
    cbs: list[Callback] = [Evaluation(evaluator), RunningLoss(), MetricsLogger()]
    if progress:
        cbs.append(ProgressBar())
    return cbs
