"""Figures of the KK26 measurements (and BUBM25's KL), drawn from an :class:`~diffmem.analysis.Analysis`.

Only runs that recorded a measurement appear in its figure; a figure none
recorded is not drawn.  Files (one curve or panel per run, coloured by n):

=====================  =====================================================
``gap.png``            G(σ) = (e_val − e_train)/e_train against σ, one panel per run, curves coloured by
                       training step
``gap_heatmap.png``    G over (training step τ, σ), one panel per run, one colour scale centred on 0
``gap_vs_fmem.png``    the peak of G(σ) (top) and f_mem (bottom) against τ; τ_gap and τ_mem marked
``fd_gap.png``         FD(samples, training subset) (dashed), FD(samples, held-out subset) (solid) and
                       FD(training subset, held-out subset) (dotted) vs τ
``trajectories.png``   distance of trajectory states / noisy training points to the noisy training set vs
                       σ (last checkpoint); copies among denoised trajectory states / denoised noisy
                       training images vs τ
``kl.png``             KL(P_θ‖P_0) with its standard error (top) and f_mem (bottom) against τ
=====================  =====================================================
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm, TwoSlopeNorm
from matplotlib.figure import Figure

from .analysis import Analysis, RunData
from .fileio import save_figure

__all__ = ["render_kk26", "plot_gap", "plot_gap_heatmap", "plot_gap_vs_fmem", "plot_fd_gap", "plot_trajectories",
           "plot_kl"]


def _n_color(runs: Sequence[RunData]):
    ns = [r.n for r in runs]
    norm = LogNorm(vmin=min(ns), vmax=max(max(ns), min(ns) * 2))
    return lambda n: colormaps["viridis"](0.9 * norm(n))


def _name(r: RunData) -> str:
    return f"n={r.n}" + (f", W={r.width}" if r.width is not None else "") + (f", seed {r.seed}" if r.seed else "")


def _grid_axes(k: int, title: str, w: float = 3.6, h: float = 3.0):
    cols = min(k, 4)
    rows = -(-k // cols)
    fig = Figure(figsize=(w * cols + 1.0, h * rows + 0.6), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[k:]:
        ax.axis("off")
    fig.suptitle(title)
    return fig, axes[:k]


def _sorted(runs):
    return sorted(runs, key=lambda r: (r.width is None, r.width or 0, r.n, r.seed or 0))


def plot_gap(runs: Sequence[RunData], path: str | Path) -> Path:
    runs = _sorted([r for r in runs if "G" in r.kk26.get("gap", {})])
    fig, axes = _grid_axes(len(runs), "Generalisation gap per noise level G(σ) = (e_val − e_train)/e_train")
    steps_all = [s for r in runs for s in r.kk26["gap"]["G"][0] if s > 0]
    norm = LogNorm(vmin=min(steps_all, default=1), vmax=max(max(steps_all, default=10), 2))
    cmap = colormaps["viridis"]
    for r, ax in zip(runs, axes):
        steps, sig, G = r.kk26["gap"]["G"]
        for i, s in enumerate(steps):
            ok = np.isfinite(G[i])
            ax.plot(sig[ok], G[i, ok], lw=1.0, color=cmap(norm(max(s, norm.vmin))))
        ax.set_xscale("log")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_title(_name(r), fontsize=9)
        ax.set_xlabel("noise level σ")
        ax.set_ylabel("G(σ)")
        ax.grid(True, which="both", alpha=0.3)
    from matplotlib.cm import ScalarMappable

    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=list(axes), label="training step τ", shrink=0.8)
    return save_figure(fig, path, dpi=120)


def plot_gap_heatmap(runs: Sequence[RunData], path: str | Path) -> Path:
    runs = _sorted([r for r in runs if "G" in r.kk26.get("gap", {})])
    fig, axes = _grid_axes(len(runs), "G over training step τ and noise level σ (red: held-out error above training)")
    vals = np.concatenate([r.kk26["gap"]["G"][2][np.isfinite(r.kk26["gap"]["G"][2])].ravel() for r in runs])
    hi = max(float(np.nanpercentile(vals, 99.5)) if vals.size else 1.0, 1e-3)
    lo = min(float(np.nanmin(vals)) if vals.size else -1e-3, -1e-3)
    norm = TwoSlopeNorm(vcenter=0.0, vmin=max(lo, -hi), vmax=hi)
    mesh = None
    for r, ax in zip(runs, axes):
        steps, sig, G = r.kk26["gap"]["G"]
        keep = steps > 0
        if keep.sum() < 2:
            ax.text(0.5, 0.5, "fewer than 2 checkpoints", ha="center", transform=ax.transAxes)
            continue
        mesh = ax.pcolormesh(steps[keep], sig, np.ma.masked_invalid(G[keep].T), cmap="RdBu_r", norm=norm,
                             shading="nearest")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(_name(r), fontsize=9)
        ax.set_xlabel("training step τ")
        ax.set_ylabel("σ")
    if mesh is not None:
        fig.colorbar(mesh, ax=list(axes), label="G", shrink=0.8)
    return save_figure(fig, path, dpi=120)


def _mark(ax, x, color, style):
    if x is not None and x > 0:
        ax.axvline(x, color=color, ls=style, lw=1.0, alpha=0.8)


def _fmem_curve(ax, r: RunData, color) -> None:
    """f_mem against τ with τ_mem marked (dashed), on the lower panel of a two-row figure."""
    if r.f_mem is None:
        return
    fs, fv = r.f_mem[0], r.f_mem[1]
    ax.plot(fs[fs > 0], fv[fs > 0], "-", lw=1.3, color=color)
    if r.tau_mem is not None and r.tau_mem.reached:
        _mark(ax, r.tau_mem.value, color, "--")


def _finish_pair(top, bot) -> None:
    """Shared log τ axis, grids, labels and the legend of a (measure, f_mem) two-row figure."""
    bot.set_ylabel("f_mem")
    bot.set_xlabel("training step τ")
    for ax in (top, bot):
        ax.set_xscale("log")
        ax.grid(True, which="both", alpha=0.3)
    if top.get_legend_handles_labels()[0]:
        top.legend(fontsize=8)


def plot_gap_vs_fmem(runs: Sequence[RunData], path: str | Path, level: float) -> Path:
    runs = _sorted([r for r in runs if "gap_peak" in r.kk26])
    col = _n_color(runs)
    widths = sorted({r.width for r in runs}, key=lambda w: (w is None, w or 0))
    fig = Figure(figsize=(5.5 * len(widths) + 0.6, 6.4), layout="constrained")
    axes = fig.subplots(2, len(widths), squeeze=False, sharex=True)
    fig.suptitle(f"Objective gap (top; dotted: τ_gap, peak ≥ {level:g})\nbefore memorisation (bottom; dashed: τ_mem)",
                 fontsize=10)
    for j, w in enumerate(widths):
        top, bot = axes[0, j], axes[1, j]
        for r in (r for r in runs if r.width == w):
            s, pk, _ = r.kk26["gap_peak"]
            ok = s > 0
            top.plot(s[ok], pk[ok], "-", lw=1.3, color=col(r.n), label=f"n={r.n}" + (f", seed {r.seed}" if r.seed else ""))
            _mark(top, r.tau_gap, col(r.n), ":")
            _fmem_curve(bot, r, col(r.n))
            _mark(bot, r.tau_gap, col(r.n), ":")
        top.axhline(level, color="grey", lw=0.8, ls="--")
        top.set_yscale("symlog", linthresh=0.1)
        top.set_title("all runs" if w is None else f"width W = {w}", fontsize=10)
        top.set_ylabel("peak of G(σ) over σ")
        _finish_pair(top, bot)
    return save_figure(fig, path, dpi=120)


def plot_fd_gap(runs: Sequence[RunData], path: str | Path) -> Path:
    runs = _sorted([r for r in runs if "fd_gap" in r.kk26])
    names = sorted({k for r in runs for k in r.kk26["fd_gap"]})
    col = _n_color(runs)
    fig = Figure(figsize=(6.0 * len(names), 4.2), layout="constrained")
    axes = fig.subplots(1, len(names), squeeze=False)[0]
    fig.suptitle("Sample-level gap: FD of the samples to the training subset (dashed) and to a held-out subset of the "
                 "same size (solid);\ndotted: FD between those two subsets (what exact copies of the training set "
                 "would show)", fontsize=10)
    for ax, name in zip(axes, names):
        for r in runs:
            sides = r.kk26["fd_gap"].get(name, {})
            for side, ls in (("test", "-"), ("train", "--"), ("train_vs_test", ":")):
                if side in sides:
                    s, v = sides[side]
                    ax.plot(s[s > 0], v[s > 0], ls, lw=1.3, color=col(r.n), label=_name(r) if side == "test" else None)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training step τ")
        ax.set_ylabel(name)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def _closest(sig: np.ndarray, target: float) -> int:
    return int(np.argmin(np.abs(np.log(sig) - np.log(target))))


def plot_trajectories(runs: Sequence[RunData], path: str | Path, sigma_ref: float | None = None) -> Path:
    """One row per width.  ``sigma_ref``: the σ of the middle and right panels (default: the median σ of the
    runs' final gap peak, where the denoiser overfits most; 1 if no gap was recorded)."""
    runs = _sorted([r for r in runs if "dist_noisy" in r.kk26.get("traj", {})])
    col = _n_color(runs)
    if sigma_ref is None:
        peaks = [r.kk26["gap_peak"][2][-1] for r in runs if "gap_peak" in r.kk26]
        sigma_ref = float(np.median(peaks)) if peaks else 1.0
    widths = sorted({r.width for r in runs}, key=lambda w: (w is None, w or 0))
    fig = Figure(figsize=(15.0, 4.0 * len(widths) + 0.5), layout="constrained")
    axes = fig.subplots(len(widths), 3, squeeze=False)
    for i, w in enumerate(widths):
        a, b, c = axes[i]
        sig_txt = "?"
        for r in (r for r in runs if r.width == w):
            t = r.kk26["traj"]
            steps, sig, dn = t["dist_noisy"]
            _, _, dref = t["dist_noisy_train"]
            a.plot(sig, dn[-1], "-", color=col(r.n), lw=1.3, label=f"n={r.n}")
            a.plot(sig, dref[-1], "--", color=col(r.n), lw=1.0)
            j = _closest(sig, sigma_ref)
            sig_txt = f"σ ≈ {sig[j]:.3g}"
            ok = steps > 0
            for name, ax in (("denoised_copy", b), ("denoised_nn", c)):
                _, _, v = t[name]
                _, _, vt = t[name + "_train"]
                ax.plot(steps[ok], v[ok, j], "-", color=col(r.n), lw=1.3)
                ax.plot(steps[ok], vt[ok, j], "--", color=col(r.n), lw=1.0)
        wt = "" if w is None else f"W = {w}: "
        a.set_xscale("log")
        a.set_yscale("log")
        a.set_xlabel("σ along the sampling trajectory")
        a.set_ylabel("distance to nearest noisy training point / √dim", fontsize=8)
        a.set_title(f"{wt}last checkpoint, trajectory states (solid) vs noisy training points (dashed)", fontsize=9)
        b.set_title(f"{wt}copies (d1/d2 < threshold) among denoised states at {sig_txt}:\n"
                    "trajectories (solid) vs noisy training images (dashed)", fontsize=9)
        b.set_ylabel("fraction copied")
        c.set_title(f"{wt}distance of denoised states to the nearest\ntraining image at {sig_txt} (solid/dashed as left)",
                    fontsize=9)
        c.set_ylabel("d1 / √dim")
        for ax in (b, c):
            ax.set_xscale("log")
            ax.set_xlabel("training step τ")
        for ax in (a, b, c):
            ax.grid(True, which="both", alpha=0.3)
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)


