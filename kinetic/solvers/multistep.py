"""The multistep pieces that `ei` and `gls` share: the Gaussian-reference data prediction, the
Adams-Bashforth / Adams-Moulton weights from a step's moments, the `MultistepPlan` and the step.

Both solvers write one step as z' = F z + sum_j W_j mu_j (+ noise), mu_j the data predictions of the
last steps (`kinetic.solvers.ei`, module docstring: the k-block flow; `kinetic.solvers.gls`: the VE
flow of the GLS estimate). They differ only in how F and the moments of the data kernel are computed.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import torch
from torch import Tensor

from .base import FixedGridSolver, StepPlan, mix, noised_columns, number, one_of

__all__ = ["MAX_MOMENT", "MULTISTEP", "MultistepPlan", "MultistepSolver", "reference_terms", "multistep_plan",
           "MULTISTEP_CHECK", "CORRECTOR_CHECK", "DATA_STD_CHECK"]

MAX_MOMENT = 4  # polynomials of degree <= 4 in the multistep predictor / corrector (up to 5 nodes)
MULTISTEP = (1, 2, 3, 4)  # the multistep orders (number of past data predictions in the predictor)
MULTISTEP_CHECK = one_of(*MULTISTEP, text="1, 2, 3 or 4")  # the option validators ei and gls share
CORRECTOR_CHECK = one_of(True, False, None, text="True, False or None")
DATA_STD_CHECK = number(0.0)


@dataclasses.dataclass
class MultistepPlan(StepPlan):
    """Per-step coefficients of the multistep exponential step (N steps): ``transition`` F (N, k, k);
    ``data_weights`` W (N, multistep, k) (zero-padded; W[i, j] multiplies the data prediction of step
    i - j); ``score_coef`` (N, m) and ``state_coef`` (N, k), the data prediction mu_i = score_coef_i .
    s_N + state_coef_i . z; with the corrector, ``corrector_weights`` Wc (N, multistep + 1, k) (Wc[i, 0]
    multiplies the prediction at the END of step i, Wc[i, 1 + j] that of step i - j); ``noise_chol``
    chol P (N, k, k) when eta > 0; ``substeps`` (N,) int64 (RK4 substeps of the k-block plan)."""

    transition: Tensor
    data_weights: Tensor
    score_coef: Tensor
    state_coef: Tensor
    corrector_weights: Tensor | None = None
    noise_chol: Tensor | None = None
    substeps: Tensor | None = None


def reference_terms(sde, t: Tensor, data_std: float, score_weight: float) -> dict:
    """At times t (n,), float64: tau, the data column c (n, k), the linear part M (n, k, k) and the
    data-prediction input b (n, k) of the reverse dynamics, the data-prediction map
    mu = score_coef . s_N + state_coef . z (score_coef (n, m), state_coef (n, k)), its
    normaliser w^T D_NN w (n,), and lambda(t) (n,)."""
    co = sde.coefficients(t)
    c = co.c
    L = co.reference_chol(data_std**2)  # C = Sigma + sigma_d^2 c c^T in square-root form
    N = list(sde.noised_blocks)
    k = sde.order
    E_N = torch.eye(k, dtype=torch.float64, device=L.device)[:, N]
    Y = torch.linalg.solve_triangular(L, E_N, upper=False)  # L^-1 E_N
    R = torch.linalg.solve_triangular(L.transpose(-1, -2), Y, upper=True).transpose(-1, -2)  # (C^-1)[N, :]
    w = (R @ c.unsqueeze(-1)).squeeze(-1)  # (C^-1 c)_N
    Dw = w @ sde.noise_block  # D_NN w (D_NN symmetric)
    den = (w * Dw).sum(-1)
    Dn = noised_columns(sde)
    return {
        "tau": co.tau,
        "c": c,
        "M": sde.drift_matrix + score_weight * (Dn @ R),
        "b": score_weight * (w @ Dn.T),
        "score_coef": Dw / den[..., None],
        "state_coef": (Dw.unsqueeze(-2) @ R).squeeze(-2) / den[..., None],
        "den": den,
        "lam": co.lam,
        "logsig": torch.log(co.sigma_tilde),
    }


def multistep_plan(F: Tensor, moments: Tensor, x_grid: Tensor, ref: dict, t: Tensor, multistep: int,
                   corrector: bool) -> MultistepPlan:
    """The `MultistepPlan` from the transitions F (N, k, k), the moments (N, MAX_MOMENT + 1, k) of each
    step's data-prediction kernel in the polynomial variable x_grid (N + 1,), `reference_terms`' output
    ``ref`` on the grid t (N + 1,), the ``multistep`` order and ``corrector``."""
    x_step = x_grid[:-1] - x_grid[1:]
    return MultistepPlan(
        t_score=t[:-1],
        transition=F,
        data_weights=_multistep_weights(x_grid, x_step, moments, multistep, new=False),
        score_coef=ref["score_coef"][:-1],
        state_coef=ref["state_coef"][:-1],
        corrector_weights=_multistep_weights(x_grid, x_step, moments, multistep + 1, new=True) if corrector else None,
    )


def _multistep_weights(x_grid: Tensor, x_step: Tensor, moments: Tensor, q: int, new: bool) -> Tensor:
    """(N, q, k) weights of the data predictions for every step i, from the Lagrange polynomial
    through q nodes (fewer at the first steps, where the history is shorter; zero-padded): the
    predictor (``new`` False) through x_i, x_{i-1}, ..., x_{i-q+1} (Adams-Bashforth); the corrector
    (``new`` True) through x_{i+1}, x_i, ..., x_{i-q+2} (Adams-Moulton: the first weight multiplies
    the prediction at the step's end)."""
    N, k = moments.shape[0], moments.shape[-1]
    W = torch.zeros(N, q, k, dtype=torch.float64)
    first = 1 if new else 0
    for i in range(min(q - 1 - first, N)):  # the first steps: as many past nodes as there are
        W[i, : i + 1 + first] = _lagrange(x_grid, x_step, torch.tensor([i]), _offsets(i + 1 + first, new), moments)[0]
    lo = max(q - 1 - first, 0)
    if N > lo:
        W[lo:] = _lagrange(x_grid, x_step, torch.arange(lo, N), _offsets(q, new), moments)
    return W


def _offsets(q: int, new: bool) -> Tensor:
    """Grid-index offsets of the q interpolation nodes of step i: 0, -1, ... (predictor), or
    +1, 0, -1, ... (corrector)."""
    return torch.arange(q) * -1 + (1 if new else 0)


def _lagrange(x_grid: Tensor, x_step: Tensor, idx: Tensor, offsets: Tensor, moments: Tensor) -> Tensor:
    """W[i, j] = sum_p a[j, p] moments[i, p] for the steps idx, with l_j(x) = sum_p a[j, p] x^p the
    Lagrange basis through the nodes (x_{i+offsets_j} - x_i) / step_i. Returns (len(idx), q, k)."""
    q = offsets.numel()
    nodes = (x_grid[idx[:, None] + offsets] - x_grid[idx, None]) / x_step[idx, None]  # (n, q)
    V = nodes[..., None] ** torch.arange(q, dtype=torch.float64)  # V[l, p]
    a = torch.linalg.inv(V).transpose(-1, -2)  # a[j, p]
    return a @ moments[idx, :q]


class MultistepSolver(FixedGridSolver):
    """The exponential multistep step shared by ``ei`` and ``gls`` (options ``multistep``, ``corrector``,
    ``data_std``, ``eta``; see each solver). Subclasses set ``eta`` and `build_plan`."""

    multistep_default: ClassVar[int] = 2
    eta: float = 0.0

    @property
    def data_std(self) -> float:
        return self.options["data_std"]

    @property
    def corrector(self) -> bool:
        """Whether the corrector runs (None: on for the deterministic flow, eta = 0)."""
        c = self.options["corrector"]
        return self.eta == 0 if c is None else bool(c)

    def multistep_for(self, gls: bool) -> int:
        """The multistep order of a run of the GLS plan (``gls``) or the k-block plan."""
        return int(self.options["multistep"] or self.multistep_default)

    @property
    def convergence_order(self) -> int:
        return self.multistep_for(False) + int(self.corrector and self.eta == 0)

    @property
    def stochastic(self) -> bool:
        return self.eta > 0

    def step(self, i, z, plan: MultistepPlan, score, noise, state):
        s = score(z, plan.t_score[i])
        mu = (mix(plan.score_coef[i : i + 1], s) + mix(plan.state_coef[i : i + 1], z))[:, 0]
        history = state.setdefault("data", [])  # data predictions, newest first
        history.insert(0, mu)
        if plan.corrector_weights is not None and i > 0:
            # redo the step just taken with the polynomial through its new end point (no extra NFE)
            Wc = plan.corrector_weights[i - 1]
            z = mix(plan.transition[i - 1], state["start"]) + state["noise"]
            for j, mu_j in enumerate(history[: Wc.shape[0]]):
                z = z + Wc[j][None, :, None] * mu_j[:, None, :]
        W = plan.data_weights[i]
        del history[W.shape[0] :]  # the predictor's nodes; the corrector adds the next one
        new = mix(plan.transition[i], z)
        for j, mu_j in enumerate(history[: W.shape[0]]):
            new = new + W[j][None, :, None] * mu_j[:, None, :]
        xi = mix(plan.noise_chol[i], noise(z.shape[1])) if plan.noise_chol is not None else torch.zeros_like(z[:1])
        if plan.corrector_weights is not None:
            state["start"], state["noise"] = z, xi
        return new + xi
