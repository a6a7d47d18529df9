"""`sample(...)`: draw data from a `LinearSDE` model by integrating the reverse dynamics from T to t_eps.

    import kinetic as kn
    from kinetic.sampling import sample
    x = sample(kn.cld(), score_fn, (64, 2), solver="ei", steps=20)       # (64, 2)
    z, nfe = sample(sde, score_fn, (64, 2), solver="em", steps=500, return_state=True)

``score_fn(z, t)`` takes the state z (n, k, *D) and times t (n,) and returns the score of the LAST
block of the noised marginal, shaped (n, *D). Solvers live in `kinetic.solvers` (``SOLVERS``).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .sde import LinearSDE
from .solvers import SOLVERS, get_solver

__all__ = ["sample", "time_grid", "GRIDS", "tweedie_denoise", "CheckedScore"]

GRIDS = ("uniform", "quadratic", "logsnr")


def _half_log_nsr(sde: LinearSDE, t: Tensor) -> Tensor:
    """lambda(t) = 1/2 log(Sigma_t[0,0] / Phi(0,t)[0,0]^2): the log noise-to-signal ratio of the data block."""
    phi = sde.transition(torch.zeros_like(t), t)
    sig = sde.covariance(t)
    return 0.5 * torch.log(sig[..., 0, 0]) - torch.log(phi[..., 0, 0].abs())


def time_grid(sde: LinearSDE, steps: int, t_eps: float = 1e-3, grid: str | Tensor = "uniform") -> Tensor:
    """Decreasing float64 CPU times (steps + 1,) from T to t_eps.

    ``uniform``: linear in t. ``quadratic``: (linspace(sqrt T, sqrt t_eps))^2, fine near t_eps (gDDIM's
    ``ts_order=2``). ``logsnr``: uniform in lambda(t) = 1/2 log(Sigma_t[0,0] / Phi(0,t)[0,0]^2), the log
    noise-to-signal ratio of the DATA block (for VP: -1/2 log SNR, DPM-Solver's grid); made monotone
    by a running maximum if an SDE's lambda is not. A tensor is checked and returned as float64
    (``steps`` is then ignored).
    """
    T = sde.T
    if isinstance(grid, Tensor) or (not isinstance(grid, str) and isinstance(grid, (list, tuple))):
        ts = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
        if ts.dim() != 1 or ts.numel() < 2:
            raise ValueError(f"grid: a tensor grid must be 1-D with at least 2 times, got shape {tuple(ts.shape)}")
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
    t_eps = float(t_eps)
    if not (0.0 < t_eps < T):
        raise ValueError(f"t_eps must lie in (0, T) = (0, {T}), got {t_eps}")
    if grid == "uniform":
        ts = torch.linspace(T, t_eps, steps + 1, dtype=torch.float64)
    elif grid == "quadratic":
        ts = torch.linspace(math.sqrt(T), math.sqrt(t_eps), steps + 1, dtype=torch.float64) ** 2
    else:
        fine = torch.cat(
            [
                torch.logspace(math.log10(t_eps), math.log10(T), 2049, dtype=torch.float64),
                torch.linspace(t_eps, T, 2049, dtype=torch.float64),
            ]
        ).unique()  # sorted increasing
        fine[0], fine[-1] = t_eps, T
        lam = torch.cummax(_half_log_nsr(sde, fine), 0).values
        target = torch.linspace(float(lam[-1]), float(lam[0]), steps + 1, dtype=torch.float64)
        ts = _interp(target, lam, torch.log(fine)).exp()
    ts[0], ts[-1] = T, t_eps
    if not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"grid {grid!r} with {steps} steps gives repeated times; use fewer steps or another grid")
    return ts


def _interp(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp nondecreasing); flat parts take the left end."""
    idx = torch.searchsorted(xp, x).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    w = torch.where(x1 > x0, (x - x0) / (x1 - x0).clamp_min(1e-300), torch.zeros_like(x))
    return f0 + w.clamp(0, 1) * (f1 - f0)


class CheckedScore:
    """Wraps a user ``score_fn``: checks the output's type and shape on every call (no device sync)
    and its finiteness on the first call; casts to the state's dtype; counts calls (``nfe``)."""

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor], sde: LinearSDE):
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(z, t), got {type(score_fn).__name__}")
        self.fn = score_fn
        self.sde = sde
        self.checked = False
        self.nfe = 0

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        s = self.fn(z, t)
        self.nfe += 1
        self.sde.check_score(s, z)
        if not self.checked:
            if not bool(torch.isfinite(s).all()):
                raise ValueError(f"score_fn returned non-finite values (nan/inf) at t = {float(t.reshape(-1)[0]):.4g}")
            self.checked = True
        return s.to(z.dtype)