def plot_kl(runs: Sequence[RunData], path: str | Path) -> Path:
    runs = _sorted([r for r in runs if "kl" in r.kk26])
    col = _n_color(runs)
    fig = Figure(figsize=(7.0, 6.0), layout="constrained")
    top, bot = fig.subplots(2, 1, sharex=True)
    for r in runs:
        s, kl, se = r.kk26["kl"]
        ok = s > 0
        top.plot(s[ok], kl[ok], "-", lw=1.3, color=col(r.n), label=_name(r))
        if np.isfinite(se).any():  # on a log axis: the lower edge is clipped at a tenth of the value
            lo = np.maximum(kl - 2 * se, 0.1 * np.abs(kl))
            top.fill_between(s[ok], lo[ok], (kl + 2 * se)[ok], color=col(r.n), alpha=0.2, lw=0)
        _fmem_curve(bot, r, col(r.n))
    vals = np.concatenate([r.kk26["kl"][1] for r in runs]) if runs else np.array([1.0])
    top.set_yscale("log" if np.all(vals > 0) else "symlog", **({} if np.all(vals > 0) else {"linthresh": 0.1}))
    top.set_ylabel("KL(P_θ ‖ P_0), nats (band: ± 2 SE)")
    top.set_title("PF-ODE likelihood: KL of the model to the data (top), memorisation (bottom; dashed: τ_mem)",
                  fontsize=9)
    _finish_pair(top, bot)
    return save_figure(fig, path, dpi=120)


def render_kk26(analysis: Analysis, out_dir: str | Path) -> dict[str, str]:
    """The KK26 figures of the runs that recorded the measurements (name -> path)."""
    out_dir = Path(out_dir)
    runs = [r for r in analysis.runs if r.kk26]
    out: dict[str, str] = {}
    if any("G" in r.kk26.get("gap", {}) for r in runs):
        out["gap"] = str(plot_gap(runs, out_dir / "gap.png"))
        out["gap_heatmap"] = str(plot_gap_heatmap(runs, out_dir / "gap_heatmap.png"))
    if any("gap_peak" in r.kk26 for r in runs):
        out["gap_vs_fmem"] = str(plot_gap_vs_fmem(runs, out_dir / "gap_vs_fmem.png", analysis.definitions.gap_level))
    if any("fd_gap" in r.kk26 for r in runs):
        out["fd_gap"] = str(plot_fd_gap(runs, out_dir / "fd_gap.png"))
    if any("dist_noisy" in r.kk26.get("traj", {}) for r in runs):
        out["trajectories"] = str(plot_trajectories(runs, out_dir / "trajectories.png"))
    if any("kl" in r.kk26 for r in runs):
        out["kl"] = str(plot_kl(runs, out_dir / "kl.png"))
    return out
