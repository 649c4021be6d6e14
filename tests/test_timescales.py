"""τ estimators, power-law fit, run-directory readers and the report, on
synthetic curves with known answers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from diffmem.checkpoints import log_checkpoint_schedule
from diffmem.errors import DiffmemError
from diffmem.rundir import list_runs, metric_series, read_config, read_metrics
from diffmem.timescales import (
    Estimate,
    fit_power_law,
    phase_boundary,
    running_median,
    stopping_time,
    tau_gen,
    tau_mem,
    value_at,
)

STEPS = np.array(log_checkpoint_schedule(100_000, per_decade=12), dtype=float)


def sigmoid_log(steps, center, width=0.4):
    """Rises from 0 to 1 around ``center`` on a log scale (width in natural-log units)."""
    with np.errstate(divide="ignore"):
        x = (np.log(np.maximum(steps, 1e-12)) - math.log(center)) / width
    return 1.0 / (1.0 + np.exp(-x))


# ---------------------------------------------------------------------------
# τ_gen


def test_tau_gen_step_function():
    q = np.where(STEPS >= 1000, 10.0, 100.0)
    est = tau_gen(STEPS, q, smooth=1)
    assert isinstance(est, Estimate)
    first = STEPS[STEPS >= 1000][0]
    assert est.reached and est.value == first
    assert est.low == STEPS[np.flatnonzero(STEPS == first)[0] - 1] and est.high == first


def test_tau_gen_exact_threshold_and_later_worsening():
    # q = 1 + 9/(1 + s/100): within 10 % of best (≈1) where 9/(1+s/100) ≤ 0.1·best
    q = 1.0 + 9.0 / (1.0 + STEPS / 100.0)
    q_worse = q + 5.0 * sigmoid_log(STEPS, 3e4)  # quality degrades when memorising
    est = tau_gen(STEPS, q_worse, smooth=1)
    best = q_worse.min()
    i = np.flatnonzero(q_worse <= 1.1 * best)[0]
    assert est.value == STEPS[i]
    assert est.value < 3e4  # the later worsening does not move τ_gen


def test_tau_gen_noise_robust_with_smoothing_and_bootstrap():
    rng = np.random.default_rng(0)
    clean = 20.0 + 200.0 / (1.0 + STEPS / 300.0)
    err = 0.02 * clean
    q = clean + err * rng.standard_normal(STEPS.size)
    q[5] = 15.0  # one wild early outlier (better than the true best)
    truth = STEPS[np.flatnonzero(clean <= 22.0)[0]]
    est = tau_gen(STEPS, q, errors=err, rel_tol=0.1, smooth=3, seed=1)
    assert est.low <= truth <= est.high
    assert est.value > STEPS[5]  # the outlier is smoothed away
    assert "bootstrap" in est.details
    assert tau_gen(STEPS, q, smooth=1).value == STEPS[5]  # without smoothing it would trigger


def test_running_median():
    x = np.array([1.0, 100.0, 2.0, 3.0, 4.0])
    np.testing.assert_allclose(running_median(x, 3), [1.0, 2.0, 3.0, 3.0, 4.0])


# ---------------------------------------------------------------------------
# τ_mem


def test_tau_mem_step_function():
    f = np.where(STEPS >= 5000, 0.4, 0.0)
    se = np.where(f > 0, 0.03, 0.0)
    est = tau_mem(STEPS, f, stderr=se)
    first = STEPS[STEPS >= 5000][0]
    assert est.reached and est.value == first and est.high == first
    lvl = tau_mem(STEPS, f, stderr=se, method="level", n_boot=0)
    assert lvl.value <= first and lvl.low < first


def test_tau_mem_never_reached():
    f = np.zeros(STEPS.size)
    for method in ("significant", "level"):
        est = tau_mem(STEPS, f, ci_low=f, method=method)
        assert not est.reached and math.isinf(est.value) and est.low == STEPS[-1]
        assert est.to_dict()["value"] is None


def test_tau_mem_single_false_positive_ignored():
    f = np.where(STEPS >= 20_000, 0.5, 0.0)
    lo = np.where(STEPS >= 20_000, 0.4, 0.0)
    j = 10
    f[j], lo[j] = 0.02, 0.004  # one spurious significant checkpoint early
    est = tau_mem(STEPS, f, ci_low=lo, persist=2)
    assert est.value == STEPS[STEPS >= 20_000][0]
    assert tau_mem(STEPS, f, ci_low=lo, persist=1).value == STEPS[j]


def test_tau_mem_sigmoid_level_with_noise():
    rng = np.random.default_rng(3)
    center = 8000.0
    f_true = 0.8 * sigmoid_log(STEPS, center)
    N = 2000
    f = rng.binomial(N, f_true) / N
    se = np.sqrt(np.maximum(f * (1 - f), 1.0 / N) / N)
    est = tau_mem(STEPS, f, stderr=se, method="level", level=0.5, seed=0)
    # f_true / f_true(τ_max) = 0.5 exactly at ~center (f_true(τ_max) ≈ 0.8)
    truth = center * math.exp(0.4 * math.log(1.0 / (0.5 * f_true[-1] / 0.8) - 1.0) * -1)
    assert est.reached and est.low <= truth <= est.high
    assert abs(math.log(est.value / truth)) < 0.15
    sig = tau_mem(STEPS, f, stderr=se)
    assert sig.value < est.value  # significance comes before the half-way point


def test_tau_mem_bad_method():
    with pytest.raises(DiffmemError):
        tau_mem(STEPS, np.zeros(STEPS.size), method="nope")


# ---------------------------------------------------------------------------
# power law


def test_fit_power_law_recovers_alpha_and_kappa():
    rng = np.random.default_rng(0)
    n = np.array([64, 128, 256, 512, 1024, 2048], dtype=float)
    kappa, alpha = 300.0, 1.0
    tau = kappa * n**alpha * np.exp(0.1 * rng.standard_normal(n.size))
    fit = fit_power_law(n, tau, tau * 0.85, tau * 1.15, n_boot=2000, seed=0)
    assert fit["ok"] and abs(fit["alpha"] - 1.0) < 0.1
    assert fit["alpha_ci"][0] <= alpha <= fit["alpha_ci"][1]
    assert fit["alpha_ci_t"][0] <= alpha <= fit["alpha_ci_t"][1]
    assert fit["kappa_ci"][0] <= kappa <= fit["kappa_ci"][1]
    assert abs(math.log(fit["kappa"] / kappa)) < 0.5


def test_fit_power_law_coverage():
    """Over repeated noisy data sets the 95 % intervals cover α = 1 most of the time."""
    rng = np.random.default_rng(1)
    n = np.array([64, 128, 256, 512, 1024], dtype=float)
    cover_b = cover_t = 0
    reps = 40
    for r in range(reps):
        tau = 50.0 * n * np.exp(0.15 * rng.standard_normal(n.size))
        fit = fit_power_law(n, tau, n_boot=400, seed=r)
        cover_b += fit["alpha_ci"][0] <= 1.0 <= fit["alpha_ci"][1]
        cover_t += fit["alpha_ci_t"][0] <= 1.0 <= fit["alpha_ci_t"][1]
    assert cover_t >= 0.85 * reps and cover_b >= 0.7 * reps


def test_fit_power_law_excludes_unreached():
    n = [64, 128, 256, 512]
    fit = fit_power_law(n, [6400, 12800, math.inf, None], n_boot=100)
    assert fit["excluded_n"] == [256.0, 512.0] and fit["n_points"] == 2
    assert fit["alpha"] == pytest.approx(1.0) and fit["kappa"] == pytest.approx(100.0)
    assert math.isnan(fit["alpha_se"])  # no t-interval with 2 points
    bad = fit_power_law(n, [6400, None, None, None])
    assert not bad["ok"] and math.isnan(bad["alpha"])


def test_stopping_time_and_phase_boundary():
    st = stopping_time(100.0, 1024, alpha_frac=0.5, batch_size=512)
    assert st["steps"] == pytest.approx(51200.0) and st["epochs"] == pytest.approx(25600.0)
    with pytest.raises(DiffmemError):
        stopping_time(0.0, 10)

    s = np.array([0, 10, 100, 1000], dtype=float)
    assert value_at(s, [0, 1, 2, 3], 500) == 2 and math.isnan(value_at(s, [0, 1, 2, 3], 5000))
    rows = []
    for w, kappa in ((8, 4.0), (32, 1.0)):  # τ_mem = κ n: smaller width memorises later
        for n in (16, 64, 256, 1024):
            rows.append({"n": n, "width": w, "p": w * w, "steps": s, "f_mem": (s > kappa * n).astype(float)})
    out = phase_boundary(rows, [100.0, 1000.0])
    got = {(b["width"], b["tau"]): b["n_star"] for b in out}
    # width 32: f(τ=100)=0 iff n ≥ 100 → 256; f(1000)=0 iff n ≥ 1000 → 1024
    assert got[(32, 100.0)] == 256 and got[(32, 1000.0)] == 1024
    assert got[(8, 100.0)] == 64 and got[(8, 1000.0)] == 256


# ---------------------------------------------------------------------------
# run directories and the report


def _binom_ci(rng, f, N, n_boot=200):
    draws = rng.binomial(N, f, size=n_boot) / N
    return float(draws.std()), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def make_synthetic_sweep(root: Path, ns=(64, 128, 256, 512), widths=(32,), kappa=100.0, steps=200_000,
                         seed=0, n_samples=256) -> Path:
    """A sweep directory whose runs have τ_mem ∝ κ n (32/W) (f_mem half-way at
    κ n·32/W) and τ_gen ≈ 1000·32/W independent of n."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    sched = log_checkpoint_schedule(steps, per_decade=12)
    s = np.array(sched, dtype=float)
    names = []
    for w in widths:
        scale = 32.0 / w
        for n in ns:
            name = f"n{n}_w{w}_s0"
            run = root / name
            run.mkdir()
            cfg = {"n": n, "model": {"name": "mlp", "width": w}, "train": {"steps": steps, "batch_size": min(n, 512)},
                   "seed": 0, "n_params": 3910 * w * w + 606 * w + 1}
            (run / "config.json").write_text(json.dumps(cfg))
            (run / "schedule.json").write_text(json.dumps({"checkpoints": sched}))
            f_true = 0.9 * sigmoid_log(s, kappa * n * scale, 0.5)
            q_true = 30.0 + 400.0 / (1.0 + (s / (200.0 * scale)) ** 3) + 10.0 * f_true
            lines = []
            for i, st in enumerate(sched):
                f = rng.binomial(n_samples, f_true[i]) / n_samples
                se, lo, hi = _binom_ci(rng, f, n_samples)
                lines.append({"step": st, "metric": "f_mem", "value": f, "error": se, "ci_low": lo, "ci_high": hi})
                q = q_true[i] * (1 + 0.02 * rng.standard_normal())
                lines.append({"step": st, "metric": "quality/fd_feat", "value": q, "error": 0.02 * q_true[i]})
                tr = 0.3 / (1 + s[i] / 5000.0) ** 0.3 * (1 - 0.5 * f_true[i])
                lines.append({"step": st, "metric": "loss/train", "value": tr, "error": None, "t": 0.01})
                lines.append({"step": st, "metric": "loss/train", "value": 2 * tr, "error": None, "t": 0.1})
                lines.append({"step": st, "metric": "loss/test", "value": tr * (1 + f_true[i]), "error": None,
                              "t": 0.01})
            with open(run / "metrics.jsonl", "w") as fh:
                for rec in lines:
                    fh.write(json.dumps(rec) + "\n")
            names.append(name)
    (root / "sweep.json").write_text(json.dumps({"runs": names}))
    return root


