"""Checkpoints: plain data and tensors only, written atomically, loaded with ``weights_only=True``.

A checkpoint is a dict::

    format            "kinetic-checkpoint"
    format_version    1
    kinetic_version   "0.1.0"      (loading needs the same major.minor)
    step              int
    model, ema        state dicts of the plain network (not of DDP / compiled wrappers)
    optimizer         AdamW state dict
    rng               {"torch": ByteTensor, "cuda": [ByteTensor] | None,
                       "data": [ByteTensor per rank], "noise": [ByteTensor per rank]}
    sde               LinearSDE.spec()
    model_config      {"kind", "size", "data_shape", "order", "parameterization", "data_std",
                       "input_scaling"}
    config            TrainConfig.to_dict()
    history           {"step": [...], "loss": [...]}
    world_size        int
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .fileio import atomic_write

__all__ = [
    "CheckpointError",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_model",
]

CHECKPOINT_FORMAT = "kinetic-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format / kinetic version, or does not
    match the run it is loaded into."""


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(str(v).split(".")[:2])


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` (plus format / version fields) atomically: temp file in the same folder,
    then ``os.replace``; the temp file is removed on any failure."""
    from . import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "kinetic_version": __version__,
        **state,
    }
    return atomic_write(path, lambda tmp: torch.save(full, tmp))


def load_checkpoint(path: str | os.PathLike[str], map_location="cpu") -> dict[str, Any]:
    """Load and check a checkpoint (``torch.load(weights_only=True)``).

    Raises CheckpointError when the file is missing or unreadable, is not a kinetic checkpoint,
    has another format version, or was written by a kinetic of another major.minor version.
    """
    from . import __version__

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, AttributeError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path} (not a kinetic checkpoint?): {msg}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a kinetic checkpoint (no format field {CHECKPOINT_FORMAT!r})")
    if ckpt.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {ckpt.get('format_version')!r}; this kinetic reads "
            f"version {CHECKPOINT_FORMAT_VERSION}"
        )
    v = str(ckpt.get("kinetic_version"))
    if _major_minor(v) != _major_minor(__version__):
        raise CheckpointError(
            f"{path} was written by kinetic {v}; this is kinetic {__version__} (major.minor must match)"
        )
    for key in ("step", "model", "sde", "model_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is incomplete: missing {key!r}")
    return ckpt


def load_model(path: str | os.PathLike[str], *, ema: bool = True, device=None):
    """Rebuild the trained model of a checkpoint: returns ``(score_model, ckpt)``.

    ``score_model`` is a `kinetic.score.ScoreModel` in eval mode holding the EMA weights
    (``ema=False``: the raw weights); ``score_model.score`` is a ``score_fn`` for the samplers and
    ``score_model.sde`` the SDE it was trained for.
    """
    from .models import build_model
    from .score import ScoreModel
    from .sde import LinearSDE

    ckpt = load_checkpoint(path)
    mc = ckpt["model_config"]
    try:
        sde = LinearSDE.from_spec(ckpt["sde"])
        net = build_model(mc["kind"], mc["size"], mc["data_shape"], mc["order"])
        weights = ckpt["ema"] if ema and ckpt.get("ema") is not None else ckpt["model"]
        net.load_state_dict(weights)
    except (KeyError, ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"checkpoint {path} does not rebuild its model: {err}") from None
    sm = ScoreModel(
        net, sde, mc["parameterization"], data_std=mc.get("data_std", 1.0), input_scaling=mc.get("input_scaling", True)
    )
    if device is not None:
        sm.to(device)
    sm.eval()
    return sm, ckpt
