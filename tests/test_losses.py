"""DSMLoss: the exact score of Gaussian data attains the analytic minimum, for any order."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import kinetic as kn
from kinetic.losses import DSMLoss, sample_times
from kinetic.models import MLP
from kinetic.score import ScoreModel

from test_score import SDES, gaussian_pieces

MEAN = np.array([0.3, -0.2, 0.1])
STD = 0.6


class Oracle(ScoreModel):
    """Exact last-block score of x0 ~ N(MEAN, STD^2 I), plus an optional constant offset on eps."""

    def __init__(self, sde, offset=0.0):
        super().__init__(nn.Linear(1, 1), sde, "eps")
        self.offset = offset
        self.seen_z = None

    def _predict(self, z, t, coefficients=None):
        self.seen_z = z
        t = self._batch_t(t, z).to(torch.float64)
        c = self.sde.transition(torch.zeros_like(t), t)[:, :, 0]
        sigma = self.sde.covariance(t)
        S = STD**2 * c[:, :, None] * c[:, None, :] + sigma
        zc = z.double() - c[:, :, None] * torch.as_tensor(MEAN)[None, None, :]
        score = -torch.linalg.solve(S, zc)[:, -1]
        l_kk = kn.linalg.safe_cholesky(sigma)[:, -1, -1]
        eps = -l_kk[:, None] * score + self.offset
        return eps.to(z.dtype), (-eps / l_kk[:, None]).to(z.dtype)


def sigma_tilde_and_qk(sde, t):
    """(sigma~, q_k) of the GLS statistic from scipy pieces: q = L^-1 c, sigma~^2 = 1 / |q|^2."""
    c, sigma = gaussian_pieces(sde, t)
    q = np.linalg.solve(np.linalg.cholesky(sigma), c)
    return 1.0 / np.linalg.norm(q), q[-1]


def analytic_min(sde, t, weighting="eps"):
    """E ||eps_k - E[eps_k | z_t]||^2 (times the weight) = d (1 - (L^T S^-1 L)_kk), from scipy pieces."""
    c, sigma = gaussian_pieces(sde, t)
    L = np.linalg.cholesky(sigma)
    S = STD**2 * np.outer(c, c) + sigma
    post_var = 1.0 - (L.T @ np.linalg.solve(S, L))[-1, -1]
    w = 1.0
    if weighting == "likelihood":
        beta = float(sde.beta(torch.tensor(t, dtype=torch.float64)))
        w = beta * float(sde.noise_block[0, 0]) / L[-1, -1] ** 2
    elif weighting == "edm":  # unit weight on F = (x0 - c_skip x~) / c_out, sigma_data = 1
        sig, q_k = sigma_tilde_and_qk(sde, t)
        c_out = sig / math.sqrt(1.0 + sig**2)
        w = 1.0 / (q_k * c_out) ** 2
    return len(MEAN) * post_var * w


def data(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.from_numpy(MEAN).float() + STD * torch.randn(n, len(MEAN), generator=g)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("weighting", ["eps", "likelihood", "edm"])
def test_exact_score_attains_analytic_minimum_and_beats_perturbed(name, weighting):
    sde = SDES[name]()
    loss = DSMLoss(sde, "eps", weighting)
    n = 20000
    x0 = data(n, 0)
    for t in (0.02, 0.3, 0.8):
        per = loss.per_example(Oracle(sde), x0, generator=torch.Generator().manual_seed(1), t=t)
        want = analytic_min(sde, t, weighting)
        se = float(per.double().std()) / math.sqrt(n)
        assert abs(float(per.double().mean()) - want) < 5 * se + 1e-9 * want, (name, t, float(per.mean()), want)
        # same noise, eps shifted by 0.1: the loss grows by about d * 0.01 (times the weight)
        pert = loss.per_example(Oracle(sde, 0.1), x0, generator=torch.Generator().manual_seed(1), t=t)
        w = want / analytic_min(sde, t, "eps")
        gap = float((pert.double() - per.double()).mean())
        assert gap > 0 and abs(gap - 0.03 * w) < 0.15 * 0.03 * w, (name, t, gap)


@pytest.mark.parametrize("name", ["vp", "hold"])
def test_uniform_time_average_matches_quadrature(name):
    sde = SDES[name]()
    loss = DSMLoss(sde, "eps", "eps", t_eps=1e-3, time_sampling="stratified")
    n = 20000
    per = loss.per_example(Oracle(sde), data(n, 3), generator=torch.Generator().manual_seed(4)).double()
    ts = np.linspace(1e-3, sde.T, 201)
    vals = np.array([analytic_min(sde, float(t)) for t in ts])
    want = np.trapezoid(vals, ts) / (sde.T - 1e-3)
    se = float(per.std()) / math.sqrt(n)
    assert abs(float(per.mean()) - want) < 5 * se + 1e-3 * want


def test_state_is_float64_and_gradients_reach_only_the_network():
    sde = kn.hold()
    net = MLP(9, 3, hidden=16, depth=1, emb_dim=8)
    nn.init.normal_(net.out.weight, std=0.1)
    sm = ScoreModel(net, sde, "x0")
    x0 = data(32, 5).requires_grad_(True)
    loss = DSMLoss(sde, "x0")(sm, x0, generator=torch.Generator().manual_seed(0))
    assert loss.dim() == 0 and loss.dtype == torch.float32
    loss.backward()
    assert x0.grad is None
    grads = [p.grad for p in net.parameters()]
    assert all(g is not None for g in grads) and any(float(g.abs().sum()) > 0 for g in grads)
    oracle = Oracle(sde)
    DSMLoss(sde, "eps")(oracle, data(8, 0))
    assert oracle.seen_z.dtype == torch.float64 and not oracle.seen_z.requires_grad
    DSMLoss(sde, "eps", state_dtype=None)(oracle, data(8, 0))
    assert oracle.seen_z.dtype == torch.float32


def test_raw_network_is_wrapped_and_mismatch_is_an_error():
    sde = kn.cld()
    net = MLP(4, 2, hidden=16, depth=1, emb_dim=8)
    x0 = torch.randn(16, 2)
    base = DSMLoss(sde, "eps")(net, x0, generator=torch.Generator().manual_seed(0))
    assert abs(base.item() - 2.0) < 1.0  # zero net: E||eps_k||^2 = d = 2
    with pytest.raises(ValueError, match="parameterization"):
        DSMLoss(sde, "eps")(ScoreModel(net, sde, "x0"), x0)


@pytest.mark.parametrize("name", ["vp", "hold", "langevin4"])
def test_lognormal_times_give_lognormal_sigma_tilde(name):
    sde = SDES[name]()
    loss = DSMLoss(sde, "x0", "edm", time_sampling="lognormal", p_mean=-1.0, p_std=0.8)
    t = loss.sample_t(4000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.float64 and float(t.min()) >= loss.t_eps and float(t.max()) <= sde.T
    log_sig = np.array([math.log(sigma_tilde_and_qk(sde, float(x))[0]) for x in t[:250]])
    assert abs(log_sig.mean() - (-1.0)) < 0.2 and abs(log_sig.std() - 0.8) < 0.15  # SE 0.05, 0.04


def test_sample_times():
    g = torch.Generator().manual_seed(0)
    t = sample_times(1000, 1e-5, 1.0, "uniform", g)
    assert t.dtype == torch.float64 and float(t.min()) >= 1e-5 and float(t.max()) <= 1.0
    t = sample_times(64, 0.1, 2.0, "stratified", g)
    u = (t - 0.1) / 1.9
    assert torch.equal(torch.floor(u * 64).long(), torch.arange(64))
    t = sample_times(10, 1e-3, 1.0, "antithetic", g)
    assert torch.allclose(t[:5] + t[5:], torch.full((5,), 1.001, dtype=torch.float64))
    assert sample_times(7, 1e-3, 1.0, "antithetic", g).shape == (7,)
    with pytest.raises(ValueError, match="time_sampling"):
        sample_times(4, 1e-3, 1.0, "sobol")


def test_validation():
    sde = kn.vp()
    with pytest.raises(ValueError, match="weighting"):
        DSMLoss(sde, weighting="snr")
    with pytest.raises(ValueError, match="parameterization"):
        DSMLoss(sde, parameterization="v")
    with pytest.raises(ValueError, match="t_eps"):
        DSMLoss(sde, t_eps=0.0)
    with pytest.raises(ValueError, match="t_eps"):
        DSMLoss(sde, t_eps=2.0)
    with pytest.raises(TypeError, match="sde"):
        DSMLoss("vp")
    loss = DSMLoss(sde)
    with pytest.raises(TypeError, match="x0"):
        loss(MLP(2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="t must"):
        loss(MLP(2, 2), torch.zeros(4, 2), t=torch.rand(3))


# ----------------------------------------------------------------------------- several noised blocks
def full_noise_k3():
    A = [[-0.3, 1.0, 0.0], [-1.0, -0.2, 0.8], [0.0, -0.8, -1.2]]
    G = [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 1.0]]  # noise on blocks 0 and 2
    return kn.LinearSDE(A, G, aux_cov=0.1, T=1.0)


MULTI = {
    "psld": kn.psld,
    "psld_x_only": lambda: kn.psld(gamma=4.01, nu=0.0),  # one noised block that is not the last
    "noise02": full_noise_k3,
}


def whitening(sde, t):
    """From scipy pieces: L, W = R^-1 K (eps* = W eps), R = chol((Sigma^-1)_NN), K = (L^-1)[:, N]^T."""
    c, sigma = gaussian_pieces(sde, t)
    L = np.linalg.cholesky(sigma)
    N = list(sde.noised_blocks)
    K = np.linalg.inv(L)[:, N].T
    R = np.linalg.cholesky(K @ K.T)
    return c, sigma, L, R, np.linalg.solve(R, K)


class MultiOracle(ScoreModel):
    """Exact noised-block score of x0 ~ N(MEAN, STD^2 I) for any noised set, plus an offset on eps*."""

    def __init__(self, sde, offset=0.0):
        super().__init__(nn.Linear(1, 1), sde, "eps")
        self.offset = offset

    def _predict(self, z, t, coefficients=None):
        t = self._batch_t(t, z).to(torch.float64)
        assert bool((t == t[0]).all()), "one time per call (as these tests use it)"
        c, sigma, L, R, W = whitening(self.sde, float(t[0]))
        S = STD**2 * np.outer(c, c) + sigma
        zc = z.double().numpy() - c[None, :, None] * MEAN[None, None, :]  # (B, k, d)
        s = -np.einsum("ij,bjd->bid", np.linalg.inv(S), zc)[:, list(self.sde.noised_blocks)]  # (B, m, d)
        e = -np.einsum("ij,bjd->bid", np.linalg.inv(R), s) + self.offset
        score = np.einsum("ij,bjd->bid", -R, e)
        shape = self.sde.score_shape(z.shape[0], z.shape[2:])
        return torch.tensor(e).reshape(shape).to(z.dtype), torch.tensor(score).reshape(shape).to(z.dtype)


def analytic_min_multi(sde, t, weighting):
    """E[e^T Wt e] with e = eps* - E[eps* | z]: tr(Wt W (I - L^T S^-1 L) W^T) per coordinate, times d."""
    c, sigma, L, R, W = whitening(sde, t)
    S = STD**2 * np.outer(c, c) + sigma
    cov = W @ (np.eye(len(c)) - L.T @ np.linalg.solve(S, L)) @ W.T
    if weighting == "eps":
        Wt = np.eye(cov.shape[0])
    elif weighting == "likelihood":
        beta = float(sde.beta(torch.tensor(t, dtype=torch.float64)))
        N = list(sde.noised_blocks)
        Wt = beta * R.T @ sde.noise_matrix.numpy()[np.ix_(N, N)] @ R
    else:  # edm: unit weight on F; eps* error = v (x0 - x0_hat), v = R^-1 (Sigma^-1 c)_N
        v = np.linalg.solve(R, np.linalg.solve(sigma, c)[list(sde.noised_blocks)])
        sig2 = 1.0 / float(c @ np.linalg.solve(sigma, c))
        c_out2 = sig2 / (1.0 + sig2)
        Wt = np.eye(cov.shape[0]) / (v @ v * c_out2)
    return len(MEAN) * float(np.trace(Wt @ cov))


@pytest.mark.parametrize("name", list(MULTI))
@pytest.mark.parametrize("weighting", ["eps", "likelihood", "edm"])
def test_several_noised_blocks_exact_score_attains_analytic_minimum(name, weighting):
    """The generalised targets and weightings: the exact score's loss equals the analytic minimum,
    and an offset on eps* raises it by the weight's trace times d * offset^2."""
    sde = MULTI[name]()
    loss = DSMLoss(sde, "eps", weighting)
    n = 3000
    x0 = data(n, 0)
    for t in (0.05, 0.5):
        per = loss.per_example(MultiOracle(sde), x0, generator=torch.Generator().manual_seed(1), t=t).double()
        want = analytic_min_multi(sde, t, weighting)
        se = float(per.std()) / math.sqrt(n)
        assert abs(float(per.mean()) - want) < 5 * se + 1e-9 * want, (name, t, float(per.mean()), want)
        pert = loss.per_example(MultiOracle(sde, 0.1), x0, generator=torch.Generator().manual_seed(1), t=t).double()
        assert float((pert - per).mean()) > 0


