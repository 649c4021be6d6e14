"""BUBM25 Fig. 1 (top): in one dimension, the learned score moves from a smooth score to the empirical one.

A few points drawn from a 1-D data set with a known distribution (default
``gmm:d=1,mu=1.5``: ``½N(1.5, 1) + ½N(−1.5, 1)``, exact score), a small MLP
trained on them with diffmem's own :func:`diffmem.train.train` (EDM
preconditioning, Adam, full batch; the run directory is ``OUT/run``, so a
second call resumes or reuses it), and at a fixed OU time t the score of
checkpoints at several training times beside

* the empirical score -- the exact score of the n training points smeared to
  time t (:class:`diffmem.closed_form.EmpiricalDenoiser`), what a network that
  memorises converges to, and
* the population score -- the data distribution's exact score at time t.

Scores are drawn in BUBM25's VP/OU form: the state ``x_t = e^{−t} x_0 +
sqrt(Δ_t) ξ`` and ``s(x_t) = ∇ log P_t = e^{t} s_VE(e^{t} x_t, σ)`` with
``σ² = e^{2t} − 1`` (SPEC §0).  Distances are root-mean-square differences
over an even grid of x_t spanning the training points ± 3 standard deviations of
the noise (where P_t has its mass).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import DiffmemError

__all__ = ["Score1DOptions", "score_picture", "picture_steps"]


@dataclass
class Score1DOptions:
    n: int = 8
    steps: int = 30000
    width: int = 64
    lr: float = 3e-3
    t: tuple = (0.05, 0.2)
    seed: int = 0
    data: str = "gmm:d=1,mu=1.5"
    threads: int = 1
    subset_seed: int = 2  # points -3.0 … 2.84 on both modes, no gap wider than 1.3 (seeds 0, 1, 3 leave one of 2.2–2.9)

    def check(self) -> "Score1DOptions":
        """Raise a one-line :class:`DiffmemError` for a bad option (writes nothing)."""
        for name in ("n", "steps", "width"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "n" else 1):
                raise DiffmemError(f"--{name} must be an integer ≥ {2 if name == 'n' else 1}, got {v}")
        self.t = tuple(self.t) if isinstance(self.t, (list, tuple)) else (self.t,)
        if not self.t:
            raise DiffmemError("--t needs at least one time")
        for name, v in [("lr", self.lr)] + [("t", t) for t in self.t]:
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise DiffmemError(f"--{name} must be a finite number > 0, got {v}")
        if self.seed < 0 or self.threads < 0 or self.subset_seed < 0:
            raise DiffmemError(f"--seed, --subset-seed and --threads must be ≥ 0, got {self.seed}, "
                               f"{self.subset_seed} and {self.threads}")
        return self

    def config(self):
        """The run's :class:`~diffmem.config.RunConfig` (validated), with cheap checkpoint evaluations."""
        from .config import resolve_config

        ov = [f"data={self.data}", f"n={self.n}", f"steps={self.steps}", f"seed={self.seed}",
              f"subset_seed={self.subset_seed}",
              "model.name=mlp", f"model.width={self.width}", "model.blocks=2", "model.parametrisation=edm",
              "optim.name=adam", f"optim.lr={self.lr}", "checkpoints_per_decade=3", f"threads={self.threads}",
              "eval.n_samples=16", "eval.sampler=heun", "eval.sampler_steps=10", "eval.quality=",
              "eval.loss_draws=1", "eval.n_boot=0", "eval.save_samples=false", "eval.gap_sigmas=0",
              "eval.trajectory=0"]
        return resolve_config(None, None, ov)


def picture_steps(steps: list[int], k: int = 5) -> list[int]:
    """``k`` checkpoints spread evenly in log step over ``(0, last]`` (always the last), plus step 0."""
    pos = [s for s in steps if s > 0]
    if not pos:
        return list(steps)
    targets = np.geomspace(max(pos[0], 1), pos[-1], k)
    picked = {min(pos, key=lambda s: abs(math.log(s) - math.log(t))) for t in targets}
    return sorted(({0} if 0 in steps else set()) | picked | {pos[-1]})


def _load(opts: Score1DOptions):
    from .data import load_dataset

    ds = load_dataset(opts.data)
    if ds.shape != (1,) or ds.exact is None:
        raise DiffmemError(f"--data must be one-dimensional with a known distribution (e.g. gmm:d=1), got "
                           f"{opts.data!r} of shape {ds.shape}")
    return ds


@torch.no_grad()
def _scores(den, x_t: torch.Tensor, t: float) -> torch.Tensor:
    """VP score ``e^{t} s_VE(e^{t} x_t, σ)`` of a denoiser at OU time t; ``x_t``: ``[G, 1]``."""
    from .denoiser import score
    from .schedules import ou_t_to_sigma

    sig = torch.full((x_t.shape[0],), float(ou_t_to_sigma(t)), dtype=x_t.dtype)
    return math.exp(t) * score(den, math.exp(t) * x_t, sig)


