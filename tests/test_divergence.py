"""kinetic.divergence: exact KL / W2 of the full state to the prior, against independent computations."""

import math

import numpy as np
import pytest
import scipy.integrate
import torch

import kinetic as kn
from kinetic import divergence as dv
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.schedules import ConstantSchedule

F64 = torch.float64


def _random_gaussian(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=F64)
    X = torch.randn(d, d, generator=g, dtype=F64)
    S = X @ X.T / d + 0.05 * torch.eye(d, dtype=F64)
    return mu, S


def _unit(sde, T=1e4):
    """The same A, G, aux_cov with beta = 1: time is tau."""
    return kn.LinearSDE(sde.drift_matrix, sde.diffusion_matrix, schedule=ConstantSchedule(1.0),
                        aux_cov=sde.aux_cov if sde.order > 1 else None, T=T)


def _full_moments(sde, t, mu, S):
    """Mean and covariance of the full state (k*d, block-major) from the public LinearSDE API only."""
    t = torch.tensor(float(t), dtype=F64)
    mean, sig = sde.marginal(mu[None].clone(), t)  # mean (1, k, d), Sigma (1, k, k)
    col = sde.transition(torch.tensor(0.0, dtype=F64), t)[:, 0]  # (k,)
    d = mu.numel()
    cov = torch.kron(sig[0], torch.eye(d, dtype=F64)) + torch.kron(torch.outer(col, col), S)
    return mean.reshape(-1), cov


def _direct_kl(sde, t, mu, S):
    mean, cov = _full_moments(sde, t, mu, S)
    n = mean.numel()
    P = torch.kron(sde.prior_cov, torch.eye(mu.numel(), dtype=F64))
    p = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
    q = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=F64), covariance_matrix=P)
    return float(torch.distributions.kl_divergence(p, q))


SDES = [kn.vp(), kn.cld(), kn.hold(), kn.langevin(1), kn.langevin(4), kn.langevin(6)]


@pytest.mark.parametrize("sde", SDES, ids=lambda s: f"{s.name}{s.order}")
def test_eigen_decomposition_equals_full_matrix(sde):
    mu, S = _random_gaussian(4)
    data = GaussianData(mu, S)
    for t in (0.05, 0.2, 0.5):
        direct = _direct_kl(sde, t, mu, S)
        for method in ("auto", "eig"):
            got = float(dv.gaussian_kl(sde, torch.tensor([t], dtype=F64), data, method=method)[0])
            assert got == pytest.approx(direct, rel=1e-8, abs=1e-12), (t, method)
    # rank-one closed form where Sigma(t) is well conditioned
    assert float(dv.gaussian_kl(sde, torch.tensor([0.5], dtype=F64), data, method="rank1")[0]) == pytest.approx(
        _direct_kl(sde, 0.5, mu, S), rel=1e-8
    )
    # a spectrum (eigenvalues, mean in the eigenbasis) is the same law
    spec = (data.eigenvalues, data.eigenvectors.T @ mu)
    tt = torch.tensor([0.05, 0.5], dtype=F64)
    torch.testing.assert_close(dv.gaussian_kl(sde, tt, spec), dv.gaussian_kl(sde, tt, data), rtol=1e-12, atol=0)


@pytest.mark.parametrize("sde", [kn.vp(), kn.hold()], ids=["vp", "hold"])
def test_gaussian_kl_matches_monte_carlo(sde):
    """Samples from the library's own perturb(); log-densities from the closed-form law; prior_logp."""
    mu, S = _random_gaussian(2, seed=3)
    g = torch.Generator().manual_seed(0)
    n, t = 40_000, 0.25
    x0 = mu + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(S).T
    z, _ = sde.perturb(x0, torch.tensor(t, dtype=F64), generator=g)
    mean, cov = _full_moments(sde, t, mu, S)
    logp = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(z.reshape(n, -1))
    vals = logp - sde.prior_logp(z)
    est, se = float(vals.mean()), float(vals.std() / math.sqrt(n))
    exact = float(dv.gaussian_kl(sde, torch.tensor([t], dtype=F64), GaussianData(mu, S))[0])
    assert exact > 0.05
    assert abs(est - exact) < 4 * se + 1e-3 * exact


