"""Analysis of runs, apart from any figure: run directories + τ definitions -> one serialisable record.

:func:`analyse` is a pure function of the run directories (read through
:mod:`diffmem.rundir`) and one frozen :class:`TauDefinitions`: per run it
estimates τ_gen and τ_mem (:mod:`diffmem.timescales`); per width it fits
τ_mem = κ n^α, the spread of τ_gen, the FSW25 stopping times and the phase
boundary.  The result, :class:`Analysis`, is what every output renders:
:mod:`diffmem.report` draws the figures and writes ``summary.json``
(``Analysis.summary()``), the demo reads alternative τ_gen definitions from
further analyses of the same runs (no re-rendering).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from . import rundir as rd
from .errors import DiffmemError
from .timescales import Estimate, fit_power_law, phase_boundary, running_median, stopping_time, tau_gen, tau_mem

__all__ = ["TauDefinitions", "RunData", "Analysis", "analyse", "load_run", "run_paths", "QUALITY_PREFERENCE",
           "TAU_MULTIPLES", "kk26_series", "tau_gap"]

# first one present in a run is used unless TauDefinitions(quality_metric=...) says otherwise
QUALITY_PREFERENCE = ("quality/fid", "quality/fd_feat", "quality/kid", "quality/fd_pixel")
TAU_MULTIPLES = (1.0, 3.0, 8.0)  # BUBM25 Fig. 3 right: τ ∈ {τ_gen, 3τ_gen, 8τ_gen}

_Series = tuple[np.ndarray, np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TauDefinitions:
    """Every knob of the timescale definitions, in one frozen, validated record.

    * τ_gen (:func:`diffmem.timescales.tau_gen`): ``quality_metric`` (default:
      the first of :data:`QUALITY_PREFERENCE` present), running median over
      ``smooth`` checkpoints, ``tau_gen_reference``: ``"best"`` (within
      ``rel_tol`` of the run's best), ``"improvement"`` (``1 − rel_tol`` of its
      improvement) or ``"common"`` (the level every run of a width attains:
      the worst run's best + ``rel_tol``).
    * τ_mem (:func:`diffmem.timescales.tau_mem`): ``tau_mem_method``
      ``"significant"`` (lower bound > 0 for ``persist`` checkpoints) or
      ``"level"`` (f_mem/f_mem(end) crosses ``level``); the lower bound is the
      Wilson 95 % bound (``tau_mem_interval="wilson"``, default: honest at
      f_mem = 0, where a bootstrap interval is ``[0, 0]``) or the bootstrap
      percentile (``"bootstrap"``, the rule before issue #12).
    * the phase diagram at ``phase_multiples`` × τ_gen; the FSW25 stop at
      ``alpha_frac`` κ n; the fit's bootstrap (``n_boot``, ``seed``).
    """

    quality_metric: str | None = None
    rel_tol: float = 0.1
    smooth: int = 3
    tau_gen_reference: str = "best"
    tau_mem_method: str = "significant"
    persist: int = 2
    level: float = 0.5
    phase_multiples: tuple = TAU_MULTIPLES
    alpha_frac: float = 0.5
    n_boot: int = 2000
    seed: int = 0
    tau_mem_interval: str = "wilson"  # lower bound of the "significant" rule: wilson | bootstrap
    gap_level: float = 0.1  # τ_gap: first checkpoint where max_σ G(σ) ≥ gap_level (for persist checkpoints)

    def __post_init__(self):
        pm = tuple(float(k) for k in self.phase_multiples)
        if not pm or not all(math.isfinite(k) and k > 0 for k in pm):
            raise DiffmemError(f"phase_multiples must be positive numbers, got {list(self.phase_multiples)}")
        object.__setattr__(self, "phase_multiples", pm)
        if self.tau_gen_reference not in ("best", "improvement", "common"):
            raise DiffmemError(f"tau_gen reference must be best, improvement or common, got {self.tau_gen_reference!r}")
        if self.tau_mem_method not in ("significant", "level"):
            raise DiffmemError(f"tau_mem method must be significant or level, got {self.tau_mem_method!r}")
        if self.tau_mem_interval not in ("wilson", "bootstrap"):
            raise DiffmemError(f"tau_mem interval must be wilson or bootstrap, got {self.tau_mem_interval!r}")
        if not (math.isfinite(self.rel_tol) and self.rel_tol >= 0):
            raise DiffmemError(f"rel_tol must be a non-negative number, got {self.rel_tol}")
        if not 0 < self.level <= 1:
            raise DiffmemError(f"level must be in (0, 1], got {self.level}")
        if self.smooth < 1 or self.persist < 1 or self.n_boot < 0:
            raise DiffmemError("smooth and persist must be ≥ 1 and n_boot ≥ 0")
        if not self.alpha_frac > 0:
            raise DiffmemError(f"alpha_frac must be positive, got {self.alpha_frac}")
        if not (math.isfinite(self.gap_level) and self.gap_level > 0):
            raise DiffmemError(f"gap_level must be a positive number, got {self.gap_level}")

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


@dataclass
class RunData:
    """Everything the analysis needs from one run directory, and its timescales."""

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
    metrics: tuple = ()  # every metric name recorded
    tau_gen: Estimate | None = None
    tau_mem: Estimate | None = None
    tau_mem_level: Estimate | None = None
    tau_gap: float | None = None  # KK26: first checkpoint where the per-σ gap's peak reaches gap_level
    kk26: dict = field(default_factory=dict)  # kk26_series of the run's records (empty if none recorded)
    quality_smooth: np.ndarray | None = None  # the running median τ_gen is read from
    f_mem_wilson: tuple[np.ndarray, np.ndarray] | None = None  # Wilson 95 % (low, high) at the f_mem steps
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


def _grid(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Long-format records with a ``sigma`` key -> ``(steps [S], sigmas [K], values [S, K])`` (NaN if missing)."""
    steps = sorted({int(r["step"]) for r in rows})
    sigmas = sorted({float(r["sigma"]) for r in rows})
    si, ki = {s: i for i, s in enumerate(steps)}, {s: i for i, s in enumerate(sigmas)}
    out = np.full((len(steps), len(sigmas)), np.nan)
    for r in rows:
        v = r.get("value")
        out[si[int(r["step"])], ki[float(r["sigma"])]] = np.nan if v is None else float(v)
    return np.asarray(steps, dtype=float), np.asarray(sigmas), out


def kk26_series(records: list[dict]) -> dict:
    """The KK26 measurements of a run's records (:mod:`diffmem.evaluate`), as arrays.

    Keys present only when recorded: ``gap`` (``{"e_train", "e_test", "G"}`` each ``(steps, sigmas,
    [S, K])``), ``gap_peak`` (``(steps, G_peak, sigma_peak)``), ``fd_gap`` (``{fd: {"train"|"test":
    (steps, values)}}``), ``traj`` (``{name: (steps, sigmas, [S, K])}``), ``kl`` (``(steps, kl, stderr)``).
    """
    by: dict[str, list[dict]] = {}
    for r in records:
        m = r.get("metric")
        if isinstance(m, str) and (m.startswith(("gap/", "fd_gap/", "traj/")) or m == "kl"):
            by.setdefault(m, []).append(r)
    out: dict[str, Any] = {}
    gap = {k: _grid(by[f"gap/{k}"]) for k in ("e_train", "e_test", "G") if by.get(f"gap/{k}")}
    if gap:
        out["gap"] = gap
    if by.get("gap/peak"):
        rows = sorted(by["gap/peak"], key=lambda r: r["step"])
        out["gap_peak"] = tuple(np.asarray([r[k] for r in rows], dtype=float) for k in ("step", "value", "sigma"))
    fd: dict[str, dict] = {}
    for m, rows in by.items():
        if m.startswith("fd_gap/"):
            _, name, side = m.split("/")
            rows = sorted(rows, key=lambda r: r["step"])
            fd.setdefault(name, {})[side] = (np.asarray([r["step"] for r in rows], dtype=float),
                                             np.asarray([r["value"] for r in rows], dtype=float))
    if fd:
        out["fd_gap"] = fd
    traj = {m.split("/", 1)[1]: _grid(rows) for m, rows in by.items() if m.startswith("traj/")}
    if traj:
        out["traj"] = traj
    if by.get("kl"):
        rows = sorted(by["kl"], key=lambda r: r["step"])
        out["kl"] = (np.asarray([r["step"] for r in rows], dtype=float),
                     np.asarray([r["value"] for r in rows], dtype=float),
                     np.asarray([np.nan if r.get("error") is None else r["error"] for r in rows], dtype=float))
    return out


def tau_gap(steps, peaks, level: float = 0.1, persist: int = 2) -> float | None:
    """KK26's objective gap time: the first checkpoint from which ``max_σ G(σ) ≥ level`` holds for
    ``persist`` consecutive checkpoints (None if never)."""
    ok = np.asarray(peaks, dtype=float) >= level
    for i in range(len(ok)):
        if ok[i : i + persist].all() and i + persist <= len(ok):
            return float(np.asarray(steps)[i])
    return None


def _nonempty(series):
    return series if series is not None and series[0].size else None


def load_run(run_dir: str | Path, quality_metric: str | None = None) -> RunData:
    """Read one run directory's series (no estimation)."""
    run_dir = Path(run_dir)
    cfg = rd.read_config(run_dir)
    recs = rd.read_metrics(run_dir)
    names = sorted({r.get("metric") for r in recs if isinstance(r.get("metric"), str)})
    if quality_metric is not None and quality_metric not in names:
        have = [m for m in names if m.startswith("quality/")]
        raise DiffmemError(f"run {run_dir} has no metric {quality_metric!r}; its quality metrics: "
                           f"{', '.join(have) or 'none'}")
    qm = quality_metric or next((m for m in QUALITY_PREFERENCE if m in names), None)
    if qm is None:
        qm = next((m for m in names if m.startswith("quality/")), None)
    series = lambda name, **kw: _nonempty(rd.metric_series(run_dir, name, records=recs, **kw)) if name in names \
        else None  # noqa: E731
    filt, lvl = _pick_loss_level(recs)
    batch = cfg.get("batch_size")
    if batch is None and cfg.get("batch_max") is not None and cfg.get("n_params"):
        batch = min(int(cfg["n"]), int(cfg["batch_max"]))
    return RunData(
        path=run_dir, n=rd.run_n(cfg), width=rd.run_width(cfg), seed=cfg.get("seed"),
        n_params=rd.run_n_params(cfg), total_steps=rd.run_steps(cfg),
        batch_size=None if batch is None else int(batch), quality_metric=qm,
        quality=series(qm) if qm else None, f_mem=series("f_mem", extra=("ci_low", "ci_high")),
        loss_train=series("loss/train", **filt), loss_test=series("loss/test", **filt), loss_level=lvl,
        metrics=tuple(names), kk26=kk26_series(recs),
        f_mem_wilson=_wilson_bounds(run_dir, recs, cfg) if "f_mem" in names else None,
    )


def _wilson_bounds(run_dir, recs: list[dict], cfg: dict) -> tuple[np.ndarray, np.ndarray] | None:
    """Wilson 95 % bounds of f_mem at each step: recorded (``wilson_low``/``wilson_high``), else rebuilt
    from the fraction and its sample count (``n``, else ``eval.n_samples`` × the finite fraction) for runs
    recorded before issue #12."""
    from .metrics.memorization import binomial_interval

    s, f, _, lo, hi, n = rd.metric_series(run_dir, "f_mem", records=recs, extra=("wilson_low", "wilson_high", "n"))
    if not s.size:
        return None
    fin = dict(zip(*rd.metric_series(run_dir, "samples/finite_fraction", records=recs)[:2]))
    m_cfg = (cfg.get("eval") or {}).get("n_samples")
    for i in range(s.size):
        if np.isfinite(lo[i]) and np.isfinite(hi[i]):
            continue
        m = n[i] if np.isfinite(n[i]) else (None if m_cfg is None else round(m_cfg * fin.get(s[i], 1.0)))
        if not m or not np.isfinite(f[i]):
            continue
        lo[i], hi[i] = binomial_interval(int(round(f[i] * m)), int(m), "wilson")
    return lo, hi


def _estimate(run: RunData, d: TauDefinitions, target: float | None) -> None:
    if run.quality is not None and np.isfinite(run.quality[1]).any():
        s, q, e = run.quality
        ref = "best" if d.tau_gen_reference == "common" else d.tau_gen_reference
        run.tau_gen = tau_gen(s, q, errors=e if np.isfinite(e).any() else None, rel_tol=d.rel_tol, smooth=d.smooth,
                              reference=ref, target=target)
        ok = np.isfinite(q)
        run.quality_smooth = np.full(q.shape, np.nan)
        run.quality_smooth[ok] = running_median(q[ok], d.smooth)
    if run.f_mem is not None:
        s, f, se, lo, _ = run.f_mem
        se_ = se if np.isfinite(se).any() else None
        lo_ = lo if np.isfinite(lo).any() else None
        if d.tau_mem_interval == "wilson" and run.f_mem_wilson is not None and np.isfinite(run.f_mem_wilson[0]).all():
            lo_ = run.f_mem_wilson[0]
        run.tau_mem = tau_mem(s, f, ci_low=lo_, stderr=se_, method=d.tau_mem_method, persist=d.persist, level=d.level)
        run.tau_mem_level = tau_mem(s, f, ci_low=lo_, stderr=se_, method="level", level=d.level)
    if "gap_peak" in run.kk26:
        st, pk, _ = run.kk26["gap_peak"]
        run.tau_gap = tau_gap(st, pk, d.gap_level, d.persist)


def _best_smoothed(run: RunData, smooth: int) -> float | None:
    if run.quality is None:
        return None
    q = run.quality[1]
    q = q[np.isfinite(q)]
    return float(np.nanmin(running_median(q, smooth))) if q.size else None


def _widths(runs: Sequence[RunData]) -> list:
    return sorted({r.width for r in runs}, key=lambda w: (w is None, w))


def _fin(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _last(series, i: int) -> float | None:
    return None if series is None or not len(series[0]) else _fin(float(series[i][-1]))


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


@dataclass
class Analysis:
    """The analysis of a set of runs (see :func:`analyse`); ``summary()`` is its JSON form."""

    source: Path
    definitions: TauDefinitions
    runs: list[RunData]
    fits: dict
    fits_level: dict
    boundary: list[dict]
    kappa_linear: float | None
    stops: list[dict]
    spread: dict
    failures: list = field(default_factory=list)  # sweep runs recorded as failed: {"dir", "error", ...}

    def headline(self) -> tuple[Any, dict]:
        return _headline(self.fits)

    def summary(self) -> dict[str, Any]:
        """JSON-serialisable summary.  Lists aligned per run (sorted by width, n, seed): ``n``, ``width``,
        ``seed``, ``n_params``, ``tau_gen``, ``tau_gen_ci``, ``tau_mem`` (None when not reached),
        ``tau_mem_ci``, ``tau_mem_reached``, ``tau_mem_level``, ``f_mem_final``, ``quality_best``,
        ``stop_steps``, ``stop_epochs``.  Fit of the width with the most reached τ_mem: ``slope`` (α),
        ``slope_ci`` (bootstrap 95 %), ``slope_ci_t``, ``kappa``, ``kappa_ci``; ``kappa_linear`` (median
        τ_mem/n, FSW25's κ); ``fits`` per width; the same for the ``"level"`` τ_mem; ``tau_gen_spread``,
        ``phase_boundary``, ``definitions``, ``quality_metric``."""
        runs, d = self.runs, self.definitions
        head_w, head = _headline(self.fits)
        _, head_level = _headline(self.fits_level)

        def est(e: Estimate | None, attr: str):
            return None if e is None else _fin(getattr(e, attr))

        return {
            "sweep_dir": str(self.source),
            "runs": [str(r.path) for r in runs],
            "failed_runs": [{"dir": f.get("dir"), "error": f.get("error"), "attempts": f.get("attempts")}
                            for f in self.failures],
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
            # KK26 (None where not recorded): τ_gap, the last checkpoint's gap peak and where, KL at the end
            "tau_gap": [r.tau_gap for r in runs],
            "gap_peak_final": [_last(r.kk26.get("gap_peak"), 1) for r in runs],
            "gap_peak_sigma_final": [_last(r.kk26.get("gap_peak"), 2) for r in runs],
            "kl_final": [_last(r.kk26.get("kl"), 1) for r in runs],
            "slope": _fin(head.get("alpha")),
            "slope_ci": [_fin(x) for x in head.get("alpha_ci", [None, None])],
            "slope_ci_t": [_fin(x) for x in head.get("alpha_ci_t", [None, None])],
            "kappa": _fin(head.get("kappa")),
            "kappa_ci": [_fin(x) for x in head.get("kappa_ci", [None, None])],
            "kappa_linear": self.kappa_linear,
            "fit_width": head_w,
            "fits": {str(w): _json_fit(f) for w, f in self.fits.items()},
            "slope_level": _fin(head_level.get("alpha")),
            "slope_level_ci": [_fin(x) for x in head_level.get("alpha_ci", [None, None])],
            "fits_level": {str(w): _json_fit(f) for w, f in self.fits_level.items()},
            "tau_gen_spread": self.spread,
            "stop_steps": [_fin(s["steps"]) if s["steps"] is not None else None for s in self.stops],
            "stop_epochs": [_fin(s["epochs"]) if s["epochs"] is not None else None for s in self.stops],
            "alpha_frac": d.alpha_frac,
            "phase_boundary": [dict(b) for b in self.boundary],
            "phase_multiples": list(d.phase_multiples),
            "quality_metric": runs[0].quality_metric,
            "definitions": {
                "tau_gen": runs[0].tau_gen.method if runs[0].tau_gen else None,
                "tau_mem": next((r.tau_mem.method for r in runs if r.tau_mem is not None), None),
                "tau_mem_level": next((r.tau_mem_level.method for r in runs if r.tau_mem_level is not None), None),
                "fit": head.get("method"),
                "stop": f"FSW25: stop at {d.alpha_frac:g} * kappa_linear * n steps",
                "options": d.to_dict(),
            },
        }


def run_paths(source: str | Path) -> list[Path]:
    """The run directories of ``source``: a sweep directory, or one run directory."""
    source = Path(source)
    if (source / rd.Run.CONFIG).exists():
        return [source]
    paths = rd.list_runs(source)
    if not paths:
        raise DiffmemError(f"no run directories found in {source}")
    return paths


def analyse(source: str | Path | Sequence[str | Path], definitions: TauDefinitions = TauDefinitions(),
            runs: Sequence[RunData] | None = None) -> Analysis:
    """Estimate every timescale of the runs of ``source`` (a sweep, one run, or a list of run directories).

    ``runs``: already loaded :class:`RunData` (their series are reused, their estimates replaced), so
    several definitions can be compared without reading the files again.
    """
    d = definitions
    if runs is None:
        paths = run_paths(source) if isinstance(source, (str, Path)) else [Path(p) for p in source]
        runs = [load_run(p, d.quality_metric) for p in paths]
    else:
        runs = [replace(r, tau_gen=None, tau_mem=None, tau_mem_level=None, tau_gap=None) for r in runs]
        if d.quality_metric is not None:
            for r in runs:
                if r.quality_metric != d.quality_metric:
                    runs = [load_run(x.path, d.quality_metric) for x in runs]
                    break
    runs = sorted(runs, key=lambda r: (r.width is None, r.width or 0, r.n, r.seed if r.seed is not None else 0))
    targets: dict = {}
    if d.tau_gen_reference == "common":
        # the level every run of a width attains: the worst run's best (smoothed) quality + rel_tol
        for w in _widths(runs):
            bests = [b for r in runs if r.width == w for b in [_best_smoothed(r, d.smooth)] if b is not None]
            if bests:
                targets[w] = max(bests) + d.rel_tol * abs(max(bests))
    for r in runs:
        _estimate(r, d, targets.get(r.width))

    fits = _fit_by_width(runs, "tau_mem", d.n_boot, d.seed)
    fits_level = _fit_by_width(runs, "tau_mem_level", d.n_boot, d.seed)

    # phase boundary at multiples of τ_gen (per width: median τ_gen over its runs)
    taus: dict[Any, list[float]] = {}
    for w in _widths(runs):
        tg = [r.tau_gen.value for r in runs if r.width == w and r.tau_gen is not None and r.tau_gen.reached]
        if tg:
            taus[w] = [k * float(np.median(tg)) for k in d.phase_multiples]
    rows = [{"n": r.n, "width": r.width, "p": r.n_params, "steps": r.f_mem[0], "f_mem": r.f_mem[1]}
            for r in runs if r.f_mem is not None and r.width in taus]
    boundary = phase_boundary(rows, taus)
    for b in boundary:
        b["multiple"] = d.phase_multiples[taus[b["width"]].index(b["tau"])] if b["tau"] in taus[b["width"]] else None

    reached = [r for r in runs if r.tau_mem is not None and r.tau_mem.reached]
    kappa_lin = float(np.median([r.tau_mem.value / r.n for r in reached])) if reached else None
    stops = [stopping_time(kappa_lin, r.n, d.alpha_frac, r.batch_size) if kappa_lin else
             {"steps": None, "epochs": None} for r in runs]
    spread = {}
    for w in _widths(runs):
        tg = [r.tau_gen.value for r in runs if r.width == w and r.tau_gen is not None and r.tau_gen.reached
              and r.tau_gen.value > 0]
        if tg:
            spread[str(w)] = max(tg) / min(tg)
    src = Path(source) if isinstance(source, (str, Path)) else Path(".")
    failures = [e for e in rd.read_sweep_index(src) if e.get("status") == "failed"] \
        if isinstance(source, (str, Path)) and not (src / rd.Run.CONFIG).exists() else []
    return Analysis(src, d, runs, fits, fits_level, boundary, kappa_lin, stops, spread, failures)