def _at_time(run, ds, tr: torch.Tensor, t: float) -> dict:
    """Scores of every checkpoint, the empirical and the population score at OU time t, and their distances."""
    from .closed_form import EmpiricalDenoiser, ExactDenoiser
    from .schedules import ou_t_to_sigma

    sig = float(ou_t_to_sigma(t))
    lo, hi = float(tr.min()) - 3 * sig, float(tr.max()) + 3 * sig
    x_ve = torch.linspace(lo, hi, 401, dtype=torch.float64)[:, None]
    x = math.exp(-t) * x_ve  # VP states at time t
    s_emp = _scores(EmpiricalDenoiser(tr), x, t)[:, 0]
    s_pop = _scores(ExactDenoiser(ds.exact), x.float(), t)[:, 0].double()
    w = torch.exp(ds.exact.log_prob(x_ve.float(), sig).double())  # P_t on the grid (even in x: a quadrature)
    w = w / w.sum()
    rms = lambda a, b: float(((a - b) ** 2 * w).sum().sqrt())  # noqa: E731
    learned, rows = {}, []
    for st in run.checkpoint_steps():
        den, _ = run.load_denoiser(st)
        learned[st] = _scores(den, x.float(), t)[:, 0].double()
        rows.append({"step": st, "to_empirical": rms(learned[st], s_emp), "to_population": rms(learned[st], s_pop)})
    return {"t": t, "sigma": sig, "x": x[:, 0], "s_emp": s_emp, "s_pop": s_pop, "learned": learned, "rows": rows,
            "empirical_to_population": rms(s_emp, s_pop)}


def score_picture(out, opts: Score1DOptions, progress: bool = True) -> dict:
    """Train (or reuse) ``OUT/run``, then write ``OUT/score1d.png`` and ``OUT/score1d.json``; return the summary.

    Distances are ``sqrt(E_{x∼P_t} (s_a − s_b)²)`` (population-weighted, as the ``score_error`` metric).
    Summary: ``n``, ``steps``, ``train_points`` (data space), ``times`` (per t: ``t``, ``sigma``, ``rows``
    -- per pictured step the distance of the learned score to the empirical and to the population score --,
    ``all_steps`` -- the same for every checkpoint --, ``empirical_to_population``), ``figure``.
    """
    from .fileio import atomic_write_json, save_figure
    from .train import train

    opts.check()
    cfg = opts.config()
    ds = _load(opts)
    out = Path(out)
    run = train(cfg, out / "run", progress=progress, dataset=ds)
    tr = ds.subset(cfg.n, cfg.subset_seed).double()
    shown = picture_steps(run.checkpoint_steps())
    panels = [_at_time(run, ds, tr, float(t)) for t in opts.t]
    save_figure(_figure(panels, shown, tr[:, 0].numpy(), cfg.n), out / "score1d.png", dpi=110)
    times = [{"t": p["t"], "sigma": p["sigma"], "empirical_to_population": p["empirical_to_population"],
              "rows": [r for r in p["rows"] if r["step"] in shown], "all_steps": p["rows"]} for p in panels]
    summary = {"n": cfg.n, "steps": cfg.steps, "options": asdict(opts), "train_points": tr[:, 0].tolist(),
               "times": times, "train_seconds": float(run.read_status().get("train_seconds", 0.0)),
               "figure": str(out / "score1d.png"), "run": str(run.path)}
    atomic_write_json(out / "score1d.json", summary)
    return summary


def _figure(panels: list[dict], shown: list[int], train_points, n: int):
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.4 * len(panels)))
    axes = fig.subplots(len(panels), 2, gridspec_kw={"width_ratios": [1.6, 1]}, squeeze=False)
    cmap = colormaps["viridis"]
    for (a, b), p in zip(axes, panels):
        x, t = p["x"].numpy(), p["t"]
        for i, st in enumerate(shown):
            a.plot(x, p["learned"][st].numpy(), color=cmap(i / max(len(shown) - 1, 1)), lw=1.3,
                   label=f"learned, step {st}")
        a.plot(x, p["s_emp"].numpy(), "r-", lw=1.2, label="empirical (n training points)")
        a.plot(x, p["s_pop"].numpy(), "k--", lw=1.6, label="population (exact)")
        tv = math.exp(-t) * train_points
        a.plot(tv, np.zeros_like(tv), "rv", ms=8, label="training points (× e^-t)")
        span = 1.5 * float(np.abs(p["s_emp"].numpy()[np.abs(x) <= np.abs(tv).max()]).max())
        a.set(ylim=(-span, span), xlabel="x_t (VP state at time t)", ylabel="score ∇ log P_t(x_t)",
              title=f"1-D score at t = {t:g} (σ = {p['sigma']:.3g}), n = {n}")
        a.axhline(0, c="grey", lw=0.5)
        a.legend(fontsize=7, loc="upper right")
        rows = [r for r in p["rows"] if r["step"] > 0]
        st = [r["step"] for r in rows]
        b.plot(st, [r["to_empirical"] for r in rows], "r-o", ms=3, label="to empirical score")
        b.plot(st, [r["to_population"] for r in rows], "k-o", ms=3, label="to population score")
        b.axhline(p["empirical_to_population"], c="grey", ls=":", label="empirical to population")
        b.set(xscale="log", yscale="log", xlabel="training step", ylabel="RMS score distance under P_t",
              title=f"learned score over training (t = {t:g})")
        b.legend(fontsize=8)
    fig.tight_layout()
    return fig
