"""KK26's analytic error-prone toy model (SPEC §5): a generalisation gap per noise level without training.

Data: ``N`` points equally spaced on a circle of radius 10 (angles ``2πi/N``),
alternating train / validation (even indices train, odd validation; the
rotation by ``2π/N`` swaps the two sets, so the choice changes nothing in
distribution).  Two denoisers under the one protocol ``D(x [B, 2], sigma [B])``:

* the optimal denoiser over the training points, ``y*(x, σ) = Σ_i y_i
  softmax_i(−‖x − y_i‖²/(2σ²))`` -- :class:`diffmem.closed_form.EmpiricalDenoiser`;
* the error-prone denoiser :class:`ErrorProneDenoiser`
  ``y_δ(x, σ) = (δ² x + σ² y*(x, σ̃))/(σ² + δ²)``, ``σ̃² = σ² + δ²``: the exact
  posterior mean when each training point is smeared by ``N(0, δ² I)``.

Any sampler integrates its ODE ``dx/dσ = (x − y_δ)/σ`` (Heun on the EDM grid:
:func:`sample_toy`).  :func:`relative_gap` measures ``G(σ) = (e_val −
e_train)/e_train`` on the 64-point log-spaced σ grid of ``[0.002, 80]`` with the
*un-squared* L2 error ``e = mean_{i,k} ‖y_i − D(y_i + σ n_ik, σ)‖`` and K fixed
noise draws ``n_ik`` per point reused at every σ.  Its standard error treats
the ``(point, draw)`` errors of a set as independent (they are: each point has
its own draws; the points of a set are equivalent by rotation), delta method
for the ratio.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .closed_form import EmpiricalDenoiser
from .errors import DiffmemError

__all__ = ["RADIUS", "circle_points", "split_alternating", "ErrorProneDenoiser", "gap_sigmas", "noise_draws",
           "relative_gap", "toy_gap", "gap_table", "sample_toy", "check_toy_args", "plot_gap", "plot_flow",
           "plot_samples", "write_figures"]

RADIUS = 10.0
MAX_ROWS = 50_000_000  # N·K cap: the noise draws are held in memory ([N, K, 2] float64)


def check_toy_args(n_points: int = 20, delta: float = 1.6, draws: int = 1, radius: float = RADIUS,
                   seed: int = 0) -> None:
    """Raise :class:`DiffmemError` (one line) for inputs the toy model cannot take."""
    if isinstance(n_points, bool) or not isinstance(n_points, (int, np.integer)) or n_points < 2 or n_points % 2:
        raise DiffmemError(f"--n-points must be an even integer ≥ 2 (alternating train / validation), got {n_points}")
    if not (isinstance(delta, (int, float)) and math.isfinite(delta) and delta >= 0):
        raise DiffmemError(f"--delta must be a finite number ≥ 0, got {delta}")
    if isinstance(draws, bool) or not isinstance(draws, (int, np.integer)) or draws < 1:
        raise DiffmemError(f"--draws must be a positive integer, got {draws}")
    if n_points * draws > MAX_ROWS:
        raise DiffmemError(f"--n-points × --draws must be at most {MAX_ROWS:,}, got {n_points * draws:,}")
    if not (isinstance(radius, (int, float)) and math.isfinite(radius) and radius > 0):
        raise DiffmemError(f"--radius must be a finite number > 0, got {radius}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DiffmemError(f"--seed must be an integer ≥ 0, got {seed}")


def circle_points(n_points: int, radius: float = RADIUS) -> Tensor:
    """``[N, 2]`` float64: ``radius·(cos 2πi/N, sin 2πi/N)``, ``i = 0 … N−1``."""
    ang = 2 * math.pi * torch.arange(int(n_points), dtype=torch.float64) / int(n_points)
    return float(radius) * torch.stack([ang.cos(), ang.sin()], 1)


def split_alternating(points: Tensor) -> tuple[Tensor, Tensor]:
    """``(train = points[0::2], validation = points[1::2])``."""
    return points[0::2], points[1::2]


class ErrorProneDenoiser:
    """KK26's error-prone denoiser ``y_δ(x, σ) = (δ² x + σ² y*(x, σ̃))/(σ² + δ²)``, ``σ̃² = σ² + δ²``.

    ``train``: ``[n, d]`` training points; ``delta ≥ 0``.  ``x``: ``[B, d]``,
    ``sigma``: ``[B]`` (σ = 0 allowed when δ > 0: ``y_δ = x``).  ``δ = 0`` is
    the optimal (memorising) denoiser ``y*`` exactly.  It is the posterior
    mean ``E[y | x]`` for ``y ~ (1/n) Σ_i N(y_i, δ² I)``, ``x = y + σ n``:
    given component i, ``E[y | x, i] = (σ² y_i + δ² x)/(σ² + δ²)``, and the
    component weights are the softmax of ``x`` against ``N(y_i, σ̃² I)``.
    Computed in the training points' dtype (float64 from :func:`circle_points`).
    """

    def __init__(self, train: Tensor, delta: float, block: int = 4096):
        if not (math.isfinite(float(delta)) and float(delta) >= 0):
            raise DiffmemError(f"delta must be a finite number ≥ 0, got {delta}")
        self.delta = float(delta)
        self.optimal = EmpiricalDenoiser(train, block=block)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        dt = self.optimal.dtype
        xf = x.reshape(x.shape[0], -1).to(dt)
        s2 = torch.as_tensor(sigma).to(device=xf.device, dtype=dt).reshape(-1, 1) ** 2
        if self.delta == 0:
            return self.optimal(xf, s2.sqrt().reshape(-1)).reshape(x.shape).to(x.dtype)
        d2 = self.delta**2
        ystar = self.optimal(xf, (s2 + d2).sqrt().reshape(-1))
        return ((d2 * xf + s2 * ystar) / (s2 + d2)).reshape(x.shape).to(x.dtype)


def gap_sigmas(n: int = 64, sigma_min: float = 0.002, sigma_max: float = 80.0) -> np.ndarray:
    """The gap's σ grid: ``n`` log-spaced values over ``[sigma_min, sigma_max]`` (KK26: 64 over EDM's range)."""
    return np.geomspace(sigma_min, sigma_max, int(n))


def noise_draws(n_points: int, draws: int, seed: int, dim: int = 2) -> Tensor:
    """``[N, K, dim]`` float64 standard normals from one generator seeded ``seed`` (point-major)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn((int(n_points), int(draws), int(dim)), generator=g, dtype=torch.float64)


