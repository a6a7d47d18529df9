"""Exact probability flows of a linear SDE for data with an exact score, integrated tightly by an
independent integrator (torchdiffeq's DOPRI5; no kinetic sampler code): the references that the few-step
benchmarks and the optimised grids (`kinetic.grid_opt`) measure samplers against.

    flow_map        the k-block probability flow, z_T -> z at t_eps;
    gls_flow_map    the VE flow of the GLS estimate that the ``gls`` solver discretises, z_T -> y at t_eps;
    gls_estimate    y = gls_row . z, the GLS estimate of x0 from the state.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["flow_map", "gls_flow_map", "gls_estimate"]

F64 = torch.float64


def flow_map(sde, score_fn, z_T: Tensor, t_eps: float = 1e-3, rtol: float = 1e-10) -> Tensor:
    """The probability-flow ODE from T down to t_eps, integrated tightly: (n, k, *D) -> (n, k, *D).

    torchdiffeq's DOPRI5 on ``sde.reverse_drift(..., probability_flow=True)`` in float64, in the
    variable s = log t (fewer steps near t_eps), atol = rtol, with the max norm (every sample is
    held to the tolerance, not their mean). An independent integrator: no kinetic sampler code.
    """
    import torchdiffeq

    z0 = z_T.to(F64)
    n = z0.shape[0]

    def f(s, z):
        t = torch.exp(s)
        tt = t.expand(n)
        return t * sde.reverse_drift(z, tt, score_fn(z, tt), probability_flow=True)

    ss = torch.log(torch.tensor([sde.T, t_eps], dtype=F64))
    opts = {"norm": lambda v: v.abs().max(), "step_t": ss[1:]}  # step_t: never evaluate beyond t_eps
    return torchdiffeq.odeint(f, z0, ss, method="dopri5", rtol=rtol, atol=rtol, options=opts)[-1]


def gls_estimate(sde, z: Tensor, t: float) -> Tensor:
    """The GLS estimate of x0 from the state: y = sigma^2 c^T Sigma^-1 z, (n, k, *D) -> (n, *D) (float64)."""
    g = sde.coefficients(torch.tensor([t], dtype=F64)).gls_row[0]  # (k,)
    return torch.einsum("j,nj...->n...", g, z.to(F64))


def gls_flow_map(sde, score_fn, z_T: Tensor, t_eps: float = 1e-3, rtol: float = 1e-10) -> Tensor:
    """The flow that the ``gls`` solver discretises, integrated tightly: z_T (n, k, *D) -> the GLS
    estimate y at t_eps (n, *D) (`gls_estimate`; compare it with the estimate from the solver's final
    state). y follows the VE probability flow dy/dt = (y - D(y, t)) / sigma * dsigma/dt (``sigma`` =
    sigma_tilde), D = E[x0 | z] from the exact score at z = c y (the rest of the state does not change
    D). DOPRI5 in s = log t as `flow_map`, dsigma/dt by central differences (relative step 1e-6). An
    independent integrator: no kinetic sampler code."""
    import torchdiffeq

    n = z_T.shape[0]
    y0 = gls_estimate(sde, z_T, sde.T)

    def f(s, y):
        t = torch.exp(s)
        hi = torch.clamp(t * (1 + 1e-6), max=sde.T)  # one-sided at T
        tt = torch.stack([hi, t, t * (1 - 1e-6)])
        cc = sde.coefficients(tt)
        sig = cc.sigma_tilde
        dsig_ds = (sig[0] - sig[2]) / (torch.log(hi) - torch.log(tt[2]))  # d sigma / d log t
        c = cc.c[1]
        z = c.reshape(1, -1, *([1] * (y.dim() - 1))) * y.unsqueeze(1)
        score = score_fn(z, t.expand(n))
        x0 = cc.select(1).data_estimate(z, score)
        return (y - x0) / sig[1] * dsig_ds

    ss = torch.log(torch.tensor([sde.T, t_eps], dtype=F64))
    opts = {"norm": lambda v: v.abs().max(), "step_t": ss[1:]}
    return torchdiffeq.odeint(f, y0, ss, method="dopri5", rtol=rtol, atol=rtol, options=opts)[-1]
