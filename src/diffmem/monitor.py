"""A memorisation monitor for any PyTorch training loop (issue #12 item 4).

:class:`MemorizationMonitor` is a plain object with no framework behind it::

    monitor = MemorizationMonitor(train_images, total_steps=20_000, rules=[FmemAbove(0.1)])
    for step in range(1, 20_001):
        ...                                   # your optimiser step
        monitor.step(step, model)             # measures only at the log-spaced checkpoints
        if monitor.should_stop:
            print(monitor.stop_reason)
            break

At each step of its schedule (:func:`diffmem.checkpoints.log_checkpoint_schedule`:
every step early, then log-uniform, as diffmem's own runs) it generates
``n_samples`` samples with the same per-sample seeds every time, measures
f_mem (BUBM25's ratio test ``d1/d2 < threshold`` against ``train``, with its
Wilson 95 % interval) and, when held-out images are given, KK26's relative
gap ``G(σ)`` per noise level on fixed images and noise.  ``model`` is either a
denoiser ``D(x [B, ...], sigma [B]) -> [B, ...]`` (VE convention ``x = y +
σ n``; an ``nn.Module`` is taken as one, sampled with diffmem's samplers) or
a ``sample_fn(n) -> [n, ...]`` (any generator; f_mem only, unless
``denoiser=`` is also given for the gap).  Samples and ``train`` must live in
the same space.

Stopping is decided by *rules*: objects called as ``rule(step, history) ->
reason or None`` after every :meth:`MemorizationMonitor.step` (and after every
measurement).  The first reason given latches :attr:`should_stop`.  Two are
built in: :class:`FmemAbove` (f_mem, or its Wilson lower bound, above a
threshold) and :class:`StopAtTime` (FSW25: stop at ``α κ n`` steps,
:func:`diffmem.timescales.stopping_time`, κ read from pilot runs with
:meth:`StopAtTime.from_pilots`).  Any callable with that signature is a rule
(the grammar issue #11's rule plugs in here); a rule with state implements
``state_dict`` / ``load_state_dict``.

``state_dict()`` / ``load_state_dict()`` hold the whole history (plain
numbers, strings, lists), so a loop stopped and restarted from a checkpoint
continues the monitor exactly.  The same object is a diffmem
:class:`~diffmem.callbacks.Callback`: passed to :func:`diffmem.train.train` it
reads the evaluator's f_mem and gap records at each checkpoint (no second
measurement) and asks the run to stop; :mod:`diffmem.monitor_lightning` wraps
it for PyTorch Lightning.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from .callbacks import Callback
from .errors import DiffmemError

__all__ = ["MemorizationMonitor", "FmemAbove", "StopAtTime", "StopRule"]

StopRule = Callable[[int, list], "str | None"]  # rule(step, history) -> reason to stop, or None
_STATE_VERSION = 1


@dataclass(frozen=True)
class FmemAbove:
    """Stop once the latest measured f_mem (``bound="value"``) or its Wilson 95 % lower bound
    (``bound="wilson_low"``: significantly above) exceeds ``threshold``."""

    threshold: float = 0.1
    bound: str = "value"

    def __post_init__(self):
        if not 0 <= self.threshold < 1:
            raise DiffmemError(f"FmemAbove: threshold must be in [0, 1), got {self.threshold}")
        if self.bound not in ("value", "wilson_low"):
            raise DiffmemError(f"FmemAbove: bound must be value or wilson_low, got {self.bound!r}")

    def __call__(self, step: int, history: list) -> str | None:
        last = history[-1] if history else None
        if last is None or last.get("f_mem") is None:
            return None
        v = last["f_mem"] if self.bound == "value" else last["wilson_low"]
        if v > self.threshold:
            what = "f_mem" if self.bound == "value" else "f_mem's Wilson 95% lower bound"
            return (f"{what} {v:.4g} > {self.threshold:g} at step {last['step']} "
                    f"({last['n_flagged']} of {last['n']} samples memorised)")
        return None


@dataclass(frozen=True)
class StopAtTime:
    """FSW25's early stop: at ``alpha_frac · kappa · n^exponent`` training steps
    (:func:`diffmem.timescales.stopping_time`); ``kappa`` = τ_mem / n of pilot runs."""

    kappa: float
    n: int
    alpha_frac: float = 0.5
    exponent: float = 1.0

    def __post_init__(self):
        if not (isinstance(self.n, (int, np.integer)) and self.n >= 1):
            raise DiffmemError(f"StopAtTime: n must be a positive integer, got {self.n!r}")
        self.steps  # validates kappa and alpha_frac (DiffmemError)

    @property
    def steps(self) -> float:
        from .timescales import stopping_time

        return stopping_time(self.kappa, self.n, self.alpha_frac, exponent=self.exponent)["steps"]

    def __call__(self, step: int, history: list) -> str | None:
        if step >= self.steps:
            return (f"FSW25 stopping time reached: step {step} ≥ {self.alpha_frac:g} κ n = {self.steps:.4g} "
                    f"(κ = {self.kappa:.4g} steps per sample, n = {self.n})")
        return None

    @classmethod
    def from_pilots(cls, source, n: int, alpha_frac: float = 0.5, definitions=None) -> "StopAtTime":
        """κ from pilot runs (a sweep or run directory, or a list of them): the median τ_mem / n of the
        runs that reached τ_mem (:attr:`diffmem.analysis.Analysis.kappa_linear`)."""
        from .analysis import TauDefinitions, analyse

        a = analyse(source, definitions or TauDefinitions())
        if a.kappa_linear is None:
            raise DiffmemError(f"no pilot run in {source} reached τ_mem: κ is unknown; train the pilots longer")
        return cls(float(a.kappa_linear), int(n), float(alpha_frac))


def _as_rows(x, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().cpu()
    if t.ndim < 2 or t.shape[0] < 2:
        raise DiffmemError(f"{name} must hold at least 2 rows [N, ...], got shape {tuple(t.shape)}")
    if not t.dtype.is_floating_point:
        raise DiffmemError(f"{name} must be floating point (in the space the model generates), got {t.dtype}")
    return t.float()


def _plain(x):
    """Numbers as Python floats (state_dict stays loadable with ``weights_only=True`` and JSON-able)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x


