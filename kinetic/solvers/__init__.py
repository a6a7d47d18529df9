"""Reverse-time samplers for `LinearSDE`s of any order, one module per solver, and their registry.

A solver is stateless: ``SOLVERS[name](**options)`` validates its options, and
``solver.run(sde, score, z, ts, generator=..., noise_sampler=..., callback=...) -> (z, nfe)``
integrates the state z (n, k, *D) along the decreasing time grid ``ts`` (float64 CPU tensor,
ts[0] = T, ts[-1] = t_eps). ``score(z, t)`` is the score of the noised blocks (``sde.score_shape``).
The fixed-grid solvers (em, pc, sscs, lie_trotter, ei, gls) share the loop of `FixedGridSolver`
(`kinetic.solvers.base`); ode and torchsde hand the integration to torchdiffeq / torchsde.

Each solver's ``order`` (its convergence order: weak order for the stochastic ones) and
``stochastic`` follow from its options; ``default_grid`` is the grid `kinetic.sample` uses when
none is given. Use `kinetic.sample` rather than calling solvers directly.
"""

from __future__ import annotations

from .base import CheckedScore, FixedGridSolver, NoiseSampler, Solver, gaussian_noise

__all__ = ["Solver", "FixedGridSolver", "CheckedScore", "NoiseSampler", "gaussian_noise", "SOLVERS", "register",
           "get_solver"]

SOLVERS: dict[str, type[Solver]] = {}


def register(cls: type[Solver]) -> type[Solver]:
    """Class decorator: add a `Solver` subclass to `SOLVERS` under ``cls.name``."""
    if not cls.name:
        raise ValueError("a solver class needs a non-empty name")
    SOLVERS[cls.name] = cls
    return cls


def get_solver(name: str, **options) -> Solver:
    """Instantiate a registered solver by name; unknown names raise ValueError listing the valid ones."""
    if not isinstance(name, str) or name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; valid solvers: {', '.join(sorted(SOLVERS))}")
    return SOLVERS[name](**options)


# registration: importing each module registers its solver(s)
from . import em, pc, sscs, lie_trotter, ei, gls, ode, torchsde_backend  # noqa: E402,F401
