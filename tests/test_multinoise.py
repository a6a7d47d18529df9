"""Samplers, Tweedie denoising and the likelihood for SDEs with noise on several blocks, against
exact scores (`kinetic.analytic`): a full-rank G (k = 2, noise on both blocks, correlated) and
noise on blocks 0 and 2 only (k = 3)."""

import math

import numpy as np
import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.bench.solvers import gaussian_fit_w2
from kinetic.likelihood import _divergence, log_likelihood
from kinetic.metrics import sliced_wasserstein
from kinetic.sampling import sample, time_grid, tweedie_denoise
from kinetic.schedules import ConstantSchedule
from kinetic.solvers import get_solver
from kinetic.solvers.ei import kblock_plan
from kinetic.solvers.sscs import reversed_linear_part


def full_noise():
    """k = 2, full-rank G: noise on both blocks, correlated; mixes to its prior by T (tau_T = 10)."""
    return kn.LinearSDE([[-0.5, 1.0], [-1.0, -1.5]], [[0.7, 0.0], [0.4, 1.1]], aux_cov=0.2,
                        schedule=ConstantSchedule(10.0), name="full")


def noise_0_2():
    """k = 3, noise on blocks 0 and 2 only (tau_T = 20, slowest mean rate 0.39)."""
    A = [[-0.3, 1.0, 0.0], [-1.0, -0.2, 0.8], [0.0, -0.8, -1.2]]
    G = [[0.5, 0.0, 0.0], [0.0, 0.0, 0.0], [0.3, 0.0, 1.0]]
    return kn.LinearSDE(A, G, aux_cov=0.1, schedule=ConstantSchedule(20.0), name="n02")


def _psld():
    """PSLD with its defaults: noise on x and m."""
    return kn.psld()


SDES = [pytest.param(full_noise, id="full"), pytest.param(noise_0_2, id="n02"), pytest.param(_psld, id="psld")]


def zero_noise(shape, dtype, device):
    return torch.zeros(shape, dtype=dtype, device=device)


def test_noised_blocks_of_the_test_sdes():
    assert full_noise().noised_blocks == (0, 1) and noise_0_2().noised_blocks == (0, 2)
    assert full_noise().mixing_rate() * 10.0 > 9.0 and noise_0_2().mixing_rate() * 20.0 > 7.0


# ------------------------------------------------------------------ exactness and the data prediction
@pytest.mark.parametrize("make", SDES)
def test_ei_deterministic_exact_for_gaussian_data(make):
    """Deterministic ei is exact for isotropic Gaussian data of matched data_std at any step count,
    with several noised blocks: against a tight adaptive solution of the probability-flow ODE."""
    sde = make()
    var = 0.3
    data = GaussianData(torch.tensor([1.0, -0.5, 0.3]), var)
    sf = data.score_fn(sde)
    ref, _ = sample(sde, sf, (3, 3), solver="ode", rtol=1e-9, atol=1e-9, generator=torch.Generator().manual_seed(0),
                    return_state=True, dtype=torch.float64)
    for steps, grid, order in [(1, "uniform", 1), (3, "quadratic", 2), (9, "logsnr", 3)]:
        z, nfe = sample(sde, sf, (3, 3), solver="ei", gls_steps=0, steps=steps, grid=grid, multistep=order,
                        data_std=math.sqrt(var), dtype=torch.float64,
                        generator=torch.Generator().manual_seed(0), return_state=True)
        assert nfe == steps
        assert float((z - ref).abs().max() / ref.abs().max()) < 1e-6, (steps, order)


@pytest.mark.parametrize("make", SDES)
def test_ei_data_prediction_is_the_data_estimate(make):
    """With data_std = 0 the data prediction of ei's plan is `Coefficients.data_estimate` (least
    squares in the metric D_NN), for any score, at every grid node."""
    sde = make()
    ts = time_grid(sde, 5, 1e-3, "quadratic")
    p = kblock_plan(sde, ts, multistep=1, data_std=0.0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4, sde.order, 3, generator=g, dtype=torch.float64)
    s = torch.randn(4, len(sde.noised_blocks), 3, generator=g, dtype=torch.float64)
    for i in range(5):
        co = sde.coefficients(ts[i])
        got = torch.einsum("m,bmd->bd", p.score_coef[i], s) + torch.einsum("j,bjd->bd", p.state_coef[i], z)
        torch.testing.assert_close(got, co.data_estimate(z, s), rtol=1e-9, atol=1e-9)


