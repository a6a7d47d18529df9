"""Log-likelihood through the probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling
through Stochastic Differential Equations", Eq. 13 and App. D.2).

    dz/dt = f(z, t) = beta (A kron I) z - 1/2 beta (D[:, N] kron I) s_N(z, t)     (`LinearSDE.reverse_drift`)
    log p_tmin(z(t_min)) = log p_T(z(T)) + int_tmin^T div f(z(t), t) dt,
    div f = beta d tr(A) - 1/2 beta tr((D_NN kron I) d s_N / d z_N)     (only the noised blocks' Jacobian)

integrated with torchdiffeq's adaptive Dormand-Prince 5(4) (`kinetic.solvers.adaptive`: per-example
error norm, a step cap) from t_min to T in float64. The divergence is exact (len(N) * d backward
passes through score_fn) for small states, or Hutchinson's estimate tr(M J) = E[v^T M J v] with
Rademacher probes v (fixed along the path) for images.

Order k > 1: the auxiliaries start from q(v0) = N(0, aux_cov) independent of the data, so
p_0(x, v0) = p(x) q(v0) and, for the model's joint density p_theta(x, v0),

    log p_theta(x) >= E_{v0 ~ q} [log p_theta(x, v0) - log q(v0)]        (Jensen; CLD's bound, Dockhorn et al. 2022)

which is what is returned, estimated with one draw of v0 per example (``aux_samples`` draws
averaged): the entropy of q enters through -log q(v0). It is exact in expectation when
p_theta(x, v0) = p(x) q(v0), e.g. with the exact score. For order 1 the value is log p(x) itself.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .checks import check_finite_magnitude
from .sde import LinearSDE
from .solvers.adaptive import dopri5
from .solvers.base import check_finite_score

__all__ = ["log_likelihood", "bits_per_dim"]


def _divergence(s: Tensor, zN: Tensor, D_NN: Tensor, probes: Tensor | None) -> Tensor:
    """tr((D_NN kron I) d s_N / d z_N), s and zN (B, m, d): exact (probes None) or Hutchinson with
    probes (h, B, m, d). Returns (B,)."""
    B, m, d = s.shape
    if not s.requires_grad:
        raise ValueError(
            "score_fn's output does not depend on z (it carries no autograd graph: computed under torch.no_grad(), "
            "detached, or constant); log_likelihood differentiates the score with respect to z"
        )

    def grad(out: Tensor, retain: bool) -> Tensor:
        (g,) = torch.autograd.grad(out, zN, retain_graph=retain, allow_unused=True)
        return torch.zeros_like(zN) if g is None else g.reshape(B, m, d)

    div = torch.zeros(B, dtype=s.dtype, device=s.device)
    if probes is None:
        for i in range(m):
            for c in range(d):
                g = grad(s[:, i, c].sum(), retain=(i, c) != (m - 1, d - 1))
                div = div + (g[:, :, c] * D_NN[:, i]).sum(-1)  # sum_j D_ji d s_i,c / d z_j,c
        return div
    h = probes.shape[0]
    for j in range(h):
        v = probes[j]
        w = torch.einsum("ij,bjd->bid", D_NN, v)  # (D_NN kron I) v
        g = grad((s * w).sum(), retain=j < h - 1)
        div = div + (g * v).sum((1, 2))
    return div / h


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
    max_steps: int = 10_000,
):
    """log p(x) in nats per example, (B,) float64 (for k > 1 the lower bound above).

    Args:
        x: data (B, *D), finite. score_fn: the noised-block score (``sde.score_shape``),
            differentiable in z (autograd).
        t_min: start of the flow (<= 1e-5 recommended); the density of z at t_min stands for t = 0.
        exact_divergence: None picks exact when k * prod(D) <= 64, Hutchinson otherwise.
        hutchinson_samples: Rademacher probes per evaluation (fixed along the ODE path).
        aux_samples: draws of the auxiliary start v0 ~ N(0, aux_cov) averaged (k > 1).
        return_nfe: also return the number of score evaluations.
        max_steps: cap on the adaptive steps of one integration (`kinetic.solvers.adaptive.IntegrationError`
            beyond it).
    """
    _check_inputs(sde, score_fn, x, t_min, rtol, atol, hutchinson_samples, aux_samples, max_steps)
    t_min = float(t_min)
    B, D = x.shape[0], tuple(x.shape[1:])
    k, d = sde.order, math.prod(D)
    if exact_divergence is None:
        exact_divergence = k * d <= 64
    dev = x.device
    x64 = x.detach().to(torch.float64)
    aux = _aux_factor(sde) if k > 1 else None
    nfe = [0]
    total = torch.zeros(B, dtype=torch.float64, device=dev)
    for _rep in range(aux_samples if k > 1 else 1):
        z0, log_q = _start(sde, x64, aux, generator)
        probes = None if exact_divergence else _rademacher(sde, B, D, hutchinson_samples, generator, dev)
        f = _augmented_field(sde, score_fn, B, D, probes, nfe, dev)
        y0 = torch.cat([z0.reshape(B, -1), torch.zeros(B, 1, dtype=torch.float64, device=dev)], dim=1)
        y1, _ = dopri5(f, y0, t_min, sde.T, rtol=rtol, atol=atol, max_steps=max_steps, what="log_likelihood")
        zT = y1[:, :-1].reshape(B, k, *D)
        logp = sde.prior_logp(zT).to(torch.float64) + y1[:, -1]
        total = total + (logp - log_q)
    out = total / (aux_samples if k > 1 else 1)
    return (out, nfe[0]) if return_nfe else out


def _check_inputs(sde, score_fn, x, t_min, rtol, atol, hutchinson_samples, aux_samples, max_steps) -> None:
    """One ValueError / TypeError line naming the first bad argument of `log_likelihood`."""
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ValueError(f"x must be a floating tensor of shape (B, *data_shape), got {getattr(x, 'shape', type(x))}")
    if x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"x must hold at least one example with a nonempty data shape, got shape {tuple(x.shape)}")
    bad = int((~torch.isfinite(x)).sum())
    if bad:
        raise ValueError(f"x must be finite: it has {bad} nan/inf entries (of {x.numel()})")
    if x.is_complex():
        raise TypeError(f"x must be a real floating tensor; got dtype {x.dtype}")
    check_finite_magnitude(x, "x", min(1e15, math.sqrt(torch.finfo(x.dtype).max) / 10))  # squares must not overflow
    if not callable(score_fn):
        raise TypeError("score_fn must be callable as score_fn(z, t)")
    if not (0.0 < float(t_min) < sde.T):
        raise ValueError(f"t_min must lie in (0, T) = (0, {sde.T}), got {float(t_min)}")
    for name, v in (("hutchinson_samples", hutchinson_samples), ("aux_samples", aux_samples), ("max_steps", max_steps)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
            raise ValueError(f"{name} must be a positive number, got {v!r}")


def _aux_factor(sde: LinearSDE) -> tuple[Tensor, float]:
    """(L, log det aux_cov) with L L^T = aux_cov (k-1, k-1), the law q(v0) of the auxiliaries (k > 1)."""
    C = sde.aux_cov
    if float(torch.linalg.eigvalsh(C).min()) <= 0:
        raise ValueError("log_likelihood needs a positive definite aux_cov for k > 1 (the bound integrates over v0)")
    L = torch.linalg.cholesky(C)
    return L, float(2.0 * torch.log(torch.diagonal(L)).sum())


def _start(sde: LinearSDE, x64: Tensor, aux: tuple[Tensor, float] | None, generator) -> tuple[Tensor, Tensor]:
    """The flow's start z0 (B, k, *D) = (x, v0) with v0 ~ q, and log q(v0) (B,) (zeros for k = 1)."""
    B, D, k = x64.shape[0], tuple(x64.shape[1:]), sde.order
    dev, d = x64.device, math.prod(D)
    z0 = torch.zeros(B, k, *D, dtype=torch.float64, device=dev)
    z0[:, 0] = x64
    log_q = torch.zeros(B, dtype=torch.float64, device=dev)
    if aux is not None:
        L, logdet = aux
        e = torch.randn(B, k - 1, *D, generator=generator, dtype=torch.float64, device=dev)
        z0[:, 1:] = torch.einsum("ij,bj...->bi...", L.to(dev), e)
        log_q = -0.5 * e.reshape(B, -1).pow(2).sum(1) - 0.5 * d * ((k - 1) * math.log(2 * math.pi) + logdet)
    return z0, log_q


