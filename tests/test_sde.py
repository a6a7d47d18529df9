"""LinearSDE against independent computations: moment ODEs, closed forms, Monte Carlo."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import kinetic as kn
from kinetic import linalg
from kinetic.bench.kernel_accuracy import mp_reference
from kinetic.schedules import CustomSchedule, LinearSchedule


def random_stable(k=4, seed=0):
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(k, k))
    A = M - M.T - np.diag(rng.uniform(0.2, 1.0, size=k))  # skew part + damping: Hurwitz
    A[-1, -1] -= 1.0
    G = np.zeros((k, k))
    G[-1, -1] = 1.3
    return kn.LinearSDE(A, G, schedule=LinearSchedule(0.5, 3.0, 1.0), aux_cov=0.05 * np.eye(k - 1), T=1.0)


def random_full_noise(k=4, seed=1):
    """A random stable k = 4 system with a full-rank G (noise on every block, correlated)."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(k, k))
    A = M - M.T - np.diag(rng.uniform(0.5, 1.5, size=k))
    G = np.tril(rng.normal(size=(k, k))) + 2.0 * np.eye(k)
    return kn.LinearSDE(A, 0.5 * G, schedule=LinearSchedule(0.5, 3.0, 1.0), aux_cov=0.05 * np.eye(k - 1), T=1.0)


def random_noise_02(k=4, seed=2):
    """A random stable k = 4 system whose noise hits blocks 0 and 2 only."""
    rng = np.random.default_rng(seed)
    M = rng.normal(size=(k, k))
    A = M - M.T - np.diag(rng.uniform(0.5, 1.5, size=k))
    G = np.zeros((k, k))
    G[0, 0], G[2, 0], G[2, 2] = 1.1, 0.4, 0.9
    return kn.LinearSDE(A, G, schedule=LinearSchedule(0.5, 3.0, 1.0), aux_cov=0.05 * np.eye(k - 1), T=1.0)


SDES = {
    "vp": kn.vp,
    "psld": kn.psld,
    "psld_m_only": lambda: kn.psld(gamma=0.0, nu=4.01),
    "psld_x_only": lambda: kn.psld(gamma=4.01, nu=0.0),
    "random4_full_noise": random_full_noise,
    "random4_noise_02": random_noise_02,
    "ve": kn.ve,
    "cld": kn.cld,
    "hold": kn.hold,
    "hold_zero_aux": lambda: kn.LinearSDE(
        kn.hold().drift_matrix, kn.hold().diffusion_matrix, schedule=kn.hold().schedule, T=1.0
    ),
    "langevin4": lambda: kn.langevin(4),
    "langevin1": lambda: kn.langevin(1),
    "random4": random_stable,
    "hold_linear_schedule": lambda: kn.LinearSDE(
        kn.hold().drift_matrix, kn.hold().diffusion_matrix, schedule=LinearSchedule(0.5, 8.0), aux_cov=0.01, T=1.0
    ),
}


def moment_ode(sde, times):
    """Integrate dPhi/dt = beta A Phi and dS/dt = beta (A S + S A^T + D) in t (not tau)."""
    A = sde.drift_matrix.numpy()
    D = sde.noise_matrix.numpy()
    k = A.shape[0]
    S0 = sde.initial_cov.numpy()

    def rhs(t, y):
        b = float(sde.schedule.beta(torch.tensor(t, dtype=torch.float64)))
        P = y[: k * k].reshape(k, k)
        S = y[k * k :].reshape(k, k)
        return np.concatenate([(b * A @ P).ravel(), (b * (A @ S + S @ A.T + D)).ravel()])

    y0 = np.concatenate([np.eye(k).ravel(), S0.ravel()])
    out = []
    for t in times:
        # Per-entry absolute tolerance far below each entry's own scale sqrt(S_ii S_jj) at this
        # time, so the reference resolves the tiny position-block variances with full relative
        # accuracy. The scale only sets a tolerance (taken from the code under test, times 1e-14).
        d = np.sqrt(np.diagonal(sde.covariance(torch.tensor(t, dtype=torch.float64)).numpy()))
        atol = np.concatenate([np.full(k * k, 1e-15), 1e-14 * np.outer(d, d).ravel() + 1e-300])
        sol = scipy.integrate.solve_ivp(rhs, (0.0, t), y0, method="DOP853", rtol=1e-12, atol=atol)
        assert sol.success, sol.message
        out.append(sol.y[:, -1])
    Y = np.array(out)
    return Y[:, : k * k].reshape(-1, k, k), Y[:, k * k :].reshape(-1, k, k)