@pytest.mark.slow
@pytest.mark.parametrize("make", SDES[:2])
def test_ei_stochastic_exact_for_gaussian_data(make):
    """eta = 1 (reverse SDE) with two steps gives the exact law at t_eps (moments within MC error)."""
    sde = make()
    var, mean = 0.3, torch.tensor([1.0, -0.5, 0.3], dtype=torch.float64)
    data = GaussianData(mean, var)
    z, _ = sample(sde, data.score_fn(sde), (40_000, 3), solver="ei", steps=2, eta=1.0, data_std=math.sqrt(var),
                  generator=torch.Generator().manual_seed(1), return_state=True)
    t = torch.tensor(1e-3, dtype=torch.float64)
    c = sde.transition(0.0, t)[:, 0]
    C = var * torch.outer(c, c) + sde.covariance(t)
    zc = z - c[None, :, None] * mean[None, None, :]
    emp = torch.einsum("bid,bjd->ij", zc, zc) / (zc.shape[0] * 3)
    corr_err = (emp - C).abs() / torch.outer(C.diagonal().sqrt(), C.diagonal().sqrt())
    assert float(corr_err.max()) < 0.03
    assert float((z[:, 0].mean(0) - c[0] * mean).abs().max()) < 0.02


@pytest.mark.parametrize("make", SDES)
def test_tweedie_denoise_is_the_posterior_mean(make):
    """E[z_0 | z_t] from the noised-block score equals Gaussian conditioning of the dense joint law."""
    sde = make()
    data = GaussianData(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]))
    k, d, t = sde.order, 2, 0.05
    z, _ = sde.perturb(data.sample(4, torch.Generator().manual_seed(0)), t, torch.Generator().manual_seed(1))
    got = tweedie_denoise(sde, data.score_fn(sde), z, t)
    Phi, S0, I = sde.transition(0.0, t), sde.initial_cov, torch.eye(d, dtype=torch.float64)
    cov0 = torch.kron(S0, I)
    cov0[:d, :d] = data.cov
    m0 = torch.zeros(k * d, dtype=torch.float64)
    m0[:d] = data.mean
    P = torch.kron(Phi, I)
    covz = P @ cov0 @ P.T + torch.kron(sde.covariance(t) - Phi @ S0 @ Phi.T, I)
    ref = m0 + (cov0 @ P.T @ torch.linalg.solve(covz, (z.reshape(4, -1) - P @ m0).T)).T
    torch.testing.assert_close(got.reshape(4, -1), ref, rtol=1e-7, atol=1e-7)


