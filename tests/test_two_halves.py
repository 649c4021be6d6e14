"""The two-halves test (issue #11 item 7), the grammar report figures (item 8) and their CLI contracts."""

import json
import shutil

import numpy as np
import pytest

from diffmem.analysis import TauDefinitions, analyse
from diffmem.cli import main
from diffmem.config import resolve_config
from diffmem.report_grammar import level_times, render_grammar
from diffmem.rundir import Run
from diffmem.sweep import plan_sweep, run_sweep
from diffmem.two_halves import agreement, summarise_two_halves, two_halves

GRAMMAR = "rhm:v=4,m=2,s=2,L=2,nc=2,seed=1"  # 16 distinct sequences of 4 tokens; pool 13
TINY = [f"data={GRAMMAR}", "n=4", "steps=6", "threads=1", "checkpoints_per_decade=2", "model.width=16",
        "model.blocks=1", "model.heads=2", "eval.n_samples=16", "eval.sampler_steps=4", "eval.n_boot=10",
        "eval.loss_t=0.5", "eval.loss_draws=1", "eval.n_loss=8", "batch_max=4"]


def test_agreement_identical_is_one_and_independent_is_near_zero():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 8, size=(500, 8))
    assert agreement(x, x.copy())["agreement"] == 1.0
    r = agreement(x, rng.integers(0, 8, size=(500, 8)))
    assert r["agreement"] < 0.01 and r["kind"] == "exact" and 0.8 < r["distance"] < 0.95
    z = rng.standard_normal((200, 16))
    assert agreement(z, z + 1e-6)["agreement"] == 1.0
    assert agreement(z, rng.standard_normal((200, 16)))["agreement"] < 0.05
    with pytest.raises(Exception, match="one shape"):
        agreement(x, x[:10])


@pytest.fixture(scope="module")
def halves(tmp_path_factory):
    root = tmp_path_factory.mktemp("halves")
    base = resolve_config("rhm", None, TINY)
    plan = plan_sweep(base, [4, 8])
    run_sweep(plan, root / "runs", workers=1, progress=False)
    b = resolve_config("rhm", None, [*TINY, "subset_offset=4"])
    run_sweep([("half_b", b)], root / "halves", workers=1, progress=False)
    return root


def test_two_halves_of_runs_and_of_a_run_with_itself(halves, tmp_path):
    a = halves / "runs" / "n000004_w0016_s0"
    res = two_halves(a, halves / "halves" / "half_b")
    assert res["steps"] == Run(a).sample_steps() and res["subset_offset"] == [0, 4]
    assert all(0 <= r["agreement"] <= 1 for r in res["records"])
    assert set(summarise_two_halves(res, 3.0)) >= {"before", "final", "max"}
    # the same model relabelled as the other half: every sample agrees
    twin = tmp_path / "twin"
    shutil.copytree(a, twin)
    cfg = json.loads((twin / "config.json").read_text())
    cfg["subset_offset"] = 4
    (twin / "config.json").write_text(json.dumps(cfg))
    assert all(r["agreement"] == 1.0 for r in two_halves(a, twin)["records"])


def test_overlapping_or_mismatched_halves_are_one_line_errors(halves, capsys):
    a = halves / "runs" / "n000004_w0016_s0"
    assert main(["two-halves", str(a), str(a)]) == 2
    assert "overlap" in capsys.readouterr().err.strip()
    assert main(["two-halves", str(a), str(halves / "runs" / "n000008_w0016_s0")]) == 2
    err = capsys.readouterr().err.strip()
    assert "share n" in err and len(err.splitlines()) == 1


def test_grammar_figures_appear_for_a_token_sweep(halves, tmp_path):
    figs = render_grammar(analyse(halves / "runs", TauDefinitions()), tmp_path)
    assert set(figs) == {"validity", "copy", "grammar_phase"}
    assert all((tmp_path / f"{k}.png").stat().st_size > 1000 for k in ("validity", "copy", "grammar_phase"))


def test_level_times_need_two_checkpoints_in_a_row():
    s = {"levels": {0: (np.arange(5.0), np.array([0.2, 0.95, 0.5, 0.92, 0.93])),
                    1: (np.arange(5.0), np.array([1.0, 0.1, 0.1, 0.1, 0.1]))},
         "valid": (np.arange(5.0), np.zeros(5)), "chance": {}}
    assert level_times(s) == {"0": 3.0, "1": None, "valid": None}


@pytest.mark.parametrize("args,needle", [
    (["grammar", "demo", "--out", "OUT", "--workers", "0"], "--workers"),
    (["two-halves", "A", "B", "--threshold", "x"], "--threshold"),
    (["two-halves", "A", "B", "--out", "OUT"], ".json"),
    (["train", "--preset", "rhm", f"data={GRAMMAR}", "n=8", "subset_offset=8", "steps=2", "--out", "OUT"], "exceeds"),
    (["train", "--preset", "rhm", f"data={GRAMMAR}", "n=8", "subset_offset=-1", "steps=2", "--out", "OUT"],
     "subset_offset"),
])
def test_bad_options_one_line_exit_2_nothing_written(tmp_path, capsys, args, needle):
    out = tmp_path / "out"
    args = [str(out) if a == "OUT" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1
    assert not out.exists()
