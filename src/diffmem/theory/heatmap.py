"""Maps over (ψ_n, ψ_p): generalisation gap at given τ and predicted τ_mem (BUBM25 Fig. 5C).

For each grid point a Gaussian-equivalent problem is drawn at dimension d
(p = round(ψ_p d), n = round(ψ_n d)) and the closed-form gradient-flow curves
of :mod:`diffmem.theory.curves` are evaluated at the requested τ (τ = kη/d²);
the gap is ``L_gen = L_test − L_train``.  Cost per point: one thin SVD of
H [p, n+d], O(p (n+d)²).  The default d = 50 with ψ up to 128 keeps the
largest H at 6400 × 1650 (a few seconds); the map is a finite-d estimate
whose fluctuations shrink like 1/√d — average seeds with ``n_seeds``.

The predicted map is ``τ_mem = ψ_p/(Δ_t λ_min)``, ``λ_min = s_t² + v_t²
(1 − √(ψ_p/ψ_n))²`` (Thm 3.2), which needs no sampling.
"""

from __future__ import annotations

import math
import time
from typing import Sequence

import numpy as np

from ..errors import DiffmemError
from ..fileio import save_figure
from .constants import rf_constants
from .curves import learning_curves, predicted_timescales
from .rf import make_problem

__all__ = ["gap_heatmap", "tau_mem_map", "plot_heatmap"]

DEFAULT_PSI_N = (1, 2, 4, 8, 16, 32)
DEFAULT_PSI_P = (2, 4, 8, 16, 32, 64, 128)


def _grid(name: str, values) -> np.ndarray:
    v = np.asarray(list(values), dtype=float).ravel()
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise DiffmemError(f"{name} must be a non-empty list of positive numbers, got {list(v)}")
    return v


def tau_mem_map(psi_n: Sequence[float] = DEFAULT_PSI_N, psi_p: Sequence[float] = DEFAULT_PSI_P, t: float = 0.1,
                sigma_x: float = 1.0, act: str = "tanh") -> dict:
    """Predicted τ_mem [len(psi_p), len(psi_n)] (rows ψ_p, columns ψ_n) and λ_min."""
    pn, pp = _grid("psi_n", psi_n), _grid("psi_p", psi_p)
    k = rf_constants(t, sigma_x=sigma_x, act=act)
    tm = np.empty((pp.size, pn.size))
    lm = np.empty_like(tm)
    for i, a in enumerate(pp):
        for j, b in enumerate(pn):
            ts = predicted_timescales(a, b, k)
            tm[i, j], lm[i, j] = ts["tau_mem"], ts["lambda_min"]
    return {"psi_n": pn, "psi_p": pp, "t": float(t), "tau_mem": tm, "lambda_min": lm}


