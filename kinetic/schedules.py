"""Time scalings beta(t) > 0 and their integrals B(t) = int_0^t beta(s) ds (the time change tau).

Every schedule works on float64 tensors of any shape and can be turned into a plain dict
(`spec`) and back (`schedule_from_spec`) so checkpoints hold data, not code.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "Schedule",
    "ConstantSchedule",
    "LinearSchedule",
    "ExponentialVarianceSchedule",
    "CustomSchedule",
    "schedule_from_spec",
]


def _t64(t) -> Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class Schedule:
    """Base class: subclasses define ``beta(t)`` and ``integral(t)`` (= B(t), B(0) = 0)."""

    def beta(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def integral(self, t: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def integral_inverse(self, tau: Tensor, T: float) -> Tensor:
        """t in [0, T] with B(t) = tau, by bisection (B is increasing)."""
        tau = _t64(tau)
        lo = torch.zeros_like(tau)
        hi = torch.full_like(tau, float(T))
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            below = self.integral(mid) < tau
            lo = torch.where(below, mid, lo)
            hi = torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def spec(self) -> dict:  # pragma: no cover - abstract
        raise NotImplementedError

    #: points of the grid on [0, T] on which `check` looks at beta and B
    CHECK_POINTS = 4097

    def check(self, T: float) -> None:
        """ValueError naming the failed check unless, on a fine grid of [0, T]: beta(t) is finite
        and > 0, B(0) = 0, B is increasing, and B(t) agrees with the integral of beta (composite
        Simpson on pairs of grid cells, to 1e-4 relative to B(T))."""
        t = torch.linspace(0.0, float(T), self.CHECK_POINTS, dtype=torch.float64)
        try:
            b, B = _t64(self.beta(t)), _t64(self.integral(t))
        except Exception as err:  # noqa: BLE001 - a user's callable: say which one failed
            raise ValueError(f"schedule: beta(t) / B(t) failed on a float64 tensor of times: {type(err).__name__}: "
                             f"{str(err)[:200]}") from None
        if b.shape != t.shape or B.shape != t.shape:
            raise ValueError(f"schedule: beta(t) and B(t) must return one value per time (shape {tuple(t.shape)}); "
                             f"got {tuple(b.shape)} and {tuple(B.shape)}")
        bad = ~torch.isfinite(b) | (b <= 0)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise ValueError(f"schedule: beta(t) must be finite and positive on [0, T]; beta({float(t[i]):.6g}) = "
                             f"{float(b[i]):.6g}")
        if not bool(torch.isfinite(B).all()):
            raise ValueError("schedule: B(t) must be finite on [0, T]")
        if abs(float(B[0])) > 1e-12 * max(1.0, abs(float(B[-1]))):
            raise ValueError(f"schedule: B(0) must be 0 (B(t) is the integral of beta from 0 to t); got B(0) = "
                             f"{float(B[0]):.6g}")
        dB = B[1:] - B[:-1]
        if bool((dB <= 0).any()):
            i = int((dB <= 0).nonzero()[0])
            raise ValueError(f"schedule: B(t) must be increasing (its derivative is beta > 0); B({float(t[i + 1]):.6g}) = "
                             f"{float(B[i + 1]):.6g} <= B({float(t[i]):.6g}) = {float(B[i]):.6g}")
        h = float(t[1] - t[0])
        simpson = h / 3 * (b[:-2:2] + 4 * b[1:-1:2] + b[2::2])  # the integral over each pair of cells
        quad = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(simpson, 0)])
        if not bool(torch.isfinite(quad).all()):
            raise OverflowError("schedule: the integral of beta(t) overflows float64 on [0, T]; use smaller values")
        err = (quad - (B[::2] - B[0])).abs()
        tol = 1e-4 * max(abs(float(B[-1])), 1e-300)
        if float(err.max()) > tol:
            i = int(err.argmax()) * 2
            raise ValueError(f"schedule: B(t) must be the integral of beta(t) from 0 to t; at t = {float(t[i]):.6g} "
                             f"the integral of beta is {float(quad[i // 2]):.6g} but B = {float(B[i]):.6g}")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.spec().items() if k != "type")
        return f"{type(self).__name__}({args})"


def _positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {value}")
    return value


class ConstantSchedule(Schedule):
    """beta(t) = beta, B(t) = beta t."""

    def __init__(self, beta: float = 1.0):
        self.value = _positive("beta", beta)

    def beta(self, t):
        return torch.full_like(_t64(t), self.value)

    def integral(self, t):
        return self.value * _t64(t)

    def integral_inverse(self, tau, T):
        return _t64(tau) / self.value

    def spec(self):
        return {"type": "constant", "beta": self.value}


class LinearSchedule(Schedule):
    """beta(t) = beta_min + (beta_max - beta_min) t / T (Song et al.'s VP), B(t) its integral."""

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0):
        self.beta_min = _positive("beta_min", beta_min)
        self.beta_max = _positive("beta_max", beta_max)
        self.T = _positive("T", T)

    def beta(self, t):
        return self.beta_min + (self.beta_max - self.beta_min) * _t64(t) / self.T

    def integral(self, t):
        t = _t64(t)
        return self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2 / self.T

    def integral_inverse(self, tau, T):
        tau = _t64(tau)
        a = 0.5 * (self.beta_max - self.beta_min) / self.T
        b = self.beta_min
        if a == 0:
            return tau / b
        # stable root of a t^2 + b t - tau = 0
        return 2 * tau / (b + torch.sqrt(b * b + 4 * a * tau))

    def spec(self):
        return {"type": "linear", "beta_min": self.beta_min, "beta_max": self.beta_max, "T": self.T}