# ---------------------------------------------------------------------- class labels
def _cond_model(sde, seed=0):
    from kinetic.models import build_model

    torch.manual_seed(seed)
    net = build_model("mlp", "tiny", (3,), sde.order, num_classes=4)
    for p in net.parameters():
        nn.init.normal_(p, std=0.1)
    return ScoreModel(net, sde, "x0")


@pytest.mark.parametrize("name", ["vp", "hold"])
def test_label_dropout_trains_the_null_class(name):
    """label_dropout = 1 is the unconditional loss (every label the null class, as labels=None),
    0 uses the labels; in between, the share of null labels is the dropout rate."""
    sde = SDES[name]()
    model = _cond_model(sde)
    x0 = data(256, 3)
    y = torch.arange(256) % 4
    t = torch.linspace(0.05, 0.9, 256, dtype=torch.float64)

    def per(p, labels):
        return DSMLoss(sde, "x0", "edm", label_dropout=p).per_example(model, x0, torch.Generator().manual_seed(7), t=t,
                                                                     labels=labels)

    null = per(0.0, None)
    assert torch.allclose(per(1.0, y), null)
    assert torch.allclose(per(0.0, torch.full((256,), 4)), null)
    assert not torch.allclose(per(0.0, y), null)
    loss = DSMLoss(sde, "x0", label_dropout=0.3)
    dropped = loss.drop_labels(torch.arange(20000) % 4, 4, torch.Generator().manual_seed(0))
    assert abs(float((dropped == 4).double().mean()) - 0.3) < 0.015
    assert torch.equal(dropped[dropped != 4], (torch.arange(20000) % 4)[dropped != 4])
    # no labels: nothing drawn for them (the unconditional random stream is unchanged)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    DSMLoss(sde, "x0", label_dropout=0.5).per_example(model, x0, g1, t=t)
    DSMLoss(sde, "x0").per_example(model, x0, g2, t=t)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_labels_with_an_unconditional_model_or_bad_dropout():
    sde = kn.cld()
    plain = ScoreModel(MLP(6, 3, hidden=8, depth=1, emb_dim=4), sde, "x0")
    with pytest.raises(ValueError, match="unconditional"):
        DSMLoss(sde, "x0")(plain, data(8, 0), labels=torch.zeros(8, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"\[0, 4\]"):
        DSMLoss(sde, "x0")(_cond_model(sde), data(8, 0), labels=torch.full((8,), 5))
    for bad in (-0.1, 1.5, True):
        with pytest.raises(ValueError, match="label_dropout"):
            DSMLoss(sde, "x0", label_dropout=bad)
