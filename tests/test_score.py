"""ScoreModel: network plumbing and every parameterisation against closed-form Gaussian scores."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from torch import nn

import kinetic as kn
from kinetic.models import MLP, UNet
from kinetic.score import PARAMETERIZATIONS, ScoreModel, as_score_fn, network_input

SDES = {
    "vp": kn.vp,
    "ve": kn.ve,
    "cld": kn.cld,
    "hold": kn.hold,
    "langevin4": lambda: kn.langevin(4),
}


def gaussian_pieces(sde, t: float):
    """c = Phi(0,t) e_1 and Sigma(t) from scipy (independent of kinetic's kernels), float64 numpy.

    Constant-beta presets only (tau = beta t) plus VP's linear schedule and VE's closed form.
    """
    A = sde.drift_matrix.numpy()
    D = sde.noise_matrix.numpy()
    S0 = sde.initial_cov.numpy()
    tau = float(sde.schedule.integral(torch.tensor(t, dtype=torch.float64)))
    k = A.shape[0]
    # Van Loan with sub-steps (stable for the small tau used here)
    n = 64
    h = tau / n
    C = np.zeros((2 * k, 2 * k))
    C[:k, :k], C[:k, k:], C[k:, k:] = -A, D, A.T
    E = scipy.linalg.expm(C * h)
    phi_h = E[k:, k:].T
    q_h = phi_h @ E[:k, k:]
    phi, q = np.eye(k), np.zeros((k, k))
    for _ in range(n):
        q = phi_h @ q @ phi_h.T + q_h
        phi = phi_h @ phi
    sigma = phi @ S0 @ phi.T + q
    return phi[:, 0], 0.5 * (sigma + sigma.T)


def exact_last_block_score(sde, z, t, mean, std):
    """-(S^{-1}(z - c m))_k for x0 ~ N(m, std^2 I), S = std^2 c c^T + Sigma(t): (B, k, d) -> (B, d)."""
    c, sigma = gaussian_pieces(sde, t)
    S = std**2 * np.outer(c, c) + sigma
    row = np.linalg.solve(S, np.eye(len(c))[-1])  # S symmetric
    zc = z.double().numpy() - c[None, :, None] * np.asarray(mean)[None, None, :]
    return torch.from_numpy(-np.einsum("k,bkd->bd", row, zc))


class Recorder(nn.Module):
    """Records its input and returns a fixed function of it."""

    def __init__(self, out_shape, dtype=torch.float32):
        super().__init__()
        self.w = nn.Parameter(torch.zeros((), dtype=dtype))
        self.out_shape = out_shape
        self.seen = None

    def forward(self, h, t):
        self.seen = (h, t)
        return torch.zeros((h.shape[0], *self.out_shape), dtype=self.w.dtype) + self.w


def test_network_input_shapes():
    z = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(2, 3, 4)
    h = network_input(z)
    assert h.shape == (2, 12) and torch.equal(h[0, 4:8], z[0, 1])
    zi = torch.randn(2, 3, 1, 8, 8)
    hi = network_input(zi)
    assert hi.shape == (2, 3, 8, 8) and torch.equal(hi[:, 2], zi[:, 2, 0])
    zc = torch.randn(2, 2, 3, 4, 4)
    assert network_input(zc).shape == (2, 6, 4, 4) and torch.equal(network_input(zc)[:, 3:], zc[:, 1])


@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_network_sees_reshaped_state_time_and_its_dtype(param):
    sde = kn.hold()
    net = Recorder((1, 8, 8), dtype=torch.float64)
    sm = ScoreModel(net, sde, param, input_scaling=False)
    z = torch.randn(5, 3, 1, 8, 8, dtype=torch.float32)
    t = torch.rand(5) * 0.9 + 0.05
    eps, score = sm.eps_and_score(z, t)
    h, tt = net.seen
    if param == "denoiser":  # only the data-shaped GLS statistic, and EDM's c_noise instead of t
        co = sde.coefficients(t.double())
        sig = co.sigma_tilde
        assert h.shape == (5, 1, 8, 8) and h.dtype == torch.float64 and tt.shape == (5,) and tt.dtype == torch.float64
        torch.testing.assert_close(tt, torch.log(sig) / 4)
        y = co.gls_estimate(z.double())
        torch.testing.assert_close(h, y / torch.sqrt(sig**2 + 1.0).reshape(5, 1, 1, 1))
        assert eps.shape == score.shape == (5, 1, 8, 8) and eps.dtype == score.dtype == torch.float32
        return
    assert h.shape == (5, 3, 8, 8) and h.dtype == torch.float64 and tt.shape == (5,) and tt.dtype == torch.float64
    assert torch.allclose(tt, t.double())
    if param != "x0":  # x0 replaces block 0 by the GLS statistic
        assert torch.allclose(h.float(), z.reshape(5, 3, 8, 8))
    else:
        assert torch.allclose(h[:, 1:].float(), z.reshape(5, 3, 8, 8)[:, 1:])
    assert eps.shape == score.shape == (5, 1, 8, 8) and eps.dtype == score.dtype == torch.float32
    l_kk = sde.cholesky(t.double())[:, -1, -1].float()
    assert torch.allclose(score, -eps / l_kk[:, None, None, None], rtol=1e-5, atol=1e-6)
    # scalar t broadcasts
    assert sm.score(z, 0.5).shape == (5, 1, 8, 8)


def test_input_scaling_uses_gaussian_marginal_std():
    sde = kn.ve()
    net = Recorder((2,))
    sm = ScoreModel(net, sde, "eps")
    z = torch.randn(4, 1, 2) * 30
    sm(z, torch.full((4,), 0.9))
    c, sigma = gaussian_pieces(sde, 0.9)
    expected = z[:, 0] / math.sqrt(c[0] ** 2 + sigma[0, 0])
    assert torch.allclose(net.seen[0], expected, rtol=1e-5)


@pytest.mark.parametrize("name", list(SDES))
@pytest.mark.parametrize("param", ["mixed", "x0"])
def test_zero_network_is_exact_for_reference_gaussian(name, param):
    """mixed and x0 with a zero network give the exact score of N(0, data_std^2 I) data."""
    sde = SDES[name]()
    std = 0.7
    net = MLP(sde.order * 3, 3, hidden=16, depth=1, emb_dim=8)  # zero-initialised output layer
    sm = ScoreModel(net, sde, param, data_std=std)
    g = torch.Generator().manual_seed(0)
    for t in (0.01, 0.3, 0.9):
        x0 = std * torch.randn(64, 3, generator=g, dtype=torch.float64)
        z, _ = sde.perturb(x0, t, generator=g)
        got = sm.score(z, torch.full((64,), t, dtype=torch.float64))
        want = exact_last_block_score(sde, z, t, np.zeros(3), std)
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max())), (name, t)


class X0Oracle(nn.Module):
    """Returns the F that makes the x0 parameterisation exact for x0 ~ N(m, s^2 I): computed from the
    network's own input (block 0 = x_tilde * c_in) with an independent GLS computation."""

    def __init__(self, sde, mean, s, data_std):
        super().__init__()
        self.sde, self.mean, self.s, self.sd = sde, torch.as_tensor(mean, dtype=torch.float64), s, data_std
        self.dummy = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, h, t):
        out = []
        for i in range(h.shape[0]):
            c, sigma = gaussian_pieces(self.sde, float(t[i]))
            prec = float(c @ np.linalg.solve(sigma, c))
            sig2 = 1.0 / prec
            c_in = 1.0 / math.sqrt(self.sd**2 + sig2)
            x_tilde = h[i, : self.mean.shape[0]] / c_in
            post = (self.s**2 * x_tilde + sig2 * self.mean) / (self.s**2 + sig2)  # E[x0 | x_tilde]
            c_skip = self.sd**2 / (self.sd**2 + sig2)
            c_out = math.sqrt(sig2) * self.sd / math.sqrt(self.sd**2 + sig2)
            out.append((post - c_skip * x_tilde) / c_out)
        return torch.stack(out) + 0 * self.dummy


