"""Bad input ends in one line naming the problem, exit 2, and nothing written (issue #8's appendix)."""

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from diffmem.cli import main

TINY = ["--preset", "digits", "n=16", "steps=20", "threads=1", "eval.n_samples=16", "eval.quality=fd_pixel",
        "eval.n_boot=20", "eval.n_loss=32", "checkpoints_per_decade=4"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--out", str(r), "--no-progress", *TINY]) == 0
    return r


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err, err
    for n in needles:
        assert n in err, err
    assert "np.float" not in err
    return err


def _toml(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return str(p)


TRAIN_CASES = [
    (["eval.sampler_steps=0"], "'eval.sampler_steps' must be ≥ 1"),
    (["eval.loss_draws=0"], "'eval.loss_draws'"),
    (["eval.n_loss=0"], "'eval.n_loss'"),
    (["eval.batch_size=0"], "'eval.batch_size'"),
    (["seed=-1"], "'seed' must be ≥ 0"),
    (["threads=-1"], "'threads'"),
    (["optim.momentum=-1"], "'optim.momentum' must be in [0, 1)"),
    (["optim.momentum=2"], "'optim.momentum'"),
    (["optim.weight_decay=-1"], "'optim.weight_decay'"),
    (["device=foo"], "'device' must be cpu, cuda"),
    (["eval.loss_t=-0.1"], "'eval.loss_t' entries must be > 0"),
    (["eval.loss_t=0"], "'eval.loss_t'"),
    (["model.dropout=1.5"], "'model.dropout'"),
    (["model.dropout=0.1"], "model 'mlp' takes no option model.dropout"),
    (["model.name=bubm25", "model.dropout=0.2"], "model 'bubm25' takes no option model.dropout"),
    (["optim.name=adam", "optim.momentum=0.9"], "does not use optim.momentum"),
    (["eval.sampler=rk4"], "'eval.sampler' must be one of"),
    (["steps=2.5"], "'steps' must be an integer"),
    (["model.name=empirical", "steps=100"], "closed form"),
]


@pytest.mark.parametrize("extra, needle", TRAIN_CASES, ids=[c[0][-1] for c in TRAIN_CASES])
def test_train_bad_values(tmp_path, capsys, extra, needle):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--no-progress", *TINY, *extra]) == 2
    _one_line(capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("text, needle", [
    ('steps = "two"\n', "'steps' must be an integer, got 'two'"),
    ('[model]\nwidth = "wide"\n', "'model.width' must be an integer, got 'wide'"),
    ('[eval]\nsave_samples = "no"\n', "'eval.save_samples' must be true or false"),
    ('data = 5\n', "'data' must be a string"),
    ('[eval]\nquality = "fd_pixel"\nloss_t = [0.01, "x"]\n', "'eval.loss_t' must be a number"),
])
def test_toml_values_of_the_wrong_type(tmp_path, capsys, text, needle):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--preset", "digits", "--config", _toml(tmp_path, text)]) == 2
    _one_line(capsys, needle)
    assert not out.exists()


def test_cuda_device_without_cuda(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["train", "--out", str(tmp_path / "r"), *TINY, "device=cuda"]) == 2
    _one_line(capsys, "CUDA is not available")


def _arrays(tmp_path):
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "empty.npz").write_bytes(b"")
    (tmp_path / "text.npy").write_text("1 2 3\n4 5 6\n")
    np.save(tmp_path / "rows0.npy", np.zeros((0, 4), np.float32))
    np.save(tmp_path / "complex.npy", (np.ones((20, 4)) + 1j).astype(np.complex64))
    rng = np.random.default_rng(0)
    np.save(tmp_path / "ten.npy", rng.integers(0, 256, size=(10, 8, 8), dtype=np.uint8))


@pytest.mark.parametrize("name, needle", [
    ("empty.npy", "is empty (0 bytes)"),
    ("empty.npz", "is empty (0 bytes)"),
    ("text.npy", "not a .npy file (no NumPy header)"),
    ("rows0.npy", "holds no rows"),
    ("complex.npy", "complex"),
    ("ten.npy", "need at least 2 held-out points"),  # 10 images at test=0.1: one held out
])
def test_bad_data_files(tmp_path, capsys, name, needle):
    _arrays(tmp_path)
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), *TINY, f"data={tmp_path / name}", "n=4"]) == 2
    err = _one_line(capsys, needle)
    assert "allow_pickle" not in err
    assert not out.exists(), "nothing may be written for a rejected run"


def test_train_out_is_a_file_or_a_foreign_folder(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["train", "--out", str(f), *TINY]) == 2
    _one_line(capsys, "is a file")
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    assert main(["train", "--out", str(d), *TINY]) == 2
    _one_line(capsys, "not a diffmem run directory")
    assert sorted(p.name for p in d.iterdir()) == ["notes.txt"]


