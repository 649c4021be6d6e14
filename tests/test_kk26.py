"""KK26 measurements (issue 10): gap per noise level, sample-level FD gap, trajectories, exact likelihood."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from diffmem.closed_form import EmpiricalDenoiser, ExactDenoiser, GaussianDenoiser
from diffmem.data import GaussianMixture
from diffmem.errors import DiffmemError
from diffmem.likelihood import kl_divergence, log_likelihood, sample_with_log_likelihood
from diffmem.metrics.gap import denoising_errors, gap_sigmas, peak, relative_gap
from diffmem.metrics.trajectory import TrajectoryRecorder, record_indices, trajectory_stats
from diffmem.samplers import generate


def _mixture(d=8, dtype=torch.float64):
    mix = GaussianMixture(torch.ones(d))
    mix.mu = mix.mu.to(dtype)
    return mix


# --------------------------------------------------------------------------- gap per noise level


def test_batched_errors_equal_a_per_sigma_loop():
    torch.manual_seed(0)
    train = torch.randn(20, 3, 2, 2)
    den = EmpiricalDenoiser(train)
    y, nz = torch.randn(13, 3, 2, 2), torch.randn(13, 3, 2, 2)
    sg = gap_sigmas(0.01, 50.0, 9)
    fast = denoising_errors(den, y, nz, sg, batch_rows=7).numpy()
    naive = []
    for s in sg:
        sv = torch.full((13,), float(s))
        naive.append(float((den(y + float(s) * nz, sv) - y).pow(2).reshape(13, -1).sum(1).mean()) / 12)
    np.testing.assert_allclose(fast, naive, rtol=1e-5)
    root = denoising_errors(den, y, nz, sg, squared=False).numpy()
    ref = [float(((den(y + float(s) * nz, torch.full((13,), float(s))) - y).pow(2).reshape(13, -1).sum(1) / 12)
                 .sqrt().mean()) for s in sg]
    np.testing.assert_allclose(root, ref, rtol=1e-5)


def test_grid_is_64_log_spaced_over_the_edm_range():
    sg = gap_sigmas(0.002, 80.0)
    assert len(sg) == 64 and sg[0] == pytest.approx(0.002) and sg[-1] == pytest.approx(80.0)
    assert np.allclose(np.diff(np.log(sg)), np.log(80 / 0.002) / 63)
    with pytest.raises(DiffmemError, match="sigma_min < sigma_max"):
        gap_sigmas(1.0, 0.5)


def test_gap_is_zero_without_a_training_set_and_positive_for_a_memorising_denoiser():
    """The exact mixture denoiser never saw a training set: G ≈ 0 at every σ (within sampling error);
    the empirical denoiser of the same training points has a clear peak at an intermediate σ."""
    mix = _mixture(8, torch.float32)
    g = torch.Generator().manual_seed(1)
    train, val = mix.sample(64, generator=g), mix.sample(2000, generator=g)
    sg = gap_sigmas(0.002, 80.0)
    nz_tr, nz_va = torch.randn(train.shape, generator=g), torch.randn(val.shape, generator=g)
    exact = ExactDenoiser(mix)
    # train and held-out drawn alike: per-image errors are iid, so G's error is ~ the relative SE of e_train
    e_tr, e_va = denoising_errors(exact, train, nz_tr, sg), denoising_errors(exact, val, nz_va, sg)
    G = relative_gap(e_tr.numpy(), e_va.numpy())
    assert np.abs(G).max() < 0.35  # 64 training images: SE of a mean of chi-square-like errors ~ 0.1
    assert abs(np.mean(G)) < 0.1
    emp = EmpiricalDenoiser(train)
    G_emp = relative_gap(denoising_errors(emp, train, nz_tr, sg).numpy(), denoising_errors(emp, val, nz_va, sg).numpy())
    ps, pg = peak(sg, G_emp)
    assert pg > 5 and 0.05 < ps < 20, (ps, pg)  # the memorising denoiser: train error ≪ held-out error
    assert G_emp[-1] < 0.1 * pg  # at σ = 80 both errors are the data variance: no gap


def test_gap_same_points_is_exactly_zero_through_the_evaluator(tmp_path):
    """A run whose held-out set *is* its training set (same images, same noise draws) has G ≡ 0."""
    from diffmem.config import resolve_config
    from diffmem.data import Dataset
    from diffmem.evaluate import Evaluator
    from diffmem.models import build_model

    pool = torch.randn(40, 4)
    cfg = resolve_config(None, None, ["model.name=gaussian", "n=16", "eval.quality=", "eval.n_samples=8",
                                      "eval.trajectory=0", "eval.n_gap=16", "data=gmm:d=4"])
    train = pool[:16]
    ds = Dataset(name="same", pool=pool, test=train.clone())
    den, _ = build_model(cfg.model, ds.shape, ds, train)
    ev = Evaluator(cfg, ds, train, None, "cpu", save_samples=False)
    ev.gap[1]["test"] = ev.gap[1]["train"]  # the same noise draw too: nothing distinguishes the two sets
    recs = ev(den, 0)
    G = [r["value"] for r in recs if r["metric"] == "gap/G"]
    e = [r["value"] for r in recs if r["metric"] == "gap/e_train"]
    assert len(G) == 64 and min(e) > 0 and max(abs(v) for v in G) == 0.0


# --------------------------------------------------------------------------- exact likelihood


def test_exact_divergence_log_density_of_a_gaussian():
    torch.manual_seed(3)
    a = torch.randn(5, 5, dtype=torch.float64)
    cov = a @ a.T / 5 + 0.2 * torch.eye(5, dtype=torch.float64)
    mean = torch.randn(5, dtype=torch.float64)
    den = GaussianDenoiser(mean, cov)
    lo, hi = 0.01, 50.0

    def logn(x, s):
        c = cov + s * s * torch.eye(5, dtype=torch.float64)
        return torch.distributions.MultivariateNormal(mean, c).log_prob(x)

    x = torch.distributions.MultivariateNormal(mean, cov + lo * lo * torch.eye(5, dtype=torch.float64)).sample((32,))
    lp = log_likelihood(den, x, lo, hi, prior_logp=lambda z: logn(z, hi), rtol=1e-6, atol=1e-6)
    assert (lp - logn(x, lo)).abs().max() < 1e-4


def test_mixture_log_density_to_1e3_nats_and_kl_of_the_truth_is_zero():
    mix = _mixture(8)
    den = ExactDenoiser(mix)
    g = torch.Generator().manual_seed(0)
    lo, hi = 0.002, 80.0
    x = mix.sample(200, generator=g).double() + lo * torch.randn(200, 8, generator=g, dtype=torch.float64)
    lp = log_likelihood(den, x, lo, hi, prior_logp=lambda z: mix.log_prob(z, hi))
    assert float((lp - mix.log_prob(x, lo)).abs().mean()) < 1e-3
    # the model's own ODE samples and their density (VE prior N(0, σ_max² I), as every sampler starts)
    xs, lps = sample_with_log_likelihood(den, (8,), range(100), lo, hi, dtype=torch.float64)
    assert float((lps - mix.log_prob(xs, lo)).abs().mean()) < 1e-3
    r = kl_divergence(den, lambda z: mix.log_prob(z.double(), lo), (8,), range(300), lo, hi)
    assert abs(r["kl"]) < 3 * r["stderr"] + 1e-3 and r["n"] == 300


def test_hutchinson_is_unbiased_and_the_exact_trace_is_refused_in_high_dimension():
    mix = _mixture(4)
    den = ExactDenoiser(mix)
    g = torch.Generator().manual_seed(5)
    x = mix.sample(400, generator=g).double()
    true = mix.log_prob(x, 0.01)
    lp = log_likelihood(den, x, 0.01, 80.0, prior_logp=lambda z: mix.log_prob(z, 80.0), divergence="hutchinson")
    err = (lp - true).numpy()
    assert abs(err.mean()) < 4 * err.std() / math.sqrt(err.size)
    assert err.std() > 1e-3  # a single probe per sample is noisy: this is the estimator, not the exact trace
    with pytest.raises(DiffmemError, match="hutchinson"):
        log_likelihood(lambda z, s: z, torch.zeros(2, 300), 0.01, 1.0)
    with pytest.raises(DiffmemError, match="unknown divergence"):
        log_likelihood(den, x, 0.01, 80.0, divergence="skilling")


def test_kl_of_a_memorising_model_is_large():
    """The empirical denoiser of 16 mixture points concentrates its ODE samples on them: KL ≫ 0."""
    mix = _mixture(2)
    train = mix.sample(16, generator=torch.Generator().manual_seed(0)).double()
    r = kl_divergence(EmpiricalDenoiser(train), lambda z: mix.log_prob(z.double(), 0.01), (2,), range(64), 0.01,
                      80.0)
    assert r["kl"] > 3.0 and r["kl"] > 5 * r["stderr"]


# --------------------------------------------------------------------------- trajectories


def test_recorder_is_batch_size_independent_and_reproducible():
    train = torch.randn(30, 6, generator=torch.Generator().manual_seed(2))
    den = EmpiricalDenoiser(train)
    sg = [80.0, 10.0, 1.0, 0.1, 0.0]
    out = []
    for bs in (4, 100, 100):
        rc = TrajectoryRecorder(10, [0, 2, 3])
        generate(den, (6,), list(range(25)), sampler="heun", sigmas=sg, batch_size=bs, callback=rc)
        out.append(rc.result())
    for other in out[1:]:
        assert [s for s, _, _ in other] == [s for s, _, _ in out[0]] == pytest.approx([80.0, 1.0, 0.1])
        for (_, x0, d0), (_, x1, d1) in zip(out[0], other):
            assert x0.shape == (10, 6)
            assert torch.allclose(x0, x1, atol=1e-6) and torch.allclose(d0, d1, atol=1e-6)


def test_record_indices_spread_in_log_sigma():
    sg = np.r_[np.geomspace(80, 0.002, 200), 0.0]
    idx = record_indices(sg, 16)
    assert len(idx) <= 16 and idx[0] == 0 and idx[-1] == 199 and 200 not in idx
    assert record_indices([3.0, 2.0, 1.0, 0.0]) == [0, 1, 2]


def test_trajectories_of_a_copier_and_of_a_generaliser():
    """Empirical denoiser: trajectories end on training points (denoised copies = 1, distance to the noisy
    training set as small as that of noisy training points).  The exact mixture denoiser generalises: its
    trajectory states stay far from the noisy training set at small σ, and nothing is copied."""
    mix = _mixture(8, torch.float32)
    g = torch.Generator().manual_seed(4)
    train = mix.sample(32, generator=g)
    noise, noise_ref = torch.randn(train.shape, generator=g), torch.randn(train.shape, generator=g)
    sg = np.r_[np.geomspace(80, 0.002, 40), 0.0]
    res = {}
    for name, den in (("emp", EmpiricalDenoiser(train)), ("exact", ExactDenoiser(mix))):
        rc = TrajectoryRecorder(64, record_indices(sg, 8))
        generate(den, (8,), list(range(64)), sampler="heun", sigmas=sg, callback=rc)
        res[name] = trajectory_stats(den, rc.result(), train, noise, noise_ref, 32)
    small_emp, small_ex = res["emp"][-1], res["exact"][-1]
    assert small_emp["sigma"] == pytest.approx(0.002) and small_emp["denoised_copy"] == 1.0
    assert small_emp["dist_noisy"] < 2 * small_emp["dist_noisy_train"] + 1e-3
    assert small_ex["denoised_copy"] == 0.0 and small_ex["denoised_copy_train"] == 1.0
    assert small_ex["dist_noisy"] > 20 * small_ex["dist_noisy_train"]


# --------------------------------------------------------------------------- through the evaluator and the CLI


def test_evaluator_records_kk26_metrics_reproducibly(tmp_path):
    from diffmem.config import resolve_config
    from diffmem.data import load_dataset
    from diffmem.evaluate import Evaluator
    from diffmem.models import build_model

    cfg = resolve_config(None, None, ["model.name=empirical", "n=32", "data=digits", "eval.quality=fd_pixel",
                                      "eval.n_samples=64", "eval.sampler=heun", "eval.sampler_steps=12",
                                      "eval.trajectory=16", "eval.n_gap=32"])
    ds = load_dataset(cfg.data)
    train = ds.subset(cfg.n, cfg.subset_seed)
    den, _ = build_model(cfg.model, ds.shape, ds, train)
    runs = [Evaluator(cfg, ds, train, None, "cpu", save_samples=False)(den, 0) for _ in range(2)]
    assert runs[0] == runs[1]
    by = {}
    for r in runs[0]:
        by.setdefault(r["metric"], []).append(r)
    assert len(by["gap/e_train"]) == 64 and len(by["gap/peak"]) == 1
    assert 0 < len(by["gap/G"]) < 64  # the copier's training error is exactly 0 at tiny σ: G undefined there
    sig = [r["sigma"] for r in by["gap/e_train"]]
    assert sig[0] == pytest.approx(0.002) and sig[-1] == pytest.approx(80.0)  # a closed form: EDM's range
    # the empirical denoiser copies: its samples are training points, nearer the training set than the held-out
    assert by["fd_gap/fd_pixel/train"][0]["value"] < 0.5 * by["fd_gap/fd_pixel/test"][0]["value"]
    assert {r["metric"] for r in runs[0] if r["metric"].startswith("traj/")} == {
        "traj/dist_noisy", "traj/dist_noisy_train", "traj/denoised_nn", "traj/denoised_nn_train",
        "traj/denoised_copy", "traj/denoised_copy_train"}
    assert by["gap/peak"][0]["value"] > 1.0
    # the copier reproduces its training set: its held-out FD is the training-to-held-out FD itself
    assert by["fd_gap/fd_pixel/test"][0]["value"] == pytest.approx(by["fd_gap/fd_pixel/train_vs_test"][0]["value"],
                                                                  rel=0.2)


@pytest.mark.parametrize("over, msg", [
    (["eval.kl=exact"], "known density"),
    (["eval.kl_samples=10"], "eval.kl_samples is not used"),
    (["eval.gap_sigmas=0", "eval.n_gap=5"], "eval.n_gap is not used"),
    (["eval.quality=", "eval.fd_gap=true"], "eval.fd_gap needs a Fréchet distance"),
    (["eval.kl=bogus"], "must be '', exact or hutchinson"),
    (["eval.gap_sigmas=1"], "must be 0 \\(off\\) or ≥ 2"),
])
def test_bad_kk26_options_are_one_line_errors(tmp_path, capsys, over, msg):
    from diffmem.cli import main

    out = tmp_path / "run"
    rc = main(["train", "--preset", "digits", "--out", str(out), "n=16", "steps=2", *over])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert __import__("re").search(msg, err), err
    assert not out.exists()


def test_tau_gap_and_series_from_records():
    from diffmem.analysis import kk26_series, tau_gap

    recs = []
    for step, peak_ in ((0, 0.01), (10, 0.05), (20, 0.12), (30, 0.08), (40, 0.2), (50, 0.3)):
        recs.append({"step": step, "metric": "gap/peak", "value": peak_, "sigma": 1.0})
        for s, g in ((0.1, peak_ / 2), (1.0, peak_)):
            recs.append({"step": step, "metric": "gap/G", "value": g, "sigma": s})
        recs.append({"step": step, "metric": "kl", "value": step / 10, "error": 0.1})
    k = kk26_series(recs)
    steps, sig, G = k["gap"]["G"]
    assert list(sig) == [0.1, 1.0] and G.shape == (6, 2) and G[2, 1] == 0.12
    assert list(k["kl"][1]) == [0, 1, 2, 3, 4, 5]
    st, pk, _ = k["gap_peak"]
    assert tau_gap(st, pk, 0.1, persist=2) == 40.0  # 20 reaches 0.1 but 30 falls back below
    assert tau_gap(st, pk, 0.1, persist=1) == 20.0
    assert tau_gap(st, pk, 0.5) is None


def test_a_trained_run_reports_its_kk26_figures(tmp_path):
    from diffmem.config import resolve_config
    from diffmem.report import make_report
    from diffmem.rundir import Run
    from diffmem.train import train

    cfg = resolve_config("digits", None, ["n=16", "steps=12", "model.width=32", "eval.n_samples=32",
                                          "eval.quality=fd_pixel", "eval.trajectory=8", "eval.n_gap=16",
                                          "checkpoints_per_decade=4"])
    train(cfg, Run(tmp_path / "sweep" / "r16"), progress=False)
    s = make_report(tmp_path / "sweep", tmp_path / "rep")
    for name in ("gap", "gap_heatmap", "gap_vs_fmem", "fd_gap", "trajectories"):
        assert (tmp_path / "rep" / f"{name}.png").stat().st_size > 10_000, name
    assert "kl" not in s["figures"]  # digits have no known density: no KL measured, no figure
    assert s["gap_peak_final"][0] is not None and s["kl_final"] == [None]