def test_read_metrics_tolerates_truncated_last_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    good = [{"step": 0, "metric": "f_mem", "value": 0.0, "error": 0.0},
            {"step": 10, "metric": "f_mem", "value": 0.5, "error": 0.1},
            {"step": 10, "metric": "loss/test", "value": 1.0, "error": None, "t": 0.01}]
    text = "".join(json.dumps(r) + "\n" for r in good) + '{"step": 20, "metric": "f_m'
    (run / "metrics.jsonl").write_text(text)
    recs = read_metrics(run)
    assert recs == good
    s, v, e = metric_series(run, "f_mem")
    np.testing.assert_array_equal(s, [0, 10])
    np.testing.assert_allclose(v, [0.0, 0.5])
    assert metric_series(run, "loss/test", t=0.01)[0].tolist() == [10]
    assert metric_series(run, "loss/test", t=0.1)[0].size == 0
    (run / "metrics.jsonl").write_text('{"bad\n' + text)
    with pytest.raises(DiffmemError):
        read_metrics(run)
    with pytest.raises(DiffmemError):
        read_config(run)


def test_make_report_on_synthetic_sweep(tmp_path):
    from diffmem.report import make_report

    ns = (64, 128, 256, 512)
    sweep = make_synthetic_sweep(tmp_path / "sweep", ns=ns)
    assert len(list_runs(sweep)) == 4
    out = tmp_path / "report"
    summary = make_report(sweep, out, n_boot=300)
    for key in ("n", "width", "tau_gen", "tau_gen_ci", "tau_mem", "tau_mem_ci", "slope", "slope_ci", "kappa",
                "figures"):
        assert key in summary
    assert summary["n"] == list(ns)
    assert len(summary["tau_gen"]) == len(summary["tau_mem"]) == 4
    assert all(summary["tau_mem_reached"])
    assert 0.7 <= summary["slope"] <= 1.3
    spread = max(summary["tau_gen"]) / min(summary["tau_gen"])
    assert spread <= 2.0
    for p in summary["figures"].values():
        assert Path(p).stat().st_size > 5000 and Path(p).read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob("*.tmp"))
    json.loads((out / "summary.json").read_text())  # strict JSON, no NaN/inf needed


