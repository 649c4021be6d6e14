"""What is measured at each checkpoint (BUBM25 §1, KK26 §5).

:class:`Evaluator` is built once per run; calling it on a denoiser returns the
metric records of one checkpoint (long format ``{"step", "metric", "value",
"error", ...}``):

* ``f_mem`` — memorisation fraction of ``eval.n_samples`` generated samples
  (ratio test ``d1/d2 < threshold`` against the n training points; bootstrap
  stderr as ``error``, 95 % interval as ``ci_low``/``ci_high``; the Wilson
  95 % interval, honest at 0 and 1, as ``wilson_low``/``wilson_high``, with
  ``n_flagged`` of ``n`` samples).  The sample
  seeds are the same at every checkpoint, so sample j can be followed over
  training.
* ``quality/fd_pixel``, ``quality/fd_feat``, ``quality/kid`` — sample quality
  against the held-out set: Fréchet distance in pixel space and in the
  features of a small network trained on the pool, and KID in those features.
* ``loss/train``, ``loss/test`` at each OU time in ``eval.loss_t`` (key ``t``
  and ``sigma``) — the ε-MSE on fixed images with fixed noise draws reused at
  every checkpoint (BUBM25 Fig. 2 middle; the losses separate ∝ n).
* ``score_error`` at each ``loss_t`` when the data distribution is known
  (Gaussian mixture): ``E‖s_θ − s*‖²`` on fresh-but-fixed points of P_σ.
* ``gap/e_train``, ``gap/e_test``, ``gap/G`` at ``eval.gap_sigmas`` log-spaced
  σ over the model's range (key ``sigma``), and ``gap/peak`` (key ``sigma``:
  where) -- KK26's generalisation gap per noise level
  (:mod:`diffmem.metrics.gap`), on ``eval.n_gap`` fixed images per set with
  one fixed noise draw each.
* ``fd_gap/<fd>/train``, ``fd_gap/<fd>/test`` -- KK26's sample-level gap: the
  Fréchet distance of the samples to the training subset and to a held-out
  subset of the same size (so both references carry the same small-set bias),
  and ``fd_gap/<fd>/train_vs_test``, the distance between those two subsets
  (the gap a model reproducing its training set exactly would show).
* ``traj/*`` at up to 16 σ of the sampler's grid (key ``sigma``) -- where the
  first ``eval.trajectory`` sampling trajectories go, against noisy training
  points (:mod:`diffmem.metrics.trajectory`).
* ``kl`` (with ``eval.kl=exact|hutchinson``, data with a known density) --
  ``KL(P_θ ‖ P_0)`` of the PF-ODE model by its exact likelihood
  (:mod:`diffmem.likelihood`), with its Monte Carlo standard error.

Token-sequence data (``rhm:...``, masked diffusion) is measured by the sibling
:class:`diffmem.evaluate_tokens.SequenceEvaluator` (exact-copy fraction as
``f_mem``, Hamming ratio test, validity per level, diversity, masked loss per
t); :func:`evaluator_class` chooses by the data's kind.

The evaluator knows nothing about training: :class:`diffmem.callbacks.Evaluation`
calls it at each checkpoint of a run, :func:`evaluate_run` on saved checkpoints.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .errors import DiffmemError
from .losses import dsm_loss
from .metrics.memorization import memorization_fraction
from .rundir import Run, append_jsonl
from .samplers import generate
from .schedules import ou_t_to_sigma

__all__ = ["Evaluator", "evaluator_class", "probe_losses", "evaluate_run", "sample_run"]


@torch.no_grad()
def probe_losses(den, y: torch.Tensor, noise: torch.Tensor, sigma: float, batch_size: int = 1024) -> float:
    """Mean ε-MSE of ``den`` on images ``y [N, ...]`` with fixed ``noise [K, N, ...]`` at one σ."""
    tot, cnt = 0.0, 0
    for k in range(noise.shape[0]):
        for b in range(0, y.shape[0], batch_size):
            yb = y[b : b + batch_size]
            s = torch.full((yb.shape[0],), float(sigma), dtype=yb.dtype, device=yb.device)
            out = dsm_loss(den, yb, s, noise=noise[k, b : b + batch_size], weighting="eps")
            tot += float(out.loss.sum())
            cnt += yb.shape[0]
    return tot / cnt


class Evaluator:
    """The measurements of one run at a checkpoint (see the module docstring).

    Call :meth:`check` first (it raises on anything that would fail later,
    before a run directory is written; the constructor does not repeat it),
    then construct it.
    """

    def __init__(self, cfg, ds, train_set: torch.Tensor, run: Run | None, device, save_samples: bool | None = None):
        self.cfg, self.ds, self.train_set, self.device = cfg, ds, train_set, device
        self.run = run
        e = cfg.eval
        self.save_samples = e.save_samples if save_samples is None else save_samples
        if self.save_samples and run is None:
            raise ValueError("saving samples needs a run directory")
        self.seeds = list(range(e.sample_seed, e.sample_seed + e.n_samples))
        g = torch.Generator().manual_seed(e.sample_seed + 7)
        self.probe = {}
        for name, y in (("train", train_set[: e.n_loss]), ("test", ds.test[: e.n_loss])):
            y = y.to(device)
            noise = torch.randn((e.loss_draws, *y.shape), generator=g).to(device)
            self.probe[name] = (y, noise)
        self.quality = None
        if e.quality:
            from .quality import QualityReference

            self.quality = QualityReference.for_run(cfg, ds, run.feature_net_path if run is not None else None)
        self.exact = getattr(ds, "exact", None)
        if self.exact is not None:
            g2 = torch.Generator().manual_seed(e.sample_seed + 11)
            self.score_points = {}
            for t in e.loss_t:
                sig = float(ou_t_to_sigma(t))
                y = self.exact.sample(2048, generator=g2)
                self.score_points[t] = (y + sig * torch.randn(y.shape, generator=g2)).to(device)
        self._init_kk26(cfg, ds, train_set, device)

    def _init_kk26(self, cfg, ds, train_set, device) -> None:
        """Fixed images and noise draws of the gap, the sample-level gap and the trajectory analysis."""
        from .models import model_sigma_range

        e = self.cfg.eval
        self.sigma_range = model_sigma_range(cfg.model)
        self.gap = None
        if e.gap_sigmas:
            from .metrics.gap import gap_sigmas

            g = torch.Generator().manual_seed(e.sample_seed + 13)
            sets = {"train": train_set[: e.n_gap].cpu(), "test": ds.test[: e.n_gap].cpu()}
            self.gap = (gap_sigmas(*self.sigma_range, e.gap_sigmas),
                        {k: (y.to(device), torch.randn(y.shape, generator=g).to(device)) for k, y in sets.items()})
        self.fd_refs = None
        fds = [q for q in ("fd_pixel", "fd_feat") if q in e.quality]
        if e.fd_gap and fds and self.quality is not None:
            from .quality import QualityReference

            m = min(len(train_set), len(ds.test))
            refs = {k: QualityReference(y[:m].cpu(), self.quality.feature_net)
                    for k, y in (("train", train_set), ("test", ds.test))}
            self.fd_refs = (fds, refs)
            # the scale of the comparison: FD(training subset, held-out subset), both of size m
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.fd_between = {k: v for k, (v, _) in refs["test"](train_set[:m].cpu(), fds).items()}
        self.traj = None
        if e.trajectory:
            from .metrics.trajectory import record_indices
            from .samplers import default_sigmas

            g = torch.Generator().manual_seed(e.sample_seed + 17)
            n_ref = min(e.trajectory, len(train_set))
            noise = torch.randn(train_set.shape, generator=g).to(device)
            noise_ref = torch.randn((n_ref, *train_set.shape[1:]), generator=g).to(device)
            self.traj = (record_indices(default_sigmas(e.sampler, e.sampler_steps)), noise, noise_ref, n_ref)

    @staticmethod
    def check(cfg, ds) -> None:
        """Raise :class:`DiffmemError` for settings that cannot be evaluated on ``ds`` (writes nothing)."""
        if cfg.eval.quality:
            from .quality import QualityReference

            QualityReference.check(cfg, ds)
        if len(ds.test) < 1:
            raise DiffmemError(f"data {ds.name!r} has no held-out points for the test-loss probe")
        if cfg.eval.kl and getattr(ds, "exact", None) is None:
            raise DiffmemError(f"eval.kl needs data with a known density (gmm:...); data {ds.name!r} has none")
        if cfg.eval.fd_gap and len(ds.test) < 2 and {"fd_pixel", "fd_feat"} & set(cfg.eval.quality):
            raise DiffmemError(f"eval.fd_gap needs at least 2 held-out points; data {ds.name!r} has {len(ds.test)}")

    def __call__(self, den, step: int) -> list[dict]:
        e = self.cfg.eval
        recs: list[dict] = []

        def rec(metric, value, error=None, **extra):
            recs.append({"step": int(step), "metric": metric, "value": float(value),
                         "error": None if error is None else float(error), **extra})

        recorder = None
        if self.traj is not None:
            from .metrics.trajectory import TrajectoryRecorder

            recorder = TrajectoryRecorder(e.trajectory, self.traj[0])
        samples = generate(den, self.ds.shape, self.seeds, sampler=e.sampler, steps=e.sampler_steps,
                           batch_size=e.batch_size, device=self.device, callback=recorder)
        if self.save_samples:
            self.run.save_samples(step, samples.numpy())
        finite = torch.isfinite(samples.reshape(len(samples), -1)).all(1)
        rec("samples/finite_fraction", finite.float().mean())
        s_ok = samples[finite]
        if len(s_ok):
            fm = memorization_fraction(s_ok, self.train_set.cpu(), threshold=e.threshold, n_boot=e.n_boot,
                                       seed=int(step))
            rec("f_mem", fm["f_mem"], fm["stderr"], ci_low=fm["ci95"][0], ci_high=fm["ci95"][1],
                wilson_low=fm["ci95_wilson"][0], wilson_high=fm["ci95_wilson"][1], n_flagged=fm["n_flagged"],
                n=fm["n_samples"])
            if self.quality is not None:
                for name, (val, err) in self.quality(s_ok, e.quality).items():
                    rec(f"quality/{name}", val, err)
            if self.fd_refs is not None:
                import warnings

                names, refs = self.fd_refs
                for side, ref in refs.items():
                    with warnings.catch_warnings():  # equal-size references: the small-set bias is the same on
                        warnings.simplefilter("ignore")  # both sides, which is the point of the comparison
                        vals = ref(s_ok, names)
                    for name, (val, _) in vals.items():
                        rec(f"fd_gap/{name}/{side}", val)
                for name, val in self.fd_between.items():
                    rec(f"fd_gap/{name}/train_vs_test", val)
        for t in e.loss_t:
            sig = float(ou_t_to_sigma(t))
            for name, (y, noise) in self.probe.items():
                rec(f"loss/{name}", probe_losses(den, y, noise, sig, e.batch_size), t=float(t), sigma=sig)
            if self.exact is not None:
                from .denoiser import score

                x = self.score_points[t]
                s = torch.full((x.shape[0],), sig, device=x.device)
                with torch.no_grad():
                    err = (score(den, x, s) - self.exact.score(x, s)).pow(2).sum(1).mean()
                rec("score_error", err, t=float(t), sigma=sig)
        if self.gap is not None:
            self._gap_records(den, rec)
        if recorder is not None:
            self._trajectory_records(den, recorder, rec)
        if e.kl:
            self._kl_record(den, rec)
        return recs

    def _gap_records(self, den, rec) -> None:
        from .metrics.gap import denoising_errors, peak, relative_gap

        sigmas, sets = self.gap
        err = {k: denoising_errors(den, y, nz, sigmas, batch_rows=max(self.cfg.eval.batch_size, 4096)).cpu().numpy()
               for k, (y, nz) in sets.items()}
        g = relative_gap(err["train"], err["test"])
        for i, s in enumerate(sigmas):
            rec("gap/e_train", err["train"][i], sigma=float(s))
            rec("gap/e_test", err["test"][i], sigma=float(s))
            if np.isfinite(g[i]):  # undefined where the training error is exactly 0 (a perfect copier at tiny σ)
                rec("gap/G", g[i], sigma=float(s))
        ps, pg = peak(sigmas, g)
        if np.isfinite(pg):
            rec("gap/peak", pg, sigma=ps)

    def _trajectory_records(self, den, recorder, rec) -> None:
        from .metrics.trajectory import trajectory_stats

        _, noise, noise_ref, n_ref = self.traj
        for row in trajectory_stats(den, recorder.result(), self.train_set, noise, noise_ref, n_ref,
                                    self.cfg.eval.threshold):
            s = row.pop("sigma")
            for k, v in row.items():
                rec(f"traj/{k}", v, sigma=s)

    def _kl_record(self, den, rec) -> None:
        from .likelihood import kl_divergence

        e = self.cfg.eval
        lo, hi = self.sigma_range
        seeds = list(range(e.sample_seed, e.sample_seed + e.kl_samples))
        r = kl_divergence(den, lambda x: self.exact.log_prob(x.float().cpu(), lo), self.ds.shape, seeds, lo, hi,
                          divergence=e.kl, rtol=e.kl_rtol, atol=e.kl_rtol, batch_size=e.batch_size,
                          device=self.device)
        rec("kl", r["kl"], r["stderr"], n=r["n"])


def evaluator_class(cfg, ds):
    """The evaluator of a run: :class:`Evaluator` for continuous data, :class:`~diffmem.evaluate_tokens.SequenceEvaluator`
    for token sequences; a model that does not fit the data is a one-line error here (writes nothing)."""
    from .models import check_data_model

    check_data_model(cfg.model, ds)
    if ds.is_tokens:
        from .evaluate_tokens import SequenceEvaluator

        return SequenceEvaluator
    return Evaluator


def evaluate_run(run_dir, steps: list[int] | None = None, overrides: list[str] | None = None,
                 out=None, device: str = "cpu", on_records=None) -> list[dict]:
    """Re-evaluate saved checkpoints of a run (optionally with other ``eval.*`` settings).

    Records are appended to ``out`` (default ``RUN/evaluations.jsonl``; never
    the training metrics) after *each* checkpoint, so one bad checkpoint loses
    nothing evaluated before it.  Every input is checked (overrides, steps,
    the output folder, every checkpoint file's presence) before the first
    evaluation.  ``on_records(step, records)`` is called after each checkpoint.
    """
    from dataclasses import replace

    from .config import RunConfig, apply_overrides
    from .data import load_dataset

    run = Run(run_dir)
    cfg = run.load_config()
    for ov in overrides or []:
        if not ov.startswith("eval."):
            raise DiffmemError(f"evaluate only takes eval.* overrides, got {ov!r}")
    d = apply_overrides(cfg.to_dict(), list(overrides or []))
    cfg = RunConfig.from_dict(d)
    cfg.eval = replace(cfg.eval, save_samples=False)
    cfg.validate()
    available = run.evaluation_steps()
    if steps is None:
        steps = available
    missing = [s for s in steps if s not in available]
    if missing:
        raise DiffmemError(f"run {run.path} has no checkpoint at step {missing[0]}"
                           + (f" (it has {len(available)}, from {available[0]} to {available[-1]})" if available
                              else " (it has none)"))
    path = Path(out) if out else run.evaluations_path
    if path.is_dir():
        raise DiffmemError(f"--out {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise DiffmemError(f"--out {path}: folder {path.parent} does not exist")
    ds = load_dataset(cfg.data)
    train_set = ds.subset(cfg.n, cfg.subset_seed, cfg.subset_offset)
    ev_cls = evaluator_class(cfg, ds)
    ev_cls.check(cfg, ds)
    ev = ev_cls(cfg, ds, train_set, run, device, save_samples=False)
    recs: list[dict] = []
    for st in steps:
        den, _ = run.load_denoiser(st, device=device, dataset=ds)
        r = ev(den, st)
        append_jsonl(path, r)
        recs.extend(r)
        if on_records is not None:
            on_records(st, r)
    return recs


def sample_run(run_dir, step: int | None = None, *, n_samples: int | None = None, seed: int | None = None,
               sampler: str | None = None, steps: int | None = None, device: str = "cpu"):
    """Samples of a run's checkpoint; by default with the run's own evaluation settings (sampler, steps,
    seeds), so ``sample_run(RUN, S)`` equals ``RUN/samples/step_S.npy``.  Returns ``(array, info)``.

    Every argument is checked before sampling.
    """
    from .config import check_device
    from .samplers import SAMPLERS

    for name, v in (("--n-samples", n_samples), ("--steps", steps)):
        if v is not None and v < 1:
            raise DiffmemError(f"{name} must be positive, got {v}")
    if seed is not None and seed < 0:
        raise DiffmemError(f"--seed must be ≥ 0, got {seed}")
    if sampler is not None and sampler not in SAMPLERS and sampler != "masked":
        raise DiffmemError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    if device != "cpu":
        check_device(device)
    run = Run(run_dir)
    den, cfg = run.load_denoiser(step, device=device)
    e = cfg.eval
    first = e.sample_seed if seed is None else seed
    seeds = list(range(first, first + (n_samples or e.n_samples)))
    sampler = sampler or e.sampler
    steps = steps or (e.sampler_steps if sampler == e.sampler else None)
    last = step if step is not None else run.evaluation_steps()[-1]
    if (sampler == "masked") != (e.sampler == "masked"):
        raise DiffmemError(f"run {run.path} is sampled by {e.sampler!r}; --sampler {sampler} does not apply to it")
    if sampler == "masked":  # a token model: the masked ancestral sampler (per-sample seeds)
        from .evaluate_tokens import sample_tokens

        x = sample_tokens(den, seeds, run.data_shape()[0], run.data_vocab(), steps, e.batch_size, device)
        return x.numpy(), {"sampler": sampler, "steps": steps, "seeds": [seeds[0], seeds[-1]], "step": last}
    x = generate(den, run.data_shape(), seeds, sampler=sampler, steps=steps, batch_size=e.batch_size, device=device)
    used = steps or SAMPLERS[sampler].default_steps
    return x.numpy(), {"sampler": sampler, "steps": used, "seeds": [seeds[0], seeds[-1]], "step": last}
