"""The random-features score model as a generative model (issue #13 item 4).

One random-features score ``s_k(x_t) = (A_k/√p) σ(W x_t/√d)`` per noise level
t_k of a σ grid (t_k = ``sigma_to_ou_t(σ_k)``; one frozen W [p, d] and one
training set X [n, d] ~ N(0, I) shared by all levels, from
:func:`diffmem.theory.rf.make_problem` with one seed), each trained on its own
loss (:mod:`.rf`) with the **real** features: U_k, V_k from
:func:`~diffmem.theory.rf.real_matrices` (the ξ expectation by Monte Carlo,
``n_rows`` feature rows per level).  Gradient flow from A = 0 has the closed
form (SPEC §2) ``B_k(τ) = A_k/√p = −(1/√Δ_k) V_kᵀ U_k⁻¹ (I − e^{−2Δ_k U_k τ/ψ_p})``,
evaluated from one eigendecomposition of U_k per level at any τ (τ = ∞:
U_k⁻¹), so no gradient descent is needed to generate at any training time.

:class:`RFDenoiser` wraps the levels under diffmem's one protocol
``D(x, σ) → E[y | x]``: with ``t = sigma_to_ou_t(σ)`` and the OU state
``x_t = vp_scale(σ) x`` (conversions of :mod:`diffmem.schedules`), Tweedie
gives ``D = e^{t} (x_t + Δ_t s_k(x_t))``, s_k the level nearest to σ in log σ.
Sample with the σ grid the levels were built on (``model.sigmas``) so every
evaluation hits its own level.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import DiffmemError
from ..schedules import sigma_to_ou_t, vp_scale
from .constants import activation
from .rf import make_problem, real_matrices

def _bias_rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 17]))  # apart from rf.py's streams 0-4, 100+


__all__ = ["RFGenerative", "fit_levels", "RFDenoiser", "closed_form_B", "check_settings", "sample_metrics",
           "generative_curve", "phase_diagram", "plot_generative", "plot_phase", "curve_lines", "phase_lines"]


@dataclass
class RFGenerative:
    """Eigen-systems of U_k per level: ``lam`` [K, p], ``Q`` [K, p, p], ``C = Qᵀ V`` [K, p, d]."""

    sigmas: np.ndarray  # [K] the positive σ of the grid, decreasing
    ts: np.ndarray  # [K] OU times
    deltas: np.ndarray  # [K]
    lam: np.ndarray
    Q: np.ndarray
    C: np.ndarray
    W: np.ndarray  # [p, d]
    X: np.ndarray  # [n, d] training set
    psi_p: float
    act: str
    seconds: float
    b: np.ndarray | None = None  # [p] feature biases (None: BUBM25's bias-free model)

    @property
    def d(self) -> int:
        return self.W.shape[1]

    @property
    def p(self) -> int:
        return self.W.shape[0]

    @property
    def n(self) -> int:
        return self.X.shape[0]


def closed_form_B(lam: np.ndarray, Q: np.ndarray, C: np.ndarray, delta: float, psi_p: float, tau: float) -> np.ndarray:
    """``B(τ) = A(τ)/√p`` [d, p] of the gradient flow from 0 (τ = inf: −Vᵀ U⁺/√Δ).

    Eigenvalues at or below ``p·eps·max λ`` (e.g. dead ReLU features) are the null space of U: the flow
    from A = 0 never moves there at τ = ∞ (pseudo-inverse, the minimum-norm limit) and moves linearly,
    ``D = 2Δτ/ψ_p``, at finite τ (the λ → 0 limit of ``(1 − e^{−2Δλτ/ψ_p})/λ``)."""
    lam = np.asarray(lam, float)
    null = lam <= lam.size * np.finfo(float).eps * max(float(np.max(np.abs(lam))), 1e-300)
    safe = np.where(null, 1.0, lam)
    if math.isinf(tau):
        D = np.where(null, 0.0, 1.0 / safe)
    else:
        D = np.where(null, 2.0 * delta * tau / psi_p, -np.expm1(-2.0 * delta * safe * tau / psi_p) / safe)
    return -((Q * D[None, :]) @ C).T / math.sqrt(delta)


def fit_levels(d: int, psi_p: float, n: int, sigmas: Sequence[float], seed: int = 0, n_rows: int = 8192,
               act: str = "tanh", bias: float = 0.0) -> RFGenerative:
    """Build one level per positive σ of ``sigmas`` (see the module doc); cost K · n_rows · p² flops.

    ``bias > 0`` (not BUBM25's model) gives every feature a fixed random bias b_j ~ N(0, bias²) (seeded,
    shared by all levels): σ(W x/√d + b) is no longer odd, which lifts the f_mem ≤ ~1/2 cap below."""
    sg = np.asarray(sigmas, float)
    sg = sg[sg > 0]
    if sg.size == 0 or not np.all(np.isfinite(sg)):
        raise DiffmemError("sigmas must hold at least one positive finite noise level")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise DiffmemError(f"n must be a positive integer, got {n!r}")
    if not (math.isfinite(bias) and bias >= 0):
        raise DiffmemError(f"bias must be a non-negative number, got {bias!r}")
    t0 = time.perf_counter()
    lams, Qs, Cs, ts, deltas = [], [], [], [], []
    prob = b = None
    for s in sg:
        t = float(sigma_to_ou_t(s))
        prob = make_problem(d, psi_p, n / d, t, seed=seed, act=act)
        if b is None:
            b = _bias_rng(seed).standard_normal(prob.p) * bias if bias > 0 else None
        m = real_matrices(prob, n_noise=max(2, int(math.ceil(n_rows / n))), tilde=False, bias=b)
        lam, Q = np.linalg.eigh(m["U"])
        lams.append(lam)
        Qs.append(Q)
        Cs.append(Q.T @ m["V"])
        ts.append(t)
        deltas.append(prob.delta)
    return RFGenerative(sigmas=sg, ts=np.array(ts), deltas=np.array(deltas), lam=np.array(lams), Q=np.array(Qs),
                        C=np.array(Cs), W=prob.W, X=prob.X, psi_p=prob.psi_p, act=act,
                        seconds=time.perf_counter() - t0, b=b)


class RFDenoiser:
    """``D(x [B, d], σ [B]) → [B, d]`` from the levels of ``model`` at training time ``tau`` (inf allowed)."""

    def __init__(self, model: RFGenerative, tau: float):
        if not (tau > 0):
            raise DiffmemError(f"tau must be positive (or inf), got {tau!r}")
        self.model = model
        self.tau = float(tau)
        self.B = [closed_form_B(model.lam[k], model.Q[k], model.C[k], model.deltas[k], model.psi_p, self.tau)
                  for k in range(model.sigmas.size)]
        self._act = activation(model.act)[0]
        self._logs = np.log(model.sigmas)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        m = self.model
        xs = x.detach().cpu().double().numpy().reshape(x.shape[0], -1)
        if xs.shape[1] != m.d:
            raise DiffmemError(f"the random-features model has d = {m.d}, got states of size {xs.shape[1]}")
        sg = sigma.detach().cpu().double().numpy().reshape(-1)
        out = np.empty_like(xs)
        for s in np.unique(sg):
            rows = sg == s
            k = int(np.argmin(np.abs(self._logs - math.log(s))))
            t = float(sigma_to_ou_t(s))
            xt = xs[rows] * float(vp_scale(s))
            pre = xt @ m.W.T / math.sqrt(m.d)
            score = self._act(pre if m.b is None else pre + m.b) @ self.B[k].T
            out[rows] = math.exp(t) * (xt - math.expm1(-2.0 * t) * score)  # e^t (x_t + Δ s), Δ = −expm1(−2t)
        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device).reshape(x.shape)


# --------------------------------------------------------------------------- f_mem and quality against τ, n, p
#
# Why f_mem saturates near 1/2 (issue #13 item 3, measured in the README): with an odd activation (tanh,
# erf) and no bias, s_A(−x) = −s_A(x) at every level, so the model can only represent odd scores.  The
# L²(P_t) projection of the empirical score onto odd functions is exactly the score of the symmetrised
# measure (P_t + P_t∘(−1))/2, and the noisy symmetrised empirical measure is the noised {±x_i}: at τ = ∞
# and p ≫ n the model memorises the 2n points ±x_i, and half of its copies are mirror images, which the
# ratio test against X does not count.  ``f_mem_pm`` applies the same test (threshold 1/3 unchanged)
# against ±X, the set the model can memorise; ``f_mem`` (against X) stays the reported memorisation.
# ReLU without bias has the other symmetry, s(λx) = λ s(x) for λ > 0: it can only collapse samples onto
# rays through the x_i.  Random feature biases (``bias`` > 0, not BUBM25's model) remove both.

_MAX_LEVEL_BYTES = 2e9  # Q [K, p, p] float64


def check_settings(d, p, ns, taus, samples, steps, sigma_min, sigma_max, n_rows, seed, act="tanh",
                   bias=0.0) -> None:
    """Refuse bad settings with one-line :class:`DiffmemError` before anything is computed or written."""
    def pos_int(v, name, lo=1):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise DiffmemError(f"{name} must be an integer >= {lo}, got {v!r}")

    for v, name, lo in ((d, "d", 1), (samples, "samples", 2), (steps, "steps", 2), (n_rows, "n_rows", 1),
                        (seed, "seed", 0)):
        pos_int(v, name, lo)
    for name, vals in (("p", p), ("n", ns)):
        if len(vals) == 0:
            raise DiffmemError(f"the list of {name} is empty")
        for v in vals:
            pos_int(v, f"each {name}", 2 if name == "n" else 1)
    if len(taus) == 0 or any(not (t > 0) for t in taus):  # nan fails too
        raise DiffmemError(f"tau must be a non-empty list of positive times (inf allowed), got {list(taus)}")
    if not (0 < sigma_min < sigma_max < math.inf):
        raise DiffmemError(f"need 0 < sigma_min < sigma_max < inf, got {sigma_min!r}, {sigma_max!r}")
    activation(act)
    if not (isinstance(bias, (int, float)) and math.isfinite(bias) and bias >= 0):
        raise DiffmemError(f"bias must be a non-negative number, got {bias!r}")
    if steps * max(p) ** 2 * 8 > _MAX_LEVEL_BYTES:
        raise DiffmemError(f"{steps} levels of p = {max(p)} need {steps * max(p) ** 2 * 8 / 1e9:.1f} GB; "
                           "reduce p or steps")


def sample_metrics(model: RFGenerative, tau: float, sigmas, samples: int, seed: int) -> dict:
    """Heun samples [samples, d] of the model at τ: ``f_mem`` (ratio test 1/3 against X), ``f_mem_pm``
    (against ±X, see above) and ``frechet`` (Fréchet distance of the samples to the data law N(0, I))."""
    from ..metrics.memorization import memorization_fraction
    from ..metrics.quality import frechet_distance
    from ..samplers import generate

    seeds = [int(seed) * 1_000_003 + j for j in range(samples)]  # per-sample seeds (same samples at every τ)
    S = generate(RFDenoiser(model, tau), (model.d,), seeds, sampler="heun", sigmas=sigmas,
                 dtype=torch.float64).numpy()
    fm = memorization_fraction(S, model.X, n_boot=0)["f_mem"]
    fpm = memorization_fraction(S, np.concatenate([model.X, -model.X]), n_boot=0)["f_mem"]
    fd = frechet_distance(S.mean(0), np.zeros(model.d), np.cov(S.T).reshape(model.d, model.d), np.eye(model.d))
    return {"f_mem": float(fm), "f_mem_pm": float(fpm), "frechet": float(fd)}


def _grid(steps, sigma_min, sigma_max):
    from ..schedules import karras_sigmas

    return karras_sigmas(steps, sigma_min=sigma_min, sigma_max=sigma_max)


def generative_curve(d: int = 8, p: int = 256, ns: Sequence[int] = (4, 16, 64, 1024),
                     taus: Sequence[float] = tuple(10.0 ** np.arange(1, 12)) + (math.inf,), samples: int = 200,
                     seed: int = 0, steps: int = 24, sigma_min: float = 0.005, sigma_max: float = 40.0,
                     n_rows: int = 8192, act: str = "tanh", bias: float = 0.0) -> dict:
    """f_mem, f_mem_pm and Fréchet distance of the RF generative model against τ for each n (issue #13
    item 4): one :func:`fit_levels` per n (W and the Karras σ grid shared), Heun with ``steps`` steps.
    ``tau_half`` (and ``tau_half_pm``) is the first τ at which f_mem (f_mem_pm) reaches half its last
    value (nan when that value is ≤ 0.05); ``slope``: its log-log slope against n."""
    from .curves import crossing_time
    from .taumem import loglog_slope

    ns, taus = [int(v) for v in ns], sorted(float(v) for v in taus)
    check_settings(d, [p], ns, taus, samples, steps, sigma_min, sigma_max, n_rows, seed, act, bias)
    t0 = time.perf_counter()
    sig = _grid(steps, sigma_min, sigma_max)
    rows = []
    for n in ns:
        m = fit_levels(d, p / d, n, sig, seed=seed, n_rows=n_rows, act=act, bias=bias)
        per = [sample_metrics(m, tau, sig, samples, seed) for tau in taus]
        row = {"n": n, **{k: [r[k] for r in per] for k in ("f_mem", "f_mem_pm", "frechet")}}
        for key in ("f_mem", "f_mem_pm"):
            y = row[key]
            fin = [i for i, t in enumerate(taus) if math.isfinite(t)]  # a crossing only at τ = ∞ is nan
            row["tau_half" + key[5:]] = (crossing_time([taus[i] for i in fin], [y[i] for i in fin], 0.5, ref=y[-1])
                                         if y[-1] > 0.05 and fin else float("nan"))
        rows.append(row)
    return {"params": {"d": d, "p": p, "psi_p": p / d, "n": ns, "tau": taus, "samples": samples, "seed": seed,
                       "steps": steps, "sigma_min": sigma_min, "sigma_max": sigma_max, "n_rows": n_rows,
                       "act": act, "bias": bias},
            "rows": rows, "slope_tau_half": loglog_slope(ns, [r["tau_half"] for r in rows]),
            "slope_tau_half_pm": loglog_slope(ns, [r["tau_half_pm"] for r in rows]),
            "seconds": time.perf_counter() - t0}


def phase_diagram(d: int = 8, ps: Sequence[int] = (16, 32, 64, 128, 256),
                  ns: Sequence[int] = (2, 4, 8, 16, 32, 64, 128, 256, 512), taus: Sequence[float] = (1e3, 1e5, math.inf),
                  samples: int = 100, seed: int = 0, steps: int = 24, sigma_min: float = 0.005,
                  sigma_max: float = 40.0, n_rows: int = 8192, act: str = "tanh", zero: float = 0.05,
                  bias: float = 0.0) -> dict:
    """The (n, p) phase diagram of the generative model, closed form at each τ (no gradient descent).

    ``f_mem[i][j][k]`` (and ``f_mem_pm``, ``frechet``) at p = ps[i], n = ns[j], τ = taus[k];
    ``n_star[i][k]``: the smallest n of the grid from which f_mem ≤ ``zero`` for every larger n
    (None if never), ``n_star_pm`` the same for f_mem_pm; ``slope_n_star[k]`` the log-log slope of n* against p."""
    from .taumem import loglog_slope

    ps, ns, taus = sorted(int(v) for v in ps), sorted(int(v) for v in ns), sorted(float(v) for v in taus)
    check_settings(d, ps, ns, taus, samples, steps, sigma_min, sigma_max, n_rows, seed, act, bias)
    if not 0 <= zero < 1:
        raise DiffmemError(f"zero must be in [0, 1), got {zero!r}")
    t0 = time.perf_counter()
    sig = _grid(steps, sigma_min, sigma_max)
    out = {k: [[[0.0] * len(taus) for _ in ns] for _ in ps] for k in ("f_mem", "f_mem_pm", "frechet")}
    for i, p in enumerate(ps):
        for j, n in enumerate(ns):
            m = fit_levels(d, p / d, n, sig, seed=seed, n_rows=n_rows, act=act, bias=bias)
            for k, tau in enumerate(taus):
                for key, v in sample_metrics(m, tau, sig, samples, seed).items():
                    out[key][i][j][k] = v

    def n_star(f, i, k):
        bad = [j for j in range(len(ns)) if f[i][j][k] > zero]
        j0 = bad[-1] + 1 if bad else 0
        return ns[j0] if j0 < len(ns) else None

    return {"params": {"d": d, "p": ps, "n": ns, "tau": taus, "samples": samples, "seed": seed, "steps": steps,
                       "sigma_min": sigma_min, "sigma_max": sigma_max, "n_rows": n_rows, "act": act, "zero": zero, "bias": bias},
            **out, "n_star": [[n_star(out["f_mem"], i, k) for k in range(len(taus))] for i in range(len(ps))],
            "n_star_pm": [[n_star(out["f_mem_pm"], i, k) for k in range(len(taus))] for i in range(len(ps))],
            "slope_n_star": [loglog_slope(ps, [n_star(out["f_mem"], i, k) or np.nan for i in range(len(ps))])
                             for k in range(len(taus))],
            "seconds": time.perf_counter() - t0}


def _model(pr: dict) -> str:
    return pr["act"] + (f", feature biases N(0, {pr['bias']:g}²)" if pr.get("bias") else ", no bias")


def _tau_label(t: float) -> str:
    return "∞" if math.isinf(t) else f"{t:g}"


def plot_generative(res: dict, path) -> str:
    """PNG: f_mem (solid) and f_mem_pm (dashed) against τ per n; Fréchet distance to N(0, I) against τ."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    taus = res["params"]["tau"]
    fin = [t for t in taus if math.isfinite(t)] or [1.0]
    xt = [t if math.isfinite(t) else 10 * max(fin) for t in taus]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for r in res["rows"]:
        (ln,) = ax[0].plot(xt, r["f_mem"], "o-", label=f"n={r['n']}")
        ax[0].plot(xt, r["f_mem_pm"], "--", color=ln.get_color(), alpha=0.6)
        ax[1].plot(xt, r["frechet"], "o-", label=f"n={r['n']}")
    for a, yl in zip(ax, ("f_mem vs X (solid), vs ±X (dashed)", "Fréchet distance to N(0, I)")):
        a.set_xscale("log")
        a.set_xlabel("training time τ (last point: τ = ∞)" if math.isinf(taus[-1]) else "training time τ")
        a.set_ylabel(yl)
        a.legend(fontsize=7)
    ax[1].set_yscale("log")
    pr = res["params"]
    fig.suptitle(f"random-features generative model ({_model(pr)}), d={pr['d']}, p={pr['p']}, {pr['samples']} samples")
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return str(path)


