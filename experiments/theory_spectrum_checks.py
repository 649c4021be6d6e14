"""Spectrum of U (BUBM25 Theorem 3.1, Fig. 4): theory vs eigenvalues, at ψ_p = 64, ψ_n = 8, t = 0.01.

For ρ_Σ = δ(λ − 1) (Σ = I) and ρ_Σ = ½δ(λ − 0.5) + ½δ(λ − 1.5):

1. theory (:func:`diffmem.theory.spectrum.spectrum`): bulk edges and masses,
   δ mass, Theorem 3.2 edges; for Σ = I compared with SPEC's reference
   numbers (top bulk ≈ [10.05, 43.5] with mass 1/64, small bulk ≈ [0.09, 0.36],
   Theorem 3.2 formula [0.0873, 0.3762], mass 700/6400, δ mass 5500/6400);
2. eigenvalues at d = 100 (p = 6400, n = 800) of the Gaussian-equivalent U
   (Lemma C.1, SVD of H) and of the real-feature U (noise expectation by
   ``--n-noise`` draws per point), same W and data;
3. Kolmogorov distance between the theory CDF and the empirical CDF, δ peak
   excluded (:func:`diffmem.theory.spectrum.kolmogorov_distance`: the
   round(δ_mass·p) smallest eigenvalues are removed and the theory's
   continuous part is renormalised); also per-bulk eigenvalue counts.

Writes fig4_<case>_ge.png, fig4_<case>_real.png and checks.json into --out;
prints the JSON.

Usage: python experiments/theory_spectrum_checks.py --out results/theory_spectrum [--n-noise 64] [--skip-real]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from diffmem.theory.rf import ge_U_eigenvalues, make_problem, real_U_eigenvalues
from diffmem.theory.spectrum import kolmogorov_distance, plot_spectrum, spectrum

PSI_P, PSI_N, T = 64.0, 8.0, 0.01
CASES = {"identity": (1.0,), "two_atoms": (0.5, 1.5)}
# SPEC §2 reference numbers (Σ = I, d = 100): [low, high, mass]
SPEC_BULKS = {"top": [10.05, 43.5, 100 / 6400], "small": [0.09, 0.36, 700 / 6400]}
SPEC_SMALL_FORMULA = [0.0873, 0.3762]
SPEC_DELTA = 5500 / 6400


def rel(a, b):
    return float(abs(a - b) / abs(b))


def counts(bulks, ev):
    """Eigenvalues per theory bulk (with a 2 % margin) and below the first bulk."""
    out = [int(np.sum((ev >= lo - 0.02 * (hi - lo)) & (ev <= hi + 0.02 * (hi - lo)))) for lo, hi, _ in bulks]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-noise", type=int, default=64)
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    report = {"params": {"psi_p": PSI_P, "psi_n": PSI_N, "t": T, "d": args.d, "seed": args.seed,
                         "n_noise": args.n_noise}}
    for name, spec in CASES.items():
        t0 = time.perf_counter()
        res = spectrum(PSI_P, PSI_N, T, spec)
        t_theory = time.perf_counter() - t0
        bulks = res["bulks"]
        entry = {"theory_seconds": t_theory, "bulks": bulks, "bulk_mass_contour": res["bulk_mass_contour"],
                 "delta_mass": res["delta_mass"], "delta_mass_check": res["delta_mass_check"],
                 "delta_mass_contour": res["delta_mass_contour"], "total_mass": res["total_mass"],
                 "theorem32_edges": res["theorem32_edges"], "warnings": res["warnings"],
                 "min_density": min(res["density"])}
        if name == "identity":
            top = bulks[-1]
            small = max(bulks, key=lambda b: b[2])  # the ρ₁-like bulk carries (n − d)/p
            entry["vs_spec"] = {
                "top_bulk": {"theory": top, "spec": SPEC_BULKS["top"],
                             "rel_err": [rel(top[i], SPEC_BULKS["top"][i]) for i in range(3)]},
                "small_bulk": {"theory": small, "spec": SPEC_BULKS["small"],
                               "rel_err": [rel(small[i], SPEC_BULKS["small"][i]) for i in range(3)],
                               "rel_err_vs_formula_edges": [rel(small[i], SPEC_SMALL_FORMULA[i]) for i in range(2)]},
                "delta_mass": {"theory": res["delta_mass"], "spec": SPEC_DELTA,
                               "rel_err": rel(res["delta_mass"], SPEC_DELTA),
                               "rel_err_of_1_minus_bulk_mass": rel(res["delta_mass_check"], SPEC_DELTA)},
            }
            entry["vs_spec"]["max_rel_err"] = max(
                max(entry["vs_spec"]["top_bulk"]["rel_err"]), max(entry["vs_spec"]["small_bulk"]["rel_err"]),
                entry["vs_spec"]["delta_mass"]["rel_err_of_1_minus_bulk_mass"])
        prob = make_problem(args.d, PSI_P, PSI_N, T, sigma_spectrum=spec, seed=args.seed)
        t0 = time.perf_counter()
        ev = ge_U_eigenvalues(prob)
        entry["ge"] = {"seconds": time.perf_counter() - t0, "ks": kolmogorov_distance(res, ev),
                       "counts_per_bulk": counts(bulks, ev), "expected_counts": [b[2] * prob.p for b in bulks],
                       "n_at_delta": int(np.sum(np.abs(ev - res["delta_position"]) < 1e-9))}
        plot_spectrum(res, os.path.join(args.out, f"fig4_{name}_ge.png"), eigenvalues=ev,
                      title=f"Fig. 4 ({name}): theory vs Gaussian-equivalent U, d = {args.d}")
        if not args.skip_real:
            t0 = time.perf_counter()
            evr = real_U_eigenvalues(prob, n_noise=args.n_noise)
            entry["real"] = {"seconds": time.perf_counter() - t0, "ks": kolmogorov_distance(res, evr),
                             "counts_per_bulk": counts(bulks, evr),
                             "smallest_kept": float(np.sort(evr)[int(round(res["delta_mass"] * evr.size))]),
                             "largest_dropped": float(np.sort(evr)[int(round(res["delta_mass"] * evr.size)) - 1])}
            plot_spectrum(res, os.path.join(args.out, f"fig4_{name}_real.png"), eigenvalues=evr,
                          title=f"Fig. 4 ({name}): theory vs real-feature U (n_noise = {args.n_noise}), d = {args.d}")
        report[name] = entry
        print(f"[{name}] done", file=sys.stderr, flush=True)
    checks = {"identity_within_3pct": report["identity"]["vs_spec"]["max_rel_err"] < 0.03}
    for name in CASES:
        checks[f"{name}_ge_ks_lt_0.05"] = report[name]["ge"]["ks"] < 0.05
        if "real" in report[name]:
            checks[f"{name}_real_ks_lt_0.1"] = report[name]["real"]["ks"] < 0.1
    report["checks"] = checks
    with open(os.path.join(args.out, "checks.json"), "w") as f:
        json.dump(report, f, indent=1)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
