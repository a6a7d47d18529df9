"""Probability-flow ODE with an adaptive Dormand-Prince 5(4) integrator (own torch implementation).

    dz/dt = beta(t) (A kron I) z - 1/2 beta(t) g^2 e_k score(z, t)      (papers.md 3.3, 6.4)

integrated from T down to t_eps (the grid's end points; ``steps`` and the grid's interior are
ignored). `dopri5` is also used by `kinetic.likelihood`. Error control: the largest, over the batch,
of the per-example RMS of err / (atol + rtol max(|y_n|, |y_n+1|)), as in torchdiffeq per example.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from . import Solver, register

# Dormand-Prince 5(4) tableau (FSAL)
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_B5 = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0.0)
_B4 = (5179 / 57600, 0.0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40)
_E = tuple(b5 - b4 for b5, b4 in zip(_B5, _B4))


def _norm(x: Tensor, scale: Tensor) -> float:
    """max over the batch of the per-example RMS of x / scale."""
    r = (x / scale).reshape(x.shape[0], -1)
    return float(r.pow(2).mean(1).sqrt().max())


def dopri5(
    f: Callable[[float, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 100_000,
    first_step: float | None = None,
) -> tuple[Tensor, int, int]:
    """Integrate dy/dt = f(t, y) from t0 to t1 (either direction); y0 (B, ...).

    Returns (y(t1), nfe, accepted steps). Raises RuntimeError if ``max_steps`` is exceeded or the
    step size underflows (a stiff or non-finite right-hand side).
    """
    if not (rtol > 0 and atol > 0):
        raise ValueError(f"rtol and atol must be positive, got rtol={rtol}, atol={atol}")
    direction = 1.0 if t1 >= t0 else -1.0
    span = abs(t1 - t0)
    y = y0
    t = float(t0)
    k1 = f(t, y)
    nfe = 1
    if span == 0:
        return y, nfe, 0
    if first_step is None:  # Hairer, Norsett & Wanner, II.4
        scale = atol + rtol * y.abs()
        d0, d1 = _norm(y, scale), _norm(k1, scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)
        y1 = y + direction * h0 * k1
        k2 = f(t + direction * h0, y1)
        nfe += 1
        d2 = _norm(k2 - k1, scale) / h0
        h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
        h = min(100 * h0, h1, span)
    else:
        h = min(abs(first_step), span)
    steps = 0
    while True:
        remaining = abs(t1 - t)
        if remaining <= 1e-12 * max(1.0, abs(t1)):
            break
        h = min(h, remaining)
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y
            for a, kk in zip(_A[i], ks):
                if a != 0.0:
                    yi = yi + (hs * a) * kk
            ks.append(f(t + _C[i] * hs, yi) if i < 7 else None)
        nfe += 6
        y_new = y
        for b, kk in zip(_B5, ks):
            if b != 0.0:
                y_new = y_new + (hs * b) * kk
        err = 0
        for e, kk in zip(_E, ks):
            if e != 0.0:
                err = err + (hs * e) * kk
        scale = atol + rtol * torch.maximum(y.abs(), y_new.abs())
        en = _norm(err, scale)
        if not math.isfinite(en):
            h *= 0.2
            if h < 1e-14 * max(1.0, span):
                raise RuntimeError("dopri5: non-finite values; the right-hand side returned nan/inf")
            continue
        if en <= 1.0:
            t = t + hs if abs(t1 - (t + hs)) > 1e-12 * max(1.0, abs(t1)) else float(t1)
            y = y_new
            k1 = ks[6]  # FSAL: f(t_new, y_new)
            steps += 1
        factor = 10.0 if en == 0 else min(10.0, max(0.2, 0.9 * en ** (-0.2)))
        h = h * factor
        if steps >= max_steps:
            raise RuntimeError(f"dopri5: more than max_steps = {max_steps} steps; loosen rtol/atol")
        if h < 1e-14 * max(1.0, span):
            raise RuntimeError("dopri5: step size underflow (stiff problem); loosen rtol/atol or raise t_eps")
    return y, nfe, steps


@register
class ProbabilityFlowODE(Solver):
    """Adaptive DOPRI5 on the probability-flow ODE; options ``rtol``, ``atol``, ``max_steps``."""

    name = "ode"
    order = 5
    stochastic = False
    defaults = {"rtol": 1e-5, "atol": 1e-5, "max_steps": 100_000}

    def __init__(self, **options):
        super().__init__(**options)
        for key in ("rtol", "atol"):
            v = self.options[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"ode: {key} must be a positive number, got {v!r}")

    def run(self, sde, score, z, ts, *, generator=None, callback=None):
        A = sde.drift_matrix.to(z.device, z.dtype)
        n, k = z.shape[0], sde.order
        half_g2 = 0.5 * sde.g2
        schedule = sde.schedule

        def f(t: float, y: Tensor) -> Tensor:
            beta = float(schedule.beta(torch.tensor(t, dtype=torch.float64)))
            s = score(y, torch.full((n,), t, dtype=y.dtype, device=y.device))
            out = beta * torch.einsum("ij,bj...->bi...", A, y)
            out[:, -1] = out[:, -1] - (half_g2 * beta) * s
            return out

        o = self.options
        y, nfe, steps = dopri5(f, z, float(ts[0]), float(ts[-1]), rtol=o["rtol"], atol=o["atol"], max_steps=o["max_steps"])
        if callback is not None:
            callback({"step": steps, "t": float(ts[-1]), "z": y})
        return y, nfe
