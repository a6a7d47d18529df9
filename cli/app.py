"""The `kinetic` Typer application: git-style subcommands."""

from __future__ import annotations

from typing import Optional

import typer

import kinetic

from .bench import bench
from .evaluate import evaluate_cmd
from .sample import sample_cmd
from .train import train
from .info import info

app = typer.Typer(
    name="kinetic",
    help="Diffusion generative modelling with Langevin dynamics of any order (VP, VE, CLD, HOLD, langevin(k)).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=True,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"kinetic {kinetic.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """kinetic: train, sample and evaluate diffusion models built on linear SDEs of any order."""


app.command("train")(train)
app.command("sample")(sample_cmd)
app.command("evaluate")(evaluate_cmd)
app.command("info")(info)
app.command("bench")(bench)


def main() -> None:
    """Console entry point: Click's usage errors (bad types, unknown options) become one line, exit 2."""
    import sys

    from .common import err_console, styled

    from .console import one_line_warnings

    one_line_warnings()
    UsageError = typer.BadParameter.__mro__[1]  # Click's UsageError (vendored by recent Typer)

    try:
        rv = app(standalone_mode=False)
    except UsageError as err:
        if not err.format_message().strip() and err.ctx is not None:  # bare `kinetic`: show the help
            typer.echo(err.ctx.get_help())
            sys.exit(0)
        hint = f" (see: kinetic {err.ctx.command_path.split(' ', 1)[1] if err.ctx and ' ' in err.ctx.command_path else ''} --help)"
        err_console.print(styled("[bold red]Error:[/] {}", f"{err.format_message()}{hint.replace('  ', ' ')}"), highlight=False)
        sys.exit(2)
    except typer.Abort:
        err_console.print("Aborted.")
        sys.exit(130)
    sys.exit(rv if isinstance(rv, int) else 0)


if __name__ == "__main__":
    main()