def _mp_kl(sde, tau, s, m, dps):
    """KL of the full state at tau (unit clock) in mpmath: Van Loan's block exponential for Sigma,
    the Lyapunov equation for P, every digit carried (an independent, slow computation)."""
    mp = pytest.importorskip("mpmath")
    mp.mp.dps = dps
    A, D, S0 = (mp.matrix(M.tolist()) for M in (sde.drift_matrix, sde.noise_matrix, sde.initial_cov))
    k = A.rows
    M = mp.zeros(2 * k, 2 * k)
    L = mp.zeros(k * k, k * k)
    for i in range(k):
        for j in range(k):
            M[i, j], M[i, k + j], M[k + i, k + j] = A[i, j], D[i, j], -A[j, i]
            for l in range(k):
                L[i * k + j, l * k + j] += A[i, l]
                L[i * k + j, i * k + l] += A[j, l]
    x = mp.lu_solve(L, mp.matrix([-D[i, j] for i in range(k) for j in range(k)]))
    Pinv = mp.inverse(mp.matrix([[x[i * k + j] for j in range(k)] for i in range(k)]))
    F = mp.expm(M * mp.mpf(tau))
    Phi = F[0:k, 0:k]
    Sig = Phi * S0 * Phi.T + F[0:k, k : 2 * k] * Phi.T
    c = Phi[:, 0]
    total = mp.mpf(0)
    for si, mi in zip(s, m):
        C = Sig + mp.mpf(si) * c * c.T
        PC = Pinv * C
        total += (sum(PC[i, i] for i in range(k)) - k + mp.mpf(mi) ** 2 * (c.T * Pinv * c)[0] - mp.log(mp.det(PC))) / 2
    return float(total)


@pytest.mark.parametrize("sde,tau,rel", [
    (kn.hold(), 1e-3, 1e-9),  # Sigma(t) nearly singular: the per-direction eig path loses digits here
    (kn.hold(), 0.3, 1e-11),
    (kn.hold(), 6.0, 1e-9),  # KL ~ 1e-10: no cancellation against P
    (kn.langevin(4), 0.01, 1e-8),
    (kn.langevin(4), 8.0, 1e-9),
])
def test_gaussian_kl_against_high_precision(sde, tau, rel):
    """A singular direction (s = 0) included; tiny and large times."""
    s, m = [0.0, 0.3, 1.0, 2.5], [0.4, -1.0, 0.0, 0.2]
    u = _unit(sde)
    ref = _mp_kl(u, tau, s, m, dps=60 if tau < 1 else 120)
    got = float(dv.gaussian_kl(u, torch.tensor([tau], dtype=F64), (torch.tensor(s, dtype=F64), torch.tensor(m, dtype=F64)))[0])
    assert got == pytest.approx(ref, rel=rel)


def test_state_moments_are_the_sdes():
    sde = kn.hold()
    t = torch.tensor([0.01, 0.3, 1.0], dtype=F64)
    c, sig, delta = dv.state_moments(sde, t)
    torch.testing.assert_close(c, sde.transition(torch.zeros_like(t), t)[:, :, 0])
    torch.testing.assert_close(sig, sde.covariance(t))
    torch.testing.assert_close(delta, sig - sde.stationary_cov, rtol=0, atol=1e-14)


def test_w2_closed_form_small_case():
    """Order 1, d = 1: W2 between N(m, v) and N(0, 1) is sqrt(m^2 + (sqrt v - 1)^2)."""
    u = _unit(kn.langevin(1))
    tau = torch.tensor([0.1, 1.0, 4.0], dtype=F64)
    e = torch.exp(-tau)
    m, v = 0.8 * e, 2.5 * e**2 + 1 - e**2
    torch.testing.assert_close(dv.gaussian_w2(u, tau, GaussianData([0.8], [[2.5]])), torch.sqrt(m**2 + (v.sqrt() - 1) ** 2))


def test_negentropy_quadrature_against_scipy():
    c = 1.3
    w = torch.tensor([0.3, 0.7], dtype=F64)
    Y = torch.tensor([[-c], [c]], dtype=F64)
    mbar = float(w @ Y[:, 0])
    v = 1 + float(w @ (Y[:, 0] - mbar) ** 2)

    def f(y):
        m = (0.3 * np.exp(-0.5 * (y + c) ** 2) + 0.7 * np.exp(-0.5 * (y - c) ** 2)) / np.sqrt(2 * np.pi)
        logn = -0.5 * (y - mbar) ** 2 / v - 0.5 * np.log(2 * np.pi * v)
        return m * (np.log(m) - logn)

    ref = scipy.integrate.quad(f, -30, 30, points=[-c, c], epsabs=1e-14, epsrel=1e-12, limit=200)[0]
    assert dv.unit_mixture_negentropy(w, Y) == pytest.approx(ref, rel=1e-9)
    Y2 = torch.cat([Y, torch.zeros(2, 1, dtype=F64)], 1)  # the same mixture embedded in 2-D
    assert dv.unit_mixture_negentropy(w, Y2) == pytest.approx(ref, rel=1e-9)
    assert dv.unit_mixture_negentropy(w, Y2, h=0.05) == pytest.approx(ref, rel=1e-9)


