"""Random-features constants: SPEC reference values, Stein identities, errors."""

import math

import pytest

from diffmem.errors import DiffmemError
from diffmem.theory.constants import rf_constants, stein_checks

REF = {  # SPEC §2, exact quadrature, tanh, sigma_x = 1
    0.01: {"b_t": 0.085233, "v_t2": 0.025542, "s_t2": 0.0018735},
    0.1: {"b_t": 0.257884, "v_t2": 0.013841, "s_t2": 0.013574},
}


@pytest.mark.parametrize("t", [0.01, 0.1])
def test_reference_values(t):
    k = rf_constants(t)
    assert abs(k.a_t - 0.605706) < 1e-5 and abs(k.mu1 - 0.605706) < 1e-5
    assert abs(k.sigma_norm2 - 0.394294) < 1e-5
    for name, v in REF[t].items():
        assert abs(getattr(k, name) - v) < 1e-5, (name, getattr(k, name), v)


@pytest.mark.parametrize("act", ["tanh", "erf", "relu"])
@pytest.mark.parametrize("t, sx", [(0.01, 1.0), (0.3, 0.7), (1.0, 2.0)])
def test_stein_identities(act, t, sx):
    k = rf_constants(t, sigma_x=sx, act=act)
    for name, r in stein_checks(k, act).items():
        tol = 1e-3 if act == "relu" else 1e-10  # relu' is discontinuous: slower quadrature convergence
        assert abs(r) < tol, (name, r)
    assert k.v_t2 >= 0 and k.s_t2 >= 0


def test_quadrature_converged_and_linear_activation_exact():
    a, b = rf_constants(0.05, order=121), rf_constants(0.05, order=241)
    assert abs(a.s_t2 - b.s_t2) < 1e-12
    # linear sigma: the features are Gaussian, so v_t^2 = s_t^2 = 0 and a_t = 1
    k = rf_constants(0.2, sigma_x=1.3, act="linear")
    assert abs(k.a_t - 1) < 1e-12 and abs(k.v_t2) < 1e-12 and abs(k.s_t2) < 1e-12
    assert abs(k.b_t - math.sqrt(k.delta)) < 1e-12


@pytest.mark.parametrize("kw, match", [({"t": 0.0}, "t must be"), ({"t": -1.0}, "t must be"),
                                       ({"t": 0.1, "sigma_x": 0.0}, "sigma_x"),
                                       ({"t": 0.1, "act": "swishy"}, "unknown activation"),
                                       ({"t": 0.1, "order": 1000}, "order")])
def test_bad_input(kw, match):
    with pytest.raises(DiffmemError, match=match):
        rf_constants(**kw)