@pytest.mark.parametrize("name", ["vp", "cld", "hold", "langevin4"])
def test_x0_parameterisation_with_exact_denoiser_gives_exact_score(name):
    sde = SDES[name]()
    mean, s = np.array([0.5, -1.0]), 0.4
    sm = ScoreModel(X0Oracle(sde, mean, s, data_std=1.0), sde, "x0", data_std=1.0)
    g = torch.Generator().manual_seed(1)
    for t in (0.003, 0.05, 0.4, 1.0):
        x0 = torch.from_numpy(mean) + s * torch.randn(16, 2, generator=g, dtype=torch.float64)
        z, _ = sde.perturb(x0, t, generator=g)
        got = sm.score(z, torch.full((16,), t, dtype=torch.float64))
        want = exact_last_block_score(sde, z, t, mean, s)
        scale = float(want.abs().max())
        assert torch.allclose(got, want, rtol=1e-6, atol=1e-7 * scale), (name, t, float((got - want).abs().max()))


def test_as_score_fn_wraps_raw_network_without_grad():
    sde = kn.cld()
    net = MLP(4, 2, hidden=16, depth=1, emb_dim=8)
    fn = as_score_fn(net, sde, "eps")
    z = torch.randn(3, 2, 2)
    s = fn(z, torch.full((3,), 0.5))
    assert s.shape == (3, 2) and not s.requires_grad
    sm = ScoreModel(net, sde, "score")
    assert as_score_fn(sm)(z, torch.full((3,), 0.5)).shape == (3, 2)
    with pytest.raises(ValueError, match="sde"):
        as_score_fn(net)
    with pytest.raises(ValueError, match="does not match"):
        as_score_fn(sm, kn.hold())


