import math

import numpy as np
import pytest
import torch

import kinetic as kn
import kinetic.solvers.sscs as sscs_mod
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.bench.solvers import gaussian_fit_w2, sliced_wasserstein
from kinetic.grids import GRIDS, MAX_STEPS
from kinetic.sampling import CheckedScore, default_grid, sample, sample_batches, time_grid, tweedie_denoise
from kinetic.solvers import SOLVERS, Solver, get_solver
from kinetic.solvers.adaptive import IntegrationError


def _gauss2():
    return GaussianData(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]))


# ------------------------------------------------------------------ registry and validation
def test_registry():
    assert {"em", "pc", "sscs", "lie_trotter", "ei", "gls", "ode", "torchsde"} <= set(SOLVERS)
    for name, cls in SOLVERS.items():
        assert issubclass(cls, Solver) and cls.name == name
        s = cls()
        assert isinstance(s.convergence_order, int) and s.convergence_order >= 1 and isinstance(s.stochastic, bool)
    assert get_solver("ei", multistep=3, corrector=False).convergence_order == 3 and get_solver("ei", multistep=3).convergence_order == 4
    assert get_solver("ei", eta=1.0).convergence_order == 3  # the corrector is on by default only for eta = 0
    assert get_solver("ei", eta=1.0).stochastic and not get_solver("ei").stochastic
    with pytest.raises(ValueError, match="unknown option.*stochastic"):  # eta = 1 is the stochastic sampler
        get_solver("ei", stochastic=True)
    assert get_solver("torchsde", method="srk").convergence_order == 2
    # convergence_order and stochastic are read from each instance's options; the classes are never changed
    assert get_solver("ei", multistep=1, corrector=False).convergence_order == 1 and SOLVERS["ei"]().convergence_order == 4
    assert not get_solver("em", probability_flow=True).stochastic and SOLVERS["em"]().stochastic
    for name, cls in SOLVERS.items():
        assert cls.default_grid in GRIDS and default_grid(name) == cls.default_grid
    assert default_grid("torchsde") == "uniform"


def test_bad_inputs():
    sde, data = kn.vp(), _gauss2()
    sf = data.score_fn(sde)
    with pytest.raises(ValueError, match="unknown solver 'rk4'.*valid solvers: .*ei.*em"):
        sample(sde, sf, (4, 2), solver="rk4")
    with pytest.raises(ValueError, match="steps"):
        sample(sde, sf, (4, 2), steps=0)
    with pytest.raises(ValueError, match="grid must be one of"):
        sample(sde, sf, (4, 2), grid="cosine")
    with pytest.raises(ValueError, match="strictly decreasing"):
        sample(sde, sf, (4, 2), grid=torch.tensor([1.0, 0.5, 0.6, 0.01]))
    with pytest.raises(ValueError, match="first time must be T"):
        sample(sde, sf, (4, 2), grid=torch.tensor([0.9, 0.5, 0.01]))
    with pytest.raises(ValueError, match="t_eps"):
        sample(sde, sf, (4, 2), t_eps=0.0)
    with pytest.raises(ValueError, match="unknown option"):
        sample(sde, sf, (4, 2), solver="em", order=2)
    with pytest.raises(ValueError, match="shape"):
        sample(sde, lambda z, t: z, (4, 2), solver="em", steps=2)
    with pytest.raises(ValueError, match="non-finite"):
        sample(sde, lambda z, t: torch.full_like(z[:, 0], float("nan")), (4, 2), solver="em", steps=2)
    with pytest.raises(ValueError, match=r"pc needs noise on every block \(noised blocks \(1,\) of 2\)"):
        sample(kn.cld(), data.score_fn(kn.cld()), (4, 2), solver="pc")
    with pytest.raises(ValueError, match="uniform"):
        sample(sde, sf, (4, 2), solver="torchsde", grid="quadratic", steps=4)
    with pytest.raises(ValueError, match="ei: multistep must be 1, 2, 3 or 4"):
        sample(sde, sf, (4, 2), solver="ei", multistep=5)
    with pytest.raises(ValueError, match="corrector must be True, False or None"):
        sample(sde, sf, (4, 2), solver="ei", corrector=1)
    with pytest.raises(ValueError, match="shape must be"):
        sample(sde, sf, (4,))
    with pytest.raises(TypeError, match="LinearSDE"):
        sample("vp", sf, (4, 2))


