"""``diffmem theory generative | phase`` (issue #13 items 4, 5): JSON contract, one-line refusals, the phase diagram."""

import json
import numpy as np
import pytest
import torch

from diffmem.cli import main
from diffmem.schedules import karras_sigmas
from diffmem.theory.generative import RFDenoiser, fit_levels, phase_diagram, sample_metrics

TINY = ["--d", "4", "--samples", "24", "--steps", "8", "--n-rows", "512", "--sigma-min", "0.01", "--sigma-max", "10"]


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_generative_contract(capsys, tmp_path):
    argv = ["theory", "generative", "--p", "32", "--n", "2,64", "--tau", "100,inf", *TINY, "--json",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    assert {"params", "rows", "slope_tau_half", "slope_tau_half_pm", "seconds", "figure", "json"} <= obj.keys()
    assert obj["params"]["tau"] == [100.0, None]  # inf is written as null
    assert [r["n"] for r in obj["rows"]] == [2, 64]
    for r in obj["rows"]:
        for k in ("f_mem", "f_mem_pm", "frechet"):
            assert len(r[k]) == 2 and all(v is not None and v >= 0 for v in r[k]), (k, r)
        assert all(0 <= v <= 1 for v in r["f_mem"] + r["f_mem_pm"])
        assert "tau_half" in r and "tau_half_pm" in r
    assert (tmp_path / "generative.png").stat().st_size > 0
    assert json.loads((tmp_path / "generative.json").read_text())["rows"] == obj["rows"]


def test_phase_contract(capsys, tmp_path):
    argv = ["theory", "phase", "--p", "8,32", "--n", "2,64", "--tau", "inf", *TINY, "--json", "--out", str(tmp_path)]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    assert np.array(obj["f_mem"]).shape == (2, 2, 1) and np.array(obj["f_mem_pm"]).shape == (2, 2, 1)
    assert np.array(obj["n_star"], dtype=object).shape == (2, 1)
    assert (tmp_path / "phase.png").stat().st_size > 0 and (tmp_path / "phase.json").exists()


@pytest.mark.parametrize("cmd,bad", [
    ("generative", ["--n", "4,x"]),
    ("generative", ["--n", "1,4"]),  # the ratio test needs 2 training points
    ("generative", ["--tau", "0,inf"]),
    ("generative", ["--tau", "nan"]),
    ("generative", ["--p", "0"]),
    ("generative", ["--samples", "1"]),
    ("generative", ["--sigma-min", "5", "--sigma-max", "1"]),
    ("generative", ["--activation", "sin"]),
    ("generative", ["--p", "20000"]),  # too large: refused before any fit
    ("generative", ["--bias", "-1"]),
    ("phase", ["--p", "16,2.5"]),
    ("phase", ["--zero", "1.5"]),
    ("phase", ["--steps", "1"]),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(cmd, bad, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["theory", cmd, *bad, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err, err
    assert not out.exists()


def test_phase_fmem_at_infinity_falls_with_n_at_fixed_p():
    """p = 48 features, d = 4: the τ → ∞ model memorises few points (f_mem vs ±X high at n = 2) and none
    when n ≫ p; n* is the first n of the grid past which f_mem ≤ 0.05."""
    res = phase_diagram(d=4, ps=(48,), ns=(2, 8, 256), taus=(float("inf"),), samples=48, steps=10,
                        sigma_min=0.01, sigma_max=10.0, n_rows=1024)
    f, fpm = np.array(res["f_mem"])[0, :, 0], np.array(res["f_mem_pm"])[0, :, 0]
    assert fpm[0] >= 0.5 and fpm[-1] <= 0.05, fpm
    assert fpm[0] > fpm[1] > fpm[2] or (fpm[0] > fpm[2] and fpm[1] >= fpm[2]), fpm
    assert f[-1] <= 0.05 and res["n_star"][0][0] is not None and res["n_star"][0][0] <= 256


def test_odd_model_memorises_mirror_images():
    """tanh and no bias: the score is odd, so the τ → ∞ model memorises ±x_i (README, issue #13 item 3):
    against ±X nearly every sample is a copy, against X about half."""
    sig = karras_sigmas(12, sigma_min=0.01, sigma_max=20.0)
    m = fit_levels(6, 64 / 6, 4, sig, seed=0, n_rows=2048)
    x = torch.randn(5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    s = torch.full((5,), float(sig[4]), dtype=torch.float64)
    den = RFDenoiser(m, float("inf"))
    assert torch.allclose(den(-x, s), -den(x, s), rtol=0, atol=1e-12)
    r = sample_metrics(m, float("inf"), sig, 64, 0)
    assert r["f_mem_pm"] >= 0.85 and 0.25 <= r["f_mem"] <= 0.75, r
    # random feature biases break the symmetry: nearly every sample is then a copy of a training point
    mb = fit_levels(6, 64 / 6, 4, sig, seed=0, n_rows=2048, bias=1.0)
    assert not torch.allclose(RFDenoiser(mb, float("inf"))(-x, s), -RFDenoiser(mb, float("inf"))(x, s))
    assert sample_metrics(mb, float("inf"), sig, 64, 0)["f_mem"] >= 0.85
