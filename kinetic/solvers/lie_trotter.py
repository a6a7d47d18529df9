"""Lie-Trotter splitting (the sampler of Shi & Liu 2024, "Generative Modelling with High-Order Langevin
Dynamics"): the first-order, unsymmetrised splitting.

Same two parts as `kinetic.solvers.sscs` (exact reverse linear OU part, Euler score part on the
noised blocks), composed as e^{h L_A} e^{h L_S}: an Euler score step at (z_i, t_i), then the exact
linear step over the whole interval. Weak order 1, one score evaluation per step.
"""

from __future__ import annotations

from .base import FixedGridSolver
from .registry import register
from .sscs import linear_step, score_step, splitting_plan

__all__ = ["LieTrotter"]


@register
class LieTrotter(FixedGridSolver):
    """Euler score step at (z_i, t_i), then the exact reverse linear step over [t_{i+1}, t_i]."""

    name = "lie_trotter"
    schema = {}

    @property
    def stochastic(self) -> bool:
        return True

    def build_plan(self, sde, ts):
        return splitting_plan(sde, ts, halves=False)

    def step(self, i, z, plan, score, noise, state):
        z = score_step(z, score(z, plan.t_score[i]), plan.score[i], plan.kappa)
        return linear_step(z, plan.lin[i], plan.noise[i], noise)
