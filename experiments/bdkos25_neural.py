"""BDKOS25's neural regularisation (SPEC §4), scaled to a small CPU: width, early stopping, Tikhonov c.

One command::

    .venv/bin/python experiments/bdkos25_neural.py --out runs/bdkos25_neural [--steps 5000] [--n-samples 1000] [--toy]

trains BDKOS25's network (``model.name=bdkos25_mlp``: ReLU MLP on [x, Fourier(t)],
depth 2; parametrisation ``bdkos25_vp``: VP SDE β(t) = 0.001 + t(3 − 0.001),
t ~ U(1e-5, 1), loss ``mean((σ s + z)²) + c mean(s²)``) on the 20 points
``bdkos25-2d`` with Adam lr 1e-3, full batch, through the ordinary
``train(cfg, run)`` loop, then samples each network with the ``rk45`` sampler
(scipy RK45, rtol = atol = 1e-5) on the VP probability-flow ODE from t = 1 to
t_end = 1e-5 (BDKOS25's variable ``bdkos25-vp``; latents z ~ N(0, I) at the VP
state, seeds 0..M−1), and tabulates the fraction of samples within 1e-2 (and
5e-2, 0.1, 0.5) of a training point (:func:`diffmem.bdkos25.fraction_within`,
bootstrap 95 % interval) and f_mem, against

  (a) width ∈ {16, 64, 256} (c = 0, last step),
  (b) training step (checkpoints of the width-256, c = 0 run: early stopping),
  (c) c ∈ {0, 1e-4, 1e-3, 1e-2} (width 256, last step).

``--toy`` (or ``--only-toy``) adds BDKOS25's image toy at 16×16 (theirs:
64×64): two images of single white squares (pixels in [−1, 1]); samples of the
closed-form empirical score (VP, RK45 to t = 1e-5) are one of the two images,
those of early-stopped / Tikhonov-regularised networks are not.  Writes
``toy.png`` (via :func:`diffmem.fileio.save_figure`) and ``toy.json``.

Differences from BDKOS25: far fewer steps than their 500k and no EMA (their
EMA 0.9999 would barely move in a few thousand steps); fewer latents when
``--n-samples`` < 1000.  Writes ``table.json`` in ``--out`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from diffmem.bdkos25 import fraction_within
from diffmem.config import resolve_config
from diffmem.data import load_dataset
from diffmem.metrics.memorization import memorization_fraction
from diffmem.rundir import Run
from diffmem.samplers import generate
from diffmem.schedules import bdkos25_sigma, bdkos25_vp_m
from diffmem.train import train

TOLS = (1e-2, 5e-2, 0.1, 0.5)
T_END = 1e-5


def run_config(width: int, c: float, steps: int, seed: int):
    return resolve_config(None, None, [
        "data=bdkos25-2d", "n=20", "model.name=bdkos25_mlp", f"model.width={width}", "model.blocks=2",
        "optim.name=adam", "optim.lr=1e-3", "batch_max=1000000", f"steps={steps}", f"seed={seed}", "threads=1",
        f"loss_tikhonov_c={c}", "checkpoints_per_decade=2",
        # cheap per-checkpoint evaluation (the table's sampling is done below with rk45)
        "eval.quality=", "eval.n_samples=16", "eval.sampler=ddim", "eval.sampler_steps=10", "eval.n_boot=0",
        "eval.loss_draws=1", "eval.save_samples=false"])


@torch.no_grad()
def measure(run: Run, step: int, train_pts: np.ndarray, n_samples: int) -> dict:
    den, _ = run.load_denoiser(step)
    den = den.double()
    s1, se = float(bdkos25_sigma(1.0, "vp")), float(bdkos25_sigma(T_END, "vp"))
    t0 = time.time()
    # rk45 on the VE form of BDKOS25's VP ODE: start at the VP latent z (VE state z/m(1)), end at t_end
    x = generate(den, (2,), list(range(n_samples)), sampler="rk45", sigmas=np.array([s1, se]),
                 batch_size=n_samples, dtype=torch.float64, variable="bdkos25-vp",
                 z_scale=1.0 / float(bdkos25_vp_m(1.0)))
    samples = (x * float(bdkos25_vp_m(T_END))).numpy()  # back to the VP state (m(t_end) ≈ 1)
    out = {"step": int(step), "sample_seconds": round(time.time() - t0, 1)}
    for tol in TOLS:
        fw = fraction_within(samples, train_pts, tol, n_boot=1000, seed=0)
        out[f"within_{tol:g}"] = fw["fraction"]
        out[f"within_{tol:g}_ci95"] = fw["ci95"]
    out["median_distance"] = float(np.median(fw["distance"]))
    fm = memorization_fraction(samples, train_pts, n_boot=1000, seed=0)
    out["f_mem"], out["f_mem_ci95"] = fm["f_mem"], fm["ci95"]
    return out


def two_squares(size: int = 16, side: int = 6) -> torch.Tensor:
    """BDKOS25's image toy, small: ``[2, 1, size, size]``, background −1, one white (+1) square each."""
    im = -torch.ones(3, 1, size, size)
    im[0, 0, 2 : 2 + side, 2 : 2 + side] = 1
    im[1, 0, size - 2 - side : size - 2, size - 2 - side : size - 2] = 1
    im[2, 0, 2 : 2 + side, size - 2 - side : size - 2] = 1  # held out (the test-loss probe only)
    return im