def test_preset_is_never_silent(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "n=16"]) == 2
    _one_line(capsys, "--preset digits|gmm-bubm25|celeba-bubm25")
    assert main(["train", "--out", str(tmp_path / "r"), "--preset", "celeba-bubm25"]) == 2
    _one_line(capsys, "no data of its own", "data=PATH")
    assert not (tmp_path / "r").exists()


def test_no_resume_message(run, capsys):
    before = (run / "metrics.jsonl").read_bytes()
    assert main(["train", "--out", str(run), "--no-resume", *TINY]) == 2
    err = _one_line(capsys, "already holds a run", "--no-resume")
    assert "--resume" not in err.replace("--no-resume", "")
    assert (run / "metrics.jsonl").read_bytes() == before


def test_overrides_anywhere(tmp_path):
    out = tmp_path / "r"
    args = ["train", "--out", str(out), "--no-progress", *TINY[2:6], "--preset", "digits", *TINY[6:]]
    assert main(args) == 0
    assert json.loads((out / "config.json").read_text())["steps"] == 20


@pytest.mark.parametrize("args, needle", [
    (["--steps", "-5"], "--steps must be positive"),
    (["--steps", "0"], "--steps must be positive"),
    (["--n-samples", "0"], "--n-samples must be positive"),
    (["--sampler", "euler"], "unknown sampler"),
    (["--step", "5"], "no checkpoint at step 5"),
])
def test_sample_bad_input(run, tmp_path, capsys, args, needle):
    out = tmp_path / "s.npy"
    assert main(["sample", "--run", str(run), "--out", str(out), *args]) == 2
    _one_line(capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("out, needle", [("missing/s.npy", "does not exist"), ("s.png", "must end in .npy")])
def test_sample_out_checked_before_sampling(run, tmp_path, capsys, out, needle):
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / out)]) == 2
    _one_line(capsys, needle)


def test_sample_device_cuda_without_cuda(run, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["sample", "--run", str(run), "--out", str(tmp_path / "s.npy"), "--device", "cuda"]) == 2
    _one_line(capsys, "CUDA is not available")


def test_evaluate_bad_input(run, tmp_path, capsys):
    assert main(["evaluate", "--run", str(run), "eval.n_samples=0"]) == 2
    _one_line(capsys, "'eval.n_samples' must be ≥ 1")
    assert main(["evaluate", "--run", str(run), "--out", str(tmp_path / "missing" / "e.jsonl")]) == 2
    _one_line(capsys, "does not exist")
    assert main(["evaluate", "--run", str(run), "--step", "999"]) == 2
    _one_line(capsys, "no checkpoint at step 999")
    assert main(["evaluate", "--run", str(run), "n=3"]) == 2
    _one_line(capsys, "only takes eval.*")
    assert not (run / "evaluations.jsonl").exists()


def test_sweep_and_demo_bad_numbers(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--n", "8", "--seeds", "-1", "--out", str(out), *TINY]) == 2
    _one_line(capsys, "'seed' must be ≥ 0")
    assert main(["sweep", "--n", "8", "--workers", "0", "--out", str(out), *TINY]) == 2
    _one_line(capsys, "--workers must be positive")
    assert main(["demo", "--workers", "0", "--out", str(out)]) == 2
    _one_line(capsys, "--workers must be positive")
    assert not out.exists()


def test_report_bad_input(run, tmp_path, capsys):
    sweep = tmp_path / "sw"
    sweep.mkdir()
    shutil.copytree(run, sweep / "a")
    shutil.copytree(run, sweep / "b")
    (sweep / "sweep.json").write_text(json.dumps({"runs": [{"dir": "a"}, {"dir": "b"}]}))
    assert main(["report", "--sweep", str(sweep), "--quality-metric", "quality/nonexistent"]) == 2
    _one_line(capsys, "no metric 'quality/nonexistent'", "quality/fd_pixel")
    assert main(["report", "--sweep", str(run)]) == 2
    _one_line(capsys, "is a run directory, not a sweep")
    assert not (run / "report").exists()
    shutil.rmtree(sweep / "b")
    assert main(["report", "--sweep", str(sweep)]) == 2
    _one_line(capsys, "lists 1 run(s) that do not exist")
    assert not (sweep / "report").exists()


def test_presets_into_a_closed_pipe():
    cmd = f"{sys.executable} -m diffmem.cli presets --full | head -c 10"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


def test_audit_uses_the_data_spec_key_syntax(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(30, 4)).astype(np.float32)
    np.savez(tmp_path / "a.npz", train=x, samples=x[:5])
    assert main(["audit", "--train", f"{tmp_path / 'a.npz'}?key=train", "--samples",
                 f"{tmp_path / 'a.npz'}?key=samples", "--json", "--n-boot", "0"]) == 0
    assert json.loads(capsys.readouterr().out)["f_mem"] == 1.0
    assert main(["audit", "--train", f"{tmp_path / 'a.npz'}:train", "--samples", f"{tmp_path / 'a.npz'}?key=x"]) == 2
    _one_line(capsys, "?key=train")
