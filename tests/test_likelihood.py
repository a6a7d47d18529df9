import math

import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.likelihood import bits_per_dim, log_likelihood
from kinetic.solvers.adaptive import IntegrationError


def _gauss():
    return GaussianData(torch.tensor([0.5, -0.3]), torch.tensor([[0.6, 0.2], [0.2, 0.4]]))


def _mix():
    return GaussianMixture.ring(8, 1.41, 0.15)


@pytest.mark.parametrize("kind", ["gauss", "mix"])
def test_order1_exact_pointwise(kind):
    """VP (order 1) with the exact score: log p(x) point by point; tolerance 0.02 nats mean absolute
    error (measured ~0.003 for the Gaussian, whose variance 0.4-0.6 leaves a small prior mismatch at T,
    and ~3e-5 for the mixture)."""
    data = _gauss() if kind == "gauss" else _mix()
    x = data.sample(24, torch.Generator().manual_seed(0))
    sde = kn.vp()
    lp = log_likelihood(sde, data.score_fn(sde), x)
    assert lp.shape == (24,) and lp.dtype == torch.float64
    err = (lp - data.log_prob(x)).abs()
    assert float(err.mean()) < 0.02 and float(err.max()) < 0.05


@pytest.mark.parametrize("sde", [kn.cld(), kn.hold()], ids=lambda s: s.name)
def test_higher_order_bound(sde):
    """k > 1: E_v0[log p(x, v0) - log q(v0)] <= log p(x). With the exact score the bound is tight in
    expectation; one draw of v0 per point spreads it: mean(bound - log p) < 0.03 nats (the mean is
    measured ~0.001-0.002 with standard error ~0.003) and mean absolute error < 0.05."""
    data = _mix()
    x = data.sample(30, torch.Generator().manual_seed(1))
    lp = log_likelihood(sde, data.score_fn(sde), x, generator=torch.Generator().manual_seed(2))
    diff = lp - data.log_prob(x)
    assert float(diff.mean()) < 0.03
    assert float(diff.abs().mean()) < 0.05


def test_aux_samples_average_and_generator():
    sde, data = kn.cld(), _gauss()
    x = data.sample(6, torch.Generator().manual_seed(3))
    a = log_likelihood(sde, data.score_fn(sde), x, generator=torch.Generator().manual_seed(4))
    b = log_likelihood(sde, data.score_fn(sde), x, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(a, b)
    c = log_likelihood(sde, data.score_fn(sde), x, aux_samples=4, generator=torch.Generator().manual_seed(4))
    assert float((c - data.log_prob(x)).abs().mean()) <= float((a - data.log_prob(x)).abs().mean()) + 0.01


def test_hutchinson_is_unbiased():
    """Hutchinson with many probes agrees with the exact divergence (d = 16, VP)."""
    d = 16
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    data = GaussianData(torch.zeros(d), Q @ torch.diag(torch.linspace(0.3, 1.5, d, dtype=torch.float64)) @ Q.T)
    x = data.sample(4, torch.Generator().manual_seed(5))
    sde = kn.vp()
    exact, nfe = log_likelihood(sde, data.score_fn(sde), x, exact_divergence=True, return_nfe=True)
    assert nfe > 10
    hut = log_likelihood(sde, data.score_fn(sde), x, exact_divergence=False, hutchinson_samples=64,
                         generator=torch.Generator().manual_seed(6))
    assert float((hut - exact).abs().max()) < 0.6  # spread with 64 probes ~0.1 nats (1 probe: ~1 nat)
    torch.testing.assert_close(exact, data.log_prob(x), atol=0.05, rtol=0)


def test_bits_per_dim():
    logp = torch.tensor([-3.0 * 4 * math.log(2.0)])
    assert float(bits_per_dim(logp, (4,), offset=0.0)) == pytest.approx(3.0)
    assert float(bits_per_dim(logp, (2, 2))) == pytest.approx(3.0 + 7.0)  # data in [-1, 1]
    assert float(bits_per_dim(logp, (4,), data_width=1.0)) == pytest.approx(3.0 + 8.0)  # data in [0, 1]
    with pytest.raises(ValueError):
        bits_per_dim(logp, (0,))


def test_validation():
    sde, data = kn.vp(), _gauss()
    x = data.sample(3)
    with pytest.raises(ValueError, match="t_min"):
        log_likelihood(sde, data.score_fn(sde), x, t_min=0.0)
    with pytest.raises(ValueError, match="x must be"):
        log_likelihood(sde, data.score_fn(sde), x[0])
    with pytest.raises(ValueError, match="hutchinson_samples"):
        log_likelihood(sde, data.score_fn(sde), x, hutchinson_samples=0)
    no_aux = kn.LinearSDE([[0.0, 4.0], [-1.0, -4.0]], [[0.0, 0.0], [0.0, math.sqrt(2.0)]])
    with pytest.raises(ValueError, match="aux_cov"):
        log_likelihood(no_aux, data.score_fn(no_aux), x)
    with pytest.raises(ValueError, match=r"score_fn returned shape \(3, 1, 2\); it must return .*\(3, 2\)"):
        log_likelihood(sde, lambda z, t: z, x)


def test_bad_scores_and_inputs_get_one_clear_line():
    """Hardening: a nan score never hangs; a constant score, a list, an empty or non-finite x, and the
    step cap each give one message naming what is wrong."""
    sde, data = kn.vp(), _gauss()
    x = data.sample(3, torch.Generator().manual_seed(0))
    for s in (kn.vp(), kn.cld()):
        with pytest.raises(ValueError, match=r"score_fn returned non-finite values \(nan/inf\)"):
            log_likelihood(s, lambda z, t: z[:, -1] * float("nan"), x)
    with pytest.raises(ValueError, match=r"score_fn returned non-finite values \(nan/inf\) at t = 0\.[5-9]"):
        log_likelihood(sde, lambda z, t: -z[:, -1] * (float("nan") if float(t[0]) > 0.5 else 1.0), x)
    with pytest.raises(ValueError, match="score_fn's output does not depend on z"):
        log_likelihood(sde, lambda z, t: torch.zeros_like(z[:, -1]), x)
    with pytest.raises(ValueError, match=r"score_fn must return a torch.Tensor of shape \(3, 2\), got list"):
        log_likelihood(sde, lambda z, t: [z[:, -1]], x)
    with pytest.raises(ValueError, match="x must hold at least one example"):
        log_likelihood(sde, data.score_fn(sde), x[:0])
    with pytest.raises(ValueError, match=r"x must be finite: it has 1 nan/inf entries"):
        log_likelihood(sde, data.score_fn(sde), torch.cat([x[:1, :1] * float("nan"), x[:1, 1:]], 1))
    with pytest.raises(IntegrationError, match=r"log_likelihood: more than max_steps = 4 adaptive steps"):
        log_likelihood(sde, data.score_fn(sde), x, max_steps=4)
    with pytest.raises(ValueError, match="max_steps must be an integer >= 1"):
        log_likelihood(sde, data.score_fn(sde), x, max_steps=0)