def scaled_err(S, R):
    """Entrywise error of covariances relative to sqrt(R_ii R_jj): catches lost digits in tiny blocks."""
    d = np.sqrt(np.clip(np.diagonal(R, axis1=-2, axis2=-1), 1e-300, None))
    return np.max(np.abs(S - R) / (d[..., :, None] * d[..., None, :]))


@pytest.mark.parametrize("name", list(SDES))
def test_transition_and_covariance_match_moment_ode(name):
    sde = SDES[name]()
    times = np.concatenate([[1e-6, 1e-5, 1e-4, 1e-3], np.linspace(0.01, 1.0, 12)]) * sde.T
    P_ref, S_ref = moment_ode(sde, times)
    t = torch.tensor(times, dtype=torch.float64)
    P = sde.transition(torch.zeros_like(t), t).numpy()
    S = sde.covariance(t).numpy()
    # transition: relative to the largest entry of each matrix
    perr = np.max(np.abs(P - P_ref) / np.abs(P_ref).max(axis=(1, 2), keepdims=True))
    assert perr < 1e-8, perr
    assert scaled_err(S, S_ref) < 1e-8, scaled_err(S, S_ref)


ORDERS = list(range(1, kn.MAX_ORDER + 1))


@pytest.mark.slow
@pytest.mark.parametrize("k", ORDERS)
def test_langevin_any_order_matches_moment_ode(k):
    """langevin(k), k = 1..MAX_ORDER: transitions and covariances to 1e-8 relative (per entry, to
    sqrt(S_ii S_jj)) against scipy moment-ODE integration, t = 1e-6 .. T; every factor exists, is
    lower triangular with a positive diagonal and reproduces Sigma; perturb works."""
    sde = kn.langevin(k)
    times = np.array([1e-6, 1e-4, 1e-2, 0.1, 0.5, 1.0]) * sde.T
    P_ref, S_ref = moment_ode(sde, times)
    co = sde.coefficients(torch.tensor(times, dtype=torch.float64))
    P, S, L = co.phi.numpy(), co.sigma.numpy(), co.chol.numpy()
    assert np.max(np.abs(P - P_ref) / np.abs(P_ref).max(axis=(1, 2), keepdims=True)) < 1e-8
    assert scaled_err(S, S_ref) < 1e-8, scaled_err(S, S_ref)
    assert np.allclose(np.triu(L, 1), 0) and (np.diagonal(L, axis1=1, axis2=2) > 0).all()
    assert scaled_err(L @ np.swapaxes(L, 1, 2), S_ref) < 1e-8
    z, eps = sde.perturb(torch.randn(len(times), 3, dtype=torch.float64), torch.tensor(times))
    assert torch.isfinite(z).all()


@pytest.mark.slow
@pytest.mark.parametrize("k", [3, 8, 16])
def test_factor_of_nearly_singular_covariance_matches_high_precision(k):
    """Near t = 0 Sigma(t) of langevin(k) is numerically singular (correlation condition numbers up
    to 1e60 for k = 8); its factor L_t, whose last diagonal entry scales the score, must still be
    accurate: against a 260-digit reference, per row relative to sqrt(Sigma_ii)."""
    sde = kn.langevin(k)
    for t in (1e-6, 1e-3, 5e-2):
        S_ref, L_ref, _ = mp_reference(sde, t)
        L = sde.cholesky(torch.tensor(t, dtype=torch.float64)).numpy()
        d = np.sqrt(np.diag(S_ref))
        err = np.max(np.abs(L - L_ref) / d[:, None])
        assert err < 1e-8, (t, err)
        assert abs(L[-1, -1] / L_ref[-1, -1] - 1) < 1e-8


