"""Shared CLI plumbing: one-line errors with exit code 2, consoles, config files, shared options.

A ``--config FILE.toml`` of ``kinetic sample`` / ``kinetic evaluate`` is read as ``kinetic train``
reads its file: `kinetic.config.merge_settings` gets the file and only the flags given on the
command line (``ctx.get_parameter_source``), and they win; ``--help`` shows the real defaults.
File values are type-checked as strictly as flags, then converted by Click as a flag would be.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer


from .console import console, err_console, escape, styled  # noqa: E402, F401  (markup off; styled escapes)

EXIT_USAGE = 2
# Typer ships its own copy of Click (typer._click); reach its classes through Typer's public names
ClickException = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
MAX_MESSAGE = 1000


def clip(text: str, limit: int = 200) -> str:
    """``text`` cut to about ``limit`` characters (head ... tail), so that no error line echoes a
    hostile value in full."""
    text = str(text)
    if len(text) <= limit:
        return text
    head, tail = (limit * 2) // 3, limit // 4
    return f"{text[:head]}...[{len(text) - head - tail} characters cut]...{text[-tail:]}"


def fail(message: str) -> "typer.Exit":
    """Print one readable line to stderr and return the Exit(2) to raise."""
    line = " ".join(str(message).split("\n")).strip()
    err_console.print(styled("[bold red]Error:[/] {}", clip(line, MAX_MESSAGE)), highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def cli_errors(fn: Callable) -> Callable:
    """Turn the library's ValueError/TypeError/OSError/overflow into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, ClickException):
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise fail(first_line(err)) from None
        except ArithmeticError as err:
            raise fail(f"numerical overflow ({first_line(err)}): a value is too large") from None
        except OSError as err:
            where = f"{err.filename}: " if getattr(err, "filename", None) else ""
            raise fail(f"{where}{err.strerror or first_line(err)}") from None

    return wrapper


def set_threads(threads: int) -> None:
    """torch CPU threads (checked: in [1, the number of CPUs], `kinetic.checks.check_threads`)."""
    from kinetic.checks import check_threads

    try:
        check_threads(threads)
    except ValueError as err:
        raise fail(str(err)) from None
    import torch

    torch.set_num_threads(threads)


def check_writable(path: Optional[Path], option: str, suffixes: tuple[str, ...] = ()) -> Optional[Path]:
    """Fail now (one line) if ``path`` cannot be written, before any work is done: its folder is
    created if missing and a probe file is written and removed there."""
    if path is None:
        return None
    path = Path(path).expanduser()
    if suffixes and path.suffix.lower() not in suffixes:
        raise fail(f"{option} must end in {' or '.join(suffixes)}, got {clip(path, 120)}")
    if path.is_dir():
        raise fail(f"{option}: {clip(path, 200)} is a directory; give a file name")
    from kinetic.fileio import UnsafePathError, check_output, command_inputs

    try:  # not a link, a special file, an input of this command, nor a file kinetic did not write
        check_output(path, option, command_inputs(option))
    except UnsafePathError as err:
        raise fail(str(err)) from None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        if isinstance(err, (FileExistsError, NotADirectoryError)) and any(p.is_file() for p in path.parents):
            why = "a part of the path is a file, not a directory"
        else:
            why = err.strerror or first_line(err)
        raise fail(f"{option}: cannot write {clip(path, 200)}: {why}") from None
    return path


def parse_params(params: list[str] | None) -> dict:
    """`--param name=value` pairs -> {name: float or str}."""
    out: dict = {}
    for item in params or []:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {clip(repr(item), 80)}")
        name, value = item.split("=", 1)
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


# ---------------------------------------------------------------------- config files (kinetic.config.merge_settings)
def _keys_of(param) -> set[str]:
    keys = {param.name}
    for opt in getattr(param, "opts", []):
        if opt.startswith("--"):
            keys.add(opt[2:])
            keys.add(opt[2:].replace("-", "_"))
    return keys


def _kind(param) -> str:
    """"integer", "float", "boolean" or another name (strings, paths) for a Typer / Click option."""
    bare = getattr(param, "bare_type", None)
    k = bare() if callable(bare) else getattr(getattr(param, "type", None), "name", "")
    k = str(k).lower()
    if k.startswith("list[") and k.endswith("]"):
        k = k[5:-1]
    return {"int": "integer", "bool": "boolean"}.get(k, k)


def _setting_kind(param) -> str:
    """The `kinetic.config.SETTING_KINDS` entry of a Typer / Click option: a file value is checked as the flag is."""
    kind = _kind(param)
    if getattr(param, "multiple", False):
        return "strings"
    if kind == "boolean" or getattr(param, "is_flag", False):
        return "boolean"
    if kind.startswith("integer"):
        return "integer"
    return "number" if kind.startswith("float") else "string"


#: The tables a --config file of sample / evaluate may hold (one file can serve both commands).
CONFIG_SECTIONS = ("sample", "evaluate")


def reads_config(section: str) -> Callable:
    """Decorate a command with a ``--config`` option (`config_option`): its file's settings
    (top level, then ``[section]``) fill the options not given on the command line, read by
    `kinetic.config.merge_settings` as ``kinetic train`` reads its file (command line wins)."""

    def decorate(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)  # the Annotated options, as Typer reads them
        required = [p.name for p in sig.parameters.values() if p.default is inspect.Parameter.empty]

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            if kwargs.get("config") is not None:
                kwargs.update(_from_config(kwargs, section))
            _require(kwargs, required)
            return fn(*args, **kwargs)

        # a required option (--checkpoint) may come from the file: Click sees it optional, _require checks it
        wrapper.__signature__ = sig.replace(parameters=[
            p.replace(default=None) if p.name in required else p for p in sig.parameters.values()])
        return wrapper

    return decorate


