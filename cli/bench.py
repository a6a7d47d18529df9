"""`kinetic bench`: run the benchmark scripts (reduced sizes by default, full with --full)."""

from __future__ import annotations

import importlib
import json
import time
from enum import Enum
from pathlib import Path

import typer

from .common import cli_errors, console, styled


class Bench(str, Enum):
    solvers = "solvers"
    kernels = "kernels"
    mixing = "mixing"
    train = "train"
    quality = "quality"
    peers = "peers"


@cli_errors
def bench(
    which: Bench = typer.Argument(..., help="solvers, kernels, mixing, train, quality or peers (diffusers' schedulers on the same exact score)."),
    full: bool = typer.Option(False, "--full", help="Full sizes (as recorded in docs/); reduced sizes otherwise."),
    out: Path = typer.Option(Path("bench-results"), "--out", help="Directory for the tables, plots and JSON."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads."),
    quiet: bool = typer.Option(False, "--quiet", help="No status spinner."),
) -> None:
    """Run a benchmark and write its tables (and plots) into --out.

    Examples:

      kinetic bench kernels

      kinetic bench solvers --full --out docs
    """
    import torch

    torch.set_num_threads(threads)
    module = importlib.import_module(f"kinetic.bench.{which.value}")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if quiet:
        result = module.main(full=full, out_dir=str(out))
    else:
        with console.status(f"running the {which.value} benchmark ({'full' if full else 'reduced'} sizes)..."):
            result = module.main(full=full, out_dir=str(out))
    elapsed = time.perf_counter() - t0
    md = sorted(out.glob("*.md"), key=lambda p: p.stat().st_mtime)
    if not quiet:
        console.print(styled("[green]done[/] in {} s; results in {}/", f"{elapsed:.1f}", out))
        for p in md[-1:]:
            console.print(p.read_text())
    (out / f"bench_{which.value}_summary.json").write_text(
        json.dumps({"bench": which.value, "full": full, "seconds": elapsed}, indent=2)
    )
    return result