@pytest.mark.parametrize("grid", ["uniform", "quadratic", "logsnr", "band"])
@pytest.mark.parametrize("sde", [kn.vp(), kn.cld(), kn.langevin(4), kn.ve()], ids=lambda s: s.name)
def test_time_grids(grid, sde):
    ts = time_grid(sde, 12, 1e-3, grid)
    assert ts.dtype == torch.float64 and ts.shape == (13,)
    assert float(ts[0]) == sde.T and float(ts[-1]) == 1e-3
    assert bool((ts[1:] < ts[:-1]).all())
    if grid == "quadratic":
        torch.testing.assert_close(ts.sqrt(), torch.linspace(math.sqrt(sde.T), math.sqrt(1e-3), 13, dtype=torch.float64))
    if grid == "logsnr":
        phi = sde.transition(torch.zeros_like(ts), ts)[:, 0, 0]
        lam = 0.5 * torch.log(sde.covariance(ts)[:, 0, 0]) - torch.log(phi)
        steps = lam[:-1] - lam[1:]
        assert float(steps.std() / steps.mean()) < 1e-3
    if grid == "band":  # equal steps of x(sigma) = int h dsigma / sqrt((h^2 + sigma^2)(sigma^2 + l^2)) (scipy quad)
        from scipy.integrate import quad

        from kinetic.grids import BAND

        lo, hi = BAND
        sig = sde.coefficients(ts).sigma_tilde.tolist()
        steps = torch.tensor([quad(lambda u: hi / math.sqrt((hi**2 + u**2) * (u**2 + lo**2)), b, a, epsrel=1e-10)[0]
                              for a, b in zip(sig[:-1], sig[1:])])
        assert float(steps.std() / steps.mean()) < 2e-3, steps


def test_outputs_callback_and_dtype():
    sde, data = kn.cld(), _gauss2()
    seen = []
    z, nfe = sample(sde, data.score_fn(sde), (5, 2), solver="sscs", steps=7, callback=seen.append, return_state=True)
    assert z.shape == (5, 2, 2) and nfe == 7 and z.dtype == torch.float32  # the default state: float32
    z64 = sample(sde, data.score_fn(sde), (5, 2), solver="sscs", steps=7, dtype=torch.float64)
    assert z64.dtype == torch.float64
    assert [d["step"] for d in seen] == list(range(7)) and seen[-1]["t"] == pytest.approx(1e-3)
    x = sample(sde, data.score_fn(sde), (5, 2), solver="ei", steps=3, dtype=torch.float32, denoise=True)
    assert x.shape == (5, 2) and x.dtype == torch.float32
    _, nfe = sample(sde, data.score_fn(sde), (5, 2), solver="ei", steps=3, denoise=True, return_state=True)
    assert nfe == 4
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = sample(sde, data.score_fn(sde), (5, 2), solver="lie_trotter", steps=5, generator=g1)
    b = sample(sde, data.score_fn(sde), (5, 2), solver="lie_trotter", steps=5, generator=g2)
    assert torch.equal(a, b)


# ------------------------------------------------------------------ exactness
@pytest.mark.parametrize(
    "sde", [kn.vp(), kn.ve(), kn.cld(), kn.hold(), pytest.param(kn.langevin(4), marks=pytest.mark.slow)], ids=lambda s: s.name
)
def test_ei_deterministic_exact_for_gaussian_data(sde):
    """One-step (and any-step) deterministic ei is exact for isotropic Gaussian data when data_std
    matches: compared with a tight adaptive DOPRI solution of the probability-flow ODE."""
    var = 0.3
    data = GaussianData(torch.tensor([1.0, -0.5, 0.3]), var)
    sf = data.score_fn(sde)
    ref, _ = sample(sde, sf, (2, 3), solver="ode", rtol=1e-9, atol=1e-9, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(0), return_state=True)
    cases = [(1, "uniform", {"multistep": 1}), (3, "quadratic", {"multistep": 2}), (17, "logsnr", {"multistep": 3}),
             (5, "quadratic", {"multistep": 3, "corrector": True, "poly": "logsigma"})]
    for steps, grid, opts in cases:
        z, nfe = sample(sde, sf, (2, 3), solver="ei", gls_steps=0, steps=steps, grid=grid, data_std=math.sqrt(var),
                        dtype=torch.float64, generator=torch.Generator().manual_seed(0), return_state=True, **opts)
        assert nfe == steps
        err = float((z - ref).abs().max() / ref.abs().max())
        assert err < 1e-6, (steps, err)


