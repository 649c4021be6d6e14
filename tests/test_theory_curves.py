"""Random-features theory: constants vs Monte Carlo, closed-form learning curves
vs simulated gradient descent, the τ time unit, Gaussian equivalence, maps."""

import math

import numpy as np
import pytest
import torch

from diffmem.errors import DiffmemError
from diffmem.theory.constants import rf_constants
from diffmem.theory.curves import (curves, dtau_per_step, eigensystem, learning_curves, lr_for_dtau,
                                   plot_curves, predicted_timescales, simulate_gd, crossing_time)
from diffmem.theory.heatmap import gap_heatmap, plot_heatmap, tau_mem_map
from diffmem.theory.rf import (gaussian_equivalent, ge_U_eigenvalues, make_problem, real_matrices,
                               real_U_eigenvalues, spectrum_counts)


@pytest.fixture(autouse=True, scope="module")
def _one_blas_thread():
    # multi-threaded BLAS is slower than one thread on a shared 2-core machine
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


# ----------------------------------------------------------------- constants vs Monte Carlo

@pytest.mark.parametrize("t", [0.1, 1.0])
def test_constants_match_monte_carlo(t):
    """Each quadrature constant within 5 Monte-Carlo standard errors (N = 10⁶)."""
    k = rf_constants(t)
    rng = np.random.default_rng(0)
    N = 1_000_000
    u, v, v2, z = rng.standard_normal((4, N))
    c, sd, g = math.exp(-t), math.sqrt(k.delta), math.sqrt(k.gamma2)
    f1 = np.tanh(c * u + sd * v)
    f2 = np.tanh(c * u + sd * v2)  # same u, independent v: E[f1 f2] = E_u[(E_v σ)²]
    fz = np.tanh(g * z)
    samples = {
        "b_t": (v * f1, k.b_t),
        "a_t": (f1 * u / c, k.a_t),
        "mu1": (fz * z, k.mu1),
        "sigma_norm2": (fz**2, k.sigma_norm2),
        # v_t² + a_t²c² = E[f1 f2]
        "v_t2": (f1 * f2 - k.a_t**2 * c**2, k.v_t2),
        # s_t² = ‖σ‖² − E[f1 f2] − b_t²
        "s_t2": (fz**2 - f1 * f2 - k.b_t**2, k.s_t2),
    }
    for name, (x, exact) in samples.items():
        se = x.std() / math.sqrt(N)
        assert abs(x.mean() - exact) < 5 * se + 1e-12, (name, x.mean(), exact, se)


# ----------------------------------------------------------------- problem and matrices

def test_spectrum_counts_and_problem_shapes():
    s = spectrum_counts(10, [0.5, 1.5])
    assert s.tolist() == [0.5] * 5 + [1.5] * 5
    s = spectrum_counts(10, [1.0, 2.0, 3.0], [1, 1, 2])
    assert s.size == 10 and (s == 3.0).sum() == 5 and (s == 1.0).sum() + (s == 2.0).sum() == 5
    pr = make_problem(12, 2.5, 1.5, 0.1, sigma_spectrum=[0.5, 1.5], seed=3)
    assert (pr.p, pr.n) == (30, 18)
    assert pr.W.shape == (30, 12) and pr.X.shape == (18, 12)
    assert pr.consts.sigma_x == pytest.approx(1.0)
    # columns of X have the requested variances (loosely) and the seed reproduces
    assert np.array_equal(make_problem(12, 2.5, 1.5, 0.1, sigma_spectrum=[0.5, 1.5], seed=3).X, pr.X)
    assert pr.min_test_loss == pytest.approx(1 - pr.delta * np.mean(1 / (math.exp(-0.2) * pr.sigma_diag + pr.delta)))
    assert make_problem(5, 2, 2, 0.1).min_test_loss == pytest.approx(1 - rf_constants(0.1).delta)


