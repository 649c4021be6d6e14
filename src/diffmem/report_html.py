"""One self-contained HTML page of a run directory or a sweep (issue #12 item 6).

:func:`html_report` renders an :class:`~diffmem.analysis.Analysis` and the
figures :func:`diffmem.report.render` drew as one page: the PNGs embedded as
base64, the τ table with its intervals (τ_gen, τ_mem, f_mem at the end with
its Wilson 95 % interval, the FSW25 stop), the fit τ_mem = κ n^α, the runs
that failed, the nearest-neighbour gallery (:mod:`diffmem.gallery`) of each
run's saved samples at chosen checkpoints (what was copied, before the
figures), and the configuration (keys shared
by every run once, the others per run).  No script, no stylesheet or font
from elsewhere: it opens from disk with no server and no network.
``diffmem report`` writes it as ``report.html`` beside the PNGs.

Gallery checkpoints are named by :func:`parse_gallery_steps`: ``last``,
``tau_mem``, ``tau_gen``, step numbers, or ``none``; each is taken at the
nearest step with saved samples.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from . import __version__
from .errors import DiffmemError
from .gallery import GALLERY_CSS

__all__ = ["html_report", "parse_gallery_steps", "run_gallery"]

_KEYWORDS = ("last", "tau_mem", "tau_gen")

CAPTIONS = {
    "quality": "Sample quality against training time, one curve per n; dotted: τ_gen.",
    "f_mem": "Memorised fraction against training time (band: bootstrap 95 %); dotted: τ_mem.",
    "collapse": "f_mem(τ)/f_mem(τ_max) against τ/n: the curves collapse when τ_mem ∝ n.",
    "timescales": "τ_mem and τ_gen against n with the fitted power law and its bootstrap band.",
    "losses": "Denoising loss on training (dashed) and held-out (solid) images.",
    "phase_diagram": "Smallest n with f_mem(τ) = 0 against the parameter count, at multiples of τ_gen.",
    "f_mem_vs_n": "f_mem of the model's samples against n, with its 95 % interval.",
    "gap": "KK26's generalisation gap G(σ) per noise level at several checkpoints.",
    "gap_heatmap": "G(σ) over training time and noise level.",
    "gap_vs_fmem": "The gap's peak against f_mem over training.",
    "fd_gap": "Fréchet distance of the samples to the training subset and to held-out images.",
    "trajectories": "Where the sampling trajectories go, against noisy training points.",
    "kl": "KL(P_θ ‖ P_0) of the probability-flow model.",
}

_CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:72em;margin:0 auto;padding:1.5em 2em 4em;background:#fff}
h1{margin:.2em 0 .1em;font-size:1.7em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
p.meta{color:#666;margin-top:0} code{background:#f2f2f2;padding:0 .25em;border-radius:3px}
table{border-collapse:collapse;font-size:.88em;margin:.6em 0} th,td{border:1px solid #ddd;padding:.3em .6em}
th{background:#f3f3f3;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.fail{background:#fdecea;border:1px solid #e0a19b;border-radius:4px;padding:.6em 1em;margin:1em 0}
.fail b{color:#a33} .ok{color:#2a7a2a} .warn{color:#a33}
figure{margin:1.2em 0} figure img{max-width:100%;border:1px solid #eee} figcaption{color:#555;font-size:.9em}
nav a{margin-right:1em} details{margin:.5em 0} pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.85em}
.kv td:first-child{font-family:monospace}
.gal{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start} .gal img.hist,.gal>img{max-width:34em}
"""


def parse_gallery_steps(text: str | Sequence | None) -> tuple:
    """``"last,tau_mem,1000"`` -> ``("last", "tau_mem", 1000)``; ``"none"`` or ``""`` -> ``()``."""
    if text is None:
        return ("last",)
    items = [x.strip() for x in (text.split(",") if isinstance(text, str) else map(str, text)) if x.strip()]
    if items in ([], ["none"]):
        return ()
    out = []
    for x in items:
        if x in _KEYWORDS:
            out.append(x)
            continue
        try:
            v = int(x)
        except ValueError:
            raise DiffmemError(f"--gallery-steps: expected last, tau_mem, tau_gen, step numbers or none, got {x!r}") \
                from None
        if v < 0:
            raise DiffmemError(f"--gallery-steps: a step must be ≥ 0, got {v}")
        out.append(v)
    return tuple(dict.fromkeys(out))


