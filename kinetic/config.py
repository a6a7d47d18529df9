"""`TrainConfig`: every setting of a training run, as plain data, with TOML load/save.

A `TrainConfig` is checked once, when it is made (``TrainConfig(...)``, ``from_dict``, ``load``,
``replace``), and is frozen afterwards: an instance that exists is valid, so `kinetic.training`
never checks it again. The choice fields read their names from the registries that own them
(`CHOICES`): the SDE presets, datasets, models, parameterisations, weightings, time samplings and
solvers each define their names once, in their own module.

Reading uses the standard library's ``tomllib``; writing uses ``tomli_w`` when installed and
otherwise a tiny writer for the flat table (plus the ``[sde_params]`` sub-table) this class needs.
The run-control fields (`RUN_CONTROL`: out, resume, overwrite) say what to do with a run
directory, not how to train: no file turns on ``resume`` or ``overwrite``, and the ``config.toml``
that a run writes into its directory holds none of the three.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = [
    "TrainConfig", "ConfigError", "CHOICES", "RUN_CONTROL", "SAFE_ON_RESUME", "dump_toml", "load_toml", "merge_settings",
    "read_settings", "show",
]

DEVICES_HELP = "auto, cpu, cuda or cuda:N"
#: Fields that steer what happens to the run directory; never saved to, nor replayed from, a file.
RUN_CONTROL = ("out", "resume", "overwrite")
#: Fields a resumed run may change: they do not alter what is being trained, only for how long and
#: what is written along the way. Everything else comes from the run's own config.
SAFE_ON_RESUME = (
    "steps", "log_every", "ckpt_every", "sample_every", "n_samples", "sample_steps", "sample_solver",
    "sample_t_eps", "eval_every", "eval_n", "tensorboard", "device", "skip_nonfinite",
)
#: Upper bound of ``sample_steps`` (shared with the sampling CLI, see `kinetic.evaluation.MAX_STEPS`).
from .data import resolve_data_dir  # noqa: E402
from .checks import MAX_COUNT, MAX_SEED, MAX_STEPS as MAX_SAMPLE_STEPS, parse_device  # noqa: E402


def _sde_names():
    from .presets import PRESETS

    return tuple(PRESETS)


def _datasets():
    from .data import DATASETS

    return DATASETS


def _model_kinds():
    from .models import MODEL_KINDS  # kinetic.models is the repository's models/ folder (pyproject package-dir)

    return MODEL_KINDS


def _model_sizes():
    from .models import MODEL_SIZES

    return MODEL_SIZES


def _parameterizations():
    from .score import PARAMETERIZATIONS

    return PARAMETERIZATIONS


def _weightings():
    from .losses import WEIGHTINGS

    return WEIGHTINGS


def _time_samplings():
    from .losses import TIME_SAMPLINGS

    return TIME_SAMPLINGS


def _solvers():
    from .solvers import SOLVERS

    return tuple(SOLVERS)


#: field -> the registry that owns its names (read when a config is checked, never copied here).
CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    "sde": _sde_names,
    "data": _datasets,
    "model": _model_kinds,
    "model_size": _model_sizes,
    "parameterization": _parameterizations,
    "weighting": _weightings,
    "time_sampling": _time_samplings,
    "sample_solver": _solvers,
}


def show(value: Any, limit: int = 60) -> str:
    """``repr(value)``, cut to ``limit`` characters: error lines never echo a hostile value in full."""
    r = repr(value)
    return r if len(r) <= limit else f"{r[: limit - 20]}...({len(r)} characters)"


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field (also in ``.field``, and any
    other fields it is about in ``.related``)."""

    def __init__(self, message: str, field: str | None = None, related: tuple[str, ...] = ()):
        super().__init__(message)
        self.field = field
        self.related = tuple(related)


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run (see ``docs/training.md``); checked when made, then frozen.

    The defaults are the quick CPU run of ``kinetic train``: HOLD on the 8x8 digits with the small
    U-Net, 600 steps of batch 64 (recognisable digits in about five minutes on two busy cores).
    ``order`` alone picks the preset, as ``kinetic train --order K`` does: 1 vp, 2 cld, 3 hold,
    other K langevin(K) (`kinetic.presets.preset_for_order`); ``sde`` is then that name.

    `TrainConfig.resolve` merges a config file and flags over the defaults, and for a resumed run
    takes the run's own config (the rules ``kinetic train`` follows).

    ``conditional`` trains a class-conditional network on the dataset's labels (digits, cifar10, a
    folder of class sub-folders), with each label replaced by the null class with probability
    ``label_dropout`` (the unconditional score classifier-free guidance needs; 0 disables it).

    ``batch_size`` is the global batch (split evenly across DDP ranks). ``sample_every`` /
    ``ckpt_every`` of 0 mean "only at the end"; ``eval_every`` of 0 means never. ``out`` of None
    means ``runs/<sde>-<data>``.
    """

    # what to model
    sde: str | None = None  # None: the preset the order names (hold when no order either)
    order: int | None = None
    sde_params: dict = field(default_factory=dict)
    data: str = "digits"
    data_dir: str | None = None
    data_n: int | None = None
    resolution: int | None = None  # folder: the side of the square images (None: 32)
    channels: int | None = None  # folder: 1 (grayscale) or 3 (RGB, None)
    # network and objective
    model: str = "auto"
    model_size: str = "small"
    parameterization: str = "x0"
    conditional: bool = False
    label_dropout: float = 0.1
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
    # what is written along the way
    log_every: int = 10
    ckpt_every: int = 200
    sample_every: int = 300
    n_samples: int = 64
    sample_steps: int = 100
    sample_solver: str = "ei"
    sample_t_eps: float = 1e-3
    eval_every: int = 0
    eval_n: int = 500
    tensorboard: bool = False

    def __post_init__(self):
        self._check()

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
                f"unknown config field(s): {', '.join(show(u, 40) for u in unknown)}; valid: {', '.join(cls.field_names())}",
                unknown[0],
            )
        return cls(**d)

    def replace(self, **changes) -> "TrainConfig":
        """A copy with ``changes`` (checked like any new config)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ TOML
    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "TrainConfig":
        """Read a TOML file (any subset of the fields; see `read_file` for run control)."""
        return cls.from_dict(cls.read_file(path))

    @classmethod
    def read_file(cls, path: str | os.PathLike[str]) -> dict[str, Any]:
        """A TOML file's fields, checked (ConfigError names the file, then the field).

        ``resume`` / ``overwrite`` are run-control flags: a file may not turn them on (a saved config
        must never replace or continue a run by itself); ``false`` is accepted and ignored (files
        written by kinetic 0.1.0 hold both).
        """
        d = read_settings(path, tables=("sde_params",))
        try:
            for name in ("resume", "overwrite"):
                if d.get(name) is True:
                    raise ConfigError(
                        f"{name} = true in a config file is not used: run control is never read from a file; "
                        f"give --{name} on the command line (TrainConfig({name}=True) from Python)", name,
                    )
                d.pop(name, None)
            cls.from_dict(d)
        except ConfigError as err:
            raise ConfigError(f"config file {show(os.fspath(path), 200)}: {err}") from None
        return d

    @classmethod
    def resolve(cls, file: str | os.PathLike[str] | dict | None = None, flags: dict[str, Any] | None = None,
                ) -> "TrainConfig":
        """The config of a run: the defaults <- ``file`` (a TOML path, or its fields) <- ``flags``
        (only the settings given, e.g. on the command line).

        ``order`` given without ``sde`` picks the preset (``sde`` None) unless the file's SDE is the
        langevin chain; an ``sde`` given drops the file's order (fixed-order presets) and the file's
        ``sde_params`` (they belong to the file's SDE). With ``resume`` in ``flags`` the run in ``out``
        supplies its own config (its config.toml, else its checkpoint's) and ``flags`` may change
        only `SAFE_ON_RESUME` fields (ConfigError naming the others).
        """
        given = dict(flags or {})
        values = merge_settings(cls.read_file(file) if file is not None and not isinstance(file, dict) else file,
                                given, superseded=_superseded)
        if not values.get("resume"):
            return cls.from_dict(values)
        where = cls.from_dict(values).out_dir()
        run = _run_config(where)
        changed = cls.from_dict({**run, **values, "out": str(where)}).changed_on_resume(run, values)
        if changed:
            parts = ", ".join(f"{k} {show(values[k])} (the run has {show(run[k])})" for k in changed)
            raise ConfigError(f"{parts}; a resumed run keeps its settings: leave them out, or use another out "
                              f"(may change: {', '.join(SAFE_ON_RESUME)})", "resume", tuple(changed))
        safe = {k: v for k, v in given.items() if k in SAFE_ON_RESUME}
        return cls.from_dict({**run, **safe, "out": str(where), "resume": True})

    def changed_on_resume(self, saved: dict[str, Any], only: dict[str, Any] | None = None) -> list[str]:
        """Fields where this config differs from a run's ``saved`` config (a checkpoint's ``config``)
        that a resumed run may not change (all but `SAFE_ON_RESUME` and `RUN_CONTROL`); ``only``:
        look at these fields alone."""
        from .checkpoint import same_data

        saved = dict(saved)
        if saved.get("data_dir"):  # written relative by older versions: compare it resolved, as it is stored now
            saved["data_dir"] = resolve_data_dir(saved["data_dir"])
        now = self.to_dict()
        keys = [k for k in now if only is None or k in only]
        return [k for k in keys if k in saved and k not in SAFE_ON_RESUME + RUN_CONTROL and not same_data(saved[k], now[k])]

    def save(self, path: str | os.PathLike[str], *, include_out: bool = True) -> Path:
        """Write this config as TOML; None values (the default) are omitted, and so are ``resume`` and
        ``overwrite``, which no file replays. A run directory's own ``config.toml`` is written with
        ``include_out=False``: re-running it with ``--config`` starts a new run elsewhere instead of
        pointing at the run it came from."""
        from .fileio import atomic_write_text

        skip = ("resume", "overwrite") if include_out else RUN_CONTROL
        d = {k: v for k, v in self.to_dict().items() if k not in skip}
        return atomic_write_text(path, dump_toml(d))

    # ------------------------------------------------------------------ derived values
    def run_name(self) -> str:
        """``<sde>-<data>``, with the order for the chain (``langevin4-digits``)."""
        name = self.sde
        if self.sde == "langevin":
            name = f"langevin{self.order if self.order is not None else 3}"
        return f"{name}-{self.data}"

    def out_dir(self) -> Path:
        """The run directory as given (``runs/<sde>-<data>`` when ``out`` is None), not resolved."""
        return Path(self.out) if self.out else Path("runs") / self.run_name()

    # ------------------------------------------------------------------ the one check
    def _sde(self):
        """``kinetic.preset(sde, order=order, **sde_params)``, its errors as ConfigError."""
        from .presets import preset

        try:
            return preset(self.sde, order=self.order, **self.sde_params)
        except TypeError as err:
            raise ConfigError(f"sde_params: {err}", "sde_params") from None
        except (ValueError, ArithmeticError) as err:
            if str(err).startswith("order ") and self.order is not None:
                raise ConfigError(str(err), "order") from None
            raise ConfigError(f"sde_params: {err}", "sde_params") from None

    def _check(self) -> None:
        """Raise ConfigError naming the first invalid field; normalise numbers and paths."""

        def put(name, v):
            object.__setattr__(self, name, v)

        def choice(name):
            v, options = getattr(self, name), CHOICES[name]()
            if not isinstance(v, str) or v not in options:
                raise ConfigError(f"{name} must be one of {', '.join(map(str, options))}; got {show(v)}", name)

        def integer(name, lo, hi=None, allow_none=False):
            v = getattr(self, name)
            if v is None and allow_none:
                return
            top = MAX_COUNT if hi is None else hi  # every count is bounded above too (kinetic.checks.MAX_COUNT)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo or v > top:
                big = isinstance(v, int) and not isinstance(v, bool) and v > top
                rng = f">= {lo}" if hi is None and not big else f"in [{lo}, {'2**53' if top == MAX_COUNT else top}]"
                raise ConfigError(f"{name} must be an integer {rng}; got {show(v)}", name)

        def number(name, lo=None, hi=None, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{name} must be a finite number; got {show(v)}", name)
            if lo is not None and (v < lo or (lo_open and v == lo)):
                raise ConfigError(f"{name} must be {'>' if lo_open else '>='} {lo}; got {show(v)}", name)
            if hi is not None and v > hi:
                raise ConfigError(f"{name} must be <= {hi}; got {show(v)}", name)
            put(name, float(v))

        def boolean(name):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false; got {show(getattr(self, name))}", name)

        integer("order", 1, allow_none=True)
        self._derive_sde()
        choice("sde")
        if not isinstance(self.sde_params, dict):
            raise ConfigError(f"sde_params must be a table of preset arguments; got {show(self.sde_params)}", "sde_params")
        choice("data")
        self._check_paths()
        integer("data_n", 1, allow_none=True)
        integer("resolution", 1, allow_none=True)
        integer("channels", 1, allow_none=True)
        choice("model")
        choice("model_size")
        choice("parameterization")
        boolean("conditional")
        number("label_dropout", 0.0, 1.0)
        boolean("input_scaling")
        number("data_std", 0.0, lo_open=True)
        choice("weighting")
        number("t_eps", 0.0, lo_open=True)
        choice("time_sampling")
        integer("steps", 0)
        integer("batch_size", 1)
        number("lr", 0.0, lo_open=True)
        number("weight_decay", 0.0)
        integer("warmup", 0)
        number("grad_clip", 0.0)
        number("ema_decay", 0.0, 1.0)
        for name in ("skip_nonfinite", "amp", "compile", "resume", "overwrite", "tensorboard"):
            boolean(name)
        integer("seed", 0, MAX_SEED)
        try:
            parse_device(self.device, check_available=False)
        except (ValueError, TypeError):
            raise ConfigError(f"device must be {DEVICES_HELP}; got {show(self.device)}", "device") from None
        integer("log_every", 1)
        integer("ckpt_every", 0)
        integer("sample_every", 0)
        integer("n_samples", 0)
        integer("sample_steps", 1, MAX_SAMPLE_STEPS)
        choice("sample_solver")
        number("sample_t_eps", 0.0, lo_open=True)
        integer("eval_every", 0)
        integer("eval_n", 2)
        self._check_combinations()

    def _check_image_shape(self) -> None:
        """resolution / channels: free for an image folder, fixed by digits (1 x 8 x 8) and cifar10
        (3 x 32 x 32), meaningless for the 2-D toys (the U-Net presets adapt their depth to any side)."""
        from .data import FIXED_SHAPE, TOY_DATASETS

        if self.channels is not None and self.channels not in (1, 3):
            raise ConfigError(f"channels must be 1 (grayscale) or 3 (RGB); got {show(self.channels)}", "channels")
        for name, axis in (("resolution", 1), ("channels", 0)):
            v = getattr(self, name)
            if v is None or self.data == "folder":
                continue
            if self.data in TOY_DATASETS:
                raise ConfigError(f"{name} applies to image data (--data folder); {self.data!r} is a 2-D toy", name)
            fixed = FIXED_SHAPE[self.data][axis]
            if v != fixed:
                raise ConfigError(f"{name} of {self.data!r} is fixed at {fixed} (set it for --data folder); got {v}", name)

    def _derive_sde(self) -> None:
        """sde None: the preset the order names (hold without one); its order is then the preset's."""
        if self.sde is None:
            from .presets import preset_for_order

            object.__setattr__(self, "sde", preset_for_order(self.order) if self.order is not None else "hold")
            if self.sde != "langevin":
                object.__setattr__(self, "order", None)  # vp / cld / hold: the order is the preset's

    def _check_paths(self) -> None:
        for name in ("data_dir", "out"):
            v = getattr(self, name)
            if v is not None and not isinstance(v, (str, os.PathLike)):
                raise ConfigError(f"{name} must be a path (string); got {show(v)}", name)
            if v is not None:  # data_dir stored resolved: a run copied elsewhere still finds (or refuses) its data
                object.__setattr__(self, name, resolve_data_dir(v) if name == "data_dir" and os.fspath(v) else os.fspath(v))
                if not getattr(self, name):
                    raise ConfigError(f"{name} must be a non-empty path", name)

    def _check_combinations(self) -> None:
        """The rules between fields (each field alone is already checked)."""
        if self.sde != "langevin" and self.order is not None:
            from .presets import PRESETS

            expected = PRESETS[self.sde]().order
            if self.order != expected:
                raise ConfigError(f"order={self.order} does not match sde={self.sde!r} (order {expected})", "order")
        if self.resume and self.overwrite:
            raise ConfigError(
                "resume and overwrite exclude each other: resume continues the run in out, overwrite replaces it",
                "overwrite", ("resume",),
            )
        self._check_image_shape()
        if self.conditional:
            from .data import TOY_DATASETS

            if self.data in TOY_DATASETS:
                raise ConfigError(
                    f"conditional needs a labelled dataset (digits, cifar10, or a folder of class sub-folders); "
                    f"{self.data!r} is unlabelled", "conditional",
                )
        if self.eval_every:
            from .data import IMAGE_DATASETS

            if self.data in IMAGE_DATASETS and self.data != "digits":
                raise ConfigError(
                    f"eval_every needs digits (fd-digits) or a 2-D toy (sliced Wasserstein); data {self.data!r} has "
                    "no built-in metric (use kinetic evaluate with --metric fid)", "eval_every",
                )
        sde = self._sde()  # the preset's own checks of sde_params (cheap: k x k matrices)
        if self.t_eps >= sde.T:
            raise ConfigError(f"t_eps={self.t_eps} must be smaller than the SDE's T={sde.T}", "t_eps")


def _superseded(base: dict[str, Any], given: dict[str, Any]) -> tuple[str, ...]:
    """The file settings a train flag makes void: ``order`` alone picks the preset (the file's sde
    goes unless it is the langevin chain); another ``sde`` drops the file's order and sde_params."""
    drop = []
    if "order" in given and "sde" not in given and base.get("sde") != "langevin":
        drop.append("sde")
    if given.get("sde") not in (None, "langevin") and "order" not in given:
        drop.append("order")
    if "sde" in given and given["sde"] != (base.get("sde") or "hold") and "sde_params" not in given:
        drop.append("sde_params")
    return tuple(drop)


def _run_config(out: Path) -> dict[str, Any]:
    """The saved config of the run in ``out`` (its config.toml, else its checkpoint's), without run control."""
    from .checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint

    if not (out / CHECKPOINT_NAME).is_file():
        raise ConfigError(f"no checkpoint to resume from at {show(str(out / CHECKPOINT_NAME), 300)}", "resume")
    try:
        d = load_toml(out / "config.toml") if (out / "config.toml").is_file() else load_checkpoint(out).get("config", {})
    except (ConfigError, CheckpointError) as err:
        raise ConfigError(str(err).strip().splitlines()[0], "resume") from None
    fields = set(TrainConfig.field_names())
    return {k: v for k, v in d.items() if k in fields and k not in RUN_CONTROL}


# ---------------------------------------------------------------------- TOML helpers
def load_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A TOML file as a dict; ConfigError (one line) for a missing, unreadable, binary or invalid file."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a directory, not a TOML file")
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
        return tomllib.loads(text)
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not a text file (not UTF-8): expected TOML") from None
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"config file {path} is not valid TOML: {err}") from None


