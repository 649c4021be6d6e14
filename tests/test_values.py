"""The numbers the evaluator records are the right ones, and resume is exact where RNG paths matter."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from diffmem.config import resolve_config
from diffmem.data import Dataset, load_dataset
from diffmem.metrics.memorization import memorization_fraction
from diffmem.rundir import Run
from diffmem.train import _batch_indices, train

TINY = ["n=16", "steps=30", "threads=1", "eval.n_samples=32", "eval.quality=fd_pixel", "eval.n_boot=50",
        "eval.n_loss=64", "checkpoints_per_decade=4"]


def _recs(run, metric, **kw):
    return {r["step"]: r for r in run.read_metrics() if r["metric"] == metric
            and all(r.get(k) == v for k, v in kw.items())}


def test_recorded_f_mem_is_the_audit_of_the_saved_samples_against_the_training_subset(tmp_path):
    cfg = resolve_config("digits", None, [*TINY, "n=4", "steps=600", "subset_seed=3"])
    run = train(cfg, tmp_path / "r", progress=False)
    train_set = load_dataset("digits").subset(4, 3)
    fm = _recs(run, "f_mem")
    assert max(r["value"] for r in fm.values()) > 0  # the check below is not about zeros only
    for step in (run.checkpoint_steps()[len(run.checkpoint_steps()) // 2], run.checkpoint_steps()[-1]):
        a = memorization_fraction(run.load_samples(step), train_set, n_boot=50, seed=step)
        assert fm[step]["value"] == a["f_mem"]
        assert [fm[step]["ci_low"], fm[step]["ci_high"]] == a["ci95"]
    # against the whole pool (a wrong reference) the value differs at the memorising end
    last = run.checkpoint_steps()[-1]
    pool = memorization_fraction(run.load_samples(last), load_dataset("digits").pool, n_boot=0)["f_mem"]
    assert pool != fm[last]["value"]


def _dataset(test_shift: float | None) -> Dataset:
    ds = load_dataset("digits")
    pool = ds.pool[:16].clone()
    test = pool.clone() if test_shift is None else ds.pool[16:80] + test_shift
    return Dataset(name="probe", pool=pool, test=test, mean=ds.mean)


def test_train_and_held_out_losses_come_from_their_own_sets(tmp_path):
    cfg = resolve_config("digits", None, [*TINY, "steps=200", "eval.quality=", "eval.loss_draws=20"])
    same = train(cfg, tmp_path / "same", dataset=_dataset(None), progress=False)
    shifted = train(cfg, tmp_path / "shift", dataset=_dataset(0.5), progress=False)
    for t in (0.01, 0.1):
        tr, te = _recs(same, "loss/train", t=t), _recs(same, "loss/test", t=t)
        last = max(tr)
        # held-out = training set: no gap beyond the noise-draw error (different fixed draws)
        assert abs(te[last]["value"] - tr[last]["value"]) < 0.1 * tr[last]["value"]
        tr2, te2 = _recs(shifted, "loss/train", t=t), _recs(shifted, "loss/test", t=t)
        assert te2[last]["value"] > 1.5 * tr2[last]["value"]  # a shifted held-out set shows the shift
        assert tr2[last]["value"] == tr[last]["value"]  # the train probe does not depend on the held-out set


@pytest.mark.parametrize("n, batch_max", [(16, 4), (3, 16), (10, 10)])
def test_batch_size_follows_min_n_batch_max(tmp_path, n, batch_max):
    batch = min(n, batch_max)
    for step in range(1, 8):
        idx = _batch_indices(n, batch, step, seed=0)
        assert len(idx) == batch and len(set(idx.tolist())) == batch
    epoch = torch.cat([_batch_indices(n, batch, s, 0) for s in range(1, n // batch + 1)])
    if n % batch == 0:  # one epoch visits every point once
        assert sorted(epoch.tolist()) == list(range(n))


UNET = ["model.name=unet", "model.width=8", "model.blocks=1", "model.dropout=0.3", "n=24", "batch_max=8",
        "steps=60", "threads=1", "eval.n_samples=4", "eval.quality=fd_pixel", "eval.n_boot=10", "eval.n_loss=8",
        "eval.loss_t=0.1", "eval.loss_draws=1", "eval.sampler_steps=2", "checkpoints_per_decade=3"]


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "diffmem.cli", *args], env


def test_sigkill_resume_with_minibatches_and_dropout(tmp_path):
    """n > batch_max (real minibatches over epochs) and a dropout U-Net: both RNG paths are exercised."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    cmd, env = _cli("train", "--preset", "digits", "--out", str(full), "--no-progress", *UNET)
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    cmd, env = _cli("train", "--preset", "digits", "--out", str(killed), "--no-progress", *UNET)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        m = killed / "metrics.jsonl"
        if m.exists() and any(json.loads(line)["step"] >= 25 for line in m.read_text().splitlines()[-3:]
                              if line.endswith("}")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "run finished before it could be killed"
    time.sleep(0.3)  # some steps past that checkpoint: the resume must redo them exactly
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    st = torch.load(killed / "state.pt", weights_only=True)
    assert 0 < st["step"] < 60
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    assert (full / "metrics.jsonl").read_bytes() == (killed / "metrics.jsonl").read_bytes()
    a, b = (load_file(str(Run(r).checkpoint_path(60))) for r in (full, killed))
    assert all(np.array_equal(a[k], b[k]) for k in a)


def test_dropout_is_reseeded_per_step(tmp_path):
    """Two runs differing only in seed differ; the same seed reproduces (dropout on the step's RNG)."""
    cfg = resolve_config("digits", None, [*UNET, "steps=6", "eval.n_samples=4"])
    a = train(cfg, tmp_path / "a", progress=False)
    b = train(cfg, tmp_path / "b", progress=False)
    assert a.metrics_path.read_bytes() == b.metrics_path.read_bytes()


# --------------------------------------------------------------------------- numbers against references


def test_common_tau_gen_target_is_the_worst_runs_best_plus_rel_tol(tmp_path):
    """analyse(tau_gen_reference="common"): per width, target = max over runs of min(median3(q)) · (1 + rel_tol)."""
    from test_timescales import make_synthetic_sweep

    from diffmem.analysis import TauDefinitions, analyse
    from diffmem.timescales import running_median

    sweep = make_synthetic_sweep(tmp_path / "sw", ns=(64, 256))
    a = analyse(sweep, TauDefinitions(tau_gen_reference="common", rel_tol=0.1, n_boot=10))
    bests = [np.nanmin(running_median(r.quality[1], 3)) for r in a.runs]
    target = max(bests) * 1.1
    for r in a.runs:
        s, q, _ = r.quality
        qs = running_median(q, 3)
        assert r.tau_gen.value == s[np.flatnonzero(qs <= target)[0]]
        assert r.tau_gen.details["threshold"] == pytest.approx(target, rel=1e-12)


def test_parametric_bootstrap_matches_a_naive_loop():
    """tau_mem(level)'s interval against a plain re-implementation drawing default_rng(seed) replicate by replicate."""
    from diffmem.timescales import _level_cross, tau_mem

    s = np.geomspace(1, 1e4, 30)
    f = np.clip(0.8 / (1 + (2000 / s) ** 2), 0, 1)
    se = np.full_like(f, 0.03)
    est = tau_mem(s, f, stderr=se, method="level", n_boot=300, seed=7)
    rng, vals = np.random.default_rng(7), []
    for _ in range(300):
        fb = np.clip(f + se * rng.standard_normal(f.size), 0, 1)
        if fb[-1] > 0:
            c = _level_cross(s, fb / fb[-1], 0.5)
            if c is not None:
                vals.append(c[0])
    assert est.details["bootstrap"] == pytest.approx(list(np.percentile(vals, [2.5, 97.5])), rel=1e-12)
    other = tau_mem(s, f, stderr=se, method="level", n_boot=300, seed=8)
    assert other.value == est.value and other.details["bootstrap"] != est.details["bootstrap"]


def test_running_loss_is_the_mean_batch_loss_since_the_previous_checkpoint(tmp_path):
    from diffmem.callbacks import Callback

    class Losses(Callback):
        def __init__(self):
            self.seen = {}

        def on_step_end(self, ctx, step, loss):
            self.seen[step] = loss

    probe = Losses()
    run = train(resolve_config("digits", None, [*TINY, "eval.n_samples=4"]), tmp_path / "r", callbacks=[probe],
                progress=False)
    sched = run.read_schedule()
    rec = _recs(run, "train/loss_running")
    for a, b in zip(sched[:-1], sched[1:]):
        want = float(np.mean([probe.seen[k] for k in range(a + 1, b + 1)]))
        assert rec[b]["value"] == pytest.approx(want, rel=1e-12)


def test_heun_is_second_order_on_gaussian_data():
    """Gaussian data N(0, s²): the PF-ODE is linear, x(0) = x(σ_max)·s/√(s² + σ_max²) exactly."""
    from diffmem.closed_form import GaussianDenoiser
    from diffmem.samplers import heun
    from diffmem.schedules import karras_sigmas

    s2 = 0.3**2
    den = GaussianDenoiser(torch.zeros(1, dtype=torch.float64), torch.full((1, 1), s2, dtype=torch.float64))
    z = torch.randn(64, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    errs = []
    for n in (16, 32, 64):
        sg = karras_sigmas(n, 0.002, 80.0)
        # exact flow from σ_max to 0: x(σ) = x(σ_max) √((s² + σ²)/(s² + σ_max²))
        exact = z * sg[0] * np.sqrt(s2 / (s2 + sg[0] ** 2))
        errs.append(float((heun(den, z, sg) - exact).abs().max()))
    assert errs[2] < 5e-3  # measured 0.004 at 64 steps (0.080, 0.017 at 16, 32)
    assert errs[0] / errs[1] > 3 and errs[1] / errs[2] > 3  # second order (Euler would give ~2)
