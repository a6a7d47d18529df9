"""Predictor-corrector sampling (Song et al. 2021, "Score-Based Generative Modeling through Stochastic
Differential Equations", Algorithms 4 and 5) for SDEs whose every block is noised.

Per time t_i: ``n_corrector`` Langevin MCMC steps at t_i, z <- z + eps s + sqrt(2 eps) xi with step
size eps = 2 alpha (snr ||xi|| / ||s||)^2 (norms averaged over the batch; alpha = exp(2 h beta_i
tr(A) / k), i.e. 1 - beta_i h for VP and 1 for VE, the paper's alpha_i), then one Euler-Maruyama
predictor step (`kinetic.solvers.em`). NFE = steps (1 + n_corrector).

The Langevin corrector needs the score of the whole state, so every block must be noised
(N = all blocks: VP, VE, and e.g. a full-rank G). Where a block carries no noise the model gives no
score for it (CLD, HOLD), and Langevin steps on the noised blocks alone would sample those given
the others and never correct the data block: such SDEs are refused.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .base import FixedGridSolver, integer, number
from .em import EulerPlan, euler_plan, euler_step
from .registry import register

__all__ = ["PredictorCorrector", "PCPlan"]


@dataclasses.dataclass
class PCPlan(EulerPlan):
    """The Euler-Maruyama predictor's `EulerPlan` and ``alpha`` (N,), the corrector's step-size factor."""

    alpha: Tensor | None = None


@register
class PredictorCorrector(FixedGridSolver):
    name = "pc"
    schema = {"snr": (number(0.0), 0.16), "n_corrector": (integer(0), 1)}

    @property
    def stochastic(self) -> bool:
        return True

    def check(self, sde, ts):
        if len(sde.noised_blocks) != sde.order:
            raise ValueError(
                f"pc needs noise on every block (noised blocks {sde.noised_blocks} of {sde.order}): the Langevin "
                "corrector needs the score of the whole state, but the model provides only the score of the noised "
                "blocks; use sscs, ei or em instead"
            )

    def build_plan(self, sde, ts):
        hb = (ts[:-1] - ts[1:]) * sde.beta(ts[:-1])
        alpha = torch.exp(2.0 * hb * float(torch.trace(sde.drift_matrix)) / sde.order)
        return PCPlan(**vars(euler_plan(sde, ts, stochastic=True)), alpha=alpha)

    def step(self, i, z, plan, score, noise, state):
        n = z.shape[0]
        snr = float(self.options["snr"])
        for _ in range(self.options["n_corrector"]):
            g = score(z, plan.t_score[i])
            xi = noise(z.shape[1])
            gn = torch.linalg.vector_norm(g.reshape(n, -1), dim=-1).mean()
            nn = torch.linalg.vector_norm(xi.reshape(n, -1), dim=-1).mean()
            eps = 2.0 * plan.alpha[i] * (snr * nn / gn) ** 2
            z = z + eps * g + torch.sqrt(2.0 * eps) * xi
        return euler_step(i, z, plan, score, noise)
