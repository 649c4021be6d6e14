"""Closed-form learning curves vs gradient-descent simulation (random-features model).

Setting (issue 3): d = 100, ψ_p = 64, ψ_n = 8, t = 0.1, Gaussian-equivalent U,
200 log-spaced τ points in [1, τ_max] with τ_max = 10 τ_mem (predicted) by
default.  Times, from one run and the same W and data:

* closed form: problem + H + thin SVD of H [6400 × 900] + 200 τ points;
* GD (kernel representation): full-batch GD on the exact-expectation loss,
  B = A/√p = Z Hᵀ, Z [d, n+d], one (n+d)² matmul per step, no
  eigendecomposition — the honest "simulate it" baseline; default step
  dτ = 0.25 ψ_p/(Δ λ_max) (λ_max by power iteration), learning rate on A
  η = dτ d²;  this is the headline ratio;
* GD (eigenbasis): the same GD iterates in the eigenbasis of U (needs the
  SVD first; O(n+d) per step);
* GD (direct, on A [d, p] with products by U through H): timed for
  --direct-steps steps only and extrapolated to the full run (labelled).

Usage: python bench/bench_theory_curves.py [--tau-max T] [--threads 1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--psi-p", type=float, default=64.0)
    ap.add_argument("--psi-n", type=float, default=8.0)
    ap.add_argument("--t", type=float, default=0.1)
    ap.add_argument("--n-tau", type=int, default=200)
    ap.add_argument("--tau-max", type=float, default=None, help="default: 10 × predicted τ_mem")
    ap.add_argument("--dtau", type=float, default=None, help="GD step in τ (default 0.25 ψ_p/(Δ λ_max))")
    ap.add_argument("--direct-steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=1, help="BLAS threads (1 is fastest on a shared machine)")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    import numpy as np

    from diffmem.theory.curves import lambda_max, learning_curves, predicted_timescales, simulate_gd
    from diffmem.theory.rf import gaussian_equivalent, make_problem

    def build():
        prob = make_problem(args.d, args.psi_p, args.psi_n, args.t, seed=0)
        return prob, gaussian_equivalent(prob, dense=False)

    prob, _ = build()
    ts = predicted_timescales(prob.psi_p, prob.psi_n, prob.consts)
    tau_max = args.tau_max or 10 * ts["tau_mem"]
    taus = np.logspace(0, math.log10(tau_max), args.n_tau)
    print(f"d={args.d} psi_p={args.psi_p:g} psi_n={args.psi_n:g} t={args.t} (p={prob.p}, n={prob.n}); "
          f"{args.n_tau} tau points in [1, {tau_max:.4g}] (tau_mem_pred={ts['tau_mem']:.0f}); BLAS threads={args.threads}")

    t0 = time.perf_counter()
    prob, ge = build()
    lc = learning_curves(ge, taus)
    t_cf = time.perf_counter() - t0
    print(f"closed form (problem + H + SVD of H {prob.p}x{prob.n + prob.d} + {args.n_tau} tau): {t_cf:.2f} s")
    sys.stdout.flush()

    t0 = time.perf_counter()
    prob, ge = build()
    lam_max = lambda_max(ge)
    dtau = args.dtau or 0.25 * prob.psi_p / (prob.delta * lam_max)
    sk = simulate_gd(ge, taus, dtau=dtau, basis="kernel")
    t_gd = time.perf_counter() - t0
    steps = int(sk["steps"][-1])
    th = learning_curves(ge, sk["tau"], eig=lc["eig"])
    dev = max(float(np.max(np.abs(sk[k] / th[k] - 1))) for k in ("train_loss", "test_loss"))
    print(f"GD, kernel representation (dtau={dtau:.3g}, lr on A={dtau * args.d ** 2:.4g}, {steps} steps): {t_gd:.2f} s "
          f"({t_gd / steps * 1e3:.2f} ms/step); max rel dev from closed form (train/test, tau>=1) {dev:.2e}")
    print(f"RATIO GD(kernel) / closed form = {t_gd / t_cf:.1f}x")
    sys.stdout.flush()

    t0 = time.perf_counter()
    prob, ge = build()
    se = simulate_gd(ge, taus, dtau=dtau, basis="eigen")
    t_eig = time.perf_counter() - t0
    print(f"GD, eigenbasis (SVD + {steps} steps): {t_eig:.2f} s  (ratio to closed form {t_eig / t_cf:.1f}x)")

    n_dir = min(args.direct_steps, steps)
    sd = simulate_gd(ge, [n_dir * dtau], dtau=dtau, basis="direct")
    per = sd["seconds"] / n_dir
    print(f"GD, direct on A [d, p] (products through H): {per * 1e3:.1f} ms/step over {n_dir} steps -> "
          f"EXTRAPOLATED {per * steps:.0f} s for {steps} steps (ratio {per * steps / t_cf:.0f}x, not run)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