def test_order_limit_and_degenerate_drifts():
    with pytest.raises(ValueError, match=f"order must be at most {kn.MAX_ORDER}"):
        kn.langevin(kn.MAX_ORDER + 1)
    with pytest.raises(ValueError, match=f"order must be at most {kn.MAX_ORDER}"):
        kn.langevin(1000)  # refused before any allocation
    with pytest.raises(ValueError, match="order .* exceeds"):
        kn.LinearSDE(-np.eye(kn.MAX_ORDER + 1), np.eye(kn.MAX_ORDER + 1))
    with pytest.raises(ValueError, match="0 x 0"):
        kn.LinearSDE(np.zeros((0, 0)), np.zeros((0, 0)))
    with pytest.raises(ValueError, match="positive real part"):
        kn.LinearSDE([[0.0, 1.0], [1.0, 0.0]], [[0.0, 0.0], [0.0, 1.0]])  # eigenvalues +-1


def test_backward_transition_is_the_inverse_map():
    sde = kn.hold()
    s, t = torch.tensor(0.2, dtype=torch.float64), torch.tensor(0.7, dtype=torch.float64)
    fwd, bwd = sde.transition(s, t), sde.transition(t, s)
    scale = float(torch.linalg.matrix_norm(fwd) * torch.linalg.matrix_norm(bwd))  # roundoff of the product
    assert float((fwd @ bwd - torch.eye(3, dtype=torch.float64)).abs().max()) < 1e-14 * scale
    torch.testing.assert_close(bwd, torch.linalg.inv(fwd), rtol=1e-10, atol=0)


def test_hold_small_t_no_cancellation():
    """At tiny t the position variance is O(t^5) (zero aux): the Lyapunov form would lose it entirely."""
    sde = SDES["hold_zero_aux"]()
    t = torch.tensor([1e-6], dtype=torch.float64)
    S = sde.covariance(t)[0]
    # leading-order term: Sigma_xx = 2 xi ell^2 (gamma ell)^2 tau^5 / 20 with ell = l_inv (Taylor of the integral)
    p = kn.hold().params
    ell, g, xi = p["l_inv"], p["gamma"], p["xi"]
    tau = 4.0 * 1e-6
    lead = 2 * xi * (ell * g * ell) ** 2 * tau**5 / 20
    assert abs(float(S[0, 0]) / lead - 1) < 1e-4
    S_inf = sde.stationary_cov
    phi = sde.transition(0.0, t)[0]
    lyap = S_inf - phi @ S_inf @ phi.T
    assert abs(float(lyap[0, 0]) / lead - 1) > 1e-2  # the naive route really is wrong here


@pytest.mark.parametrize("tau", [1e-3, 0.5, 4.0, 50.0, 400.0])
def test_expm_matches_scipy_for_defective_matrices(tau):
    for sde in (kn.cld(), kn.hold(), kn.langevin(6)):
        A = sde.drift_matrix
        ref = scipy.linalg.expm(tau * A.numpy())
        got = linalg.expm(A, torch.tensor(tau, dtype=torch.float64)).numpy()
        assert np.max(np.abs(got - ref)) <= 1e-12 * max(1.0, np.abs(ref).max())


def test_noise_covariance_large_tau_matches_van_loan_substeps_and_lyapunov():
    sde = kn.cld()
    A, D = sde.drift_matrix, sde.noise_matrix
    S_inf = sde.stationary_cov.numpy()
    for tau in [4.0, 20.0, 50.0]:
        phi, q = linalg.transition_and_noise(A, D, torch.tensor(tau, dtype=torch.float64))
        p = scipy.linalg.expm(tau * A.numpy())
        assert np.max(np.abs(q.numpy() - (S_inf - p @ S_inf @ p.T))) < 1e-13
        # Van Loan block exponential on 64 sub-steps, composed
        h = tau / 64
        C = np.block([[-A.numpy(), D.numpy()], [np.zeros((2, 2)), A.numpy().T]])
        E = scipy.linalg.expm(C * h)
        ph = E[2:, 2:].T
        qh = ph @ E[:2, 2:]
        Q = np.zeros((2, 2))
        for _ in range(64):
            Q = ph @ Q @ ph.T + qh
        assert np.max(np.abs(q.numpy() - Q)) < 1e-12


