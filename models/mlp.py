"""Residual MLP score network for vector data."""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from .embeddings import FourierEmbedding, LabelEmbedding, SinusoidalEmbedding, check_num_classes, conditioning_embedding

__all__ = ["MLP", "MLP_PRESETS"]

# name -> constructor keyword arguments (besides in_dim / out_dim).
MLP_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=64, depth=2, emb_dim=32),
    "small": dict(hidden=256, depth=4, emb_dim=128),
    "cifar": dict(hidden=1024, depth=8, emb_dim=256),
}


class _ResBlock(nn.Module):
    """h -> h + Linear(act(Linear(act(LN(h))) + proj(temb))). (B, H) -> (B, H)."""

    def __init__(self, hidden: int, emb_dim: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.act1 = act()
        self.fc1 = nn.Linear(hidden, hidden)
        self.emb = nn.Linear(emb_dim, hidden)
        self.act2 = act()
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        z = self.fc1(self.act1(self.norm(h))) + self.emb(temb)
        return h + self.fc2(self.act2(z))


class MLP(nn.Module):
    """Time-conditioned (and optionally class-conditioned) residual MLP.

    forward(x: (B, in_dim), t: (B,) or scalar, labels: (B,) int64 or None) -> (B, out_dim).

    The time embedding (``embedding`` = "sinusoidal" of t*1000, or "fourier") is
    passed through a 2-layer MLP and added, through a per-block linear
    projection, inside each of the ``depth`` residual blocks. The output layer
    is zero-initialised, so the network outputs exactly 0 at initialisation.

    ``num_classes`` > 0 adds a `LabelEmbedding` (num_classes + 1 rows, the last the null class)
    to the time embedding; ``labels=None`` is then the null class. With ``num_classes=0`` (the
    default) the network is unconditional, has no label parameters (the same state_dict keys and
    initial weights as before labels existed) and refuses labels.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        hidden: int = 256,
        depth: int = 4,
        emb_dim: int = 128,
        act: Callable[[], nn.Module] = nn.SiLU,
        embedding: str = "sinusoidal",
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        for name, val in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden), ("emb_dim", emb_dim)):
            if int(val) < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if depth < 0:
            raise ValueError(f"depth must be >= 0, got {depth}")
        self.in_dim, self.out_dim = int(in_dim), int(out_dim)
        if embedding == "sinusoidal":
            emb: nn.Module = SinusoidalEmbedding(emb_dim)
        elif embedding == "fourier":
            emb = FourierEmbedding(emb_dim)
        else:
            raise ValueError(f"embedding must be 'sinusoidal' or 'fourier', got {embedding!r}")
        self.time_embed = nn.Sequential(emb, nn.Linear(emb_dim, emb_dim), act(), nn.Linear(emb_dim, emb_dim))
        self.inp = nn.Linear(self.in_dim, hidden)
        self.blocks = nn.ModuleList([_ResBlock(hidden, emb_dim, act) for _ in range(depth)])
        self.out_norm = nn.LayerNorm(hidden)
        self.out_act = act()
        self.out = nn.Linear(hidden, self.out_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if self.num_classes:  # created last: the other weights are drawn as for an unconditional MLP
            self.label_embed = LabelEmbedding(self.num_classes, emb_dim)

    @classmethod
    def from_preset(cls, name: str, in_dim: int, out_dim: int, **overrides: Any) -> "MLP":
        """Build a preset ("tiny", "small", "cifar"); keyword overrides win."""
        if name not in MLP_PRESETS:
            raise ValueError(f"unknown MLP preset name={name!r}; valid names: {', '.join(MLP_PRESETS)}")
        return cls(in_dim, out_dim, **{**MLP_PRESETS[name], **overrides})

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"MLP expects x of shape (B, {self.in_dim}), got {tuple(x.shape)}")
        temb = conditioning_embedding(self, x, t, labels)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb)
        return self.out(self.out_act(self.out_norm(h)))


class FlatMLP(nn.Module):
    """An MLP on images: flattens (B, C_in, H, W) -> MLP -> (B, C_out, H, W).

    For small images (8x8 digits) this is a fast, strong baseline network on CPU.
    ``labels`` go to the MLP (see `MLP`).
    """

    def __init__(self, mlp: "MLP", out_shape: tuple[int, int, int]):
        super().__init__()
        self.mlp = mlp
        self.out_shape = tuple(int(s) for s in out_shape)

    @property
    def num_classes(self) -> int:
        return self.mlp.num_classes

    def forward(self, x: torch.Tensor, t, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.mlp(x.reshape(x.shape[0], -1), t, labels).reshape(x.shape[0], *self.out_shape)
