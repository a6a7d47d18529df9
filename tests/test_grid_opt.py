"""The grids optimised in closed form (`kinetic.grid_opt`): the error against independent computations, the
fitted grids' validity, the cache and the registered grid."""

import math

import pytest
import torch

import kinetic as kn
from kinetic import grid_opt as go
from kinetic import grids
from kinetic.analytic import GaussianData

F64 = torch.float64


def _w2_mc(sde, ts, s: float, m: float, n: int = 40000, seed: int = 1) -> float:
    """W2^2 / data_std^2 of kn.sample's default sampler on N(m, s^2) data, from samples: the squared mean and
    std errors of n samples (which the closed form should match to Monte Carlo precision)."""
    law = GaussianData(torch.tensor([m], dtype=F64), torch.tensor([s**2], dtype=F64))
    x = kn.sample(sde, law.score_fn(sde), (n, 1), grid=ts, t_eps=float(ts[-1]), dtype=F64,
                  generator=torch.Generator().manual_seed(seed))[:, 0]
    co = sde.coefficients(ts[-1:])
    c0, S00 = float(co.c[0, 0]), float(co.sigma[0, 0, 0])
    sd_ex = math.sqrt(s**2 * c0**2 + S00)
    return ((float(x.mean()) - c0 * m) ** 2 + (float(x.std()) - sd_ex) ** 2) / 0.25, float(x.std()), sd_ex


@pytest.mark.parametrize("preset", ["vp", "cld"])
def test_closed_form_matches_monte_carlo(preset):
    """The Gaussian term of plan_error, for one scale far from data_std, against kn.sample with the exact score:
    the output std from samples agrees with the closed form's (so does the error, to Monte Carlo precision)."""
    sde = getattr(kn, preset)()
    ts = grids.time_grid(sde, 3, 1e-3, "uniform")
    s, m = 0.1, 0.3
    J = float(go.plan_error(sde, ts, scales=(torch.tensor([s], dtype=F64), torch.tensor([m], dtype=F64)), per_scale=True)[0])
    J_mc, sd_mc, sd_ex = _w2_mc(sde, ts, s, m)
    assert J > 1e-3  # a real error at 3 steps: the test can fail
    se = sd_mc / math.sqrt(2 * 40000)  # standard error of the sample std
    sd_cf = sd_ex + math.copysign(math.sqrt(J * 0.25), sd_mc - sd_ex)  # the mean is exact (see below)
    assert abs(sd_mc - sd_cf) < 4 * se + 1e-6
    assert J_mc == pytest.approx(J, rel=0.1)


@pytest.mark.parametrize("preset", ["vp", "hold"])
@pytest.mark.parametrize("solver", ["ei", "gls"])
def test_exact_at_the_solver_reference_scale(preset, solver):
    """ei/gls with data_std = s are exact for N(m, s^2) at any step count: the Gaussian term vanishes up to the
    prior's mismatch at T (tiny), while another scale has a real error."""
    sde = getattr(kn, preset)()
    ts = grids.time_grid(sde, 4, 1e-3, "band")
    one = (torch.tensor([0.3], dtype=F64), torch.tensor([0.2], dtype=F64))
    exact = float(go.plan_error(sde, ts, solver, {"data_std": 0.3}, scales=one, per_scale=True)[0])
    other = float(go.plan_error(sde, ts, solver, {"data_std": 1.5}, scales=one, per_scale=True)[0])
    assert exact < 1e-5
    assert other > 100 * exact


def test_mixture_term_matches_a_fine_run():
    """The mixture term is the squared distance to the exact flow: a 400-step run of the same solver is close to
    the flow, so its term is tiny, and a 3-step run's is not."""
    sde = kn.vp()
    ts = grids.time_grid(sde, 400, 1e-3, "band")
    fine = float(go.plan_error(sde, ts)) - float(go.plan_error(sde, ts, mixture=False))
    coarse_ts = grids.time_grid(sde, 3, 1e-3, "band")
    coarse = float(go.plan_error(sde, coarse_ts)) - float(go.plan_error(sde, coarse_ts, mixture=False))
    assert fine < 1e-6
    assert coarse > 1e-3


@pytest.mark.parametrize("preset", ["vp", "cld", "psld", "hold", "langevin4"])
def test_weight_grid_valid_for_every_preset(preset):
    sde = kn.langevin(4) if preset == "langevin4" else getattr(kn, preset)()
    for steps in (1, 3, 50):
        for logw in (go.band_weights(), [4.0, -3.0, 2.0, 0.0, -5.0, 1.0]):
            ts = go.weight_grid(sde, steps, 1e-3, logw)
            assert ts.shape == (steps + 1,) and ts.dtype == F64
            assert float(ts[0]) == sde.T and float(ts[-1]) == 1e-3
            assert bool((ts[1:] < ts[:-1]).all())
            grids.time_grid(sde, steps, 1e-3, ts)  # accepted as a tensor grid


def test_fit_lowers_the_error_and_returns_a_valid_grid():
    sde = kn.cld()
    r = go.fit(sde, 3, maxfev=40)
    assert r["error"] <= r["band_error"] and r["evaluations"] <= 41
    ts = go.weight_grid(sde, 3, 1e-3, r["logw"])
    assert ts.shape == (4,) and bool((ts[1:] < ts[:-1]).all())
    assert float(go.plan_error(sde, ts)) == pytest.approx(r["error"], rel=1e-9)


def test_optimal_grid_is_cached_and_registered(monkeypatch):
    sde = kn.vp()
    calls = []
    real = go.fit

    def counting(*a, **k):
        calls.append(a[1])
        return real(*a, **{**k, "maxfev": 20})

    monkeypatch.setattr(go, "fit", counting)
    go.FIT_CACHE.clear()
    a = go.optimal_grid(sde, 3)
    b = go.optimal_grid(sde, 3)
    assert calls == [3] and torch.equal(a, b)
    ts = grids.time_grid(sde, 3, 1e-3, "optimal")  # the registered grid: the default sampler's, from the cache
    assert torch.equal(ts, a) and calls == [3]
    law = GaussianData(torch.zeros(2, dtype=F64), torch.full((2,), 0.25, dtype=F64))
    x = kn.sample(sde, law.score_fn(sde), (64, 2), steps=3, grid="optimal", generator=torch.Generator().manual_seed(0))
    assert x.shape == (64, 2) and bool(torch.isfinite(x).all()) and calls == [3]
    go.FIT_CACHE.clear()
