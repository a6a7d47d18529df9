"""Sliced 2-Wasserstein distance between two sample sets.

    SW_2(p, q) = ( E_{theta ~ U(S^{d-1})} W_2^2(theta^T p, theta^T q) )^{1/2}

(Rabin et al. 2011; Bonneel et al. 2015). Each 1-D W_2^2 between the projected empirical
measures is computed exactly from their quantile functions, which also covers unequal sizes.
"""

from __future__ import annotations

import numpy as np
import torch

from .frechet import MetricError

__all__ = ["sliced_wasserstein", "wasserstein_1d_squared"]

DEFAULT_SEED = 0


def _as_samples(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise MetricError(f"{name} must have shape (N, ...) with N >= 1, got {tuple(x.shape)}")
    return x.detach().reshape(x.shape[0], -1).to("cpu", torch.float64)


def wasserstein_1d_squared(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact W_2^2 between 1-D empirical measures, batched over projections.

    a (P, n), b (P, m): P pairs of sample sets. W_2^2 = int_0^1 (F_a^{-1}(u) - F_b^{-1}(u))^2 du
    with the piecewise-constant quantile functions, integrated over the merged breakpoints
    {i/n} U {j/m}; for n == m it is mean((sort a - sort b)^2). Returns (P,).
    """
    a = torch.sort(a, dim=-1).values
    b = torch.sort(b, dim=-1).values
    n, m = a.shape[-1], b.shape[-1]
    if n == m:
        return (a - b).square().mean(dim=-1)
    levels = torch.cat([torch.arange(1, n + 1, dtype=torch.float64) / n, torch.arange(1, m + 1, dtype=torch.float64) / m])
    levels = torch.sort(levels).values
    lower = torch.cat([levels.new_zeros(1), levels[:-1]])
    width = levels - lower
    mid = 0.5 * (levels + lower)
    ia = torch.clamp((mid * n).floor().long(), max=n - 1)
    ib = torch.clamp((mid * m).floor().long(), max=m - 1)
    return ((a[..., ia] - b[..., ib]).square() * width).sum(dim=-1)


def sliced_wasserstein(
    x: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    n_projections: int = 256,
    generator: torch.Generator | None = None,
) -> float:
    """Sliced 2-Wasserstein distance SW_2 between samples x (N, *D) and y (M, *D) (flattened).

    Directions are uniform on the unit sphere: ``n_projections`` normalised Gaussian vectors
    drawn from ``generator`` (CPU; default: a fresh generator seeded with 0, so the value is
    reproducible). Returns sqrt(mean_theta W_2^2), in the units of the data (for d = 1 it is
    the exact empirical W_2). Computed in float64; non-finite samples give ``nan``.
    """
    xs = _as_samples(x, "x")
    ys = _as_samples(y, "y")
    if xs.shape[1] != ys.shape[1]:
        raise MetricError(f"x and y must have the same number of features per sample, got {xs.shape[1]} and {ys.shape[1]}")
    if isinstance(n_projections, bool) or int(n_projections) != n_projections or n_projections < 1:
        raise ValueError(f"n_projections must be a positive integer, got {n_projections!r}")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if not (torch.isfinite(xs).all() and torch.isfinite(ys).all()):
        return float("nan")
    if generator is None:
        generator = torch.Generator().manual_seed(DEFAULT_SEED)
    d = xs.shape[1]
    theta = torch.randn(d, int(n_projections), generator=generator, dtype=torch.float64)
    theta = theta / theta.norm(dim=0, keepdim=True)
    w2 = wasserstein_1d_squared((xs @ theta).T, (ys @ theta).T)
    return float(w2.mean().sqrt())