def test_vp_and_ve_closed_forms():
    t = torch.tensor([1e-5, 0.1, 0.5, 1.0], dtype=torch.float64)
    vp = kn.vp()
    B = 0.1 * t + 0.5 * (20.0 - 0.1) * t**2
    assert torch.allclose(vp.transition(0.0, t)[:, 0, 0], torch.exp(-B / 2), rtol=1e-12)
    assert torch.allclose(vp.covariance(t)[:, 0, 0], -torch.expm1(-B), rtol=1e-10)
    ve = kn.ve()
    sig = 0.01 * (50.0 / 0.01) ** t
    assert torch.allclose(ve.covariance(t)[:, 0, 0], sig**2 - 0.01**2, rtol=1e-10)
    assert torch.allclose(ve.transition(0.0, t)[:, 0, 0], torch.ones_like(t))
    assert ve.stationary_cov is None
    assert abs(float(ve.prior_cov[0, 0]) - (50.0**2 - 0.01**2)) < 1e-6


@pytest.mark.parametrize("m_inv", [4.0, 1.0])
def test_cld_closed_form(m_inv):
    """Dockhorn et al. (2022) Sec. B.1 closed form for mean and covariance (HSM initial law)."""
    sde = kn.cld(m_inv=m_inv)
    M = 1 / m_inv
    G = 2 * math.sqrt(M)
    s0xx, s0vv = 0.0, 0.04 * M
    t = torch.tensor([1e-4, 0.01, 0.2, 0.7, 1.0], dtype=torch.float64)
    B = 4.0 * t
    e = torch.exp(-4 * B / G)
    xx = s0xx + torch.exp(4 * B / G) - 1 + 4 * B / G * (s0xx - 1) + 4 * B**2 / G**2 * (s0xx - 2) + 16 * B**2 / G**4 * s0vv
    xv = -B * s0xx + 4 * B / G**2 * s0vv - 2 * B**2 / G * (s0xx - 2) - 8 * B**2 / G**3 * s0vv
    vv = G**2 / 4 * (torch.exp(4 * B / G) - 1) + B * G + s0vv * (1 + 4 * B**2 / G**2 - 4 * B / G) + B**2 * (s0xx - 2)
    S = sde.covariance(t)
    assert torch.allclose(S[:, 0, 0], e * xx, rtol=1e-7, atol=1e-15)
    assert torch.allclose(S[:, 0, 1], e * xv, rtol=1e-7, atol=1e-15)
    assert torch.allclose(S[:, 1, 1], e * vv, rtol=1e-9)
    # mean: x-coefficient of mu_t
    P = sde.transition(0.0, t)
    assert torch.allclose(P[:, 0, 0], torch.exp(-2 * B / G) * (2 * B / G + 1), rtol=1e-12)
    assert torch.allclose(P[:, 1, 0], -B * torch.exp(-2 * B / G), rtol=1e-12)
    assert torch.allclose(P[:, 0, 1], 4 * B / G**2 * torch.exp(-2 * B / G), rtol=1e-12)


def test_semigroup():
    for sde in (kn.hold(), random_stable(), kn.vp()):
        s, u, t = (torch.tensor(v, dtype=torch.float64) for v in (0.1, 0.35, 0.9))
        assert torch.allclose(sde.transition(u, t) @ sde.transition(s, u), sde.transition(s, t), atol=1e-13)
        # covariance propagates: Sigma(t) = Phi(u,t) Sigma(u) Phi^T + noise accumulated on (u, t]
        A, D = sde.drift_matrix, sde.noise_matrix
        _, q = linalg.transition_and_noise(A, D, sde.tau(t) - sde.tau(u))
        P = sde.transition(u, t)
        assert torch.allclose(P @ sde.covariance(u) @ P.T + q, sde.covariance(t), atol=1e-13)


