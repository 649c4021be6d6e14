"""Token sequences through the one training pipeline (issue #11 items 4-6): the transformer behind the
registry, train/resume/checkpoints/metrics for an rhm run, sampling from a checkpoint, bad options."""

import json

import numpy as np
import pytest
import torch

from diffmem.cli import main
from diffmem.config import resolve_config
from diffmem.masked_diffusion import generate_tokens
from diffmem.models import TokenTransformer
from diffmem.rundir import Run
from diffmem.train import train

GRAMMAR = "rhm:v=4,m=2,s=2,L=2,nc=2,seed=1"  # 16 distinct sequences of 4 tokens; pool 13, held out 3
TINY = [f"data={GRAMMAR}", "n=8", "steps=30", "threads=1", "checkpoints_per_decade=3", "model.width=16",
        "model.blocks=1", "model.heads=2", "eval.n_samples=16", "eval.sampler_steps=8", "eval.n_boot=20",
        "eval.loss_t=0.5", "eval.loss_draws=1", "eval.n_loss=16"]


def _cfg(*extra):
    return resolve_config("rhm", None, [*TINY, *extra])


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train(_cfg(), tmp_path_factory.mktemp("rhm") / "run", progress=False)


def test_transformer_rows_are_independent_and_mask_is_an_input():
    torch.manual_seed(0)
    m = TokenTransformer(seq_len=4, vocab=3, width=8, blocks=1, heads=2).eval()
    z = torch.tensor([[3, 3, 0, 1], [2, 3, 3, 3], [0, 1, 2, 0]])
    out = m(z)
    assert out.shape == (3, 4, 3)
    assert torch.allclose(m(z[1:2]), out[1:2], atol=1e-6)  # a row does not see the batch
    assert m.tok.num_embeddings == 4  # v + 1: the mask token has an embedding


def test_a_tiny_rhm_run_trains_and_writes_the_metrics(run):
    cfg = json.loads(run.config_path.read_text())
    assert cfg["data_vocab"] == 4 and cfg["data_shape"] == [4] and cfg["model"]["name"] == "transformer"
    recs = run.read_metrics()
    steps = run.read_schedule()
    assert steps[0] == 0 and steps[-1] == 30 and run.read_status()["finished"]
    by = {}
    for r in recs:
        by.setdefault(r["metric"], []).append(r)
    for name in ("f_mem", "hamming/ratio_test", "copy/test", "diversity/distinct", "validity/valid",
                 "nll/train", "nll/test"):
        assert sorted(r["step"] for r in by[name]) == steps, name
    fm = by["f_mem"][-1]
    assert fm["test"] == "exact_copy" and fm["n"] == 16 and fm["wilson_low"] <= fm["value"] <= fm["wilson_high"]
    assert {r["level"] for r in by["validity/level"]} <= {0, 1}
    assert {(r["metric"], r["t"]) for r in recs if r["metric"].startswith("loss/")} == {("loss/train", 0.5),
                                                                                      ("loss/test", 0.5)}
    x = run.load_samples(30)
    assert x.dtype == np.int64 and x.shape == (16, 4) and x.min() >= 0 and x.max() < 4
    # the masked loss on the training sequences falls from its chance value (log 4 per masked token at t = 0.5)
    lt = {r["step"]: r["value"] for r in by["loss/train"]}
    assert lt[30] < lt[0]
    # analysis reads the copy fraction as f_mem
    from diffmem.analysis import analyse

    a = analyse(run.path)
    assert a.runs[0].f_mem is not None and len(a.runs[0].f_mem[0]) == len(steps)


