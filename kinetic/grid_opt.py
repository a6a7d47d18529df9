"""Time grids optimised in closed form: the plan's error on Gaussian reference data, minimised over the grid.

For data N(m, s^2) in one coordinate the exact score of every noised marginal is affine in the state, so a
deterministic fixed-grid sampler (``ei`` with eta = 0, ``gls``) maps the prior draw z_T (k,) affinely to its
output: z_eps = M z_T + v. Running the solver itself (`kinetic.solvers.get_solver(...).run`) on the k + 1
states 0, e_1, ..., e_k with the exact score (`kinetic.analytic.GaussianData`, one data coordinate per
reference scale) gives M and v for every scale at once, whatever the plan. The data block of the output is
then N(v_0, M_0 P_T M_0^T) (P_T = `LinearSDE.prior_cov`, M_0 the first row of M), against the exact
marginal N(c_0 m, s^2 c_0^2 + Sigma_00) at t_eps (c = Phi(0, t_eps) e_1). The Gaussian term of the objective
is the mean over the reference scales of the squared W2 between the two, over data_std^2:

    J_G(grid) = mean_j [(v_0 - c_0 m_j)^2 + (sd_out - sd_exact)^2] / data_std^2,

and `plan_error` adds (``mixture``) the mean squared distance, over data_std^2, of the sampler's outputs on
fixed prior draws to their exact flow for the two-mode `reference_mixture`.

``ei``/``gls`` with ``data_std = s`` are exact for N(m, s^2) at any step count (gDDIM, Props. 4 and 6), so J
averages over scales s_j = data_std * exp(linspace(log 0.2, log 3, 7)) (0.1 .. 1.5 for data_std 0.5), each
with mean m_j = sqrt(max(data_std^2 - s_j^2, 0)): a component of scale s_j of a mixture whose variance is
data_std^2.

The grid is uniform in x(sigma) = int w(sigma) d log sigma, sigma = `Coefficients.sigma_tilde`, as the
``band`` grid (`kinetic.grids`) is, with log w piecewise linear in log(sigma / data_std) at `KNOTS` (constant
beyond the end knots) and log w = 0 at the middle knot; the other knots (5 parameters) are fitted by
Nelder-Mead (scipy), started from the ``band`` weight. `optimal_grid` caches its fits per (SDE, solver,
options, steps, t_eps, data_std) in memory (`FIT_CACHE`). docs/math.md, "Grids optimised in closed form".
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict

import numpy as np
import torch
from torch import Tensor

from . import grids as _grids
from .analytic import GaussianData, GaussianMixture

__all__ = [
    "FIT_CACHE",
    "KNOTS",
    "SCALE_SPAN",
    "band_weights",
    "fit",
    "optimal_grid",
    "plan_error",
    "reference_scales",
    "weight_grid",
]

F64 = torch.float64
KNOTS = (-5.0, -3.0, -1.5, 0.0, 1.5, 3.5)
"""Knots of log w, in log(sigma_tilde / data_std); log w = 0 at the middle one (0.0: sigma_tilde = data_std)."""
_FIXED = KNOTS.index(0.0)
SCALE_SPAN = (0.2, 3.0)
"""The reference scales s_j run log-uniformly over data_std * SCALE_SPAN."""
N_SCALES = 7
FAST_DS = 0.3
_LOGW_BOUND = 12.0  # |log w| at most this (a weight ratio of e^24 between two knots)
FIT_CACHE: OrderedDict = OrderedDict()
"""(key) -> fitted log w at `KNOTS`: the in-memory LRU of `optimal_grid` (at most `CACHE_SIZE` entries)."""
CACHE_SIZE = 256


def reference_scales(data_std: float, n: int = N_SCALES) -> tuple[Tensor, Tensor]:
    """The reference scales s (n,) = data_std * exp(linspace(log 0.2, log 3, n)) and means m (n,) =
    sqrt(max(data_std^2 - s^2, 0)), float64."""
    lo, hi = SCALE_SPAN
    s = float(data_std) * torch.exp(torch.linspace(math.log(lo), math.log(hi), n, dtype=F64))
    m = (float(data_std) ** 2 - s**2).clamp_min(0.0).sqrt()
    return s, m


_CLOCKS: dict = {}


def _clock(sde, t_eps: float) -> tuple[Tensor, Tensor]:
    """(log sigma_tilde made nonincreasing, log t) on `grids.fine_times`, increasing t; cached per SDE and t_eps."""
    key = (_sde_key(sde), float(t_eps))
    if key not in _CLOCKS:
        fine = _grids.fine_times(t_eps, sde.T)
        sig = torch.cummax(sde.coefficients(fine).sigma_tilde, 0).values
        _CLOCKS[key] = (torch.log(sig), torch.log(fine))
        if len(_CLOCKS) > 64:
            _CLOCKS.pop(next(iter(_CLOCKS)))
    return _CLOCKS[key]


def band_weights(data_std: float = 0.5) -> np.ndarray:
    """log w of the ``band`` grid (`grids.BAND`) at `KNOTS`, less its value at the middle knot: the starting point."""
    lo, hi = _grids.BAND
    sig = float(data_std) * np.exp(np.array(KNOTS))
    lw = -0.5 * np.log((1 + (sig / hi) ** 2) * (1 + (lo / sig) ** 2))
    return lw - lw[_FIXED]


def weight_grid(sde, steps: int, t_eps: float, logw, data_std: float = 0.5) -> Tensor:
    """Decreasing float64 times (steps + 1,) from T to t_eps, uniform in x = int w d log sigma_tilde with log w
    piecewise linear in log(sigma_tilde / data_std) through (`KNOTS`, ``logw``), constant outside."""
    ls, lt = _clock(sde, t_eps)
    r = (ls - math.log(data_std)).numpy()
    lw = np.interp(r, np.array(KNOTS), np.asarray(logw, dtype=np.float64))
    w = torch.from_numpy(np.exp(lw))
    x = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(0.5 * (w[1:] + w[:-1]) * (ls[1:] - ls[:-1]), 0)])
    target = torch.linspace(float(x[-1]), float(x[0]), steps + 1, dtype=F64)
    ts = _grids.interp(target, x, lt).exp()
    ts[0], ts[-1] = sde.T, t_eps
    return ts


MIXTURE_POINTS = 128
"""Prior draws (seed 0) on which the mixture term of `plan_error` compares the sampler with the exact flow."""
_FLOWS: OrderedDict = OrderedDict()


MIXTURE_STD = 0.25
"""The reference mixture's component std, over data_std."""
MIXTURE_METRIC = "path"
"""How the mixture term compares the sampler's outputs with the exact images of the same draws: "path" (the
mean squared distance, draw by draw) or "sorted" (the squared W2 of the two empirical laws)."""
MIXTURE_WEIGHT = 1.0
"""The weight of the mixture term in `plan_error`."""


