"""The `diffmem demo` contract on its quick version (the full demo is measured, not tested)."""

import json

from diffmem.cli import main


def test_demo_quick_writes_summary_and_figures(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out), "--workers", "2"]) == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("n", "tau_gen", "tau_mem", "slope", "slope_ci"):
        assert key in s, key
    assert s["n"] == [16, 32]
    assert len(s["tau_gen"]) == len(s["tau_mem"]) == 2
    assert all(t is None or t > 0 for t in s["tau_mem"])
    for png in ("quality.png", "fmem.png", "collapse.png", "timescales.png", "losses.png", "phase_diagram.png"):
        assert (out / png).stat().st_size > 1000, png
    # the run directories are complete and resumable: a second call trains nothing new
    runs = sorted(p.name for p in (out / "runs").iterdir() if p.is_dir())
    assert runs == ["n000016_w0256_s0", "n000032_w0256_s0"]
    before = (out / "runs" / runs[0] / "metrics.jsonl").read_text()
    assert main(["demo", "--quick", "--out", str(out), "--workers", "1"]) == 0
    assert (out / "runs" / runs[0] / "metrics.jsonl").read_text() == before
