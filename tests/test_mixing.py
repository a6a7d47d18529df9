"""Mixing study (kinetic.bench.mixing): closed forms against independent computations."""

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import kinetic as kn
from kinetic.bench import mixing as mx

F64 = torch.float64


def _random_gaussian(d, seed=0):
    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(d, generator=g, dtype=F64)
    X = torch.randn(d, d, generator=g, dtype=F64)
    S = X @ X.T / d + 0.05 * torch.eye(d, dtype=F64)
    return mu, S


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
    data = mx.gaussian_data("r", mu, S)
    for t in (0.05, 0.2, 0.5):
        direct = _direct_kl(sde, t, mu, S)
        tau = sde.tau(torch.tensor([t], dtype=F64))
        for method in ("auto", "eig"):
            got = float(mx.gaussian_kl(sde, tau, data, method=method)[0])
            assert got == pytest.approx(direct, rel=1e-8, abs=1e-12), (t, method)
    # rank-one closed form where Sigma(t) is well conditioned
    tau = sde.tau(torch.tensor([0.5], dtype=F64))
    assert float(mx.gaussian_kl(sde, tau, data, method="rank1")[0]) == pytest.approx(
        _direct_kl(sde, 0.5, mu, S), rel=1e-8
    )


@pytest.mark.parametrize("sde", [kn.vp(), kn.hold()], ids=["vp", "hold"])
def test_gaussian_kl_matches_monte_carlo(sde):
    """Samples from the library's own perturb(); log-densities from the closed-form law; prior_logp."""
    mu, S = _random_gaussian(2, seed=3)
    data = mx.gaussian_data("r", mu, S)
    g = torch.Generator().manual_seed(0)
    n, t = 40_000, 0.25
    x0 = mu + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(S).T
    z, _ = sde.perturb(x0, torch.tensor(t, dtype=F64), generator=g)
    mean, cov = _full_moments(sde, t, mu, S)
    logp = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov).log_prob(z.reshape(n, -1))
    vals = logp - sde.prior_logp(z)
    est, se = float(vals.mean()), float(vals.std() / math.sqrt(n))
    exact = float(mx.gaussian_kl(sde, sde.tau(torch.tensor([t], dtype=F64)), data)[0])
    assert exact > 0.05
    assert abs(est - exact) < 4 * se + 1e-3 * exact


@pytest.mark.parametrize("name", ["vp", "cld", "hold", "langevin1", "langevin3", "langevin6"])
def test_kl_decreases_to_zero(name):
    sde = mx.default_sdes()[name]
    r = sde.mixing_rate()
    tau = torch.logspace(-2, math.log10(60.0), 80, dtype=F64) / r
    for data in (mx.synthetic_gaussian(), mx.cifar_like_gaussian(256)):
        kl = mx.gaussian_kl(sde, tau, data)
        assert (kl >= 0).all()
        assert (kl[1:] <= kl[:-1] * (1 + 1e-9)).all(), "KL to the stationary law must not increase"
        assert float(kl[0]) > 1.0 and float(kl[-1]) < 1e-12


def test_cld_and_hold_are_rescaled_chains():
    """cld() and hold() are langevin(2), langevin(3) with the auxiliaries rescaled: KL (invariant) agrees."""
    data = mx.digits_gaussian()
    t = torch.tensor([0.05, 0.2, 0.6, 1.0], dtype=F64)
    for a, b in ((kn.cld(), kn.langevin(2)), (kn.hold(), kn.langevin(3))):
        ka = mx.gaussian_kl(a, a.tau(t), data)
        kb = mx.gaussian_kl(b, b.tau(t), data)
        torch.testing.assert_close(ka, kb, rtol=1e-7, atol=1e-12)