def test_ge_eigenvalues_from_svd_match_dense():
    pr = make_problem(15, 4, 2, 0.05, seed=1)
    ge = gaussian_equivalent(pr)
    lam = ge_U_eigenvalues(pr)
    assert lam.size == pr.p
    assert np.allclose(lam, np.linalg.eigvalsh(ge["U"]), atol=1e-12)
    # p − n − d eigenvalues sit exactly at s_t²
    assert np.sum(np.isclose(lam, pr.consts.s_t2, rtol=1e-9)) == pr.p - pr.n - pr.d
    # U = s² I + H Hᵀ and the Ũ factorisation
    assert np.allclose(ge["U"], pr.consts.s_t2 * np.eye(pr.p) + ge["H"] @ ge["H"].T)
    assert np.allclose(ge["U_tilde"], ge["Ut_factor"] @ ge["Ut_factor"].T + ge["Ut_shift"] * np.eye(pr.p))


def test_gaussian_equivalent_matches_real_features_in_moments():
    """Tr U/p, Tr U²/p, Tr Ũ/p, Tr Ũ²/p and V: real features (1024 noise draws per point) vs Lemma C.1."""
    pr = make_problem(20, 4, 2, 0.1, seed=0)
    ge = gaussian_equivalent(pr)
    rm = real_matrices(pr, n_noise=1024, n_test=40_000)
    p = pr.p
    for key in ("U", "U_tilde"):
        a, b = ge[key], rm[key]
        assert np.trace(b) / p == pytest.approx(np.trace(a) / p, rel=0.04), key
        assert np.sum(b * b) / p == pytest.approx(np.sum(a * a) / p, rel=0.08), key
    for key in ("V", "V_tilde"):
        err = np.linalg.norm(rm[key] - ge["V"]) / np.linalg.norm(ge["V"])
        assert err < 0.12, (key, err)
    # eigenvalue helpers agree in their bulk (top eigenvalues within 10 %)
    e_ge = ge_U_eigenvalues(pr)
    e_re = real_U_eigenvalues(pr, n_noise=256)
    assert e_re.size == p and np.all(np.diff(e_re) >= 0)
    assert e_re[-1] == pytest.approx(e_ge[-1], rel=0.10)
    assert np.mean(e_re) == pytest.approx(np.mean(e_ge), rel=0.05)


def test_real_matrices_chunking_is_exact():
    """The blocked accumulation equals the plain formula with the same noise draws."""
    pr = make_problem(6, 3, 2, 0.2, seed=2)
    a = real_matrices(pr, n_noise=8, chunk_rows=8, tilde=False)
    b = real_matrices(pr, n_noise=8, chunk_rows=10_000, tilde=False)
    assert np.allclose(a["U"], a["U"].T)
    # different chunking ⇒ different noise order, but both are estimates of the same U
    assert np.allclose(a["U"], b["U"], atol=0.05)
    rng = np.random.default_rng(np.random.SeedSequence([2, 3]))  # the problem's noise stream
    xs = np.repeat(pr.X, 8, axis=0)
    F, V = [], []
    for lo in range(0, xs.shape[0], 8):
        xi = rng.standard_normal((8, pr.d))
        f = np.tanh((math.exp(-0.2) * xs[lo:lo + 8] + math.sqrt(pr.delta) * xi) @ pr.W.T / math.sqrt(pr.d))
        F.append(f)
        V.append(f.T @ xi)
    F = np.concatenate(F)
    assert np.allclose(a["U"], F.T @ F / F.shape[0], atol=1e-13)
    assert np.allclose(a["V"], sum(V) / F.shape[0], atol=1e-13)


# ----------------------------------------------------------------- closed form vs gradient descent

def _torch_gd(mats, d, p, delta, lr, n_steps, log_every, param="paper"):
    """Plain GD on A with autograd on the loss L(A) (divided by d), dense matrices."""
    U, V, Ut, Vt = (torch.tensor(mats[k]) for k in ("U", "V", "U_tilde", "V_tilde"))
    scale = math.sqrt(p) if param == "paper" else 1.0
    A = torch.zeros(d, p, dtype=torch.float64, requires_grad=True)

    def loss(A, U, V):
        B = A / scale
        return 1 + delta / d * torch.trace(B @ U @ B.T) + 2 * math.sqrt(delta) / d * torch.trace(B @ V)

    out = []
    for k in range(n_steps + 1):
        if k % log_every == 0:
            with torch.no_grad():
                out.append((k, loss(A, U, V).item(), loss(A, Ut, Vt).item()))
        if k == n_steps:
            break
        L = loss(A, U, V)
        (g,) = torch.autograd.grad(L, A)
        with torch.no_grad():
            A -= lr * g
    return np.array(out)


