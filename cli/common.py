"""Shared CLI plumbing: one-line errors with exit code 2, consoles, preset options."""

from __future__ import annotations

import functools
import json
from typing import Callable

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)

EXIT_USAGE = 2


def fail(message: str) -> "typer.Exit":
    """Print one readable line to stderr and return the Exit(2) to raise."""
    err_console.print(f"[bold red]Error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_USAGE)


def cli_errors(fn: Callable) -> Callable:
    """Turn the library's ValueError/TypeError/FileNotFoundError into one line and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt):
            raise
        except (ValueError, TypeError, FileNotFoundError, KeyError) as err:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise fail(msg) from None

    return wrapper


def parse_params(params: list[str] | None) -> dict:
    """`--param name=value` pairs -> {name: float or str}."""
    out: dict = {}
    for item in params or []:
        if "=" not in item:
            raise ValueError(f"--param expects NAME=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value
    return out


def build_sde(sde: str | None, order: int | None, params: dict):
    """The SDE named on the command line: `--sde NAME` and/or `--order K` (3 alone means HOLD)."""
    import kinetic as kn

    if order is not None and order < 1:
        raise ValueError(f"--order must be an integer >= 1, got {order}")
    if sde is None and order is None:
        sde = "hold"
    try:
        return kn.preset(sde, order=order, **params)
    except TypeError as err:
        raise ValueError(f"--param: {err}") from None


def load_toml_defaults(config, given: dict, section: str, command) -> dict:
    """Merge a TOML config file under the command's flags: explicitly given flags win.

    The file may hold the options at top level or in a [section] table. A flag counts as given
    when its value differs from the command's default (Typer gives no other signal).
    """
    import inspect

    opts = {k: v for k, v in given.items() if k != "config"}
    if config is None:
        return opts
    import tomllib
    from pathlib import Path

    path = Path(config)
    if not path.is_file():
        raise ValueError(f"--config: no such file {path}")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"--config: {path} is not valid TOML: {err}") from None
    data = {**{k: v for k, v in data.items() if not isinstance(v, dict)}, **data.get(section, {})}
    data = {k.replace("-", "_"): v for k, v in data.items()}
    defaults = {}
    for name, p in inspect.signature(command).parameters.items():
        d = p.default
        defaults[name] = getattr(d, "default", d)  # typer.Option(...) keeps the default in .default
    unknown = [k for k in data if k not in opts]
    if unknown:
        raise ValueError(f"--config: unknown option(s) {', '.join(sorted(unknown))} in {path}")
    for k, v in data.items():
        if k in defaults and opts[k] != defaults[k]:
            continue  # flag given explicitly
        opts[k] = v
    return opts