def test_make_report_two_widths_and_unreached(tmp_path):
    from diffmem.report import make_report

    sweep = make_synthetic_sweep(tmp_path / "sweep", ns=(64, 256, 1024, 4096), widths=(16, 32), steps=50_000)
    summary = make_report(sweep, tmp_path / "rep", n_boot=200)
    assert summary["width"] == [16] * 4 + [32] * 4
    # width 16, n = 4096: f_mem half-way at 100·4096·2 ≫ 50k steps → not reached, reported as None
    i = summary["n"].index(4096)
    assert summary["tau_mem"][i] is None and summary["tau_mem_reached"][i] is False
    assert set(summary["fits"]) == {"16", "32"}
    assert summary["phase_boundary"]


def test_tau_gen_improvement_reference_ignores_best_level():
    # two runs that improve 100 -> best along the same time course but to different best levels
    s = np.arange(1, 41, dtype=float)
    shape = np.exp(-s / 5.0)
    lo = 2.0 + 98.0 * shape  # best ~2
    hi = 20.0 + 80.0 * shape  # best ~20
    e_lo = tau_gen(s, lo, rel_tol=0.1, smooth=1, reference="improvement")
    e_hi = tau_gen(s, hi, rel_tol=0.1, smooth=1, reference="improvement")
    assert e_lo.value == e_hi.value  # same fraction of the improvement reached at the same step
    assert e_lo.details["reference"] == "improvement"
    b_lo = tau_gen(s, lo, rel_tol=0.1, smooth=1, reference="best")
    b_hi = tau_gen(s, hi, rel_tol=0.1, smooth=1, reference="best")
    assert b_lo.value >= 1.5 * b_hi.value  # "within 10 % of best" depends on the best level (31 vs 19)


