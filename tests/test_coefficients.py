"""`LinearSDE.coefficients`: one pass agrees with the separate calls, and its derived quantities
(whitening, noised-block score map, Tweedie estimate) against direct linear algebra."""

import numpy as np
import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData


def full_noise():
    """k = 2 with a full-rank G (noise on both blocks, correlated)."""
    return kn.LinearSDE([[-0.5, 1.0], [-1.0, -1.5]], [[0.7, 0.0], [0.4, 1.1]], aux_cov=0.2, T=1.0)


def noise_0_2():
    """k = 3 with noise on blocks 0 and 2 only."""
    A = [[-0.3, 1.0, 0.0], [-1.0, -0.2, 0.8], [0.0, -0.8, -1.2]]
    G = [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 1.0]]
    return kn.LinearSDE(A, G, aux_cov=0.1, T=1.0)


SDES = {"vp": kn.vp, "cld": kn.cld, "hold": kn.hold, "full": full_noise, "n02": noise_0_2}


@pytest.mark.parametrize("name", list(SDES))
def test_coefficients_match_separate_calls(name):
    sde = SDES[name]()
    t = torch.tensor([1e-4, 0.1, 0.5, 1.0], dtype=torch.float64)
    co = sde.coefficients(t)
    torch.testing.assert_close(co.phi, sde.transition(torch.zeros_like(t), t), rtol=1e-12, atol=0)
    torch.testing.assert_close(co.sigma, sde.covariance(t), rtol=1e-12, atol=0)
    torch.testing.assert_close(co.chol @ co.chol.transpose(-1, -2), co.sigma, rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(co.tau, sde.tau(t))
    torch.testing.assert_close(co.beta, sde.beta(t))
    S = co.sigma.numpy()
    c = co.c.numpy()
    lam = 0.5 * np.log(S[:, 0, 0] / c[:, 0] ** 2)
    np.testing.assert_allclose(co.lam.numpy(), lam, rtol=1e-12)
    N = list(sde.noised_blocks)
    P = np.linalg.inv(S)[:, N][:, :, N]
    np.testing.assert_allclose(co.score_precision.numpy(), P, rtol=1e-8)
    R = co.score_scale.numpy()
    np.testing.assert_allclose(R @ np.swapaxes(R, -1, -2), P, rtol=1e-8)
    sig_t = 1.0 / np.sqrt(np.einsum("bi,bij,bj->b", c, np.linalg.inv(S), c))
    np.testing.assert_allclose(co.sigma_tilde.numpy(), sig_t, rtol=1e-8)


@pytest.mark.parametrize("name", list(SDES))
def test_score_map_and_data_estimate(name):
    """score_N = -K eps for z = c x0 + L eps, and the Tweedie estimate from the exact score of
    Gaussian data equals E[x0 | z] computed directly."""
    sde = SDES[name]()
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    t = torch.full((5,), 0.3, dtype=torch.float64)
    z, eps = sde.perturb(x0, t, generator=g)
    co = sde.coefficients(t)
    full = -np.linalg.solve(co.sigma.numpy(), (z - co.c[:, :, None] * x0[:, None]).numpy())  # (B, k, d)
    K = co.score_map.numpy()
    np.testing.assert_allclose(-np.einsum("bmk,bkd->bmd", K, eps.numpy()), full[:, list(sde.noised_blocks)], rtol=1e-8, atol=1e-10)
    data = GaussianData(torch.tensor([0.3, -0.2, 0.1]), torch.tensor([0.5, 1.0, 2.0]))
    s = data.score_fn(sde)(z, t)
    xhat = co.data_estimate(z, s)
    # direct posterior mean of x0 given z under the Gaussian data law (per coordinate: k-dim Gaussian)
    direct = []
    for j in range(3):
        lam_j, m_j = float(data.cov[j, j]), float(data.mean[j])
        C = lam_j * np.einsum("bi,bj->bij", co.c.numpy(), co.c.numpy()) + co.sigma.numpy()
        gain = lam_j * np.linalg.solve(C, co.c.numpy()[..., None])[..., 0]  # Cov(x0, z) C^-1
        direct.append(m_j + np.einsum("bi,bi->b", gain, z[:, :, j].numpy() - co.c.numpy() * m_j))
    np.testing.assert_allclose(xhat.numpy(), np.stack(direct, 1), rtol=1e-8, atol=1e-10)


def test_noised_blocks_and_score_shapes():
    assert kn.hold().noised_blocks == (2,)
    assert full_noise().noised_blocks == (0, 1)
    assert noise_0_2().noised_blocks == (0, 2)
    assert noise_0_2().score_shape(4, (1, 8, 8)) == (4, 2, 1, 8, 8)
    assert kn.cld().score_shape(4, (2,)) == (4, 2)
    z = torch.zeros(4, 3, 2)
    with pytest.raises(ValueError, match=r"scores of the 2 noised blocks \(0, 2\).*\(4, 2, 2\)"):
        noise_0_2().check_score(torch.zeros(4, 2), z)
    assert torch.equal(full_noise().noise_block, full_noise().noise_matrix)  # D_NN: both blocks noised


@pytest.mark.parametrize("name", list(SDES))
def test_reference_factor_and_precision(name):
    """`Coefficients.reference_chol` / `reference_precision`, the Gaussian reference
    C = Sigma + v c c^T (ei's reference, the mixed score, analytic's factor, divergence), against
    (a) C formed and factored directly where Sigma is well conditioned, and (b) everywhere, the
    Sherman-Morrison inverse built from L_t^-1: Sigma^-1 - g u u^T, u = Sigma^-1 c, g = v / (1 + v c^T u)."""
    sde = SDES[name]()
    t = torch.tensor([1e-4, 1e-2, 0.3, 1.0], dtype=torch.float64)
    co = sde.coefficients(t)
    for v in (0.0, 0.25, 1.0):
        L = co.reference_chol(v)
        C = co.sigma + v * co.c[:, :, None] * co.c[:, None, :]
        assert torch.allclose(torch.tril(L), L)
        assert (torch.diagonal(L, dim1=-2, dim2=-1) >= 0).all()
        well = slice(2, None)  # t >= 0.3: Sigma is well conditioned
        torch.testing.assert_close(L[well], torch.linalg.cholesky(C[well]), rtol=1e-10, atol=1e-12)
        sig_inv = co.chol_inv.transpose(-1, -2) @ co.chol_inv
        u = (sig_inv @ co.c.unsqueeze(-1)).squeeze(-1)
        g = v / (1.0 + v * (co.c * u).sum(-1))
        expected = sig_inv - g[:, None, None] * u[:, :, None] * u[:, None, :]
        got = co.reference_precision(v)
        # Sherman-Morrison subtracts terms of the size of Sigma^-1: its rounding is relative to that
        scale = torch.diagonal(sig_inv, dim1=-2, dim2=-1).abs()
        err = (got - expected).abs() / (scale[:, :, None] * scale[:, None, :]).sqrt()
        assert float(err.max()) < 1e-11, (v, float(err.max()))
        # (c) everywhere, the factor reproduces C entrywise relative to its scale (C formed directly
        # is accurate entrywise; it is factoring it that loses digits at tiny t)
        d = torch.diagonal(C, dim1=-2, dim2=-1)
        rel = (L @ L.transpose(-1, -2) - C).abs() / (d[:, :, None] * d[:, None, :]).sqrt()
        assert float(rel.max()) < 1e-12, (v, float(rel.max()))
    # a tensor of variances gives one factor per variance
    vs = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    Ls = co.reference_chol(vs)
    assert Ls.shape == (4, 3, sde.order, sde.order)
    for j, v in enumerate(vs.tolist()):
        torch.testing.assert_close(Ls[:, j] @ Ls[:, j].transpose(-1, -2), co.reference_chol(v) @ co.reference_chol(v).transpose(-1, -2), rtol=1e-9, atol=1e-300)
    with pytest.raises(ValueError, match="variance"):
        co.reference_chol(-1.0)
