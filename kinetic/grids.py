"""Time grids for the samplers, and the one interpolation helper for maps defined on a fine grid.

``time_grid(sde, steps, t_eps, grid)`` returns the decreasing float64 times ``T = t_0 > ... > t_N =
t_eps`` a fixed-grid sampler steps through. Grids are a registry (``GRIDS``: name -> function);
`register_grid` adds one. Maps that have no closed-form inverse (a grid uniform in lambda(t), a
training-time distribution uniform in log sigma(t)) are tabulated on `fine_times` and inverted
with `interp`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["GRIDS", "MAX_STEPS", "register_grid", "time_grid", "fine_times", "interp"]

from .checks import MAX_STEPS  # noqa: E402
"""The largest number of steps a grid may have: every sampler precomputes float64 coefficients
for its whole grid, so the grid's length bounds the memory (a few hundred MB at this size)."""

GRIDS: dict[str, Callable[..., Tensor]] = {}


def register_grid(name: str):
    """Decorator: register ``fn(sde, steps, t_eps) -> (steps + 1,)`` times under ``name``."""

    def deco(fn):
        GRIDS[name] = fn
        return fn

    return deco


def fine_times(t_min: float, t_max: float, n: int = 2049) -> Tensor:
    """Increasing float64 times on [t_min, t_max]: n log-spaced and n linear points, merged, with the
    end points exact. Fine enough near t_min and near t_max to tabulate any smooth map of t."""
    fine = torch.cat(
        [
            torch.logspace(math.log10(t_min), math.log10(t_max), n, dtype=torch.float64),
            torch.linspace(t_min, t_max, n, dtype=torch.float64),
        ]
    ).unique()  # sorted increasing
    fine[0], fine[-1] = t_min, t_max
    return fine


def interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of the table (xp, fp) at x; xp nondecreasing (e.g. made
    monotone with ``torch.cummax``). Flat parts of xp take their left end; x outside [xp[0], xp[-1]]
    takes the end values (no extrapolation). Any shapes of x; xp, fp 1-D on x's device."""
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp_min(1e-300), torch.zeros_like(x))
    return f0 + w.clamp(0, 1) * (f1 - f0)


@register_grid("uniform")
def _uniform(sde, steps: int, t_eps: float) -> Tensor:
    """Linear in t."""
    return torch.linspace(sde.T, t_eps, steps + 1, dtype=torch.float64)


@register_grid("quadratic")
def _quadratic(sde, steps: int, t_eps: float) -> Tensor:
    """(linspace(sqrt T, sqrt t_eps))^2: fine near t_eps (gDDIM's ``ts_order=2``)."""
    return torch.linspace(math.sqrt(sde.T), math.sqrt(t_eps), steps + 1, dtype=torch.float64) ** 2


@register_grid("logsnr")
def _logsnr(sde, steps: int, t_eps: float) -> Tensor:
    """Uniform in lambda(t) = 1/2 log(Sigma_t[0,0] / Phi(0,t)[0,0]^2), the log noise-to-signal ratio
    of the data block (for VP: -1/2 log SNR, DPM-Solver's grid); a running maximum makes it
    monotone if an SDE's lambda is not."""
    fine = fine_times(t_eps, sde.T)
    lam = torch.cummax(sde.coefficients(fine).lam, 0).values
    target = torch.linspace(float(lam[-1]), float(lam[0]), steps + 1, dtype=torch.float64)
    return interp(target, lam, torch.log(fine)).exp()


BAND = (0.1, 2.5)
"""The ``band`` grid's (sigma_lo, sigma_hi): where data of about unit scale is resolved (docs/benchmarks.md)."""