class ExponentialVarianceSchedule(Schedule):
    """VE: sigma(t) = sigma_min (sigma_max/sigma_min)^(t/T), beta = d sigma^2/dt, B = sigma^2(t) - sigma^2(0)."""

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0):
        self.sigma_min = _positive("sigma_min", sigma_min)
        self.sigma_max = _positive("sigma_max", sigma_max)
        if self.sigma_max <= self.sigma_min:
            raise ValueError(f"sigma_max must exceed sigma_min, got {sigma_max} <= {sigma_min}")
        self.T = _positive("T", T)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        return self.sigma_min * torch.exp(self._log_ratio * _t64(t) / self.T)

    def beta(self, t):
        return 2.0 * self.sigma(t) ** 2 * self._log_ratio / self.T

    def integral(self, t):
        # sigma_min^2 (exp(2 c t) - 1), written with expm1 for accuracy near t = 0
        return self.sigma_min**2 * torch.expm1(2.0 * self._log_ratio * _t64(t) / self.T)

    def integral_inverse(self, tau, T):
        return torch.log1p(_t64(tau) / self.sigma_min**2) * self.T / (2.0 * self._log_ratio)

    def spec(self):
        return {"type": "ve", "sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "T": self.T}


class CustomSchedule(Schedule):
    """A user's beta(t) and B(t) as callables on float64 tensors (not serialisable to a spec)."""

    def __init__(self, beta: Callable[[Tensor], Tensor], integral: Callable[[Tensor], Tensor]):
        if not callable(beta) or not callable(integral):
            raise TypeError("CustomSchedule: beta and integral must be callables t -> tensor")
        self._beta, self._integral = beta, integral

    def beta(self, t):
        return torch.as_tensor(self._beta(_t64(t)), dtype=torch.float64)

    def integral(self, t):
        return torch.as_tensor(self._integral(_t64(t)), dtype=torch.float64)

    def spec(self):
        raise ValueError("a CustomSchedule holds code and cannot be written into a checkpoint spec")

    def __repr__(self):
        return "CustomSchedule(...)"


def schedule_from_spec(spec: dict) -> Schedule:
    """Inverse of ``Schedule.spec()``."""
    kinds = {"constant": ConstantSchedule, "linear": LinearSchedule, "ve": ExponentialVarianceSchedule}
    if not isinstance(spec, dict) or spec.get("type") not in kinds:
        raise ValueError(f"schedule spec: expected a dict with type in {sorted(kinds)}, got {spec!r}")
    args = {k: v for k, v in spec.items() if k != "type"}
    return kinds[spec["type"]](**args)