@pytest.fixture(scope="module")
def small():
    pr = make_problem(10, 4, 2, 0.1, seed=0)
    ge = gaussian_equivalent(pr)
    return pr, ge


def test_closed_form_matches_autograd_gd(small):
    """GD on A with autograd, τ = kη/d², vs the closed form: within 0.1 % from τ = 1 to 2 τ_mem."""
    pr, ge = small
    d, p = pr.d, pr.p
    tau_mem = predicted_timescales(pr.psi_p, pr.psi_n, pr.consts)["tau_mem"]
    dtau = 0.2
    lr = lr_for_dtau(dtau, d)
    assert lr == pytest.approx(dtau * d**2)
    n_steps = int(math.ceil(2 * tau_mem / dtau))
    sim = _torch_gd(ge, d, p, pr.delta, lr, n_steps, log_every=n_steps // 40)
    tau = sim[:, 0] * dtau_per_step(lr, d)
    lc = learning_curves(ge, tau)  # dense-matrix path (eigh of U)
    sel = tau >= 1
    assert np.max(np.abs(sim[sel, 1] / lc["train_loss"][sel] - 1)) < 1e-3
    assert np.max(np.abs(sim[sel, 2] / lc["test_loss"][sel] - 1)) < 1e-3
    assert tau[-1] > 1.99 * tau_mem
    # the SVD-of-H path gives the same closed form
    lc2 = learning_curves(pr, tau)
    assert np.allclose(lc2["train_loss"], lc["train_loss"], atol=1e-12)
    assert np.allclose(lc2["test_loss"], lc["test_loss"], atol=1e-12)


def test_time_unit_conversion(small):
    """Halving η and doubling the steps traces the same τ curve; the authors'
    parametrisation s = Aσ (no 1/√p) runs on τ = kηψ_p/d."""
    pr, ge = small
    d, p = pr.d, pr.p
    assert dtau_per_step(3.0, d) == pytest.approx(3.0 / d**2)
    assert dtau_per_step(3.0, d, pr.psi_p, "no_sqrt_p") == pytest.approx(3.0 * pr.psi_p / d)
    assert lr_for_dtau(dtau_per_step(0.7, d, 4.0, "no_sqrt_p"), d, 4.0, "no_sqrt_p") == pytest.approx(0.7)
    lr = lr_for_dtau(0.4, d)
    a = _torch_gd(ge, d, p, pr.delta, lr, 500, log_every=50)
    b = _torch_gd(ge, d, p, pr.delta, lr / 2, 1000, log_every=100)
    ta, tb = a[:, 0] * dtau_per_step(lr, d), b[:, 0] * dtau_per_step(lr / 2, d)
    assert np.allclose(ta, tb)
    lc = learning_curves(ge, ta)
    err_a = np.abs(a[1:, 1:] - np.c_[lc["train_loss"], lc["test_loss"]][1:]).max()
    err_b = np.abs(b[1:, 1:] - np.c_[lc["train_loss"], lc["test_loss"]][1:]).max()
    assert np.abs(a[:, 1:] - b[:, 1:]).max() < 2e-3
    assert err_b < 0.6 * err_a  # first-order convergence to the gradient flow
    # no 1/√p: same curve when the step is η' = dτ d/ψ_p
    lr2 = lr_for_dtau(0.4, d, pr.psi_p, "no_sqrt_p")
    assert lr2 == pytest.approx(0.4 * d / pr.psi_p)
    c = _torch_gd(ge, d, p, pr.delta, lr2, 500, log_every=50, param="no_sqrt_p")
    assert np.allclose(c[:, 1:], a[:, 1:], atol=1e-10)
    # simulate_gd with lr and either parametrisation lands on the same τ grid
    s1 = simulate_gd(ge, ta, lr=lr)
    s2 = simulate_gd(ge, ta, lr=lr2, parametrisation="no_sqrt_p")
    assert np.allclose(s1["tau"], ta) and np.allclose(s2["tau"], ta)
    assert np.allclose(s1["train_loss"], a[:, 1], atol=1e-10)
    assert np.allclose(s2["test_loss"], a[:, 2], atol=1e-10)


def test_simulation_bases_agree_and_match_closed_form(small):
    pr, ge = small
    taus = np.logspace(0, 3.5, 12)
    lc = learning_curves(pr, taus)
    runs = {b: simulate_gd(pr, taus, dtau=0.05, basis=b) for b in ("eigen", "kernel", "direct")}
    for b, s in runs.items():
        assert np.allclose(s["tau"], taus, rtol=0.05 / taus[0])
        assert np.allclose(s["train_loss"], runs["direct"]["train_loss"], atol=1e-10), b
        assert np.allclose(s["test_loss"], runs["direct"]["test_loss"], atol=1e-10), b
    s = runs["eigen"]
    lc = learning_curves(pr, s["tau"])
    assert np.max(np.abs(s["train_loss"] / lc["train_loss"] - 1)) < 3e-3
    assert np.max(np.abs(s["test_loss"] / lc["test_loss"] - 1)) < 3e-3
    assert np.allclose(s["score_error"], (s["test_loss"] - pr.min_test_loss) / pr.delta)


def test_real_matrices_curves_and_other_optimisers(small):
    pr, _ = small
    rm = real_matrices(pr, n_noise=64, n_test=4000)
    taus = np.array([0.0, 1.0, 10.0, 100.0, 1000.0])
    lc = learning_curves(rm, taus)
    s = simulate_gd(rm, taus, dtau=0.02, basis="direct")
    assert lc["train_loss"][0] == pytest.approx(1.0) and lc["test_loss"][0] == pytest.approx(1.0)
    assert np.max(np.abs(s["train_loss"] / lc["train_loss"] - 1)) < 3e-3
    assert np.max(np.abs(s["test_loss"] / lc["test_loss"] - 1)) < 3e-3
    # one noise draw per step: noisy, but on the same τ axis it tracks the exact-expectation GD
    taus2 = np.array([5.0, 50.0])
    sn = simulate_gd(rm, taus2, method="gd_noise", dtau=0.05, prob=pr, seed=1)
    sg = simulate_gd(rm, taus2, dtau=0.05, basis="direct")
    assert np.all(np.abs(sn["train_loss"] - sg["train_loss"]) < 0.02)
    # Adam decreases the loss
    sa = simulate_gd(rm, [0.0, 5.0], method="adam", lr=1e-2)
    assert sa["train_loss"][1] < sa["train_loss"][0] - 0.01


def test_timescales_and_crossing():
    k = rf_constants(0.1)
    ts = predicted_timescales(64, 8, k)
    assert ts["lambda_min"] == pytest.approx(k.s_t2 + k.v_t2 * (1 - math.sqrt(8)) ** 2)
    assert ts["tau_mem"] == pytest.approx(64 / (k.delta * ts["lambda_min"]))
    assert ts["tau_gen"] == pytest.approx(1 / k.delta)
    # τ_mem grows with ψ_n in regime I
    assert predicted_timescales(64, 16, k)["tau_mem"] > ts["tau_mem"]
    tau = np.logspace(0, 4, 41)
    y = 1 - np.exp(-tau / 100)
    assert crossing_time(tau, y, 0.5) == pytest.approx(100 * math.log(2), rel=0.03)
    assert math.isnan(crossing_time(tau, -y, 0.5, ref=1.0))


def test_curves_json_and_plots(tmp_path):
    r = curves(4, 2, 0.1, 10, n_tau=30)
    import json

    s = json.dumps(r)
    for key in ("tau", "train_loss", "test_loss", "score_error", "tau_mem"):
        assert key in r
    assert len(r["tau"]) == 30 and json.loads(s)["tau_mem"] == pytest.approx(r["tau_mem"])
    assert r["test_loss"][-1] > r["train_loss"][-1]  # memorisation: a positive gap at the end
    r2 = curves(4, 4, 0.1, 10, n_tau=30)
    path = plot_curves([r, r2], tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 1000 and path.endswith("c.png")


def test_heatmap_small(tmp_path):
    h = gap_heatmap(psi_n=[1, 4], psi_p=[2, 8], taus=[10.0, 1000.0], d=8)
    assert h["gap"].shape == (2, 2, 2) and h["tau_mem"].shape == (2, 2)
    # more data → smaller gap; later → larger gap (at ψ_p = 8)
    assert h["gap"][1, 1, 0] > h["gap"][1, 1, 1]
    assert h["gap"][1, 1, 0] > h["gap"][0, 1, 0]
    m = tau_mem_map([1, 4], [2, 8])
    assert np.allclose(m["tau_mem"], h["tau_mem"])
    plot_heatmap(h, tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000


# ----------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs", [
    dict(d=0, psi_p=2, psi_n=2, t=0.1),
    dict(d=2.5, psi_p=2, psi_n=2, t=0.1),
    dict(d=10, psi_p=-1, psi_n=2, t=0.1),
    dict(d=10, psi_p=2, psi_n=float("nan"), t=0.1),
    dict(d=10, psi_p=2, psi_n=2, t=0.0),
    dict(d=10, psi_p=2, psi_n=2, t=0.1, sigma_spectrum=[]),
    dict(d=10, psi_p=2, psi_n=2, t=0.1, sigma_spectrum=[1.0, -1.0]),
    dict(d=10, psi_p=2, psi_n=2, t=0.1, sigma_spectrum=[1.0, 2.0], sigma_weights=[1.0]),
    dict(d=10, psi_p=2, psi_n=2, t=0.1, act="nope"),
    dict(d=10, psi_p=0.01, psi_n=2, t=0.1),
    dict(d=10, psi_p=2, psi_n=2, t=0.1, seed=-1),
    dict(d=10, psi_p=2, psi_n=2, t=0.1, sigma_x=0),
])
def test_make_problem_rejects_bad_input(kwargs):
    with pytest.raises(DiffmemError):
        make_problem(**kwargs)


def test_curves_reject_bad_input(small):
    pr, ge = small
    with pytest.raises(DiffmemError):
        learning_curves(pr, [-1.0, 2.0])
    with pytest.raises(DiffmemError):
        learning_curves(pr, [])
    with pytest.raises(DiffmemError):
        learning_curves("not a problem", [1.0])
    with pytest.raises(DiffmemError):
        eigensystem({"V": ge["V"]})
    with pytest.raises(DiffmemError):
        simulate_gd(pr, [1.0], method="sgd")
    with pytest.raises(DiffmemError):
        simulate_gd(pr, [1.0], basis="fourier")
    with pytest.raises(DiffmemError):
        simulate_gd(pr, [1.0], dtau=-1)
    with pytest.raises(DiffmemError):
        simulate_gd(pr, [1.0], dtau=1, lr=1)
    with pytest.raises(DiffmemError):
        simulate_gd(pr, [1e9], dtau=1e-3)
    with pytest.raises(DiffmemError):
        simulate_gd(ge, [1.0], method="gd_noise")
    with pytest.raises(DiffmemError):
        dtau_per_step(1.0, 10, parametrisation="other")
    with pytest.raises(DiffmemError):
        curves(4, 2, 0.1, 10, n_tau=1)
    with pytest.raises(DiffmemError):
        curves(4, 2, 0.1, 10, tau_min=10, tau_max=1)
    with pytest.raises(DiffmemError):
        gap_heatmap(psi_n=[], psi_p=[2])
    with pytest.raises(DiffmemError):
        real_matrices(pr, n_noise=0)
