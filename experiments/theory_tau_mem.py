"""τ_mem ∝ n in the random-features model (BUBM25 Fig. 5), theory vs simulated gradient descent.

Setting (the issue's Fig. 5): ψ_p = 64, t = 0.1, d = 100, ψ_n ∈ {4, 8, 16, 32},
Σ = I, tanh, Gaussian-equivalent U (Lemma C.1), one draw of W, X (seed).

For every ψ_n:

1. closed-form gradient-flow curves (SVD of H) at the logged τ;
2. full-batch gradient descent on the exact-expectation loss with the same
   W and data, fixed step dτ (τ = kη/d², i.e. learning rate η = dτ·d² on A),
   iterated in the eigenbasis of U (the exact GD iterates; losses computed
   from the iterate with the matrix formulas), logged at the same τ;
   for ψ_n = 8 additionally a GD run in the "kernel" representation
   B = Z Hᵀ, which uses no eigendecomposition at all (--kernel-tau-max);
3. (a) agreement: max relative deviation of train loss, test loss and score
   error between 1 and 2 for τ ∈ [1, τ_end] (τ_end ≫ τ_mem);
4. (b) τ_f = first τ at which the *simulated* gap L_test − L_train reaches
   the fraction f of its final value (value at τ_end, where it has
   converged), the log-log slope of τ_f against ψ_n, and the overlay of the
   gap curves rescaled by the predicted τ_mem = ψ_p/(Δ λ_min).

A supplementary closed-form run at larger ψ_p (--supp-psi-p, d = --supp-d)
shows how the slope depends on ψ_p/ψ_n.  Prints the numbers, writes
``tau_mem.png`` and ``tau_mem.json`` into --out.

Usage: python experiments/theory_tau_mem.py --out results/theory_tau_mem
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")  # one BLAS thread: faster on a shared machine
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from diffmem.theory.curves import crossing_time, learning_curves, simulate_gd  # noqa: E402
from diffmem.theory.rf import gaussian_equivalent, make_problem  # noqa: E402

FRACTIONS = (0.1, 0.25, 0.5, 0.75, 0.9)


def slope(x, y) -> float:
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output folder (created)")
    ap.add_argument("--d", type=int, default=100)
    ap.add_argument("--psi-p", type=float, default=64.0)
    ap.add_argument("--psi-n", type=str, default="4,8,16,32")
    ap.add_argument("--t", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dtau", type=float, default=0.1, help="τ per GD step (η = dτ d² on A)")
    ap.add_argument("--tau-end", type=float, default=4e5, help="last logged τ (the gap's 'final value')")
    ap.add_argument("--n-tau", type=int, default=200, help="logged τ points, log-spaced from τ = 1")
    ap.add_argument("--fraction", type=float, default=0.5, help="headline fraction f of the final gap")
    ap.add_argument("--kernel-tau-max", type=float, default=1.2e4,
                    help="kernel-representation GD for the second ψ_n up to this τ (0 to skip)")
    ap.add_argument("--kernel-dtau", type=float, default=0.5)
    ap.add_argument("--supp-psi-p", type=float, default=256.0, help="supplementary closed-form ψ_p (0 to skip)")
    ap.add_argument("--supp-d", type=int, default=50)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    psi_ns = [float(v) for v in args.psi_n.split(",")]
    taus = np.logspace(0.0, math.log10(args.tau_end), args.n_tau)
    report: dict = {"setting": {"d": args.d, "psi_p": args.psi_p, "t": args.t, "seed": args.seed, "dtau": args.dtau,
                                "lr_on_A": args.dtau * args.d**2, "tau_end": args.tau_end, "n_tau": args.n_tau},
                    "runs": []}
    runs = []
    print(f"setting: d={args.d} psi_p={args.psi_p} t={args.t} seed={args.seed}; GD step dtau={args.dtau} "
          f"(lr on A = {args.dtau * args.d ** 2:g}); logged tau in [1, {args.tau_end:g}], {args.n_tau} points")
    for psi_n in psi_ns:
        t0 = time.perf_counter()
        prob = make_problem(args.d, args.psi_p, psi_n, args.t, seed=args.seed)
        lc = learning_curves(prob, taus)
        t_cf = time.perf_counter() - t0
        sim = simulate_gd(prob, taus, dtau=args.dtau, basis="eigen", eig=lc["eig"])
        th = learning_curves(prob, sim["tau"], eig=lc["eig"])  # theory at the exact simulated τ
        rel = {k: float(np.max(np.abs(sim[k] / th[k] - 1))) for k in ("train_loss", "test_loss", "score_error")}
        where = {k: float(sim["tau"][np.argmax(np.abs(sim[k] / th[k] - 1))]) for k in rel}
        gap = sim["gap"]
        tf = {f: crossing_time(sim["tau"], gap, f) for f in FRACTIONS}
        tf[args.fraction] = crossing_time(sim["tau"], gap, args.fraction)
        conv = abs(gap[-1] - gap[-10]) / abs(gap[-1])
        run = {"psi_n": psi_n, "p": prob.p, "n": prob.n, "tau_mem_pred": lc["tau_mem"], "lambda_min": lc["lambda_min"],
               "tau_slow": lc["tau_slow"], "closed_form_s": t_cf, "gd_s": sim["seconds"], "gd_steps": int(sim["steps"][-1]),
               "max_rel_dev": rel, "at_tau": where, "final_gap": float(gap[-1]), "final_gap_change_last_decile": conv,
               "tau_f": {str(k): v for k, v in tf.items()}}
        runs.append((prob, lc, sim, th))
        report["runs"].append(run)
        print(f"psi_n={psi_n:g} (p={prob.p}, n={prob.n}): tau_mem_pred={lc['tau_mem']:.0f}  closed form {t_cf:.1f}s, "
              f"GD {sim['steps'][-1]} steps {sim['seconds']:.1f}s")
        print(f"   (a) max |sim/theory - 1| on tau in [1, {sim['tau'][-1]:g}]: train {rel['train_loss']:.2e} "
              f"(tau {where['train_loss']:.3g}), test {rel['test_loss']:.2e} (tau {where['test_loss']:.3g}), "
              f"score error {rel['score_error']:.2e} (tau {where['score_error']:.3g})")
        print(f"   final gap {gap[-1]:.4f} (relative change over the last logged decile {conv:.1e}); "
              + ", ".join(f"tau_{f:g}={tf[f]:.0f}" for f in FRACTIONS))
        sys.stdout.flush()

    # kernel-representation GD (no eigendecomposition) for the second ψ_n: independent check of (a)
    if args.kernel_tau_max > 0 and len(runs) > 1:
        prob, lc, _, _ = runs[1]
        kt = taus[taus <= args.kernel_tau_max]
        ge = gaussian_equivalent(prob, dense=False)
        sk = simulate_gd(ge, kt, dtau=args.kernel_dtau, basis="kernel")
        th = learning_curves(prob, sk["tau"], eig=lc["eig"])
        se = simulate_gd(prob, kt, dtau=args.kernel_dtau, basis="eigen", eig=lc["eig"])
        keys = ("train_loss", "test_loss", "score_error")
        relk = {k: float(np.max(np.abs(sk[k] / th[k] - 1))) for k in keys}
        same = max(float(np.max(np.abs(sk[k] - se[k]))) for k in ("train_loss", "test_loss"))
        report["kernel_check"] = {"psi_n": prob.psi_n, "tau_max": float(sk["tau"][-1]), "dtau": args.kernel_dtau,
                                  "steps": int(sk["steps"][-1]), "seconds": sk["seconds"], "max_rel_dev": relk,
                                  "max_abs_diff_kernel_vs_eigen_gd": same}
        print(f"(a') kernel-representation GD (B = Z H^T, no eigendecomposition), psi_n={prob.psi_n:g}, "
              f"dtau={args.kernel_dtau}, tau in [1, {sk['tau'][-1]:g}] ({sk['tau'][-1] / lc['tau_mem']:.1f} tau_mem), "
              f"{sk['steps'][-1]} steps {sk['seconds']:.0f}s: max |kernel GD - eigenbasis GD| (losses) {same:.1e}; "
              f"vs closed form: train {relk['train_loss']:.2e}, test {relk['test_loss']:.2e}, "
              f"score error {relk['score_error']:.2e} (discretisation at this larger step)")

    # (b) slopes and overlay
    pn = np.array(psi_ns)
    pred = np.array([r["tau_mem_pred"] for r in report["runs"]])
    print(f"(b) predicted tau_mem = psi_p/(Delta lambda_min): {np.round(pred).tolist()}, log-log slope {slope(pn, pred):.3f}")
    slopes = {}
    for f in sorted(set(FRACTIONS) | {args.fraction}):
        tf = np.array([r["tau_f"][str(f)] for r in report["runs"]])
        slopes[f] = slope(pn, tf)
        ratio = tf / pred
        mono = bool(np.all(np.diff(tf) > 0))
        print(f"   f={f:g}: tau_f {np.round(tf).tolist()}  slope {slopes[f]:.3f}  increasing={mono}  "
              f"tau_f/tau_mem_pred {np.round(ratio, 3).tolist()} (spread max/min {ratio.max() / ratio.min():.2f}x)")
    report["slopes"] = {str(k): v for k, v in slopes.items()}
    report["tau_mem_pred_slope"] = slope(pn, pred)
    # overlay spread of the normalised simulated gap g(τ)/g_final at fixed τ/τ_mem
    xs = np.array([0.1, 0.3, 1.0, 3.0, 10.0])
    norm = []
    for (prob, lc, sim, _), tm in zip(runs, pred):
        g = sim["gap"] / sim["gap"][-1]
        norm.append(np.interp(np.log(xs), np.log(sim["tau"] / tm), g))
    norm = np.array(norm)
    spread = norm.max(0) - norm.min(0)
    report["overlay"] = {"tau_over_tau_mem": xs.tolist(), "normalised_gap": norm.tolist(), "spread": spread.tolist()}
    print("   overlay: normalised simulated gap g/g_final at tau/tau_mem_pred = "
          + ", ".join(f"{x:g}: [{', '.join(f'{v:.2f}' for v in col)}] spread {s:.2f}"
                      for x, col, s in zip(xs, norm.T, spread)))
    f0 = args.fraction
    ok = 0.7 <= slopes[f0] <= 1.3
    print(f"   headline (f={f0:g}): slope {slopes[f0]:.3f} -> {'inside' if ok else 'OUTSIDE'} [0.7, 1.3]")
    report["headline"] = {"fraction": f0, "slope": slopes[f0], "inside_0.7_1.3": ok}

    if args.supp_psi_p > 0:
        st = np.logspace(0.0, 7.0, 300)
        tfs, preds = [], []
        for psi_n in psi_ns:
            pr = make_problem(args.supp_d, args.supp_psi_p, psi_n, args.t, seed=args.seed)
            lc = learning_curves(pr, st)
            tfs.append(crossing_time(st, lc["gap"], f0))
            preds.append(lc["tau_mem"])
        report["supplementary"] = {"d": args.supp_d, "psi_p": args.supp_psi_p, "tau_f": tfs, "tau_mem_pred": preds,
                                   "slope": slope(pn, tfs), "pred_slope": slope(pn, preds)}
        print(f"supplementary (closed form, d={args.supp_d}, psi_p={args.supp_psi_p:g}): tau_{f0:g} "
              f"{np.round(tfs).tolist()} slope {slope(pn, tfs):.3f}; predicted {np.round(preds).tolist()} "
              f"slope {slope(pn, preds):.3f}")

    # figure
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(19, 4.3))
    cmap = plt.get_cmap("viridis")
    for i, ((prob, lc, sim, th), tm) in enumerate(zip(runs, pred)):
        col = cmap(i / max(1, len(runs) - 1) * 0.85)
        lab = f"ψ_n={prob.psi_n:g}"
        ax[0].plot(lc["tau"], lc["test_loss"], "-", color=col, label=lab)
        ax[0].plot(lc["tau"], lc["train_loss"], "--", color=col)
        ax[0].plot(sim["tau"][::6], sim["test_loss"][::6], "o", ms=3, mfc="none", color=col)
        ax[0].plot(sim["tau"][::6], sim["train_loss"][::6], "x", ms=3, color=col)
        ax[1].plot(lc["tau"] / tm, lc["test_loss"], "-", color=col, label=lab)
        ax[1].plot(lc["tau"] / tm, lc["train_loss"], "--", color=col)
        ax[2].plot(sim["tau"] / tm, sim["gap"] / sim["gap"][-1], color=col, label=lab)
    ax[0].set_xlabel("τ = kη/d²")
    ax[0].set_title("theory (lines) vs GD (markers)")
    ax[0].set_ylabel("loss per dimension (test solid, train dashed)")
    ax[1].set_xlabel("τ / τ_mem (predicted)")
    ax[1].set_title("rescaled by τ_mem = ψ_p/(Δλ_min)")
    ax[2].set_xlabel("τ / τ_mem (predicted)")
    ax[2].set_title("simulated gap / final gap")
    ax[2].axhline(f0, color="k", lw=0.6, ls=":")
    for a in ax[:3]:
        a.set_xscale("log")
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    tf0 = [r["tau_f"][str(f0)] for r in report["runs"]]
    ax[3].loglog(pn, tf0, "o-", label=f"simulated τ_{f0:g} (slope {slopes[f0]:.2f})")
    ax[3].loglog(pn, pred, "s--", label=f"predicted τ_mem (slope {slope(pn, pred):.2f})")
    ax[3].loglog(pn, pred[0] * pn / pn[0], "k:", lw=0.8, label="∝ ψ_n")
    if "supplementary" in report:
        sp = report["supplementary"]
        ax[3].loglog(pn, sp["tau_f"], "^-", label=f"τ_{f0:g}, ψ_p={sp['psi_p']:g}, d={sp['d']} (slope {sp['slope']:.2f})")
    ax[3].set_xlabel("ψ_n = n/d")
    ax[3].set_ylabel("τ")
    ax[3].legend(fontsize=7)
    ax[3].grid(alpha=0.3, which="both")
    fig.tight_layout()
    png = os.path.join(args.out, "tau_mem.png")
    fig.savefig(png, dpi=120)
    plt.close(fig)
    with open(os.path.join(args.out, "tau_mem.json"), "w") as fh:
        json.dump(report, fh, indent=1)
    print(f"wrote {png} and tau_mem.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