@register_grid("band")
def _band(sde, steps: int, t_eps: float) -> Tensor:
    """Uniform in x(sigma) = int w(sigma) d log sigma, w = 1 / sqrt((1 + (sigma / s_hi)^2) (1 + (s_lo / sigma)^2)),
    sigma = `Coefficients.sigma_tilde` (the noise level of the least-squares estimate of x0 from the whole
    state; sigma / alpha for VP) and (s_lo, s_hi) = `BAND`: uniform in log sigma inside the band, where
    the data estimate changes, and about one step for each tail (w ~ s_hi / sigma above, sigma / s_lo
    below). The data block's own noise level (``logsnr``) is a poor clock for k >= 2, where sigma spans
    from ~700 to ~1e-5 (HOLD) and most of that range is spent where nothing changes."""
    lo, hi = BAND
    fine = fine_times(t_eps, sde.T)
    sig = torch.cummax(sde.coefficients(fine).sigma_tilde, 0).values
    ls = torch.log(sig)
    w = 1.0 / torch.sqrt((1.0 + (sig / hi) ** 2) * (1.0 + (lo / sig) ** 2))
    x = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (w[1:] + w[:-1]) * (ls[1:] - ls[:-1]), 0)])
    target = torch.linspace(float(x[-1]), float(x[0]), steps + 1, dtype=torch.float64)
    return interp(target, x, torch.log(fine)).exp()


@register_grid("optimal")
def _optimal(sde, steps: int, t_eps: float) -> Tensor:
    """The weighted grid that minimises the closed-form Gaussian error of `kinetic.sample`'s default sampler
    (``ei``, default options) on this SDE and step count: `kinetic.grid_opt.optimal_grid` (cached)."""
    from .grid_opt import optimal_grid

    return optimal_grid(sde, steps, t_eps)


def time_grid(sde, steps: int, t_eps: float = 1e-3, grid: str | Tensor = "uniform") -> Tensor:
    """Decreasing float64 CPU times (steps + 1,) from T to t_eps.

    ``grid``: a name in `GRIDS` ("uniform": linear in t; "quadratic": (linspace(sqrt T, sqrt t_eps))^2,
    fine near t_eps; "logsnr": uniform in the data block's log noise-to-signal ratio; "band": uniform
    in log sigma_tilde inside `BAND`, see `_band`; "optimal": fitted to the default sampler in closed form,
    see `kinetic.grid_opt`), or a
    decreasing tensor of times from T to t_eps (checked and returned as float64; ``steps`` and
    ``t_eps`` are then ignored). At most `MAX_STEPS` steps.
    """
    T = sde.T
    if isinstance(grid, Tensor) or (not isinstance(grid, str) and isinstance(grid, (list, tuple))):
        ts = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
        if ts.dim() != 1 or ts.numel() < 2:
            raise ValueError(f"grid: a tensor grid must be 1-D with at least 2 times, got shape {tuple(ts.shape)}")
        if ts.numel() - 1 > MAX_STEPS:
            raise ValueError(f"grid: at most {MAX_STEPS} steps (MAX_STEPS), got {ts.numel() - 1}")
        if not torch.isfinite(ts).all():
            raise ValueError("grid: the times must be finite")
        if not bool((ts[1:] < ts[:-1]).all()):
            raise ValueError("grid: the times must be strictly decreasing (from T down to t_eps)")
        if abs(float(ts[0]) - T) > 1e-9 * max(T, 1.0):
            raise ValueError(f"grid: the first time must be T = {T}, got {float(ts[0])}")
        if float(ts[-1]) <= 0:
            raise ValueError(f"grid: the last time must be positive (the score is singular at 0), got {float(ts[-1])}")
        return ts
    if not isinstance(grid, str) or grid not in GRIDS:
        raise ValueError(f"grid must be one of {', '.join(GRIDS)} or a decreasing tensor of times, got {grid!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps > MAX_STEPS:
        raise ValueError(
            f"steps must be at most {MAX_STEPS} (MAX_STEPS: the samplers precompute coefficients for the whole "
            f"grid), got {steps}"
        )
    t_eps = float(t_eps)
    if not (0.0 < t_eps < T):
        raise ValueError(f"t_eps must lie in (0, T) = (0, {T}), got {t_eps}")
    ts = GRIDS[grid](sde, steps, t_eps).to(torch.float64)
    ts[0], ts[-1] = T, t_eps
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"grid {grid!r} with {steps} steps gives repeated times; use fewer steps or another grid")
    return ts
