"""Rich progress bars fed by the library's callbacks (the library itself never prints)."""

from __future__ import annotations

import contextlib

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .common import err_console


@contextlib.contextmanager
def step_progress(description: str, total: int, quiet: bool = False):
    """Yield a callback(info: dict) that advances a bar by one step per call (no-op when quiet)."""
    if quiet:
        yield lambda info=None: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda info=None: progress.advance(task)
