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
    app()


if __name__ == "__main__":
    main()
