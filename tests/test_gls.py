"""The ``gls`` solver: the exponential integrator on the GLS estimate of the data (kinetic/solvers/gls.py).

Independent checks: against ``ei`` for k = 1 (where both integrate the same flow; ei's weights come
from its own RK4/Simpson integration), against the closed-form VE flow of Gaussian data, against
scipy's quadrature for the moments, against the exact marginal of the state, and against a tight
DOPRI integration of the VE flow (`kinetic.bench.problems.gls_flow_map`) for a mixture.
"""

import math

import numpy as np
import pytest
import torch

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.bench import problems as pb
from kinetic.grids import fine_times, interp
from kinetic.sampling import default_grid, sample
from kinetic.solvers import get_solver
from kinetic.solvers import gls

F64 = torch.float64
SDES = [kn.cld(), kn.psld(), kn.hold(), kn.langevin(4)]


def _sigma_grid(sde, steps: int, t_eps: float = 1e-3) -> torch.Tensor:
    """Times from T to t_eps whose sigma_tilde is log-uniform (every step shrinks with the step count)."""
    fine = fine_times(t_eps, sde.T, 8193)
    ls = torch.cummax(torch.log(sde.coefficients(fine).sigma_tilde), 0).values
    target = torch.linspace(float(ls[-1]), float(ls[0]), steps + 1, dtype=F64)
    ts = interp(target, ls, torch.log(fine)).exp()
    ts[0], ts[-1] = sde.T, t_eps
    return ts


def _ve_flow(sde, z_T, m, s, t_eps):
    """Closed-form VE flow of data N(m, s^2): y(sigma) = m + (y_T - m) sqrt((s^2 + sigma^2) / (s^2 + sigma_T^2))."""
    y_T = pb.gls_estimate(sde, z_T, sde.T)
    sig = sde.coefficients(torch.tensor([sde.T, t_eps], dtype=F64)).sigma_tilde
    return m + (y_T - m) * torch.sqrt((s**2 + sig[1] ** 2) / (s**2 + sig[0] ** 2))


def test_moments_match_quadrature():
    from scipy.integrate import quad

    sig = torch.tensor([6000.0, 2.5, 0.8, 0.1, 1e-4], dtype=F64)
    for sd in (0.0, 0.5):
        phi, m = gls.moments(sig, sd)
        for i in range(4):
            s0, s1 = float(sig[i]), float(sig[i + 1])
            h = math.log(s0 / s1)
            assert float(phi[i]) == pytest.approx(math.sqrt((sd**2 + s1**2) / (sd**2 + s0**2)), rel=1e-12)

            def kernel(u, p):
                su2 = (s0 * math.exp(-u)) ** 2
                return math.sqrt((sd**2 + s1**2) / (sd**2 + su2)) * su2 / (sd**2 + su2) * (-u / h) ** p

            for p in range(gls.MAX_MOMENT + 1):
                q = quad(kernel, 0, h, args=(p,), limit=500, epsabs=1e-14, epsrel=1e-12)[0]
                assert abs(q - float(m[i, p])) < 1e-10, (sd, i, p, q, float(m[i, p]))