def _require(values: dict, required: list[str]) -> None:
    """Click's own "Missing option" error for a required option given neither as a flag nor in the file."""
    from typer._click.exceptions import MissingParameter
    from typer._click.globals import get_current_context

    ctx = get_current_context()
    for name in required:
        if values.get(name) is None:
            raise MissingParameter(ctx=ctx, param=next(p for p in ctx.command.params if p.name == name))


def _from_config(values: dict, section: str) -> dict:
    """The settings of ``values["config"]`` for the options not given on the command line, through
    Click's own conversion of each option."""
    from typer._click.globals import get_current_context

    from kinetic.config import ConfigError, merge_settings

    ctx = get_current_context()
    params = {p.name: p for p in ctx.command.params if p.name != "config"}
    keys = {k: (p.name, _setting_kind(p)) for p in params.values() for k in _keys_of(p)}
    flags = {k: v for k, v in values.items() if k in params and source(ctx, k) == "COMMANDLINE"}
    try:
        merged = merge_settings(values["config"], flags, section=section, sections=CONFIG_SECTIONS, keys=keys)
    except ConfigError as err:
        raise fail(f"--config: {err}") from None
    return {k: params[k].process_value(ctx, v) for k, v in merged.items() if k not in flags}


def source(ctx, name: str) -> str:
    """Where ``name``'s value came from: "COMMANDLINE", "DEFAULT_MAP" (a --config file), "DEFAULT"..."""
    src = ctx.get_parameter_source(name)
    return src.name if src is not None else "DEFAULT"


# ---------------------------------------------------------------------- options shared by sample and evaluate
def _solver_names() -> str:
    from kinetic.solvers import SOLVERS

    return ", ".join(SOLVERS)


def _grid_names() -> str:
    from kinetic.sampling import GRIDS

    return ", ".join(GRIDS)


CheckpointOpt = Annotated[Path, typer.Option(
    "--checkpoint", "-c", help="A run directory or a checkpoint .pt file (required: here or in the --config file)."
)]
SolverOpt = Annotated[str, typer.Option("--solver", help=f"Sampler: {_solver_names()}.")]
StepsOpt = Annotated[int, typer.Option("--steps", help="Solver steps, at most 100000 (ignored by the adaptive ode solver).")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed.")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N (as for train).")]
GridOpt = Annotated[Optional[str], typer.Option(
    "--grid", help=f"Time grid: {_grid_names()} (default: the library's default for the solver)."
)]
TEpsOpt = Annotated[float, typer.Option("--t-eps", help="Sampling stops at this time.")]
DenoiseOpt = Annotated[bool, typer.Option("--denoise", help="Finish with a Tweedie denoising step (+1 NFE).")]
BatchSizeOpt = Annotated[int, typer.Option(
    "--batch-size", help="Samples drawn at a time: the peak memory depends on this, not on --n."
)]
ThreadsOpt = Annotated[int, typer.Option(
    "--threads", help="torch CPU threads (1 is fastest for the small models and on shared machines)."
)]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
GuidanceOpt = Annotated[float, typer.Option(
    "--guidance", help="Classifier-free guidance w >= 0 for a conditional model: (1+w) s(z,t,y) - w s(z,t,null); "
    "2 network evaluations per step (0: the conditional model)."
)]
DEFAULT_BATCH_SIZE = 1000
DEFAULT_THREADS = 1


def config_option(section: str):
    """``--config FILE.toml`` of a command decorated with `reads_config` (keys: option names, at top
    level or under ``[section]``); flags given on the command line override it."""
    return Annotated[Optional[Path], typer.Option(
        "--config",
        help=escape(f"TOML file of option values (top level or [{section}]); flags given here override it."),
    )]


def parse_class(value: Optional[str]):
    """``--class``: None / "all" (every class in turn), "null" (the unconditional branch) or an int."""
    if value is None:
        return None
    v = str(value).strip().lower()
    if v in ("all", "null"):
        return v
    try:
        return int(v)
    except ValueError:
        raise fail(f"--class must be a class number, 'all' or 'null'; got {clip(repr(value), 40)}") from None


def check_conditioning(ckpt_path, classes, guidance: float) -> None:
    """One line (exit 2) before any work when --class / --guidance do not fit the checkpoint."""
    if guidance < 0 or guidance != guidance or guidance == float("inf"):
        raise fail(f"--guidance must be a finite number >= 0; got {guidance}")
    if classes is None and not guidance:
        return
    from kinetic.checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(ckpt_path)
    except CheckpointError as err:
        raise fail(f"--checkpoint: {first_line(err)}") from None
    C = int((ckpt.get("model_config") or {}).get("num_classes", 0) or 0)
    data = (ckpt.get("config") or {}).get("data", "its data")
    if C == 0:
        from kinetic.data import DataError, dataset_classes

        try:
            labelled = dataset_classes(data, (ckpt.get("config") or {}).get("data_dir")) > 0
        except (DataError, OSError):
            labelled = False
        why = (f"{data!r} has no class labels" if not labelled
               else f"it was trained on {data!r} without --conditional")
        opt = "--class" if classes not in (None, "all") else "--guidance"
        raise fail(f"{opt}: the checkpoint's model is unconditional ({why}); class labels and guidance need "
                   "kinetic train --conditional on a labelled dataset")
    if isinstance(classes, int) and not 0 <= classes < C:
        raise fail(f"--class must lie in [0, {C - 1}] for this model of {C} classes; got {classes}")
    if classes == "null" and guidance:
        raise fail("--guidance needs a class for every sample; --class null is the unconditional branch")
