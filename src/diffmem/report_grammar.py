"""FSW25 figures of token-sequence runs (issue #11 item 8), drawn beside the others when runs recorded validity.

* ``validity.png`` -- validity per parse level (one panel per level, bottom
  first, and whole sequences) against training step τ, one curve per n, the
  chance level (rule density) dotted, the 0.9 line dashed.
* ``copy.png`` -- the exact-copy fraction (f_mem of token runs, Wilson 95 %
  band) against τ and against τ/n.
* ``grammar_phase.png`` -- the (n, τ) phase diagram: at every checkpoint of
  every run, the regime that dominates its samples: **memorisation** where the
  copy fraction is ≥ ``MEM_LEVEL`` (most samples are training copies),
  otherwise **rules up to level ℓ** where every level 0…ℓ has validity ≥
  ``RULE_LEVEL``, otherwise **no rule**; τ_mem(n) (first significant copy)
  drawn over it.  A level counts from the first of ``PERSIST`` checkpoints in a
  row at ≥ ``RULE_LEVEL`` (the upper levels are measured on the few tuples the
  parse reaches early on, and a single 1.0 is often noise).

:func:`grammar_series` reads one run's series; :func:`level_times` gives the
first step at which each level (and whole sequences) reaches ``RULE_LEVEL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import rundir as rd

__all__ = ["render_grammar", "grammar_series", "level_times", "regime", "RULE_LEVEL", "MEM_LEVEL"]

RULE_LEVEL = 0.9
MEM_LEVEL = 0.5
PERSIST = 2  # checkpoints in a row (as τ_mem's "significant" rule)


def grammar_series(run_dir: str | Path, records: list[dict] | None = None) -> dict[str, Any] | None:
    """``{"levels": {ℓ: (steps, values)}, "chance": {ℓ: density}, "valid": (steps, values)}`` or None
    when the run recorded no validity."""
    recs = rd.read_metrics(run_dir) if records is None else records
    lv = [r for r in recs if r.get("metric") == "validity/level" and r.get("value") is not None]
    whole = [r for r in recs if r.get("metric") == "validity/valid" and r.get("value") is not None]
    if not lv and not whole:
        return None
    levels: dict[int, tuple] = {}
    chance: dict[int, float] = {}
    for ell in sorted({int(r["level"]) for r in lv}):
        rows = sorted((r for r in lv if int(r["level"]) == ell), key=lambda r: r["step"])
        levels[ell] = (np.array([r["step"] for r in rows], float), np.array([r["value"] for r in rows], float))
        if rows and rows[0].get("chance") is not None:
            chance[ell] = float(rows[0]["chance"])
    whole = sorted(whole, key=lambda r: r["step"])
    return {"levels": levels, "chance": chance,
            "valid": (np.array([r["step"] for r in whole], float), np.array([r["value"] for r in whole], float))}


def _first(steps: np.ndarray, values: np.ndarray, level: float, persist: int = PERSIST) -> float | None:
    ok = values >= level
    for i in range(len(ok)):
        if ok[i:i + persist].all() and (i + persist <= len(ok) or i == len(ok) - 1 and ok[i:].all()):
            return float(steps[i])
    return None


def level_times(series: dict, level: float = RULE_LEVEL, persist: int = PERSIST) -> dict[str, float | None]:
    """First step from which each level's validity (``"0"``, ``"1"``, …) and whole-sequence validity
    (``"valid"``) are ≥ ``level`` at ``persist`` consecutive checkpoints (None: never).  The upper levels'
    validity is over the tuples the parse reached, few early on: one checkpoint at 1.0 is often noise."""
    out = {str(ell): _first(s, v, level, persist) for ell, (s, v) in series["levels"].items()}
    out["valid"] = _first(*series["valid"], level, persist) if len(series["valid"][0]) else None
    return out


def regime(series: dict, f_mem_steps, f_mem_values, rule_level: float = RULE_LEVEL,
           mem_level: float = MEM_LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """(steps, code) at the run's checkpoints: code −1 = no rule, ℓ = rules up to level ℓ, L = memorisation."""
    levels = series["levels"]
    steps = np.array(sorted(set.intersection(*[set(s.tolist()) for s, _ in levels.values()])), float) \
        if levels else np.array([])
    L = len(levels)
    fm = dict(zip(np.asarray(f_mem_steps, float).tolist(), np.asarray(f_mem_values, float).tolist()))
    codes = []
    for st in steps:
        if fm.get(st, 0.0) >= mem_level:
            codes.append(L)
            continue
        code = -1
        for ell in sorted(levels):
            s, v = levels[ell]
            i = int(np.searchsorted(s, st))
            if v[i] >= rule_level and (i + 1 >= len(v) or v[i + 1] >= rule_level or (i > 0 and v[i - 1] >= rule_level)):
                code = ell
            else:
                break
        codes.append(code)
    return steps, np.array(codes, int)


def _colors(ns: Sequence[int]):
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    u = sorted(set(ns))
    return {n: cmap(i / max(1, len(u) - 1) * 0.9) for i, n in enumerate(u)}


