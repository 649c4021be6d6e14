"""Sweeps through submitit (issue #12 item 5) and the local pool under SIGTERM; the HTML report (item 6).

The submitit sweep runs through submitit's own local executor (``--slurm-cluster
local``): each run is a real subprocess started by submitit, as a SLURM job
array's tasks would be.  One run is made to fail by a stale directory of
another experiment in its place; the report is written with the failure
recorded; once the stale directory is gone, the re-run retries that run only.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from diffmem.cli import main

CLOSED = ["model.name=empirical", "eval.n_samples=16", "eval.quality=fd_pixel", "eval.n_boot=20", "threads=1",
          "eval.gap_sigmas=0", "eval.trajectory=0", "eval.n_loss=32", "eval.sampler_steps=10"]


def _index(out: Path) -> dict:
    return {e["dir"]: e for e in json.loads((out / "sweep.json").read_text())["runs"]}


def test_submitit_sweep_records_a_failure_and_the_rerun_retries_only_it(tmp_path, capsys):
    pytest.importorskip("submitit", reason="submitit is not installed (pip install 'diffmem[cluster]'; "
                        "scripts/setup.sh installs it)")
    out = tmp_path / "sw"
    stale = out / "n000016_s0"
    stale.mkdir(parents=True)
    (stale / "config.json").write_text(json.dumps({"data": "digits", "n": 16, "steps": 999, "seed": 7}))
    args = ["sweep", "--preset", "digits", "--n", "8,16", "--executor", "submitit", "--slurm-cluster", "local",
            "--slurm-time", "10", "--out", str(out), "--gallery-steps", "last", *CLOSED]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "run n000016_s0 failed (attempt 1)" in err and "different config" in err
    idx = _index(out)
    assert idx["n000008_s0"]["status"] == "done" and idx["n000008_s0"]["attempts"] == 1
    assert idx["n000016_s0"]["status"] == "failed" and "different config" in idx["n000016_s0"]["error"]
    assert "\n" not in idx["n000016_s0"]["error"]
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n"] == [8] and summary["f_mem_final"] == [1.0]
    assert [f["dir"] for f in summary["failed_runs"]] == ["n000016_s0"]
    page = (out / "report" / "report.html").read_text()
    assert "1 run(s) failed" in page and "different config" in page
    assert len(list((out / "slurm").glob("*_0_log.out"))) == 2  # two array tasks ran as submitit jobs

    done = out / "n000008_s0" / "metrics.jsonl"
    before = (done.read_bytes(), done.stat().st_mtime_ns)
    for f in stale.iterdir():  # the stale run directory is cleared away: the failure was transient
        f.unlink()
    stale.rmdir()
    assert main(args) == 0
    idx = _index(out)
    assert idx["n000008_s0"]["attempts"] == 1 and idx["n000016_s0"]["attempts"] == 2  # only the failed run ran
    assert idx["n000016_s0"]["status"] == "done" and idx["n000016_s0"]["error"] is None
    assert (done.read_bytes(), done.stat().st_mtime_ns) == before
    summary = json.loads((out / "report" / "summary.json").read_text())
    assert summary["n"] == [8, 16] and summary["failed_runs"] == []


def test_cluster_options_are_checked_before_anything_is_written(tmp_path, capsys):
    from diffmem.sweep import cluster_options, load_cluster_options

    assert cluster_options({"partition": "gpu", "time": 90, "gpus": 1, "mem": 16, "cpus": 4}) == {
        "slurm_partition": "gpu", "timeout_min": 90, "gpus_per_node": 1, "mem_gb": 16.0, "cpus_per_task": 4}
    toml = tmp_path / "cluster.toml"
    toml.write_text('[slurm]\npartition = "gpu"\ntime = 120\ngpus = 1\n')
    assert load_cluster_options(str(toml), {"time": 30}) == {"slurm_partition": "gpu", "timeout_min": 30,
                                                               "gpus_per_node": 1}
    out = tmp_path / "never"
    base = ["sweep", "--preset", "digits", "--n", "8", "--out", str(out), *CLOSED]
    for extra, msg in ((["--executor", "submitit", "--slurm-time", "0"], "time must be a positive number"),
                       (["--slurm-partition", "gpu"], "need --executor submitit"),
                       (["--executor", "submitit", "--cluster-config", str(tmp_path / "no.toml")], "not found"),
                       (["--executor", "submitit", "--slurm-cluster", "mars"], "slurm, local or debug"),
                       (["--gallery-steps", "soon"], "--gallery-steps")):
        assert main(base + extra) == 2
        e = capsys.readouterr().err.strip()
        assert msg in e and "\n" not in e, e
        assert not out.exists()


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        return (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads worker processes from /proc (Linux)")
def test_sigterm_to_a_local_sweep_terminates_its_workers_and_the_sweep_resumes(tmp_path):
    out = tmp_path / "sw"
    args = ["sweep", "--preset", "digits", "--n", "8,16", "--steps-per-n", "50", "--workers", "2", "--out", str(out),
            "threads=1", "eval.n_samples=16", "eval.quality=fd_pixel", "eval.n_boot=10", "eval.n_loss=16",
            "eval.gap_sigmas=0", "eval.trajectory=0", "checkpoints_per_decade=3", "model.width=32",
            "--gallery-steps", "none"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "diffmem.cli", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    metrics = [out / "n000008_w0032_s0" / "metrics.jsonl", out / "n000016_w0032_s0" / "metrics.jsonl"]
    deadline = time.time() + 120
    while time.time() < deadline and not all(m.exists() and m.stat().st_size > 0 for m in metrics):
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be terminated"
    workers = [p for p in _children(proc.pid) if "spawn_main" in (Path("/proc") / str(p) / "cmdline").read_text()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143
    t = time.time() + 10
    while time.time() < t and any(_alive(p) for p in workers):
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers), "workers outlived the sweep"
    sizes = [m.stat().st_size for m in metrics]
    time.sleep(1.0)
    assert [m.stat().st_size for m in metrics] == sizes  # nobody writes into the run directories any more
    idx = _index(out)
    assert {e["status"] for e in idx.values()} == {"interrupted"}
    status = [json.loads(p.read_text()) if p.exists() else {} for p in (m.parent / "status.json" for m in metrics)]
    assert not any(s.get("finished") for s in status)

    # the killed sweep resumes, each run from its own state.pt (in this process: the same path as the command,
    # without two new interpreters and the report)
    from diffmem.config import resolve_config
    from diffmem.sweep import plan_sweep, run_sweep

    base = resolve_config("digits", None, [a for a in args if "=" in a])
    run_sweep(plan_sweep(base, [8, 16], steps_for=lambda n, w: 50 * n), out, executor="serial", progress=False)
    idx = _index(out)
    assert {e["status"] for e in idx.values()} == {"done"} and {e["attempts"] for e in idx.values()} == {2}
    assert all(json.loads((m.parent / "status.json").read_text())["finished"] for m in metrics)


def test_html_report_of_one_run_is_self_contained(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "--out", str(run), "--no-progress", "--preset", "digits", "n=16", "steps=30", "threads=1",
                 "eval.n_samples=32", "eval.quality=fd_pixel", "eval.n_boot=20", "eval.n_loss=32",
                 "checkpoints_per_decade=4", "eval.gap_sigmas=8", "eval.n_gap=16", "eval.trajectory=8"]) == 0
    for bad, msg in ((["--run", str(run), "--gallery-steps", "2,x"], "--gallery-steps"),
                     (["--run", str(tmp_path)], "not a diffmem run directory"),
                     (["--run", str(run), "--sweep", str(tmp_path)], "one of them")):
        assert main(["report", *bad]) == 2
        assert msg in capsys.readouterr().err
    assert not (run / "report").exists()
    assert main(["report", "--run", str(run), "--gallery-steps", "0,last", "--quality-metric", "quality/fd_pixel"]) == 0
    page = (run / "report" / "report.html").read_text()
    pngs = sorted(p.name for p in (run / "report").glob("*.png"))
    assert len(pngs) >= 6
    for name in pngs:
        assert f"<b>{name}</b>" in page  # every figure, embedded
    assert page.count("<table class='gallery'>") == 2 and "(step 0)</h3>" in page and "(step 30)</h3>" in page
    assert page.count("data:image/png;base64,") == len(pngs) + 2 * (8 * 3 + 1)  # + 2 galleries: 8 triples, histogram
    for remote in ("http://", "https://", "<script", "<link", "@import", "url("):
        assert remote not in page
    assert "τ_mem 95%" in page and "Wilson 95%" in page and "Keys every run shares" in page
    assert '"optim.lr"' not in page and "optim.lr" in page