def _pick_steps(run, wanted: Sequence, available: list[int]) -> list[tuple[str, int]]:
    """(label, saved-sample step) for each wanted checkpoint (nearest saved step; duplicates dropped)."""
    if not available:
        return []
    out: list[tuple[str, int]] = []
    for w in wanted:
        if w == "last":
            target, label = available[-1], "last checkpoint"
        elif w in ("tau_mem", "tau_gen"):
            est = run.tau_mem if w == "tau_mem" else run.tau_gen
            if est is None or not est.reached or not np.isfinite(est.value):
                continue
            target, label = est.value, ("τ_mem" if w == "tau_mem" else "τ_gen")
        else:
            target, label = int(w), f"step {w}"
        step = min(available, key=lambda s: (abs(s - target), s))
        if all(step != s for _, s in out):
            out.append((label, step))
    return out


def run_gallery(run_path: str | Path, step: int, threshold: float = 1 / 3, k: int = 8) -> dict:
    """The audit of one run's saved samples at ``step`` against its training subset, as a gallery PNG
    (:func:`diffmem.gallery.gallery_png`) and its numbers."""
    from .audit import audit_rows
    from .audit_sources import open_rows
    from .gallery import gallery_table, histogram_png, pick_gallery

    T = open_rows(str(run_path), "train")
    S = open_rows(f"{run_path}@{step}", "samples")
    r, per = audit_rows(T, S, threshold, n_boot=0)
    pick = pick_gallery(per["ratio"], k)
    flat = lambda a: a.reshape(len(a), -1)  # noqa: E731
    table = gallery_table(pick, flat(S.images(pick)), flat(T.images(per["nearest"][pick])),
                          flat(T.images(per["second"][pick])), per, threshold, S.sample_shape)
    return {"step": int(step), "table": table, "histogram": histogram_png(per["ratio"], threshold),
            "f_mem": r["f_mem"], "n_flagged": r["n_flagged"], "n_samples": r["n_samples"], "wilson": r["ci95_wilson"],
            "n_train": r["n_train"]}


# ---------------------------------------------------------------------------- page pieces


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def _f(x, fmt="{:.4g}") -> str:
    return "–" if x is None or (isinstance(x, float) and not np.isfinite(x)) else fmt.format(x)


def _ci(lo, hi, fmt="{:.4g}") -> str:
    if lo is None and hi is None:
        return ""
    return f"[{_f(lo, fmt)}, {_f(hi, fmt) if hi is not None else '∞'}]"


def _tau_table(analysis, summary: dict) -> str:
    rows = []
    for i, r in enumerate(analysis.runs):
        tm = summary["tau_mem"][i]
        lo, hi = summary["tau_mem_ci"][i]
        tmem = _f(tm) if summary["tau_mem_reached"][i] else f"&gt; {_f(lo)} (not reached)"
        fe = summary["f_mem_final"][i]
        wil = ""
        if r.f_mem_wilson is not None and len(r.f_mem_wilson[0]):
            wil = _ci(float(r.f_mem_wilson[0][-1]), float(r.f_mem_wilson[1][-1]), "{:.3f}")
        g_lo, g_hi = summary["tau_gen_ci"][i]
        stop = summary["stop_steps"][i] if i < len(summary["stop_steps"]) else None
        rows.append(
            f"<tr><td>{html.escape(r.path.name)}</td><td class=num>{_f(r.width, '{}')}</td><td class=num>{r.n}</td>"
            f"<td class=num>{_f(r.seed, '{}')}</td><td class=num>{_f(r.total_steps, '{}')}</td>"
            f"<td class=num>{_f(summary['tau_gen'][i])}</td><td class=num>{_ci(g_lo, g_hi)}</td>"
            f"<td class=num>{tmem}</td><td class=num>{_ci(lo, hi) if summary['tau_mem_reached'][i] else ''}</td>"
            f"<td class=num>{_f(fe, '{:.3f}')}</td><td class=num>{wil}</td><td class=num>{_f(stop, '{:.0f}')}</td></tr>")
    return ("<table><tr><th>run</th><th>width</th><th>n</th><th>seed</th><th>steps</th><th>τ_gen</th>"
            "<th>τ_gen 95%</th><th>τ_mem</th><th>τ_mem 95%</th><th>f_mem at end</th><th>Wilson 95%</th>"
            f"<th>FSW25 stop</th></tr>{''.join(rows)}</table>")


