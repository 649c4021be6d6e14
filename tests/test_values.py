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