def test_ei_exact_for_point_mass_with_data_std_zero():
    """data_std=0 is gDDIM's R_t: exact for a point mass (here a very narrow Gaussian)."""
    sde = kn.cld()
    data = GaussianData(torch.tensor([0.7, -0.2]), 1e-10)
    ref, _ = sample(sde, data.score_fn(sde), (6, 2), solver="ode", rtol=1e-10, atol=1e-10, t_eps=1e-2,
                    dtype=torch.float64, generator=torch.Generator().manual_seed(1), return_state=True)
    got, _ = sample(sde, data.score_fn(sde), (6, 2), solver="ei", gls_steps=0, steps=2, data_std=0.0, multistep=1, t_eps=1e-2,
                    dtype=torch.float64, generator=torch.Generator().manual_seed(1), return_state=True)
    assert float((got - ref).abs().max()) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("sde", [kn.vp(), kn.cld(), kn.langevin(4)], ids=lambda s: s.name)
def test_ei_stochastic_exact_for_gaussian_data(sde):
    """eta = 1 (reverse SDE) with two steps gives the exact law at t_eps (moments within MC error)."""
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


def test_tweedie_denoise_is_the_posterior_mean():
    """E[z_0 | z_t] from the last-block score equals Gaussian conditioning of the dense joint law."""
    data = _gauss2()
    for sde in (kn.vp(), kn.cld(), kn.hold()):
        k, d, t = sde.order, 2, 0.05
        z, _ = sde.perturb(data.sample(4, torch.Generator().manual_seed(0)), t, torch.Generator().manual_seed(1))
        got = tweedie_denoise(sde, data.score_fn(sde), z, t)
        Phi = sde.transition(0.0, t)
        S0 = sde.initial_cov
        I = torch.eye(d, dtype=torch.float64)
        cov0 = torch.kron(S0, I)
        cov0[:d, :d] = data.cov
        m0 = torch.zeros(k * d, dtype=torch.float64)
        m0[:d] = data.mean
        Q = sde.covariance(t) - Phi @ S0 @ Phi.T
        P = torch.kron(Phi, I)
        covz = P @ cov0 @ P.T + torch.kron(Q, I)
        ref = m0 + (cov0 @ P.T @ torch.linalg.solve(covz, (z.reshape(4, -1) - P @ m0).T)).T
        torch.testing.assert_close(got.reshape(4, -1), ref, rtol=1e-7, atol=1e-7)


# ------------------------------------------------------------------ SSCS = Dockhorn et al.
def _sscs_transcription(z0, score, ts, noise_gen, beta=4.0, m_inv=4.0):
    """Dockhorn et al. 2022 (CLD), their symmetric splitting step (SSCS), written out for CLD (M^-1 = 4, Gamma = 2 sqrt(M) = 1) with its closed forms."""
    M = 1.0 / m_inv
    Gam = 2.0 * math.sqrt(M)
    x, v = z0[:, 0].clone(), z0[:, 1].clone()

    def half(x, v, Bb):
        e = math.exp(-2 * Bb / Gam)
        xm = e * ((1 + 2 * Bb / Gam) * x - 4 * Bb / Gam**2 * v)
        vm = e * (Bb * x + (1 - 2 * Bb / Gam) * v)
        e4 = math.exp(-4 * Bb / Gam)
        sxx = e4 * (math.exp(4 * Bb / Gam) - 1 - 4 * Bb / Gam - 8 * Bb**2 / Gam**2)
        sxv = -e4 * 4 * Bb**2 / Gam
        svv = e4 * (Gam**2 / 4 * (math.exp(4 * Bb / Gam) - 1) + Gam * Bb - 2 * Bb**2)
        L = torch.linalg.cholesky(torch.tensor([[sxx, sxv], [sxv, svv]], dtype=torch.float64))
        xi = torch.randn((x.shape[0], 2, *x.shape[1:]), generator=noise_gen, dtype=torch.float64)
        return xm + L[0, 0] * xi[:, 0], vm + L[1, 0] * xi[:, 0] + L[1, 1] * xi[:, 1]

    for i in range(len(ts) - 1):
        delta = float(ts[i] - ts[i + 1])
        Bb = beta * delta / 2
        x, v = half(x, v, Bb)
        s = score(torch.stack([x, v], 1), torch.full((x.shape[0],), float(ts[i]), dtype=torch.float64))
        v = v + delta * 2 * Gam * beta * (s + m_inv * v)
        x, v = half(x, v, Bb)
    return torch.stack([x, v], 1)


