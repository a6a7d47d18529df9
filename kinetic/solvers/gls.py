"""The exponential integrator on the GLS estimate of the data: every linear SDE sampled as fast as VP.

For any linear SDE, z_u = c_u x0 + n with n ~ N(0, Sigma_u) given x0 (`kinetic.coefficients`), so the
likelihood of x0 given z_u depends on z_u only through the generalised-least-squares estimate

    y_u = sigma_u^2 c_u^T Sigma_u^-1 z_u = x0 + sigma_u eps,   sigma_u = (c_u^T Sigma_u^-1 c_u)^-1/2

(`Coefficients.sigma_tilde`), and the rest of the state, p_u = z_u - c_u y_u ~ N(0, Sigma_u - sigma_u^2 c_u
c_u^T), is independent of (x0, y_u). Hence E[x0 | z_u] = D(y_u, sigma_u), the denoiser of the VE
process y = x0 + sigma eps, whatever the order k, the drift A and the noised blocks: the auxiliaries
carry no information on the data beyond y. This solver integrates the probability-flow ODE of that
VE process, dy/dsigma = (y - D(y, sigma)) / sigma (Song et al. 2021, Eq. 13 for VE; Karras et al.
2022, "EDM", Eq. 1), with the model's data prediction, and carries p along: it is rotated in the
whitened frame of Sigma from one node to the next, so that z_u = c_u y_u + p_u keeps the exact
marginal at every node and the network is always evaluated on states of the kind it was trained
on. The result is a sample of the same model (the data block's law is the same at every node for
exact scores) by a different deterministic map than the k-block probability flow of `ei`; for k = 1
the two flows coincide (VP: DPM-Solver++ on x / alpha).

The VE step is exact in its linear part with a Gaussian reference of std sigma_d (option
``data_std``, as in `ei`): with mu = ((sigma_d^2 + sigma^2) D - sigma_d^2 y) / sigma^2 (constant for data
N(m, sigma_d^2); `ei`'s data prediction for the same reference) the ODE in lambda = -log sigma is
dy/dlambda = a (mu - y), a = sigma^2 / (sigma_d^2 + sigma^2), whose transition from lambda to lambda'
is Phi = sqrt((sigma_d^2 + sigma'^2) / (sigma_d^2 + sigma^2)). mu is a polynomial in log sigma through
the last ``multistep`` predictions (Adams-Bashforth, DPM-Solver++'s multistep), with the UniPC corrector
(Zhao et al. 2023) on by default: the weights are int Phi(lambda' <- u) a(u) l_j(u) du, computed by
composite Gauss-Legendre quadrature in lambda, with the zeroth moment 1 - Phi exact. The step is
the multistep step of `kinetic.solvers.multistep`: z' = F z + sum_j W_j mu_j with F = Phi c' g^T + T,
g^T = sigma^2 c^T Sigma^-1 (y = g . z), T the transport of p, and W_j = w_j c'. No k x k ODE is integrated, so the plan is closed form
(docs/math.md, "The GLS sampler").

Deterministic only (eta = 0); for the stochastic lambda-family use ``ei``. Its default grid is
``band`` (`kinetic.grids`): uniform in log sigma where the data estimate changes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .base import number
from .multistep import (
    CORRECTOR_CHECK, DATA_STD_CHECK, MAX_MOMENT, MULTISTEP_CHECK, MultistepPlan, MultistepSolver, multistep_plan,
    reference_terms,
)
from .registry import register

__all__ = ["GLSIntegrator", "gls_plan", "moments"]

F64 = torch.float64
_NODES, _WEIGHTS = (torch.tensor(a, dtype=F64) for a in np.polynomial.legendre.leggauss(8))
_PANEL = 0.5  # the widest quadrature panel, in lambda = -log sigma


def _transport(a: Tensor, b: Tensor) -> Tensor:
    """(n, k, k) orthogonal maps taking the unit vectors a (n, k) to b (n, k): the rotation in their
    plane when a . b > 0, else the reflection through the bisector (both map a-perp onto b-perp)."""
    k = a.shape[-1]
    eye = torch.eye(k, dtype=F64).expand(a.shape[0], k, k)
    dot = (a * b).sum(-1)
    s = a + b
    rot = eye - s[..., :, None] * s[..., None, :] / (1 + dot).clamp_min(1e-12)[..., None, None] + 2 * b[..., :, None] * a[..., None, :]
    d = a - b
    d = d / d.norm(dim=-1, keepdim=True).clamp_min(1e-300)
    ref = eye - 2 * d[..., :, None] * d[..., None, :]
    return torch.where((dot > 0)[..., None, None], rot, ref)


def moments(sigma: Tensor, data_std: float) -> tuple[Tensor, Tensor]:
    """For the steps sigma_i -> sigma_{i+1} of the VE process (sigma (N + 1,) decreasing): the linear
    part Phi (N,) and the moments m[i, p] = int Phi(lambda' <- u) a(u) x(u)^p du (N, MAX_MOMENT + 1), x
    = (log sigma(u) - log sigma_i) / (log sigma_i - log sigma_{i+1}) in [-1, 0] over the step. Composite
    Gauss-Legendre in lambda, panels of at most `_PANEL` (the kernel varies on a scale of one unit of
    lambda, so this is accurate to rounding); the zeroth moment is the exact 1 - Phi."""
    sd2 = float(data_std) ** 2
    s0, s1 = sigma[:-1], sigma[1:]
    phi = torch.sqrt((sd2 + s1**2) / (sd2 + s0**2))
    h = torch.log(s0) - torch.log(s1)
    panels = torch.ceil(h / _PANEL).clamp_min(1).to(torch.int64)  # (N,)
    step = torch.repeat_interleave(torch.arange(h.numel()), panels)  # the step of each panel
    first = torch.cumsum(panels, 0) - panels
    j = torch.arange(step.numel()) - first[step]  # panel index inside its step
    width = (h / panels)[step]
    u = (j[:, None] + 0.5 * (_NODES[None, :] + 1)) * width[:, None]  # lambda - lambda_i at the nodes
    su2 = (s0[step, None] * torch.exp(-u)) ** 2
    kernel = torch.sqrt((sd2 + s1[step, None] ** 2) / (sd2 + su2)) * su2 / (sd2 + su2) * 0.5 * _WEIGHTS[None, :] * width[:, None]
    x = -u / h[step, None]
    m = torch.zeros(h.numel(), MAX_MOMENT + 1, dtype=F64)
    m.index_add_(0, step, torch.stack([(kernel * x**p).sum(-1) for p in range(MAX_MOMENT + 1)], 1))
    m[:, 0] = 1 - phi  # exact
    return phi, m


def gls_plan(sde, ts: Tensor, *, multistep: int = 2, data_std: float = 0.5, corrector: bool = True) -> MultistepPlan:
    """The float64 CPU `MultistepPlan` of the VE flow of the GLS estimate on the grid ``ts`` (N steps)."""
    t = ts.to(F64).cpu()
    k = sde.order
    co = sde.coefficients(t)
    c, L, Li, sig = co.c, co.chol, co.chol_inv, co.sigma_tilde
    if not bool(torch.isfinite(sig).all()) or bool((sig <= 0).any()):
        raise ValueError("gls: the state carries no information on the data on this grid (sigma_tilde is not finite)")
    a = co.q * sig[:, None]  # unit whitened data direction, L^-1 c / |L^-1 c|
    g = co.gls_row  # y = g . z
    perp = torch.eye(k, dtype=F64) - a[:, :, None] * a[:, None, :]
    T = L[1:] @ _transport(a[:-1], a[1:]) @ perp[:-1] @ Li[:-1]
    phi, m = moments(sig, data_std)
    F = phi[:, None, None] * c[1:, :, None] * g[:-1, None, :] + T
    mom = m[:, :, None] * c[1:, None, :]  # (N, MAX_MOMENT + 1, k)
    x_grid = torch.log(sig)
    x_step = x_grid[:-1] - x_grid[1:]
    if not bool((x_step > 0).all()):
        raise ValueError("gls: sigma_tilde must decrease strictly along the grid; use fewer steps or another grid")
    return multistep_plan(F, mom, x_grid, reference_terms(sde, t, data_std, 1.0), t, multistep, corrector)


def _deterministic(v):
    """eta of ``gls``: only 0."""
    if number(0.0)(v) != 0.0:
        raise ValueError("must be 0 (it is deterministic); use solver='ei' for eta > 0")
    return 0.0


@register
class GLSIntegrator(MultistepSolver):
    """The exponential integrator on the GLS estimate of the data (see the module). Options: ``multistep``
    (1 to 4: past data predictions in the polynomial in log sigma_tilde; default 2), ``corrector``
    (UniPC's, no extra NFE, one order more; default on), ``data_std`` (the std of the Gaussian reference
    for which every step is exact; default 0.5, as for ``ei``). Deterministic: ``eta`` must be 0 (use
    ``ei`` for eta > 0). Default grid ``band``; docs/benchmarks.md, "The `gls` sampler", compares the
    choices."""

    name = "gls"
    schema = {
        "multistep": (MULTISTEP_CHECK, 2),
        "corrector": (CORRECTOR_CHECK, True),
        "data_std": (DATA_STD_CHECK, 0.5),
        "eta": (_deterministic, 0.0),
    }
    default_grid = "band"

    def uses_gls(self, steps: int, sde_order: int) -> bool:
        """Always: every run of ``gls`` uses the GLS plan."""
        return True

    def build_plan(self, sde, ts):
        return gls_plan(sde, ts, multistep=self.multistep_for(True), data_std=self.data_std, corrector=self.corrector)
