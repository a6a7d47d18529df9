"""The probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", Eq. 13), integrated by torchdiffeq's adaptive Dormand-Prince 5(4):

    dz/dt = beta(t) (A kron I) z - 1/2 beta(t) (D[:, N] kron I) s_N(z, t)     (`LinearSDE.reverse_drift`)

from T down to t_eps (the grid's end points; ``steps`` and the grid's interior are ignored), with
kinetic's per-example error norm and a step cap (`kinetic.solvers.adaptive`). Every score is
checked for nan/inf when it is made (the adaptive loop synchronises on every step anyway). Takes no
``transform``: there are no fixed steps to apply it after.
"""

from __future__ import annotations

from torch import Tensor

from .adaptive import dopri5
from .base import Solver, check_finite_score, integer, number
from .registry import register


@register
class ProbabilityFlowODE(Solver):
    """Adaptive DOPRI5 on the probability-flow ODE; options ``rtol``, ``atol``, ``max_steps``."""

    name = "ode"
    schema = {"rtol": (number(0.0, positive=True), 1e-5), "atol": (number(0.0, positive=True), 1e-5),
              "max_steps": (integer(1), 10_000)}
    default_grid = "uniform"  # only the end points are used

    @property
    def convergence_order(self) -> int:
        return 5

    def integrate(self, sde, score, z, ts, plan, *, generator, noise_sampler, emit, transform):
        n = z.shape[0]

        def f(t: Tensor, y: Tensor) -> Tensor:
            tt = t.to(y.dtype).expand(n)
            s = score(y, tt)
            check_finite_score(s, y, t)
            return sde.reverse_drift(y, t.expand(n), s, probability_flow=True)

        o = self.options
        y, steps = dopri5(f, z, plan.times[0], plan.times[-1], rtol=o["rtol"], atol=o["atol"], max_steps=o["max_steps"],
                          what="ode sampler")
        emit(steps, plan.times[-1], y)
        return y