def test_sscs_matches_dockhorn_transcription():
    sde = kn.cld()
    data = GaussianMixture.ring(8, 1.41, 0.1)
    sf = data.score_fn(sde)
    ts = time_grid(sde, 13, 1e-3, "quadratic")
    z0 = sde.prior_sample((50, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ref = _sscs_transcription(z0, sf, ts, torch.Generator().manual_seed(7))
    got, nfe = get_solver("sscs").run(sde, sf, z0, ts, generator=torch.Generator().manual_seed(7))
    assert nfe == 13
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-9)


def test_sscs_reversed_linear_part():
    """A_rev is the drift of the reversed stationary process: Hurwitz, same stationary law."""
    for sde in (kn.vp(), kn.cld(), kn.hold(), kn.langevin(5)):
        A_rev, kappa = sscs_mod.reversed_linear_part(sde)
        assert bool((torch.linalg.eigvals(A_rev).real < 0).all())
        S = sde.stationary_cov
        torch.testing.assert_close(A_rev @ S + S @ A_rev.T + sde.noise_matrix, torch.zeros_like(S), atol=1e-10, rtol=0)
    A_rev, kappa = sscs_mod.reversed_linear_part(kn.cld())
    torch.testing.assert_close(A_rev, torch.tensor([[0.0, -4.0], [1.0, -4.0]], dtype=torch.float64))
    torch.testing.assert_close(kappa, torch.tensor([0.0, 4.0], dtype=torch.float64))


# ------------------------------------------------------------------ convergence orders
def zero_noise(shape, dtype, device):
    """A noise sampler of zeros: with Gaussian data (affine score) a stochastic grid solver's output
    is then the exact mean path of its scheme, so its error against a fine grid measures the weak
    order of the drift discretisation without Monte Carlo noise."""
    return torch.zeros(shape, dtype=dtype, device=device)


ORDER_CASES = [
    ("vp", "em", {}), ("vp", "em", {"probability_flow": True}), ("vp", "pc", {}), ("vp", "sscs", {}),
    ("vp", "lie_trotter", {}), ("vp", "ei", {"multistep": 1, "corrector": False}), ("vp", "ei", {"multistep": 2, "corrector": False}), ("vp", "ei", {"multistep": 3, "corrector": False}),
    ("cld", "em", {}), ("cld", "sscs", {}), ("cld", "lie_trotter", {}), ("cld", "ei", {"multistep": 1, "corrector": False}),
    ("cld", "ei", {"multistep": 2, "corrector": False}), ("vp", "ei", {"multistep": 1, "corrector": True}),
    ("vp", "ei", {"multistep": 3, "corrector": True}),
]


@pytest.mark.parametrize("sde_name,name,opts", ORDER_CASES, ids=[f"{a}-{b}-{c}" for a, b, c in ORDER_CASES])
def test_convergence_order(sde_name, name, opts):
    sde = {"vp": kn.vp, "cld": kn.cld}[sde_name]()
    data = GaussianData(torch.tensor([1.0, -0.7]), torch.tensor([0.3, 0.6]))
    sf = data.score_fn(sde)
    opts = {**opts, "data_std": 0.0} if name == "ei" else opts  # not exact for this data: a real test
    solver = get_solver(name, **opts)
    z0 = torch.full((1, sde.order, 2), 0.3, dtype=torch.float64)

    def run(N):
        return solver.run(sde, sf, z0, time_grid(sde, N, 1e-2, "uniform"), noise_sampler=zero_noise)[0]

    Ns = [32, 64, 128, 256]
    outs = [run(N) for N in Ns]
    errs = [float((a - b).abs().max()) for a, b in zip(outs[:-1], outs[1:])]  # ~ C N^-order
    slope = -np.polyfit(np.log(Ns[:-1]), np.log(errs), 1)[0]
    assert abs(slope - solver.convergence_order) < 0.35, (errs, slope, solver.convergence_order)


# ------------------------------------------------------------------ convergence to the data law
CONV = ["em", "sscs", "lie_trotter", "ei", "ode", "torchsde"]


@pytest.mark.parametrize("sde", [kn.vp(), kn.cld()], ids=lambda s: s.name)
@pytest.mark.parametrize("name", CONV + ["pc"])
def test_gaussian_error_decreases_with_steps(sde, name):
    if name == "pc" and sde.order > 1:
        pytest.skip("pc is order 1 only")
    data = GaussianData(torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]))
    sf = data.score_fn(sde)
    errs = []
    for steps in (8, 200):
        x = sample(sde, sf, (6000, 2), solver=name, steps=steps, grid="uniform", generator=torch.Generator().manual_seed(2))
        errs.append(gaussian_fit_w2(x, data.mean, data.cov))
    assert errs[1] < 0.06, errs  # MC floor at n = 6000 is ~0.02
    if name != "ode":  # adaptive: steps is ignored
        assert errs[1] < errs[0] or errs[0] < 0.06, errs