def plot_phase(res: dict, path) -> str:
    """PNG: one f_mem heat map over (n, p) per τ, n* = p marked, n_star(p) overlaid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..fileio import save_figure

    pr = res["params"]
    ps, ns, taus = pr["p"], pr["n"], pr["tau"]
    f = np.array(res["f_mem"])
    fig, axes = plt.subplots(1, len(taus), figsize=(4.2 * len(taus), 3.8), squeeze=False)
    for k, ax in enumerate(axes[0]):
        im = ax.imshow(f[:, :, k], origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
        ax.set_xticks(range(len(ns)), [str(n) for n in ns], fontsize=7)
        ax.set_yticks(range(len(ps)), [str(p) for p in ps], fontsize=7)
        ax.plot([ns.index(p) if p in ns else np.interp(math.log(p), np.log(ns), range(len(ns))) for p in ps],
                range(len(ps)), "w:", label="n = p")
        star = [ns.index(s) if s is not None else np.nan for s in (row[k] for row in res["n_star"])]
        ax.plot(star, range(len(ps)), "rs-", ms=4, label=f"n* (f_mem ≤ {pr['zero']:g})")
        ax.set_xlabel("n")
        ax.set_ylabel("p")
        ax.set_title(f"f_mem at τ = {_tau_label(taus[k])}")
        ax.legend(fontsize=6, loc="upper left")
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.suptitle(f"phase diagram of the RF generative model ({_model(pr)}), d={pr['d']}")
    save_figure(fig, path, dpi=110)
    plt.close(fig)
    return str(path)


def curve_lines(res: dict) -> list[str]:
    pr = res["params"]
    lines = [f"RF generative model ({_model(pr)}): d = {pr['d']}, p = {pr['p']} (psi_p = {pr['psi_p']:g}), "
             f"{pr['steps']} Heun steps, {pr['samples']} samples, seed {pr['seed']} ({res['seconds']:.1f} s)",
             "  tau: " + " ".join(f"{_tau_label(t):>6s}" for t in pr["tau"])]
    for r in res["rows"]:
        lines += [f"  n={r['n']:<5d} f_mem    " + " ".join(f"{v:6.3f}" for v in r["f_mem"]),
                  "          f_mem±X  " + " ".join(f"{v:6.3f}" for v in r["f_mem_pm"]),
                  "          Frechet  " + " ".join(f"{v:6.3g}" for v in r["frechet"])
                  + f"   tau_half {r['tau_half']:.3g} (±X {r['tau_half_pm']:.3g})"]
    sl = [("n/a" if v is None else f"{v:.2f}") for v in (res["slope_tau_half"], res["slope_tau_half_pm"])]
    lines.append(f"  slope of tau_half against n: {sl[0]} (f_mem), {sl[1]} (f_mem vs ±X)")
    return lines


def phase_lines(res: dict) -> list[str]:
    pr = res["params"]
    lines = [f"phase diagram of the RF generative model ({_model(pr)}): d = {pr['d']}, {pr['samples']} samples, "
             f"{pr['steps']} Heun steps ({res['seconds']:.1f} s)"]
    for k, tau in enumerate(pr["tau"]):
        lines.append(f"  tau = {_tau_label(tau)}: f_mem (f_mem vs ±X) over n = {pr['n']}")
        for i, p in enumerate(pr["p"]):
            lines.append(f"    p={p:<5d} " + " ".join(f"{res['f_mem'][i][j][k]:.2f}({res['f_mem_pm'][i][j][k]:.2f})"
                                               for j in range(len(pr["n"])))
                         + f"   n* = {res['n_star'][i][k]} (±X: {res['n_star_pm'][i][k]})")
        sl = res["slope_n_star"][k]
        lines.append(f"    slope of n* against p: {'n/a' if sl is None else f'{sl:.2f}'}")
    return lines
