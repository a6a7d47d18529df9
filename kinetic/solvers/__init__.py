"""Reverse-time samplers for `LinearSDE`s of any order, one module per solver, and their registry.

A solver is stateless: ``SOLVERS[name](**options)`` validates its options, and
``solver.run(sde, score, z, ts, generator=..., callback=...) -> (z, nfe)`` integrates the state
z (n, k, *D) along the decreasing time grid ``ts`` (float64 CPU tensor, ts[0] = T, ts[-1] = t_eps).
Every k x k coefficient for the whole grid is computed before the loop; the loop itself does no
host-device synchronisation. ``score(z, t)`` is the (already validated) last-block score.

Each solver declares ``order`` (its convergence order: weak order for the stochastic ones) and
``stochastic``. Use `kinetic.sampling.sample` rather than calling solvers directly.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["Solver", "SOLVERS", "register", "get_solver"]

SOLVERS: dict[str, type["Solver"]] = {}


def register(cls: type["Solver"]) -> type["Solver"]:
    """Class decorator: add a `Solver` subclass to `SOLVERS` under ``cls.name``."""
    if not cls.name:
        raise ValueError("a solver class needs a non-empty name")
    SOLVERS[cls.name] = cls
    return cls


class Solver:
    """Base class. Subclasses set ``name``, ``order``, ``stochastic``, ``defaults`` (option -> value)
    and implement `run`. Options are checked against ``defaults``: unknown names raise ValueError."""

    name: str = ""
    order: int = 1
    stochastic: bool = False
    defaults: dict = {}

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"solver {self.name!r} got unknown option(s) {unknown}; valid options: {valid}")
        self.options = {**self.defaults, **options}

    def check(self, sde, ts: Tensor) -> None:
        """Raise ValueError if this solver cannot run this SDE / grid (default: always fine)."""

    def run(
        self,
        sde,
        score: Callable[[Tensor, Tensor], Tensor],
        z: Tensor,
        ts: Tensor,
        *,
        generator: torch.Generator | None = None,
        callback: Callable[[dict], None] | None = None,
    ) -> tuple[Tensor, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


def get_solver(name: str, **options) -> Solver:
    """Instantiate a registered solver by name; unknown names raise ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](**options)


# ---------------------------------------------------------------- shared helpers
def noise_like(z: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


def last_block_noise(z: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn((z.shape[0], *z.shape[2:]), generator=generator, dtype=z.dtype, device=z.device)


def grid_quantities(sde, ts: Tensor) -> dict:
    """float64 CPU per-node quantities: t, tau = B(t), beta(t), step sizes h (N,) and dtau (N,)."""
    ts = ts.to(torch.float64).cpu()
    tau = sde.tau(ts)
    beta = sde.beta(ts)
    return {"t": ts, "tau": tau, "beta": beta, "h": ts[:-1] - ts[1:], "dtau": tau[:-1] - tau[1:]}


# registration: importing each module registers its solver(s)
from . import em, pc, sscs, lie_trotter, ei, ode, torchsde_backend  # noqa: E402,F401
