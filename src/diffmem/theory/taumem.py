"""Memorisation times of the random-features model by several definitions (issue #13, BUBM25 §3).

Everything is computed from the closed-form gradient flow of :mod:`.curves`
(τ = kη/d²; the closed form equals gradient descent to 5·10⁻⁴, see
``experiments/theory_tau_mem.py``), on a log grid of τ that reaches 50× the
slowest relaxation time ψ_p/(Δ λ_smallest), and with the τ → ∞ limits taken
exactly (``D_i(∞) = 1/λ_i``).  The definitions (``DEFINITIONS``):

``score_min``      (a) the time of the minimum of E_score(τ), the distance to
                   the true score (equivalently of L_test); null if E_score
                   only decreases (its minimum is the τ → ∞ limit).
``score_rise``     (b) the first time after that minimum at which E_score has
                   risen by the fraction ``rise`` (default 10 %) of its total
                   rise E_score(∞) − E_min; null if it has no minimum.  (A
                   rise relative to E_min itself is reached within ~1.2× the
                   minimum's time at the Fig. 5 parameters, where E_min ≈ 0.05
                   is tiny next to the final E_score ≈ 2–13: it measures the
                   end of generalisation, not memorisation.)
``bulk_half_gap``  (c) the time at which the gap L_test − L_train of the model
                   restricted to the modes of U with eigenvalue ≥ λ_min/2
                   (λ_min the ρ₁ edge of Theorem 3.2; i.e. B projected on those
                   eigenvectors) reaches ``frac`` (½) of its τ → ∞ value.
``rho1_half_gap``  (c') the same restricted to λ_min/2 ≤ λ ≤ 2 λ_max(ρ₁) (the ρ₁
                   bulk alone).  With only the lower cut, (c) also keeps the d
                   modes of ρ₂ (eigenvalues ~ψ_p), whose early transient gap
                   (τ ~ 1/Δ) exceeds half the final restricted gap when
                   ψ_p/ψ_n is large and the late gap sits in the ~d slow modes
                   below λ_min/2 (e.g. ψ_p = 256, ψ_n = 8–16: bulk gap 0.03–0.05
                   of a total 3–3.6); then (c) fires at τ ≈ 20.
``half_gap``       (d) the same for the unrestricted gap (issue #3's τ_½).
``pred_tau_mem``   (e) the prediction ψ_p/(Δ_t λ_min).

Each definition's log-log slope against ψ_n is a least-squares fit over the
ψ_n at which it is finite (null with fewer than two).

Besides the times, :func:`taumem` returns per ψ_n the normalised curves
(gap/gap_∞ and bulk gap/bulk gap_∞ on a common grid of τ/τ_mem) and their
``spread`` (max − min over ψ_n) on τ/τ_mem ∈ [0.1, 3], the overlay test of
issue #13.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from ..errors import DiffmemError
from .curves import EigenSystem, _closed_form, crossing_time, eigensystem, predicted_timescales
from .rf import make_problem

__all__ = ["DEFINITIONS", "limit_losses", "restrict", "memorisation_times", "taumem", "loglog_slope",
           "OVERLAY_RANGE"]

DEFINITIONS = {
    "score_min": "(a) time of the minimum of E_score (distance to the true score)",
    "score_rise": "(b) first time after the minimum at which E_score has risen by the fraction `rise` of "
                  "E_score(inf) - E_min",
    "bulk_half_gap": "(c) time at which the gap restricted to the modes with eigenvalue >= lambda_min/2 "
                     "reaches `frac` of its tau -> inf value",
    "rho1_half_gap": "(c') the same with the rho_1 bulk alone: lambda_min/2 <= eigenvalue <= 2 lambda_max(rho_1)",
    "half_gap": "(d) time at which the unrestricted gap reaches `frac` of its tau -> inf value",
    "pred_tau_mem": "(e) predicted psi_p / (Delta_t lambda_min), lambda_min the rho_1 edge of Thm 3.2",
}
OVERLAY_RANGE = (0.1, 3.0)  # τ/τ_mem window of the spread (issue #13)


def restrict(es: EigenSystem, keep: np.ndarray) -> EigenSystem:
    """The eigen-system with only the modes ``keep`` (bool [r]): the model whose
    B = A/√p is projected on those eigenvectors of U (the other modes stay at 0)."""
    keep = np.asarray(keep, bool)
    K = es.K[keep] if es.K is not None else None
    return EigenSystem(lam=es.lam[keep], Q=es.Q[:, keep], C=es.C[keep], Ct=es.Ct[keep],
                       G=es.G[np.ix_(keep, keep)], meta=es.meta, K=K, shift=es.shift)


def limit_losses(es: EigenSystem) -> tuple[float, float]:
    """(L_train, L_test) at τ → ∞ exactly (D_i = 1/λ_i): the minimum-norm interpolator on span(Q)."""
    d = es.meta["d"]
    Dm = 1.0 / es.lam
    cn = np.einsum("ij,ij->i", es.C, es.C)
    cct = np.einsum("ij,ij->i", es.C, es.Ct)
    P = es.G * (es.C @ es.C.T)
    train = 1.0 - float(cn @ Dm) / d
    test = 1.0 + float(Dm @ P @ Dm) / d - 2.0 * float(Dm @ cct) / d
    return train, test


def loglog_slope(x, y) -> float | None:
    """Least-squares slope of log y against log x over the finite positive pairs (None if < 2)."""
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if ok.sum() < 2:
        return None
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def _argmin_time(tau: np.ndarray, y: np.ndarray) -> float:
    """τ of the minimum of y, refined by a parabola in log τ through the three grid points around it;
    nan when the minimum is the last grid point (y still decreasing: no finite minimum)."""
    i = int(np.argmin(y))
    if i == y.size - 1:
        return float("nan")
    if i == 0:
        return float(tau[0])
    x = np.log(tau[i - 1:i + 2])
    c = np.polyfit(x - x[1], y[i - 1:i + 2], 2)
    if c[0] <= 0:
        return float(tau[i])
    return float(math.exp(x[1] - c[1] / (2 * c[0])))


def _rise_time(tau: np.ndarray, y: np.ndarray, t_min: float, rise: float, y_inf: float) -> float:
    if not math.isfinite(t_min):
        return float("nan")
    i0 = int(np.argmin(y))
    level = y[i0] + rise * (y_inf - y[i0])
    after = np.flatnonzero(y[i0:] >= level)
    if after.size == 0:
        return float("nan")
    j = i0 + int(after[0])
    t0, t1, y0, y1 = tau[j - 1], tau[j], y[j - 1], y[j]
    w = (level - y0) / (y1 - y0) if y1 != y0 else 1.0
    return float(math.exp(math.log(t0) + w * (math.log(t1) - math.log(t0))))


def tau_grid(es: EigenSystem, per_decade: int = 40, tau_min: float = 0.1) -> np.ndarray:
    """Log grid of τ from ``tau_min`` to 50× the slowest relaxation time ψ_p/(Δ λ_smallest)."""
    m = es.meta
    tmax = 50.0 * m["psi_p"] / (m["delta"] * float(es.lam.min()))
    n = max(2, int(math.ceil(per_decade * math.log10(tmax / tau_min))) + 1)
    return np.logspace(math.log10(tau_min), math.log10(tmax), n)


def memorisation_times(es: EigenSystem, rise: float = 0.1, frac: float = 0.5, per_decade: int = 40,
                       keep_curves: bool = False) -> dict:
    """All definitions for one problem (see the module doc).  Returns ``times``
    {name: τ}, the τ → ∞ ``limits`` (train, test, gap, bulk gap), ``n_bulk_modes``
    and, if ``keep_curves``, the curves on the τ grid."""
    if not (0 < frac < 1) or not (0 < rise < 1):
        raise DiffmemError(f"need 0 < frac < 1 and 0 < rise < 1, got frac={frac}, rise={rise}")
    m = es.meta
    ts = predicted_timescales(m["psi_p"], m["psi_n"], m)
    taus = tau_grid(es, per_decade)
    train, test = _closed_form(es, taus)
    score = (test - m["min_test_loss"]) / m["delta"]
    tr_inf, te_inf = limit_losses(es)
    masks = {"bulk": es.lam >= 0.5 * ts["lambda_min"],
             "rho1": (es.lam >= 0.5 * ts["lambda_min"]) & (es.lam <= 2.0 * ts["lambda_max_rho1"])}
    rgap, rlim = {}, {}
    for key, keep in masks.items():
        if keep.any():
            sub = restrict(es, keep)
            a, b = _closed_form(sub, taus)
            a_inf, b_inf = limit_losses(sub)
            rgap[key], rlim[key] = b - a, b_inf - a_inf
        else:
            rgap[key], rlim[key] = np.zeros_like(taus), 0.0
    gap = test - train
    t_min = _argmin_time(taus, score)

    def half(y, ref):
        return crossing_time(taus, y, frac, ref=ref) if ref > 0 else float("nan")

    times = {
        "score_min": t_min,
        "score_rise": _rise_time(taus, score, t_min, rise, (te_inf - m["min_test_loss"]) / m["delta"]),
        "bulk_half_gap": half(rgap["bulk"], rlim["bulk"]),
        "rho1_half_gap": half(rgap["rho1"], rlim["rho1"]),
        "half_gap": half(gap, te_inf - tr_inf),
        "pred_tau_mem": ts["tau_mem"],
    }
    out = {"times": times, "lambda_min": ts["lambda_min"], "tau_slow": ts["tau_slow"],
           "n_bulk_modes": int(masks["bulk"].sum()), "n_rho1_modes": int(masks["rho1"].sum()),
           "n_modes": int(es.lam.size),
           "limits": {"train": tr_inf, "test": te_inf, "gap": te_inf - tr_inf, "bulk_gap": rlim["bulk"],
                      "rho1_gap": rlim["rho1"],
                      "score_error": (te_inf - m["min_test_loss"]) / m["delta"]},
           "score_error_min": float(score.min())}
    if keep_curves:
        out["curves"] = {"tau": taus, "train_loss": train, "test_loss": test, "gap": gap, "bulk_gap": rgap["bulk"],
                         "rho1_gap": rgap["rho1"],
                         "score_error": score}
    return out


def _overlay(curves: list[np.ndarray], taus: list[np.ndarray], tau_mem: list[float], n: int = 61) -> dict:
    x = np.geomspace(OVERLAY_RANGE[0], OVERLAY_RANGE[1], n)
    ys = np.array([np.interp(np.log(x), np.log(t / tm), c) for c, t, tm in zip(curves, taus, tau_mem)])
    return {"tau_over_tau_mem": x, "curves": ys, "spread": float(np.max(ys.max(0) - ys.min(0)))}


def taumem(psi_p: float, psi_n: Sequence[float], t: float, d: int, seed: int = 0, rise: float = 0.1,
           frac: float = 0.5, per_decade: int = 40, act: str = "tanh",
           sigma_spectrum: Sequence[float] = (1.0,)) -> dict:
    """Memorisation times of every definition at each ψ_n (one Gaussian-equivalent draw each, same seed).

    Returns ``psi_n``, ``definitions`` {name: {"tau": [per ψ_n], "slope": log-log slope or None,
    "doc": ...}}, per-ψ_n ``runs`` (limits, λ_min, mode counts), ``overlay`` {"gap", "bulk_gap"}: the
    normalised curves on τ/τ_mem ∈ [0.1, 3] and their spread, ``params`` and ``seconds``.
    """
    t0 = time.perf_counter()
    pn = [float(v) for v in psi_n]
    if not pn or any(not (math.isfinite(v) and v > 0) for v in pn):
        raise DiffmemError(f"psi_n must be a non-empty list of positive numbers, got {list(psi_n)}")
    runs, curves = [], []
    for v in pn:
        prob = make_problem(d, psi_p, v, t, seed=seed, act=act, sigma_spectrum=sigma_spectrum)
        mt = memorisation_times(eigensystem(prob), rise=rise, frac=frac, per_decade=per_decade, keep_curves=True)
        curves.append(mt.pop("curves"))
        mt.update(psi_n=prob.psi_n, p=prob.p, n=prob.n)
        runs.append(mt)
    defs = {}
    for name, doc in DEFINITIONS.items():
        tau = [r["times"][name] for r in runs]
        defs[name] = {"tau": tau, "slope": loglog_slope([r["psi_n"] for r in runs], tau), "doc": doc}
    tm = [r["times"]["pred_tau_mem"] for r in runs]
    taus = [c["tau"] for c in curves]
    overlay = {key: _overlay([c[key] / r["limits"][key] if r["limits"][key] else c[key]
                              for c, r in zip(curves, runs)], taus, tm) for key in ("gap", "bulk_gap", "rho1_gap")}
    k = make_problem(d, psi_p, pn[0], t, seed=seed, act=act).consts
    return {"psi_n": [r["psi_n"] for r in runs], "definitions": defs, "runs": runs, "overlay": overlay,
            "curves": curves,
            "params": {"psi_p": float(psi_p), "t": float(t), "d": int(d), "seed": int(seed), "rise": rise,
                       "frac": frac, "act": act, "delta": k.delta, "s_t2": k.s_t2, "v_t2": k.v_t2},
            "seconds": time.perf_counter() - t0}


def summary(result: dict) -> dict:
    """The JSON-able part of :func:`taumem` (no curves): psi_n, definitions, runs, overlay spreads, params."""
    return {"psi_n": result["psi_n"], "definitions": result["definitions"], "runs": result["runs"],
            "overlay": {k: {"spread": v["spread"], "window": list(OVERLAY_RANGE)} for k, v in result["overlay"].items()},
            "params": result["params"], "seconds": result["seconds"]}


def plot_taumem(result: dict, path) -> str:
    """PNG: left, every definition's τ against ψ_n (log-log, slopes in the legend); middle, the gap
    normalised by its τ → ∞ value against τ/τ_mem(pred); right, the same for the ρ₁-restricted gap."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3))
    pn = np.asarray(result["psi_n"])
    for name, d in result["definitions"].items():
        tau = np.array([np.nan if v is None else v for v in d["tau"]], float)
        sl = d["slope"]
        axes[0].plot(pn, tau, "o-", label=f"{name} (slope {sl:.2f})" if sl is not None else f"{name} (slope n/a)")
    axes[0].plot(pn, pn / pn[0] * np.nanmin([v for v in result["definitions"]["pred_tau_mem"]["tau"]]), "k:",
                 label="∝ ψ_n")
    axes[0].set_xscale("log")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("ψ_n")
    axes[0].set_ylabel("τ")
    axes[0].legend(fontsize=7)
    cmap = plt.get_cmap("viridis")
    tm = result["definitions"]["pred_tau_mem"]["tau"]
    for ax, key in ((axes[1], "gap"), (axes[2], "rho1_gap")):
        for i, (c, r, m) in enumerate(zip(result["curves"], result["runs"], tm)):
            ref = r["limits"][key]
            ax.plot(c["tau"] / m, c[key] / ref if ref else c[key], color=cmap(i / max(1, len(tm) - 1) * 0.85),
                    label=f"ψ_n={r['psi_n']:g}")
        ax.axvspan(*OVERLAY_RANGE, color="0.9")
        ax.set_xscale("log")
        ax.set_xlabel("τ / τ_mem (predicted)")
        ax.set_title(f"{key} / its τ→∞ value (spread {result['overlay'][key]['spread']:.2f} in the band)")
        ax.legend(fontsize=7)
    pr = result["params"]
    fig.suptitle(f"memorisation times: ψ_p={pr['psi_p']:g}, t={pr['t']:g}, d={pr['d']}")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return str(path)
