"""BDKOS25 closed forms: empirical / Tikhonov / consistency denoisers, schedules, RK45, the closedform CLI."""

import json
import math

import numpy as np
import pytest
import torch

from diffmem import schedules as sc
from diffmem.bdkos25 import build_closed_form, collapse_diagnostics, fraction_within, plot_collapse, \
    sample_closed_form
from diffmem.cli import main
from diffmem.closed_form import ConsistencyDenoiser, EmpiricalDenoiser, GaussianDenoiser, TikhonovDenoiser, \
    bdkos25_score, vp_score
from diffmem.errors import DiffmemError
from diffmem.models import MODELS, build_model, parse_model_name
from diffmem.samplers import SAMPLERS, generate, pf_ode_solve


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: thread hand-off would dominate on a shared machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def problem():
    g = torch.Generator().manual_seed(0)
    y = torch.randn(300, 5, generator=g, dtype=torch.float64)
    x = torch.randn(40, 5, generator=g, dtype=torch.float64) * 1.5
    s = torch.exp(torch.linspace(-1.0, 1.2, 40, dtype=torch.float64))
    return y, x, s


def _brute(y, x, s, m=1.0):
    """float64 softmax over all points of the mixture (1/N) Σ N(m y_n, s² I): (log Σ K, ŷ, w)."""
    logits = -((x[:, None] - m * y[None]) ** 2).sum(-1) / (2 * s[:, None] ** 2)
    w = torch.softmax(logits, 1)
    return torch.logsumexp(logits, 1), w @ y, w


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_empirical_matches_brute_force(problem, dtype, tol):
    y, x, s = problem
    lz_ref, ref, _ = _brute(y, x, s)
    den = EmpiricalDenoiser(y.to(dtype), block=64)  # several blocks: the running log-sum-exp
    lz, mean = den.log_weights_and_mean(x.to(dtype), s.to(dtype))
    assert mean.dtype == dtype
    assert float((mean.double() - ref).norm() / ref.norm()) < tol
    assert float(((lz.double() - lz_ref).abs() / lz_ref.abs().clamp_min(1)).max()) < 10 * tol
    out = den(x.to(dtype), s.to(dtype))
    assert out.dtype == dtype and out.shape == x.shape


def test_empirical_from_numpy_blocks_and_small_sigma_limit(problem):
    y, x, s = problem
    a = EmpiricalDenoiser(y, block=64)(x, s)
    b = EmpiricalDenoiser(y.numpy(), block=37, dtype=torch.float64)(x, s)  # array read block by block
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    nearest = torch.cdist(x, y).argmin(1)
    s0 = torch.full((len(x),), 1e-4, dtype=torch.float64)
    torch.testing.assert_close(EmpiricalDenoiser(y, block=64)(x, s0), y[nearest])
    st = EmpiricalDenoiser(y, block=64).mixture_stats(x, s0)
    assert torch.equal(st["argmax"], nearest)
    assert float(st["max_weight"].min()) > 1 - 1e-9 and float(st["entropy"].max()) < 1e-6


def test_mixture_stats_match_brute_force(problem):
    y, x, s = problem
    lz_ref, _, w = _brute(y, x, s)
    st = EmpiricalDenoiser(y, block=64).mixture_stats(x, s)
    torch.testing.assert_close(st["log_z"], lz_ref)
    torch.testing.assert_close(st["max_weight"], w.max(1).values)
    assert torch.equal(st["argmax"], w.argmax(1))
    torch.testing.assert_close(st["entropy"], -(w * torch.log(w.clamp_min(1e-300))).sum(1))


