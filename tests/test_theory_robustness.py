"""Issue #13 item 6: constants and solvers at extreme parameters compute correctly or refuse in one line."""

import json
import math

import numpy as np
import pytest

import diffmem.theory.constants as C
from diffmem.cli import main
from diffmem.theory.constants import rf_constants, stein_checks

MU1 = 0.605706  # SPEC §2, tanh, sigma_x = 1
S_INF = 0.0274153  # ‖σ‖² − μ₁² = 0.394294 − 0.605706² (t → ∞: v_t² → 0, b_t → μ₁)


@pytest.mark.parametrize("t", [20.0, 40.0, 400.0, 1e6])
def test_large_t_constants_are_the_t_to_infinity_limits(t):
    k = rf_constants(t)
    assert abs(k.a_t - MU1) < 1e-6 and abs(k.mu1 - MU1) < 1e-6 and abs(k.b_t - MU1) < 1e-6
    assert 0 <= k.v_t2 < 1e-30  # v_t² ~ e^{-6t} for an odd activation
    assert abs(k.s_t2 - S_INF) < 1e-6
    assert max(abs(r) for r in stein_checks(k).values()) < 1e-12


@pytest.mark.parametrize("act", ["tanh", "erf"])
@pytest.mark.parametrize("t", [0.7, 1.0, 2.0])
def test_mehler_series_equals_the_grid_where_both_are_accurate(monkeypatch, act, t):
    monkeypatch.setattr(C, "_V_CANCEL", 0.0)  # always the 2-D grid
    a = rf_constants(t, act=act)
    monkeypatch.setattr(C, "_V_CANCEL", 1e9)  # always Mehler's series (ρ² ≤ 1/4 here)
    monkeypatch.setattr(C, "_C_STABLE", 1e9)  # and a_t = μ₁/Γ
    b = rf_constants(t, act=act)
    assert abs(a.a_t - b.a_t) < 1e-13
    assert abs(a.v_t2 - b.v_t2) < 1e-14 * max(1.0, 1e3 * a.v_t2) + 1e-15 and a.v_t2 > 0
    assert abs(a.s_t2 - b.s_t2) < 1e-14


def test_v_t2_at_large_t_has_its_leading_mehler_term():
    # tanh is odd: v_t² = ρ⁶ μ̂₃² + O(ρ¹⁰), ρ² = e^{-2t}/Γ² (σ_x = 1, Γ = 1)
    x, w = C.gauss_hermite(201)
    mu3 = float(w @ (np.tanh(x) * (x**3 - 3 * x))) / math.sqrt(6)
    for t in (5.0, 8.0):
        k = rf_constants(t)
        rho2 = math.exp(-2 * t) / k.gamma2
        assert abs(k.v_t2 / (rho2**3 * mu3**2) - 1) < 1e-3, (t, k.v_t2)


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("diffmem: error:") and "\n" not in err, err
    return err


@pytest.mark.parametrize("t", ["400", "40", "1e6"])
def test_cli_constants_large_t(capsys, t):
    assert main(["theory", "constants", "--t", t, "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert abs(obj["a_t"] - MU1) < 1e-6 and abs(obj["s_t2"] - S_INF) < 1e-6
    assert max(abs(v) for v in obj["stein_residuals"].values()) < 1e-12


@pytest.mark.parametrize("argv, needle", [
    (["theory", "constants", "--t", "0"], "t must be"),
    (["theory", "constants", "--t", "nan"], "t must be"),
    (["theory", "constants", "--t", "0.1", "--sigma-x", "1e200"], "Gamma_t^2"),
    (["theory", "spectrum", "--psi-p", "1e-9", "--psi-n", "8", "--t", "0.1"], "Theorem 3.1 solver failed"),
    (["theory", "spectrum", "--psi-p", "64", "--psi-n", "8", "--t", "40"], "v_t"),
])
def test_cli_refuses_in_one_line(capsys, tmp_path, argv, needle):
    if argv[1] == "spectrum":
        argv = argv + ["--out", str(tmp_path)]
    assert main(argv) == 2
    assert needle in _err(capsys)