def test_float64_state_with_float32_network():
    sde = kn.hold()
    net = UNet(3, 1, channels=8, channel_mult=(1,), num_res_blocks=1, attn_resolutions=(), resolution=8, groups=4)
    sm = ScoreModel(net, sde, "x0")
    z = torch.randn(2, 3, 1, 8, 8, dtype=torch.float64)
    s = sm.score(z, torch.tensor([0.2, 0.7], dtype=torch.float64))
    assert s.dtype == torch.float64 and s.shape == (2, 1, 8, 8) and torch.isfinite(s).all()


def test_validation():
    sde = kn.hold()
    net = MLP(6, 2, hidden=8, depth=1, emb_dim=8)
    with pytest.raises(ValueError, match="parameterization"):
        ScoreModel(net, sde, "v")
    with pytest.raises(TypeError, match="sde"):
        ScoreModel(net, "hold")
    with pytest.raises(TypeError, match="net"):
        ScoreModel(lambda h, t: h, sde)
    with pytest.raises(ValueError, match="data_std"):
        ScoreModel(net, sde, data_std=0.0)
    sm = ScoreModel(net, sde)
    with pytest.raises(ValueError, match=r"\(B, 3"):
        sm.score(torch.randn(4, 2, 2), 0.5)
    with pytest.raises(ValueError, match="t must"):
        sm.score(torch.randn(4, 3, 2), torch.rand(3))
    bad = ScoreModel(MLP(6, 3, hidden=8, depth=1, emb_dim=8), sde)
    with pytest.raises(ValueError, match="data shape"):
        bad.score(torch.randn(4, 3, 2), 0.5)


# ----------------------------------------------------------------------------- several noised blocks
def multi_sdes():
    return {
        "psld": kn.psld(),
        "psld_x_only": kn.psld(gamma=4.01, nu=0.0),
        "noise02": kn.LinearSDE(
            [[-0.3, 1.0, 0.0], [-1.0, -0.2, 0.8], [0.0, -0.8, -1.2]],
            [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 1.0]], aux_cov=0.1, T=1.0,
        ),
    }