def _posterior_coefficients(sde: LinearSDE, t: float):
    """(Sigma_t^-1, Sigma_t^-1 c, c = Phi(0,t) e_1, Phi(0,t)) in float64, via the scale-free Cholesky factor."""
    tt = torch.tensor([t], dtype=torch.float64)
    c = sde.transition(torch.zeros(1, dtype=torch.float64), tt)[0]  # (k, k)
    L = sde.cholesky(tt)[0]
    k = sde.order
    eye = torch.eye(k, dtype=torch.float64)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)
    Sinv = Linv.T @ Linv
    col = c[:, 0]
    w = Sinv @ col  # Sigma^-1 c
    return Sinv, w, col, c


def tweedie_denoise(sde: LinearSDE, score: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: float) -> Tensor:
    """E[z_0 | z_t] from one evaluation of the last-block score (exact for any data law).

    With p_t(z) = int N(z; c x0, Sigma_t kron I) p(x0) dx0 (c = Phi(0,t) e_1, auxiliaries marginalised),
    grad log p_t = -Sigma^-1 (z - c xhat), xhat = E[x0 | z_t], so its last block gives
    xhat = (s_k + (Sigma^-1 z)_k) / (Sigma^-1 c)_k, and E[z_0 | z_t] = e_1 xhat + S0 Phi^T Sigma^-1 (z - c xhat).
    """
    Sinv, w, col, phi = _posterior_coefficients(sde, t)
    n, k = z.shape[0], sde.order
    s = score(z, torch.full((n,), t, dtype=z.dtype, device=z.device))
    zf = z.reshape(n, k, -1)
    dt, dev = z.dtype, z.device
    u_k = torch.einsum("j,bjd->bd", Sinv[-1].to(dev, dt), zf)
    xhat = (s.reshape(n, -1) + u_k) / float(w[-1])
    out = torch.zeros_like(zf)
    out[:, 0] = xhat
    if k > 1:
        G = (sde.initial_cov @ phi.T @ Sinv).to(dev, dt)  # (k, k)
        resid = zf - col.to(dev, dt)[None, :, None] * xhat[:, None]
        out = out + torch.einsum("ij,bjd->bid", G, resid)
    return out.reshape(z.shape)


def sample(
    sde: LinearSDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    *,
    solver: str = "ei",
    steps: int = 50,
    t_eps: float = 1e-3,
    grid: str | Tensor = "uniform",
    generator: torch.Generator | None = None,
    callback: Callable[[dict], None] | None = None,
    return_state: bool = False,
    denoise: bool = False,
    dtype: torch.dtype = torch.float64,
    device=None,
    **solver_options,
):
    """Sample from the model defined by ``sde`` and the last-block ``score_fn``.

    Args:
        shape: (n, *data_shape) of the output.
        solver: a name in `kinetic.solvers.SOLVERS` (em, pc, sscs, lie_trotter, ei, ode, torchsde).
        steps: number of solver steps (NFE for one-evaluation-per-step solvers); ignored by ``ode``
            (adaptive) and when ``grid`` is a tensor.
        grid: "uniform", "quadratic", "logsnr" (see `time_grid`) or decreasing times from T to t_eps.
        callback: called after every step with {"step", "t", "z"}.
        denoise: finish with the Tweedie step E[z_0 | z_{t_eps}] (one more NFE; see `tweedie_denoise`).
        solver_options: passed to the solver (e.g. ``order=2``, ``eta=1.0`` for ``ei``; ``rtol`` for ``ode``).
    Returns:
        the data block (n, *data_shape), or ``(z (n, k, *data_shape), nfe)`` with ``return_state=True``.
    """
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
    try:
        shape = tuple(int(s) for s in shape)
    except TypeError:
        raise TypeError(f"shape must be a sequence of ints (n, *data_shape), got {shape!r}") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be (n, *data_shape) with positive sizes, got {shape}")
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(sorted(SOLVERS))}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    ts = time_grid(sde, steps, t_eps, grid)
    slv = get_solver(solver, **solver_options)
    slv.check(sde, ts)
    score = CheckedScore(score_fn, sde)
    z = sde.prior_sample(shape, generator=generator, dtype=dtype, device=device)
    z, nfe = slv.run(sde, score, z, ts, generator=generator, callback=callback)
    if denoise:
        z = tweedie_denoise(sde, score, z, float(ts[-1]))
        nfe += 1
        if callback is not None:
            callback({"step": len(ts) - 1, "t": 0.0, "z": z})
    if not bool(torch.isfinite(z).all()):
        raise ValueError(
            f"sampling with solver {solver!r} produced non-finite values; the score_fn returned nan/inf "
            "during the run or the steps are too large for this solver"
        )
    if return_state:
        return z, nfe
    return z[:, 0]
