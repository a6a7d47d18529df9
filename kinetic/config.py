"""`TrainConfig`: every setting of a training run, as plain data, with TOML load/save.

Reading uses the standard library's ``tomllib``; writing uses ``tomli_w`` when installed and
otherwise a tiny writer for the flat table (plus the ``[sde_params]`` sub-table) this class needs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["TrainConfig", "ConfigError", "dump_toml", "load_toml"]

SDE_NAMES = ("vp", "ve", "cld", "hold", "langevin")
MODEL_KINDS = ("auto", "mlp", "unet")
MODEL_SIZES = ("tiny", "small", "cifar")
DEVICES_HELP = "auto, cpu, cuda or cuda:N"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field (also in ``.field``)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass
class TrainConfig:
    """Settings of one training run (see ``docs/training.md``).

    The defaults are the quick CPU run of ``kinetic train``: HOLD on the 8x8 digits with the small
    U-Net, 600 steps of batch 64 (recognisable digits in about five minutes on two busy cores).

    ``batch_size`` is the global batch (split evenly across DDP ranks). ``sample_every`` /
    ``ckpt_every`` of 0 mean "only at the end". ``out`` of None means ``runs/<sde>-<data>``.
    """

    # what to model
    sde: str = "hold"
    order: int | None = None
    sde_params: dict = field(default_factory=dict)
    data: str = "digits"
    data_dir: str | None = None
    data_n: int | None = None
    resolution: int | None = None
    # network and objective
    model: str = "auto"
    model_size: str = "small"
    parameterization: str = "x0"
    input_scaling: bool = True
    data_std: float = 1.0
    weighting: str = "edm"
    t_eps: float = 1e-5
    time_sampling: str = "lognormal"
    # optimisation
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: int = 50
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    skip_nonfinite: bool = False
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = True
    compile: bool = False
    out: str | None = None
    resume: bool = False
    overwrite: bool = False
    log_every: int = 10
    ckpt_every: int = 200
    sample_every: int = 300
    n_samples: int = 64
    sample_steps: int = 100
    sample_solver: str = "ei"
    sample_t_eps: float = 1e-3

    # ------------------------------------------------------------------ plain data
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sde_params"] = dict(self.sde_params)
        return d

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        """Build from a dict; unknown keys raise ConfigError naming them."""
        if not isinstance(d, dict):
            raise ConfigError(f"config must be a table (dict), got {type(d).__name__}")
        unknown = sorted(set(d) - set(cls.field_names()))
        if unknown:
            raise ConfigError(
                f"unknown config field(s): {', '.join(unknown)}; valid: {', '.join(cls.field_names())}", unknown[0]
            )
        cfg = cls(**d)
        cfg.validate()
        return cfg

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ TOML
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TrainConfig":
        """Read a TOML file (any subset of the fields)."""
        return cls.from_dict(load_toml(path))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write this config as TOML (None values are omitted: they mean "the default")."""
        from .fileio import atomic_write_text

        return atomic_write_text(path, dump_toml(self.to_dict()))

    # ------------------------------------------------------------------ derived values
    def run_name(self) -> str:
        """``<sde>-<data>``, with the order for the chain (``langevin4-digits``)."""
        name = self.sde
        if self.sde == "langevin":
            name = f"langevin{self.order if self.order is not None else 3}"
        return f"{name}-{self.data}"

    def out_dir(self) -> Path:
        return Path(self.out) if self.out else Path("runs") / self.run_name()

    def build_sde(self):
        """The `LinearSDE` this config names: ``kinetic.preset(sde, order=order, **sde_params)``."""
        from .presets import preset

        try:
            return preset(self.sde, order=self.order, **self.sde_params)
        except TypeError as err:
            raise ConfigError(f"sde_params: {err}", "sde_params") from None
        except ValueError as err:
            raise ConfigError(str(err), "sde_params") from None

    # ------------------------------------------------------------------ validation
    def validate(self) -> "TrainConfig":
        """Raise ConfigError naming the first invalid field; returns self."""
        from .data import DATASETS
        from .losses import TIME_SAMPLINGS, WEIGHTINGS
        from .score import PARAMETERIZATIONS

        def choice(name, options):
            v = getattr(self, name)
            if v not in options:
                raise ConfigError(f"{name} must be one of {', '.join(map(str, options))}; got {v!r}", name)

        def integer(name, lo, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"{name} must be an integer >= {lo}; got {v!r}", name)

        def number(name, lo=None, hi=None, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number; got {v!r}", name)
            if lo is not None and (v < lo or (lo_open and v == lo)):
                raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {v!r}", name)
            if hi is not None and v > hi:
                raise ConfigError(f"{name} must be <= {hi}; got {v!r}", name)
            setattr(self, name, float(v))

        def boolean(name):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {getattr(self, name)!r}", name)

        choice("sde", SDE_NAMES)
        integer("order", 1, allow_none=True)
        if not isinstance(self.sde_params, dict):
            raise ConfigError(f"sde_params must be a table of preset arguments; got {self.sde_params!r}", "sde_params")
        choice("data", DATASETS)
        for name in ("data_dir", "out"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise ConfigError(f"{name} must be a path (string); got {v!r}", name)
            if v is not None:
                setattr(self, name, os.fspath(v))
        integer("data_n", 1, allow_none=True)
        integer("resolution", 1, allow_none=True)
        choice("model", MODEL_KINDS)
        choice("model_size", MODEL_SIZES)
        choice("parameterization", PARAMETERIZATIONS)
        boolean("input_scaling")
        number("data_std", 0.0, lo_open=True)
        choice("weighting", WEIGHTINGS)
        number("t_eps", 0.0, lo_open=True)
        choice("time_sampling", TIME_SAMPLINGS)
        integer("steps", 0)
        integer("batch_size", 1)
        number("lr", 0.0, lo_open=True)
        number("weight_decay", 0.0)
        integer("warmup", 0)
        number("grad_clip", 0.0)
        number("ema_decay", 0.0, 1.0)
        for name in ("skip_nonfinite", "amp", "compile", "resume", "overwrite"):
            boolean(name)
        integer("seed", 0)
        if not isinstance(self.device, str) or not (
            self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")
        ):
            raise ConfigError(f"device must be {DEVICES_HELP}; got {self.device!r}", "device")
        integer("log_every", 1)
        integer("ckpt_every", 0)
        integer("sample_every", 0)
        integer("n_samples", 0)
        integer("sample_steps", 1)
        if not isinstance(self.sample_solver, str) or not self.sample_solver:
            raise ConfigError(f"sample_solver must be a solver name; got {self.sample_solver!r}", "sample_solver")
        number("sample_t_eps", 0.0, lo_open=True)
        if self.sde != "langevin" and self.order is not None:
            expected = {"vp": 1, "ve": 1, "cld": 2, "hold": 3}[self.sde]
            if self.order != expected:
                raise ConfigError(f"order={self.order} does not match sde={self.sde!r} (order {expected})", "order")
        return self


# ---------------------------------------------------------------------- TOML helpers
def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


def _toml_value(v: Any, key: str) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, (str, os.PathLike)):
        return json.dumps(os.fspath(v))  # JSON string escapes are valid TOML basic-string escapes
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x, key) for x in v if x is not None) + "]"
    raise ConfigError(f"cannot write {key}={v!r} ({type(v).__name__}) to TOML")


def _toml_key(k: str) -> str:
    return k if k and all(c.isalnum() or c in "_-" for c in k) else json.dumps(k)


def dump_toml(d: dict[str, Any]) -> str:
    """TOML text for a dict of scalars / lists plus one level of sub-tables; None is omitted."""
    try:
        import tomli_w  # type: ignore[import-not-found]

        def strip(x):
            if isinstance(x, dict):
                return {k: strip(v) for k, v in x.items() if v is not None}
            return x

        return tomli_w.dumps(strip(d))
    except ImportError:
        pass
    lines, tables = [], []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, dict):
            tables.append((k, v))
        else:
            lines.append(f"{_toml_key(k)} = {_toml_value(v, k)}")
    for name, table in tables:
        lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for k, v in table.items():
            if v is None:
                continue
            if isinstance(v, dict):
                raise ConfigError(f"cannot write nested table {name}.{k} to TOML")
            lines.append(f"{_toml_key(k)} = {_toml_value(v, f'{name}.{k}')}")
    return "\n".join(lines) + "\n"