@pytest.mark.parametrize("name", ["vp", "cld", "hold", "langevin4"])
def test_stationary_law_is_invariant(name):
    sde = SDES[name]()
    S = sde.stationary_cov
    A, D = sde.drift_matrix, sde.noise_matrix
    assert torch.allclose(A @ S + S @ A.T + D, torch.zeros_like(S), atol=1e-12)
    phi, q = linalg.transition_and_noise(A, D, torch.tensor(0.7, dtype=torch.float64))
    assert torch.allclose(phi @ S @ phi.T + q, S, atol=1e-12)


@pytest.mark.parametrize("kw", [{}, {"gamma": 0.0}, {"gamma": 4.01, "nu": 0.0}, {"gamma": 1.0, "nu": 3.0, "beta_min": 0.5, "beta_max": 10.0}])
def test_psld_closed_form(kw):
    """PSLD is critically damped: A has the double eigenvalue lam = -(Gamma + nu) / 4 and
    N = A - lam I is nilpotent, so Phi(s) = e^(lam s) (I + s N) and (derived by hand)

        Sigma(t) = Phi S0 Phi^T + I_0 D + I_1 (N D + D N^T) + I_2 N D N^T,  I_j = int_0^tau s^j e^(2 lam s) ds,

    with S0 = diag(0, kappa M), D = diag(Gamma, M nu); evaluated in 50-digit arithmetic."""
    mp = pytest.importorskip("mpmath")
    sde = kn.psld(**kw)
    p = sde.params
    with mp.workdps(50):
        G, nu, kappa = mp.mpf(p["gamma"]), mp.mpf(p["nu"]), mp.mpf(p["kappa"])
        M = 4 / (G - nu) ** 2
        A = mp.matrix([[-G / 2, 1 / (2 * M)], [mp.mpf(-0.5), -nu / 2]])
        lam = -(G + nu) / 4
        N = A - lam * mp.eye(2)
        D = mp.diag([G, M * nu])
        S0 = mp.diag([0, kappa * M])
        assert np.allclose(sde.noise_matrix.numpy(), np.array((D).tolist(), dtype=float), rtol=1e-15, atol=0)
        for t in (1e-6, 1e-3, 0.1, 0.5, 1.0):
            tau = mp.mpf(float(sde.tau(torch.tensor(t, dtype=torch.float64))))
            phi = mp.exp(lam * tau) * (mp.eye(2) + tau * N)
            I = [mp.quad(lambda s, j=j: s**j * mp.exp(2 * lam * s), [0, tau]) for j in range(3)]
            sig = phi * S0 * phi.T + I[0] * D + I[1] * (N * D + D * N.T) + I[2] * N * D * N.T
            phi_f, sig_f = np.array(phi.tolist(), dtype=float), np.array(sig.tolist(), dtype=float)
            co = sde.coefficients(torch.tensor([t], dtype=torch.float64))
            np.testing.assert_allclose(co.phi[0].numpy(), phi_f, rtol=1e-12, atol=1e-14)
            d = np.sqrt(np.diag(sig_f))
            assert np.max(np.abs(co.sigma[0].numpy() - sig_f) / np.outer(d, d)) < 1e-8, t
    assert sde.noised_blocks == tuple(i for i, g in enumerate((p["gamma"], p["nu"])) if g > 0)
    M = 4.0 / (p["gamma"] - p["nu"]) ** 2
    np.testing.assert_allclose(sde.stationary_cov.numpy(), np.diag([1.0, M]), rtol=1e-12, atol=1e-12 * M)


def test_psld_validation():
    with pytest.raises(ValueError, match="both be 0"):
        kn.psld(gamma=0.0, nu=0.0)
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0"):
        kn.psld(gamma=-1.0)
    with pytest.raises(ValueError, match="must differ"):
        kn.psld(gamma=2.0, nu=2.0)
    assert kn.preset("psld", order=2).name == "psld"


def test_preset_stationary_laws():
    assert torch.allclose(kn.cld().stationary_cov, torch.diag(torch.tensor([1.0, 0.25], dtype=torch.float64)), atol=1e-12)
    assert torch.allclose(
        kn.hold(l_inv=2.0).stationary_cov, torch.diag(torch.tensor([1.0, 0.5, 0.5], dtype=torch.float64)), atol=1e-12
    )
    assert torch.allclose(kn.langevin(5).stationary_cov, torch.eye(5, dtype=torch.float64), atol=1e-12)