def plot_validity(runs, series: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    from .fileio import save_figure

    levels = sorted({ell for s in series.values() for ell in s["levels"]})
    cols = len(levels) + 1
    fig = Figure(figsize=(3.6 * cols, 3.4))
    axes = fig.subplots(1, cols, squeeze=False)[0]
    col = _colors([r.n for r in runs])
    for r in runs:
        s = series[r.path]
        for i, ell in enumerate(levels):
            if ell in s["levels"]:
                st, v = s["levels"][ell]
                axes[i].plot(np.maximum(st, 1), v, color=col[r.n], label=f"n = {r.n}")
        st, v = s["valid"]
        axes[-1].plot(np.maximum(st, 1), v, color=col[r.n], label=f"n = {r.n}")
    any_s = next(iter(series.values()))
    for i, ell in enumerate(levels):
        axes[i].set_title(f"level {ell}" + (" (bottom)" if ell == 0 else " (root)" if ell == levels[-1] else ""))
        if ell in any_s["chance"]:
            axes[i].axhline(any_s["chance"][ell], color="grey", ls=":", lw=1, label="chance")
    axes[-1].set_title("whole sequence")
    for ax in axes:
        ax.axhline(RULE_LEVEL, color="k", ls="--", lw=0.7)
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("training step τ")
    axes[0].set_ylabel("validity")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_copy(runs, path: Path) -> Path:
    from matplotlib.figure import Figure

    from .fileio import save_figure

    fig = Figure(figsize=(10, 3.8))
    a1, a2 = fig.subplots(1, 2)
    col = _colors([r.n for r in runs])
    for r in runs:
        if r.f_mem is None:
            continue
        st, v = np.maximum(r.f_mem[0], 1), r.f_mem[1]
        for ax, x in ((a1, st), (a2, st / r.n)):
            ax.plot(x, v, color=col[r.n], label=f"n = {r.n}")
            if r.f_mem_wilson is not None:
                ax.fill_between(x, r.f_mem_wilson[0], r.f_mem_wilson[1], color=col[r.n], alpha=0.15, lw=0)
            if r.tau_mem is not None and r.tau_mem.reached:
                ax.axvline(r.tau_mem.value / (1 if ax is a1 else r.n), color=col[r.n], ls=":", lw=0.8)
    a1.set_xlabel("training step τ")
    a2.set_xlabel("τ / n (steps per training sequence)")
    for ax in (a1, a2):
        ax.set_xscale("log")
        ax.set_ylabel("exact-copy fraction")
        ax.set_ylim(-0.02, 1.02)
    a1.set_title("copy fraction (dotted: τ_mem)")
    a2.set_title("against τ / n: τ_mem ∝ n collapses the curves")
    a1.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def plot_grammar_phase(runs, series: dict, path: Path) -> Path:
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .fileio import save_figure

    L = max(len(s["levels"]) for s in series.values())
    names = ["no rule"] + [f"rules up to level {ell}" for ell in range(L)] + ["memorisation"]
    cmap = matplotlib.colormaps["RdYlGn"]
    colours = [cmap(0.15 + 0.7 * (i / max(1, L))) for i in range(L + 1)] + [(0.35, 0.2, 0.6, 1.0)]
    fig = Figure(figsize=(6.2, 4.4))
    ax = fig.subplots()
    ns = sorted({r.n for r in runs})
    for r in runs:
        fm = r.f_mem if r.f_mem is not None else (np.array([]), np.array([]))
        st, code = regime(series[r.path], fm[0], fm[1])
        ax.scatter(np.full(len(st), r.n), np.maximum(st, 1), c=[colours[c + 1] for c in code], marker="s", s=60)
    tm = [(r.n, r.tau_mem.value) for r in runs if r.tau_mem is not None and r.tau_mem.reached]
    if tm:
        tm.sort()
        ax.plot([a for a, _ in tm], [b for _, b in tm], "k-o", ms=4, label="τ_mem (first significant copy)")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(ns)
    ax.set_xticklabels([str(n) for n in ns])
    ax.set_xlabel("training-set size n")
    ax.set_ylabel("training step τ")
    handles = [Line2D([], [], marker="s", ls="", color=c, label=nm) for c, nm in zip(colours, names)]
    if tm:
        handles.append(Line2D([], [], color="k", marker="o", ms=4, label="τ_mem"))
    ax.legend(handles=handles, fontsize=7, loc="upper left")
    ax.set_title(f"(n, τ) regimes: validity ≥ {RULE_LEVEL} per level; memorisation: copy fraction ≥ {MEM_LEVEL}")
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def render_grammar(analysis, out_dir: str | Path) -> dict[str, str]:
    """The FSW25 figures of the runs that recorded validity (name -> path); {} when none did."""
    out_dir = Path(out_dir)
    runs, series = [], {}
    for r in analysis.runs:
        if "validity/level" not in r.metrics and "validity/valid" not in r.metrics:
            continue
        s = grammar_series(r.path)
        if s is not None:
            runs.append(r)
            series[r.path] = s
    if not runs:
        return {}
    runs.sort(key=lambda r: r.n)
    return {"validity": str(plot_validity(runs, series, out_dir / "validity.png")),
            "copy": str(plot_copy(runs, out_dir / "copy.png")),
            "grammar_phase": str(plot_grammar_phase(runs, series, out_dir / "grammar_phase.png"))}