def _rademacher(sde: LinearSDE, B: int, D: tuple[int, ...], h: int, generator, dev) -> Tensor:
    """h Rademacher probes (h, B, m, d) for Hutchinson's divergence, fixed along the path."""
    probes = torch.randint(0, 2, (h, *sde.score_shape(B, D)), generator=generator, device=dev)
    return (probes.to(torch.float64) * 2 - 1).reshape(h, B, len(sde.noised_blocks), math.prod(D))


def _augmented_field(sde: LinearSDE, score_fn, B: int, D: tuple[int, ...], probes: Tensor | None, nfe: list[int],
                     device: torch.device):
    """f(t, y) of the augmented state y = (z flattened, log-density change) (B, k*d + 1): the
    probability-flow drift and its divergence; ``nfe[0]`` counts the score evaluations."""
    k, d = sde.order, math.prod(D)
    N = list(sde.noised_blocks)
    m = len(N)
    trA = float(torch.trace(sde.drift_matrix))
    D_NN = sde.noise_block.to(device)

    def f(t: Tensor, y: Tensor) -> Tensor:
        z = y[:, :-1].reshape(B, k, *D).detach()
        tb = t.to(torch.float64).expand(B)
        with torch.enable_grad():
            zN = z[:, N].clone().requires_grad_(True)
            parts = [zN[:, N.index(i) : N.index(i) + 1] if i in N else z[:, i : i + 1] for i in range(k)]
            zz = torch.cat(parts, dim=1)
            s = score_fn(zz, tb)
            nfe[0] += 1
            sde.check_score(s, zz)
            check_finite_score(s, zz, t)
            sN = s.to(torch.float64).reshape(B, m, d)
            div_s = _divergence(sN, zN, D_NN, probes)
        beta = sde.beta(t).to(torch.float64)
        dz = sde.reverse_drift(z, tb, s.detach().to(torch.float64), probability_flow=True)
        div = beta * d * trA - 0.5 * beta * div_s.detach()
        return torch.cat([dz.reshape(B, -1), div[:, None]], dim=1)

    return f


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