@torch.no_grad()
def _errors(den, points: Tensor, noise: Tensor, sigmas: np.ndarray, rows: int = 1 << 20) -> tuple[np.ndarray, np.ndarray]:
    """Un-squared L2 errors at each σ: mean and standard error over the ``(point, draw)`` pairs.

    ``points``: ``[P, d]``, ``noise``: ``[P, K, d]`` (the same draws at every σ).
    Returns ``(mean [S], stderr [S])``.
    """
    P, K, d = noise.shape
    y = points[:, None, :].expand(P, K, d).reshape(-1, d)
    nz = noise.reshape(-1, d).to(points.dtype)
    per = max(1, rows // y.shape[0])  # σ values per denoiser call
    means, ses = [], []
    for i in range(0, len(sigmas), per):
        sg = torch.as_tensor(np.asarray(sigmas[i : i + per]), dtype=points.dtype)
        x = (y[None] + sg[:, None, None] * nz[None]).reshape(-1, d)
        s = sg.repeat_interleave(y.shape[0])
        e = (den(x, s) - y.repeat(len(sg), 1)).norm(dim=1).reshape(len(sg), -1)
        means.append(e.mean(1))
        ses.append(e.std(1) / math.sqrt(e.shape[1]) if e.shape[1] > 1 else torch.full_like(e[:, 0], float("nan")))
    return torch.cat(means).numpy(), torch.cat(ses).numpy()


def relative_gap(den, train: Tensor, val: Tensor, noise_train: Tensor, noise_val: Tensor,
                 sigmas=None) -> dict:
    """``G(σ) = (e_val − e_train)/e_train`` of any denoiser, un-squared L2 error, fixed draws.

    ``train``: ``[P_t, d]``, ``val``: ``[P_v, d]``, ``noise_*``: ``[P, K, d]``
    reused at every σ; ``sigmas`` default :func:`gap_sigmas`.  Returns lists
    ``sigma, e_train, e_val, gap, gap_se`` and ``peak_gap, peak_gap_se,
    peak_sigma, peak_index`` (the largest G on the grid).
    """
    sg = gap_sigmas() if sigmas is None else np.asarray(sigmas, dtype=np.float64)
    et, et_se = _errors(den, train, noise_train, sg)
    ev, ev_se = _errors(den, val, noise_val, sg)
    gap = (ev - et) / et
    gap_se = (ev / et) * np.sqrt((ev_se / ev) ** 2 + (et_se / et) ** 2)
    i = int(np.argmax(gap))
    return {"sigma": sg.tolist(), "e_train": et.tolist(), "e_val": ev.tolist(), "gap": gap.tolist(),
            "gap_se": gap_se.tolist(), "peak_gap": float(gap[i]), "peak_gap_se": float(gap_se[i]),
            "peak_sigma": float(sg[i]), "peak_index": i}


def toy_gap(n_points: int = 20, delta: float = 1.6, draws: int = 2000, seed: int = 0,
            radius: float = RADIUS) -> dict:
    """The contract of ``diffmem toy gap``: KK26's relative gap on the 64-point EDM σ grid.

    Noise: :func:`noise_draws` ``(N, K, seed)``; point i uses row i, so train
    gets rows 0, 2, … and validation rows 1, 3, ….
    """
    check_toy_args(n_points, delta, draws, radius, seed)
    pts = circle_points(n_points, radius)
    tr, va = split_alternating(pts)
    nz = noise_draws(n_points, draws, seed)
    res = relative_gap(ErrorProneDenoiser(tr, delta), tr, va, nz[0::2], nz[1::2])
    return {"n_points": int(n_points), "n_train": len(tr), "n_val": len(va), "delta": float(delta),
            "draws": int(draws), "seed": int(seed), "radius": float(radius),
            "error": "un-squared L2, mean over points and fixed draws", **res}


def gap_table(deltas=(0.8, 1.6, 3.2), n_points=(20, 40), draws: int = 2000, seed: int = 0,
              radius: float = RADIUS) -> dict:
    """:func:`toy_gap` over ``deltas × n_points``; rows carry the peak, its σ and standard error."""
    deltas, n_points = list(deltas), list(n_points)
    if not deltas or not n_points:
        raise DiffmemError("the table needs at least one delta and one number of points")
    for n in n_points:
        for d in deltas:
            check_toy_args(n, d, draws, radius, seed)
    rows = []
    for n in n_points:
        for d in deltas:
            r = toy_gap(n, d, draws, seed, radius)
            rows.append({k: r[k] for k in ("n_points", "delta", "peak_gap", "peak_gap_se", "peak_sigma",
                                           "peak_index")} | {"gap": r["gap"]})
    return {"draws": int(draws), "seed": int(seed), "radius": float(radius), "sigma": gap_sigmas().tolist(),
            "rows": rows}


def sample_toy(n_points: int = 20, delta: float = 1.6, n_samples: int = 500, seed: int = 0, steps: int = 32,
               radius: float = RADIUS, record: bool = False):
    """Samples of the error-prone model: Heun on the EDM/Karras grid (``steps``, σ 80 → 0), seeds
    ``seed … seed + n_samples − 1``.  Returns ``samples [S, 2]`` (float64), and with ``record`` also
    ``(sigmas [T], states [T, S, 2])`` along the trajectory."""
    from .samplers import generate

    check_toy_args(n_points, delta, 1, radius, seed)
    if n_samples < 1 or steps < 1:
        raise DiffmemError(f"--samples and --steps must be positive, got {n_samples} and {steps}")
    tr, _ = split_alternating(circle_points(n_points, radius))
    traj, sig = [], []

    def cb(i, x, den_x, s):
        traj.append(x.clone())
        sig.append(float(s[0]))

    x = generate(ErrorProneDenoiser(tr, delta), (2,), list(range(seed, seed + n_samples)), sampler="heun",
                 steps=steps, dtype=torch.float64, batch_size=n_samples, callback=cb if record else None)
    if not record:
        return x
    return x, (np.array(sig + [0.0]), torch.stack(traj + [x]).numpy())


# ---------------------------------------------------------------------------
# figures (matplotlib Figure objects; written by diffmem.fileio.save_figure)


def plot_gap(results: list[dict]):
    """G(σ) of several :func:`toy_gap` results on one axis (±1 standard error band), peaks marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for r in results:
        s, g, e = np.array(r["sigma"]), np.array(r["gap"]), np.array(r["gap_se"])
        line, = ax.plot(s, g, label=f"N = {r['n_points']}, δ = {r['delta']:g}: peak {r['peak_gap']:.3f} "
                                    f"at σ = {r['peak_sigma']:.3g}")
        ax.fill_between(s, g - e, g + e, color=line.get_color(), alpha=0.25)
        ax.plot([r["peak_sigma"]], [r["peak_gap"]], "o", color=line.get_color())
    ax.axhline(0, c="k", lw=0.5)
    ax.set(xscale="log", xlabel="σ", ylabel="relative gap (e_val − e_train)/e_train",
           title=f"KK26 toy: un-squared L2 error, {results[0]['draws']} fixed draws per point")
    ax.legend(fontsize=8)
    return fig


def plot_flow(n_points: int = 20, delta: float = 1.6, sigmas=(0.3, 1.19, 4.0), seed: int = 0,
              n_traj: int = 40, radius: float = RADIUS):
    """Panels of the ODE's flow ``−dx/dσ = (y_δ − x)/σ`` (direction of motion as σ decreases; colour =
    speed, log scale) at each σ in ``sigmas``, plus Heun trajectories of ``n_traj`` samples (σ 80 → 0)."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure

    tr, va = split_alternating(circle_points(n_points, radius))
    den = ErrorProneDenoiser(tr, delta)
    lim = 1.5 * radius
    g = torch.linspace(-lim, lim, 29, dtype=torch.float64)
    X, Y = torch.meshgrid(g, g, indexing="xy")
    xy = torch.stack([X.ravel(), Y.ravel()], 1)
    fig = Figure(figsize=(4.6 * (len(sigmas) + 1), 4.6))
    axes = fig.subplots(1, len(sigmas) + 1)

    def points(ax):
        ax.scatter(tr[:, 0], tr[:, 1], c="k", s=30, zorder=3, label="train")
        ax.scatter(va[:, 0], va[:, 1], facecolors="none", edgecolors="r", s=30, zorder=3, label="validation")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal")

    for ax, s in zip(axes, sigmas):
        v = (den(xy, torch.full((len(xy),), float(s), dtype=torch.float64)) - xy) / s
        sp = v.norm(dim=1).clamp_min(1e-12)
        u = v / sp[:, None]
        ax.quiver(xy[:, 0], xy[:, 1], u[:, 0], u[:, 1], sp, norm=LogNorm(), cmap="viridis", scale=40, width=0.004)
        points(ax)
        ax.set_title(f"flow at σ = {s:g} (δ = {delta:g})")
    _, (sig, states) = sample_toy(n_points, delta, n_traj, seed, radius=radius, record=True)
    ax = axes[-1]
    for j in range(states.shape[1]):
        ax.plot(states[:, j, 0], states[:, j, 1], lw=0.6, alpha=0.6)
    ax.scatter(states[-1, :, 0], states[-1, :, 1], c="C1", s=10, zorder=4, label="samples")
    points(ax)
    ax.set_title(f"Heun trajectories, σ 80 → 0 ({len(sig) - 1} steps)")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig


