"""2-D toy distributions.

All toys are centred and rescaled with *fixed* constants (not per-sample
re-standardisation, so subsets of a sample agree) to roughly unit scale:

- ``swissroll``: 2-D spiral ``t (cos t, sin t)``, t in [1.5 pi, 4.5 pi], centred,
  divided by 6.8, plus N(0, 0.05^2) noise; per-coordinate std ~ 1.0, |x| <~ 2.1.
- ``moons``: sklearn-style two half circles with N(0, 0.05^2) noise, centred and
  divided by 0.705 (isotropically); per-coordinate std ~ (1.23, 0.71).
- ``checkerboard``: uniform on 8 alternating squares of a 4x4 board covering
  [-sqrt 3, sqrt 3]^2; per-coordinate std = 1.
- ``gaussians8``: mixture of 8 N(mu_k, 0.1^2 I), mu_k on a circle of radius
  sqrt(2 (1 - 0.1^2)) ~ 1.41 at angles k pi / 4; per-coordinate std = 1.

Sampling uses ``numpy.random.RandomState(seed)``: same (name, n, seed) -> same data.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

from .images import DataError

__all__ = ["TOYS", "make_toy"]


def _swissroll(rng: np.random.RandomState, n: int) -> np.ndarray:
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.rand(n))
    x = np.stack([t * np.cos(t), t * np.sin(t)], axis=1)
    x = (x - np.array([2.0, 0.2])) / 6.8
    return x + 0.05 * rng.randn(n, 2)


def _moons(rng: np.random.RandomState, n: int) -> np.ndarray:
    n_out = n // 2
    a = np.pi * rng.rand(n_out)
    b = np.pi * rng.rand(n - n_out)
    x = np.concatenate(
        [np.stack([np.cos(a), np.sin(a)], 1), np.stack([1.0 - np.cos(b), 0.5 - np.sin(b)], 1)], axis=0
    )
    x = x + 0.05 * rng.randn(n, 2)
    x = x[rng.permutation(n)]
    return (x - np.array([0.5, 0.25])) / 0.705


def _checkerboard(rng: np.random.RandomState, n: int) -> np.ndarray:
    x1 = rng.rand(n) * 4.0 - 2.0
    x2 = rng.rand(n) - rng.randint(0, 2, n) * 2.0
    x2 = x2 + np.floor(x1) % 2
    return np.stack([x1, x2], axis=1) * (math.sqrt(3.0) / 2.0)


def _gaussians8(rng: np.random.RandomState, n: int) -> np.ndarray:
    std = 0.1
    radius = math.sqrt(2.0 * (1.0 - std**2))
    k = rng.randint(0, 8, n)
    angle = k * (np.pi / 4.0)
    centres = radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return centres + std * rng.randn(n, 2)


TOYS: dict[str, Callable[[np.random.RandomState, int], np.ndarray]] = {
    "swissroll": _swissroll,
    "moons": _moons,
    "checkerboard": _checkerboard,
    "gaussians8": _gaussians8,
}


def make_toy(name: str, n: int, seed: int = 0) -> torch.Tensor:
    """Sample ``n`` points of toy ``name``: float32 tensor of shape (n, 2)."""
    if name not in TOYS:
        raise DataError(f"unknown toy dataset {name!r}; valid names: {', '.join(TOYS)}")
    if isinstance(n, bool) or int(n) != n or n < 1:
        raise DataError(f"n must be a positive integer, got {n!r}")
    seed = int(seed)
    if seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed}")
    # RandomState takes 32-bit seeds; a larger one is split into 32-bit words (distinct seeds stay distinct)
    rng = np.random.RandomState(seed if seed < 2**32 else [(seed >> (32 * i)) & 0xFFFFFFFF for i in range(3)])
    x = TOYS[name](rng, int(n))
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
