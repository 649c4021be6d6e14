"""Figures and summary of runs: renderings of one :class:`~diffmem.analysis.Analysis`.

:func:`render` draws the figures of an analysis; :func:`make_report` is
``analyse`` + ``render`` + ``summary.json``.  PNGs are drawn with matplotlib's
object API (no pyplot global state) and written atomically:

=====================  =====================================================
``quality.png``        quality metric vs τ (log-log), one curve per n (points: raw; line: the running
                       median τ_gen is read from), τ_gen marked
``fmem.png``           f_mem vs τ with the bootstrap 95 % band, τ_mem marked
``collapse.png``       f_mem(τ)/f_mem(τ_max) vs τ/n
``timescales.png``     τ_mem and τ_gen vs n with the fitted power law and its band
``losses.png``         train / test DSM loss vs τ at the smallest probed noise level
``phase_diagram.png``  smallest n with f_mem(τ) = 0 vs p, τ ∈ {τ_gen, 3τ_gen, 8τ_gen} (``phase_multiples``);
                       an open down-triangle where the smallest tested n already has f_mem = 0 (a bound)
=====================  =====================================================

and, where the runs recorded them, the KK26 figures of :mod:`diffmem.report_kk26` (gap per noise
level, its heat map, gap vs f_mem, the sample-level FD gap, trajectories, KL).

One panel per model width when a sweep has several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import blended_transform_factory

from .analysis import Analysis, RunData, TauDefinitions, analyse
from .fileio import atomic_write_json, atomic_write_text, save_figure
from .timescales import Estimate

__all__ = [
    "render",
    "plot_quality",
    "plot_fmem",
    "plot_fmem_vs_n",
    "plot_collapse",
    "plot_timescales",
    "plot_losses",
    "plot_phase_diagram",
    "make_report",
    "summary_table",
]


# ---------------------------------------------------------------------------
# figure helpers


def _save(fig: Figure, path: Path) -> Path:
    """Write ``fig`` as PNG atomically (temporary file in the same folder, then rename)."""
    return save_figure(fig, path, dpi=120)


def _widths(runs: Sequence[RunData]) -> list:
    return sorted({r.width for r in runs}, key=lambda w: (w is None, w))


def _panels(runs: Sequence[RunData], title: str, panel_w: float = 5.0, h: float = 4.0):
    widths = _widths(runs)
    fig = Figure(figsize=(panel_w * len(widths) + 1.2, h), layout="constrained")
    axes = fig.subplots(1, len(widths), squeeze=False)[0]
    fig.suptitle(title)
    return fig, dict(zip(widths, axes))


def _curves(runs: Sequence[RunData], title: str):
    """One panel per width, and ``(run, axis, colour, label)`` for each run, smallest n first."""
    fig, axes = _panels(runs, title)
    color, many = _n_colors(runs), _many_seeds(runs)
    return fig, axes, [(r, axes[r.width], color(r.n), _label(r, many)) for r in sorted(runs, key=lambda r: r.n)]


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
    fig, axes, items = _curves(runs, f"Sample quality during training ({metric}, lower is better)")
    for r, ax, c, label in items:
        s, q, e = r.quality
        k = _pos(s) & np.isfinite(q)
        ax.plot(s[k], q[k], "o", ms=2.0, color=c, alpha=0.35)
        qs = r.quality_smooth if r.quality_smooth is not None else q
        ax.plot(s[k], qs[k], "-", lw=1.3, color=c, label=label)
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
        ax.set_title(_width_title(w) + "  (points: raw; line: running median; dotted: τ_gen)", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        _legend(ax)
    return _save(fig, path)


def plot_fmem(runs: Sequence[RunData], path: str | Path) -> Path:
    """f_mem vs training step (log x) with the bootstrap 95 % band; τ_mem marked."""
    runs = [r for r in runs if r.f_mem is not None]
    if not runs:
        return _placeholder(path, "no f_mem in these runs")
    fig, axes, items = _curves(runs, "Memorised fraction during training (band: bootstrap 95 % interval)")
    for r, ax, c, label in items:
        s, f, se, lo, hi = r.f_mem
        k = _pos(s)
        ax.plot(s[k], f[k], "-o", ms=2.5, lw=1.2, color=c, label=label)
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


def plot_fmem_vs_n(runs: Sequence[RunData], path: str | Path) -> Path:
    """f_mem at the last checkpoint against n, with its 95 % interval (runs without training: closed forms)."""
    runs = [r for r in runs if r.f_mem is not None]
    if not runs:
        return _placeholder(path, "no f_mem in these runs")
    fig = Figure(figsize=(5.5, 4.0), layout="constrained")
    ax = fig.subplots()
    for j, w in enumerate(_widths(runs)):
        rs = sorted((r for r in runs if r.width == w), key=lambda r: r.n)
        f = np.array([r.f_mem[1][-1] for r in rs])
        lo, hi = np.array([r.f_mem[3][-1] for r in rs]), np.array([r.f_mem[4][-1] for r in rs])
        yerr = np.vstack([np.nan_to_num(f - lo), np.nan_to_num(hi - f)])
        ax.errorbar([r.n for r in rs], f, yerr=yerr, fmt="-o", capsize=3, color=colormaps["tab10"](j),
                    label=None if w is None else f"W = {w}")
    ax.set_xscale("log")
    _n_ticks(ax.xaxis, [r.n for r in runs])
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("f_mem (band: 95 % interval)")
    ax.set_title("Memorised fraction of the model's samples", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    _legend(ax)
    return _save(fig, path)


def plot_collapse(runs: Sequence[RunData], path: str | Path) -> Path:
    """f_mem(τ)/f_mem(τ_max) vs τ/n: curves collapse when τ_mem ∝ n."""
    runs = [r for r in runs if r.f_mem is not None and r.f_mem[1][-1] > 0]
    if not runs:
        return _placeholder(path, "no run memorises by its last checkpoint: nothing to normalise")
    fig, axes, items = _curves(runs, "Collapse: f_mem(τ) / f_mem(τ_max) against τ / n")
    for r, ax, c, label in items:
        s, f = r.f_mem[0], r.f_mem[1]
        k = _pos(s)
        ax.plot(s[k] / r.n, f[k] / f[-1], "-o", ms=2.5, lw=1.2, color=c, label=label)
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
    fig, axes, items = _curves(runs, "DSM loss: train (dashed) vs held-out (solid)" + (f" at {lvl}" if lvl else ""))
    for r, ax, c, label in items:
        if r.loss_test is not None:
            s, v, _ = r.loss_test
            ax.plot(s[_pos(s)], v[_pos(s)], "-", lw=1.3, color=c, label=label)
        if r.loss_train is not None:
            s, v, _ = r.loss_train
            ax.plot(s[_pos(s)], v[_pos(s)], "--", lw=1.3, color=c, label=None if r.loss_test is not None else label)
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
        bound = [(x, b["n_star"]) for x, b in zip(xs, bs) if b.get("status") == "at_or_below"]
        if bound:
            ax.plot(*zip(*bound), "v", mfc="none", color=c, ms=10 - 2 * j,
                    label=f"τ = {k:g} τ_gen: smallest tested n already 0 (n* ≤ this)")
        found = [(x, b["n_star"]) for x, b in zip(xs, bs) if b["n_star"] is not None
                 and b.get("status") == "found"]
        if found:
            steps = f" (≈ {bs[0]['tau']:.3g} steps)" if len(bs) == 1 else ""
            ax.plot(*zip(*found), "-" + markers[j % 5], color=c, ms=10 - 2 * j, lw=2.5 - 0.6 * j,
                    label=f"τ = {k:g} τ_gen{steps}")
        miss = [x for x, b in zip(xs, bs) if b.get("status") == "all_memorise"]
        if miss:
            ax.plot(miss, [ymax * 1.6] * len(miss), markers[j % 5], mfc="none", color=c, ms=8,
                    label=f"τ = {k:g} τ_gen: every tested n memorises")
    if not any(b.get("status") in ("found", "at_or_below", "all_memorise") for b in boundary):
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


# ---------------------------------------------------------------------------
# the report


def render(analysis: Analysis, out_dir: str | Path) -> dict[str, str]:
    """Draw every figure of ``analysis`` into ``out_dir``; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = analysis.runs
    if all(r.f_mem is None or r.f_mem[0].max() <= 0 for r in runs):  # closed forms: no training-time axis
        return {"f_mem_vs_n": str(plot_fmem_vs_n(runs, out_dir / "fmem_vs_n.png"))}
    from .report_grammar import render_grammar
    from .report_kk26 import render_kk26

    return {
        **render_kk26(analysis, out_dir),
        **render_grammar(analysis, out_dir),  # token runs that recorded validity (FSW25)
        "quality": str(plot_quality(runs, out_dir / "quality.png")),
        "f_mem": str(plot_fmem(runs, out_dir / "fmem.png")),
        "collapse": str(plot_collapse(runs, out_dir / "collapse.png")),
        "timescales": str(plot_timescales(runs, analysis.fits, out_dir / "timescales.png")),
        "losses": str(plot_losses(runs, out_dir / "losses.png")),
        "phase_diagram": str(plot_phase_diagram(analysis.boundary, out_dir / "phase_diagram.png")),
    }