def test_resume_of_a_sequence_run_equals_the_uninterrupted_run(run, tmp_path):
    part = tmp_path / "part"
    train(_cfg(), part, progress=False, stop_after=13)  # 13: not a checkpoint, resumed from the one before
    r = train(_cfg(), part, progress=False)
    assert r.metrics_path.read_bytes() == run.metrics_path.read_bytes()
    for st in (run.checkpoint_steps()[-1], 13 if 13 in run.checkpoint_steps() else run.checkpoint_steps()[-2]):
        a, b = run.load_weights(st), r.load_weights(st)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_sampling_a_checkpoint_is_per_sample_seeded(run):
    from diffmem.evaluate import sample_run

    step = run.checkpoint_steps()[-1]
    x, info = sample_run(run.path, step)
    assert info["sampler"] == "masked" and np.array_equal(x, run.load_samples(step))  # the run's own samples
    seeds = 1_000_000 + 5
    y, _ = sample_run(run.path, step, n_samples=3, seed=seeds)
    assert np.array_equal(y, x[5:8])  # sample j depends on its seed alone, not on the batch
    den, cfg = run.load_denoiser(step)
    z = generate_tokens(den, [seeds + 2, seeds], 4, 4, steps=cfg.eval.sampler_steps)
    assert np.array_equal(z.numpy(), x[[7, 5]])


def _one_line(capsys, needle):
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err, err
    assert needle in err, err


BAD = [
    (["--preset", "digits", "model.name=transformer", "eval.sampler=masked"], "takes token sequences"),
    (["--preset", "digits", "model.name=transformer"], "eval.sampler=masked"),
    (["--preset", "rhm", "model.name=mlp", "eval.sampler=ddim"], "needs a token model"),
    (["--preset", "rhm", "model.name=mlp"], "eval.sampler=masked samples token models"),
    (["--preset", "rhm", "model.parametrisation=edm"], "does not use model.parametrisation"),
    (["--preset", "rhm", "eval.quality=fd_pixel"], "does not use eval.quality"),
    (["--preset", "rhm", "eval.loss_t=2"], "mask fractions t in (0, 1]"),
    (["--preset", "rhm", "model.heads=3"], "width divisible by heads"),
    (["--preset", "rhm", "data=rhm:v=4,m=5,s=2,L=2,nc=2"], "m·v ≤ v**s"),
    (["--preset", "rhm", "data=rhm:v=4,m=2,s=2,L=0,nc=2"], "L must be ≥ 1"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=[" ".join(a[2:]) for a, _ in BAD])
def test_bad_options_are_one_line_exit_2_nothing_written(tmp_path, capsys, args, needle):
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--no-progress", *args, "steps=5", "n=8"]) == 2
    _one_line(capsys, needle)
    assert not out.exists()


def test_kappa_estimate_and_the_stopping_rule():
    from diffmem.stopping import EarlyStopping, estimate_kappa

    k = estimate_kappa([32, 64, 128], [3200, 6400, 12800], [2900, 5800, 11600], [3500, 7000, 14000], seed=1)
    assert k.kappa == pytest.approx(100) and k.low < 100 < k.high and k.high / k.low < 1.3
    one = estimate_kappa([32, 64], [3200, None], [2000, None], [4000, None])  # the unreached pilot is left out
    assert one.n == [32.0] and one.low == pytest.approx(2000 / 32, rel=0.05)
    rule = EarlyStopping(k)  # alpha 0.5
    s = rule.stop(1024, batch_size=64)
    assert s["steps"] == pytest.approx(51200) and s["epochs"] == pytest.approx(51200 * 64 / 1024)
    assert s["steps_ci"][0] < s["steps"] < s["steps_ci"][1]
    assert rule.predict_tau_mem(1024)["value"] == pytest.approx(102400)
    with pytest.raises(Exception, match="no pilot run reached"):
        estimate_kappa([32], [None])


def test_the_stopping_rule_stops_a_sequence_run(tmp_path):
    from diffmem.stopping import EarlyStopping, KappaEstimate

    rule = EarlyStopping(KappaEstimate(2.5, 2.0, 3.0, [8], [20.0]), alpha=0.5)  # 0.5 · 2.5 · 8 = 10 steps
    r = train(_cfg(), tmp_path / "r", callbacks=[rule.callback(8)], progress=False)
    st = r.read_status()
    assert st["step"] == 10 and not st["finished"] and "FSW25" in st["stopped_by"]
    assert 10 in r.checkpoint_steps()