def test_regularised_limits_equal_empirical(problem):
    y, x, s = problem
    emp = EmpiricalDenoiser(y, block=64)(x, s)
    assert torch.equal(TikhonovDenoiser(y, c=0.0, block=64)(x, s), emp)
    assert torch.equal(ConsistencyDenoiser(y, tau=0.0, block=64)(x, s), emp)
    assert torch.equal(ConsistencyDenoiser(y, tau=1e-300, block=64)(x, s), emp)
    torch.testing.assert_close(TikhonovDenoiser(y, c=1e-14, block=64)(x, s), emp, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("c", [1e-4, 0.3])
def test_tikhonov_and_consistency_formulas(problem, c):
    y, x, s = problem
    lz, yhat, _ = _brute(y, x, s)
    s2 = s[:, None] ** 2
    # Tikhonov, VE (m = 1): s_c = (ŷ − x)/(σ² + c), D = x + σ² s_c
    torch.testing.assert_close(TikhonovDenoiser(y, c=c, block=64)(x, s), x + s2 * (yhat - x) / (s2 + c))
    # VP form: with m² = 1/(1 + σ²), the VP score (m ŷ − x_vp)/(σ_vp² + c) of BDKOS25
    m = 1 / torch.sqrt(1 + s**2)
    x_vp, s_vp = x * m[:, None], s * m
    _, yhat_vp, _ = _brute(y, x_vp, s_vp, m[:, None, None])
    want = (m[:, None] * yhat_vp - x_vp) / (s_vp[:, None] ** 2 + c)
    torch.testing.assert_close(vp_score(TikhonovDenoiser(y, c=c, schedule="vp"), x_vp, m, s_vp), want)
    # consistency: K_n = exp(−‖x − y_n‖²/2σ²), w = K/max(ΣK, τ), s = (Σ w y − (Σ w) x)/σ²
    K = torch.exp(-((x[:, None] - y[None]) ** 2).sum(-1) / (2 * s2))
    wn = K / torch.clamp_min(K.sum(1, keepdim=True), c)
    s_ref = (wn @ y - wn.sum(1, keepdim=True) * x) / s2
    torch.testing.assert_close(ConsistencyDenoiser(y, tau=c, block=64)(x, s), x + s2 * s_ref)


def test_vp_score_of_the_empirical_mixture(problem):
    y, x, _ = problem
    t = 0.37
    m, sv = float(sc.bdkos25_vp_m(t)), float(sc.bdkos25_vp_sigma(t))
    _, yhat, _ = _brute(y, x, torch.full((len(x),), sv, dtype=torch.float64), m)
    torch.testing.assert_close(bdkos25_score(EmpiricalDenoiser(y), x, t, "vp"), (m * yhat - x) / sv**2)


def test_bdkos25_schedules():
    s0 = 10.0
    assert sc.bdkos25_ve_sigma(0.0) == 0.0
    assert sc.bdkos25_ve_sigma(1.0) ** 2 == pytest.approx((s0**2 - 1) / (2 * math.log(s0)), rel=1e-14)
    t = np.array([1e-5, 0.01, 0.3, 1.0])
    np.testing.assert_allclose(sc.bdkos25_ve_t(sc.bdkos25_ve_sigma(t)), t, rtol=1e-12)
    h = 1e-7
    np.testing.assert_allclose(sc.bdkos25_ve_dsigma_dt(t[1:]), (sc.bdkos25_ve_sigma(t[1:] + h)
                               - sc.bdkos25_ve_sigma(t[1:] - h)) / (2 * h), rtol=1e-6)
    # VP: β(t) = 0.001 + t(3 − 0.001), α = ∫β, m = e^{−α/2}, σ² = 1 − e^{−α}
    a = 0.001 * 0.5 + 0.5 * 2.999 * 0.25
    assert sc.bdkos25_vp_alpha(0.5) == pytest.approx(a, rel=1e-14)
    assert sc.bdkos25_vp_m(0.5) == pytest.approx(math.exp(-a / 2), rel=1e-14)
    assert sc.bdkos25_vp_sigma(0.5) == pytest.approx(math.sqrt(1 - math.exp(-a)), rel=1e-14)
    assert sc.bdkos25_vp_m(1.0) == pytest.approx(math.exp(-1.5005 / 2), rel=1e-14)
    assert sc.bdkos25_sigma(0.5, "vp") == pytest.approx(sc.bdkos25_vp_sigma(0.5) / sc.bdkos25_vp_m(0.5), rel=1e-13)
    assert sc.bdkos25_ou_t(0.5, "vp") == pytest.approx(a / 2, rel=1e-12)
    assert sc.bdkos25_ou_t(0.5, "ve") == pytest.approx(sc.sigma_to_ou_t(sc.bdkos25_ve_sigma(0.5)), rel=1e-14)
    tt = torch.tensor([0.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(sc.bdkos25_ve_sigma(tt), torch.as_tensor(sc.bdkos25_ve_sigma(tt.numpy())))
    with pytest.raises(DiffmemError):
        sc.bdkos25_sigma(0.5, "sub-vp")


def _gaussian(d=3):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    cov = a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64)
    mu = torch.randn(d, generator=g, dtype=torch.float64)
    return mu, cov


def _exact_pf_map(mu, cov, x0, s0, s1):
    """For N(μ, Σ) data the PF-ODE is linear: in Σ's eigenbasis x_i − μ_i scales by sqrt((λ_i + σ1²)/(λ_i + σ0²))."""
    lam, v = torch.linalg.eigh(cov)
    return mu + (((x0 - mu) @ v) * torch.sqrt((lam + s1**2) / (lam + s0**2))) @ v.T


@pytest.mark.parametrize("variable", ["log_sigma", "sigma", "bdkos25-ve"])
def test_pf_ode_rk45_exact_on_gaussian_data(variable):
    mu, cov = _gaussian()
    den = GaussianDenoiser(mu, cov)
    x0 = torch.randn(64, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 20.0
    rec = np.array([20.0, 3.0, 0.5, 0.01])
    x1, traj, info = pf_ode_solve(den, x0, 20.0, 0.01, rtol=1e-9, atol=1e-9, variable=variable, record=rec)
    torch.testing.assert_close(x1, _exact_pf_map(mu, cov, x0, 20.0, 0.01), rtol=1e-6, atol=1e-6)
    for k, s in enumerate(rec):
        torch.testing.assert_close(traj[k], _exact_pf_map(mu, cov, x0, 20.0, float(s)), rtol=1e-6, atol=1e-6)
    assert info["nfev"] > 0


def test_rk45_is_a_registered_sampler():
    mu, cov = _gaussian()
    den = GaussianDenoiser(mu, cov)
    assert "rk45" in SAMPLERS and not SAMPLERS["rk45"].stochastic
    seeds = list(range(10, 50))
    a = generate(den, (3,), seeds, sampler="rk45", sigmas=[40.0, 0.002], dtype=torch.float64, rtol=1e-9, atol=1e-9)
    z = torch.stack([torch.randn(3, generator=torch.Generator().manual_seed(s), dtype=torch.float64) for s in seeds])
    torch.testing.assert_close(a, _exact_pf_map(mu, cov, 40.0 * z, 40.0, 0.002), rtol=1e-6, atol=1e-6)
    b = generate(den, (3,), seeds, sampler="rk45", sigmas=[40.0, 0.002], dtype=torch.float64, batch_size=7,
                 rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)  # per-sample seeds: batch-independent up to tolerance
    seen = []
    c = generate(den, (3,), seeds[:8], sampler="rk45", steps=6, callback=lambda i, x, d, s: seen.append(float(s[0])))
    assert c.shape == (8, 3) and c.dtype == torch.float32 and len(seen) == 6  # default Karras grid, ends in D


def test_model_registry_names_with_parameters():
    assert parse_model_name("tikhonov:c=1e-4") == ("tikhonov", {"c": 1e-4})
    assert parse_model_name("consistency:tau=0.1") == ("consistency", {"tau": 0.1})
    assert "tikhonov:c=1e-4" in MODELS and MODELS["consistency:tau=1"].kind == "closed_form"
    assert "tikhonov:c=-1" not in MODELS and "nope:c=1" not in MODELS
    for bad, what in [("tikhonov", "needs the parameter c"), ("tikhonov:c=-1", "≥ 0"), ("consistency:tau=-0.1", "≥ 0"),
                      ("consistency:c=1", "no parameter 'c'"), ("empirical:k=1", "no parameter"),
                      ("tikhonov:c", "not key=value"), ("nope:c=1", "unknown model")]:
        with pytest.raises(DiffmemError, match=what):
            parse_model_name(bad)
    from diffmem.config import resolve_config
    from diffmem.data import load_dataset

    cfg = resolve_config("digits", None, ["model.name=tikhonov:c=1e-3", "data=bdkos25-2d", "n=20"])
    ds = load_dataset("bdkos25-2d")
    den, _ = build_model(cfg.model, ds.shape, ds, ds.subset(20))
    assert isinstance(den, TikhonovDenoiser) and den.c == 1e-3 and den.n == 20
    with pytest.raises(DiffmemError, match="needs the parameter tau"):
        resolve_config("digits", None, ["model.name=consistency"])


def test_bdkos25_data_and_library_errors():
    from diffmem.data import load_dataset

    ds = load_dataset("bdkos25-2d")
    np.testing.assert_array_equal(ds.pool.numpy(), np.random.RandomState(1).randn(20, 2).astype(np.float32))
    assert len(ds.test) == 200
    with pytest.raises(DiffmemError, match="empty"):
        build_closed_form("empirical", np.zeros((0, 2)))
    with pytest.raises(DiffmemError, match="features"):
        fraction_within(np.zeros((5, 3)), np.zeros((4, 2)), 0.1)
    with pytest.raises(DiffmemError, match="not a BDKOS25 closed form"):
        build_closed_form("gaussian", np.ones((4, 2)))


def test_collapse_diagnostics_of_the_empirical_score():
    y = np.random.RandomState(1).randn(20, 2)
    res = sample_closed_form(y, "empirical", n_samples=40, seed=3, n_boot=50, record=12)
    dg = res["diagnostics"]
    assert dg["max_weight"].shape == (12, 40)
    assert np.median(dg["max_weight"][-1]) > 0.999 and np.median(dg["entropy"][-1]) < 1e-3
    assert np.median(dg["entropy"][0]) > 1.0  # at t = 1 the weights are spread
    assert dg["within_2sigma"][-1] == 1.0 and dg["within_2sigma"][0] > 0.5
    assert np.array_equal(dg["argmax"][-1], res["nearest"])
    assert sum(res["end_index_counts"]) == 40
    from matplotlib.figure import Figure

    assert isinstance(plot_collapse(res), Figure)
    again = collapse_diagnostics(y, res["traj"][-1:], res["traj_sigma"][-1:], res["traj"][-1])
    assert again["dist_final"].max() == 0.0


def test_closedform_sample_json_contract(capsys, tmp_path):
    args = ["closedform", "sample", "--data", "bdkos25-2d", "--model", "empirical", "--schedule", "ve",
            "--n-samples", "50", "--seed", "0", "--t-end", "1e-5", "--tol", "1e-2", "--json", "--n-boot", "200"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    for k in ("fraction_within", "ci95", "n_samples", "f_mem", "sigma_end", "latent_seeds", "model"):
        assert k in out
    assert out["n_samples"] == 50 and out["n_train"] == 20
    assert out["fraction_within"] >= 0.94 and out["f_mem"] == 1.0
    assert out["ci95"][0] <= out["fraction_within"] <= out["ci95"][1]
    assert out["sigma_end"] == pytest.approx(0.0031623, rel=1e-4)
    assert main(args[:6] + ["--model", "tikhonov:c=1e-2", "--n-samples", "30", "--json", "--out", str(tmp_path / "o")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["fraction_within"] < 0.2
    assert (tmp_path / "o" / "collapse.png").stat().st_size > 0 and (tmp_path / "o" / "result.json").exists()


@pytest.mark.parametrize("extra,what", [
    (["--model", "tikhonov:c=-1"], "≥ 0"),
    (["--model", "consistency:tau=-0.5"], "≥ 0"),
    (["--model", "tikhonov"], "needs the parameter c"),
    (["--model", "unet"], "not a BDKOS25 closed form"),
    (["--model", "bogus"], "unknown model"),
    (["--schedule", "subvp"], "unknown schedule"),
    (["--t-end", "0"], "t-end"),
    (["--t-end", "1.5"], "t-end"),
    (["--n-samples", "0"], "n-samples"),
    (["--tol", "-1"], "tol"),
    (["--data", "EMPTY"], "no rows"),
])
def test_closedform_bad_input_exits_2_with_one_line(capsys, tmp_path, extra, what):
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 2)))
    extra = [str(empty) if e == "EMPTY" else e for e in extra]
    out = tmp_path / "never"
    assert main(["closedform", "sample", "--n-samples", "5", "--out", str(out)] + extra) == 2
    err = capsys.readouterr().err
    assert err.startswith("diffmem: error:") and err.count("\n") == 1 and what in err
    assert not out.exists()