@pytest.mark.parametrize("sde", [kn.vp(), kn.ve()], ids=lambda s: s.name)
@pytest.mark.parametrize("order,corrector,data_std", [(1, False, 0.0), (2, True, 0.5), (3, True, 0.5), (3, False, 1.0)])
def test_equals_ei_for_one_block(sde, order, corrector, data_std):
    """For k = 1 the GLS estimate is x / alpha and both solvers integrate the same flow with the
    same reference and polynomial variable (log sigma): ei's weights come from its RK4 integration."""
    data = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.2, 0.3])
    sf = data.score_fn(sde)
    kw = dict(steps=7, multistep=order, corrector=corrector, data_std=data_std)
    a = sample(sde, sf, (50, 2), solver="gls", generator=torch.Generator().manual_seed(0), **kw)
    b = sample(sde, sf, (50, 2), solver="ei", poly="logsigma", generator=torch.Generator().manual_seed(0), **kw)
    torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_exact_for_gaussian_data_of_matched_scale(sde):
    """With data N(m, data_std^2 I) every step is exact (mu is constant): the GLS estimate of the final
    state equals the closed-form VE flow at any step count, order and grid."""
    m, s = torch.tensor([0.7, -0.4]), 0.5
    data = GaussianData(m, s**2)
    sf = data.score_fn(sde)
    for steps, grid, opts in [(1, "uniform", {"multistep": 1}), (3, "band", {}), (6, "quadratic", {"multistep": 3}),
                              (9, "band", {"multistep": 4, "corrector": False})]:
        z, nfe = sample(sde, sf, (20, 2), solver="gls", steps=steps, grid=grid, data_std=s, return_state=True,
                        dtype=F64, generator=torch.Generator().manual_seed(1), **opts)
        z_T = sde.prior_sample((20, 2), generator=torch.Generator().manual_seed(1), dtype=F64)
        exact = _ve_flow(sde, z_T, m.to(F64), s, 1e-3)
        assert nfe == steps
        torch.testing.assert_close(pb.gls_estimate(sde, z, 1e-3), exact, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("sde", [kn.cld(), kn.hold()], ids=lambda s: s.name)
def test_states_have_the_exact_marginal(sde):
    """The state the network sees at every node has the exact marginal N(c m, s^2 c c^T + Sigma) for
    Gaussian data (the rest of the state is carried with its covariance): Monte Carlo, n = 20000."""
    m, s = 0.4, 0.6
    data = GaussianData(torch.tensor([m]), s**2)
    seen = {}

    def keep(info):
        seen[info["step"]] = (info["t"], info["z"][:, :, 0].clone())

    sample(sde, data.score_fn(sde), (20000, 1), solver="gls", steps=6, callback=keep,
           generator=torch.Generator().manual_seed(2))
    for step in (1, 3, 5):
        t, z = seen[step]
        co = sde.coefficients(torch.tensor([t], dtype=F64))
        c, S = co.c[0], co.sigma[0]
        cov = s**2 * torch.outer(c, c) + S
        L = torch.linalg.cholesky(cov)
        w = torch.linalg.solve_triangular(L, (z - m * c).T, upper=False).T  # should be N(0, I)
        emp = w.T @ w / w.shape[0]
        assert float((emp - torch.eye(sde.order, dtype=F64)).abs().max()) < 0.05, (step, emp)
        assert float(w.mean(0).abs().max()) < 0.03


CASES = [(1, True), (2, True), (3, False), (3, True)]


@pytest.mark.parametrize("sde", [kn.cld(), kn.hold()], ids=lambda s: s.name)
@pytest.mark.parametrize("order,corrector", CASES, ids=[f"order{o}{'+corrector' if c else ''}" for o, c in CASES])
def test_convergence_order(sde, order, corrector):
    """Error of the final GLS estimate against the closed-form flow of Gaussian data whose scale does
    not match the reference (so no step is exact), on grids log-uniform in sigma_tilde: slope = the
    declared order."""
    m, s = torch.tensor([0.5]), 0.2
    data = GaussianData(m, s**2)
    sf = data.score_fn(sde)
    solver = get_solver("gls", multistep=order, corrector=corrector)
    z_T = sde.prior_sample((4, 1), generator=torch.Generator().manual_seed(0), dtype=F64)
    exact = _ve_flow(sde, z_T, m.to(F64), s, 1e-3)
    Ns = [64, 128, 256, 512]
    errs = []
    for N in Ns:
        z, _ = solver.run(sde, sf, z_T, _sigma_grid(sde, N))
        errs.append(float((pb.gls_estimate(sde, z, 1e-3) - exact).abs().max()))
    slope = -np.polyfit(np.log(Ns[1:]), np.log(errs[1:]), 1)[0]  # the asymptotic range (multistep start-up)
    assert abs(slope - solver.convergence_order) < 0.4, (errs, slope, solver.convergence_order)


@pytest.mark.parametrize("sde", [kn.cld(), kn.hold()], ids=lambda s: s.name)
def test_converges_to_the_tight_flow_on_a_mixture(sde):
    """On a 2-D mixture (nonlinear denoiser) the solver converges to an adaptive DOPRI integration of the
    VE flow of the GLS estimate (`problems.gls_flow_map`, no kinetic sampler code), and the error falls with NFE.
    At few steps (order 2 + corrector, band grid) the median distance is under 0.03 at 5 NFE and 0.006 at 10
    (the median: one draw of the 64 lies on the components' boundary and needs ~40 steps), where `ei`'s
    k-block flow ends 0.2-0.5 from it."""
    data = GaussianMixture([0.6, 0.4], [[-1.0, 0.5], [1.0, -0.5]], [0.15, 0.3])
    sf = data.score_fn(sde)
    z_T = sde.prior_sample((64, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    ref = pb.gls_flow_map(sde, sf, z_T, 1e-3, rtol=1e-8)
    errs = {}
    for steps in (5, 10, 40, 160):
        z, nfe = sample(sde, sf, (64, 2), solver="gls", steps=steps, return_state=True, dtype=F64,
                        generator=torch.Generator().manual_seed(0))
        assert nfe == steps
        errs[steps] = pb.gls_estimate(sde, z, 1e-3) - ref
    medians = {s: float(e.norm(dim=-1).median()) for s, e in errs.items()}
    assert medians[5] < 0.03 and medians[10] < 0.006, medians
    rms = [pb.pathwise_error(errs[s], torch.zeros_like(ref)) for s in (10, 40, 160)]
    assert rms[0] > rms[1] > rms[2] and rms[2] < 2e-3, rms


def test_options_and_default():
    sde = kn.hold()
    sf = GaussianData(torch.zeros(2), 0.25).score_fn(sde)
    assert get_solver("gls").convergence_order == 3 and get_solver("gls", corrector=False).convergence_order == 2
    assert not get_solver("gls").stochastic and default_grid("gls") == "band"
    with pytest.raises(ValueError, match=r"gls: eta must be 0 .*use solver='ei' for eta > 0"):
        sample(sde, sf, (4, 2), solver="gls", eta=1.0)
    with pytest.raises(ValueError, match="gls: multistep must be 1, 2, 3 or 4"):
        sample(sde, sf, (4, 2), solver="gls", multistep=5)
    with pytest.raises(ValueError, match="gls: data_std must be a finite number >= 0"):
        sample(sde, sf, (4, 2), solver="gls", data_std=-1)
    with pytest.raises(ValueError, match="gls: corrector must be True, False or None"):
        sample(sde, sf, (4, 2), solver="gls", corrector="yes")
    # kn.sample's default (ei on the band grid) runs gls for deterministic grids of at most max(3, 4k - 3) steps
    GLS_STEPS = 9  # HOLD: k = 3

    for steps in (3, GLS_STEPS, GLS_STEPS + 1):
        a = sample(sde, sf, (4, 2), steps=steps, generator=torch.Generator().manual_seed(0))
        b = sample(sde, sf, (4, 2), solver="gls", grid="band", steps=steps, generator=torch.Generator().manual_seed(0))
        c = sample(sde, sf, (4, 2), solver="ei", gls_steps=0, steps=steps, generator=torch.Generator().manual_seed(0))
        assert torch.equal(a, b if steps <= GLS_STEPS else c) and not torch.equal(b, c)
    # eta > 0 and gls_steps = 0 keep the k-block flow; a bad gls_steps names the option
    assert not get_solver("ei", eta=1.0).uses_gls(5, 3) and not get_solver("ei", gls_steps=0).uses_gls(5, 3)
    assert get_solver("ei").uses_gls(GLS_STEPS, 3) and get_solver("ei").convergence_order == 4
    assert [max(s for s in range(20) if get_solver("ei").uses_gls(s, k)) for k in (1, 2, 3, 4)] == [3, 5, 9, 13]
    assert get_solver("ei", gls_steps=10).uses_gls(10, 2) and not get_solver("ei", gls_steps=10).uses_gls(11, 2)
    with pytest.raises(ValueError, match="ei: gls_steps must be an integer >= 0"):
        sample(sde, sf, (4, 2), solver="ei", gls_steps=-1)


def test_few_step_harness_measures_each_run_against_the_flow_it_discretises():
    """The harness compares a run of the GLS plan with the GLS flow and a k-block run with the k-block flow."""
    from kinetic.bench import fewstep as fs
    default = fs.Config("kn.sample default", None)
    assert default.uses_gls(5, 2) and not default.uses_gls(6, 2) and default.uses_gls(7, 3)
    assert fs.Config("g", "gls").uses_gls(50, 2) and not fs.Config("e", "ei", {"gls_steps": 0}).uses_gls(3, 2)
    sde = kn.cld()
    law = GaussianData(torch.tensor([0.4, -1.0]), 0.25)
    ref = fs.reference(sde, law, 6, 6, seed=1, rtol=1e-9)
    z = torch.randn(6, 2, 2, dtype=F64)
    out, exact = ref.target(sde, True, z)
    torch.testing.assert_close(out, pb.gls_estimate(sde, z, fs.T_EPS))
    assert exact is ref.x_gls and ref.target(sde, False, z)[1] is ref.x_ref


@pytest.mark.parametrize("sde", SDES, ids=lambda s: s.name)
def test_gls_row_is_the_unbiased_minimum_variance_estimate(sde):
    """gls_row . z is unbiased for x0 (g . c = 1) with variance g Sigma g^T = sigma_tilde^2, and no unbiased
    row does better: adding any direction v with v . c = 0 raises the variance."""
    co = sde.coefficients(torch.tensor([0.02, 0.3, 0.9], dtype=F64))
    g, c, S = co.gls_row, co.c, co.sigma
    torch.testing.assert_close((g * c).sum(-1), torch.ones(3, dtype=F64))
    torch.testing.assert_close(torch.einsum("bi,bij,bj->b", g, S, g), co.sigma_tilde**2, rtol=1e-9, atol=0)
    v = torch.randn(3, sde.order, dtype=F64, generator=torch.Generator().manual_seed(0))
    v = v - (v * c).sum(-1, keepdim=True) / (c * c).sum(-1, keepdim=True) * c  # v . c = 0
    worse = g + 0.1 * v
    assert bool((torch.einsum("bi,bij,bj->b", worse, S, worse) > co.sigma_tilde**2).all())