@pytest.mark.parametrize("make", SDES)
def test_reversed_linear_part(make):
    """A_rev = -A - D S_inf^-1 is the drift of the reversed stationary process (same stationary law),
    and the split drift beta A_rev z + beta D[:, N] (s_N + kappa z) is the reverse drift."""
    sde = make()
    A_rev, kappa = reversed_linear_part(sde)
    S = sde.stationary_cov
    assert bool((torch.linalg.eigvals(A_rev).real < 0).all())
    torch.testing.assert_close(A_rev @ S + S @ A_rev.T + sde.noise_matrix, torch.zeros_like(S), atol=1e-10, rtol=0)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, sde.order, 2, generator=g, dtype=torch.float64)
    s = torch.randn(*sde.score_shape(3, (2,)), generator=g, dtype=torch.float64).reshape(3, -1, 2)
    Dn = sde.noise_matrix[:, list(sde.noised_blocks)]
    split = torch.einsum("ij,bjd->bid", A_rev, z) + torch.einsum("im,bmd->bid", Dn, s + torch.einsum("mj,bjd->bmd", kappa, z))
    direct = -torch.einsum("ij,bjd->bid", sde.drift_matrix, z) + torch.einsum("im,bmd->bid", Dn, s)
    torch.testing.assert_close(split, direct, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ orders and convergence
COARSE, FINE = (32, 64, 128, 256), (128, 256, 512, 1024)
ORDER_CASES = [("full", "em", {}, COARSE), ("full", "sscs", {}, COARSE), ("full", "pc", {}, COARSE),
               ("full", "ei", {"multistep": 2, "corrector": False}, FINE), ("n02", "lie_trotter", {}, COARSE), ("n02", "ei", {"multistep": 1, "corrector": False}, COARSE),
               ("n02", "ei", {"multistep": 3, "corrector": False}, COARSE)]


@pytest.mark.parametrize("sde_name,name,opts,Ns", ORDER_CASES, ids=[f"{a}-{b}-{c}" for a, b, c, _ in ORDER_CASES])
def test_convergence_order(sde_name, name, opts, Ns):
    """Mean paths (zero noise) of the grid solvers converge at their declared order (ei order 2 on
    the full-noise SDE is pre-asymptotic below ~100 steps: measured on finer grids)."""
    sde = {"full": full_noise, "n02": noise_0_2}[sde_name]()
    data = GaussianData(torch.tensor([1.0, -0.7]), torch.tensor([0.3, 0.6]))
    sf = data.score_fn(sde)
    solver = get_solver(name, **({**opts, "data_std": 0.0} if name == "ei" else opts))
    z0 = torch.full((1, sde.order, 2), 0.3, dtype=torch.float64)
    outs = [solver.run(sde, sf, z0, time_grid(sde, N, 1e-2, "uniform"), noise_sampler=zero_noise)[0] for N in Ns]
    errs = [float((a - b).abs().max()) for a, b in zip(outs[:-1], outs[1:])]
    slope = -np.polyfit(np.log(Ns[:-1]), np.log(errs), 1)[0]
    assert abs(slope - solver.convergence_order) < 0.35, (errs, slope, solver.convergence_order)


# (solver, options, steps for full, steps for n02): Euler on n02 (stiffer) needs ~800 steps for W2 < 0.06
GAUSS_RUNS = [("em", {}, 200, 800), ("pc", {}, 200, 2), ("sscs", {}, 200, 200), ("lie_trotter", {}, 200, 200),
              ("ei", {}, 20, 20), ("ei", {"eta": 1.0, "multistep": 2}, 50, 50), ("ode", {}, 1, 1), ("torchsde", {}, 200, 800)]


@pytest.mark.parametrize("make", SDES[:2])
@pytest.mark.parametrize("name,opts,steps_full,steps_n02", GAUSS_RUNS, ids=[f"{a}{b or ''}" for a, b, _, _ in GAUSS_RUNS])
def test_every_sampler_reaches_gaussian_data(make, name, opts, steps_full, steps_n02):
    """Every sampler with the exact score: the Gaussian fitted to n = 4000 samples is within W2 0.06
    of the data law (Monte Carlo floor ~0.02); pc only where every block is noised."""
    sde = make()
    data = GaussianData(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]))
    sf = data.score_fn(sde)
    if name == "pc" and len(sde.noised_blocks) < sde.order:
        with pytest.raises(ValueError, match=r"pc needs noise on every block \(noised blocks \(0, 2\) of 3\)"):
            sample(sde, sf, (8, 2), solver="pc", steps=2)
        return
    steps = steps_full if sde.name == "full" else steps_n02
    x = sample(sde, sf, (4000, 2), solver=name, steps=steps, generator=torch.Generator().manual_seed(2), **opts)
    assert gaussian_fit_w2(x, data.mean, data.cov) < 0.06