def test_hold_critical_defaults():
    h = kn.hold()
    assert math.isclose(h.params["gamma"], math.sqrt(2), rel_tol=1e-14)
    assert math.isclose(h.params["xi"], 1.5 * math.sqrt(3), rel_tol=1e-14)
    A = h.drift_matrix
    r = 2 * math.sqrt(3)
    N = A + r * torch.eye(3, dtype=torch.float64)
    assert torch.linalg.matrix_norm(N @ N @ N) < 1e-10
    assert torch.linalg.matrix_norm(N @ N) > 1.0  # defective: a single Jordan block
    # a non-critical choice is honoured
    h2 = kn.hold(gamma=1.0, xi=3.0)
    assert h2.drift_matrix[1, 2] == 4.0 and h2.drift_matrix[2, 2] == -12.0


@pytest.mark.parametrize("k", range(1, 9))
def test_langevin_chain_is_critically_damped(k):
    sde = kn.langevin(k)
    c, xi, r = kn.presets.langevin_couplings(k)
    if k >= 2:
        assert math.isclose(c[0], 1.0, rel_tol=1e-12)
    A = sde.drift_matrix
    N = A + r * torch.eye(k, dtype=torch.float64)
    P = torch.linalg.matrix_power(N, k)
    assert torch.linalg.matrix_norm(P) < 1e-8 * max(1.0, float(torch.linalg.matrix_norm(N)) ** k)
    assert math.isclose(sde.mixing_rate(), r, rel_tol=1e-9)


def test_langevin_orders_2_and_3_match_cld_hold_structure():
    assert torch.allclose(
        kn.langevin(2).drift_matrix, torch.tensor([[0.0, 1.0], [-1.0, -2.0]], dtype=torch.float64)
    )
    A3 = kn.langevin(3).drift_matrix
    assert math.isclose(float(A3[1, 2]), 2 * math.sqrt(2), rel_tol=1e-12)
    assert math.isclose(float(A3[2, 2]), -3 * math.sqrt(3), rel_tol=1e-12)


# ----------------------------------------------------------------------------- data path
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("data_shape", [(2,), (3, 8, 8)])
def test_shapes_and_dtypes(dtype, data_shape):
    sde = kn.hold()
    x0 = torch.randn(5, *data_shape, dtype=dtype)
    t = torch.rand(5, dtype=dtype)
    mean, cov = sde.marginal(x0, t)
    assert mean.shape == (5, 3, *data_shape) and mean.dtype == dtype
    assert cov.shape == (5, 3, 3) and cov.dtype == torch.float64
    z, eps = sde.perturb(x0, t)
    assert z.shape == eps.shape == (5, 3, *data_shape) and z.dtype == dtype
    L = sde.cholesky(t).to(dtype)
    recon = mean + torch.einsum("bij,bj...->bi...", L, eps)
    assert torch.allclose(z, recon, atol=1e-5 if dtype == torch.float32 else 1e-12)
    p = sde.prior_sample((4, *data_shape), dtype=dtype)
    assert p.shape == (4, 3, *data_shape) and p.dtype == dtype
    assert sde.prior_logp(p).shape == (4,)
    d = sde.drift(z, t)
    assert d.shape == z.shape
    r = sde.reverse_drift(z, t, torch.zeros_like(x0))
    assert torch.allclose(r, d)


def test_perturb_statistics():
    sde = kn.hold()
    g = torch.Generator().manual_seed(0)
    n = 200_000
    x0 = torch.full((n, 1), 0.7, dtype=torch.float64)
    t = 0.15
    z, eps = sde.perturb(x0, t, generator=g)
    mean, cov = sde.marginal(x0[:1], t)
    emp_mean = z[:, :, 0].mean(0)
    emp_cov = torch.cov(z[:, :, 0].T)
    se = torch.sqrt(torch.diagonal(cov[0]) / n)
    assert torch.all((emp_mean - mean[0, :, 0]).abs() < 5 * se)
    assert torch.allclose(emp_cov, cov[0], atol=5 * float(cov[0].abs().max()) / math.sqrt(n) * 3)
    assert abs(float(eps.std()) - 1) < 0.01


