"""Time and class-label embeddings for score networks.

Both time embeddings map continuous times ``t`` of shape (B,) to features of shape
(B, dim). ``t`` may also be a python float or a 0-d tensor (see
:func:`broadcast_time`). `LabelEmbedding` maps class labels (B,) int64 in
[0, num_classes] to (B, dim); label ``num_classes`` is the null class (the
unconditional branch of classifier-free guidance).
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["broadcast_time", "SinusoidalEmbedding", "FourierEmbedding", "LabelEmbedding", "check_num_classes",
           "conditioning_embedding"]


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


def check_num_classes(num_classes) -> int:
    """``num_classes`` as an int >= 0 (0: an unconditional network, no label embedding)."""
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")
    return int(num_classes)


class LabelEmbedding(nn.Module):
    """Class labels -> features: (B,) int64 in [0, num_classes] -> (B, dim).

    A table of ``num_classes + 1`` rows; the last row (label ``num_classes``) is the null class,
    the "no label" input that label dropout trains and classifier-free guidance uses for its
    unconditional branch. ``labels=None`` means the null class for every example. A network adds
    this to its time embedding (EDM's and ADM's class conditioning).
    """

    def __init__(self, num_classes: int, dim: int) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        if self.num_classes < 1:
            raise ValueError(f"LabelEmbedding needs num_classes >= 1, got {num_classes}")
        self.table = nn.Embedding(self.num_classes + 1, dim)

    @property
    def null_label(self) -> int:
        return self.num_classes

    def forward(self, labels: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
        if labels is None:
            labels = torch.full((batch,), self.num_classes, dtype=torch.int64, device=device)
        labels = check_labels(labels, batch, self.num_classes, allow_null=True)
        return self.table(labels.to(device))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes} (+1 null)"


def conditioning_embedding(net: nn.Module, x: torch.Tensor, t: torch.Tensor | float,
                           labels: torch.Tensor | None) -> torch.Tensor:
    """The (B, C) embedding of time t, plus that of the class labels for a conditional ``net`` (one with
    ``num_classes > 0``, ``time_embed`` and ``label_embed``); labels for an unconditional net are an error."""
    t = broadcast_time(t, x.shape[0], x.device, x.dtype)
    temb = net.time_embed(t)
    if net.num_classes:
        return temb + net.label_embed(labels, x.shape[0], x.device).to(temb.dtype)
    if labels is not None:
        raise ValueError(f"labels were given to an unconditional {type(net).__name__} (built with num_classes=0)")
    return temb


def check_labels(
    labels, batch: int, num_classes: int, *, allow_null: bool = True, name: str = "labels", check_range: bool = False
) -> torch.Tensor:
    """``labels`` as an int64 tensor (batch,) with values in [0, num_classes) (or num_classes, the
    null class, when ``allow_null``); one clear ValueError otherwise. The range is checked for CPU
    tensors only (no device synchronisation inside a sampling loop); `kinetic.sample` and
    `kinetic.ScoreModel` check labels on every device where they enter.
    ``check_range=True`` forces the check on any device."""
    if not isinstance(labels, torch.Tensor):
        try:
            labels = torch.as_tensor(labels)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be integer class labels of shape ({batch},), got {type(labels).__name__}") from None
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must be integer class labels (int64), got dtype {labels.dtype}")
    if labels.dim() == 0:
        labels = labels.reshape(1).expand(batch)
    if tuple(labels.shape) != (batch,):
        raise ValueError(f"{name} must have shape ({batch},) (one label per example), got {tuple(labels.shape)}")
    hi = num_classes if allow_null else num_classes - 1
    if labels.numel() and (check_range or labels.device.type == "cpu"):
        lo_v, hi_v = int(labels.min()), int(labels.max())
        if lo_v < 0 or hi_v > hi:
            null = f" ({num_classes} is the null class)" if allow_null else ""
            bad = lo_v if lo_v < 0 else hi_v
            raise ValueError(f"{name} must lie in [0, {hi}]{null} for a model of {num_classes} classes, got {bad}")
    return labels.to(torch.int64)
