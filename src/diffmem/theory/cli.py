"""``diffmem theory constants | spectrum | curves | heatmap | taumem | threshold | generative | phase`` (thin wrappers).

Each command computes with the library (:mod:`.constants`, :mod:`.spectrum`,
:mod:`.curves`, :mod:`.heatmap`), writes a PNG into ``--out`` (default
``runs/theory``) and prints either a short human summary or, with
``--json``, one JSON object on stdout.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import DiffmemError

__all__ = ["register"]


def _floats(text: str, name: str) -> list[float]:
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise DiffmemError(f"{name} must be comma-separated numbers, got {text!r}") from None
    if not vals:
        raise DiffmemError(f"{name} is empty")
    return vals


def _ints(text: str, name: str) -> list[int]:
    vals = _floats(text, name)
    if any(not math.isfinite(v) or v != int(v) for v in vals):
        raise DiffmemError(f"{name} must be comma-separated integers, got {text!r}")
    return [int(v) for v in vals]


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _emit(args, obj: dict, lines: list[str]) -> int:
    if args.json:
        print(json.dumps(_jsonable(obj)))
    else:
        print("\n".join(lines))
    return 0


def _outdir(args) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def cmd_constants(args) -> int:
    from .constants import rf_constants, stein_checks

    k = rf_constants(args.t, sigma_x=args.sigma_x, act=args.activation)
    obj = {"t": k.t, "sigma_x": k.sigma_x, "delta_t": k.delta, "gamma_t2": k.gamma2, "a_t": k.a_t, "b_t": k.b_t,
           "v_t2": k.v_t2, "s_t2": k.s_t2, "mu1": k.mu1, "sigma_norm2": k.sigma_norm2,
           "stein_residuals": stein_checks(k, args.activation)}
    lines = [f"random-features constants, {args.activation}, t = {k.t:g}, sigma_x = {k.sigma_x:g} "
             f"(Gauss-Hermite quadrature)"]
    lines += [f"  {name:12s} {obj[name]:.8g}" for name in ("a_t", "b_t", "v_t2", "s_t2", "mu1", "sigma_norm2")]
    worst = max(abs(v) for v in obj["stein_residuals"].values())
    lines.append(f"  Stein identities hold to {worst:.1e}")
    return _emit(args, obj, lines)


def cmd_spectrum(args) -> int:
    from .spectrum import kolmogorov_distance, plot_spectrum, spectrum

    spec = _floats(args.sigma_spectrum, "--sigma-spectrum")
    w = _floats(args.sigma_weights, "--sigma-weights") if args.sigma_weights else None
    res = spectrum(args.psi_p, args.psi_n, args.t, sigma_spectrum=spec, sigma_weights=w, n_lambda=args.n_lambda,
                   act=args.activation)
    eig = None
    keys = ("lambda", "density", "bulks", "delta_mass", "delta_position", "theorem32_edges", "regime", "warnings")
    obj = {k: res[k] for k in keys if k in res}
    if args.d:
        from .rf import ge_U_eigenvalues, make_problem

        prob = make_problem(args.d, args.psi_p, args.psi_n, args.t, sigma_spectrum=spec, sigma_weights=w,
                            seed=args.seed, act=args.activation)
        eig = ge_U_eigenvalues(prob)
        obj["ks_gaussian_equivalent"] = kolmogorov_distance(res, eig)
        obj["d"] = args.d
    fig = plot_spectrum(res, _outdir(args) / "spectrum.png", eigenvalues=eig)
    obj["figure"] = str(fig)
    lines = [f"spectrum of U (Thm 3.1): psi_p = {args.psi_p:g}, psi_n = {args.psi_n:g}, t = {args.t:g}, "
             f"rho_Sigma = {spec}" + (f" weights {w}" if w else "")]
    lines.append(f"  delta peak at s_t^2 with mass {obj['delta_mass']:.6f}")
    for lo, hi, m in obj["bulks"]:
        lines.append(f"  bulk [{lo:.6g}, {hi:.6g}]  mass {m:.6f}")
    if eig is not None:
        lines.append(f"  Kolmogorov distance to the Gaussian-equivalent U at d = {args.d}: "
                     f"{obj['ks_gaussian_equivalent']:.4f}")
    lines += [f"  warning: {w}" for w in obj.get("warnings", [])] + [f"  figure: {fig}"]
    return _emit(args, obj, lines)


def cmd_curves(args) -> int:
    from .curves import curves, plot_curves, simulate_gd

    spec = _floats(args.sigma_spectrum, "--sigma-spectrum")
    res = curves(args.psi_p, args.psi_n, args.t, args.d, seed=args.seed, n_tau=args.n_tau, tau_max=args.tau_max,
                 sigma_spectrum=spec, act=args.activation)
    sim = None
    if args.simulate:
        from .rf import make_problem

        prob = make_problem(args.d, args.psi_p, args.psi_n, args.t, sigma_spectrum=spec, seed=args.seed,
                            act=args.activation)
        taus = np.asarray(res["tau"])[:: max(1, len(res["tau"]) // 25)]
        sim = simulate_gd(prob, taus[taus >= 1.0], method="gd")
        res["simulation"] = {k: sim[k] for k in ("tau", "train_loss", "test_loss", "score_error") if k in sim}
    fig = plot_curves(res, _outdir(args) / "curves.png", sim=sim)
    res["figure"] = str(fig)
    lines = [f"closed-form learning curves (gradient flow, tau = k eta / d^2): psi_p = {args.psi_p:g}, "
             f"psi_n = {args.psi_n:g}, t = {args.t:g}, d = {args.d}",
             f"  predicted tau_gen ~ {res['tau_gen']:.4g}, tau_mem = {res['tau_mem']:.4g}",
             f"  at tau = {res['tau'][-1]:.4g}: train {res['train_loss'][-1]:.5f}, test {res['test_loss'][-1]:.5f}, "
             f"score error {res['score_error'][-1]:.5f}",
             f"  figure: {fig}"]
    return _emit(args, res, lines)


def cmd_heatmap(args) -> int:
    from .heatmap import gap_heatmap, plot_heatmap

    res = gap_heatmap(_floats(args.psi_n, "--psi-n"), _floats(args.psi_p, "--psi-p"),
                      taus=_floats(args.tau, "--tau"), t=args.t, d=args.d, seed=args.seed, n_seeds=args.n_seeds)
    fig = plot_heatmap(res, _outdir(args) / "heatmap.png")
    res["figure"] = str(fig)
    lines = [f"generalisation gap L_test - L_train over (psi_n, psi_p) at tau = {[float(x) for x in res['tau']]}, t = {args.t:g}, "
             f"d = {args.d} ({res['seconds']:.1f} s)", f"  figure: {fig}"]
    return _emit(args, res, lines)


def cmd_taumem(args) -> int:
    from ..fileio import atomic_write_json
    from .taumem import plot_taumem, summary, taumem

    res = taumem(args.psi_p, _floats(args.psi_n, "--psi-n"), args.t, args.d, seed=args.seed, rise=args.rise,
                 frac=args.frac, act=args.activation)
    out = _outdir(args)
    obj = summary(res)
    obj["figure"] = plot_taumem(res, out / "taumem.png")
    obj["json"] = str(atomic_write_json(out / "taumem.json", _jsonable(obj)))
    lines = [f"memorisation times (closed form): psi_p = {args.psi_p:g}, t = {args.t:g}, d = {args.d}, "
             f"psi_n = {obj['psi_n']} ({obj['seconds']:.1f} s)"]
    for name, d in obj["definitions"].items():
        sl = "n/a" if d["slope"] is None else f"{d['slope']:.3f}"
        lines.append(f"  {name:14s} slope {sl:>6s}  tau " + ", ".join(f"{v:.4g}" for v in d["tau"]))
    lines.append("  overlay spread on tau/tau_mem in [0.1, 3]: "
                 + ", ".join(f"{k} {v['spread']:.3f}" for k, v in obj["overlay"].items()))
    lines += [f"  figure: {obj['figure']}", f"  json: {obj['json']}"]
    return _emit(args, obj, lines)


def cmd_threshold(args) -> int:
    from ..fileio import atomic_write_json
    from .threshold import plot_threshold, threshold

    res = threshold(_floats(args.psi_p, "--psi-p"), _floats(args.ratios, "--ratios"), t=args.t, d=args.d,
                    seed=args.seed, plateau_factor=args.plateau_factor)
    out = _outdir(args)
    res["figure"] = plot_threshold(res, out / "threshold.png")
    res["json"] = str(atomic_write_json(out / "threshold.json", _jsonable(res)))
    lines = [f"architectural threshold n* = p: t = {args.t:g}, d = {args.d} ({res['seconds']:.1f} s)",
             f"  {'psi_p':>6} {'psi_n/psi_p':>11} regime {'gap(tau=inf)':>12} {'gap(plateau)':>12}"]
    lines += [f"  {x['psi_p']:6g} {x['ratio']:11.4g} {x['regime']:>6} {x['gap_inf']:12.4g} {x['gap_plateau']:12.4g}"
              + ("" if x["plateau_ok"] else "  (plateau not separated from tau_mem)") for x in res["rows"]]
    lines += [f"  psi_p={k}: slope of gap(inf) vs psi_n/psi_p in Regime II (ratio >= 2) {_fmt(f['slope_regime2'])}, "
              f"of gap(plateau) vs psi_n {_fmt(f['slope_plateau'])} (theory -0.5)" for k, f in res["fits"].items()]
    lines += [f"  figure: {res['figure']}", f"  json: {res['json']}"]
    return _emit(args, res, lines)


def _gen_kw(args) -> dict:
    return dict(d=args.d, ns=_ints(args.n, "--n"), taus=_floats(args.tau, "--tau"), samples=args.samples,
                seed=args.seed, steps=args.steps, sigma_min=args.sigma_min, sigma_max=args.sigma_max,
                n_rows=args.n_rows, act=args.activation, bias=args.bias)


def cmd_generative(args) -> int:
    from ..fileio import atomic_write_json
    from .generative import curve_lines, generative_curve, plot_generative

    res = generative_curve(p=args.p, **_gen_kw(args))
    out = _outdir(args)
    res["figure"] = plot_generative(res, out / "generative.png")
    res["json"] = str(atomic_write_json(out / "generative.json", _jsonable(res)))
    return _emit(args, res, curve_lines(res) + [f"  figure: {res['figure']}", f"  json: {res['json']}"])


def cmd_phase(args) -> int:
    from ..fileio import atomic_write_json
    from .generative import phase_diagram, phase_lines, plot_phase

    res = phase_diagram(ps=_ints(args.p, "--p"), zero=args.zero, **_gen_kw(args))
    out = _outdir(args)
    res["figure"] = plot_phase(res, out / "phase.png")
    res["json"] = str(atomic_write_json(out / "phase.json", _jsonable(res)))
    return _emit(args, res, phase_lines(res) + [f"  figure: {res['figure']}", f"  json: {res['json']}"])


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def register(sub) -> None:
    """Add ``theory`` and its subcommands to an argparse subparsers object."""
    p = sub.add_parser("theory", help="random-features theory of BUBM25: constants, spectrum, curves, heatmap, "
                                      "taumem, threshold, generative, phase")
    ts = p.add_subparsers(dest="theory_cmd", required=True)

    def common(q, fig=True):
        q.add_argument("--activation", default="tanh", help="tanh (default), erf, relu, linear")
        q.add_argument("--json", action="store_true", help="print one JSON object")
        if fig:
            q.add_argument("--out", default="runs/theory", help="folder for the PNG (default runs/theory)")

    q = ts.add_parser("constants", help="a_t, b_t, v_t^2, s_t^2, mu1, ||sigma||^2 by quadrature")
    q.add_argument("--t", type=float, required=True, help="OU diffusion time t")
    q.add_argument("--sigma-x", type=float, default=1.0, help="data scale, sigma_x^2 = Tr Sigma / d")
    common(q, fig=False)
    q.set_defaults(func=cmd_constants)

    q = ts.add_parser("spectrum", help="density of U from Theorem 3.1 (Fig. 4)")
    q.add_argument("--psi-p", type=float, required=True, help="p / d")
    q.add_argument("--psi-n", type=float, required=True, help="n / d")
    q.add_argument("--t", type=float, required=True, help="OU diffusion time t")
    q.add_argument("--sigma-spectrum", default="1", help="eigenvalues of Sigma, e.g. '1' or '0.5,1.5'")
    q.add_argument("--sigma-weights", help="their weights (default equal)")
    q.add_argument("--n-lambda", type=int, default=400, help="number of lambda points (default 400)")
    q.add_argument("--d", type=int, default=0, help="also draw the Gaussian-equivalent U at this d and compare")
    q.add_argument("--seed", type=int, default=0, help="seed of W, X (and Omega) (default 0)")
    common(q)
    q.set_defaults(func=cmd_spectrum)

    q = ts.add_parser("curves", help="closed-form train/test loss and score error under gradient flow (Fig. 5A)")
    q.add_argument("--psi-p", type=float, required=True, help="p / d")
    q.add_argument("--psi-n", type=float, required=True, help="n / d")
    q.add_argument("--t", type=float, required=True, help="OU diffusion time t")
    q.add_argument("--d", type=int, required=True, help="data dimension (p = psi_p d, n = psi_n d)")
    q.add_argument("--seed", type=int, default=0, help="seed of W and the data (default 0)")
    q.add_argument("--n-tau", type=int, default=200, help="log-spaced tau points (default 200)")
    q.add_argument("--tau-max", type=float, help="last tau (default 30 x the slowest predicted time)")
    q.add_argument("--sigma-spectrum", default="1", help="eigenvalues of Sigma, equal weights (default '1')")
    q.add_argument("--simulate", action="store_true", help="overlay a full-batch gradient-descent simulation")
    common(q)
    q.set_defaults(func=cmd_curves)

    q = ts.add_parser("heatmap", help="generalisation gap over (psi_n, psi_p) at given tau (Fig. 5C)")
    q.add_argument("--psi-n", default="1,2,4,8,16,32", help="grid of n / d (comma-separated)")
    q.add_argument("--psi-p", default="2,4,8,16,32,64,128", help="grid of p / d (comma-separated)")
    q.add_argument("--tau", default="1000,10000", help="times at which to map the gap (comma-separated)")
    q.add_argument("--t", type=float, default=0.1, help="OU diffusion time t (default 0.1)")
    q.add_argument("--d", type=int, default=50, help="data dimension of the finite-size draws (default 50)")
    q.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    q.add_argument("--n-seeds", type=int, default=1, help="average over this many draws (default 1)")
    common(q)
    q.set_defaults(func=cmd_heatmap)

    q = ts.add_parser("taumem", help="memorisation time by several definitions against psi_n (issue #13)")
    q.add_argument("--psi-p", type=float, required=True, help="p / d")
    q.add_argument("--psi-n", required=True, help="n / d values (comma-separated)")
    q.add_argument("--t", type=float, required=True, help="OU diffusion time t")
    q.add_argument("--d", type=int, required=True, help="data dimension (p = psi_p d, n = psi_n d)")
    q.add_argument("--seed", type=int, default=0, help="seed of W and the data (default 0)")
    q.add_argument("--rise", type=float, default=0.1, help="(b): fraction of the total rise of E_score (0.1)")
    q.add_argument("--frac", type=float, default=0.5, help="(c), (d): fraction of the final gap (0.5)")
    common(q)
    q.set_defaults(func=cmd_taumem)

    q = ts.add_parser("threshold", help="tau -> inf and plateau gap across n* = p (Regime I vs II)")
    q.add_argument("--psi-p", default="8,16,32", help="p / d values (comma-separated, default 8,16,32)")
    q.add_argument("--ratios", default="0.125,0.25,0.5,1,2,4,8", help="psi_n / psi_p values (comma-separated)")
    q.add_argument("--t", type=float, default=0.1, help="OU diffusion time t (default 0.1)")
    q.add_argument("--d", type=int, default=30, help="data dimension (default 30)")
    q.add_argument("--seed", type=int, default=0, help="seed of W and the data (default 0)")
    q.add_argument("--plateau-factor", type=float, default=10.0, help="plateau gap taken at tau = this / Delta_t")
    common(q)
    q.set_defaults(func=cmd_threshold)

    def generative_options(q, n, tau, samples):
        q.add_argument("--d", type=int, default=8, help="data dimension (data N(0, I_d); default 8)")
        q.add_argument("--n", default=n, help=f"training-set sizes (comma-separated, default {n})")
        q.add_argument("--tau", default=tau, help=f"training times, 'inf' allowed (default {tau})")
        q.add_argument("--samples", type=int, default=samples, help=f"samples per (n, p, tau) (default {samples})")
        q.add_argument("--seed", type=int, default=0, help="seed of W, the data, the noise and the samples")
        q.add_argument("--steps", type=int, default=24, help="Karras sigma levels = Heun steps (default 24)")
        q.add_argument("--sigma-min", type=float, default=0.005, help="smallest sigma (default 0.005)")
        q.add_argument("--sigma-max", type=float, default=40.0, help="largest sigma (default 40)")
        q.add_argument("--n-rows", type=int, default=8192, help="feature rows per level for U, V (default 8192)")
        q.add_argument("--bias", type=float, default=0.0, help="std of random feature biases (default 0: BUBM25's "
                                                               "odd, bias-free model, which memorises ±x_i)")
        common(q)

    q = ts.add_parser("generative", help="f_mem and sample quality of the RF generative model against tau, per n")
    q.add_argument("--p", type=int, default=256, help="number of random features (default 256)")
    generative_options(q, "4,16,64,1024", ",".join(f"1e{k}" for k in range(1, 12)) + ",inf", 200)
    q.set_defaults(func=cmd_generative)

    q = ts.add_parser("phase", help="(n, p) phase diagram of the RF generative model at a few tau (incl. inf)")
    q.add_argument("--p", default="16,32,64,128,256", help="numbers of features (comma-separated)")
    q.add_argument("--zero", type=float, default=0.05, help="n* = smallest n from which f_mem <= this (0.05)")
    generative_options(q, "2,4,8,16,32,64,128,256,512", "1e3,1e5,inf", 100)
    q.set_defaults(func=cmd_phase)
