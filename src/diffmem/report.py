"""Figures and summary of a sweep: pure functions of run directories.

:func:`make_report` reads every run of a sweep directory, estimates τ_gen and
τ_mem per run (:mod:`diffmem.timescales`), fits τ_mem = κ n^α per width, and
writes PNG figures (matplotlib Agg, no pyplot global state, each written to a
temporary file then renamed, so a reader never sees half a PNG):

=====================  =====================================================
``quality.png``        quality metric vs τ (log-log), one curve per n, τ_gen marked
``fmem.png``           f_mem vs τ with the bootstrap 95 % band, τ_mem marked
``collapse.png``       f_mem(τ)/f_mem(τ_max) vs τ/n
``timescales.png``     τ_mem and τ_gen vs n with the fitted power law and its band
``losses.png``         train / test DSM loss vs τ at the smallest probed noise level
``phase_diagram.png``  smallest n with f_mem(τ) = 0 vs p, τ ∈ {τ_gen, 3τ_gen, 8τ_gen} (``phase_multiples``)
=====================  =====================================================

One panel per model width when a sweep has several.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from . import rundir as rd
from .errors import DiffmemError
from .timescales import Estimate, fit_power_law, phase_boundary, stopping_time, tau_gen, tau_mem

__all__ = [
    "RunData",
    "load_run",
    "plot_quality",
    "plot_fmem",
    "plot_collapse",
    "plot_timescales",
    "plot_losses",
    "plot_phase_diagram",
    "make_report",
    "QUALITY_PREFERENCE",
]

# first one present in a run is used unless make_report(quality_metric=...) says otherwise
QUALITY_PREFERENCE = ("quality/fid", "quality/fd_feat", "quality/kid", "quality/fd_pixel")
TAU_MULTIPLES = (1, 3, 8)  # BUBM25 Fig. 3 right: τ ∈ {τ_gen, 3τ_gen, 8τ_gen}

_Series = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass
class RunData:
    """Everything the report needs from one run directory."""

    path: Path
    n: int
    width: int | None
    seed: int | None
    n_params: int | None
    total_steps: int | None
    batch_size: int | None
    quality_metric: str | None
    quality: _Series | None  # steps, values, errors
    f_mem: tuple[np.ndarray, ...] | None  # steps, values, stderr, ci_low, ci_high
    loss_train: _Series | None
    loss_test: _Series | None
    loss_level: str | None  # e.g. "t=0.01"
    tau_gen: Estimate | None = None
    tau_mem: Estimate | None = None
    tau_mem_level: Estimate | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def last_step(self) -> float:
        cands = [s[0][-1] for s in (self.f_mem, self.quality) if s is not None and len(s[0])]
        if self.total_steps:
            cands.append(self.total_steps)
        return float(max(cands)) if cands else float("nan")


def _pick_loss_level(records: list[dict]) -> tuple[dict, str | None]:
    """Filter selecting the smallest probed noise level of loss/train and loss/test."""
    levels: set[tuple[str, float]] = set()
    for r in records:
        if r.get("metric") in ("loss/train", "loss/test"):
            for key in ("t", "sigma"):
                if r.get(key) is not None:
                    levels.add((key, float(r[key])))
    if not levels:
        return {}, None
    key = "t" if any(k == "t" for k, _ in levels) else "sigma"
    val = min(v for k, v in levels if k == key)
    return {key: val}, f"{key}={val:g}"


def load_run(
    run_dir: str | Path,
    quality_metric: str | None = None,
    rel_tol: float = 0.1,
    smooth: int = 3,
    tau_mem_method: str = "significant",
    persist: int = 2,
    level: float = 0.5,
    tau_gen_reference: str = "best",
) -> RunData:
    """Read one run directory and estimate its τ_gen and τ_mem.

    ``tau_mem`` uses ``tau_mem_method`` (default: lower bootstrap bound > 0
    for ``persist`` checkpoints); ``tau_mem_level`` is the ``"level"``
    estimate (crossing of ``level`` by f_mem/f_mem(τ_max)), kept for reference.
    """
    run_dir = Path(run_dir)
    cfg = rd.read_config(run_dir)
    recs = rd.read_metrics(run_dir)
    names = {r.get("metric") for r in recs}
    qm = quality_metric or next((m for m in QUALITY_PREFERENCE if m in names), None)
    if qm is None:
        qm = next((m for m in sorted(n for n in names if isinstance(n, str)) if m.startswith("quality/")), None)
    quality = rd.metric_series(run_dir, qm, records=recs) if qm and qm in names else None
    fm = rd.metric_series(run_dir, "f_mem", records=recs, extra=("ci_low", "ci_high")) if "f_mem" in names else None
    filt, lvl = _pick_loss_level(recs)
    lt = rd.metric_series(run_dir, "loss/train", records=recs, **filt) if "loss/train" in names else None
    ls = rd.metric_series(run_dir, "loss/test", records=recs, **filt) if "loss/test" in names else None
    lt = lt if lt is not None and lt[0].size else None
    ls = ls if ls is not None and ls[0].size else None

    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    batch = train.get("batch_size") or cfg.get("batch_size")
    if batch is None and cfg.get("batch_max") is not None:
        batch = min(int(cfg["n"]), int(cfg["batch_max"]))
    run = RunData(
        path=run_dir,
        n=rd.run_n(cfg),
        width=rd.run_width(cfg),
        seed=cfg.get("seed"),
        n_params=rd.run_n_params(cfg),
        total_steps=rd.run_steps(cfg),
        batch_size=None if batch is None else int(batch),
        quality_metric=qm,
        quality=quality if quality is not None and quality[0].size else None,
        f_mem=fm if fm is not None and fm[0].size else None,
        loss_train=lt,
        loss_test=ls,
        loss_level=lvl,
    )
    if run.quality is not None and np.isfinite(run.quality[1]).any():
        s, q, e = run.quality
        run.tau_gen = tau_gen(s, q, errors=e if np.isfinite(e).any() else None, rel_tol=rel_tol, smooth=smooth,
                               reference=tau_gen_reference)
    if run.f_mem is not None:
        s, f, se, lo, _ = run.f_mem
        se_ = se if np.isfinite(se).any() else None
        lo_ = lo if np.isfinite(lo).any() else None
        run.tau_mem = tau_mem(s, f, ci_low=lo_, stderr=se_, method=tau_mem_method, persist=persist, level=level)
        run.tau_mem_level = tau_mem(s, f, ci_low=lo_, stderr=se_, method="level", level=level)
    return run


# ---------------------------------------------------------------------------
# figure helpers


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".png.tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _widths(runs: Sequence[RunData]) -> list:
    return sorted({r.width for r in runs}, key=lambda w: (w is None, w))


def _panels(runs: Sequence[RunData], title: str, panel_w: float = 5.0, h: float = 4.0):
    widths = _widths(runs)
    fig = Figure(figsize=(panel_w * len(widths) + 1.2, h), layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False)[0]
    fig.suptitle(title)
    return fig, dict(zip(widths, axes))


def _n_colors(runs: Sequence[RunData]):
    ns = [r.n for r in runs]
    lo, hi = min(ns), max(ns)
    norm = LogNorm(vmin=lo, vmax=hi if hi > lo else lo * 2)
    cmap = colormaps["viridis"]
    return lambda n: cmap(0.9 * norm(n))


def _label(r: RunData, many_seeds: bool) -> str:
    return f"n={r.n}" + (f", seed {r.seed}" if many_seeds else "")


def _many_seeds(runs: Sequence[RunData]) -> bool:
    return len({(r.width, r.n) for r in runs}) < len(runs)


def _pos(s: np.ndarray) -> np.ndarray:
    return s > 0  # log axes cannot show step 0


def _width_title(w) -> str:
    return "all runs" if w is None else f"width W = {w}"


def _n_ticks(axis, values) -> None:
    """Label a log axis of training-set sizes at the values used, as plain integers."""
    vals = sorted({float(v) for v in values if v is not None and v > 0})
    if not vals:
        return
    axis.set_major_locator(FixedLocator(vals))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())


def _legend(ax, **kw) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, **kw)


# ---------------------------------------------------------------------------
# figures


def plot_quality(runs: Sequence[RunData], path: str | Path) -> Path:
    """Quality metric vs training step (log-log), one curve per n; τ_gen marked."""
    runs = [r for r in runs if r.quality is not None]
    if not runs:
        return _placeholder(path, "no quality metric in these runs")
    metric = runs[0].quality_metric or "quality"
    fig, axes = _panels(runs, f"Sample quality during training ({metric}, lower is better)")
    color, many = _n_colors(runs), _many_seeds(runs)
    for r in sorted(runs, key=lambda r: r.n):
        ax = axes[r.width]
        s, q, e = r.quality
        k = _pos(s) & np.isfinite(q)
        c = color(r.n)
        ax.plot(s[k], q[k], "-o", ms=2.5, lw=1.2, color=c, label=_label(r, many))
        if np.isfinite(e[k]).any():
            ee = np.nan_to_num(e[k])
            ax.fill_between(s[k], np.maximum(q[k] - ee, q[k] * 0.05), q[k] + ee, color=c, alpha=0.15, lw=0)
        if r.tau_gen is not None:
            ax.axvline(r.tau_gen.value, color=c, ls=":", lw=1)
    for w, ax in axes.items():
        ax.set_xscale("log")
        if all((r.quality[1][np.isfinite(r.quality[1])] > 0).all() for r in runs if r.width == w):
            ax.set_yscale("log")
        ax.set_xlabel("training step τ")
        ax.set_ylabel(metric)
        ax.set_title(_width_title(w) + "  (dotted: τ_gen)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax)
    return _save(fig, path)


def plot_fmem(runs: Sequence[RunData], path: str | Path) -> Path:
    """f_mem vs training step (log x) with the bootstrap 95 % band; τ_mem marked."""
    runs = [r for r in runs if r.f_mem is not None]
    if not runs:
        return _placeholder(path, "no f_mem in these runs")
    fig, axes = _panels(runs, "Memorised fraction during training (band: bootstrap 95 % interval)")
    color, many = _n_colors(runs), _many_seeds(runs)
    for r in sorted(runs, key=lambda r: r.n):
        ax = axes[r.width]
        s, f, se, lo, hi = r.f_mem
        k = _pos(s)
        c = color(r.n)
        ax.plot(s[k], f[k], "-o", ms=2.5, lw=1.2, color=c, label=_label(r, many))
        if np.isfinite(lo[k]).any() and np.isfinite(hi[k]).any():
            ax.fill_between(s[k], lo[k], hi[k], color=c, alpha=0.18, lw=0)
        elif np.isfinite(se[k]).any():
            ee = 1.96 * np.nan_to_num(se[k])
            ax.fill_between(s[k], np.clip(f[k] - ee, 0, 1), np.clip(f[k] + ee, 0, 1), color=c, alpha=0.18, lw=0)
        if r.tau_mem is not None and r.tau_mem.reached:
            ax.axvline(r.tau_mem.value, color=c, ls=":", lw=1)
    for w, ax in axes.items():
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training step τ")
        ax.set_ylabel("f_mem  (fraction with d1/d2 < 1/3)")
        ax.set_title(_width_title(w) + "  (dotted: τ_mem)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, loc="upper left")
    return _save(fig, path)


def plot_collapse(runs: Sequence[RunData], path: str | Path) -> Path:
    """f_mem(τ)/f_mem(τ_max) vs τ/n: curves collapse when τ_mem ∝ n."""
    runs = [r for r in runs if r.f_mem is not None and r.f_mem[1][-1] > 0]
    if not runs:
        return _placeholder(path, "no run memorises by its last checkpoint: nothing to normalise")
    fig, axes = _panels(runs, "Collapse: f_mem(τ) / f_mem(τ_max) against τ / n")
    color, many = _n_colors(runs), _many_seeds(runs)
    for r in sorted(runs, key=lambda r: r.n):
        ax = axes[r.width]
        s, f = r.f_mem[0], r.f_mem[1]
        k = _pos(s)
        ax.plot(s[k] / r.n, f[k] / f[-1], "-o", ms=2.5, lw=1.2, color=color(r.n), label=_label(r, many))
    for w, ax in axes.items():
        ax.set_xscale("log")
        ax.set_xlabel("τ / n  (training steps per training sample)")
        ax.set_ylabel("f_mem(τ) / f_mem(τ_max)")
        ax.set_title(_width_title(w), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax, loc="upper left")
    return _save(fig, path)


def _err(est: Estimate) -> tuple[float, float]:
    return max(est.value - est.low, 0.0), max(est.high - est.value, 0.0)


def _short(e: Estimate) -> str:
    """A compact description of an estimator for a legend."""
    m = e.method
    if m.startswith("tau_gen"):
        if e.details.get("reference") == "target":
            return f"quality reaches the common level {e.details.get('threshold', float('nan')):.3g}"
        if e.details.get("reference") == "improvement":
            return f"{100 - 100 * e.details.get('rel_tol', 0.1):g} % of the quality improvement made"
        return f"quality within {100 * e.details.get('rel_tol', 0.1):g} % of best"
    if "crosses" in m:
        return "f_mem/f_mem(τ_max) crosses " + m.split("crosses ")[1].split(" ")[0]
    return "first significant f_mem > 0"


def plot_timescales(runs: Sequence[RunData], fits: dict, path: str | Path) -> Path:
    """τ_mem and τ_gen vs n (log-log) with the fitted power law and its bootstrap band."""
    fig = Figure(figsize=(6.8, 5.0), layout="constrained")
    ax = fig.subplots()
    widths = _widths(runs)
    cmap = colormaps["tab10"]
    unreached_label = True
    for j, w in enumerate(widths):
        c = cmap(j % 10)
        wl = "" if len(widths) == 1 or w is None else f" (W={w})"
        rs = [r for r in runs if r.width == w]
        mem = [r for r in rs if r.tau_mem is not None and r.tau_mem.reached]
        if mem:
            ax.errorbar([r.n for r in mem], [r.tau_mem.value for r in mem],
                        yerr=np.array([_err(r.tau_mem) for r in mem]).T, fmt="o", color=c, ms=6,
                        capsize=3, label=f"τ_mem{wl}: {_short(mem[0].tau_mem)}")
        nr = [r for r in rs if r.tau_mem is not None and not r.tau_mem.reached]
        if nr:
            ax.plot([r.n for r in nr], [r.tau_mem.low for r in nr], "^", mfc="none", color=c, ms=8,
                    label="τ_mem not reached (> run length)" if unreached_label else None)
            unreached_label = False
        gen = [r for r in rs if r.tau_gen is not None]
        if gen:
            ax.errorbar([r.n for r in gen], [r.tau_gen.value for r in gen],
                        yerr=np.array([_err(r.tau_gen) for r in gen]).T, fmt="s", mfc="white", color=c,
                        ms=6, capsize=3, ls="none", alpha=0.8, label=f"τ_gen{wl}: {_short(gen[0].tau_gen)}")
        fit = fits.get(w)
        if fit and fit.get("ok"):
            ns = np.array([r.n for r in rs], dtype=float)
            xs = np.geomspace(ns.min() / 1.3, ns.max() * 1.3, 100)
            ax.plot(xs, fit["kappa"] * xs ** fit["alpha"], "-", color=c, lw=1.5,
                    label=(f"fit τ_mem = κ n^α{wl}: α = {fit['alpha']:.2f} "
                           f"[{fit['alpha_ci'][0]:.2f}, {fit['alpha_ci'][1]:.2f}]"))
            ba, bk = fit.get("boot_alpha"), fit.get("boot_log_kappa")
            if ba is not None and len(ba) > 10:
                pred = bk[:, None] + ba[:, None] * np.log(xs)[None, :]
                lo, hi = np.exp(np.percentile(pred, [2.5, 97.5], axis=0))
                ax.fill_between(xs, lo, hi, color=c, alpha=0.15, lw=0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    _n_ticks(ax.xaxis, [r.n for r in runs])
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("training steps")
    ax.set_title("Timescales vs n (band: bootstrap 95 % of the fit; bars: estimate intervals)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax, loc="upper left")
    return _save(fig, path)


def plot_losses(runs: Sequence[RunData], path: str | Path) -> Path:
    """Train (dashed) and test (solid) DSM loss vs training step."""
    runs = [r for r in runs if r.loss_train is not None or r.loss_test is not None]
    if not runs:
        return _placeholder(path, "no loss/train or loss/test in these runs")
    lvl = runs[0].loss_level
    fig, axes = _panels(runs, "DSM loss: train (dashed) vs held-out (solid)" + (f" at {lvl}" if lvl else ""))
    color, many = _n_colors(runs), _many_seeds(runs)
    for r in sorted(runs, key=lambda r: r.n):
        ax = axes[r.width]
        c = color(r.n)
        if r.loss_test is not None:
            s, v, _ = r.loss_test
            ax.plot(s[_pos(s)], v[_pos(s)], "-", lw=1.3, color=c, label=_label(r, many))
        if r.loss_train is not None:
            s, v, _ = r.loss_train
            ax.plot(s[_pos(s)], v[_pos(s)], "--", lw=1.3, color=c,
                    label=None if r.loss_test is not None else _label(r, many))
    for w, ax in axes.items():
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training step τ")
        ax.set_ylabel("DSM loss")
        ax.set_title(_width_title(w), fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax)
    return _save(fig, path)


def plot_phase_diagram(boundary: Sequence[dict], path: str | Path) -> Path:
    """Smallest n with f_mem(τ) = 0 against the parameter count p (BUBM25 Fig. 3 right)."""
    if not boundary:
        return _placeholder(path, "no τ_gen available: phase diagram undefined")
    use_p = all(b.get("p") is not None for b in boundary)
    fig = Figure(figsize=(6.4, 4.8), layout="constrained")
    ax = fig.subplots()
    markers = "osD^v"
    ymax = max((max(b["n_tested"]) for b in boundary if b["n_tested"]), default=1.0)
    by_k: dict[float, list[dict]] = {}
    for b in boundary:
        by_k.setdefault(b["multiple"], []).append(b)
    for j, (k, bs) in enumerate(sorted(by_k.items())):
        bs = sorted(bs, key=lambda b: (b["p"] if use_p else b["width"]) or 0)
        xs = [b["p"] if use_p else b["width"] for b in bs]
        c = colormaps["tab10"](j)
        found = [(x, b["n_star"]) for x, b in zip(xs, bs) if b["n_star"] is not None]
        if found:
            steps = f" (≈ {bs[0]['tau']:.3g} steps)" if len(bs) == 1 else ""
            ax.plot(*zip(*found), "-" + markers[j % 5], color=c, ms=10 - 2 * j, lw=2.5 - 0.6 * j,
                    label=f"τ = {k:g} τ_gen{steps}")
        miss = [x for x, b in zip(xs, bs) if b.get("status") == "all_memorise"]
        if miss:
            ax.plot(miss, [ymax * 1.6] * len(miss), markers[j % 5], mfc="none", color=c, ms=8,
                    label=f"τ = {k:g} τ_gen: every tested n memorises")
    if not any(b.get("status") in ("found", "all_memorise") for b in boundary):
        ax.text(0.5, 0.5, "no run was trained up to these τ", ha="center", va="center", transform=ax.transAxes)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if ymax > 1:
        ax.axhline(ymax, color="grey", ls=":", lw=1)
        ax.text(0.01, ymax, "largest n tested", va="bottom", fontsize=8, color="grey",
                transform=blended_transform_factory(ax.transAxes, ax.transData))
    _n_ticks(ax.yaxis, [n for b in boundary for n in b["n_tested"]])
    if not use_p:
        _n_ticks(ax.xaxis, [b["width"] for b in boundary])
    ax.set_xlabel("trainable parameters p" if use_p else "model width W (parameter count unknown)")
    ax.set_ylabel("smallest n with f_mem(τ) = 0")
    ax.set_title("Phase diagram: above each curve no memorisation at that τ", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def _placeholder(path: str | Path, message: str) -> Path:
    fig = Figure(figsize=(5, 2), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center")
    return _save(fig, path)


# ---------------------------------------------------------------------------
# the report


def _fin(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _json_fit(fit: dict) -> dict:
    out = {}
    for k, v in fit.items():
        if k.startswith("boot_"):
            continue
        if isinstance(v, float):
            v = _fin(v)
        elif isinstance(v, list):
            v = [_fin(x) if isinstance(x, float) else x for x in v]
        out[k] = v
    return out


def _atomic_json(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".json.tmp", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(obj, fh, indent=2)
        fh.write("\n")
    os.replace(tmp, path)


def _fit_by_width(runs: Sequence[RunData], attr: str, n_boot: int, seed: int) -> dict[Any, dict]:
    """fit_power_law of the estimate ``attr`` against n, separately for each width."""
    fits: dict[Any, dict] = {}
    for w in _widths(runs):
        ests = [(r.n, getattr(r, attr)) for r in runs if r.width == w and getattr(r, attr) is not None]
        if ests:
            fits[w] = fit_power_law(
                [n for n, _ in ests],
                [e.value if e.reached else None for _, e in ests],
                [e.low if e.reached else None for _, e in ests],
                [e.high if e.reached else None for _, e in ests],
                n_boot=n_boot, seed=seed,
            )
    return fits


def _headline(fits: dict[Any, dict]) -> tuple[Any, dict]:
    """The fit with the most points (ties: the larger width)."""
    ok = {w: f for w, f in fits.items() if f.get("ok")}
    if not ok:
        return None, {}
    w = max(ok, key=lambda w: (ok[w]["n_points"], w or 0))
    return w, ok[w]


def _common_tau_gen(runs: list, rel_tol: float, smooth: int) -> None:
    """τ_gen as the time to reach a quality level every run of a width attains.

    Per width, q* = max over runs of (smoothed best quality) + rel_tol·|that|;
    each run's τ_gen is its first checkpoint with smoothed quality ≤ q*.  In
    the generalisation phase the quality curves of different n coincide
    (BUBM25: τ_gen independent of n) while their plateaus differ (a model of
    16 images cannot match the held-out set as well as one of 128), so a
    common level compares like with like.
    """
    for w in _widths(runs):
        group = [r for r in runs if r.width == w and r.quality is not None and r.tau_gen is not None]
        if not group:
            continue
        worst_best = max(r.tau_gen.details["best"] for r in group)
        target = worst_best + rel_tol * abs(worst_best)
        for r in group:
            s, q, e = r.quality
            r.tau_gen = tau_gen(s, q, errors=e if np.isfinite(e).any() else None, rel_tol=rel_tol, smooth=smooth,
                                target=target)


def make_report(
    sweep_dir: str | Path,
    out_dir: str | Path,
    quality_metric: str | None = None,
    rel_tol: float = 0.1,
    smooth: int = 3,
    tau_mem_method: str = "significant",
    persist: int = 2,
    level: float = 0.5,
    alpha_frac: float = 0.5,
    n_boot: int = 2000,
    seed: int = 0,
    write_summary: bool = True,
    tau_gen_reference: str = "best",
    phase_multiples: Sequence[float] = TAU_MULTIPLES,
) -> dict[str, Any]:
    """Analyse a sweep directory and write its figures into ``out_dir``.

    Args:
        sweep_dir: a sweep directory (``sweep.json`` + run directories), or a
            single run directory.
        out_dir: where the PNGs (and ``summary.json``) are written.
        quality_metric: metric used for τ_gen (default: first present of
            :data:`QUALITY_PREFERENCE`).
        rel_tol, smooth, tau_gen_reference: τ_gen definition
            (:func:`diffmem.timescales.tau_gen`; ``"best"``: within ``rel_tol``
            of the best value, ``"improvement"``: ``1 − rel_tol`` of the total
            improvement made), ``"common"``: the first checkpoint reaching the
            level that every run of the width attains (see ``_common_tau_gen``).
        tau_mem_method, persist, level: τ_mem definition
            (:func:`diffmem.timescales.tau_mem`).
        alpha_frac: FSW25 stopping fraction for ``stop_steps``.
        n_boot, seed: bootstrap of the power-law fit.
        write_summary: also write ``out_dir/summary.json``.
        phase_multiples: the phase diagram's times, as multiples of each
            width's median τ_gen (BUBM25: 1, 3, 8 — where τ_mem/τ_gen ≈ n/300;
            pick larger multiples when memorisation starts later in units of
            τ_gen, else every tested n still generalises at those times).

    Returns:
        JSON-serialisable summary.  Lists aligned per run (sorted by width,
        n, seed): ``n``, ``width``, ``seed``, ``n_params``, ``tau_gen``,
        ``tau_gen_ci``, ``tau_mem`` (None when not reached), ``tau_mem_ci``
        (``[last step, None]`` when not reached), ``tau_mem_reached``,
        ``tau_mem_level``, ``f_mem_final``, ``quality_best``, ``stop_steps``,
        ``stop_epochs``.  Fit: ``slope`` (α), ``slope_ci`` (bootstrap 95 %),
        ``slope_ci_t``, ``kappa``, ``kappa_ci``, ``kappa_linear`` (median of
        τ_mem/n, FSW25's κ) and ``fits`` (one per width; the headline
        ``slope`` is that of the width with the most reached τ_mem, ties to
        the larger width); ``slope_level``, ``slope_level_ci`` and
        ``fits_level``: the same fit of the ``"level"`` τ_mem.  Also ``tau_gen_spread`` (max/min τ_gen per width),
        ``phase_boundary``, ``definitions``, ``quality_metric`` and
        ``figures`` (name → path).
    """
    phase_multiples = [float(k) for k in phase_multiples]
    if not phase_multiples or not all(math.isfinite(k) and k > 0 for k in phase_multiples):
        raise DiffmemError(f"phase_multiples must be positive numbers, got {phase_multiples}")
    sweep_dir, out_dir = Path(sweep_dir), Path(out_dir)
    paths = [sweep_dir] if (sweep_dir / "config.json").exists() else rd.list_runs(sweep_dir)
    if not paths:
        raise DiffmemError(f"no run directories found in {sweep_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    per_run_ref = "best" if tau_gen_reference == "common" else tau_gen_reference
    runs = [load_run(p, quality_metric, rel_tol, smooth, tau_mem_method, persist, level, per_run_ref) for p in paths]
    runs.sort(key=lambda r: (r.width is None, r.width or 0, r.n, r.seed if r.seed is not None else 0))
    if tau_gen_reference == "common":
        _common_tau_gen(runs, rel_tol, smooth)

    fits = _fit_by_width(runs, "tau_mem", n_boot, seed)
    fits_level = _fit_by_width(runs, "tau_mem_level", n_boot, seed)
    head_w, head = _headline(fits)
    _, head_level = _headline(fits_level)

    # phase boundary at multiples of τ_gen (per width: median τ_gen over its runs)
    taus: dict[Any, list[float]] = {}
    for w in _widths(runs):
        tg = [r.tau_gen.value for r in runs if r.width == w and r.tau_gen is not None]
        if tg:
            taus[w] = [k * float(np.median(tg)) for k in phase_multiples]
    rows = [
        {"n": r.n, "width": r.width, "p": r.n_params, "steps": r.f_mem[0], "f_mem": r.f_mem[1]}
        for r in runs if r.f_mem is not None and r.width in taus
    ]
    boundary = phase_boundary(rows, taus)
    for b in boundary:
        b["multiple"] = phase_multiples[taus[b["width"]].index(b["tau"])] if b["tau"] in taus[b["width"]] else None

    figures = {
        "quality": str(plot_quality(runs, out_dir / "quality.png")),
        "f_mem": str(plot_fmem(runs, out_dir / "fmem.png")),
        "collapse": str(plot_collapse(runs, out_dir / "collapse.png")),
        "timescales": str(plot_timescales(runs, fits, out_dir / "timescales.png")),
        "losses": str(plot_losses(runs, out_dir / "losses.png")),
        "phase_diagram": str(plot_phase_diagram(boundary, out_dir / "phase_diagram.png")),
    }

    reached = [r for r in runs if r.tau_mem is not None and r.tau_mem.reached]
    kappa_lin = float(np.median([r.tau_mem.value / r.n for r in reached])) if reached else None
    stops = [
        stopping_time(kappa_lin, r.n, alpha_frac, r.batch_size) if kappa_lin else {"steps": None, "epochs": None}
        for r in runs
    ]
    spread = {}
    for w in _widths(runs):
        tg = [r.tau_gen.value for r in runs if r.width == w and r.tau_gen is not None and r.tau_gen.value > 0]
        if tg:
            spread[str(w)] = max(tg) / min(tg)

    def est(e: Estimate | None, attr: str):
        return None if e is None else _fin(getattr(e, attr))

    summary: dict[str, Any] = {
        "sweep_dir": str(sweep_dir),
        "runs": [str(r.path) for r in runs],
        "n": [r.n for r in runs],
        "width": [r.width for r in runs],
        "seed": [r.seed for r in runs],
        "n_params": [r.n_params for r in runs],
        "tau_gen": [est(r.tau_gen, "value") for r in runs],
        "tau_gen_ci": [[est(r.tau_gen, "low"), est(r.tau_gen, "high")] for r in runs],
        "tau_mem": [est(r.tau_mem, "value") for r in runs],
        "tau_mem_ci": [[est(r.tau_mem, "low"), est(r.tau_mem, "high")] for r in runs],
        "tau_mem_reached": [bool(r.tau_mem is not None and r.tau_mem.reached) for r in runs],
        "tau_mem_level": [est(r.tau_mem_level, "value") for r in runs],
        "f_mem_final": [None if r.f_mem is None else _fin(r.f_mem[1][-1]) for r in runs],
        "quality_best": [None if r.tau_gen is None else _fin(r.tau_gen.details["best"]) for r in runs],
        "slope": _fin(head.get("alpha")),
        "slope_ci": [_fin(x) for x in head.get("alpha_ci", [None, None])],
        "slope_ci_t": [_fin(x) for x in head.get("alpha_ci_t", [None, None])],
        "kappa": _fin(head.get("kappa")),
        "kappa_ci": [_fin(x) for x in head.get("kappa_ci", [None, None])],
        "kappa_linear": kappa_lin,
        "fit_width": head_w,
        "fits": {str(w): _json_fit(f) for w, f in fits.items()},
        "slope_level": _fin(head_level.get("alpha")),
        "slope_level_ci": [_fin(x) for x in head_level.get("alpha_ci", [None, None])],
        "fits_level": {str(w): _json_fit(f) for w, f in fits_level.items()},
        "tau_gen_spread": spread,
        "stop_steps": [_fin(s["steps"]) if s["steps"] is not None else None for s in stops],
        "stop_epochs": [_fin(s["epochs"]) if s["epochs"] is not None else None for s in stops],
        "alpha_frac": alpha_frac,
        "phase_boundary": [{k: v for k, v in b.items()} for b in boundary],
        "phase_multiples": phase_multiples,
        "quality_metric": runs[0].quality_metric,
        "definitions": {
            "tau_gen": runs[0].tau_gen.method if runs[0].tau_gen else None,
            "tau_mem": next((r.tau_mem.method for r in runs if r.tau_mem is not None), None),
            "tau_mem_level": next((r.tau_mem_level.method for r in runs if r.tau_mem_level is not None), None),
            "fit": head.get("method"),
            "stop": f"FSW25: stop at {alpha_frac:g} * kappa_linear * n steps",
        },
        "figures": figures,
    }
    if write_summary:
        _atomic_json(summary, out_dir / "summary.json")
    return summary