def test_prior_matches_stationary_and_logp():
    sde = kn.cld()
    g = torch.Generator().manual_seed(1)
    z = sde.prior_sample((100_000, 1), generator=g, dtype=torch.float64)
    assert torch.allclose(torch.cov(z[:, :, 0].T), sde.stationary_cov, atol=0.01)
    # log density against scipy
    from scipy.stats import multivariate_normal

    zz = z[:5]
    ref = multivariate_normal(mean=np.zeros(2), cov=sde.stationary_cov.numpy()).logpdf(zz[:, :, 0].numpy())
    assert np.allclose(sde.prior_logp(zz).numpy(), ref, atol=1e-10)


def test_cholesky_near_zero():
    """Zero aux_cov: the factor is exact and finite for tiny t, singular (zero row) at t = 0."""
    sde = SDES["hold_zero_aux"]()
    t = torch.tensor([0.0, 1e-8, 1e-6, 1e-3], dtype=torch.float64)
    L = sde.cholesky(t)
    S = sde.covariance(t)
    assert torch.isfinite(L).all()
    assert torch.all(L[0] == 0)
    for i in range(1, 4):
        rel = (L[i] @ L[i].T - S[i]).abs() / torch.sqrt(torch.outer(S[i].diagonal(), S[i].diagonal()))
        assert rel.max() < 1e-9
        assert L[i, 2, 2] > 0
    # with aux_cov (HOLD default) the last-block factor is bounded away from zero at t = 0
    L0 = kn.hold().cholesky(torch.tensor([0.0], dtype=torch.float64))
    assert math.isclose(float(L0[0, 2, 2]), math.sqrt(0.01), rel_tol=1e-12)
    x0 = torch.randn(3, 2, dtype=torch.float64)
    z, _ = sde.perturb(x0, 0.0)
    assert torch.equal(z[:, 0], x0)


def test_time_change_matches_custom_schedule():
    lin = LinearSchedule(0.3, 5.0)
    cust = CustomSchedule(lin.beta, lin.integral)
    a = kn.LinearSDE(kn.cld().drift_matrix, kn.cld().diffusion_matrix, schedule=lin, aux_cov=0.01)
    b = kn.LinearSDE(kn.cld().drift_matrix, kn.cld().diffusion_matrix, schedule=cust, aux_cov=0.01)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    assert torch.allclose(a.covariance(t), b.covariance(t))
    tau = lin.integral(t)
    assert torch.allclose(lin.integral_inverse(tau, 1.0), t, atol=1e-12)
    assert torch.allclose(kn.schedules.Schedule.integral_inverse(lin, tau, 1.0), t, atol=1e-12)


def test_spec_roundtrip():
    for sde in (kn.vp(), kn.ve(), kn.cld(), kn.hold(), kn.langevin(5)):
        s2 = kn.LinearSDE.from_spec(sde.spec())
        t = torch.rand(4, dtype=torch.float64)
        assert torch.allclose(s2.covariance(t), sde.covariance(t))
        assert s2.name == sde.name and s2.T == sde.T


