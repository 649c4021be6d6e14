"""Closed-form scan of the τ_mem ∝ n check at other (t, ψ_p, d) than the issue's.

For ψ_n ∈ {4, 8, 16, 32}: the time τ_f at which the closed-form gap
L_test − L_train reaches the fraction f of its τ → ∞ value, its log-log slope
against ψ_n, and the predicted τ_mem = ψ_p/(Δ λ_min) with its slope.  The
closed form agrees with gradient descent to 5e-4 (experiments/theory_tau_mem.py),
so this shows where in parameter space the law τ_mem ∝ n appears.

    python experiments/theory_tau_mem_scan.py --t 0.01 --psi-p 64 --d 100
    python experiments/theory_tau_mem_scan.py --t 0.1 --psi-p 256 --d 50
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from diffmem.theory.curves import crossing_time, learning_curves
from diffmem.theory.rf import make_problem


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--t", type=float, default=0.1)
    ap.add_argument("--psi-p", type=float, default=64.0)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--psi-n", default="4,8,16,32")
    ap.add_argument("--fraction", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tau-end", type=float, default=1e9, help="last τ (the gap must have converged there)")
    args = ap.parse_args(argv)
    psi_ns = [float(v) for v in args.psi_n.split(",")]
    taus = np.logspace(0.0, np.log10(args.tau_end), 400)
    rows = []
    for psi_n in psi_ns:
        lc = learning_curves(make_problem(args.d, args.psi_p, psi_n, args.t, seed=args.seed), taus)
        g = lc["gap"]
        converged = abs(g[-1] - g[-20]) <= 1e-6 * abs(g[-1])
        rows.append({"psi_n": psi_n, "tau_f": crossing_time(taus, g, args.fraction), "tau_mem_pred": lc["tau_mem"],
                     "final_gap": float(g[-1]), "converged": bool(converged)})
        print(f"psi_n={psi_n:g}: tau_{args.fraction:g}={rows[-1]['tau_f']:.0f}  tau_mem_pred={lc['tau_mem']:.0f}  "
              f"final gap {g[-1]:.4g}{'' if converged else '  (NOT converged: raise --tau-end)'}", flush=True)

    def slope(key):
        return float(np.polyfit(np.log(psi_ns), np.log([r[key] for r in rows]), 1)[0])

    out = {"setting": vars(args), "runs": rows, "slope_tau_f": slope("tau_f"), "slope_tau_mem_pred": slope("tau_mem_pred")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