def make_report(source: str | Path, out_dir: str | Path, definitions: TauDefinitions | None = None,
                write_summary: bool = True, html: bool = True, gallery_steps=("last",), gallery_k: int = 8,
                **kw) -> dict[str, Any]:
    """Analyse ``source`` (a sweep or one run directory) and write its figures, ``summary.json`` and the
    self-contained ``report.html`` (:mod:`diffmem.report_html`; galleries at ``gallery_steps``) into ``out_dir``.

    ``definitions`` (or its fields as keywords, e.g. ``quality_metric=...``,
    ``tau_gen_reference="common"``, ``phase_multiples=(10, 30, 100)``) define
    the timescales (:class:`~diffmem.analysis.TauDefinitions`).  Returns the
    summary (:meth:`Analysis.summary` plus ``figures``, and ``html``: the page's path).
    """
    if definitions is not None and kw:
        raise TypeError("give definitions or its fields as keywords, not both")
    from .report_html import html_report, parse_gallery_steps

    gallery_steps = parse_gallery_steps(gallery_steps)
    analysis = analyse(source, definitions or TauDefinitions(**kw))
    out_dir = Path(out_dir)
    if analysis.runs and any(Path(out_dir).resolve() == r.path.resolve() for r in analysis.runs):
        raise ValueError("the report folder must not be a run directory")
    summary = analysis.summary()
    summary["figures"] = render(analysis, out_dir)
    if html:
        page = html_report(analysis, summary["figures"], gallery_steps, gallery_k)
        summary["html"] = str(atomic_write_text(out_dir / "report.html", page))
    if write_summary:
        atomic_write_json(out_dir / "summary.json", summary)
    return summary