#: Kinds of a settings-file key (`read_settings`): what its value must be, as the flag would be.
SETTING_KINDS = ("integer", "number", "boolean", "string", "strings")


def _check_kind(key: str, value: Any, kind: str, where: str) -> Any:
    """``value`` of ``key`` checked as strictly as its flag (no "no" for a boolean, no 2.5 for an
    integer); "strings" takes a list of strings or one string (returned as a list)."""

    def bad(expected: str):
        raise ConfigError(f"{where}: {key} must be {expected}; got {show(value)}", key)

    def one(v):
        if kind == "boolean" and not isinstance(v, bool):
            bad("true or false")
        elif kind == "integer" and (isinstance(v, bool) or not isinstance(v, int)):
            bad("an integer")
        elif kind == "number" and (isinstance(v, bool) or not isinstance(v, (int, float))):
            bad("a number")
        elif kind in ("string", "strings") and not isinstance(v, str):
            bad("a string")
        return v

    if kind == "strings":
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list):
            bad('a list (e.g. ["a", "b"]) or one string')
        return [one(v) for v in values]
    return one(value)


def read_settings(path: str | os.PathLike[str], *, section: str | None = None, sections: tuple[str, ...] = (),
                  keys: dict[str, tuple[str, str]] | None = None, tables: tuple[str, ...] = ()) -> dict[str, Any]:
    """The settings of a TOML config file: its top-level keys, updated by its ``[section]`` table.

    ``sections``: the tables a file may hold (one file can serve several commands; only
    ``section`` is read); ``tables``: keys whose value is itself a table (``sde_params``). Any other
    table is refused (a misspelt ``[sampel]`` would otherwise be ignored). ``keys``: file key ->
    (setting name, kind in `SETTING_KINDS`); an unknown key or a value of the wrong kind is refused,
    and the result is keyed by setting name. ``keys`` None keeps every key as written (the caller
    checks them, as `TrainConfig.from_dict` does). ConfigError, one line naming the file.
    """
    name = os.fspath(path) if len(os.fspath(path)) <= 200 else os.fspath(path)[:180] + "..."
    data, where = load_toml(path), f"config file {name}"
    odd = sorted(k for k, v in data.items() if isinstance(v, dict) and k not in sections + tables)
    if odd:
        raise ConfigError(f"unknown section(s) {', '.join('[' + str(s)[:40] + ']' for s in odd)} in "
                          f"{name}; valid sections: {', '.join('[' + s + ']' for s in sections) or 'none'}")
    for sec in (s for s in sections if s in data and not isinstance(data[s], dict)):
        raise ConfigError(f"{where}: [{sec}] must be a table")
    out = {k: v for k, v in data.items() if k not in sections}
    out.update(data.get(section, {}) if section is not None else {})
    if keys is None:
        return out
    unknown = sorted(k for k in out if k not in keys)
    if unknown:
        raise ConfigError(f"unknown option(s) {', '.join(str(u)[:40] for u in unknown)} in {name}", unknown[0])
    return {keys[k][0]: _check_kind(k, v, keys[k][1], where) for k, v in out.items()}


def merge_settings(file: str | os.PathLike[str] | dict | None, flags: dict[str, Any] | None = None, *,
                   superseded: Callable[[dict, dict], tuple[str, ...]] | None = None, **read) -> dict[str, Any]:
    """The settings of a command: ``file`` (a TOML path read by `read_settings` with ``read``, or
    its settings as a dict) <- ``flags`` (only those given on the command line: they win).
    ``superseded(file_settings, flags)`` names file settings that a flag makes void besides its own
    (train: ``--sde`` drops the file's ``order`` and ``sde_params``)."""
    base = dict(file) if isinstance(file, dict) else (read_settings(file, **read) if file is not None else {})
    given = dict(flags or {})
    for k in superseded(base, given) if superseded is not None else ():
        base.pop(k, None)
    return {**base, **given}


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
    raise ConfigError(f"cannot write {key}={show(v)} ({type(v).__name__}) to TOML")


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