MIXES = {
    "g8": GaussianMixture.ring(8, math.sqrt(2.0 * 0.99), 0.1),
    "asym2": GaussianMixture([0.3, 0.7], [[-1.0, 1.0], [1.5, 0.5]], 0.2),
}


@pytest.mark.parametrize("name", sorted(MIXES))
def test_mixture_exact_vs_monte_carlo_and_bound(name):
    mix = MIXES[name]
    sde, t = kn.hold(), 0.08
    tt = torch.tensor([t], dtype=F64)
    ex = dv.mixture_kl(sde, tt, mix)
    kl = float(ex["kl"][0])
    assert float(ex["negentropy"][0]) > 0 and kl > 0.05
    # joint convexity: KL(sum w_j N_j || q) <= sum_j w_j KL(N_j || q)
    var = torch.full((2,), float(mix.std[0]) ** 2, dtype=F64)
    bound = sum(float(w) * float(dv.gaussian_kl(sde, tt, (var, m))[0]) for w, m in zip(mix.weights, mix.means))
    assert kl <= bound
    # independent Monte Carlo: data sampled from the mixture, pushed by the library's perturb(),
    # the density of the full state written out with torch.distributions
    g = torch.Generator().manual_seed(1)
    n = 40_000
    z, _ = sde.perturb(mix.sample(n, g), torch.tensor(t, dtype=F64), generator=g)
    u = sde.transition(torch.tensor(0.0, dtype=F64), torch.tensor(t, dtype=F64))[:, 0]
    sig = sde.covariance(torch.tensor(t, dtype=F64))
    cov = torch.kron(sig, torch.eye(2, dtype=F64)) + torch.kron(torch.outer(u, u), torch.diag(var))
    comps = [
        torch.distributions.MultivariateNormal(torch.kron(u, m), covariance_matrix=cov).log_prob(z.reshape(n, -1))
        for m in mix.means
    ]
    logp = torch.logsumexp(torch.stack(comps, 1) + torch.log(mix.weights), 1)
    vals = logp - sde.prior_logp(z)
    est, se = float(vals.mean()), float(vals.std() / math.sqrt(n))
    assert abs(est - kl) < 4 * se, (est, se, kl)


def test_mixture_one_component_is_gaussian():
    u = _unit(kn.langevin(2))
    one = GaussianMixture([1.0], [[0.7, -0.2]], math.sqrt(0.3))
    tt = torch.tensor([0.3, 2.0], dtype=F64)
    r = dv.mixture_kl(u, tt, one)
    g = dv.gaussian_kl(u, tt, GaussianData([0.7, -0.2], 0.3))
    torch.testing.assert_close(r["kl"], g, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(r["negentropy"], torch.zeros(2, dtype=F64), rtol=0, atol=1e-12)


def test_errors():
    g = GaussianData([0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="stationary"):
        dv.gaussian_kl(kn.ve(), torch.tensor([0.1]), g)
    with pytest.raises(ValueError, match="d <= 2"):
        dv.unit_mixture_negentropy(torch.ones(1, dtype=F64), torch.zeros(1, 3, dtype=F64))
    with pytest.raises(ValueError, match="t must lie"):
        dv.gaussian_kl(kn.vp(), torch.tensor([-1.0]), g)
    with pytest.raises(ValueError, match="method"):
        dv.gaussian_kl(kn.vp(), torch.tensor([1.0]), g, method="x")
    with pytest.raises(ValueError, match="variances >= 0"):
        dv.gaussian_kl(kn.vp(), torch.tensor([1.0]), (torch.tensor([-1.0]), torch.tensor([0.0])))
    with pytest.raises(TypeError, match="GaussianData or a spectrum"):
        dv.gaussian_kl(kn.vp(), torch.tensor([1.0]), "data")
    with pytest.raises(ValueError, match="one std"):
        dv.mixture_kl(kn.vp(), torch.tensor([0.5]), GaussianMixture([1, 1], [[0.0], [1.0]], [0.1, 0.2]))
    with pytest.raises(ValueError, match="d <= 2"):
        dv.mixture_kl(kn.vp(), torch.tensor([0.5]), GaussianMixture([1], [[0.0, 0.0, 0.0]], 0.1))