@pytest.mark.slow
@pytest.mark.parametrize("make", SDES)
@pytest.mark.parametrize("name,opts,steps", [("em", {}, 200), ("ei", {}, 20), ("sscs", {}, 100)], ids=["em", "ei", "sscs"])
def test_mixture_reaches_the_monte_carlo_floor(make, name, opts, steps):
    """Exact-score sampling of a 2-D mixture of 8 Gaussians: the sliced W2 to fresh data is within
    1.5x of the floor (two fresh data samples) + 0.01. Dropping the score of one noised block
    (what a last-block-only implementation does) gives 0.33 or more here."""
    sde = make()
    mix = GaussianMixture.ring(8, 1.41, 0.15)
    n = 2000
    fresh = mix.sample(n, torch.Generator().manual_seed(6))
    floor = np.mean([sliced_wasserstein(mix.sample(n, torch.Generator().manual_seed(7 + r)), fresh) for r in range(3)])
    x = sample(sde, mix.score_fn(sde), (n, 2), solver=name, steps=steps, generator=torch.Generator().manual_seed(5), **opts)
    assert sliced_wasserstein(x, fresh) < 1.5 * floor + 0.01


# ------------------------------------------------------------------ likelihood
@pytest.mark.parametrize("make", SDES)
def test_log_likelihood_exact_for_gaussian_data(make):
    """With the exact score the flow maps p(x) q(v0) exactly, so every draw of the auxiliaries gives
    log p(x): per-point error < 0.01 nats (measured <= 0.007)."""
    sde = make()
    data = GaussianData(torch.tensor([0.5, -0.3]), torch.tensor([[0.6, 0.2], [0.2, 0.4]]))
    x = data.sample(12, torch.Generator().manual_seed(0))
    # The flow starts at t_min, where the auxiliaries have already diffused: PSLD adds M nu ~ 1 of
    # variance per unit tau to m0 ~ N(0, 0.01), so at t_min = 1e-5 (tau = 8e-5) single points move by
    # ~0.02-0.04 nats (the error falls linearly with t_min; measured 0.022 at 1e-5, 0.0055 at 1e-6).
    t_min = 1e-6 if sde.name == "psld" else 1e-5
    lp = log_likelihood(sde, data.score_fn(sde), x, generator=torch.Generator().manual_seed(1), t_min=t_min)
    assert float((lp - data.log_prob(x)).abs().max()) < 0.01


def test_divergence_weights_the_noised_jacobian_by_D_NN():
    """tr((D_NN kron I) d s_N / d z_N): exact and Hutchinson (many probes) against the dense Jacobian."""
    sde = full_noise()
    data = GaussianData(torch.tensor([0.5, -0.3]), torch.tensor([[0.6, 0.2], [0.2, 0.4]]))
    sf = data.score_fn(sde)
    B, d, m = 3, 2, 2
    z = torch.randn(B, 2, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((B,), 0.3, dtype=torch.float64)
    J = torch.autograd.functional.jacobian(lambda zz: sf(zz, t).reshape(B, m * d).sum(0), z).reshape(m * d, B, m * d)
    dense = torch.einsum("pq,qbp->b", torch.kron(sde.noise_block, torch.eye(d, dtype=torch.float64)), J)
    zN = z.clone().requires_grad_(True)
    exact = _divergence(sf(zN, t), zN, sde.noise_block, None)
    torch.testing.assert_close(exact, dense, rtol=1e-10, atol=1e-10)
    probes = torch.randint(0, 2, (4096, B, m, d), generator=torch.Generator().manual_seed(1)).double() * 2 - 1
    hut = _divergence(sf(zN, t), zN, sde.noise_block, probes)
    assert float((hut - dense).abs().max()) < 0.05 * float(dense.abs().max())


def test_wrong_score_shape_for_two_noised_blocks():
    sde = noise_0_2()
    x = torch.zeros(4, 2, dtype=torch.float64)
    msg = r"score_fn returned shape \(4, 2\); it must return the scores of the 2 noised blocks \(0, 2\).*\(4, 2, 2\)"
    with pytest.raises(ValueError, match=msg):
        sample(sde, lambda z, t: z[:, 0], (4, 2), solver="em", steps=2)
    with pytest.raises(ValueError, match=msg):
        log_likelihood(sde, lambda z, t: z[:, 0], x)