class MemorizationMonitor(Callback):
    """Watches f_mem (and the per-σ gap) on a log-spaced schedule and says when to stop (module docstring).

    Args:
        train: the training set ``[n, ...]`` in the space the model generates (None inside
            :func:`diffmem.train.train`: the run's own is used).
        schedule: steps to measure at; default ``log_checkpoint_schedule(total_steps, per_decade)``.
        total_steps, per_decade: the schedule's length and density (when ``schedule`` is not given).
        rules: stopping rules (:class:`FmemAbove`, :class:`StopAtTime`, any ``rule(step, history)``).
        n_samples, sample_seed: samples per measurement and the first per-sample seed (fixed over time).
        threshold: the ratio-test threshold of f_mem (BUBM25: 1/3).
        sampler, sampler_steps, batch_size: how a denoiser is sampled (:func:`diffmem.samplers.generate`).
        test: held-out images ``[m, ...]``: with a denoiser, the gap G(σ) at ``gap_sigmas`` log-spaced σ over
            ``sigma_range`` on ``n_gap`` images per set (0 or None: no gap).
    """

    def __init__(self, train=None, *, schedule: Sequence[int] | None = None, total_steps: int | None = None,
                 per_decade: int = 10, rules: Sequence[StopRule] = (), n_samples: int = 64, sample_seed: int = 0,
                 threshold: float = 1 / 3, sampler: str = "heun", sampler_steps: int | None = 18,
                 batch_size: int = 512, test=None, gap_sigmas: int | None = 16,
                 sigma_range: tuple[float, float] = (0.002, 80.0), n_gap: int = 64):
        from .checkpoints import log_checkpoint_schedule
        from .samplers import SAMPLERS

        if not 0 < threshold <= 1:
            raise DiffmemError(f"threshold must be in (0, 1], got {threshold}")
        if n_samples < 1 or batch_size < 1 or n_gap < 1:
            raise DiffmemError("n_samples, batch_size and n_gap must be positive")
        if sampler not in SAMPLERS:
            raise DiffmemError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        for r in rules:
            if not callable(r):
                raise DiffmemError(f"a stopping rule must be callable as rule(step, history), got {r!r}")
        if schedule is not None:
            sched = sorted({int(s) for s in schedule})
            if not sched or sched[0] < 0:
                raise DiffmemError("schedule must be a non-empty list of steps ≥ 0")
        elif total_steps is not None:
            sched = log_checkpoint_schedule(int(total_steps), per_decade=int(per_decade))
        else:
            sched = None  # driven by diffmem's trainer (its checkpoints), or an error in step()
        self.schedule = sched
        self._due = set(sched or ())
        self.rules = list(rules)
        self.n_samples, self.sample_seed, self.threshold = int(n_samples), int(sample_seed), float(threshold)
        self.sampler, self.sampler_steps, self.batch_size = sampler, sampler_steps, int(batch_size)
        self.train = None if train is None else _as_rows(train, "train")
        self.test = None if test is None else _as_rows(test, "test")
        if self.test is not None and self.train is not None and self.test.shape[1:] != self.train.shape[1:]:
            raise DiffmemError(f"test images {tuple(self.test.shape[1:])} and training images "
                               f"{tuple(self.train.shape[1:])} differ in shape")
        self.n_gap = int(n_gap)
        self.gap_sigmas = None
        if gap_sigmas and self.test is not None:
            from .metrics.gap import gap_sigmas as grid

            self.gap_sigmas = grid(float(sigma_range[0]), float(sigma_range[1]), int(gap_sigmas))
        self._gap_probe = None  # fixed images and noise, built on first use (on the model's device)
        self.history: list[dict] = []
        self.stop_reason: str | None = None
        self.seconds = 0.0  # time spent measuring (not part of the history: it is not reproducible)

    # ------------------------------------------------------------------ the framework-free API

    @property
    def should_stop(self) -> bool:
        return self.stop_reason is not None

    def due(self, step: int) -> bool:
        """Whether ``step`` is on the schedule and not measured yet."""
        if self.schedule is None:
            raise DiffmemError("the monitor has no schedule: give schedule= or total_steps=")
        return int(step) in self._due and not (self.history and self.history[-1]["step"] >= int(step))

    def step(self, step: int, model=None, *, sample_fn=None, denoiser=None) -> dict | None:
        """Call after optimiser step ``step`` (0: before training).  Measures when ``step`` is on the
        schedule (returns the new history entry, else None), then applies the stopping rules.

        ``model``: an ``nn.Module`` denoiser ``D(x, sigma)``, or any other callable as ``sample_fn(n)``.
        """
        if model is not None:
            if isinstance(model, torch.nn.Module):
                denoiser = denoiser if denoiser is not None else model
            elif callable(model):
                sample_fn = sample_fn if sample_fn is not None else model
            else:
                raise DiffmemError(f"model must be a denoiser nn.Module or a sample_fn(n), got {type(model).__name__}")
        entry = None
        if self.due(step):
            if sample_fn is None and denoiser is None:
                raise DiffmemError(f"step {step} is on the monitor's schedule: give a denoiser or a sample_fn")
            entry = self.measure(step, sample_fn=sample_fn, denoiser=denoiser)
        self._check(int(step))
        return entry

    def measure(self, step: int, *, sample_fn=None, denoiser=None) -> dict:
        """Measure now (whatever the schedule), append to the history and apply the rules."""
        if self.train is None:
            raise DiffmemError("the monitor has no training set to compare samples with: give train=")
        t0 = time.perf_counter()
        module = denoiser if isinstance(denoiser, torch.nn.Module) else None
        was_training = module.training if module is not None else False
        if module is not None:
            module.eval()
        try:
            with torch.no_grad():
                samples = self._samples(sample_fn, denoiser)
                gap = self._gap(denoiser) if denoiser is not None and self.gap_sigmas is not None else {}
        finally:
            if module is not None and was_training:
                module.train()
        entry = {"step": int(step), **self._fmem(samples), **gap}
        self.seconds += time.perf_counter() - t0
        self._record(entry)
        return entry

    def observe(self, records: Sequence[dict]) -> dict | None:
        """Take one checkpoint's measurement from diffmem evaluator records (``f_mem`` with its Wilson keys,
        ``samples/finite_fraction``, ``gap/*``) instead of measuring; returns the entry (None if no f_mem)."""
        fm = [r for r in records if r.get("metric") == "f_mem"]
        if not fm:
            return None
        r = fm[-1]
        entry = {"step": int(r["step"]), "f_mem": float(r["value"]), "wilson_low": r.get("wilson_low"),
                 "wilson_high": r.get("wilson_high"), "n_flagged": r.get("n_flagged"), "n": r.get("n"),
                 "finite_fraction": next((float(x["value"]) for x in records
                                          if x.get("metric") == "samples/finite_fraction"), 1.0)}
        if entry["wilson_low"] is None and entry["n"]:  # older records: recompute the interval
            from .metrics.memorization import binomial_interval

            k = round(entry["f_mem"] * entry["n"])
            entry["wilson_low"], entry["wilson_high"] = binomial_interval(k, int(entry["n"]))
        gap = {}
        for key, metric in (("gap_e_train", "gap/e_train"), ("gap_e_test", "gap/e_test")):
            rows = sorted((x["sigma"], x["value"]) for x in records if x.get("metric") == metric)
            if rows:
                gap["gap_sigma"] = [float(s) for s, _ in rows]
                gap[key] = [float(v) for _, v in rows]
        if "gap_e_train" in gap and "gap_e_test" in gap:
            gap.update(self._gap_summary(np.asarray(gap["gap_sigma"]), np.asarray(gap["gap_e_train"]),
                                         np.asarray(gap["gap_e_test"])))
        entry.update(gap)
        self._record(_plain(entry))
        return entry

    def _record(self, entry: dict) -> None:
        if self.history and entry["step"] <= self.history[-1]["step"]:
            raise DiffmemError(f"monitor: step {entry['step']} measured after step {self.history[-1]['step']}; "
                               "steps must increase (after a restart, load_state_dict first)")
        self.history.append(entry)
        self._check(entry["step"])

    def _check(self, step: int) -> None:
        if self.stop_reason is not None:
            return
        for rule in self.rules:
            reason = rule(int(step), self.history)
            if reason:
                self.stop_reason = str(reason)
                return

    # ------------------------------------------------------------------ measurements

    def _samples(self, sample_fn, denoiser) -> torch.Tensor:
        shape = tuple(self.train.shape[1:])
        if sample_fn is not None:
            x = sample_fn(self.n_samples)
            x = torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).detach().cpu().float()
            if x.ndim < 2 or x[0].numel() != self.train[0].numel():
                raise DiffmemError(f"sample_fn returned shape {tuple(x.shape)}; expected [N, {', '.join(map(str, shape))}]")
            return x.reshape(len(x), *shape)
        from .samplers import generate

        seeds = list(range(self.sample_seed, self.sample_seed + self.n_samples))
        return generate(denoiser, shape, seeds, sampler=self.sampler, steps=self.sampler_steps,
                        batch_size=self.batch_size, device=_device_of(denoiser))

    def _fmem(self, samples: torch.Tensor) -> dict:
        from .metrics.memorization import memorization_fraction

        finite = torch.isfinite(samples.reshape(len(samples), -1)).all(1)
        ok = samples[finite]
        out = {"finite_fraction": float(finite.float().mean())}
        if len(ok) == 0:
            return {**out, "f_mem": None, "wilson_low": None, "wilson_high": None, "n_flagged": 0, "n": 0}
        fm = memorization_fraction(ok, self.train, threshold=self.threshold, n_boot=0)
        return {**out, "f_mem": float(fm["f_mem"]), "wilson_low": float(fm["ci95_wilson"][0]),
                "wilson_high": float(fm["ci95_wilson"][1]), "n_flagged": int(fm["n_flagged"]),
                "n": int(fm["n_samples"])}

    def _gap(self, denoiser) -> dict:
        from .metrics.gap import denoising_errors

        dev = _device_of(denoiser)
        if self._gap_probe is None or self._gap_probe[0] != str(dev):
            g = torch.Generator().manual_seed(self.sample_seed + 13)
            sets = {k: y[: self.n_gap] for k, y in (("train", self.train), ("test", self.test))}
            self._gap_probe = (str(dev), {k: (y.to(dev), torch.randn(y.shape, generator=g).to(dev))
                                          for k, y in sets.items()})
        err = {k: denoising_errors(denoiser, y, nz, self.gap_sigmas).cpu().numpy()
               for k, (y, nz) in self._gap_probe[1].items()}
        return {"gap_sigma": [float(s) for s in self.gap_sigmas], "gap_e_train": [float(v) for v in err["train"]],
                "gap_e_test": [float(v) for v in err["test"]],
                **self._gap_summary(self.gap_sigmas, err["train"], err["test"])}

    @staticmethod
    def _gap_summary(sigmas, e_train, e_test) -> dict:
        from .metrics.gap import peak, relative_gap

        g = relative_gap(e_train, e_test)
        ps, pg = peak(sigmas, g)
        return {"gap_G": [float(v) if np.isfinite(v) else None for v in g],
                "gap_peak": float(pg) if np.isfinite(pg) else None,
                "gap_peak_sigma": float(ps) if np.isfinite(ps) else None}

    # ------------------------------------------------------------------ history and state

    def series(self, key: str = "f_mem") -> tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of one history key (``f_mem``, ``wilson_low``, ``gap_peak``, ...)."""
        rows = [(h["step"], h.get(key)) for h in self.history]
        return (np.array([s for s, _ in rows], dtype=np.int64),
                np.array([np.nan if v is None else v for _, v in rows], dtype=np.float64))

    def first_above(self, threshold: float, key: str = "f_mem") -> int | None:
        """The first measured step whose ``key`` exceeds ``threshold`` (None if none)."""
        return next((h["step"] for h in self.history if h.get(key) is not None and h[key] > threshold), None)

    def _fingerprint(self) -> dict:
        return {"n_samples": self.n_samples, "sample_seed": self.sample_seed, "threshold": self.threshold,
                "n_train": None if self.train is None else int(self.train.shape[0])}

    def state_dict(self) -> dict:
        return {"version": _STATE_VERSION, "history": _plain([dict(h) for h in self.history]),
                "stop_reason": self.stop_reason, "seconds": float(self.seconds), "setup": self._fingerprint(),
                "rules": [r.state_dict() if hasattr(r, "state_dict") else None for r in self.rules]}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or state.get("version") != _STATE_VERSION or "history" not in state:
            raise DiffmemError("not a MemorizationMonitor state (wrong or missing version)")
        mine, theirs = self._fingerprint(), state.get("setup", {})
        diff = [k for k in mine if k in theirs and theirs[k] is not None and mine[k] is not None
                and theirs[k] != mine[k]]
        if diff:
            raise DiffmemError(f"monitor state was saved with other settings ({', '.join(diff)} differ)")
        self.history = [dict(h) for h in state["history"]]
        self.stop_reason = state.get("stop_reason")
        self.seconds = float(state.get("seconds", 0.0))
        for r, s in zip(self.rules, state.get("rules", [])):
            if s is not None and hasattr(r, "load_state_dict"):
                r.load_state_dict(s)

    # ------------------------------------------------------------------ as a diffmem Callback

    def on_train_start(self, ctx) -> None:
        if self.train is None:
            self.train = ctx.train_set.detach().cpu().float()  # model space, as the run's samples
        if self.stop_reason is not None:  # a stopped run re-run: stays stopped
            ctx.request_stop(self.stop_reason)

    def on_step_end(self, ctx, step, loss) -> None:
        self._check(int(step))
        if self.stop_reason is not None:
            ctx.request_stop(self.stop_reason)

    def on_log(self, ctx, records) -> None:
        self.observe(records)
        if self.stop_reason is not None:
            ctx.request_stop(self.stop_reason)

    def on_checkpoint(self, ctx, step, denoiser) -> None:
        if not (self.history and self.history[-1]["step"] == int(step)):  # the evaluator measured nothing
            self.measure(step, denoiser=denoiser)
        if self.stop_reason is not None:
            ctx.request_stop(self.stop_reason)


def _device_of(den) -> torch.device:
    if isinstance(den, torch.nn.Module):
        p = next(iter(den.parameters()), None)
        if p is not None:
            return p.device
    return torch.device("cpu")
