"""The checkpoint file: its schema, atomic writing, checked loading and the compatibility check.

Used by training (write, resume), sampling and evaluation (`load_model`), so it lives beside them
rather than inside `kinetic.training`. A checkpoint holds plain data and tensors only and loads
with ``torch.load(weights_only=True)``: a file holding other Python objects is refused, never
unpickled. It is a dict::

    format            "kinetic-checkpoint"
    format_version    1
    kinetic_version   "0.1.0"      (loading needs the same major.minor)
    step              int
    model, ema        state dicts of the plain network (not of DDP / compiled wrappers)
    optimizer         AdamW state dict
    rng               {"ranks": [{"torch": ByteTensor, "cuda": [ByteTensor] | None,
                                  "data": ByteTensor, "noise": ByteTensor}, ... one per DDP rank]}
    sde               LinearSDE.spec()
    model_config      {"kind", "size", "data_shape", "order", "parameterization", "data_std",
                       "input_scaling", "num_classes"}  (num_classes: 0 unconditional; absent in
                       checkpoints written before class labels existed, read as 0; kind "custom":
                       a network the user gave, its class in "network", size None)
    config            TrainConfig.to_dict()
    history           {"step": [...], "loss": [...], "window": [...],
                       "eval_step": [...], "eval_value": [...], "eval_metric": str}  (eval_*: optional)
    skipped           int (skipped non-finite steps)
    world_size        int
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from ._version import __version__
from .fileio import atomic_write, damaged_file_reason

__all__ = [
    "CheckpointError",
    "CHECKPOINT_NAME",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_FORMAT_VERSION",
    "checkpoint_file",
    "save_checkpoint",
    "load_checkpoint",
    "check_compatible",
    "same_data",
    "load_model",
    "MODEL_CONFIG_DEFAULTS",
]

#: model_config fields added after format version 1 was fixed, with the value a checkpoint that lacks
#: them has (so older checkpoints keep loading and resuming).
MODEL_CONFIG_DEFAULTS = {"num_classes": 0}
#: The checkpoint's file name inside a run directory (defined here only).
CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "kinetic-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, of another format / kinetic version, or does not
    match the run it is loaded into."""


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(str(v).split(".")[:2])


def checkpoint_file(path: str | os.PathLike[str]) -> Path:
    """``path`` itself, or ``path / CHECKPOINT_NAME`` when ``path`` is a run directory."""
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() else path


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``state`` (plus format / version fields) atomically: temp file in the same folder,
    then ``os.replace``; the temp file is removed on any failure."""
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
    """Load and check a checkpoint (``torch.load(weights_only=True)``); ``path`` may be a run directory.

    Raises CheckpointError when the file is missing or unreadable, is not a kinetic checkpoint
    (including files that hold Python objects: they are refused, never unpickled), has another
    format version, or was written by a kinetic of another major.minor version.
    """
    path = checkpoint_file(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message suggests weights_only=False, i.e. running the file's code: never do that
        raise CheckpointError(
            f"cannot read {path}: not a kinetic checkpoint (not a torch file of tensors and plain data only; kinetic "
            "never unpickles anything else, since a file from an untrusted source could run code)"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, AttributeError, TypeError, OverflowError) as err:
        msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        why = damaged_file_reason(path) or f"not a kinetic checkpoint (torch cannot read it: {msg})"
        raise CheckpointError(f"cannot read {path}: {why}") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a kinetic checkpoint (no format field {CHECKPOINT_FORMAT!r})")
    if ckpt.get("format_version") != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {str(ckpt.get('format_version'))[:40]!r}; this kinetic reads "
            f"version {CHECKPOINT_FORMAT_VERSION}"
        )
    v = str(ckpt.get("kinetic_version"))[:40]
    if _major_minor(v) != _major_minor(__version__):
        raise CheckpointError(
            f"{path} was written by kinetic {v}; this is kinetic {__version__} (major.minor must match)"
        )
    for key in ("step", "model", "sde", "model_config"):
        if key not in ckpt:
            raise CheckpointError(f"{path} is incomplete: missing {key!r}")
    return ckpt


def same_data(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Structural equality of plain data, floats to a relative tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_data(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_data(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or abs(a - b) <= rel * max(abs(a), abs(b))
    return a == b


def check_compatible(ckpt: dict[str, Any], sde, model_config: dict[str, Any], where: str = "checkpoint") -> None:
    """CheckpointError unless the checkpoint's SDE (spec) and model configuration match ``sde`` and
    ``model_config`` (what a run resuming from it would build)."""
    if not same_data(ckpt.get("sde"), sde.spec()):
        spec = ckpt.get("sde") or {}
        raise CheckpointError(
            f"{where} was trained with a different SDE ({spec.get('name')!r}, params {spec.get('params')}) than "
            f"this run ({sde.name!r}, params {sde.params}); use another --out or the same SDE settings"
        )
    mc = {**MODEL_CONFIG_DEFAULTS, **ckpt.get("model_config", {})}
    diff = [k for k in model_config if not same_data(mc.get(k), model_config[k])]
    if diff:
        parts = ", ".join(f"{k}: {mc.get(k)!r} -> {model_config[k]!r}" for k in diff)
        raise CheckpointError(f"{where} has a different model configuration ({parts})")


def _non_finite(state: dict[str, Any]) -> list[str]:
    return [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]


def load_model(path: str | os.PathLike[str], *, ema: bool = True, device=None, network=None):
    """Rebuild the trained model of a checkpoint: returns ``(score_model, ckpt)``.

    ``score_model`` is a `kinetic.score.ScoreModel` in eval mode holding the EMA weights
    (``ema=False``: the raw weights); ``score_model.score`` is a ``score_fn`` for the samplers
    (``score(z, t, labels)`` for a conditional model: ``score_model.num_classes`` > 0) and
    ``score_model.sde`` the SDE it was trained for. A run trained with its own network
    (``kn.train(config, network=...)``) needs it again: ``network`` an instance (its weights are
    replaced), its class or a constructor taking no arguments. Non-finite weights raise
    CheckpointError naming the tensors.
    """
    from .sde import LinearSDE
    from .training.parts import build_network, score_model

    ckpt = load_checkpoint(path)
    where = checkpoint_file(path)
    mc = {**MODEL_CONFIG_DEFAULTS, **ckpt["model_config"]}
    if mc.get("kind") == "custom" and network is None:
        name = str(mc.get("network", "a custom network"))[:200]
        raise CheckpointError(f"checkpoint {where} holds its own network ({name}), not one of kinetic's: pass it, "
                              f"load_model(..., network={name.rsplit('.', 1)[-1]}(...))")
    try:
        sde = LinearSDE.from_spec(ckpt["sde"])
        net = build_network(mc, sde, network)
        which = "ema" if ema and ckpt.get("ema") is not None else "model"
        weights = ckpt[which]
        bad = _non_finite(weights)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise CheckpointError(
                f"checkpoint {where} holds non-finite {which} weights ({', '.join(bad[:3])}{more}): the run diverged "
                "before it was written; use an earlier checkpoint"
            )
        net.load_state_dict(weights)
        sm = score_model(net, sde, mc)
    except CheckpointError:
        raise
    except (KeyError, ValueError, RuntimeError, TypeError, ArithmeticError) as err:
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise CheckpointError(f"checkpoint {where} does not rebuild its model: {type(err).__name__}: {msg}") from None
    if device is not None:
        sm.to(device)
    sm.eval()
    return sm, ckpt
