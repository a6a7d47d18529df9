"""Adaptive Dormand-Prince 5(4) integration on torchdiffeq, with kinetic's error norm and a step cap.

Used by the ``ode`` sampler and by `kinetic.likelihood` (this module is not a sampler). The error
of a step is measured per example: the largest, over the batch (dim 0), of the RMS of
err / (atol + rtol max(|y_n|, |y_n+1|)) over that example's entries, so one badly resolved
example is not averaged away by the others. Every failure is one clear error: more than
``max_steps`` steps, a step size that underflows, or a state that became non-finite.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["per_example_norm", "dopri5", "IntegrationError"]


class IntegrationError(RuntimeError):
    """The adaptive integration could not reach its end point."""


def per_example_norm(x: Tensor) -> Tensor:
    """max over the batch (dim 0) of the per-example RMS of x."""
    return x.reshape(x.shape[0], -1).pow(2).mean(1).sqrt().max()


class _Counted:
    """The right-hand side as torchdiffeq calls it, counting accepted and rejected steps; the first
    evaluation (made here to choose the first step) is handed back once instead of recomputed."""

    def __init__(self, f: Callable[[Tensor, Tensor], Tensor]):
        self.f = f
        self.accepted = 0
        self.rejected = 0
        self.first = None

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        if self.first is not None:
            t0, y0, f0 = self.first
            self.first = None
            if y is y0 and float(t) == t0:
                return f0
        return self.f(t, y)

    def callback_accept_step(self, t0, y0, dt) -> None:
        self.accepted += 1

    def callback_reject_step(self, t0, y0, dt) -> None:
        self.rejected += 1


def dopri5(
    f: Callable[[Tensor, Tensor], Tensor],
    y0: Tensor,
    t0: float,
    t1: float,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    max_steps: int = 10_000,
    what: str = "ode",
) -> tuple[Tensor, int]:
    """Integrate dy/dt = f(t, y) from t0 to t1 (either direction); y0 (B, ...), t a float64 0-d tensor.

    Returns (y(t1), accepted steps). Raises `IntegrationError` (naming ``what``) after more than
    ``max_steps`` steps (accepted or rejected), on step-size underflow and on a non-finite state.
    """
    import torchdiffeq

    func = _Counted(f)
    t0, t1 = float(t0), float(t1)
    ts = torch.tensor([t0, t1], dtype=torch.float64, device=y0.device)
    first = _first_step(func, y0, ts, rtol, atol)
    try:
        ys = torchdiffeq.odeint(
            func, y0, ts, rtol=rtol, atol=atol, method="dopri5",
            # step_t: the last step ends exactly at t1 (torchdiffeq would otherwise step past it and
            # interpolate back, evaluating the score outside [t_eps, T])
            options={"norm": per_example_norm, "max_num_steps": int(max_steps), "first_step": first, "step_t": ts[1:]},
        )
    except AssertionError as err:
        msg = str(err)
        if "max_num_steps" in msg:
            raise IntegrationError(
                f"{what}: more than max_steps = {max_steps} adaptive steps ({func.accepted} accepted) between "
                f"t = {t0:g} and {t1:g}; loosen rtol/atol or raise max_steps"
            ) from None
        if "non-finite" in msg or "underflow" in msg:
            raise IntegrationError(
                f"{what}: the adaptive step size collapsed after {func.accepted} steps (the state or its derivative "
                "became non-finite, or the problem is too stiff for these tolerances); check the score for nan/inf "
                "and loosen rtol/atol"
            ) from None
        raise
    return ys[-1], func.accepted


def _first_step(func: _Counted, y0: Tensor, ts: Tensor, rtol: float, atol: float) -> float:
    """Hairer, Norsett & Wanner, "Solving Ordinary Differential Equations I", Sec. II.4, with the
    trial step kept inside [t0, t1] (torchdiffeq's own choice may leave it, where the score is
    undefined). Two evaluations; the first is kept for torchdiffeq's first stage."""
    t0, t1 = ts[0], ts[1]
    span = float((t1 - t0).abs())
    direction = 1.0 if float(t1) >= float(t0) else -1.0
    f0 = func.f(t0, y0)
    scale = atol + rtol * y0.abs()
    d0, d1 = float(per_example_norm(y0 / scale)), float(per_example_norm(f0 / scale))
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    f1 = func.f(t0 + direction * h0, y0 + (direction * h0) * f0)
    d2 = float(per_example_norm((f1 - f0) / scale)) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / 5)
    func.first = (float(t0), y0, f0)
    return min(100 * h0, h1, span)
