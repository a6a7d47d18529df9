"""The data range of images, [-1, 1]: clamping samples to it, and the share that falls outside.

kinetic's image datasets are scaled to [-1, 1]. Generated samples can leave that range (a few
solver steps, an imperfect score); a picture clips them, and so do diffusers' pipelines
(``(image / 2 + 0.5).clamp(0, 1)``). `clamp_to_data_range` does the same before a metric;
`out_of_range_fraction` says how much that changes.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["DATA_RANGE", "clamp_to_data_range", "out_of_range_fraction"]

#: (low, high) of kinetic's image data (digits, CIFAR-10, image folders).
DATA_RANGE: tuple[float, float] = (-1.0, 1.0)


def _as_tensor(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor) or not (x.is_floating_point() or x.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must be a numeric torch.Tensor or numpy array, got {type(x).__name__}")
    return x


def _check_range(low: float, high: float) -> tuple[float, float]:
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(f"the data range must be finite with low < high, got low={low}, high={high}")
    return low, high


def clamp_to_data_range(
    x: torch.Tensor | np.ndarray, low: float = DATA_RANGE[0], high: float = DATA_RANGE[1]
) -> torch.Tensor:
    """``x`` clamped to [low, high] (a new tensor, same shape and dtype); NaN stays NaN."""
    low, high = _check_range(low, high)
    return _as_tensor(x, "x").clamp(low, high)


def out_of_range_fraction(
    x: torch.Tensor | np.ndarray, low: float = DATA_RANGE[0], high: float = DATA_RANGE[1]
) -> float:
    """Share of the entries of ``x`` (any shape) outside [low, high], in [0, 1]; NaN and inf count
    as outside. An empty ``x`` gives 0.0."""
    low, high = _check_range(low, high)
    x = _as_tensor(x, "x")
    if x.numel() == 0:
        return 0.0
    inside = (x >= low) & (x <= high)  # False for NaN
    return float(1.0 - inside.double().mean())