def test_normalisations_do_what_they_claim():
    T = 7.0
    sdes = mx.default_sdes()
    for name, sde in sdes.items():
        assert mx.normalise(sde, "time") is sde
        # (b) int_0^T beta g2 dt = T, by trapezoid quadrature of beta(t)
        ns = mx.normalise(sde, "noise", T=T)
        tt = torch.linspace(0, T, 2001, dtype=F64)
        integral = float(torch.trapezoid(ns.beta(tt) * ns.g2, tt))
        assert integral == pytest.approx(T, rel=1e-10), name
        # (b') beta g2 / P[k,k] = 1
        nr = mx.normalise(sde, "noise_rel", T=T)
        assert float(nr.beta(torch.tensor(1.0))) * nr.g2 / float(nr.stationary_cov[-1, -1]) == pytest.approx(1.0)
        # (c) spectral abscissa of beta A is -1. Every preset is critically damped (one defective
        # eigenvalue), so beta A + I must be nilpotent: (beta A + I)^k = 0 exactly; numpy's
        # eigenvalues (perturbed by ~eps^(1/k) for a Jordan block) all lie near -1.
        nc = mx.normalise(sde, "spectral", T=T)
        beta = float(nc.beta(torch.tensor(1.0)))
        A = nc.drift_matrix.numpy()
        k = A.shape[0]
        N = beta * A + np.eye(k)
        assert np.linalg.norm(np.linalg.matrix_power(N, k)) < 1e-9 * max(1.0, np.linalg.norm(N)) ** k, name
        ev = np.linalg.eigvals(beta * A)
        assert np.abs(ev + 1).max() < 0.02, name
        # and on a short horizon (where expm is well conditioned) the norm decays no faster than e^-t
        t = 30.0
        assert np.linalg.norm(scipy.linalg.expm(t * beta * A), 2) >= math.exp(-t), name
        # the clocks invert each other
        for how in mx.NORMALISATIONS:
            nsde = mx.normalise(sde, how)
            t0 = torch.tensor([0.3, 2.0], dtype=F64)
            torch.testing.assert_close(mx.t_of_tau(nsde, mx.tau_of_t(nsde, t0)), t0, rtol=1e-9, atol=1e-12)
    # the presets' defaults: same slowest rate in t for cld, langevin(1), langevin(2) (= 8); hold = langevin(3)
    rate_t = {n: s.mixing_rate() * float(s.beta(torch.tensor(0.5))) for n, s in sdes.items() if n != "vp"}
    assert rate_t["cld"] == pytest.approx(8.0) and rate_t["langevin1"] == pytest.approx(8.0)
    assert rate_t["hold"] == pytest.approx(rate_t["langevin3"]) == pytest.approx(8 * math.sqrt(3))


def test_time_to_tolerance():
    sde, data = kn.hold(), mx.digits_gaussian()
    f = lambda tau: mx.gaussian_kl(sde, tau, data)  # noqa: E731
    for tol in (1e-3, 1e-5):
        ts = mx.time_to_tolerance(f, tol)
        assert float(f(torch.tensor([ts]))[0]) == pytest.approx(tol, rel=1e-6)
        assert float(f(torch.tensor([0.99 * ts]))[0]) > tol


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
    assert mx._negentropy_unit_mixture(w, Y) == pytest.approx(ref, rel=1e-9)
    Y2 = torch.cat([Y, torch.zeros(2, 1, dtype=F64)], 1)  # the same mixture embedded in 2-D
    assert mx._negentropy_unit_mixture(w, Y2) == pytest.approx(ref, rel=1e-9)
    assert mx._negentropy_unit_mixture(w, Y2, h=0.05) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("mix", [mx.gaussians8_mixture(), mx.asymmetric_mixture()], ids=["g8", "asym2"])
def test_mixture_exact_vs_monte_carlo_and_bound(mix):
    sde = kn.hold()
    t = 0.08
    tau = sde.tau(torch.tensor([t], dtype=F64))
    ex = mx.mixture_kl(sde, tau, mix)
    kl = float(ex["kl"][0])
    assert float(ex["negentropy"][0]) > 0 and kl > 0.05
    assert kl <= float(mx.mixture_kl_bound(sde, tau, mix)[0])
    # independent Monte Carlo: data sampled from the mixture, pushed by the library's perturb()
    g = torch.Generator().manual_seed(1)
    n = 40_000
    j = torch.multinomial(mix.weights, n, replacement=True, generator=g)
    x0 = mix.means[j] + torch.randn(n, 2, generator=g, dtype=F64) @ torch.linalg.cholesky(mix.comp_cov).T
    z, _ = sde.perturb(x0, torch.tensor(t, dtype=F64), generator=g)
    u = sde.transition(torch.tensor(0.0, dtype=F64), torch.tensor(t, dtype=F64))[:, 0]
    sig = sde.covariance(torch.tensor(t, dtype=F64))
    cov = torch.kron(sig, torch.eye(2, dtype=F64)) + torch.kron(torch.outer(u, u), mix.comp_cov)
    comps = [
        torch.distributions.MultivariateNormal(torch.kron(u, m), covariance_matrix=cov).log_prob(z.reshape(n, -1))
        for m in mix.means
    ]
    logp = torch.logsumexp(torch.stack(comps, 1) + torch.log(mix.weights), 1)
    vals = logp - sde.prior_logp(z)
    est, se = float(vals.mean()), float(vals.std() / math.sqrt(n))
    assert abs(est - kl) < 4 * se, (est, se, kl)
    # the module's own MC agrees too (the "cv" estimator is for small KL: see the next test)
    m, s = mx.mixture_kl_mc(sde, float(tau), mix, 40_000, torch.Generator().manual_seed(2), "plain")
    assert abs(m - kl) < 4 * s


