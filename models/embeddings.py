"""Time embeddings for score networks.

Both embeddings map continuous times ``t`` of shape (B,) to features of shape
(B, dim). ``t`` may also be a python float or a 0-d tensor (see
:func:`broadcast_time`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["broadcast_time", "SinusoidalEmbedding", "FourierEmbedding"]


def broadcast_time(
    t: torch.Tensor | float, batch: int, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    """Return ``t`` as a float tensor of shape (batch,).

    Accepts a python number, a 0-d tensor, a 1-element tensor (broadcast to the
    batch) or a tensor with ``batch`` elements (e.g. shape (B,) or (B, 1)).
    """
    t = torch.as_tensor(t, device=device, dtype=dtype)
    if t.numel() == 1:
        return t.reshape(1).expand(batch)
    if t.numel() != batch:
        raise ValueError(
            f"t must be a scalar or have one entry per batch element ({batch}); "
            f"got shape {tuple(t.shape)}"
        )
    return t.reshape(batch)


class SinusoidalEmbedding(nn.Module):
    """Transformer/DDPM timestep embedding of ``t * scale``.

    (B,) -> (B, dim): ``[cos(t*scale*f_k), sin(t*scale*f_k)]`` with frequencies
    ``f_k = max_period ** (-k / half)``, ``k = 0..half-1``; odd ``dim`` is zero-padded.
    """

    def __init__(self, dim: int, max_period: float = 10000.0, scale: float = 1000.0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim = dim
        self.max_period = float(max_period)
        self.scale = float(scale)
        half = dim // 2
        freqs = torch.exp(-math.log(self.max_period) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self.freqs.dtype, device=self.freqs.device).reshape(-1)
        args = (t * self.scale)[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb

    def extra_repr(self) -> str:
        return f"dim={self.dim}, max_period={self.max_period:g}, scale={self.scale:g}"


class FourierEmbedding(nn.Module):
    """Random Fourier features (NCSN++ "GaussianFourierProjection").

    (B,) -> (B, dim): ``[sin(2 pi t w), cos(2 pi t w)]`` with ``w ~ N(0, scale^2)``
    of size dim // 2, drawn once from torch's default RNG at construction and
    stored as a (non-trainable) buffer, so it is saved in the state dict.
    Odd ``dim`` is zero-padded.
    """

    def __init__(self, dim: int, scale: float = 16.0) -> None:
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim = dim
        self.scale = float(scale)
        self.register_buffer("W", torch.randn(dim // 2) * self.scale)

    def forward(self, t: torch.Tensor | float) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=self.W.dtype, device=self.W.device).reshape(-1)
        args = 2 * math.pi * t[:, None] * self.W[None, :]
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb

    def extra_repr(self) -> str:
        return f"dim={self.dim}, scale={self.scale:g}"
