"""A run's life: safe loading, callbacks (stop, state across resume), extension, closed forms, files."""

import json
import pickle
import re
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from diffmem.callbacks import Callback
from diffmem.cli import main
from diffmem.config import resolve_config
from diffmem.errors import DiffmemError
from diffmem.rundir import Run
from diffmem.train import train

TINY = ["n=16", "steps=20", "threads=1", "eval.n_samples=16", "eval.quality=fd_pixel", "eval.n_boot=20",
        "eval.n_loss=32", "checkpoints_per_decade=4"]


def _cfg(*extra):
    return resolve_config("digits", None, [*TINY, *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    r = tmp_path_factory.mktemp("trained") / "run"
    train(_cfg(), r, progress=False)
    return Run(r)


def _weights(run: Run, step: int):
    return load_file(str(run.checkpoint_path(step)))


def _same_weights(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class _Payload:
    """Unpickling this writes a file: what a malicious state.pt would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_malicious_state_is_refused_and_never_runs(run, tmp_path, capsys):
    marker = tmp_path / "pwned.txt"
    # sanity: the payload works when unpickled the unsafe way
    pickle.loads(pickle.dumps(_Payload(tmp_path / "probe.txt")))
    assert (tmp_path / "probe.txt").exists()
    bad = tmp_path / "run"
    import shutil

    shutil.copytree(run.path, bad)
    torch.save({"model": _Payload(marker), "optim": {}, "step": 5}, bad / "state.pt")
    before = (bad / "metrics.jsonl").read_bytes()
    assert main(["train", "--out", str(bad), "--preset", "digits", "--no-progress", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err and "state.pt is refused" in err
    assert not marker.exists(), "the pickled payload ran"
    assert (bad / "metrics.jsonl").read_bytes() == before


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage"])
def test_corrupt_state_is_refused(run, tmp_path, capsys, damage):
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run.path, bad)
    data = (bad / "state.pt").read_bytes()
    (bad / "state.pt").write_bytes({"truncate": data[: len(data) // 2], "empty": b"", "garbage": b"x" * 100}[damage])
    assert main(["train", "--out", str(bad), "--preset", "digits", "--no-progress", *TINY]) == 2
    err = capsys.readouterr().err.strip()
    assert "state.pt" in err and "\n" not in err and "Traceback" not in err


def test_corrupt_checkpoint_names_the_file_and_evaluate_keeps_earlier_results(run, tmp_path, capsys):
    import shutil

    bad = tmp_path / "run"
    shutil.copytree(run.path, bad)
    steps = Run(bad).checkpoint_steps()
    last = Run(bad).checkpoint_path(steps[-1])
    last.write_bytes(last.read_bytes()[:100])
    assert main(["sample", "--run", str(bad), "--out", str(tmp_path / "s.npy")]) == 2
    err = capsys.readouterr().err
    assert last.name in err and "corrupt or truncated" in err and "SafetensorError" not in err
    out = tmp_path / "ev.jsonl"
    assert main(["evaluate", "--run", str(bad), "--out", str(out), "--step", str(steps[1]), "--step",
                 str(steps[-1])]) == 2
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert recs and {r["step"] for r in recs} == {steps[1]}, "the good checkpoint's results were lost"


class StopBelow(Callback):  # the README's example
    def __init__(self, value):
        self.value = value

    def on_step_end(self, ctx, step, loss):
        if loss < self.value:
            ctx.request_stop(f"training loss {loss:.4g} < {self.value}")


class Losses(Callback):
    def __init__(self):
        self.seen = []

    def on_step_end(self, ctx, step, loss):
        self.seen.append((step, loss))


def test_user_callback_stops_training(tmp_path):
    probe = Losses()
    train(_cfg("steps=200"), tmp_path / "probe", callbacks=[probe], progress=False)
    value = float(np.median([l for _, l in probe.seen]))
    first = next(s for s, l in probe.seen if l < value)
    r = train(_cfg("steps=200"), tmp_path / "r", callbacks=[StopBelow(value)], progress=False)
    st = r.read_status()
    assert st["step"] == first and st["stopped_by"].startswith("training loss") and not st["finished"]
    assert r.checkpoint_steps()[-1] == first  # the weights it stopped with are saved ...
    assert max(x["step"] for x in r.read_metrics()) == first  # ... and evaluated
    assert first not in r.read_schedule()  # (an extra checkpoint, not a scheduled one)


class Counter(Callback):
    """A callback with state: counts steps and sums losses."""

    def __init__(self):
        self.n, self.total = 0, 0.0

    def on_step_end(self, ctx, step, loss):
        self.n += 1
        self.total += loss

    def state_dict(self):
        return {"n": self.n, "total": self.total}

    def load_state_dict(self, state):
        self.n, self.total = state["n"], state["total"]


def test_callback_state_is_restored_on_resume(tmp_path):
    full = Counter()
    train(_cfg("steps=40"), tmp_path / "full", callbacks=[full], progress=False)
    part = Counter()
    train(_cfg("steps=40"), tmp_path / "part", callbacks=[part], progress=False, stop_after=30)  # 30: no checkpoint
    resumed = Counter()
    r = train(_cfg("steps=40"), tmp_path / "part", callbacks=[resumed], progress=False)
    assert (full.n, full.total) == (resumed.n, resumed.total) == (40, pytest.approx(full.total, abs=0))
    assert (tmp_path / "full" / "metrics.jsonl").read_bytes() == r.metrics_path.read_bytes()
    assert r.read_status()["train_seconds"] >= 0 and r.read_status()["finished"]


def test_a_finished_run_extends_to_more_steps(tmp_path):
    a = train(_cfg("steps=20"), tmp_path / "ext", progress=False)
    first = a.read_metrics()
    a = train(_cfg("steps=45"), tmp_path / "ext", progress=False)
    b = train(_cfg("steps=45"), tmp_path / "fresh", progress=False)
    assert _same_weights(_weights(a, 45), _weights(b, 45))
    assert a.read_schedule()[-1] == 45 and set(a.read_schedule()) >= set(range(0, 21)) & set(a.read_schedule())
    assert a.read_metrics()[: len(first)] == first  # the first 20 steps' records are kept as they were
    common = set(a.read_schedule()) & set(b.read_schedule())
    key = lambda r: (r["step"], r["metric"], r.get("t"))  # noqa: E731
    ra = {key(r): r for r in a.read_metrics() if r["step"] in common and r["metric"] != "train/loss_running"}
    rb = {key(r): r for r in b.read_metrics() if r["step"] in common and r["metric"] != "train/loss_running"}
    assert ra == rb
    assert json.loads(a.config_path.read_text())["steps"] == 45


def test_sample_reproduces_the_runs_own_samples(run, tmp_path, capsys):
    step = run.checkpoint_steps()[-1]
    out = tmp_path / "s.npy"
    assert main(["sample", "--run", str(run.path), "--step", str(step), "--out", str(out)]) == 0
    np.testing.assert_array_equal(np.load(out), run.load_samples(step))
    assert "heun, 18 steps" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "em", "heun"])
def test_every_sampler_takes_a_number_of_steps(run, tmp_path, sampler):
    out = tmp_path / "s.npy"
    assert main(["sample", "--run", str(run.path), "--out", str(out), "--sampler", sampler, "--steps", "7",
                 "--n-samples", "4"]) == 0
    x = np.load(out)
    assert x.shape == (4, 1, 8, 8) and np.isfinite(x).all()


def test_closed_form_run_has_no_training(tmp_path, capsys):
    r = tmp_path / "emp"
    args = ["train", "--out", str(r), "--preset", "digits", "--no-progress", "model.name=empirical",
            *[a for a in TINY if not a.startswith("steps")]]
    assert main(args) == 0
    run = Run(r)
    recs = run.read_metrics()
    assert {x["step"] for x in recs} == {0} and run.checkpoint_steps() == [] and not run.has_state()
    fm = next(x["value"] for x in recs if x["metric"] == "f_mem")
    assert fm == 1.0  # the empirical score memorises by construction
    cfg = json.loads(run.config_path.read_text())
    assert cfg["n_params"] is None and cfg["model"]["name"] == "empirical"
    assert main(args) == 0 and run.read_metrics() == recs  # re-running is a no-op
    out = tmp_path / "s.npy"
    assert main(["sample", "--run", str(r), "--out", str(out), "--n-samples", "8"]) == 0
    assert main(["audit", "--train", str(out), "--samples", str(out), "--n-boot", "0", "--json"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--run", str(r), "--json", "eval.n_samples=8"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert next(x["value"] for x in ev if x["metric"] == "f_mem") == 1.0


def test_exact_gmm_denoiser_is_a_model(tmp_path):
    cfg = resolve_config("gmm-bubm25", None, ["model.name=exact", "n=64", "eval.n_samples=64", "eval.n_boot=0",
                                              "eval.sampler_steps=200", "threads=1"])
    r = train(cfg, tmp_path / "x", progress=False)
    err = [x["value"] for x in r.read_metrics() if x["metric"] == "score_error"]
    assert err and max(err) < 1e-8  # the exact denoiser's score is the true score


def test_gmm_width_is_respected():
    from diffmem.models import build_model, count_params

    a = resolve_config("gmm-bubm25", None, ["model.width=64"])
    b = resolve_config("gmm-bubm25", None, [])
    pa, pb = (count_params(build_model(c.model, (8,))[0]) for c in (a, b))
    assert pb == 102_024 and pa != pb


def test_files_get_the_usual_permissions(run, tmp_path):
    import os

    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    files = [run.checkpoint_path(run.checkpoint_steps()[-1]), run.state_path, run.config_path,
             run.samples_path(run.checkpoint_steps()[-1])]
    from diffmem.report import make_report

    sweep = tmp_path / "sw"
    sweep.mkdir()
    import shutil

    shutil.copytree(run.path, sweep / "a")
    make_report(sweep, tmp_path / "rep", n_boot=10)
    files += [tmp_path / "rep" / "summary.json", tmp_path / "rep" / "quality.png"]
    from diffmem.metrics.quality import save_feature_net, train_feature_net

    net = train_feature_net(torch.randn(64, 1, 8, 8), None, seed=0, steps=5)
    files.append(save_feature_net(net, tmp_path / "net.safetensors"))
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == want, f


def test_train_seconds_add_up_over_sessions(tmp_path):
    r = train(_cfg("steps=40"), tmp_path / "r", progress=False, stop_after=30)
    t1 = r.read_status()["train_seconds"]
    r = train(_cfg("steps=40"), tmp_path / "r", progress=False)
    st = r.read_status()
    assert st["finished"] and st["train_seconds"] >= t1 > 0
    assert not (r.path / "train_seconds.txt").exists()


def test_report_prints_a_table_and_json_on_request(run, tmp_path, capsys):
    import shutil

    sweep = tmp_path / "sw"
    sweep.mkdir()
    for name in ("a", "b"):
        shutil.copytree(run.path, sweep / name)
    assert main(["report", "--sweep", str(sweep)]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 12 and "tau_mem" in out and "{" not in out
    assert main(["report", "--sweep", str(sweep), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == [16, 16]


def test_evaluate_table_names_the_noise_level(run, capsys):
    assert main(["evaluate", "--run", str(run.path), "--step", "0", "--out", str(run.path.parent / "e.jsonl"),
                 "eval.n_samples=4"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"loss/train t=0\.01 sigma=0\.142", out) and re.search(r"loss/train t=0\.1 sigma=", out)


def test_readme_values_are_true():
    from diffmem.schedules import ou_t_to_sigma

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    m = re.search(r"ou_t_to_sigma\(0\.01\).*?-> ([0-9.]+)", readme)
    assert m, "README no longer documents ou_t_to_sigma(0.01)"
    assert float(m.group(1)) == pytest.approx(float(ou_t_to_sigma(0.01)), abs=5e-6)


def test_state_file_holds_only_tensors_and_numbers(run):
    st = torch.load(run.state_path, weights_only=True)
    assert {"model", "optim", "step", "callbacks", "torch_rng"} <= set(st)


def test_load_state_refuses_non_state(tmp_path):
    r = Run(tmp_path)
    torch.save([1, 2, 3], r.state_path)
    with pytest.raises(DiffmemError, match="not a diffmem state file"):
        r.load_state()


def test_messages_show_plain_numbers():
    from diffmem.cli import _plain

    assert _plain("got np.float64(-5.0) and np.int64(3)\nsecond line") == "got -5.0 and 3 second line"


def test_small_sample_fd_warning_once_per_size():
    import warnings

    from diffmem.metrics.quality import GaussianStats, frechet_distance

    rng = np.random.default_rng(0)
    ref = GaussianStats.from_features(rng.normal(size=(500, 40)))
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):
            frechet_distance(GaussianStats.from_features(rng.normal(size=(17, 40))), ref)
    assert sum("rank-deficient" in str(x.message) for x in w) == 1


def test_phase_boundary_at_the_smallest_n_is_a_bound():
    from diffmem.timescales import phase_boundary

    rows = [{"n": n, "width": 8, "steps": np.array([0, 100]), "f_mem": np.array([0.0, f])}
            for n, f in ((16, 0.0), (32, 0.0))]
    assert phase_boundary(rows, [100])[0]["status"] == "at_or_below"
    rows[0]["f_mem"] = np.array([0.0, 0.4])
    b = phase_boundary(rows, [100])[0]
    assert b["status"] == "found" and b["n_star"] == 32


def test_tau_gen_sits_on_the_drawn_curve(run):
    """The quality figure draws the running median that τ_gen is read from."""
    from diffmem.analysis import TauDefinitions, analyse
    from diffmem.timescales import running_median

    a = analyse([run.path], TauDefinitions(quality_metric="quality/fd_pixel"))
    r = a.runs[0]
    s, q, _ = r.quality
    np.testing.assert_array_equal(r.quality_smooth, running_median(q, 3))
    i = int(np.flatnonzero(s == r.tau_gen.value)[0])
    assert r.quality_smooth[i] <= r.tau_gen.details["threshold"]
    assert i == 0 or r.quality_smooth[i - 1] > r.tau_gen.details["threshold"]


def test_sweep_over_a_closed_form(tmp_path, capsys):
    out = tmp_path / "sw"
    assert main(["sweep", "--preset", "digits", "--n", "8,16", "--executor", "serial", "--out", str(out),
                 "model.name=empirical", "eval.n_samples=16", "eval.quality=fd_pixel", "eval.n_boot=20",
                 "threads=1"]) == 0
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n"] == [8, 16] and summary["f_mem_final"] == [1.0, 1.0]
    assert (out / "report" / "fmem_vs_n.png").is_file()
    assert main(["sweep", "--preset", "digits", "--n", "8", "--width", "64", "--out", str(tmp_path / "w"),
                 "model.name=empirical"]) == 2
    assert "takes no option model.width" in capsys.readouterr().err