def test_info_is_plain_data():
    import json

    info = kn.hold().info()
    json.dumps(info)
    assert info["order"] == 3 and len(info["eigenvalues"]) == 3


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(drift=[[0.0, 1.0]], diffusion=[[1.0]]), "drift"),
        (dict(drift=[[0.0, 1.0], [-1.0, -1.0]], diffusion=[[1.0]]), "diffusion"),
        (dict(drift=[[0.0, 1.0], [-1.0, -1.0]], diffusion=[[0.0, 0.0], [0.0, 0.0]]), "diffusion"),
        (dict(drift=[[0.5]], diffusion=[[1.0]]), "drift: A has eigenvalues with positive real part"),
        (dict(drift=[[float("nan")]], diffusion=[[1.0]]), "drift"),
        (dict(drift=[[0.0, 1.0], [-1.0, -1.0]], diffusion=[[0.0, 0.0], [0.0, 1.0]], aux_cov=[[-1.0]]), "aux_cov"),
        (dict(drift=[[0.0, 1.0], [-1.0, -1.0]], diffusion=[[0.0, 0.0], [0.0, 1.0]], aux_cov=[[1.0, 0], [0, 1.0]]), "aux_cov"),
        (dict(drift=[[-1.0]], diffusion=[[1.0]], T=-1.0), "T"),
        (dict(drift="abc", diffusion=[[1.0]]), "drift"),
    ],
)
def test_bad_construction(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        kn.LinearSDE(**kwargs)


def test_bad_schedule_and_presets():
    with pytest.raises(ValueError, match="beta"):
        kn.LinearSDE([[-1.0]], [[1.0]], schedule=CustomSchedule(lambda t: -torch.ones_like(t), lambda t: -t))
    with pytest.raises(ValueError, match="beta"):
        kn.cld(beta=-1)
    with pytest.raises(ValueError, match="order"):
        kn.langevin(0)
    with pytest.raises(ValueError, match="sigma_max"):
        kn.ve(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="sde"):
        kn.preset("bogus")
    with pytest.raises(ValueError, match="order"):
        kn.preset("cld", order=3)
    assert kn.preset(None, order=3).name == "hold"
    assert kn.preset(None, order=5).order == 5


def test_bad_times_and_shapes():
    sde = kn.hold()
    x0 = torch.randn(4, 2)
    with pytest.raises(ValueError, match=r"t must lie in \[0, T\]"):
        sde.perturb(x0, 1.5)
    with pytest.raises(ValueError, match="t must be finite"):
        sde.covariance(float("nan"))
    with pytest.raises(ValueError, match="t must be a scalar or have shape"):
        sde.perturb(x0, torch.rand(3))
    with pytest.raises(ValueError, match="x0"):
        sde.perturb(torch.randn(4), 0.5)
    with pytest.raises(TypeError, match="x0"):
        sde.perturb(np.zeros((4, 2)), 0.5)
    with pytest.raises(ValueError, match="z must have shape"):
        sde.drift(torch.randn(4, 2, 2), 0.5)
    with pytest.raises(ValueError, match="score"):
        sde.reverse_drift(torch.randn(4, 3, 2), 0.5, torch.randn(4, 3))
    with pytest.raises(ValueError, match="shape"):
        sde.prior_sample((0, 2))
    for f in (sde.perturb, sde.marginal):  # an empty batch: one line, not torch's reshape error
        with pytest.raises(ValueError, match="x0 must hold at least one example"):
            f(torch.zeros(0, 2), torch.zeros(0))


# ----------------------------------------------------------------------------- torchsde Monte Carlo
@pytest.mark.parametrize("name", ["cld", "hold"])
def test_torchsde_forward_matches_marginal(name):
    import torchsde

    sde = SDES[name]()
    n = 4000
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 2, generator=g, dtype=torch.float64) * 0.5 + 1.0
    # initial state: data block, auxiliaries from aux_cov
    aux = torch.randn(n, sde.order - 1, 2, generator=g, dtype=torch.float64)
    aux = torch.einsum("ij,bjd->bid", torch.linalg.cholesky(sde.aux_cov), aux)
    z0 = torch.cat([x0[:, None], aux], dim=1)
    ts = sde.to_torchsde((2,))
    torch.manual_seed(0)
    t_end = 0.3
    ys = torchsde.sdeint(ts, ts.flatten(z0), torch.tensor([0.0, t_end], dtype=torch.float64), method="euler", dt=1e-3)
    zT = ts.unflatten(ys[-1])
    # reference: marginal of z_t over x0 ~ N(1, 0.25): mean Phi[:,0]*1, cov Sigma + Phi e1 e1^T Phi^T * 0.25
    phi = sde.transition(0.0, t_end)
    cov = sde.covariance(t_end) + 0.25 * torch.outer(phi[:, 0], phi[:, 0])
    emp = zT[:, :, 0]
    assert torch.allclose(emp.mean(0), phi[:, 0], atol=5 * float(cov.diagonal().max().sqrt()) / math.sqrt(n))
    emp_cov = torch.cov(emp.T)
    assert torch.allclose(emp_cov, cov, atol=0.06 * float(cov.diagonal().max()))
