"""BDKOS25: closed-form scores that memorise and the regularisers that stop them (SPEC §4).

Baptista, Dasgupta, Kovachki, Oberai, Stuart, *Memorization and Regularization
in Generative Diffusion Models* (arXiv 2501.15785).  The experiment: sample the
probability-flow ODE of a closed-form score -- the empirical minimiser ``s_N``
(:class:`~diffmem.closed_form.EmpiricalDenoiser`), its Tikhonov regularisation
``s_c = σ²/(σ² + c) s_N`` (:class:`~diffmem.closed_form.TikhonovDenoiser`) or
asymptotic-consistency regularisation (:class:`~diffmem.closed_form.ConsistencyDenoiser`)
-- with scipy's RK45 (rtol = atol = 1e-5) from t = 1 to a small ``t_end``
under BDKOS25's VE (σ₀ = 10) or VP schedule (:mod:`diffmem.schedules`), and
measure the fraction of samples within a tolerance of a training point.

Reading the tolerance: the PF-ODE of ``s_N`` leaves a sample at distance
``O(σ(t_end))`` from its training point, so a fraction "within tol" means
something only when ``σ(t_end) ≪ tol``.  At ``t_end = 1e-5`` (VE) σ ≈ 0.0032
and tol = 1e-2 separates memorising from not; at ``t_end = 1e-3``
σ ≈ 0.032 > tol and every fraction falls below 0.07, memorising or not.

Everything here is a library function; ``diffmem closedform`` (``closedform_cli``)
only parses and prints.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import torch

from .errors import DiffmemError

__all__ = ["CLOSED_FORMS", "TABLE_MODELS", "build_closed_form", "fraction_within", "sample_closed_form",
           "collapse_diagnostics", "plot_collapse", "reference_table", "plot_table", "check_sampling_args"]

CLOSED_FORMS = ("empirical", "tikhonov", "consistency")
TABLE_MODELS = ("empirical", "tikhonov:c=1e-4", "tikhonov:c=1e-3", "tikhonov:c=1e-2", "consistency:tau=0.1",
                "consistency:tau=0.3", "consistency:tau=1")
TOL_NOTE = ("read tol against sigma(t_end): a memorising sample ends O(sigma(t_end)) from its training point, "
            "so the fraction within tol separates memorisation only when sigma(t_end) << tol")


@contextlib.contextmanager
def _threads_for(work: float):
    """Run small tensor work on one thread (thread hand-off dominates below ~1e7 flops per call)."""
    n = torch.get_num_threads()
    if work < 1e7 and n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _train_matrix(train) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(train) if not torch.is_tensor(train) else train)
    if t.ndim < 2 or t.shape[0] == 0:
        raise DiffmemError(f"the training set is empty or has no features (shape {tuple(t.shape)}); need (n ≥ 1, d)")
    t = t.reshape(t.shape[0], -1).to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise DiffmemError("the training set contains NaN or infinite values")
    return t


def build_closed_form(name: str, train, schedule: str = "ve"):
    """The BDKOS25 closed form ``name`` on ``train [n, d]`` (float64): ``empirical``, ``tikhonov:c=C[,schedule=..]``
    or ``consistency:tau=T``.  A Tikhonov c acts on the score of ``schedule`` unless the name says otherwise."""
    from .closed_form import ConsistencyDenoiser, EmpiricalDenoiser, TikhonovDenoiser
    from .models import parse_model_name

    base, params = parse_model_name(name)
    if base not in CLOSED_FORMS:
        raise DiffmemError(f"model {base!r} is not a BDKOS25 closed form; choose empirical, tikhonov:c=C or "
                           "consistency:tau=T")
    y = _train_matrix(train)
    if base == "tikhonov":
        if params.get("schedule", schedule) != schedule:
            raise DiffmemError(f"model {name!r} regularises the {params['schedule']} score but the schedule is "
                               f"{schedule}")
        return TikhonovDenoiser(y, c=params["c"], schedule=schedule)
    if base == "consistency":
        return ConsistencyDenoiser(y, tau=params["tau"])
    return EmpiricalDenoiser(y)


def fraction_within(samples, train, tol: float, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fraction of ``samples [M, d]`` within ``tol`` (L2) of a training point of ``train [n, d]`` (BDKOS25).

    Returns ``fraction``, ``ci95`` (bootstrap percentiles, binomial draw as in
    :func:`~diffmem.metrics.memorization.bootstrap_fraction`), ``ci95_wilson``,
    ``stderr``, ``n_samples``, ``tol``, per-sample ``nearest [M]`` (training
    index a sample ends on) and ``distance [M]``.
    """
    from .metrics.memorization import bootstrap_fraction, validate_pair

    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and tol > 0):
        raise DiffmemError(f"tol must be a positive number, got {tol}")
    S, T = validate_pair(samples, train) if len(train) >= 2 else (_rows1(samples, train))
    S = torch.as_tensor(np.asarray(S, dtype=np.float64)) if not torch.is_tensor(S) else S.double()
    T = torch.as_tensor(np.asarray(T, dtype=np.float64)) if not torch.is_tensor(T) else T.double()
    d = torch.cdist(S, T)
    dist, nearest = d.min(1)
    flags = (dist <= tol).numpy()
    b = bootstrap_fraction(flags, n_boot, seed)
    w = bootstrap_fraction(flags, 0)
    return {"fraction": b["f_mem"], "ci95": b["ci95"], "ci95_wilson": w["ci95"], "stderr": b["stderr"],
            "n_samples": int(flags.size), "tol": float(tol), "nearest": nearest.numpy(), "distance": dist.numpy()}