def test_mixture_small_kl_and_one_component():
    sde = kn.langevin(2)
    mix = mx.asymmetric_mixture()
    tau = torch.tensor([6.0], dtype=F64)
    kl = float(mx.mixture_kl(sde, tau, mix)["kl"][0])
    assert 1e-6 < kl < 1e-2
    m, s = mx.mixture_kl_mc(sde, 6.0, mix, 20_000, torch.Generator().manual_seed(0), "cv")
    assert abs(m - kl) < 5 * s
    one = mx.MixtureData("one", torch.ones(1, dtype=F64), torch.tensor([[0.7, -0.2]], dtype=F64), 0.3 * torch.eye(2, dtype=F64))
    tt = torch.tensor([0.3, 2.0], dtype=F64)
    r = mx.mixture_kl(sde, tt, one)
    g = mx.gaussian_kl(sde, tt, mx.gaussian_data("g", one.means[0], one.comp_cov))
    torch.testing.assert_close(r["kl"], g, rtol=1e-9, atol=1e-12)


def test_w2_closed_form_small_case():
    """Order 1, d = 1: W2 between N(m, v) and N(0, 1) is sqrt(m^2 + (sqrt v - 1)^2)."""
    sde = kn.langevin(1)
    data = mx.gaussian_data("g", [0.8], [[2.5]])
    tau = torch.tensor([0.1, 1.0, 4.0], dtype=F64)
    e = torch.exp(-tau)
    m, v = 0.8 * e, 2.5 * e**2 + 1 - e**2
    torch.testing.assert_close(mx.gaussian_w2(sde, tau, data), torch.sqrt(m**2 + (v.sqrt() - 1) ** 2))


def test_errors():
    with pytest.raises(ValueError, match="stationary"):
        mx.gaussian_kl(kn.ve(), torch.tensor([0.1]), mx.synthetic_gaussian())
    with pytest.raises(ValueError, match="normalisation"):
        mx.normalise(kn.vp(), "bogus")
    with pytest.raises(ValueError, match="d <= 2"):
        mx._negentropy_unit_mixture(torch.ones(1, dtype=F64), torch.zeros(1, 3, dtype=F64))
    with pytest.raises(ValueError, match="tau"):
        mx.gaussian_kl(kn.vp(), torch.tensor([-1.0]), mx.synthetic_gaussian())
    with pytest.raises(ValueError, match="method"):
        mx.gaussian_kl(kn.vp(), torch.tensor([1.0]), mx.synthetic_gaussian(), method="x")


def test_run_smoke(tmp_path):
    sdes = {n: s for n, s in mx.default_sdes().items() if n in ("vp", "cld", "hold", "langevin1")}
    cfg = mx._Config(n_curve=8, mixture_curves=4, mc_n=500, datasets=("synthetic2",), mixtures=("asym2",), sdes=sdes)
    res = mx.run(cfg, tmp_path)
    assert {"mixing_kl.png", "mixing_kl_asym2.png", "mixing_ratio.png"} <= {p.name for p in (tmp_path / "figures").iterdir()}
    r = res["ratios"]["synthetic2"]["spectral"]["langevin1"]["0.001"]
    assert r["vs_ou"] == pytest.approx(1.0) and r["vs_vp"] == pytest.approx(1.0)  # OU == VP on the spectral clock
    md = mx.to_markdown(res)
    assert "hold/vp" in md and "synthetic2" in md