def _fit_section(summary: dict) -> str:
    fits = summary.get("fits") or {}
    rows = []
    for w, f in fits.items():
        if not f.get("ok"):
            rows.append(f"<tr><td>{html.escape(w)}</td><td colspan=4>not enough reached τ_mem "
                        f"({html.escape(str(f.get('why', 'need 2 distinct n')))})</td></tr>")
            continue
        rows.append(f"<tr><td>{html.escape(w)}</td><td class=num>{_f(f.get('alpha'), '{:.3f}')}</td>"
                    f"<td class=num>{_ci(*(f.get('alpha_ci') or [None, None]), fmt='{:.3f}')}</td>"
                    f"<td class=num>{_f(f.get('kappa'))}</td>"
                    f"<td class=num>{_ci(*(f.get('kappa_ci') or [None, None]))}</td></tr>")
    table = ("<table><tr><th>width</th><th>α</th><th>α 95% (bootstrap)</th><th>κ</th><th>κ 95%</th></tr>"
             f"{''.join(rows)}</table>") if rows else "<p>No fit: no run reached τ_mem.</p>"
    d = summary.get("definitions", {})
    lines = [f"τ_mem: <code>{html.escape(str(d.get('tau_mem')))}</code>",
             f"τ_gen: <code>{html.escape(str(d.get('tau_gen')))}</code> on "
             f"<code>{html.escape(str(summary.get('quality_metric')))}</code>"]
    if d.get("fit"):
        lines.append(f"fit: <code>{html.escape(str(d.get('fit')))}</code>")
    if summary.get("kappa_linear") is not None:
        lines.append(f"early stop: {html.escape(str(d.get('stop')))}, κ = τ_mem/n (median) = "
                     f"{summary['kappa_linear']:.4g} steps per sample")
    head = ""
    if summary.get("slope") is not None:
        head = (f"<p><b>τ_mem = κ n<sup>α</sup></b> (width {html.escape(str(summary['fit_width']))}): "
                f"<b>α = {summary['slope']:.3f}</b> {_ci(*summary['slope_ci'], fmt='{:.3f}')}, "
                f"κ = {_f(summary['kappa'])}</p>")
    return head + table + "<ul>" + "".join(f"<li>{x}</li>" for x in lines) + "</ul>"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _config_section(runs) -> str:
    from .rundir import read_config

    cfgs = {}
    for r in runs:
        try:
            cfgs[r.path.name] = _flatten(read_config(r.path))
        except DiffmemError:
            cfgs[r.path.name] = {}
    keys = sorted({k for c in cfgs.values() for k in c})
    same = [k for k in keys if len({json.dumps(c.get(k), sort_keys=True) for c in cfgs.values()}) == 1]
    differ = [k for k in keys if k not in same]
    val = lambda v: html.escape(json.dumps(v))  # noqa: E731
    shared = "".join(f"<tr><td>{html.escape(k)}</td><td>{val(next(iter(cfgs.values())).get(k))}</td></tr>"
                     for k in same)
    out = f"<p>Keys every run shares ({len(same)}):</p><table class=kv>{shared}</table>"
    if differ:
        head = "".join(f"<th>{html.escape(k)}</th>" for k in differ)
        body = "".join(f"<tr><td>{html.escape(name)}</td>" + "".join(f"<td>{val(c.get(k))}</td>" for k in differ)
                       + "</tr>" for name, c in cfgs.items())
        out += f"<p>Keys that differ between runs:</p><table><tr><th>run</th>{head}</tr>{body}</table>"
    return out


