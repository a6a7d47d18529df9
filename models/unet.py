"""DDPM++ / NCSN++-style U-Net score network for images."""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .embeddings import FourierEmbedding, LabelEmbedding, SinusoidalEmbedding, check_num_classes, conditioning_embedding

__all__ = ["UNet", "UNET_PRESETS"]

# name -> constructor keyword arguments. ``channel_mult`` is the *maximum* depth:
# from_preset trims it so that the coarsest feature map stays >= 4x4 for
# resolution >= 16 (>= 2x2 below, e.g. 8x8 digits). ``attn_resolutions`` of None
# means "attention at resolution // 2" (16 for CIFAR, 4 for digits).
UNET_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(channels=32, channel_mult=(1, 1, 2), num_res_blocks=1, attn_resolutions=None, groups=8),
    "small": dict(channels=48, channel_mult=(1, 2, 2), num_res_blocks=2, attn_resolutions=None, groups=16),
    "cifar": dict(
        channels=128, channel_mult=(1, 2, 2, 2), num_res_blocks=4, attn_resolutions=None, dropout=0.1, groups=32
    ),
}


def _num_groups(ch: int, groups: int) -> int:
    """Largest g <= groups that divides ch."""
    g = max(1, min(groups, ch))
    while ch % g:
        g -= 1
    return g


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, + Linear(temb), GN-SiLU-dropout-conv, skip; (x + h) / sqrt(2).

    (B, in_ch, H, W), (B, temb_dim) -> (B, out_ch, H, W).
    """

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_num_groups(in_ch, groups), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_num_groups(out_ch, groups), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.temb(F.silu(temb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return (self.skip(x) + h) / math.sqrt(2.0)


class AttnBlock(nn.Module):
    """Single-head spatial self-attention with residual; (B, C, H, W) -> (B, C, H, W)."""

    def __init__(self, ch: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(_num_groups(ch, groups), ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).unbind(1)
        # (B, 1 head, HW, C)
        h = F.scaled_dot_product_attention(
            q.transpose(1, 2)[:, None], k.transpose(1, 2)[:, None], v.transpose(1, 2)[:, None]
        )
        h = h[:, 0].transpose(1, 2).reshape(B, C, H, W)
        return (x + self.proj(h)) / math.sqrt(2.0)


class Downsample(nn.Module):
    """3x3 conv with stride 2; (B, C, H, W) -> (B, C, H/2, W/2)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv; (B, C, H, W) -> (B, C, 2H, 2W)."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def _check_unet_args(in_channels: int, out_channels: int, channels: int, channel_mult: tuple[int, ...],
                     num_res_blocks: int, resolution: int) -> int:
    """ValueError naming a bad U-Net argument; returns 2 ** (len(channel_mult) - 1), which H and W must divide."""
    if in_channels < 1 or out_channels < 1 or channels < 1:
        raise ValueError(
            f"in_channels, out_channels and channels must be >= 1, got {in_channels}, {out_channels}, {channels}"
        )
    if not channel_mult or min(channel_mult) < 1:
        raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {channel_mult}")
    if num_res_blocks < 1:
        raise ValueError(f"num_res_blocks must be >= 1, got {num_res_blocks}")
    factor = 2 ** (len(channel_mult) - 1)
    if resolution < 1 or resolution % factor:
        raise ValueError(
            f"resolution={resolution} is not divisible by 2**(len(channel_mult)-1)={factor} "
            f"(channel_mult={channel_mult}); use a shorter channel_mult or another resolution"
        )
    return factor


def _time_embedding(embedding: str, channels: int, temb_dim: int, fourier_scale: float) -> nn.Sequential:
    """t (B,) -> (B, temb_dim): a Fourier or sinusoidal embedding and a two-layer MLP."""
    if embedding == "fourier":
        emb: nn.Module = FourierEmbedding(channels, scale=fourier_scale)
    elif embedding == "sinusoidal":
        emb = SinusoidalEmbedding(channels)
    else:
        raise ValueError(f"embedding must be 'fourier' or 'sinusoidal', got {embedding!r}")
    return nn.Sequential(emb, nn.Linear(channels, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))