@pytest.mark.slow
@pytest.mark.parametrize("sde", [kn.vp(), kn.cld(), kn.hold()], ids=lambda s: s.name)
@pytest.mark.parametrize("name", CONV)
def test_mixture_converges(sde, name):
    data = GaussianMixture.ring(8, 1.41, 0.15)
    n = 3000
    x = sample(sde, data.score_fn(sde), (n, 2), solver=name, steps=300, grid="uniform" if name == "torchsde" else "quadratic",
               generator=torch.Generator().manual_seed(5))
    fresh = data.sample(n, torch.Generator().manual_seed(6))
    floor = sliced_wasserstein(data.sample(n, torch.Generator().manual_seed(7)), fresh)
    assert sliced_wasserstein(x, fresh) < 2.5 * floor + 0.01


def test_checked_score_counts_and_checks_once():
    calls = []

    def f(z, t):
        calls.append(1)
        return z[:, -1]

    cs = CheckedScore(f, kn.cld())
    z = torch.zeros(3, 2, 2)
    cs(z, torch.zeros(3))
    cs(z, torch.zeros(3))
    assert cs.nfe == 2 and len(calls) == 2
    cs.raise_if_nonfinite()  # all finite: nothing to say
    # non-finite values are recorded on the device, not raised at the call; the one read names the first
    cs.step = 4
    cs(z.fill_(float("nan")), torch.full((3,), 0.25))
    cs.step = 5
    cs(z, torch.full((3,), 0.125))
    with pytest.raises(ValueError, match=r"non-finite values \(nan/inf\) at t = 0\.25 in step 4 \(evaluation 3\); its "
                       "input z was already non-finite"):
        cs.raise_if_nonfinite()


