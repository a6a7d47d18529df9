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
