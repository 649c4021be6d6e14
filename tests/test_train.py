"""Training loop: exact resume after SIGKILL, run-directory contents, CLI errors."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from diffmem.cli import main

QUICK = ["n=16", "steps=240", "threads=1", "eval.n_samples=32", "eval.quality=fd_pixel", "eval.n_boot=50",
         "eval.n_loss=64", "checkpoints_per_decade=8"]


def _cli(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return [sys.executable, "-m", "diffmem.cli", *args], env


def _final_weights(run: Path):
    last = sorted((run / "checkpoints").glob("step_*.safetensors"))[-1]
    return last.name, load_file(str(last))


def test_resume_after_sigkill_is_identical(tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cmd, env = _cli("train", "--out", str(full), "--no-progress", "--preset", "digits", *QUICK)
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    cmd, env = _cli("train", "--out", str(killed), "--no-progress", "--preset", "digits", *QUICK)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    state = killed / "state.pt"
    # kill once a checkpoint past the half-way point has been started
    while time.time() < deadline and proc.poll() is None:
        m = killed / "metrics.jsonl"
        if m.exists() and any(json.loads(l)["step"] >= 100 for l in m.read_text().splitlines()[-3:] if l.endswith("}")):
            break
        time.sleep(0.01)
    assert proc.poll() is None, "run finished before it could be killed; make it longer"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert state.exists()
    import torch

    assert torch.load(state, weights_only=False)["step"] < 240
    cmd, env = _cli("train", "--out", str(killed), "--no-progress", "--preset", "digits", *QUICK)
    subprocess.run(cmd, env=env, check=True, capture_output=True)

    a = (full / "metrics.jsonl").read_text().splitlines()
    b = (killed / "metrics.jsonl").read_text().splitlines()
    assert len(a) > 50
    assert a == b
    (na, wa), (nb, wb) = _final_weights(full), _final_weights(killed)
    assert na == nb == "step_00000240.safetensors"
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k])
    assert not list(killed.rglob("*.tmp*"))


def test_run_directory_contents(tmp_path):
    run = tmp_path / "r"
    assert main(["train", "--out", str(run), "--no-progress", "--preset", "digits", *QUICK[:-1], "steps=30"]) == 0
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["n"] == 16 and cfg["data_shape"] == [1, 8, 8] and cfg["batch_size"] == 16
    sched = json.loads((run / "schedule.json").read_text())["checkpoints"]
    assert sched[0] == 0 and sched[-1] == 30 and sched == sorted(set(sched))
    recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in recs} == set(sched)
    names = {r["metric"] for r in recs}
    assert {"f_mem", "quality/fd_pixel", "loss/train", "loss/test", "samples/finite_fraction"} <= names
    # the same sample seeds at every checkpoint: samples file per checkpoint, same shape
    s = sorted((run / "samples").glob("step_*.npy"))
    assert len(s) == len(sched) and np.load(s[0]).shape == (32, 1, 8, 8)
    # a second identical call resumes (nothing to do) and does not duplicate lines
    assert main(["train", "--out", str(run), "--no-progress", "--preset", "digits", *QUICK[:-1], "steps=30"]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(recs)
    # a different config in the same directory is refused; fewer steps too
    assert main(["train", "--out", str(run), "--no-progress", "--preset", "digits", *QUICK[:-1], "steps=30", "seed=1"]) == 2
    assert main(["train", "--out", str(run), "--no-progress", "--preset", "digits", *QUICK[:-1], "steps=29"]) == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == len(recs)


def _bad_npy(tmp_path, kind):
    if kind in ("nan", "inf"):
        a = np.random.default_rng(0).normal(size=(40, 8)).astype(np.float32)
        a[3, 2] = np.nan if kind == "nan" else -np.inf
    else:
        a = np.zeros((2, 8), np.float32)
    p = tmp_path / f"{kind}.npy"
    np.save(p, a)
    return str(p)


@pytest.mark.parametrize("case, match", [
    (lambda t: ["--preset", "nope"], "unknown preset"),
    (lambda t: ["steps=0"], "'steps' must be positive"),
    (lambda t: ["steps=-5"], "'steps' must be positive"),
    (lambda t: ["n=1"], "at least 2 training points"),
    (lambda t: [f"data={_bad_npy(t, 'nan')}", "n=8"], "NaN or inf"),
    (lambda t: [f"data={_bad_npy(t, 'inf')}", "n=8"], "NaN or inf"),
    (lambda t: [f"data={_bad_npy(t, 'two')}", "n=2"], "at least 2 training points"),
    (lambda t: ["n=5000"], "exceeds"),
    (lambda t: ["model.widht=3"], "unknown config key"),
    (lambda t: ["optim.lr=abc"], "optim.lr"),
])
def test_train_bad_input_exits_2_with_one_line(tmp_path, capsys, case, match):
    run = tmp_path / "run"
    code = main(["train", "--out", str(run), "--no-progress", "--preset", "digits", *case(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("diffmem: error:") and "\n" not in err
    assert match in err
    assert not run.exists(), "nothing may be written for a rejected run"


SWEEP_EVAL = ["threads=1", "eval.n_samples=32", "eval.quality=fd_pixel", "eval.n_boot=50", "eval.n_loss=64",
              "checkpoints_per_decade=4"]


def test_sweep_cli_steps_per_n_widths_and_rerun(tmp_path, capsys):
    out = tmp_path / "sw"
    args = ["sweep", "--preset", "digits", "--n", "8,16", "--width", "16,32", "--steps-per-n", "5", "--executor", "serial",
            "--out", str(out), "--quality-metric", "quality/fd_pixel", "--phase-multiples", "1,2", *SWEEP_EVAL]
    assert main(args) == 0
    runs = sorted(p for p in out.iterdir() if p.is_dir() and (p / "config.json").exists())
    assert len(runs) == 4
    cfgs = [json.loads((r / "config.json").read_text()) for r in runs]
    assert sorted((c["model"]["width"], c["n"], c["steps"]) for c in cfgs) == [
        (16, 8, 40), (16, 16, 80), (32, 8, 40), (32, 16, 80)]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n"] == [8, 16, 8, 16] and summary["width"] == [16, 16, 32, 32]
    assert {b["width"] for b in summary["phase_boundary"]} == {16, 32}
    assert summary["phase_multiples"] == [1.0, 2.0] and summary["quality_metric"] == "quality/fd_pixel"
    before = {r.name: (r / "metrics.jsonl").read_bytes() for r in runs}
    assert main(args) == 0  # a finished sweep re-runs as a no-op
    assert {r.name: (r / "metrics.jsonl").read_bytes() for r in runs} == before
    capsys.readouterr()
    bad = tmp_path / "bad"
    assert main(["sweep", "--preset", "digits", "--n", "8", "--steps-per-n", "0", "--out", str(bad), *SWEEP_EVAL]) == 2
    err = capsys.readouterr().err.strip()
    assert "--steps-per-n must be positive" in err and "\n" not in err
    assert not bad.exists()
    assert main(["sweep", "--preset", "digits", "--n", "8", "--phase-multiples", "1,x", "--out", str(bad), *SWEEP_EVAL]) == 2
    assert "--phase-multiples" in capsys.readouterr().err
    assert not bad.exists()