def plot_samples(n_points: int = 20, deltas=(0.0, 0.8, 1.6, 3.2), n_samples: int = 500, seed: int = 0,
                 radius: float = RADIUS):
    """One panel per δ: samples of the error-prone model beside the train / validation points.

    Returns ``(figure, stats)``; ``stats`` per δ: the mean distance of a sample to its nearest
    training point and the fraction of samples nearer to a validation point than to any training point.
    """
    from matplotlib.figure import Figure

    tr, va = split_alternating(circle_points(n_points, radius))
    fig = Figure(figsize=(4.2 * len(deltas), 4.4))
    axes = np.atleast_1d(fig.subplots(1, len(deltas)))
    stats = []
    lim = 1.5 * radius
    for ax, d in zip(axes, deltas):
        x = sample_toy(n_points, d, n_samples, seed, radius=radius)
        dt, dv = torch.cdist(x, tr).min(1).values, torch.cdist(x, va).min(1).values
        st = {"delta": float(d), "mean_dist_train": float(dt.mean()), "frac_nearer_val": float((dv < dt).double().mean())}
        stats.append(st)
        ax.scatter(x[:, 0], x[:, 1], s=4, alpha=0.4, c="C0", label=f"{n_samples} samples")
        ax.scatter(tr[:, 0], tr[:, 1], c="k", s=30, zorder=3, label="train")
        ax.scatter(va[:, 0], va[:, 1], facecolors="none", edgecolors="r", s=30, zorder=3, label="validation")
        ax.set(xlim=(-lim, lim), ylim=(-lim, lim), aspect="equal",
               title=f"δ = {d:g}: dist. to train {st['mean_dist_train']:.2f}, nearer val {st['frac_nearer_val']:.2f}")
        ax.title.set_fontsize(9)
    axes[0].legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    return fig, stats