class UNet(nn.Module):
    """Time-conditioned (and optionally class-conditioned) U-Net (DDPM++ style).

    forward(x: (B, in_channels, H, W), t: (B,) or scalar, labels: (B,) int64 or None)
    -> (B, out_channels, H, W).

    ``len(channel_mult)`` resolution levels with ``num_res_blocks`` residual
    blocks each (``channels * mult`` channels); self-attention after the blocks of
    every level whose feature-map size is in ``attn_resolutions`` (sizes are
    computed from ``resolution``); a middle Res-Attn-Res block; skip connections
    from every down block to the up path. Time enters each residual block
    through a linear layer. The output conv is zero-initialised (zero output at
    init). H and W must be divisible by 2 ** (len(channel_mult) - 1).

    ``num_classes`` > 0 adds a `LabelEmbedding` (num_classes + 1 rows, the last the null class)
    to the time embedding, so the label enters every residual block with the time (ADM / EDM);
    ``labels=None`` is then the null class. ``num_classes=0`` (default): unconditional, no label
    parameters (state_dict keys and initial weights as before labels existed), labels refused.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        channels: int = 64,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.0,
        embedding: str = "fourier",
        resolution: int = 32,
        groups: int = 32,
        fourier_scale: float = 16.0,
        num_classes: int = 0,
    ) -> None:
        super().__init__()
        self.num_classes = check_num_classes(num_classes)
        channel_mult = tuple(int(m) for m in channel_mult)
        factor = _check_unet_args(in_channels, out_channels, channels, channel_mult, num_res_blocks, resolution)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.resolution = int(resolution)
        self.channel_mult = channel_mult
        self.attn_resolutions = tuple(int(r) for r in attn_resolutions)
        self._factor = factor

        temb_dim = 4 * channels
        self.time_embed = _time_embedding(embedding, channels, temb_dim, fourier_scale)
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        block = functools.partial(ResBlock, temb_dim=temb_dim, dropout=dropout, groups=groups)
        self.down, skips, ch, res = self._down_path(channels, num_res_blocks, block, groups)
        self.mid = nn.ModuleList([block(ch, ch), AttnBlock(ch, groups), block(ch, ch)])
        self.up, ch = self._up_path(channels, num_res_blocks, block, groups, skips, ch, res)
        self.norm_out = nn.GroupNorm(_num_groups(ch, groups), ch)
        self.conv_out = _zero(nn.Conv2d(ch, out_channels, 3, padding=1))
        if self.num_classes:  # created last: the other weights are drawn as for an unconditional U-Net
            self.label_embed = LabelEmbedding(self.num_classes, temb_dim)

    def _down_path(self, channels: int, num_res_blocks: int, block, groups: int):
        """The down blocks (ResBlocks, attention at `attn_resolutions`, a Downsample between levels),
        the channel counts of the activations they save for the up path, and the final (ch, res)."""
        down = nn.ModuleList()
        skips = [channels]
        ch, res = channels, self.resolution
        for level, mult in enumerate(self.channel_mult):
            for _ in range(num_res_blocks):
                layers = nn.ModuleList([block(ch, channels * mult)])
                ch = channels * mult
                if res in self.attn_resolutions:
                    layers.append(AttnBlock(ch, groups))
                down.append(layers)
                skips.append(ch)
            if level != len(self.channel_mult) - 1:
                down.append(nn.ModuleList([Downsample(ch)]))
                skips.append(ch)
                res //= 2
        return down, skips, ch, res

    def _up_path(self, channels: int, num_res_blocks: int, block, groups: int, skips: list[int], ch: int, res: int):
        """The up blocks: num_res_blocks + 1 per level, each consuming one skip; (blocks, final ch)."""
        up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(self.channel_mult))):
            for _ in range(num_res_blocks + 1):
                layers = nn.ModuleList([block(ch + skips.pop(), channels * mult)])
                ch = channels * mult
                if res in self.attn_resolutions:
                    layers.append(AttnBlock(ch, groups))
                up.append(layers)
            if level != 0:
                up.append(nn.ModuleList([Upsample(ch)]))
                res *= 2
        assert not skips
        return up, ch

    @classmethod
    def from_preset(
        cls, name: str, in_channels: int, out_channels: int, resolution: int = 32, **overrides: Any
    ) -> "UNet":
        """Build a preset ("tiny", "small", "cifar") for square images of size ``resolution``.

        ``channel_mult`` is trimmed so the coarsest feature map is >= 4x4 (>= 2x2
        if resolution < 16) and divides ``resolution``; keyword overrides win.
        """
        if name not in UNET_PRESETS:
            raise ValueError(f"unknown UNet preset name={name!r}; valid names: {', '.join(UNET_PRESETS)}")
        kw = preset_kwargs(name, resolution)
        kw.update(overrides)
        return cls(in_channels, out_channels, resolution=resolution, **kw)

    def forward(self, x: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects x of shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        if H % self._factor or W % self._factor:
            raise ValueError(
                f"input size {H}x{W} is not divisible by 2**(len(channel_mult)-1)={self._factor} "
                f"(channel_mult={self.channel_mult}, resolution={self.resolution})"
            )
        temb = conditioning_embedding(self, x, t, labels)

        h = self.conv_in(x)
        hs = [h]
        for layers in self.down:
            for layer in layers:
                h = layer(h, temb) if isinstance(layer, ResBlock) else layer(h)
            hs.append(h)

        h = self.mid[0](h, temb)
        h = self.mid[1](h)
        h = self.mid[2](h, temb)

        for layers in self.up:
            for layer in layers:
                if isinstance(layer, ResBlock):
                    h = layer(torch.cat([h, hs.pop()], dim=1), temb)
                else:
                    h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def preset_kwargs(name: str, resolution: int) -> dict[str, Any]:
    """Constructor kwargs of UNet preset ``name`` adapted to ``resolution``."""
    if name not in UNET_PRESETS:
        raise ValueError(f"unknown UNet preset name={name!r}; valid names: {', '.join(UNET_PRESETS)}")
    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    kw = dict(UNET_PRESETS[name])
    mult = tuple(kw["channel_mult"])
    min_res = 4 if resolution >= 16 else 2
    levels = 1
    for n in range(len(mult), 0, -1):
        f = 2 ** (n - 1)
        if resolution % f == 0 and resolution // f >= min_res:
            levels = n
            break
    kw["channel_mult"] = mult[:levels]
    if kw["attn_resolutions"] is None:
        kw["attn_resolutions"] = (resolution // 2,) if levels > 1 else (resolution,)
    return kw