def reference_mixture(data_std: float) -> GaussianMixture:
    """The 1-D mixture 1/2 N(-a, b^2) + 1/2 N(a, b^2), b = data_std * `MIXTURE_STD`, a^2 + b^2 = data_std^2: two
    modes that separate as the noise falls, of the data's first two moments."""
    b = MIXTURE_STD * float(data_std)
    a = math.sqrt(float(data_std) ** 2 - b**2)
    return GaussianMixture([0.5, 0.5], [[-a], [a]], b)


def _uses_gls(slv, steps: int, order: int) -> bool:
    return bool(getattr(slv, "uses_gls", lambda s, k: False)(steps, order))


def _exact_flow(sde, t_eps: float, data_std: float, gls: bool) -> tuple[Tensor, Tensor]:
    """(z_T (MIXTURE_POINTS, k, 1), its exact image): the data block under the k-block probability flow, or the
    GLS estimate under the flow of the ``gls`` plan (``gls``, k > 1); DOPRI5 to rtol 1e-8, cached."""
    from .flows import flow_map, gls_flow_map

    gls = gls and sde.order > 1
    key = (_sde_key(sde), float(t_eps), float(data_std), gls, MIXTURE_STD)
    if key not in _FLOWS:
        law = reference_mixture(data_std)
        z_T = sde.prior_sample((MIXTURE_POINTS, 1), generator=torch.Generator().manual_seed(0), dtype=F64)
        if gls:
            x = gls_flow_map(sde, law.score_fn(sde), z_T, t_eps, rtol=1e-8)[:, 0]
        else:
            x = flow_map(sde, law.score_fn(sde), z_T, t_eps, rtol=1e-8)[:, 0, 0]
        _FLOWS[key] = (z_T, x)
        while len(_FLOWS) > 32:
            _FLOWS.popitem(last=False)
    return _FLOWS[key]


