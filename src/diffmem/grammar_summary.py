"""The numbers of the FSW25 demo (issue #11, "what it must show"), from a finished demo directory.

:func:`grammar_summary` writes the report (:func:`diffmem.report.make_report`:
τ_mem per n from the copy fraction, the fit ``τ_mem = κ n^α``, the figures, the
grammar figures of :mod:`diffmem.report_grammar`) and adds:

* ``level_times``: per n, the first step where each level's validity (and whole
  sequences) reaches 0.9 (None: never), and ``levels_in_order`` per n: whether
  these times are non-decreasing with the level among the levels that got there.
* ``copy_final_smallest``: the last copy fraction of the smallest n, with its
  Wilson 95 % interval.
* ``stopping``: κ from the two smallest n (:func:`diffmem.stopping.estimate_kappa`),
  the predicted τ_mem of the largest n with its interval, the measured one and
  their ratio; and the largest run read at the rule's stop ``0.5 κ n`` (the
  last checkpoint at or before it; a run stopped there is this run up to that
  step, training being deterministic): its copy fraction and validity per
  level against its best over the run.
* ``two_halves``: :func:`diffmem.two_halves.two_halves` of the smallest-n run and
  its disjoint twin, the agreement before τ_mem and at the end (and
  ``two_halves.png``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from .analysis import TauDefinitions, analyse
from .report import make_report
from .report_grammar import RULE_LEVEL, grammar_series, level_times
from .stopping import DEFAULT_ALPHA, estimate_kappa
from .two_halves import plot_two_halves, summarise_two_halves, two_halves

__all__ = ["grammar_summary"]


def _f(x):
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _at(steps, values, step):
    i = int(np.searchsorted(np.asarray(steps), step, side="right")) - 1
    return None if i < 0 else (float(steps[i]), float(values[i]))


def grammar_summary(out: str | Path, plan=None, halves=None) -> dict[str, Any]:
    out = Path(out)
    summary = make_report(out / "runs", out, TauDefinitions(), write_summary=False)
    a = analyse(out / "runs", TauDefinitions())
    runs = sorted(a.runs, key=lambda r: r.n)
    lt, order = {}, {}
    for r in runs:
        s = grammar_series(r.path)
        if s is None:
            continue
        t = level_times(s, RULE_LEVEL)
        lt[str(r.n)] = t
        got = [t[k] for k in sorted((k for k in t if k != "valid"), key=int) if t[k] is not None]
        order[str(r.n)] = bool(all(x <= y for x, y in zip(got, got[1:])))
    small = runs[0]
    copy = None
    if small.f_mem is not None:
        i = len(small.f_mem[0]) - 1
        w = small.f_mem_wilson
        copy = {"n": small.n, "step": float(small.f_mem[0][i]), "value": float(small.f_mem[1][i]),
                "wilson": None if w is None else [float(w[0][i]), float(w[1][i])]}
    stopping: dict[str, Any] = {"alpha": DEFAULT_ALPHA}
    pilots, big = runs[:2], runs[-1]
    try:
        k = estimate_kappa([r.n for r in pilots],
                           [r.tau_mem.value if r.tau_mem is not None and r.tau_mem.reached else None for r in pilots],
                           [None if r.tau_mem is None else r.tau_mem.low for r in pilots],
                           [None if r.tau_mem is None else r.tau_mem.high for r in pilots])
        pred = {"value": k.kappa * big.n, "low": k.low * big.n, "high": k.high * big.n}
        meas = big.tau_mem.value if big.tau_mem is not None and big.tau_mem.reached else None
        stopping.update(pilots=[r.n for r in pilots], kappa=k.kappa, kappa_ci=[k.low, k.high], n=big.n,
                        tau_mem_predicted=pred, tau_mem_measured=meas,
                        tau_mem_measured_ci=None if meas is None else [_f(big.tau_mem.low), _f(big.tau_mem.high)],
                        ratio=None if meas is None else meas / pred["value"],
                        within_1_5=None if meas is None else bool(1 / 1.5 <= meas / pred["value"] <= 1.5))
        stop = DEFAULT_ALPHA * k.kappa * big.n
        st: dict[str, Any] = {"stop_step": stop}
        if big.f_mem is not None and _at(big.f_mem[0], big.f_mem[1], stop):
            step, v = _at(big.f_mem[0], big.f_mem[1], stop)
            i = int(np.searchsorted(big.f_mem[0], step))
            st.update(read_at=step, copy=v, copy_wilson=None if big.f_mem_wilson is None else
                      [float(big.f_mem_wilson[0][i]), float(big.f_mem_wilson[1][i])])
        s = grammar_series(big.path)
        if s is not None:
            st["validity_vs_best"] = {}
            for ell, (ls, lv) in s["levels"].items():
                got = _at(ls, lv, stop)
                st["validity_vs_best"][str(ell)] = None if got is None else \
                    {"at_stop": got[1], "best": float(lv.max()), "ratio": got[1] / float(lv.max()) if lv.max() > 0 else None}
        stopping["stopped_largest"] = st
    except Exception as e:  # noqa: BLE001  (κ unknown: no pilot reached τ_mem) -- recorded, the rest stands
        stopping["error"] = str(e)
    th = None
    if halves:
        first = next((r for r in runs if r.n == halves[0][1].n), None)
        hb = out / "halves" / halves[0][0]
        if first is not None and hb.is_dir():
            res = two_halves(first.path, hb)
            tau = first.tau_mem.value if first.tau_mem is not None and first.tau_mem.reached else None
            th = {**summarise_two_halves(res, tau), "n": res["n"], "kind": res["kind"],
                  "steps": res["steps"], "agreement": [r["agreement"] for r in res["records"]]}
            summary["figures"]["two_halves"] = str(plot_two_halves(res, out / "two_halves.png", tau))
    summary.update(level_times=lt, levels_in_order=order, copy_final_smallest=copy, stopping=stopping,
                   two_halves=th)
    summary["headline"] = {
        "n": summary["n"], "tau_mem": summary["tau_mem"], "slope": summary["slope"], "slope_ci": summary["slope_ci"],
        "level_times_0.9": lt, "copy_final_smallest": None if copy is None else copy["value"],
        "kappa_two_smallest": stopping.get("kappa"), "tau_mem_largest_predicted": stopping.get("tau_mem_predicted"),
        "tau_mem_largest_measured": stopping.get("tau_mem_measured"),
        "two_halves_before_after": None if th is None else [th.get("before"), th.get("final")]}
    return summary
