"""Spectrum of U (BUBM25 Theorem 3.1) at 400 λ points: diffmem vs a naive per-point continuation.

Fig. 4 parameters: ψ_p = 64, ψ_n = 8, t = 0.01, Σ = I, tanh.

* fast: :func:`diffmem.theory.spectrum.spectrum` with ``n_lambda=400`` — the whole
  computation (bulk search, exact edges, density at 400 λ adapted to the bulks,
  adaptive quadrature of the masses, contour checks), vectorised Newton with
  continuation in Im z.  Median of ``--repeat`` runs.
* naive: :func:`diffmem.theory.spectrum.naive_density` on the same 400 λ — for
  every λ a cold start at Im z = 100 and the schedule 100, 99, …, 1, 0.9, …,
  10⁻⁹ (113 solves of ``scipy.optimize.root(method="lm")`` on the real and
  imaginary parts of the three equations), as in the authors' script.  With
  ``--subset K`` only every K-th point is solved and the time is extrapolated
  to 400 points (said so in the output).

Density difference: the naive density is ρ(λ + 10⁻⁹ i); the fast one is the
limit Im z → 0⁺ (exactly 0 at the edges).  Reported: the max difference on the
interior points, on the edge points (where ρ(λ + iε) ~ √ε ≠ 0 for the naive
method), and between the naive method and the fast solver evaluated at the
same Im z = 10⁻⁹ on all 400 points.

    python bench/bench_theory_spectrum.py [--subset 1] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from diffmem.theory.spectrum import naive_density, spectrum, stieltjes

PARAMS = dict(psi_p=64.0, psi_n=8.0, t=0.01)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-lambda", type=int, default=400)
    ap.add_argument("--subset", type=int, default=1, help="solve every K-th λ with the naive method and extrapolate")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    # warm-up (imports, caches) for both methods
    spectrum(**PARAMS, n_lambda=60)
    naive_density([1.0], **PARAMS)

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        res = spectrum(**PARAMS, n_lambda=args.n_lambda)
        times.append(time.perf_counter() - t0)
    t_fast = float(np.median(times))
    lam = np.array(res["lambda"])
    rho = np.array(res["density"])
    edges = np.isin(lam, [e for b in res["bulks"] for e in b[:2]])

    idx = np.arange(0, lam.size, args.subset)
    t0 = time.perf_counter()
    rho_naive = naive_density(lam[idx], **PARAMS)
    t_naive_sub = time.perf_counter() - t0
    t_naive = t_naive_sub * lam.size / idx.size

    rho_fast_eps = stieltjes(lam[idx] + 1e-9j, **PARAMS)["q"].imag / np.pi
    diff = np.abs(rho_naive - rho[idx])
    e = edges[idx]
    out = {
        "params": {**PARAMS, "sigma_spectrum": [1.0], "n_lambda": int(lam.size)},
        "fast_seconds": t_fast,
        "fast_seconds_all_runs": times,
        "naive_seconds": t_naive,
        "naive_points_solved": int(idx.size),
        "naive_extrapolated": bool(idx.size < lam.size),
        "naive_seconds_measured": t_naive_sub,
        "speedup": t_naive / t_fast,
        "max_density_diff_interior": float(diff[~e].max()),
        "max_density_diff_edges": float(diff[e].max()) if e.any() else None,
        "max_density_diff_same_eps_all": float(np.abs(rho_naive - rho_fast_eps).max()),
        "max_density": float(rho.max()),
        "bulks": res["bulks"],
        "targets": {"speedup >= 30": t_naive / t_fast >= 30, "interior diff <= 1e-3": float(diff[~e].max()) <= 1e-3,
                    "same-eps diff <= 1e-3": float(np.abs(rho_naive - rho_fast_eps).max()) <= 1e-3},
    }
    if idx.size < lam.size:
        out["note"] = (f"naive method solved on {idx.size} of {lam.size} points (every {args.subset}-th); "
                       "its time is extrapolated linearly to all points")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