def exact_noised_score(sde, z, t, mean, std):
    """-(S^{-1}(z - c m))_N for x0 ~ N(m, std^2 I): (B, k, d) -> score_shape."""
    c, sigma = gaussian_pieces(sde, t)
    S = std**2 * np.outer(c, c) + sigma
    zc = z.double().numpy() - c[None, :, None] * np.asarray(mean)[None, None, :]
    s = -np.einsum("ij,bjd->bid", np.linalg.inv(S), zc)[:, list(sde.noised_blocks)]
    return torch.from_numpy(s).reshape(sde.score_shape(z.shape[0], z.shape[2:]))


@pytest.mark.parametrize("name", ["psld", "psld_x_only", "noise02"])
@pytest.mark.parametrize("param", PARAMETERIZATIONS)
def test_several_noised_blocks_shapes_and_exactness(name, param):
    """Output blocks follow the parameterisation (m for eps/score/mixed, 1 for x0 and denoiser); with a zero
    network mixed, x0 and denoiser give the exact score of N(0, std^2 I) data; eps and score agree through
    score = -R_t eps*."""
    sde = multi_sdes()[name]
    m = len(sde.noised_blocks)
    out_blocks = 1 if param in ("x0", "denoiser") else m
    in_blocks = 1 if param == "denoiser" else sde.order
    std = 0.7
    net = MLP(in_blocks * 3, out_blocks * 3, hidden=16, depth=1, emb_dim=8)  # zero output layer
    sm = ScoreModel(net, sde, param, data_std=std)
    assert sm.out_blocks == out_blocks
    g = torch.Generator().manual_seed(0)
    for t in (0.01, 0.3, 0.9):
        x0 = std * torch.randn(32, 3, generator=g, dtype=torch.float64)
        z, _ = sde.perturb(x0, t, generator=g)
        tt = torch.full((32,), t, dtype=torch.float64)
        with torch.no_grad():
            eps, score = sm.eps_and_score(z, tt)
        assert score.shape == sde.score_shape(32, (3,)) == eps.shape
        R = sde.coefficients(tt).score_scale
        torch.testing.assert_close(score.reshape(32, m, 3), -(R @ eps.reshape(32, m, 3)), rtol=1e-9, atol=1e-9 * float(score.abs().max()))
        if param in ("mixed", "x0", "denoiser"):
            want = exact_noised_score(sde, z, t, np.zeros(3), std)
            assert torch.allclose(score, want, rtol=1e-6, atol=1e-6 * float(want.abs().max())), (name, t)
    bad = ScoreModel(MLP(in_blocks * 3, 3 * (out_blocks + 1), hidden=8, depth=1, emb_dim=8), sde, param)
    with pytest.raises(ValueError, match="network output must have"):
        bad.score(torch.randn(4, sde.order, 3), 0.5)


def test_score_model_threads_labels():
    from kinetic.models import build_model

    sde = kn.cld()
    torch.manual_seed(0)
    net = build_model("mlp", "tiny", (3,), 2, num_classes=5)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.1)
    sm = ScoreModel(net, sde, "x0")
    assert sm.conditional and sm.num_classes == 5 and sm.null_label == 5
    z = torch.randn(1, 2, 3, dtype=torch.float64).expand(6, -1, -1)
    t = torch.full((6,), 0.4)
    s = sm.score(z, t, torch.arange(6))
    assert not torch.allclose(s[0], s[1]) and torch.equal(sm.score(z, t), sm.score(z, t, torch.full((6,), 5)))
    eps, score = sm.eps_and_score(z, t, torch.arange(6))
    assert torch.allclose(score, s)
    fn = kn.as_score_fn(sm)
    assert fn.num_classes == 5 and torch.allclose(fn(z, t, torch.arange(6)), s)
    with pytest.raises(ValueError, match=r"\[0, 5\]"):
        sm.score(z, t, torch.full((6,), 6))
    plain = ScoreModel(build_model("mlp", "tiny", (3,), 2), sde, "x0")
    assert not plain.conditional and kn.as_score_fn(plain).num_classes == 0
    with pytest.raises(ValueError, match="unconditional"):
        plain.score(z, t, torch.zeros(6, dtype=torch.int64))
    with pytest.raises(ValueError, match="unconditional"):
        _ = plain.null_label