def plan_error(sde, ts: Tensor, solver: str = "ei", options: dict | None = None, data_std: float = 0.5,
               scales: tuple[Tensor, Tensor] | None = None, per_scale: bool = False, mixture: bool = True):
    """The closed-form error J of the deterministic sampler ``solver`` (with ``options``) on the grid ``ts``:
    the mean over the reference scales (``scales`` = (s, m), default `reference_scales`) of the squared W2 of
    the output's data block against the exact marginal at ts[-1], over data_std^2; with ``mixture``, plus the
    mean squared distance (over data_std^2) of the sampler's output on `MIXTURE_POINTS` fixed prior draws
    to the exact flow of the same draws for `reference_mixture` data. ``per_scale``: the (n,) Gaussian
    terms (no mixture term) instead."""
    from .solvers import get_solver

    slv = get_solver(solver, **(options or {}))
    if slv.stochastic:
        raise ValueError(f"plan_error: the solver must be deterministic; {solver!r} with {options} draws noise")
    s, m = reference_scales(data_std) if scales is None else scales
    ts = torch.as_tensor(ts, dtype=F64)
    k, n = sde.order, s.numel()
    gauss = GaussianData(m, s**2).score_fn(sde)
    basis = torch.cat([torch.zeros(1, k, dtype=F64), torch.eye(k, dtype=F64)])[:, :, None].expand(k + 1, k, n)
    gls = _uses_gls(slv, ts.numel() - 1, k)
    if mixture and not per_scale:
        # one run: the k + 1 basis states in the first n coordinates, the mixture's prior draws in the last one
        z_T, x_ref = _exact_flow(sde, float(ts[-1]), data_std, gls)
        rows = max(k + 1, z_T.shape[0])
        z = torch.zeros(rows, k, n + 1, dtype=F64)
        z[: k + 1, :, :n] = basis
        z[: z_T.shape[0], :, n:] = z_T
        mix = reference_mixture(data_std).score_fn(sde)

        def score(zz, t):
            return torch.cat([gauss(zz[..., :n], t), mix(zz[..., n:], t)], -1)
    else:
        z, score = basis.contiguous(), gauss
    out, _ = slv.run(sde, score, z, ts)
    x = out[: k + 1, 0, :n]  # (k + 1, n): the data block
    v = x[0]
    M0 = (x[1:] - v).T  # (n, k): the data row of the linear part, per scale
    var = ((M0 @ sde.prior_cov) * M0).sum(-1)
    co = sde.coefficients(ts[-1:])
    c0, S00 = float(co.c[0, 0]), float(co.sigma[0, 0, 0])
    var_ex = s**2 * c0**2 + S00
    err = ((v - c0 * m) ** 2 + (var.clamp_min(0).sqrt() - var_ex.sqrt()) ** 2) / float(data_std) ** 2
    if per_scale:
        return err
    J = err.mean()
    if mixture:
        zo = out[: z_T.shape[0], :, n:]
        if gls and k > 1:
            from .flows import gls_estimate

            xo = gls_estimate(sde, zo, float(ts[-1]))[:, 0]
        else:
            xo = zo[:, 0, 0]
        if MIXTURE_METRIC == "sorted":  # W2 between the two empirical laws (quantile coupling)
            xo, x_ref = torch.sort(xo).values, torch.sort(x_ref).values
        J = J + MIXTURE_WEIGHT * ((xo - x_ref) ** 2).mean() / float(data_std) ** 2
    return J


