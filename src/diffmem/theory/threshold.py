"""The architectural threshold n* = p of the random-features model (issue #13 item 3, BUBM25 Thm 3.2).

For each ψ_p and each ratio ψ_n/ψ_p (across 1: Regime I, ψ_p > ψ_n, where the
model can interpolate its n training points; Regime II, ψ_n > ψ_p, where it
cannot) one Gaussian-equivalent draw at dimension d gives, in closed form
(:mod:`.curves`, :func:`.taumem.limit_losses`):

* ``gap_inf`` — the τ → ∞ generalisation gap L_test − L_train (exact limit,
  the minimum-norm least-squares fit, D_i = 1/λ_i);
* ``gap_plateau`` — the gap on the plateau between τ_gen ~ 1/Δ and τ_mem,
  taken at ``τ_plateau = plateau_factor/Δ`` (default 10/Δ) where the ρ₂
  modes have relaxed and the ρ₁ modes have not (reported with τ_mem so the
  separation can be checked: ``plateau_ok`` when τ_plateau ≤ τ_mem/10).

BUBM25's claims checked here: the τ → ∞ gap is O(1) in Regime I and falls
through n* = p (a function of ψ_n/ψ_p, the same at every ψ_p), and the
plateau gap decays as O(1/√ψ_n).  The fitted log-log slopes are returned:
``slope_regime2`` (gap_inf against ψ_n/ψ_p over ratios ≥ 2) and
``slope_plateau`` (gap_plateau against ψ_n over the points with
``plateau_ok``; the theory says −½).
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from ..errors import DiffmemError
from ..fileio import save_figure
from .curves import _closed_form, eigensystem, predicted_timescales
from .rf import make_problem
from .taumem import limit_losses, loglog_slope

__all__ = ["threshold", "plot_threshold"]


def threshold(psi_p: Sequence[float] = (8, 16, 32), ratios: Sequence[float] = (0.125, 0.25, 0.5, 1, 2, 4, 8),
              t: float = 0.1, d: int = 30, seed: int = 0, plateau_factor: float = 10.0) -> dict:
    """Gap at τ → ∞ and on the plateau over ψ_n = ratio·ψ_p, for each ψ_p (see the module doc)."""
    pps = [float(v) for v in psi_p]
    rs = [float(v) for v in ratios]
    if not pps or not rs or any(not (math.isfinite(v) and v > 0) for v in pps + rs):
        raise DiffmemError("psi_p and ratios must be non-empty lists of positive numbers")
    if not plateau_factor > 0:
        raise DiffmemError(f"plateau_factor must be positive, got {plateau_factor}")
    t0 = time.perf_counter()
    rows = []
    for pp in pps:
        for r in rs:
            prob = make_problem(d, pp, r * pp, t, seed=seed)
            es = eigensystem(prob)
            tr, te = limit_losses(es)
            ts = predicted_timescales(prob.psi_p, prob.psi_n, prob.consts)
            tau_pl = plateau_factor / prob.delta
            a, b = _closed_form(es, np.array([tau_pl]))
            rows.append({"psi_p": prob.psi_p, "psi_n": prob.psi_n, "ratio": prob.psi_n / prob.psi_p,
                         "regime": "I" if prob.psi_p > prob.psi_n else "II", "gap_inf": te - tr,
                         "train_inf": tr, "test_inf": te, "gap_plateau": float(b[0] - a[0]), "tau_plateau": tau_pl,
                         "tau_mem": ts["tau_mem"], "plateau_ok": bool(tau_pl <= ts["tau_mem"] / 10)})
    fits = {}
    for pp in pps:
        mine = [x for x in rows if x["psi_p"] == pp]
        two = [x for x in mine if x["ratio"] >= 2 - 1e-9]
        pl = [x for x in mine if x["plateau_ok"]]
        fits[str(pp)] = {"slope_regime2": loglog_slope([x["ratio"] for x in two], [x["gap_inf"] for x in two]),
                         "slope_plateau": loglog_slope([x["psi_n"] for x in pl], [x["gap_plateau"] for x in pl]),
                         "n_plateau_points": len(pl)}
    return {"rows": rows, "fits": fits, "params": {"psi_p": pps, "ratios": rs, "t": float(t), "d": int(d),
                                                   "seed": int(seed), "plateau_factor": plateau_factor},
            "seconds": time.perf_counter() - t0}


def plot_threshold(result: dict, path) -> str:
    """PNG: left, gap_inf against ψ_n/ψ_p (log-log) per ψ_p with n* = p marked; right, the plateau gap
    against ψ_n with a ψ_n^{-1/2} guide."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.3))
    for pp in result["params"]["psi_p"]:
        mine = [x for x in result["rows"] if x["psi_p"] == pp]
        f = result["fits"][str(pp)]
        s2 = f["slope_regime2"]
        axes[0].plot([x["ratio"] for x in mine], [x["gap_inf"] for x in mine], "o-",
                     label=f"ψ_p={pp:g}" + (f" (Regime II slope {s2:.2f})" if s2 is not None else ""))
        pl = [x for x in mine if x["plateau_ok"]]
        sp = f["slope_plateau"]
        axes[1].plot([x["psi_n"] for x in pl], [x["gap_plateau"] for x in pl], "o-",
                     label=f"ψ_p={pp:g} (slope {sp:.2f})" if sp is not None else f"ψ_p={pp:g}")
    axes[0].axvline(1.0, color="k", ls=":", label="n* = p")
    axes[0].set_xlabel("ψ_n / ψ_p = n / p")
    axes[0].set_ylabel("τ → ∞ gap L_test − L_train")
    pl = [x for x in result["rows"] if x["plateau_ok"]]
    if pl:
        x0 = min(x["psi_n"] for x in pl)
        y0 = max(x["gap_plateau"] for x in pl if x["psi_n"] == x0)
        xs = np.geomspace(x0, max(x["psi_n"] for x in pl), 10)
        axes[1].plot(xs, y0 * (xs / x0) ** -0.5, "k:", label="∝ ψ_n^{-1/2}")
    axes[1].set_xlabel("ψ_n")
    axes[1].set_ylabel(f"gap at τ = {result['params']['plateau_factor']:g}/Δ (plateau)")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"architectural threshold: t={result['params']['t']:g}, d={result['params']['d']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return str(path)