def _rows1(samples, train):
    S = torch.as_tensor(np.asarray(samples)).reshape(len(samples), -1)
    T = torch.as_tensor(np.asarray(train)).reshape(len(train), -1)
    if len(S) == 0:
        raise DiffmemError("no samples given (the samples array has 0 rows)")
    if S.shape[1] != T.shape[1]:
        raise DiffmemError(f"samples have {S.shape[1]} features per row but training points have {T.shape[1]}")
    return S, T


def check_sampling_args(schedule: str, n_samples: int, t_end: float, tol: float, rtol: float = 1e-5,
                        atol: float = 1e-5, n_boot: int = 1000) -> None:
    """One-line :class:`DiffmemError` for any bad sampling option (checked before any work or file)."""
    from .schedules import BDKOS25_SCHEDULES

    if schedule not in BDKOS25_SCHEDULES:
        raise DiffmemError(f"unknown schedule {schedule!r}; choose one of {', '.join(BDKOS25_SCHEDULES)}")
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 1:
        raise DiffmemError(f"n-samples must be a positive integer, got {n_samples}")
    if not (math.isfinite(t_end) and 0 < t_end < 1):
        raise DiffmemError(f"t-end must lie in (0, 1) (BDKOS25 time; the ODE runs from t = 1), got {t_end}")
    for name, v in (("tol", tol), ("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(v) and v > 0):
            raise DiffmemError(f"{name} must be a positive number, got {v}")
    if n_boot < 0:
        raise DiffmemError(f"n-boot must be ≥ 0, got {n_boot}")


def sample_closed_form(train, model: str = "empirical", schedule: str = "ve", n_samples: int = 1000, seed: int = 0,
                       t_end: float = 1e-5, tol: float = 1e-2, rtol: float = 1e-5, atol: float = 1e-5,
                       n_boot: int = 1000, record: int = 0) -> dict:
    """BDKOS25's experiment: PF-ODE samples of a closed form and the fraction within ``tol`` of ``train``.

    ``train``: ``[n, d]``.  Latents: sample ``j`` draws ``z ~ N(0, I)`` from its
    own generator seeded ``seed + j`` (:class:`~diffmem.samplers.PerSampleNoise`);
    VE starts at ``σ(1) z`` (``N(0, σ(1)² I)``, σ(1)² = (σ₀² − 1)/(2 ln σ₀)),
    VP at the VP state ``z`` (VE state ``z/m(1)``).  RK45 (rtol, atol) in
    BDKOS25 time t from 1 to ``t_end``, all samples one state vector.
    ``record``: number of trajectory points (log-spaced in t) kept for the
    collapse diagnostics.

    Returns a dict: JSON-ready scalars (``fraction_within``, ``ci95``,
    ``ci95_wilson``, ``n_samples``, ``f_mem``, ``f_mem_ci95``, ``n_train``,
    ``sigma_end``, ``nfev``, ...) plus numpy ``samples``, ``nearest``,
    ``distance`` and, with ``record``, ``traj_t``, ``traj_sigma``, ``traj``.
    """
    from .metrics.memorization import memorization_fraction
    from .samplers import PerSampleNoise, pf_ode_solve
    from .schedules import bdkos25_sigma, bdkos25_vp_m

    check_sampling_args(schedule, n_samples, t_end, tol, rtol, atol, n_boot)
    den = build_closed_form(model, train, schedule)
    y = den.train
    z = PerSampleNoise(range(int(seed), int(seed) + int(n_samples))).randn(y.shape[1:], torch.float64)
    s1, se = float(bdkos25_sigma(1.0, schedule)), float(bdkos25_sigma(t_end, schedule))
    x0 = z * s1 if schedule == "ve" else z / float(bdkos25_vp_m(1.0))
    t_rec = np.geomspace(1.0, t_end, int(record)) if record else None
    with _threads_for(6.0 * n_samples * y.shape[0] * y.shape[1]):
        x, traj, info = pf_ode_solve(den, x0, s1, se, rtol, atol, f"bdkos25-{schedule}",
                                     record=None if t_rec is None else bdkos25_sigma(t_rec, schedule))
    m_end = 1.0 if schedule == "ve" else float(bdkos25_vp_m(t_end))
    samples = (x * m_end).numpy()
    fw = fraction_within(samples, y.numpy(), tol, n_boot, seed)
    fm = memorization_fraction(samples, y.numpy(), n_boot=n_boot, seed=seed) if len(y) >= 2 else None
    out = {"model": model, "schedule": schedule, "n_samples": int(n_samples), "n_train": int(len(y)),
           "dim": int(y.shape[1]), "seed": int(seed), "latent_seeds": f"{seed}..{seed + n_samples - 1}",
           "t_end": float(t_end), "sigma_end": se, "sigma_start": s1, "tol": float(tol), "rtol": float(rtol),
           "atol": float(atol), "n_boot": int(n_boot), "fraction_within": fw["fraction"], "ci95": fw["ci95"],
           "ci95_wilson": fw["ci95_wilson"], "stderr": fw["stderr"],
           "f_mem": None if fm is None else fm["f_mem"], "f_mem_ci95": None if fm is None else fm["ci95"],
           "end_index_counts": np.bincount(fw["nearest"], minlength=len(y)).tolist(),
           "median_end_distance": float(np.median(fw["distance"])), "nfev": info["nfev"], "note": TOL_NOTE,
           "samples": samples, "nearest": fw["nearest"], "distance": fw["distance"], "train": y.numpy()}
    if record:
        sig_ve = np.asarray(bdkos25_sigma(t_rec, schedule), dtype=np.float64)
        out.update({"traj_t": t_rec, "traj_sigma": sig_ve, "traj": traj.numpy()})
        out["diagnostics"] = collapse_diagnostics(y, out["traj"], sig_ve, x.numpy())
    return out


def collapse_diagnostics(train, traj, sigmas, x_final) -> dict:
    """BDKOS25's collapse diagnostics of VE trajectories ``traj [K, B, d]`` at VE levels ``sigmas [K]``.

    Per time: ``max_weight [K, B]`` (largest softmax weight ``w_n`` of the
    empirical mixture, 1 = collapsed), ``entropy [K, B]`` (nats; ``log n`` =
    uniform), ``argmax [K, B]``, ``dist_final [K, B] = ‖x(t) − x_final‖`` and
    ``within_2sigma [K]``, the fraction of trajectories with
    ``‖x(t) − x_final‖ ≤ 2σ(t)``.
    """
    from .closed_form import EmpiricalDenoiser

    emp = EmpiricalDenoiser(_train_matrix(train))
    traj = torch.as_tensor(np.asarray(traj, dtype=np.float64))
    K = traj.shape[0]
    mw, ent, am = [], [], []
    for k in range(K):
        st = emp.mixture_stats(traj[k], torch.full((traj.shape[1],), float(sigmas[k]), dtype=torch.float64))
        mw.append(st["max_weight"].numpy())
        ent.append(st["entropy"].numpy())
        am.append(st["argmax"].numpy())
    dist = np.linalg.norm(np.asarray(traj) - np.asarray(x_final)[None], axis=-1)
    return {"sigma": np.asarray(sigmas, dtype=np.float64), "max_weight": np.stack(mw), "entropy": np.stack(ent),
            "argmax": np.stack(am), "dist_final": dist,
            "within_2sigma": (dist <= 2 * np.asarray(sigmas)[:, None]).mean(1)}


def _band(ax, x, a, label):
    q = np.percentile(a, [25, 50, 75], axis=1)
    ax.plot(x, q[1], label=label)
    ax.fill_between(x, q[0], q[2], alpha=0.25)


def plot_collapse(res: dict):
    """One figure, one panel per diagnostic of :func:`sample_closed_form` (with ``record``): largest mixture
    weight, its entropy, ``‖x(t) − x_final‖`` vs ``2σ(t)``, the training point each trajectory ends on,
    and the fraction within a tolerance against the tolerance (σ(t_end) marked)."""
    from matplotlib.figure import Figure

    dg, t = res["diagnostics"], res["traj_t"]
    fig = Figure(figsize=(15, 8))
    ax = fig.subplots(2, 3).ravel()
    _band(ax[0], t, dg["max_weight"], "median, IQR")
    ax[0].set(xscale="log", xlabel="BDKOS25 time t", ylabel="largest weight max_n w_n", title="mixture weight")
    _band(ax[1], t, dg["entropy"], "median, IQR")
    ax[1].axhline(math.log(res["n_train"]), ls=":", c="k", label="log n (uniform)")
    ax[1].set(xscale="log", xlabel="t", ylabel="entropy of w (nats)", title="weight entropy")
    _band(ax[2], t, dg["dist_final"], "median ||x(t) - x_final||, IQR")
    ax[2].plot(t, 2 * dg["sigma"], "k--", label="2 sigma(t)")
    ax[2].set(xscale="log", yscale="log", xlabel="t", ylabel="distance", title="distance to the end point")
    ax[3].bar(np.arange(res["n_train"]), res["end_index_counts"])
    ax[3].set(xlabel="training index", ylabel="samples ending nearest", title="end point of each trajectory")
    tols = np.geomspace(max(res["sigma_end"] / 30, 1e-6), 3.0, 60)
    ax[4].plot(tols, [(res["distance"] <= v).mean() for v in tols])
    ax[4].axvline(res["tol"], c="C1", label=f"tol = {res['tol']:g}")
    ax[4].axvline(res["sigma_end"], c="k", ls=":", label=f"sigma(t_end) = {res['sigma_end']:.3g}")
    ax[4].set(xscale="log", xlabel="tolerance", ylabel="fraction within", title="fraction within a tolerance")
    s, y = res["samples"], res.get("train")
    if s.shape[1] == 2:
        ax[5].scatter(s[:, 0], s[:, 1], s=4, alpha=0.5, label="samples")
        if y is not None:
            ax[5].scatter(y[:, 0], y[:, 1], marker="x", c="k", label="training points")
        ax[5].set(title="samples (2-D)")
    else:
        ax[5].hist(res["distance"], bins=40)
        ax[5].set(xlabel="distance to nearest training point", title="end distances")
    for a in ax:
        if a.get_legend_handles_labels()[0]:
            a.legend(fontsize=8)
    fig.suptitle(f"{res['model']} ({res['schedule']}), {res['n_samples']} samples: "
                 f"{res['fraction_within']:.3f} within {res['tol']:g}")
    fig.tight_layout()
    return fig


def reference_table(train, n_samples: int = 1000, seed: int = 0, t_end: float = 1e-5, tol: float = 1e-2,
                    schedule: str = "ve", models=TABLE_MODELS, n_boot: int = 1000) -> dict:
    """BDKOS25's reference table (SPEC §4): fraction within ``tol`` for each of ``models`` on the same latents.

    Returns ``{"rows": [{model, fraction_within, ci95, ci95_wilson, f_mem, nfev}], and the settings}``.
    """
    check_sampling_args(schedule, n_samples, t_end, tol, n_boot=n_boot)
    for m in models:
        build_closed_form(m, train, schedule)  # every name checked before the first solve
    rows = []
    for m in models:
        r = sample_closed_form(train, m, schedule, n_samples, seed, t_end, tol, n_boot=n_boot)
        rows.append({k: r[k] for k in ("model", "fraction_within", "ci95", "ci95_wilson", "f_mem", "f_mem_ci95",
                                       "nfev")})
    return {"schedule": schedule, "n_samples": int(n_samples), "seed": int(seed),
            "latent_seeds": f"{seed}..{seed + n_samples - 1}", "t_end": float(t_end), "tol": float(tol),
            "sigma_end": r["sigma_end"], "rtol": 1e-5, "atol": 1e-5, "n_train": r["n_train"], "n_boot": n_boot,
            "rows": rows, "note": TOL_NOTE}


def plot_table(table: dict):
    """Bar chart of :func:`reference_table` with the bootstrap 95 % intervals."""
    from matplotlib.figure import Figure

    rows = table["rows"]
    f = np.array([r["fraction_within"] for r in rows])
    lo = f - np.array([r["ci95"][0] for r in rows])
    hi = np.array([r["ci95"][1] for r in rows]) - f
    fig = Figure(figsize=(9, 4))
    ax = fig.subplots()
    ax.bar(range(len(rows)), f, yerr=[lo, hi], capsize=3)
    ax.set_xticks(range(len(rows)), [r["model"].replace("empirical", "c = 0 (empirical)") for r in rows],
                  rotation=25, ha="right", fontsize=8)
    ax.set(ylabel=f"fraction within {table['tol']:g}", ylim=(0, 1.05),
           title=f"BDKOS25 {table['schedule'].upper()}, n = {table['n_train']}, {table['n_samples']} latents "
                 f"(seeds {table['latent_seeds']}), t_end = {table['t_end']:g}")
    fig.tight_layout()
    return fig