def test_tau_gen_common_target_level():
    s = np.arange(1, 41, dtype=float)
    common = 100.0 * np.exp(-s / 5.0)  # the n-independent generalisation phase
    small_n = np.maximum(common, 12.0)  # plateau 12 (few training points)
    large_n = np.maximum(common, 2.0)  # plateau 2
    target = 12.0 * 1.1
    a = tau_gen(s, small_n, smooth=1, target=target)
    b = tau_gen(s, large_n, smooth=1, target=target)
    assert a.reached and b.reached and a.details["reference"] == "target"
    assert a.value == b.value  # both reach the common level at the same time
    assert tau_gen(s, large_n, smooth=1).value > 1.5 * b.value  # 'within 10 % of own best' waits for the plateau
    never = tau_gen(s, small_n, smooth=1, target=5.0)
    assert not never.reached and never.value == math.inf and never.low == 40.0
    with pytest.raises(DiffmemError, match="target"):
        tau_gen(s, small_n, target=float("nan"))


def test_make_report_phase_multiples(tmp_path):
    from diffmem.report import make_report

    sweep = make_synthetic_sweep(tmp_path / "sweep")
    summary = make_report(sweep, tmp_path / "rep", n_boot=100, phase_multiples=(1, 30, 300))
    tg = float(np.median(summary["tau_gen"]))
    b = summary["phase_boundary"]
    assert summary["phase_multiples"] == [1.0, 30.0, 300.0]
    assert [x["multiple"] for x in b] == [1.0, 30.0, 300.0]
    np.testing.assert_allclose([x["tau"] for x in b], [tg, 30 * tg, 300 * tg])
    # at τ_gen the small-n runs already memorise (onset ≈ 10 n steps here) but 256, 512 do not
    assert b[0]["status"] == "found" and b[0]["n_star"] == 256
    # at 30 τ_gen every tested n memorises; 300 τ_gen is beyond the 200k steps trained
    assert b[1]["status"] == "all_memorise" and b[1]["n_star"] is None
    assert b[2]["status"] == "not_trained"
    for bad in [(), (0, 3), (1, float("nan"))]:
        with pytest.raises(DiffmemError, match="phase_multiples"):
            make_report(sweep, tmp_path / "bad", n_boot=10, phase_multiples=bad)
        assert not (tmp_path / "bad").exists()
