"""`kinetic info`: the matrices, spectrum, stationary law and perturbation covariances of an SDE."""

from __future__ import annotations

import json
from typing import List, Optional

import typer
from rich.table import Table

from kinetic.presets import PRESETS, preset

from .common import cli_errors, console, parse_params, styled


def _overflow(err: ArithmeticError) -> ValueError:
    """The one-line error for SDE parameters that overflow: the words of ``err`` without the errno
    tuple math.exp adds."""
    a = err.args
    why = str(a[1]) if len(a) == 2 and isinstance(a[1], str) else (str(err) or type(err).__name__)
    return ValueError(f"--param: these SDE parameters overflow in floating point ({why}); use smaller values")


def _matrix_table(title: str, rows) -> Table:
    console.print(styled("[bold]{}[/]", title))
    table = Table(show_header=False, box=None, pad_edge=False)
    scale = max((abs(v) for row in rows for v in row), default=0.0)
    for row in rows:  # round-off below 1e-12 of the largest entry is shown as 0
        table.add_row(*(f"{(v if abs(v) > 1e-12 * scale else 0.0): .6g}" for v in row))
    return table


def _sde(sde: str | None, order: int | None, params: dict):
    """`kinetic.presets.preset` of ``--sde`` / ``--order`` / ``--param`` (neither name nor order:
    hold; order alone picks the preset), its argument errors named by option."""
    if order is not None and order < 1:
        raise ValueError(f"--order must be an integer >= 1, got {order}")
    try:
        return preset(sde if sde is not None or order is not None else "hold", order=order, **params)
    except TypeError as err:
        raise ValueError(f"--param: {err}") from None
    except ValueError as err:
        if params and not str(err).startswith("--"):
            raise ValueError(f"--param: {err}") from None
        raise


@cli_errors
def info(
    sde: Optional[str] = typer.Option(None, "--sde", help=f"SDE preset: {', '.join(PRESETS)} (default: hold, or by --order)."),
    order: Optional[int] = typer.Option(None, "--order", help="Order k: 1 VP, 2 CLD, 3 HOLD, other k the critically damped chain."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="Preset parameter NAME=VALUE, repeatable (e.g. --param l_inv=2)."),
    times: str = typer.Option("0,0.001,0.01,0.1,0.5,1", "--times", help="Comma-separated times (fractions of T) for the covariance."),
    as_json: bool = typer.Option(False, "--json", help="Print machine-readable JSON instead of tables."),
) -> None:
    """Show an SDE: A, G, eigenvalues, mixing rate, stationary covariance, Sigma(t) at a few times.

    Examples:

      kinetic info --sde hold

      kinetic info --order 4 --json

      kinetic info --sde cld --param m_inv=2
    """
    try:
        model = _sde(sde, order, parse_params(param))
    except ArithmeticError as err:
        raise _overflow(err) from None
    try:
        fracs = [float(x) for x in times.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"--times expects comma-separated numbers in [0, 1], got {times!r}") from None
    if any(not 0 <= f <= 1 for f in fracs):
        raise ValueError(f"--times values must lie in [0, 1] (fractions of T), got {times!r}")
    try:
        data = model.info([f * model.T for f in fracs])
    except ArithmeticError as err:
        raise _overflow(err) from None
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console.print(styled("[bold]{}[/]", repr(model)))
    console.print(f"schedule: {data['schedule']}   B(T) = {data['tau_T']:.6g}")
    console.print(_matrix_table("drift A", data["drift"]))
    console.print(_matrix_table("diffusion G", data["diffusion"]))
    nb = data["noised_blocks"]
    console.print(
        f"noised blocks: {', '.join(map(str, nb))} (score_fn returns "
        + ("one data-shaped block)" if len(nb) == 1 else f"{len(nb)} data-shaped blocks, stacked on axis 1)")
    )
    ev = ", ".join(f"{re:.6g}{im:+.3g}i" if abs(im) > 1e-9 else f"{re:.6g}" for re, im in data["eigenvalues"])
    console.print(f"eigenvalues of A: {ev}")
    console.print(
        f"mixing rate: {data['mixing_rate_tau']:.6g} per unit tau "
        f"(the mean decays like exp(-rate * B(t)) times a polynomial for a defective A)"
    )
    if data["stationary_cov"] is not None:
        console.print(_matrix_table("stationary covariance (the prior)", data["stationary_cov"]))
    else:
        console.print("no stationary law (A is not Hurwitz): the prior is N(0, Sigma(T))")
    table = Table(title="perturbation covariance Sigma(t) given x0 (diagonal; auxiliaries from aux_cov)")
    table.add_column("t")
    for i in range(model.order):
        table.add_column(f"Sigma[{i},{i}]")
    for t, S in data["covariance"].items():
        table.add_row(t, *(f"{S[i][i]:.4e}" for i in range(model.order)))
    console.print(table)
