"""Where does τ_mem ∝ n hold in the random-features model?  (issue #13 item 2)

Scan ψ_p ∈ {64, 256, 1024} × t ∈ {0.01, 0.1, 0.5} × ψ_n ∈ {2, 4, 8, 16, 32}
(d per ψ_p: 50, 25, 16 so that p = ψ_p d stays ≤ 16384), closed form of
:mod:`diffmem.theory.taumem` (one Gaussian-equivalent draw per point, seed 0).
Prints, for every (ψ_p, t):

* the fitted log-log slope against ψ_n of every definition (a)–(e);
* the spread (max − min over ψ_n) on τ/τ_mem ∈ [0.1, 3] of the gap, the
  bulk gap (modes ≥ λ_min/2) and the ρ₁ gap, each normalised by its τ → ∞
  value and rescaled by the *predicted* τ_mem; and the spread of the gap
  rescaled by each definition's own time;
* the verdict: definitions with slope in [0.7, 1.3] where the gap curves
  rescaled by the predicted τ_mem overlay (spread ≤ 0.15).  (The own-time
  spread is printed for information only: rescaling by a time defined as a
  crossing of the same curve forces the curves together at that crossing.)

Also local slopes between consecutive ψ_n, drawn over (ψ_p/ψ_n, t) in
``slopes.png`` (one panel per definition); everything in ``scan.json``.
Prints its wall time.  ``python experiments/theory_taumem_scan.py --out DIR``
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from diffmem.fileio import atomic_write_json, save_figure  # noqa: E402
from diffmem.theory.taumem import DEFINITIONS, OVERLAY_RANGE, taumem  # noqa: E402

D_OF = {64.0: 50, 256.0: 25, 1024.0: 16}
LO, HI, SPREAD = 0.7, 1.3, 0.15


def own_spread(res: dict, name: str) -> float:
    """Spread of gap/gap_∞ with τ rescaled by the definition's own time (nan if a time is missing)."""
    x = np.geomspace(*OVERLAY_RANGE, 61)
    ys = []
    for c, r, tau in zip(res["curves"], res["runs"], res["definitions"][name]["tau"]):
        if not (tau and math.isfinite(tau)):
            return float("nan")
        ys.append(np.interp(np.log(x), np.log(c["tau"] / tau), c["gap"] / r["limits"]["gap"]))
    ys = np.array(ys)
    return float(np.max(ys.max(0) - ys.min(0)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--psi-p", default="64,256,1024")
    ap.add_argument("--t", default="0.01,0.1,0.5")
    ap.add_argument("--psi-n", default="2,4,8,16,32")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    pps = [float(v) for v in args.psi_p.split(",")]
    ts = [float(v) for v in args.t.split(",")]
    pns = [float(v) for v in args.psi_n.split(",")]
    names = list(DEFINITIONS)
    rows = []
    short = {"score_min": "a:min", "score_rise": "b:rise", "bulk_half_gap": "c:bulk", "rho1_half_gap": "c':rho1",
             "half_gap": "d:half", "pred_tau_mem": "e:pred"}
    print(f"{'psi_p':>6} {'t':>5} {'d':>3} | " + " ".join(f"{short[n]:>7}" for n in names)
          + " | spread(pred): gap  bulk  rho1 | own-time spread: " + " ".join(short[n] for n in names[:-1]))
    for pp in pps:
        d = D_OF.get(pp, max(8, int(round(16384 / pp))))
        for t in ts:
            res = taumem(pp, pns, t, d, seed=args.seed)
            slopes = {n: res["definitions"][n]["slope"] for n in names}
            spreads = {k: v["spread"] for k, v in res["overlay"].items()}
            own = {n: own_spread(res, n) for n in names}
            local = {}
            for n in names:
                tau = np.array([np.nan if v is None else v for v in res["definitions"][n]["tau"]], float)
                local[n] = [float(np.log(tau[i + 1] / tau[i]) / np.log(pns[i + 1] / pns[i]))
                            for i in range(len(pns) - 1)]
            ok = [n for n in names if n != "pred_tau_mem" and slopes[n] is not None and LO <= slopes[n] <= HI
                  and spreads["gap"] <= SPREAD]
            row = {"psi_p": pp, "t": t, "d": d, "psi_n": res["psi_n"],
                   "tau": {n: res["definitions"][n]["tau"] for n in names}, "slope": slopes,
                   "local_slope": local, "spread_pred": spreads, "spread_own": own, "law_holds_for": ok,
                   "final_gap": [r["limits"]["gap"] for r in res["runs"]],
                   "rho1_gap_share": [r["limits"]["rho1_gap"] / r["limits"]["gap"] for r in res["runs"]],
                   "lambda_min_over_s2": [r["lambda_min"] / res["params"]["s_t2"] for r in res["runs"]],
                   "seconds": res["seconds"]}
            rows.append(row)

            def f(v):
                return "   null" if v is None or not math.isfinite(v) else f"{v:7.2f}"
            print(f"{pp:6g} {t:5g} {d:3d} | " + " ".join(f(slopes[n]) for n in names)
                  + f" | {spreads['gap']:.2f} {spreads['bulk_gap']:.2f} {spreads['rho1_gap']:.2f}"
                  + " | " + " ".join(f(own[n]).strip() for n in names[:-1])
                  + f" | law holds: {ok or 'none'}  ({res['seconds']:.0f}s)", flush=True)
    secs = time.perf_counter() - t_start
    region = [(r["psi_p"], r["t"], r["law_holds_for"]) for r in rows if r["law_holds_for"]]
    print(f"(psi_p, t) where at least one definition has slope in [{LO}, {HI}] with spread <= {SPREAD}: {region}")
    fig = plot(rows, pns, names, os.path.join(args.out, "slopes.png"))
    atomic_write_json(os.path.join(args.out, "scan.json"),
                      {"setting": vars(args), "d_of_psi_p": D_OF, "rows": rows, "region": region,
                       "criteria": {"slope": [LO, HI], "spread": SPREAD, "window": list(OVERLAY_RANGE)},
                       "seconds": secs})
    print(f"figure {fig}; json {os.path.join(args.out, 'scan.json')}; wall time {secs:.0f} s")
    return 0


def plot(rows, pns, names, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5), sharex=True, sharey=True)
    ts = sorted({r["t"] for r in rows})
    marks = {64.0: "o", 256.0: "s", 1024.0: "^"}
    for ax, n in zip(axes.ravel(), names):
        for r in rows:
            x = [r["psi_p"] / math.sqrt(pns[i] * pns[i + 1]) for i in range(len(pns) - 1)]
            y = [ts.index(r["t"]) + 0.12 * (list(marks).index(r["psi_p"]) - 1 if r["psi_p"] in marks else 0)] * len(x)
            sc = ax.scatter(x, y, c=np.clip(np.nan_to_num(r["local_slope"][n], nan=-1), -0.5, 2.5), cmap="coolwarm",
                            vmin=-0.5, vmax=2.5, marker=marks.get(r["psi_p"], "o"), s=60, edgecolors="k",
                            linewidths=0.3)
        ax.set_xscale("log")
        ax.set_yticks(range(len(ts)), [f"t={t:g}" for t in ts])
        ax.set_title(n)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("ψ_p/ψ_n (geometric mean of the pair)")
    fig.colorbar(sc, ax=axes, label="local log-log slope of τ vs ψ_n (1 = τ ∝ n)")
    fig.suptitle("local slope d log τ / d log ψ_n; markers ○ ψ_p=64, □ 256, △ 1024")
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return path


if __name__ == "__main__":
    raise SystemExit(main())
