"""Memorisation-time definitions (issue #13 items 1, 5): the contract, theory vs gradient descent, bad input."""

import json

import numpy as np
import pytest

from diffmem.cli import main
from diffmem.theory.constants import rf_constants
from diffmem.theory.curves import crossing_time, eigensystem, learning_curves, simulate_gd
from diffmem.theory.rf import make_problem
from diffmem.theory.taumem import limit_losses, memorisation_times, restrict, tau_grid


def test_contract_json(capsys, tmp_path):
    argv = ["theory", "taumem", "--psi-p", "16", "--psi-n", "1,2,4", "--t", "0.1", "--d", "10", "--json",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    defs = obj["definitions"]
    assert len(defs) >= 5 and sum("pred" in k for k in defs) == 1
    k = rf_constants(0.1)
    for name, d in defs.items():
        assert len(d["tau"]) == 3 and (d["slope"] is None or np.isfinite(d["slope"])), name
    pred = next(d for k_, d in defs.items() if "pred" in k_)
    for psi_n, tau in zip((1, 2, 4), pred["tau"]):
        lam_min = k.s_t2 + k.v_t2 * (1 - np.sqrt(16 / psi_n)) ** 2
        assert abs(tau / (16 / (k.delta * lam_min)) - 1) < 1e-12
    x, y = np.log([1, 2, 4]), np.log(pred["tau"])
    assert abs(pred["slope"] - np.polyfit(x, y, 1)[0]) < 1e-12
    assert (tmp_path / "taumem.png").stat().st_size > 0
    assert json.loads((tmp_path / "taumem.json").read_text())["definitions"].keys() == defs.keys()


@pytest.fixture(scope="module")
def small():
    prob = make_problem(10, 16, 2, 0.1, seed=3)
    return prob, eigensystem(prob)


def test_definitions_match_gradient_descent(small):
    """The half-gap time and the score minimum from the closed form equal those of simulated GD."""
    prob, es = small
    mt = memorisation_times(es, keep_curves=True)
    taus = tau_grid(es, per_decade=20)
    sim = simulate_gd(prob, taus, dtau=0.5, basis="eigen", eig=es)
    tr_inf, te_inf = limit_losses(es)  # the exact τ → ∞ limit is where GD ends
    assert abs(sim["gap"][-1] / (te_inf - tr_inf) - 1) < 1e-6
    t_half = crossing_time(sim["tau"], sim["gap"], 0.5)
    assert abs(t_half / mt["times"]["half_gap"] - 1) < 0.02
    i = int(np.argmin(sim["score_error"]))
    assert sim["tau"][i - 1] < mt["times"]["score_min"] < sim["tau"][i + 1]
    # (b) lies after (a); every gap-based time is finite here
    assert mt["times"]["score_rise"] > mt["times"]["score_min"]
    assert all(np.isfinite(mt["times"][k]) for k in ("half_gap", "bulk_half_gap", "pred_tau_mem"))


def test_restriction_is_the_projected_model(small):
    """restrict(all modes) is the full model; the restricted losses equal those of B projected on the kept
    eigenvectors, computed with the matrix formulas."""
    prob, es = small
    taus = np.array([10.0, 300.0, 1e4])
    full = learning_curves(prob, taus, eig=es)
    same = learning_curves(prob, taus, eig=restrict(es, np.ones(es.lam.size, bool)))
    assert np.allclose(full["gap"], same["gap"], rtol=1e-12, atol=1e-14)
    keep = es.lam >= np.median(es.lam)
    part = learning_curves(prob, taus, eig=restrict(es, keep))
    m = es.meta
    d, delta = m["d"], m["delta"]
    Bq = -(es.C.T / np.sqrt(delta)) * (-np.expm1(-2 * delta * taus[1] * es.lam / m["psi_p"]) / es.lam)[None, :]
    Bq[:, ~keep] = 0.0  # B Q [d, r]: the gradient-flow solution with the other modes removed
    train = 1 + delta / d * np.einsum("ij,j,ij->", Bq, es.lam, Bq) + 2 * np.sqrt(delta) / d * np.einsum("ij,ji->", Bq, es.C)
    test = 1 + delta / d * np.einsum("ij,ij->", Bq @ es.G, Bq) + 2 * np.sqrt(delta) / d * np.einsum("ij,ji->", Bq, es.Ct)
    assert abs(part["train_loss"][1] - train) < 1e-12 and abs(part["test_loss"][1] - test) < 1e-12


@pytest.mark.parametrize("extra, needle", [
    (["--psi-n", "a,b"], "--psi-n"),
    (["--psi-n", "0,2"], "psi_n"),
    (["--psi-n", "2,4", "--frac", "1.5"], "frac"),
    (["--psi-n", "2,4", "--rise", "0"], "rise"),
])
def test_bad_input_one_line(capsys, tmp_path, extra, needle):
    argv = ["theory", "taumem", "--psi-p", "16", "--t", "0.1", "--d", "10", "--out", str(tmp_path), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err and needle in err, err


def test_threshold_gap_falls_through_n_equals_p(capsys, tmp_path):
    argv = ["theory", "threshold", "--psi-p", "4,8", "--ratios", "0.25,1,4", "--d", "12", "--json",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    obj = json.loads(capsys.readouterr().out)
    for pp in (4.0, 8.0):
        gaps = [x["gap_inf"] for x in obj["rows"] if x["psi_p"] == pp]
        assert gaps[0] > 3 * gaps[1] > 9 * gaps[2] > 0  # O(1) in Regime I, falling through n* = p
        assert [x["regime"] for x in obj["rows"] if x["psi_p"] == pp] == ["I", "II", "II"]
    # the tau -> inf gap is the large-tau limit of the closed-form curves
    prob = make_problem(12, 4, 1, 0.1, seed=0)
    lc = learning_curves(prob, [1e9])
    assert abs(lc["gap"][0] / obj["rows"][0]["gap_inf"] - 1) < 1e-9


def test_threshold_bad_input(capsys, tmp_path):
    assert main(["theory", "threshold", "--ratios", "1,-2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err and "ratios" in err, err