def gap_heatmap(psi_n: Sequence[float] = DEFAULT_PSI_N, psi_p: Sequence[float] = DEFAULT_PSI_P,
                taus: Sequence[float] = (1e3, 1e4), t: float = 0.1, d: int = 50, seed: int = 0, n_seeds: int = 1,
                sigma_spectrum: Sequence[float] = (1.0,), sigma_weights: Sequence[float] | None = None,
                act: str = "tanh") -> dict:
    """Generalisation gap ``L_test − L_train`` of the closed-form curves.

    Returns ``gap`` [len(taus), len(psi_p), len(psi_n)] (mean over
    ``n_seeds`` seeds), ``train_loss`` and ``test_loss`` of the same shape,
    the predicted ``tau_mem`` [len(psi_p), len(psi_n)], the axes and
    ``seconds``.  Rows are ψ_p, columns ψ_n.
    """
    pn, pp = _grid("psi_n", psi_n), _grid("psi_p", psi_p)
    tt = np.asarray(list(taus), dtype=float).ravel()
    if tt.size == 0 or not np.all(np.isfinite(tt)) or np.any(tt < 0):
        raise DiffmemError(f"taus must be non-negative finite numbers, got {list(tt)}")
    if not (isinstance(n_seeds, (int, np.integer)) and n_seeds >= 1):
        raise DiffmemError(f"n_seeds must be a positive integer, got {n_seeds!r}")
    t0 = time.perf_counter()
    train = np.zeros((tt.size, pp.size, pn.size))
    test = np.zeros_like(train)
    for i, a in enumerate(pp):
        for j, b in enumerate(pn):
            for s in range(n_seeds):
                prob = make_problem(d, a, b, t, sigma_spectrum=sigma_spectrum, sigma_weights=sigma_weights,
                                    seed=seed + s, act=act)
                lc = learning_curves(prob, tt)
                train[:, i, j] += lc["train_loss"] / n_seeds
                test[:, i, j] += lc["test_loss"] / n_seeds
    tm = tau_mem_map(pn, pp, t=t, act=act, sigma_x=math.sqrt(float(np.mean(
        make_problem(d, 1, 1, t, sigma_spectrum=sigma_spectrum, sigma_weights=sigma_weights).sigma_diag))))
    return {"psi_n": pn, "psi_p": pp, "tau": tt, "t": float(t), "d": int(d), "n_seeds": int(n_seeds),
            "gap": test - train, "train_loss": train, "test_loss": test, "tau_mem": tm["tau_mem"],
            "seconds": time.perf_counter() - t0}


def plot_heatmap(result: dict, path) -> str:
    """PNG: one panel of the gap per τ (Fig. 5C in spirit) and one of log10 predicted τ_mem.

    Cells are annotated with their value; the line ψ_p = ψ_n (n = p, the
    architectural threshold n*) is drawn for reference.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pn, pp = np.asarray(result["psi_n"]), np.asarray(result["psi_p"])
    gaps = np.asarray(result["gap"]) if "gap" in result else np.zeros((0, pp.size, pn.size))
    taus = np.asarray(result.get("tau", []))
    npan = gaps.shape[0] + 1
    fig, axes = plt.subplots(1, npan, figsize=(4.6 * npan, 4.2), squeeze=False)
    axes = axes[0]
    ext = dict(origin="lower", aspect="auto")

    def decorate(ax, im, title):
        ax.set_xticks(range(pn.size), [f"{v:g}" for v in pn])
        ax.set_yticks(range(pp.size), [f"{v:g}" for v in pp])
        ax.set_xlabel("ψ_n = n/d")
        ax.set_ylabel("ψ_p = p/d")
        ax.set_title(title)
        # ψ_p = ψ_n in index coordinates (log-spaced axes assumed monotone)
        xs = np.interp(np.log(pp), np.log(pn), np.arange(pn.size), left=np.nan, right=np.nan)
        ax.plot(xs, np.arange(pp.size), "w--", lw=1)
        fig.colorbar(im, ax=ax, fraction=0.046)

    vmax = float(np.nanmax(gaps)) if gaps.size else 1.0
    for k in range(gaps.shape[0]):
        ax = axes[k]
        im = ax.imshow(gaps[k], cmap="magma", vmin=min(0.0, float(np.nanmin(gaps))), vmax=vmax, **ext)
        for i in range(pp.size):
            for j in range(pn.size):
                ax.text(j, i, f"{gaps[k, i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="w" if gaps[k, i, j] < 0.6 * vmax else "k")
        decorate(ax, im, f"L_test − L_train at τ = {taus[k]:g}")
    ax = axes[-1]
    lt = np.log10(np.asarray(result["tau_mem"]))
    im = ax.imshow(lt, cmap="viridis", **ext)
    for i in range(pp.size):
        for j in range(pn.size):
            ax.text(j, i, f"{lt[i, j]:.1f}", ha="center", va="center", fontsize=6, color="w")
    decorate(ax, im, "log10 predicted τ_mem")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    plt.close(fig)
    return str(path)