def _sde_key(sde) -> str:
    return json.dumps(sde.spec(), sort_keys=True, default=str)


def fit(sde, steps: int, t_eps: float = 1e-3, solver: str = "ei", options: dict | None = None,
        data_std: float = 0.5, start=None, maxfev: int | None = None, fast: bool = True) -> dict:
    """Fit log w at `KNOTS` (the middle one fixed at 0) minimising `plan_error` on `weight_grid`, by Nelder-Mead
    from ``start`` (default `band_weights`). ``fast``: while fitting, ``ei``'s k x k coefficients are
    integrated with ``ds`` = 0.3 (`FAST_DS`; J changes in its fourth digit, the fit 3-5x faster); the error
    reported is that of the solver's own options. Returns {"logw" (list), "error", "band_error" (J of the
    start), "evaluations"}."""
    from scipy.optimize import minimize

    scales = reference_scales(data_std)
    eval_options = dict(options or {})
    if fast and solver == "ei":
        eval_options["ds"] = max(float(eval_options.get("ds", FAST_DS)), FAST_DS)
    x0 = np.asarray(band_weights(data_std) if start is None else start, dtype=np.float64)
    free = [i for i in range(len(KNOTS)) if i != _FIXED]

    def full(p):
        lw = np.zeros(len(KNOTS))
        lw[free] = np.clip(p, -_LOGW_BOUND, _LOGW_BOUND)
        return lw

    def objective(p, opts=eval_options):
        ts = weight_grid(sde, steps, t_eps, full(p), data_std)
        if not bool((ts[1:] < ts[:-1]).all()):
            return 1e6
        try:
            e = float(plan_error(sde, ts, solver, opts, data_std, scales))
        except ValueError:
            return 1e6
        return e if math.isfinite(e) else 1e6

    e0 = objective(x0[free])
    if steps < 2:
        return {"logw": list(x0), "error": e0, "band_error": e0, "evaluations": 1}
    dim = len(free)
    simplex = np.vstack([x0[free]] + [x0[free] + 1.0 * np.eye(dim)[i] for i in range(dim)])
    res = minimize(objective, x0[free], method="Nelder-Mead",
                   options={"initial_simplex": simplex, "maxfev": maxfev or 60 * dim, "xatol": 1e-2, "fatol": 1e-4 * e0})
    best = full(res.x) if res.fun < e0 else x0
    exact = dict(options or {})
    err, e0 = objective(best[free], exact), objective(x0[free], exact)
    return {"logw": [float(v) for v in best], "error": err, "band_error": e0, "evaluations": int(res.nfev) + 1}


def optimal_grid(sde, steps: int, t_eps: float = 1e-3, solver: str = "ei", options: dict | None = None,
                 data_std: float = 0.5, maxfev: int | None = None) -> Tensor:
    """The grid (steps + 1,) from T to t_eps that minimises `plan_error` for ``solver`` with ``options`` over
    the weights of `weight_grid` (`fit`, at most ``maxfev`` evaluations), cached in `FIT_CACHE`."""
    key = (_sde_key(sde), solver, json.dumps(options or {}, sort_keys=True, default=str), int(steps), float(t_eps),
           float(data_std), maxfev)
    if key in FIT_CACHE:
        FIT_CACHE.move_to_end(key)
    else:
        FIT_CACHE[key] = fit(sde, steps, t_eps, solver, options, data_std, maxfev=maxfev)["logw"]
        while len(FIT_CACHE) > CACHE_SIZE:
            FIT_CACHE.popitem(last=False)
    return weight_grid(sde, steps, t_eps, FIT_CACHE[key], data_std)
