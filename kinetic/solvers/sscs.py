"""Symmetric splitting sampler (SSCS; Dockhorn, Vahdat & Kreis 2022, "Score-Based Generative Modeling
with Critically-Damped Langevin Diffusion", Eq. 10 and App. D) for any linear SDE.

In reverse time the SDE's drift -beta A z + beta (D[:, N] kron I) s_N splits into a linear part
solved exactly (a proper, stable OU process with the SDE's noise D) and a score part taken by Euler:

    A_rev = -A - D S_inf^-1          (the drift of the time-reversed STATIONARY process: Hurwitz, with
                                      stationary law N(0, S_inf); when S_inf is diagonal this flips the
                                      sign of the noised diagonal entries of -A: the reversed friction)
    score part:  dz = beta D[:, N] [s_N(z) + kappa z] ds,   kappa = (S_inf^-1)[N, :]
                                     (the score minus the prior's score, on the noised blocks)

(D S_inf^-1 z = D[:, N] (S_inf^-1 z)_N since D vanishes outside the noised blocks.) For CLD,
S_inf = diag(1, M) gives A_rev = [[0, -1/M], [1, -Gamma/M]] and the score part 2 Gamma beta [s + v / M]:
exactly Dockhorn et al.'s H + O and S. Without a stationary law (VE) kappa = -2 D_NN^-1 diag(A)_N
(for VE: 0, pure Brownian noise; A_rev = -A with the sign of the noised diagonal entries flipped).

SSCS step (t_i -> t_{i+1}, h = t_i - t_{i+1}): exact linear half step over [t_i - h/2, t_i], Euler
score step over the whole step (score at t_i as in the paper's code, or at the midpoint with
``score_time="mid"``), exact linear half step over [t_{i+1}, t_i - h/2]. The Euler score step makes
it first order overall (a Strang splitting is second order only with a second-order middle step).
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from .. import linalg
from .base import FixedGridSolver, StepPlan, mix, noised_columns, one_of, step_sizes
from .registry import register

__all__ = ["SSCS", "SplittingPlan", "reversed_linear_part", "linear_steps", "splitting_plan"]


@dataclasses.dataclass
class SplittingPlan(StepPlan):
    """Coefficients of the splitting samplers (N steps): ``score`` dtau_i D[:, N] (N, k, m), ``kappa``
    (m, k), and the exact linear steps (transition and noise factor, (N, k, k)): with halves
    ``lin1``/``noise1`` over [t_i - h/2, t_i] and ``lin2``/``noise2`` over [t_{i+1}, t_i - h/2],
    otherwise ``lin``/``noise`` over the whole step (the others None)."""

    score: Tensor
    kappa: Tensor
    lin1: Tensor | None = None
    noise1: Tensor | None = None
    lin2: Tensor | None = None
    noise2: Tensor | None = None
    lin: Tensor | None = None
    noise: Tensor | None = None


def reversed_linear_part(sde) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_rev (k, k), kappa (m, k)): reverse drift = beta A_rev z + beta D[:, N] (s_N + kappa z).
    For one noised block kappa is returned as a (k,) row."""
    A = sde.drift_matrix
    N = list(sde.noised_blocks)
    S_inf = sde.stationary_cov
    if S_inf is not None:
        kappa = torch.linalg.inv(S_inf)[N]
    else:
        diagA = torch.zeros(len(N), sde.order, dtype=torch.float64)
        diagA[range(len(N)), N] = torch.diagonal(A)[N]
        kappa = -2.0 * torch.linalg.solve(sde.noise_block, diagA)
    A_rev = -A - noised_columns(sde) @ kappa
    return A_rev, (kappa[0] if len(N) == 1 else kappa)


def linear_steps(sde, dtau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reverse linear sub-steps over reverse-time tau increments dtau (M,): (Phi, chol Q), (M, k, k)."""
    A_rev, _ = reversed_linear_part(sde)
    phi, Q = linalg.transition_and_noise(A_rev, sde.noise_matrix, dtau)
    return phi, linalg.safe_cholesky(Q)


def splitting_plan(sde, ts: torch.Tensor, halves: bool, score_time: str = "start") -> SplittingPlan:
    """The float64 `SplittingPlan` of the grid ts: exact linear half steps with ``halves`` (SSCS), whole
    steps otherwise (Lie-Trotter); the score at each step's start or, with ``score_time="mid"``, midpoint."""
    q = step_sizes(sde, ts)
    _, kappa = reversed_linear_part(sde)
    t = q.t
    plan = SplittingPlan(
        score=q.dtau[:, None, None] * noised_columns(sde),  # Euler in tau: dtau = int beta dt
        kappa=kappa.reshape(len(sde.noised_blocks), sde.order),
        t_score=t[:-1] if score_time == "start" else 0.5 * (t[:-1] + t[1:]),
    )
    if halves:
        taum = sde.tau(0.5 * (t[:-1] + t[1:]))
        d1, d2 = q.tau[:-1] - taum, taum - q.tau[1:]
        phi, L = linear_steps(sde, torch.cat([d1, d2]))
        n = len(d1)
        plan.lin1, plan.noise1, plan.lin2, plan.noise2 = phi[:n], L[:n], phi[n:], L[n:]
    else:
        plan.lin, plan.noise = linear_steps(sde, q.dtau)
    return plan


def linear_step(z: torch.Tensor, P: torch.Tensor, L: torch.Tensor, noise) -> torch.Tensor:
    """The exact linear sub-step: P z + L xi (P, L (k, k); z (n, k, d))."""
    return mix(P, z) + mix(L, noise(z.shape[1]))


def score_step(z: torch.Tensor, s: torch.Tensor, coef: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """Euler step of the score part: z += coef (s_N + kappa z), coef = dtau D[:, N] (k, m),
    kappa (m, k), s (n, m, d)."""
    return z + mix(coef, s + mix(kappa, z))


@register
class SSCS(FixedGridSolver):
    name = "sscs"
    schema = {"score_time": (one_of("start", "mid"), "start")}

    @property
    def stochastic(self) -> bool:
        return True

    def build_plan(self, sde, ts):
        return splitting_plan(sde, ts, halves=True, score_time=self.options["score_time"])

    def step(self, i, z, plan, score, noise, state):
        z = linear_step(z, plan.lin1[i], plan.noise1[i], noise)
        z = score_step(z, score(z, plan.t_score[i]), plan.score[i], plan.kappa)
        return linear_step(z, plan.lin2[i], plan.noise2[i], noise)
