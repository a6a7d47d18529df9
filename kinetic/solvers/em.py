"""Euler-Maruyama on the reverse SDE (Song et al. 2021, "Score-Based Generative Modeling through
Stochastic Differential Equations", Eq. 6 and App. E): the baseline.

In forward time t, from t_i down to t_{i+1} = t_i - h, with s_N the score of the noised blocks N:

    z <- z - h beta (A kron I) z + h beta (D[:, N] kron I) s_N(z, t_i) + sqrt(h beta) (E kron I) xi

(E E^T = D = G G^T, xi standard normal on the m = len(N) noised blocks; for one noised block
this is the score and the noise on that block alone). ``probability_flow=True``: the Euler step of
the probability-flow ODE (score weight 1/2, no noise). Weak order 1; one score evaluation per step.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .base import FixedGridSolver, StepPlan, mix, noised_diffusion_factor, one_of, step_sizes
from .registry import register

__all__ = ["EulerMaruyama", "EulerPlan", "euler_plan", "euler_step"]


@dataclasses.dataclass
class EulerPlan(StepPlan):
    """Per step i: ``linear`` I - h beta A (N, k, k), ``score`` c h beta D[:, N] (N, k, m) with c = 1
    (SDE) or 1/2 (ODE), ``noise`` sqrt(h beta) E (N, k, m) (stochastic only, else None); beta at t_i."""

    linear: Tensor
    score: Tensor
    noise: Tensor | None = None


def euler_plan(sde, ts, stochastic: bool) -> EulerPlan:
    """The `EulerPlan` of the grid ts."""
    q = step_sizes(sde, ts)
    hb = q.h * q.beta[:-1]  # (N,)
    k = sde.order
    return EulerPlan(
        t_score=q.t[:-1],
        linear=torch.eye(k, dtype=torch.float64) - hb[:, None, None] * sde.drift_matrix,
        score=hb[:, None, None] * sde.reverse_score_columns(1.0 if stochastic else 0.0),
        noise=hb.sqrt()[:, None, None] * noised_diffusion_factor(sde) if stochastic else None,
    )


def euler_step(i: int, z, plan: EulerPlan, score, noise):
    """One Euler(-Maruyama) step with the `EulerPlan` coefficients; z (n, k, d)."""
    s = score(z, plan.t_score[i])
    z = mix(plan.linear[i], z) + mix(plan.score[i], s)
    if plan.noise is not None:
        E = plan.noise[i]
        z = z + mix(E, noise(E.shape[-1]))
    return z


@register
class EulerMaruyama(FixedGridSolver):
    """Options: ``probability_flow`` (True: the Euler step of the probability-flow ODE, no noise)."""

    name = "em"
    schema = {"probability_flow": (one_of(True, False, text="True or False"), False)}

    @property
    def stochastic(self) -> bool:
        return not bool(self.options["probability_flow"])

    def build_plan(self, sde, ts):
        return euler_plan(sde, ts, self.stochastic)

    def step(self, i, z, plan, score, noise, state):
        return euler_step(i, z, plan, score, noise)