def write_figures(out, n_points: int = 20, delta: float = 1.6, draws: int = 2000, n_samples: int = 500,
                  seed: int = 0, radius: float = RADIUS) -> dict:
    """Write ``gap.png``, ``flow.png``, ``samples.png`` and ``figures.json`` into folder ``out``.

    The gap figure draws δ ∈ {δ/2, δ, 2δ} at N; the sample figure δ ∈ {0, δ/2, δ, 2δ}.
    """
    from pathlib import Path

    from .fileio import atomic_write_json, save_figure

    check_toy_args(n_points, delta, draws, radius, seed)
    if n_samples < 1:
        raise DiffmemError(f"--samples must be positive, got {n_samples}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DiffmemError(f"--out {out} is a file, not a folder")
    out.mkdir(parents=True, exist_ok=True)
    gaps = [toy_gap(n_points, d, draws, seed, radius) for d in (delta / 2, delta, 2 * delta)]
    save_figure(plot_gap(gaps), out / "gap.png", dpi=120)
    save_figure(plot_flow(n_points, delta, seed=seed, radius=radius), out / "flow.png", dpi=110)
    fig, stats = plot_samples(n_points, (0.0, delta / 2, delta, 2 * delta), n_samples, seed, radius)
    save_figure(fig, out / "samples.png", dpi=110)
    summary = {"n_points": n_points, "delta": delta, "draws": draws, "seed": seed, "radius": radius,
               "gaps": [{k: g[k] for k in ("delta", "peak_gap", "peak_gap_se", "peak_sigma")} for g in gaps],
               "samples": stats, "files": ["gap.png", "flow.png", "samples.png"]}
    atomic_write_json(out / "figures.json", summary)
    return summary
