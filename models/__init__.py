"""Score networks and their registry: this folder is installed as ``kinetic.models``.

The repository keeps it at the top level (``models/``), and ``pyproject.toml`` maps it to
``kinetic.models`` (setuptools ``package-dir``): import it only under that name, as
``kinetic.config``, ``kinetic.checkpoint`` and ``kinetic.training`` do (``from .models import ...``
inside ``kinetic/`` resolves to this folder). A bare ``import models`` would not find it once installed.

Plain ``nn.Module``s with ``forward(x, t)`` (``forward(x, t, labels)`` when built with
``num_classes`` > 0: class labels (B,) int64, label ``num_classes`` the null class); nothing here
knows about SDEs.
For a Langevin process of order k on data of shape D, the network input is the
full state (B, k, *D) reshaped by the caller to (B, k*D) (MLP) or
(B, k*C, H, W) (UNet); the output has the data shape (B, D) / (B, C, H, W).
"""

from __future__ import annotations

import math

from typing import Sequence

from torch import nn

from .embeddings import FourierEmbedding, LabelEmbedding, SinusoidalEmbedding, broadcast_time, check_labels
from .mlp import MLP, FlatMLP, MLP_PRESETS
from .unet import UNET_PRESETS, UNet

__all__ = [
    "MLP",
    "FlatMLP",
    "UNet",
    "SinusoidalEmbedding",
    "FourierEmbedding",
    "LabelEmbedding",
    "broadcast_time",
    "check_labels",
    "PRESETS",
    "MODEL_KINDS",
    "MODEL_SIZES",
    "auto_kind",
    "build_model",
]

# Human-readable description of the presets (sizes are approximate and depend
# a little on input/output widths; the UNet depth adapts to the resolution).
PRESETS: dict[str, dict[str, str]] = {
    "mlp": {
        "tiny": "hidden=64, depth=2, emb_dim=32 (~24k params); tests",
        "small": "hidden=256, depth=4, emb_dim=128 (~0.7M params); 2-D toy data",
        "cifar": "hidden=1024, depth=8, emb_dim=256 (~19M params); large vector data",
    },
    "unet": {
        "tiny": "channels=32, channel_mult=(1,1,2), 1 res block/level (~0.78M params); tests",
        "small": "channels=48, channel_mult=(1,2,2), 2 res blocks/level (~3.6M params); digits, quick CPU runs",
        "cifar": "channels=128, channel_mult=(1,2,2,2), 4 res blocks/level, dropout 0.1 "
        "(~58.7M params at 32x32); DDPM++ paper scale",
    },
}


def _build_mlp(size: str, shape: tuple[int, ...], order: int, out_blocks: int = 1, num_classes: int = 0) -> nn.Module:
    if len(shape) not in (1, 3):
        raise ValueError(f"kind='mlp' needs data_shape (D,) or images (C, H, W); got {shape}")
    if size not in MLP_PRESETS:
        raise ValueError(f"unknown model size={size!r}; valid sizes: {', '.join(MLP_PRESETS)}")
    d = math.prod(shape)
    mlp = MLP.from_preset(size, order * d, out_blocks * d, num_classes=num_classes)
    return mlp if len(shape) == 1 else FlatMLP(mlp, (out_blocks * shape[0], *shape[1:]))


def _build_unet(size: str, shape: tuple[int, ...], order: int, out_blocks: int = 1, num_classes: int = 0) -> nn.Module:
    if len(shape) != 3:
        raise ValueError(f"kind='unet' needs image data, data_shape (C, H, W); got {shape}")
    if size not in UNET_PRESETS:
        raise ValueError(f"unknown model size={size!r}; valid sizes: {', '.join(UNET_PRESETS)}")
    c, h, w = shape
    if h != w:
        raise ValueError(f"kind='unet' needs square images (H == W), got data_shape {shape}")
    return UNet.from_preset(size, order * c, out_blocks * c, resolution=h, num_classes=num_classes)


#: The model registry: kind -> builder(size, data_shape, order, out_blocks, num_classes). The one list
#: of model kinds.
BUILDERS = {"mlp": _build_mlp, "unet": _build_unet}
#: Every kind a config or the CLI accepts: "auto" (see `auto_kind`) and the registered ones.
MODEL_KINDS = ("auto", *BUILDERS)
#: Size presets every kind offers.
MODEL_SIZES = tuple(s for s in UNET_PRESETS if s in MLP_PRESETS)


def auto_kind(data_shape: Sequence[int]) -> str:
    """What kind "auto" means: "mlp" for vectors (D,), "unet" for images (C, H, W)."""
    return "mlp" if len(tuple(data_shape)) == 1 else "unet"


def build_model(
    kind: str, size: str, data_shape: Sequence[int], order: int, out_blocks: int = 1, num_classes: int = 0
) -> nn.Module:
    """Score network for order-``order`` states of data with shape ``data_shape``.

    kind "mlp": data_shape (D,) -> MLP(order*D -> D); images (C, H, W) are flattened (`FlatMLP`).
    kind "unet": data_shape (C, H, W) with H == W -> UNet(order*C -> C channels).
    kind "auto": `auto_kind` ("mlp" for 1-D shapes, "unet" otherwise).
    size: preset name (`MODEL_SIZES`: "tiny", "small", "cifar").
    out_blocks: data-shaped output blocks (the first data axis times out_blocks): 1 for a denoiser
        or one noised block, m for the "eps"/"score"/"mixed" scores of m noised blocks.
    num_classes: 0 (default) for an unconditional network; > 0 adds a class-label embedding
        (``forward(x, t, labels)``, label ``num_classes`` the null class; see `LabelEmbedding`).
    """
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind={kind!r}; valid kinds: {', '.join(MODEL_KINDS)}")
    try:
        shape = tuple(int(s) for s in data_shape)
    except TypeError as e:
        raise ValueError(f"data_shape must be a tuple of ints, got {data_shape!r}") from e
    if isinstance(order, bool) or int(order) != order or order < 1:
        raise ValueError(f"order must be a positive integer, got {order!r}")
    if isinstance(out_blocks, bool) or int(out_blocks) != out_blocks or out_blocks < 1:
        raise ValueError(f"out_blocks must be a positive integer, got {out_blocks!r}")
    if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
        raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")
    if not shape or min(shape) < 1:
        raise ValueError(f"data_shape must be non-empty with positive entries, got {shape}")
    if kind == "auto":
        kind = auto_kind(shape)
    return BUILDERS[kind](size, shape, int(order), int(out_blocks), int(num_classes))