# ------------------------------------------------------------------ the loop: noise, callback, grid, bounds, batches
def test_noise_sampler_replaces_the_noise():
    """A noise_sampler receives (n, blocks, *D) shapes; zeros make a stochastic solver's output
    independent of the generator (no monkeypatching needed)."""
    sde, data = kn.cld(), _gauss2()
    sf = data.score_fn(sde)
    ts = time_grid(sde, 6, 1e-3, "quadratic")
    z0 = sde.prior_sample((5, 2), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for name in ("em", "sscs", "lie_trotter", "ei"):
        opts = {"eta": 1.0} if name == "ei" else {}
        shapes = []

        def zeros(shape, dtype, device):
            shapes.append(tuple(shape))
            return torch.zeros(shape, dtype=dtype, device=device)

        a, _ = get_solver(name, **opts).run(sde, sf, z0, ts, generator=torch.Generator().manual_seed(1), noise_sampler=zeros)
        b, _ = get_solver(name, **opts).run(sde, sf, z0, ts, generator=torch.Generator().manual_seed(2), noise_sampler=zeros)
        c, _ = get_solver(name, **opts).run(sde, sf, z0, ts, generator=torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and not torch.allclose(a, c)
        blocks = 1 if name == "em" else 2  # em: the noised block only; the others: the whole state
        assert shapes and all(sh == (5, blocks, 2) for sh in shapes)
    with pytest.raises(ValueError, match="torchsde draws its own Brownian motion"):
        sample(sde, sf, (4, 2), solver="torchsde", steps=2, noise_sampler=lambda *a: None)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_callback_has_one_shape_for_every_solver(name):
    sde = kn.vp()
    seen = []
    _, nfe = sample(sde, _gauss2().score_fn(sde), (3, 2), solver=name, steps=3, callback=seen.append, return_state=True)
    assert seen and all(set(d) == {"step", "t", "z", "nfe"} for d in seen)
    assert seen[-1]["nfe"] == nfe and seen[-1]["t"] == pytest.approx(1e-3) and seen[-1]["z"].shape == (3, 1, 2)


def test_default_grid_is_the_solvers():
    sde, data = kn.cld(), _gauss2()
    for name in ("gls", "ei", "em", "torchsde"):
        a = sample(sde, data.score_fn(sde), (4, 2), solver=name, steps=5, generator=torch.Generator().manual_seed(0))
        b = sample(sde, data.score_fn(sde), (4, 2), solver=name, steps=5, grid=default_grid(name),
                   generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b)


def test_steps_are_bounded():
    sde, data = kn.vp(), _gauss2()
    with pytest.raises(ValueError, match=rf"steps must be at most {MAX_STEPS}.*got 100000000"):
        sample(sde, data.score_fn(sde), (4, 2), steps=100_000_000)
    with pytest.raises(ValueError, match=rf"grid: at most {MAX_STEPS} steps"):
        sample(sde, data.score_fn(sde), (4, 2), grid=torch.linspace(1.0, 1e-3, MAX_STEPS + 2, dtype=torch.float64))


def test_batches_are_deterministic_and_complete():
    sde, data = kn.cld(), _gauss2()
    sf = data.score_fn(sde)
    kw = dict(solver="sscs", steps=4, batch_size=4)
    a = sample(sde, sf, (10, 2), generator=torch.Generator().manual_seed(3), **kw)
    b = sample(sde, sf, (10, 2), generator=torch.Generator().manual_seed(3), **kw)
    parts = list(sample_batches(sde, sf, (10, 2), generator=torch.Generator().manual_seed(3), **kw))
    assert a.shape == (10, 2) and torch.equal(a, b)
    assert [p.shape[0] for p in parts] == [4, 4, 2] and torch.equal(torch.cat(parts), a)
    seen = []
    z, nfe = sample(sde, sf, (10, 2), return_state=True, denoise=True, callback=seen.append,
                    generator=torch.Generator().manual_seed(3), **kw)
    assert z.shape == (10, 2, 2) and nfe == 5 and len(seen) == 3 * 5
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        sample(sde, sf, (10, 2), batch_size=0)


def test_batched_sampling_has_the_data_law():
    sde, data = kn.vp(), _gauss2()
    x = sample(sde, data.score_fn(sde), (6000, 2), steps=20, batch_size=1500, generator=torch.Generator().manual_seed(2))
    assert gaussian_fit_w2(x, data.mean, data.cov) < 0.06  # MC floor ~0.02 at n = 6000


def test_ode_sampler_errors_are_clear():
    sde, data = kn.vp(), _gauss2()
    with pytest.raises(IntegrationError, match=r"ode sampler: more than max_steps = 3 adaptive steps"):
        sample(sde, data.score_fn(sde), (3, 2), solver="ode", max_steps=3)

    def nan_late(z, t):
        return -z[:, -1] * (float("nan") if float(t[0]) < 0.5 else 1.0)

    with pytest.raises(ValueError, match=r"score_fn returned non-finite values \(nan/inf\) at t = 0\.[0-4]"):
        sample(sde, nan_late, (3, 2), solver="ode")
    with pytest.raises(ValueError, match=r"score_fn must return a torch.Tensor of shape \(3, 2\), got list"):
        sample(sde, lambda z, t: [z[:, -1]], (3, 2), steps=2)
    with pytest.raises(ValueError, match="produced non-finite values"):
        sample(sde, nan_late, (3, 2), solver="em", steps=4)


@pytest.mark.parametrize("sde", [kn.cld(), kn.hold()], ids=lambda s: s.name)
def test_default_sampler_10_nfe_follows_the_k_block_flow(sde):
    """kn.sample's default at 10 NFE (more than `default_gls_steps` for CLD and HOLD: ei order 3 + corrector
    on the band grid) follows the exact probability-flow map of its prior draw on a 2-D mixture (an
    adaptive DOPRI reference): within 0.05, where ei order 3 on the quadratic grid without the corrector
    (the earlier default) is 0.23 (CLD) and 0.56 (HOLD) away."""
    data = GaussianMixture([0.6, 0.4], [[-1.0, 0.5], [1.0, -0.5]], [0.15, 0.3])
    sf = data.score_fn(sde)
    ref, _ = sample(sde, sf, (64, 2), solver="ode", rtol=1e-7, atol=1e-7, generator=torch.Generator().manual_seed(0),
                    return_state=True, dtype=torch.float64)
    z, nfe = sample(sde, sf, (64, 2), steps=10, generator=torch.Generator().manual_seed(0), return_state=True,
                    dtype=torch.float64)
    assert nfe == 10
    err = float((z[:, 0] - ref[:, 0]).pow(2).sum(-1).mean().sqrt())
    assert err < 0.05, err


# ------------------------------------------------------------------ the solver contract
def test_state_dtype_follows_the_network():
    """kn.sample's state: float32 by default, the network's dtype when score_fn is a module's method,
    float32 for a bf16 network, that of ``known`` without a network, and ``dtype=`` above all."""
    from kinetic.sampling import state_dtype

    sde = kn.vp()

    class Net(torch.nn.Module):
        def __init__(self, dtype):
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones((), dtype=dtype))

        def score(self, z, t):
            return (-z[:, 0] * self.w).to(z.dtype)

    assert sample(sde, lambda z, t: -z[:, 0], (3, 2), steps=2).dtype == torch.float32
    assert sample(sde, Net(torch.float64).score, (3, 2), steps=2).dtype == torch.float64
    assert sample(sde, Net(torch.bfloat16).score, (3, 2), steps=2).dtype == torch.float32
    assert sample(sde, Net(torch.float64).score, (3, 2), steps=2, dtype=torch.float32).dtype == torch.float32
    assert state_dtype(None, lambda z, t: z, torch.zeros(2, dtype=torch.float64)) == torch.float64
    assert state_dtype(torch.float16, Net(torch.float64).score) == torch.float16
    with pytest.raises(TypeError, match="dtype must be a floating torch.dtype or None"):
        sample(sde, lambda z, t: -z[:, 0], (3, 2), steps=2, dtype=torch.int64)


def test_options_are_checked_by_each_solvers_schema():
    """One line naming the solver, the option and what was expected."""
    cases = [("pc", {"snr": -1}, "pc: snr must be a finite number >= 0, got -1"),
             ("pc", {"n_corrector": 1.5}, "pc: n_corrector must be an integer >= 0, got 1.5"),
             ("sscs", {"score_time": "end"}, "sscs: score_time must be 'start', 'mid', got 'end'"),
             ("ode", {"rtol": 0}, "ode: rtol must be a finite number > 0, got 0"),
             ("ode", {"max_steps": True}, "ode: max_steps must be an integer >= 1, got True"),
             ("torchsde", {"method": "rk4"}, "torchsde: method must be 'euler'"),
             ("em", {"probability_flow": 1}, "em: probability_flow must be True or False, got 1"),
             ("ei", {"multistep": True}, "ei: multistep must be 1, 2, 3 or 4 or None"),
             ("ei", {"ds": 2.0}, r"ei: ds must be a finite number in \(0, 1\], got 2.0"),
             ("gls", {"data_std": float("nan")}, "gls: data_std must be a finite number >= 0, got nan")]
    for name, opts, msg in cases:
        with pytest.raises(ValueError, match=msg):
            get_solver(name, **opts)
    for cls in SOLVERS.values():  # the schema is the one list of options and defaults
        assert set(cls().options) == set(cls.schema)


def test_adaptive_solvers_refuse_a_transform():
    sde, data = kn.vp(), _gauss2()
    z = sde.prior_sample((3, 2), generator=torch.Generator().manual_seed(0))
    ts = time_grid(sde, 4, 1e-3, "uniform")
    for name in ("ode", "torchsde"):
        with pytest.raises(ValueError, match=f"solver '{name}' integrates adaptively and cannot apply a transform"):
            get_solver(name).run(sde, data.score_fn(sde), z, ts, transform=lambda z, i, t: z)
    seen = []
    out, nfe = get_solver("em").run(sde, data.score_fn(sde), z, ts, transform=lambda z, i, t: seen.append((i, t)) or z)
    assert nfe == 4 and [i for i, _ in seen] == [0, 1, 2, 3] and seen[-1][1] == pytest.approx(1e-3)


def test_every_solver_reports_nfe_and_calls_back_through_the_base():
    sde, data = kn.vp(), _gauss2()
    for name in SOLVERS:
        seen = []
        grid = "uniform" if name == "torchsde" else None
        _, nfe = sample(sde, data.score_fn(sde), (3, 2), solver=name, steps=4, grid=grid, callback=seen.append,
                        return_state=True, generator=torch.Generator().manual_seed(0))
        assert seen and seen[-1]["nfe"] == nfe and nfe >= 4, name


def test_step_plans_are_typed_and_cast_once():
    """The plan is a dataclass made once per grid: float64 on the CPU, the grid's times as floats;
    `StepPlan.to` casts its floating tensors (integer ones keep their dtype)."""
    from kinetic.solvers.base import StepPlan
    from kinetic.solvers.multistep import MultistepPlan

    sde = kn.cld()
    ts = time_grid(sde, 12, 1e-3, "band")
    for name in ("em", "pc", "sscs", "lie_trotter", "ei", "gls"):
        plan = get_solver(name).prepare(kn.vp() if name == "pc" else sde, ts)
        assert isinstance(plan, StepPlan) and plan.t_score.dtype == torch.float64 and plan.times == tuple(ts.tolist())
        half = plan.to("cpu", torch.float32)
        assert half.t_score.dtype == torch.float32 and plan.t_score.dtype == torch.float64
    kb = get_solver("ei", gls_steps=0, eta=1.0).prepare(sde, ts)
    assert isinstance(kb, MultistepPlan) and kb.noise_chol is not None and kb.corrector_weights is None
    assert kb.to("cpu", torch.float32).substeps.dtype == torch.int64
    assert isinstance(get_solver("ei").prepare(sde, ts), MultistepPlan)  # 12 <= 5 is false: the k-block plan


def test_solver_modules_form_no_import_circle():
    """The registry has its own module; no solver imports its package or a sibling's private helpers,
    and gls is ei's sibling (both over `kinetic.solvers.multistep`), not its subclass."""
    import ast
    import pathlib

    import kinetic.solvers as pkg
    from kinetic.solvers import registry
    from kinetic.solvers.ei import ExponentialIntegrator
    from kinetic.solvers.gls import GLSIntegrator
    from kinetic.solvers.multistep import MultistepSolver

    assert pkg.SOLVERS is registry.SOLVERS
    for path in pathlib.Path(pkg.__file__).parent.glob("*.py"):
        if path.name == "__init__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                assert node.module is not None, f"{path.name} imports its own package"
                assert not any(a.name.startswith("_") for a in node.names), (path.name, node.module)
            if isinstance(node, ast.ImportFrom) and path.name == "gls.py":
                assert node.module != "ei"
    assert not issubclass(GLSIntegrator, ExponentialIntegrator)
    assert issubclass(GLSIntegrator, MultistepSolver) and issubclass(ExponentialIntegrator, MultistepSolver)


def test_a_non_finite_score_is_reported_once_with_its_step():
    """The finiteness of every score evaluation is accumulated on the device and read when the run
    ends; the error names the first step and time that went wrong (here: the first node below 0.5)."""
    sde = kn.vp()
    ts = time_grid(sde, 4, 1e-3, "uniform")

    def nan_late(z, t):
        return -z[:, -1] * torch.where(t[:, None] < 0.5, float("nan"), 1.0)

    first = next(i for i, t in enumerate(ts[:-1].tolist()) if t < 0.5)
    for name in ("em", "sscs", "ei"):
        t_bad = f"{float(ts[first]):.3f}"[:-1]  # 0.25 (the float32 state rounds the fourth digit)
        with pytest.raises(ValueError, match=rf"non-finite values \(nan/inf\) at t = {t_bad}\d* in step {first}"):
            sample(sde, nan_late, (3, 2), solver=name, steps=4, grid="uniform")
        z = sde.prior_sample((3, 2))
        with pytest.raises(ValueError, match=rf"{name}: score_fn returned non-finite values .* in step {first}"):
            get_solver(name).run(sde, nan_late, z, ts)