def _gallery_section(analysis, steps: Sequence, k: int) -> str:
    from .rundir import Run

    if not steps:
        return "<p>No gallery asked for (<code>--gallery-steps none</code>).</p>"
    parts = []
    for r in analysis.runs:
        cfg_thr = None
        try:
            cfg_thr = Run(r.path).read_config().get("eval", {}).get("threshold")
        except DiffmemError:
            pass
        picks = _pick_steps(r, steps, Run(r.path).sample_steps())
        if not picks:
            parts.append(f"<p>{html.escape(r.path.name)}: no saved samples (eval.save_samples was off).</p>")
            continue
        for label, step in picks:
            g = run_gallery(r.path, step, threshold=cfg_thr or 1 / 3, k=k)
            lo, hi = g["wilson"]
            parts.append(
                f"<h3>{html.escape(r.path.name)}, {html.escape(label)} (step {step})</h3><p>f_mem = {g['f_mem']:.3f} "
                f"({g['n_flagged']} of {g['n_samples']} samples with d1/d2 below the threshold; Wilson 95% "
                f"[{lo:.3f}, {hi:.3f}]) against the {g['n_train']} training images.  The {k} samples with the "
                "smallest d1/d2, each beside its nearest and second-nearest training image (red: memorised), and "
                f"the histogram of d1/d2 over all samples.</p><div class=gal>{g['table']}"
                f"{_img(g['histogram'], f'd1/d2 histogram {r.path.name} step {step}')}</div>")
    return "".join(parts)


def html_report(analysis, figures: dict[str, str], gallery_steps: Sequence = ("last",), gallery_k: int = 8) -> str:
    """The page (a string); ``figures``: name -> PNG path, as returned by :func:`diffmem.report.render`."""
    summary = analysis.summary()
    runs = analysis.runs
    src = html.escape(str(analysis.source))
    title = f"diffmem report: {html.escape(Path(str(analysis.source)).name or str(analysis.source))}"
    fails = ""
    if analysis.failures:
        items = "".join(f"<li><b>{html.escape(str(f.get('dir')))}</b> (attempt {f.get('attempts')}): "
                        f"<code>{html.escape(str(f.get('error')))}</code></li>" for f in analysis.failures)
        fails = (f"<div class=fail><b>{len(analysis.failures)} run(s) failed</b> and are left out of every number "
                 f"below; re-running the sweep retries them.<ul>{items}</ul></div>")
    figs = []
    order = list(CAPTIONS)  # the headline figures first, then the KK26 ones, then anything else
    for name, path in sorted(figures.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)):
        p = Path(path)
        if p.is_file():
            figs.append(f"<figure id='fig-{html.escape(name)}'>{_img(p.read_bytes(), name)}<figcaption><b>"
                        f"{html.escape(p.name)}</b>: {html.escape(CAPTIONS.get(name, name.replace('_', ' ')))}"
                        "</figcaption></figure>")
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = [
        ("timescales", "Timescales", _tau_table(analysis, summary)
         + "<p>τ in training steps; intervals are 95 %; τ_mem not reached is a lower bound (the run's length).</p>"),
        ("fit", "Fit and stopping rule", _fit_section(summary)),
        ("gallery", "Nearest-neighbour gallery", _gallery_section(analysis, gallery_steps, gallery_k)),
        ("figures", "Figures", "".join(figs) or "<p>No figures.</p>"),
        ("config", "Configuration", _config_section(runs)),
    ]
    nav = "".join(f"<a href='#{sid}'>{name}</a>" for sid, name, _ in sections)
    body = "".join(f"<h2 id='{sid}'>{name}</h2>{content}" for sid, name, content in sections)
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'><style>{_CSS}{GALLERY_CSS}</style></head>"
            "<body><main>"
            f"<h1>{title}</h1><p class=meta><code>{src}</code> &middot; {len(runs)} run(s) &middot; written {when} by "
            f"diffmem {__version__}</p><nav>{nav}</nav>{fails}{body}</main></body></html>\n")