def toy(out: Path, steps: int, n_samples: int = 8, seed: int = 0) -> dict:
    from diffmem.bdkos25 import sample_closed_form
    from diffmem.data import Dataset
    from diffmem.fileio import save_figure
    from matplotlib.figure import Figure

    im = two_squares()
    ds = Dataset(name="two-squares-16", pool=im[:2], test=im[2:])
    y = im[:2].reshape(2, -1).double()
    rows = []
    emp = sample_closed_form(y, "empirical", "vp", n_samples, seed, T_END, tol=1e-2, n_boot=0)
    rows.append(("closed-form empirical", emp["samples"]))
    for c in (0.0, 1e-2):
        cfg = resolve_config(None, None, [
            "data=two-squares-16", "n=2", "model.name=bdkos25_mlp", "optim.name=adam", "optim.lr=1e-3",
            "batch_max=1000000", f"steps={steps}", f"seed={seed}", "threads=1", f"loss_tikhonov_c={c}",
            "checkpoints_per_decade=2", "eval.quality=", "eval.n_samples=4", "eval.sampler=ddim",
            "eval.sampler_steps=10", "eval.n_boot=0", "eval.loss_draws=1", "eval.save_samples=false"])
        run = train(cfg, out / f"toy_c{c:g}", progress=False, dataset=ds)
        early = [s for s in run.checkpoint_steps() if 50 <= s <= steps // 4][-2:] if c == 0 else []
        for st in early + [steps]:
            den, _ = run.load_denoiser(st)
            x = generate(den.double(), tuple(im.shape[1:]), list(range(seed, seed + n_samples)), sampler="rk45",
                         sigmas=np.array([float(bdkos25_sigma(1.0, "vp")), float(bdkos25_sigma(T_END, "vp"))]),
                         batch_size=n_samples, dtype=torch.float64, variable="bdkos25-vp",
                         z_scale=1.0 / float(bdkos25_vp_m(1.0)))
            rows.append((f"network c={c:g}, step {st}", (x * float(bdkos25_vp_m(T_END))).reshape(n_samples, -1)
                         .numpy()))
    res = []
    fig = Figure(figsize=(1.3 * n_samples, 1.5 * len(rows)))
    axs = fig.subplots(len(rows), n_samples, squeeze=False)
    for i, (name, smp) in enumerate(rows):
        dist = np.linalg.norm(smp[:, None, :] - y.numpy()[None], axis=-1).min(1) / np.sqrt(y.shape[1])
        res.append({"model": name, "rms_distance_to_nearest": dist.tolist(),
                    "fraction_within_rms_0.01": float((dist <= 1e-2).mean())})
        for j in range(n_samples):
            ax = axs[i, j]
            ax.imshow(smp[j].reshape(im.shape[2:]), cmap="gray", vmin=-1, vmax=1)
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{dist[j]:.2g}", fontsize=7)
        axs[i, 0].set_ylabel(name, fontsize=7)
    fig.suptitle("two 16x16 squares, VP RK45 to t=1e-5 (title: RMS distance to the nearest training image)",
                 fontsize=9)
    fig.tight_layout()
    save_figure(fig, out / "toy.png", dpi=100)
    (out / "toy.json").write_text(json.dumps({"steps": steps, "n_samples": n_samples, "rows": res}, indent=2))
    for r in res:
        print(f"  toy {r['model']:32s} within RMS 1e-2: {r['fraction_within_rms_0.01']:.2f}  median RMS distance "
              f"{np.median(r['rms_distance_to_nearest']):.3g}")
    return {"rows": res}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bdkos25_neural")
    ap.add_argument("--steps", type=int, default=5000)
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--widths", default="16,64,256")
    ap.add_argument("--cs", default="0,1e-4,1e-3,1e-2")
    ap.add_argument("--toy", action="store_true", help="also the two-image toy (toy.png, toy.json)")
    ap.add_argument("--only-toy", action="store_true", help="only the two-image toy")
    ap.add_argument("--toy-steps", type=int, default=2000)
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.only_toy:
        toy(out, a.toy_steps, seed=a.seed)
        return 0
    widths = [int(w) for w in a.widths.split(",")]
    cs = [float(c) for c in a.cs.split(",")]
    train_pts = load_dataset("bdkos25-2d").pool.numpy().astype(np.float64)
    jobs = sorted({(w, 0.0) for w in widths} | {(max(widths), c) for c in cs})
    runs, t_train = {}, {}
    for w, c in jobs:
        t0 = time.time()
        runs[(w, c)] = train(run_config(w, c, a.steps, a.seed), out / f"w{w}_c{c:g}", progress=False)
        t_train[(w, c)] = round(time.time() - t0, 1)
        print(f"trained width {w}, c {c:g}: {t_train[(w, c)]} s", flush=True)
    rows = {"width": [], "steps": [], "c": []}
    for w in widths:
        rows["width"].append({"width": w, "c": 0.0, **measure(runs[(w, 0.0)], a.steps, train_pts, a.n_samples)})
    big = runs[(max(widths), 0.0)]
    for st in [s for s in big.checkpoint_steps() if s >= 10]:
        r = rows["width"][-1] if st == a.steps else measure(big, st, train_pts, a.n_samples)
        rows["steps"].append({"width": max(widths), "c": 0.0, **{**r, "step": st}})
    for c in cs:
        r = rows["width"][-1] if c == 0 else measure(runs[(max(widths), c)], a.steps, train_pts, a.n_samples)
        rows["c"].append({"width": max(widths), "c": c, **r})
    settings = {"data": "bdkos25-2d (20 points)", "model": "bdkos25_mlp (ReLU MLP, 2 hidden layers, Fourier t dim 8 "
                "scale 1)", "parametrisation": "bdkos25_vp", "optim": "adam lr 1e-3, full batch, no EMA",
                "steps": a.steps, "seed": a.seed, "n_samples": a.n_samples, "latent_seeds": f"0..{a.n_samples - 1}",
                "sampler": "rk45 (rtol = atol = 1e-5), VP PF-ODE t 1 -> 1e-5", "tolerances": list(TOLS),
                "train_seconds": {f"w{w}_c{c:g}": s for (w, c), s in t_train.items()}}
    (out / "table.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    print(json.dumps(settings))
    hdr = "  ".join(f"within {t:g}" for t in TOLS)
    for name, rs in rows.items():
        print(f"\n({name}) fraction of {a.n_samples} samples within tol of a training point [95% CI at 1e-2]")
        print(f"  {'width':>5} {'c':>7} {'step':>6}  {hdr}   f_mem   median dist")
        for r in rs:
            ci = r["within_0.01_ci95"]
            print(f"  {r['width']:5d} {r['c']:7.0e} {r['step']:6d}  " + "  ".join(
                f"{r[f'within_{t:g}']:{len(f'within {t:g}')}.3f}" for t in TOLS)
                + f"   {r['f_mem']:.3f}   {r['median_distance']:.3g}   [{ci[0]:.3f}, {ci[1]:.3f}]")
    print(f"\ntable.json in {out}")
    if a.toy:
        toy(out, a.toy_steps, seed=a.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