def summary_table(summary: dict) -> str:
    """A short plain-text table of a summary (what ``diffmem report`` prints)."""

    def f(x, fmt="{:.4g}"):
        return "-" if x is None else fmt.format(x)

    lines = [f"{'width':>6} {'n':>7} {'seed':>5} {'tau_gen':>9} {'tau_mem':>9} {'tau_mem 95% CI':>21} "
             f"{'f_mem end':>9}"]
    for i in range(len(summary["n"])):
        lo, hi = summary["tau_mem_ci"][i]
        ci = f"[{f(lo)}, {f(hi) if hi is not None else 'inf'}]"
        tm = f(summary["tau_mem"][i]) if summary["tau_mem_reached"][i] else f"> {f(lo)}"
        lines.append(f"{f(summary['width'][i], '{}'):>6} {summary['n'][i]:>7} {f(summary['seed'][i], '{}'):>5} "
                     f"{f(summary['tau_gen'][i]):>9} {tm:>9} {ci:>21} {f(summary['f_mem_final'][i], '{:.3f}'):>9}")
    if summary.get("slope") is not None:
        lo, hi = summary["slope_ci"]
        lines.append(f"fit tau_mem = kappa n^alpha (width {summary['fit_width']}): alpha = {summary['slope']:.3f} "
                     f"[{f(lo, '{:.3f}')}, {f(hi, '{:.3f}')}], kappa = {f(summary['kappa'])}")
    else:
        lines.append("fit tau_mem = kappa n^alpha: not enough reached tau_mem (need 2 distinct n)")
    lines.append(f"quality metric for tau_gen: {summary['quality_metric']}; tau_gen spread per width: "
                 + ", ".join(f"W={w}: {v:.2f}x" for w, v in summary["tau_gen_spread"].items()))
    for fr in summary.get("failed_runs", []):
        lines.append(f"FAILED {fr['dir']} (attempt {fr['attempts']}, left out above): {fr['error']}")
    return "\n".join(lines)
