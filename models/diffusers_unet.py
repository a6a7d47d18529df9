"""A Hugging Face diffusers ``UNet2DModel`` as a kinetic score network (``kinetic.models.diffusers_unet``).

    import kinetic as kn
    from kinetic.models.diffusers_unet import build_diffusers_unet
    net = build_diffusers_unet((1, 8, 8), order=3)       # sized like kinetic's "small" U-Net
    model = kn.ScoreModel(net, kn.hold(), "x0")         # then DSMLoss, the samplers, ... as usual

The network is built from its config (``UNet2DModel(**config)``), never ``from_pretrained``: nothing
is downloaded. It needs the optional extra ``pip install 'kinetic[diffusers]'``. To sample a model that
was trained elsewhere (a folder written by ``save_pretrained``) under any SDE, load it as a denoiser
with `kinetic.load_diffusers` instead (`kinetic.pretrained`, docs/pretrained.md).

Shapes: like `kinetic.models.UNet`, ``forward(h, t)`` takes the state (B, k, C, H, W) reshaped to
(B, k*C, H, W) (`kinetic.score.network_input`) and times t (B,) in [0, T], and returns
(B, m*C, H, W) with m the number of blocks it predicts (1 for VP, CLD, HOLD: the data shape).

Time: diffusers' U-Nets embed a DDPM timestep in [0, num_train_timesteps) with a sinusoidal
embedding tuned to that range. The adapter passes ``timestep = timesteps * t / T`` as a float
(``timesteps`` = 1000 by default), so t = T is DDPM's last step, t -> 0 its first, and kinetic's
continuous times are never rounded. This is the map DDPM's discretisation of VP uses
(kinetic's ``vp()`` with beta 0.1 -> 20 is the continuous limit of DDPM's linear betas 1e-4 -> 0.02
over 1000 steps), and the same scale kinetic's own sinusoidal embedding applies (t * 1000).

`unet2d_config` mirrors kinetic's U-Net presets (`kinetic.models.unet.UNET_PRESETS`) level by level:
the same widths, depth trimming for small images, residual blocks per level, attention at the same
resolutions, a Res-Attn-Res middle, single-head attention, stride-2 conv down / nearest+conv up and a
4x-wide time MLP. The parameter count then matches kinetic's preset (the tests check within 10%).
What differs is inside the blocks: diffusers' ResNet blocks do not divide the skip sum by sqrt(2),
its output conv is not zero-initialised, and its time features are sinusoidal rather than Fourier.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from .embeddings import broadcast_time, check_labels, check_num_classes
from .unet import UNET_PRESETS, preset_kwargs

__all__ = ["DiffusersUNet", "unet2d_config", "build_diffusers_unet", "DEFAULT_TIMESTEPS"]

DEFAULT_TIMESTEPS = 1000
_INSTALL_HINT = "the diffusers adapter needs the optional dependency diffusers: pip install 'kinetic[diffusers]'"


def _unet2d_class():
    try:
        from diffusers import UNet2DModel
    except ImportError as err:  # pragma: no cover - exercised only without the extra
        raise ImportError(f"{_INSTALL_HINT} ({err})") from None
    return UNet2DModel


def _common_groups(channels: Sequence[int], groups: int) -> int:
    """Largest g <= groups dividing every channel count (diffusers takes one group count)."""
    g = max(1, min(int(groups), *channels))
    while any(c % g for c in channels):
        g -= 1
    return g


def unet2d_config(
    data_shape: Sequence[int], order: int = 1, size: str = "small", *, out_blocks: int = 1, num_classes: int = 0,
    **overrides: Any,
) -> dict[str, Any]:
    """``UNet2DModel`` keyword arguments mirroring kinetic's U-Net preset ``size`` for states of
    ``order`` blocks of images ``data_shape`` = (C, H, W) (H == W), predicting ``out_blocks`` blocks:
    in_channels = order * C, out_channels = out_blocks * C. ``num_classes`` > 0 sets diffusers'
    ``num_class_embeds = num_classes + 1`` (a label table added to the time embedding, as in
    kinetic's U-Net; the last row is the null class). Keyword ``overrides`` win."""
    try:
        shape = tuple(int(s) for s in data_shape)
    except TypeError:
        raise ValueError(f"data_shape must be a tuple of ints (C, H, W), got {data_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"data_shape must be images (C, H, W) with positive sizes, got {shape}")
    c, h, w = shape
    if h != w:
        raise ValueError(f"data_shape must be square images (H == W), got {shape}")
    for name, val in (("order", order), ("out_blocks", out_blocks)):
        if isinstance(val, bool) or int(val) != val or val < 1:
            raise ValueError(f"{name} must be a positive integer, got {val!r}")
    if size not in UNET_PRESETS:
        raise ValueError(f"unknown model size={size!r}; valid sizes: {', '.join(UNET_PRESETS)}")
    num_classes = check_num_classes(num_classes)
    kw = preset_kwargs(size, h)
    widths = tuple(kw["channels"] * m for m in kw["channel_mult"])
    attn = set(kw["attn_resolutions"])
    level_res = [h // 2**i for i in range(len(widths))]
    down = tuple("AttnDownBlock2D" if r in attn else "DownBlock2D" for r in level_res)
    up = tuple("AttnUpBlock2D" if r in attn else "UpBlock2D" for r in reversed(level_res))
    cfg: dict[str, Any] = dict(
        sample_size=h,
        in_channels=int(order) * c,
        out_channels=int(out_blocks) * c,
        block_out_channels=widths,
        layers_per_block=int(kw["num_res_blocks"]),
        down_block_types=down,
        up_block_types=up,
        mid_block_type="UNetMidBlock2D",
        attention_head_dim=None,  # one head over all channels, as kinetic's AttnBlock
        norm_num_groups=_common_groups(widths, kw["groups"]),
        dropout=float(kw.get("dropout", 0.0)),
        downsample_type="conv",
        upsample_type="conv",
        time_embedding_type="positional",
        flip_sin_to_cos=True,
        freq_shift=0,
    )
    if num_classes:
        cfg["num_class_embeds"] = num_classes + 1
    cfg.update(overrides)
    return cfg


class DiffusersUNet(nn.Module):
    """A diffusers ``UNet2DModel`` with kinetic's network signature.

    forward(h: (B, in_channels, H, W), t: (B,) or scalar in [0, T], labels: (B,) int64 or None)
    -> (B, out_channels, H, W), calling ``unet(h, timesteps * t / T, class_labels).sample``.
    ``state_dict`` keys are ``unet.*``. A UNet2DModel with ``num_class_embeds = C + 1`` is
    conditional on C classes (``num_classes`` = C; labels None = the null class C).
    """

    def __init__(self, unet: nn.Module, *, T: float = 1.0, timesteps: float = DEFAULT_TIMESTEPS) -> None:
        super().__init__()
        cls = _unet2d_class()
        if not isinstance(unet, cls):
            raise TypeError(f"unet must be a diffusers UNet2DModel, got {type(unet).__name__}")
        T, timesteps = float(T), float(timesteps)
        if not (math.isfinite(T) and T > 0):
            raise ValueError(f"T must be a finite positive number, got {T}")
        if not (math.isfinite(timesteps) and timesteps > 0):
            raise ValueError(f"timesteps must be a finite positive number, got {timesteps}")
        self.unet = unet
        self.T = T
        self.timesteps = timesteps
        self.in_channels = int(unet.config.in_channels)
        self.out_channels = int(unet.config.out_channels)
        self._factor = 2 ** (len(unet.config.block_out_channels) - 1)
        embeds = unet.config.get("num_class_embeds") or 0
        if embeds == 1 or (embeds and unet.config.get("class_embed_type") not in (None, "embedding")):
            raise ValueError("a conditional UNet2DModel needs class_embed_type None and num_class_embeds = classes + 1 >= 2")
        self.num_classes = int(embeds) - 1 if embeds else 0

    @classmethod
    def from_config(
        cls, config: dict[str, Any], *, T: float = 1.0, timesteps: float = DEFAULT_TIMESTEPS
    ) -> "DiffusersUNet":
        """Build ``UNet2DModel(**config)`` (fresh weights, no download) and wrap it."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict of UNet2DModel arguments, got {type(config).__name__}")
        return cls(_unet2d_class()(**config), T=T, timesteps=timesteps)

    @property
    def config(self) -> dict[str, Any]:
        """The UNet2DModel arguments (plain data) that rebuild this network with `from_config`."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.unet.config.items() if not k.startswith("_")}

    def forward(self, h: torch.Tensor, t: torch.Tensor | float, labels: torch.Tensor | None = None) -> torch.Tensor:
        if h.ndim != 4 or h.shape[1] != self.in_channels:
            raise ValueError(f"DiffusersUNet expects h of shape (B, {self.in_channels}, H, W), got {tuple(h.shape)}")
        if h.shape[-1] % self._factor or h.shape[-2] % self._factor:
            raise ValueError(
                f"input size {h.shape[-2]}x{h.shape[-1]} is not divisible by {self._factor} "
                f"(2**(levels-1) of this UNet2DModel)"
            )
        t = broadcast_time(t, h.shape[0], h.device, h.dtype)
        if not self.num_classes:
            if labels is not None:
                raise ValueError("labels were given to an unconditional DiffusersUNet (no num_class_embeds)")
            return self.unet(h, t * (self.timesteps / self.T)).sample
        if labels is None:
            labels = torch.full((h.shape[0],), self.num_classes, dtype=torch.int64, device=h.device)
        labels = check_labels(labels, h.shape[0], self.num_classes).to(h.device)
        return self.unet(h, t * (self.timesteps / self.T), class_labels=labels).sample

    def extra_repr(self) -> str:
        return f"T={self.T:g}, timesteps={self.timesteps:g}"


def build_diffusers_unet(
    data_shape: Sequence[int],
    order: int,
    size: str = "small",
    *,
    out_blocks: int = 1,
    num_classes: int = 0,
    T: float = 1.0,
    timesteps: float = DEFAULT_TIMESTEPS,
    **overrides: Any,
) -> DiffusersUNet:
    """A `DiffusersUNet` for order-``order`` states of images ``data_shape`` (C, H, W), sized like
    ``kinetic.models.build_model("unet", size, data_shape, order)`` (see `unet2d_config`).
    ``T`` is the SDE's horizon (``sde.T``), ``out_blocks`` the number of predicted blocks,
    ``num_classes`` > 0 a class-conditional network."""
    return DiffusersUNet.from_config(
        unet2d_config(data_shape, order, size, out_blocks=out_blocks, num_classes=num_classes, **overrides),
        T=T, timesteps=timesteps,
    )
