"""Reverse-time samplers for `LinearSDE`s of any order, one module per solver, and their registry.

A solver is stateless: ``SOLVERS[name](**options)`` validates its options against the class's
``schema``, and ``solver.run(sde, score, z, ts, generator=..., noise_sampler=..., callback=...,
transform=...) -> (z, nfe)`` integrates the state z (n, k, *D) along the decreasing time grid ``ts``
(float64 CPU tensor, ts[0] = T, ts[-1] = t_eps). ``score(z, t)`` is the score of the noised blocks
(``sde.score_shape``). The fixed-grid solvers (em, pc, sscs, lie_trotter, ei, gls) share the loop
of `FixedGridSolver` (`kinetic.solvers.base`); ei and gls share the multistep step
(`kinetic.solvers.multistep`); ode and torchsde hand the integration to torchdiffeq / torchsde.

Each solver's ``convergence_order`` (weak order for the stochastic ones) and ``stochastic`` follow
from its options; ``default_grid`` is the grid `kinetic.sample` uses when none is given. Use
`kinetic.sample` rather than calling solvers directly.
"""

from __future__ import annotations

from .base import CheckedScore, FixedGridSolver, NoiseSampler, Solver, StepPlan, gaussian_noise
from .registry import SOLVERS, get_solver, register

__all__ = ["Solver", "FixedGridSolver", "CheckedScore", "NoiseSampler", "StepPlan", "gaussian_noise", "SOLVERS",
           "register", "get_solver"]

# registration: importing each module registers its solver(s)
from . import em, pc, sscs, lie_trotter, gls, ei, ode, torchsde_backend  # noqa: E402,F401
