import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture

SDES = {"vp": kn.vp, "ve": kn.ve, "cld": kn.cld, "hold": kn.hold, "langevin4": lambda: kn.langevin(4)}


def _gauss():
    cov = torch.tensor([[0.5, 0.2, 0.0], [0.2, 0.3, -0.1], [0.0, -0.1, 0.8]], dtype=torch.float64)
    return GaussianData(torch.tensor([0.5, -1.0, 0.2]), cov)


def _mix():
    means = torch.tensor([[1.0, 0.0], [-1.0, 0.5], [0.0, -1.2]], dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, torch.tensor([0.2, 0.3, 0.25]))


def _states(sde, data, n, t, seed=0):
    g = torch.Generator().manual_seed(seed)
    x0 = data.sample(n, g)
    z, eps = sde.perturb(x0, torch.full((n,), t, dtype=torch.float64), generator=g)
    return z, eps


def test_data_log_prob_and_sampling():
    d = _gauss()
    x = d.sample(5, torch.Generator().manual_seed(0))
    ref = multivariate_normal(d.mean.numpy(), d.cov.numpy()).logpdf(x.numpy())
    np.testing.assert_allclose(d.log_prob(x).numpy(), ref, rtol=1e-12)
    xs = d.sample(200_000, torch.Generator().manual_seed(1))
    assert torch.allclose(xs.mean(0), d.mean, atol=0.01)
    assert torch.allclose(torch.cov(xs.T), d.cov, atol=0.01)

    m = _mix()
    x = m.sample(7, torch.Generator().manual_seed(2))
    ref = np.log(
        sum(
            float(w) * multivariate_normal(mu.numpy(), float(s) ** 2 * np.eye(2)).pdf(x.numpy())
            for w, mu, s in zip(m.weights, m.means, m.std)
        )
    )
    np.testing.assert_allclose(m.log_prob(x).numpy(), ref, rtol=1e-12)
    xs = m.sample(100_000, torch.Generator().manual_seed(3))
    assert torch.allclose(xs.mean(0), (m.weights[:, None] * m.means).sum(0), atol=0.01)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("kind", ["gauss", "mix"])
def test_score_is_autograd_of_marginal_log_prob(name, kind):
    sde = SDES[name]()
    data = _gauss() if kind == "gauss" else _mix()
    for t in (0.05, 0.5, 1.0):
        z, _ = _states(sde, data, 6, t)
        tt = torch.full((6,), t, dtype=torch.float64)
        zr = z.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(data.marginal_log_prob(sde, zr, tt).sum(), zr)
        torch.testing.assert_close(data.full_score(sde, z, tt), g, rtol=1e-8, atol=1e-8)
        torch.testing.assert_close(data.score_fn(sde)(z, tt), g[:, -1], rtol=1e-8, atol=1e-8)


def test_marginal_log_prob_matches_dense_gaussian():
    """The eigenbasis computation against the dense kd x kd Gaussian."""
    sde, data = kn.cld(), _gauss()
    t = torch.tensor([0.3, 0.3, 0.7], dtype=torch.float64)
    z, _ = _states(sde, data, 3, 0.3)
    for i in range(3):
        c = sde.transition(0.0, t[i])[:, 0]
        S = sde.covariance(t[i])
        mean = torch.kron(c, data.mean)
        cov = torch.kron(torch.outer(c, c), data.cov) + torch.kron(S, torch.eye(3, dtype=torch.float64))
        ref = multivariate_normal(mean.numpy(), cov.numpy()).logpdf(z[i].reshape(-1).numpy())
        got = data.marginal_log_prob(sde, z[i : i + 1], t[i : i + 1])
        assert abs(float(got) - ref) < 1e-9


def test_per_example_times():
    sde, data = kn.hold(), _mix()
    z, _ = _states(sde, data, 4, 0.2)
    t = torch.tensor([0.1, 0.2, 0.6, 0.9], dtype=torch.float64)
    s = data.score_fn(sde)(z, t)
    for i in range(4):
        torch.testing.assert_close(s[i : i + 1], data.score_fn(sde)(z[i : i + 1], t[i : i + 1]))


@pytest.mark.parametrize("name", ["vp", "cld", "hold"])
def test_score_against_monte_carlo(name):
    """The score is E[grad log p(z | x0) | z]: the conditional score minus it is orthogonal to
    functions of z (here the score itself and z_k), and E[s z_k] = -1 per coordinate."""
    sde, data = SDES[name](), _mix()
    n, t = 200_000, 0.3
    z, eps = _states(sde, data, n, t, seed=4)
    L = sde.cholesky(torch.tensor(t, dtype=torch.float64))
    cond = -eps[:, -1] / L[-1, -1]
    s = data.score_fn(sde)(z, torch.full((n,), t, dtype=torch.float64))
    r = cond - s
    scale = float(cond.pow(2).mean().sqrt())
    assert abs(float((r * s).mean())) < 0.02 * scale**2
    assert abs(float((r * z[:, -1]).mean())) < 0.02 * scale
    assert abs(float((s * z[:, -1]).mean()) + 1.0) < 0.02


def test_validation():
    with pytest.raises(ValueError, match="positive semi-definite"):
        GaussianData(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="cov must be"):
        GaussianData(torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="std"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 2), -1.0)
    with pytest.raises(ValueError, match="z must have shape"):
        _gauss().score_fn(kn.cld())(torch.zeros(4, 1, 3), torch.ones(4))
    ring = GaussianMixture.ring(8, 1.41, 0.1)
    assert ring.means.shape == (8, 2) and math.isclose(float(ring.means[0, 0]), 1.41)


def test_diagonal_and_singular_covariances():
    """A (d,) covariance takes the coordinate basis (no eigendecomposition) and equals the dense one;
    zero variances (constant coordinates) are allowed: exact scores stay finite, samples are constant
    there, and log_prob is -inf off the support."""
    var = torch.tensor([0.5, 2.0, 0.0, 1.0], dtype=torch.float64)
    mean = torch.tensor([0.1, -0.3, 0.7, 0.0], dtype=torch.float64)
    diag, dense = GaussianData(mean, var), GaussianData(mean, torch.diag(var))
    sde = kn.hold()
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 3, 4, generator=g, dtype=torch.float64)
    t = torch.full((6,), 0.2, dtype=torch.float64)
    torch.testing.assert_close(diag.score_fn(sde)(z, t), dense.score_fn(sde)(z, t), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(diag.marginal_log_prob(sde, z, t), dense.marginal_log_prob(sde, z, t), rtol=1e-10, atol=0)
    x = diag.sample(50, generator=g)
    assert torch.all(x[:, 2] == 0.7) and torch.isfinite(diag.log_prob(x)).all()
    off = x.clone()
    off[:, 2] += 0.1
    assert torch.isinf(diag.log_prob(off)).all()
    full = GaussianData(torch.zeros(3), torch.zeros(3, 3) + torch.diag(torch.tensor([0.0, 1.0, 1.0])))
    assert torch.isfinite(full.score_fn(kn.cld())(torch.randn(5, 2, 3, dtype=torch.float64), torch.full((5,), 0.3))).all()
