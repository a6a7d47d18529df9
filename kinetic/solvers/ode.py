"""The probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", Eq. 13), integrated by torchdiffeq's adaptive Dormand-Prince 5(4):

    dz/dt = beta(t) (A kron I) z - 1/2 beta(t) (D[:, N] kron I) s_N(z, t)     (`LinearSDE.reverse_drift`)

from T down to t_eps (the grid's end points; ``steps`` and the grid's interior are ignored), with
kinetic's per-example error norm and a step cap (`kinetic.solvers.adaptive`). Every score is
checked for nan/inf (the adaptive loop synchronises on every step anyway).
"""

from __future__ import annotations

from torch import Tensor

from . import register
from .adaptive import dopri5
from .base import Solver, check_finite_score, checked


@register
class ProbabilityFlowODE(Solver):
    """Adaptive DOPRI5 on the probability-flow ODE; options ``rtol``, ``atol``, ``max_steps``."""

    name = "ode"
    defaults = {"rtol": 1e-5, "atol": 1e-5, "max_steps": 10_000}
    default_grid = "uniform"  # only the end points are used

    def __init__(self, **options):
        super().__init__(**options)
        for key in ("rtol", "atol"):
            v = self.options[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
                raise ValueError(f"ode: {key} must be a positive number, got {v!r}")
        v = self.options["max_steps"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"ode: max_steps must be an integer >= 1, got {v!r}")

    @property
    def order(self) -> int:
        return 5

    def run(self, sde, score, z, ts, *, generator=None, noise_sampler=None, callback=None, plan=None):
        score = checked(score, sde)
        nfe0 = score.nfe
        n = z.shape[0]

        def f(t: Tensor, y: Tensor) -> Tensor:
            tt = t.to(y.dtype).expand(n)
            s = score(y, tt)
            check_finite_score(s, y, t)
            return sde.reverse_drift(y, t.expand(n), s, probability_flow=True)

        o = self.options
        y, steps = dopri5(f, z, float(ts[0]), float(ts[-1]), rtol=o["rtol"], atol=o["atol"], max_steps=o["max_steps"],
                          what="ode sampler")
        if callback is not None:
            callback({"step": steps, "t": float(ts[-1]), "z": y, "nfe": score.nfe - nfe0})
        return y, score.nfe - nfe0
