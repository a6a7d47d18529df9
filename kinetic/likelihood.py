"""Log-likelihood through the probability-flow ODE (Song et al. 2021, App. D.2; papers.md 3.3).

    dz/dt = f(z, t) = beta (A kron I) z - 1/2 beta g^2 e_k s_k(z, t),
    log p_tmin(z(t_min)) = log p_T(z(T)) + int_tmin^T div f(z(t), t) dt,
    div f = beta d tr(A) - 1/2 beta g^2 sum_i d s_k,i / d z_k,i          (only the last block's Jacobian)

integrated with `kinetic.solvers.ode.dopri5` from t_min to T in float64. The divergence is exact
(d backward passes through score_fn) for small states, or Hutchinson's estimate with Rademacher
probes (fixed along the path) for images.

Order k > 1: the auxiliaries start from q(v0) = N(0, aux_cov) independent of the data, so
p_0(x, v0) = p(x) q(v0) and, for the model's joint density p_theta(x, v0),

    log p_theta(x) >= E_{v0 ~ q} [log p_theta(x, v0) - log q(v0)]        (Jensen; CLD's bound)

which is what is returned, estimated with one draw of v0 per example (``aux_samples`` draws
averaged): the entropy of q enters through -log q(v0). It is exact in expectation when
p_theta(x, v0) = p(x) q(v0), e.g. with the exact score. For order 1 the value is log p(x) itself.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .sde import LinearSDE
from .solvers.ode import dopri5

__all__ = ["log_likelihood", "bits_per_dim"]


def _divergence(s: Tensor, zk: Tensor, probes: Tensor | None) -> Tensor:
    """sum_i d s_i / d zk_i: exact (probes None) or Hutchinson with probes (m, B, *D). Returns (B,)."""
    B = s.shape[0]
    sf = s.reshape(B, -1)
    if probes is None:
        div = torch.zeros(B, dtype=s.dtype, device=s.device)
        d = sf.shape[1]
        for i in range(d):
            (g,) = torch.autograd.grad(sf[:, i].sum(), zk, retain_graph=i < d - 1)
            div = div + g.reshape(B, -1)[:, i]
        return div
    m = probes.shape[0]
    acc = torch.zeros(B, dtype=s.dtype, device=s.device)
    for j in range(m):
        (g,) = torch.autograd.grad((s * probes[j]).sum(), zk, retain_graph=j < m - 1)
        acc = acc + (g * probes[j]).reshape(B, -1).sum(1)
    return acc / m


def log_likelihood(
    sde: LinearSDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    *,
    t_min: float = 1e-5,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    exact_divergence: bool | None = None,
    hutchinson_samples: int = 1,
    aux_samples: int = 1,
    generator: torch.Generator | None = None,
    return_nfe: bool = False,
):
    """log p(x) in nats per example, (B,) float64 (for k > 1 the lower bound above).

    Args:
        x: data (B, *D). score_fn: last-block score, differentiable in z (autograd).
        t_min: start of the flow (<= 1e-5 recommended); the density of z at t_min stands for t = 0.
        exact_divergence: None picks exact when k * prod(D) <= 64, Hutchinson otherwise.
        hutchinson_samples: Rademacher probes per evaluation (fixed along the ODE path).
        aux_samples: draws of the auxiliary start v0 ~ N(0, aux_cov) averaged (k > 1).
        return_nfe: also return the number of score evaluations.
    """
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of shape (B, *data_shape), got {getattr(x, 'shape', type(x))}")
    if not callable(score_fn):
        raise TypeError("score_fn must be callable as score_fn(z, t)")
    t_min = float(t_min)
    if not (0.0 < t_min < sde.T):
        raise ValueError(f"t_min must lie in (0, T) = (0, {sde.T}), got {t_min}")
    for name, v in (("hutchinson_samples", hutchinson_samples), ("aux_samples", aux_samples)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    B, D = x.shape[0], tuple(x.shape[1:])
    d = math.prod(D)
    k = sde.order
    if exact_divergence is None:
        exact_divergence = k * d <= 64
    dev = x.device
    x64 = x.detach().to(torch.float64)
    aux_L = None
    if k > 1:
        C = sde.aux_cov
        ev = torch.linalg.eigvalsh(C)
        if float(ev.min()) <= 0:
            raise ValueError("log_likelihood needs a positive definite aux_cov for k > 1 (the bound integrates over v0)")
        aux_L = torch.linalg.cholesky(C)
        aux_logdet = 2.0 * torch.log(torch.diagonal(aux_L)).sum()
    A = sde.drift_matrix.to(dev)
    trA = float(torch.trace(sde.drift_matrix))
    half_g2 = 0.5 * sde.g2
    schedule = sde.schedule
    nfe = 0

    total = torch.zeros(B, dtype=torch.float64, device=dev)
    for _rep in range(aux_samples if k > 1 else 1):
        z0 = torch.zeros(B, k, *D, dtype=torch.float64, device=dev)
        z0[:, 0] = x64
        log_q = torch.zeros(B, dtype=torch.float64, device=dev)
        if k > 1:
            e = torch.randn(B, k - 1, *D, generator=generator, dtype=torch.float64, device=dev)
            z0[:, 1:] = torch.einsum("ij,bj...->bi...", aux_L.to(dev), e)
            log_q = -0.5 * e.reshape(B, -1).pow(2).sum(1) - 0.5 * d * ((k - 1) * math.log(2 * math.pi) + float(aux_logdet))
        probes = None
        if not exact_divergence:
            probes = torch.randint(0, 2, (hutchinson_samples, B, *D), generator=generator, device=dev).to(torch.float64) * 2 - 1

        def f(t: float, y: Tensor) -> Tensor:
            nonlocal nfe
            beta = float(schedule.beta(torch.tensor(t, dtype=torch.float64)))
            with torch.enable_grad():
                z = y[:, :-1].reshape(B, k, *D).detach()
                zk = z[:, -1].clone().requires_grad_(True)
                zz = torch.cat([z[:, :-1], zk.unsqueeze(1)], dim=1)
                s = score_fn(zz, torch.full((B,), t, dtype=torch.float64, device=dev))
                nfe += 1
                if tuple(s.shape) != (B, *D):
                    raise ValueError(f"score_fn must return shape {(B, *D)}, got {tuple(s.shape)}")
                div_s = _divergence(s.to(torch.float64), zk, probes)
            s = s.detach().to(torch.float64)
            dz = beta * torch.einsum("ij,bj...->bi...", A, z)
            dz[:, -1] = dz[:, -1] - (half_g2 * beta) * s
            div = beta * d * trA - half_g2 * beta * div_s.detach()
            return torch.cat([dz.reshape(B, -1), div[:, None]], dim=1)

        y0 = torch.cat([z0.reshape(B, -1), torch.zeros(B, 1, dtype=torch.float64, device=dev)], dim=1)
        y1, _, _ = dopri5(f, y0, t_min, sde.T, rtol=rtol, atol=atol)
        zT = y1[:, :-1].reshape(B, k, *D)
        logp = sde.prior_logp(zT).to(torch.float64) + y1[:, -1]
        total = total + (logp - log_q)
    out = total / (aux_samples if k > 1 else 1)
    return (out, nfe) if return_nfe else out


def bits_per_dim(
    logp: Tensor,
    data_shape: Sequence[int],
    *,
    n_bins: int = 256,
    data_width: float = 2.0,
    offset: float | None = None,
) -> Tensor:
    """Bits per dimension of 8-bit data from a continuous log-density (nats, (B,)).

    bpd = -logp / (D ln 2) + offset, offset = log2(n_bins / data_width): 7 for data scaled to
    [-1, 1] (width 2), 8 for [0, 1] (Song et al.'s ``7 - inverse_scaler(-1)``). Pass ``offset``
    to override (e.g. 0 for the continuous density itself).
    """
    D = math.prod(int(s) for s in data_shape)
    if D <= 0:
        raise ValueError(f"data_shape must have positive sizes, got {tuple(data_shape)}")
    if offset is None:
        if not (n_bins > 0 and data_width > 0):
            raise ValueError("n_bins and data_width must be positive")
        offset = math.log2(n_bins / data_width)
    return -torch.as_tensor(logp, dtype=torch.float64) / (D * math.log(2.0)) + offset
