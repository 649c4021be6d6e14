"""The random-features model as a generative model: f_mem over training time τ for several n (issue #13 item 4).

One RF score per noise level of a Karras σ grid (closed form at any τ, no
gradient descent; :mod:`diffmem.theory.generative`), Heun sampling with the
existing sampler, f_mem with the existing metric against the n training
points (N(0, I) data in d dimensions), and a Fréchet distance of the samples
to N(0, I) as sample quality.  Prints the table, the time at which f_mem
first reaches half its τ → ∞ value and its log-log slope in n, and the wall
time; writes ``generative.json`` and ``generative.png`` into --out.

    python experiments/theory_rf_generative.py --out results/theory_rf_generative
"""

from __future__ import annotations

import argparse
import math
import os
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from diffmem.fileio import atomic_write_json, save_figure  # noqa: E402
from diffmem.metrics.memorization import memorization_fraction  # noqa: E402
from diffmem.samplers import generate  # noqa: E402
from diffmem.schedules import karras_sigmas  # noqa: E402
from diffmem.theory.curves import crossing_time  # noqa: E402
from diffmem.theory.generative import RFDenoiser, fit_levels  # noqa: E402
from diffmem.theory.taumem import loglog_slope  # noqa: E402


def frechet_to_standard(S: np.ndarray) -> float:
    mu = S.mean(0)
    C = np.cov(S.T)
    ev = np.clip(np.linalg.eigvalsh((C + C.T) / 2), 0, None)
    return float(mu @ mu + np.sum(ev) + S.shape[1] - 2 * np.sum(np.sqrt(ev)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--d", type=int, default=8)
    ap.add_argument("--p", type=int, default=512)
    ap.add_argument("--n", default="4,16,64,1024,4096")
    ap.add_argument("--tau", default="10,100,1e3,1e4,1e5,1e6,1e7,inf")
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--sigma-min", type=float, default=0.005)
    ap.add_argument("--sigma-max", type=float, default=40.0)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--n-rows", type=int, default=8192, help="feature rows per level for U, V (Monte Carlo over ξ)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    t_start = time.perf_counter()
    sig = karras_sigmas(args.steps, sigma_min=args.sigma_min, sigma_max=args.sigma_max)
    ns = [int(v) for v in args.n.split(",")]
    taus = [float(v) for v in args.tau.split(",")]
    rows = []
    print(f"d={args.d} p={args.p} (psi_p={args.p / args.d:g}); {args.steps} Heun steps on Karras sigmas "
          f"[{args.sigma_min}, {args.sigma_max}]; {args.samples} samples; tau = {taus}")
    for n in ns:
        t0 = time.perf_counter()
        m = fit_levels(args.d, args.p / args.d, n, sig, seed=args.seed, n_rows=args.n_rows)
        fm, fd = [], []
        for tau in taus:
            S = generate(RFDenoiser(m, tau), (args.d,), list(range(args.samples)), sampler="heun", sigmas=sig,
                         dtype=torch.float64).numpy()
            fm.append(memorization_fraction(S, m.X, n_boot=0)["f_mem"])
            fd.append(frechet_to_standard(S))
        finite = [t for t in taus if math.isfinite(t)]
        f_inf = fm[-1] if math.isinf(taus[-1]) else fm[-1]
        t_half = crossing_time(finite, fm[:len(finite)], 0.5, ref=f_inf) if f_inf > 0.05 else float("nan")
        rows.append({"n": n, "f_mem": fm, "frechet": fd, "tau_half_fmem": t_half, "fit_seconds": m.seconds,
                     "seconds": time.perf_counter() - t0})
        print(f"n={n:5d} f_mem " + " ".join(f"{v:.3f}" for v in fm) + "  | FD " + " ".join(f"{v:.2f}" for v in fd)
              + f" | tau_half {t_half:.3g} ({rows[-1]['seconds']:.0f}s)", flush=True)
    slope = loglog_slope([r["n"] for r in rows], [r["tau_half_fmem"] for r in rows])
    secs = time.perf_counter() - t_start
    print(f"slope of tau_half(f_mem) against n (where f_mem(inf) > 0.05): {slope}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    xt = [t if math.isfinite(t) else 10 * max(t for t in taus if math.isfinite(t)) for t in taus]
    for r in rows:
        ax[0].plot(xt, r["f_mem"], "o-", label=f"n={r['n']}")
        ax[1].plot(xt, r["frechet"], "o-", label=f"n={r['n']}")
    for a, yl in zip(ax, ("f_mem", "Fréchet distance to N(0, I)")):
        a.set_xscale("log")
        a.set_xlabel("training time τ (last point: τ = ∞)")
        a.set_ylabel(yl)
        a.legend(fontsize=7)
    ax[1].set_yscale("log")
    fig.suptitle(f"random-features generative model, d={args.d}, p={args.p}")
    fig.tight_layout()
    save_figure(fig, os.path.join(args.out, "generative.png"), dpi=110)
    plt.close(fig)
    atomic_write_json(os.path.join(args.out, "generative.json"),
                      {"setting": vars(args), "tau": [t if math.isfinite(t) else None for t in taus], "rows": rows,
                       "slope_tau_half_vs_n": slope, "seconds": secs})
    print(f"wall time {secs:.0f} s; {args.out}/generative.json, generative.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
