"""Rich progress bars fed by the library's callbacks (the library itself never prints): one for
sampling / evaluation steps, one for training (loss, examples/s, checkpoints, samples, metrics)."""

from __future__ import annotations

import contextlib

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .console import err_console, styled

__all__ = ["step_progress", "TrainProgress"]


def _bar(*fields: TextColumn, transient: bool) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), *fields,
        TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=transient,
    )


@contextlib.contextmanager
def step_progress(description: str, total: int | None, quiet: bool = False):
    """Yield a callback(info: dict) that advances a bar by one step per call (no-op when quiet)."""
    if quiet:
        yield lambda info=None: None
        return
    with _bar(transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda info=None: progress.advance(task)


class TrainProgress:
    """Context manager and callback for `kinetic.training.train`: a bar with loss and examples/s,
    and a line for the run's start, sample files, metric values and warnings."""

    def __init__(self, quiet: bool):
        self.progress = None if quiet else _bar(
            TextColumn("loss {task.fields[loss]}"), TextColumn("{task.fields[speed]} ex/s"), transient=False
        )
        self.task = None

    def __enter__(self):
        if self.progress is not None:
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False

    def _say(self, text) -> None:  # plain text (the console's markup is off) or `styled`
        self.progress.console.print(text, highlight=False, soft_wrap=True)

    def __call__(self, info: dict) -> None:
        if self.progress is None:
            return
        ev = info.get("event")
        if ev == "start":
            self.task = self.progress.add_task("training", total=info["steps"], completed=info["step"], loss="-", speed="-")
            m = info["model"]
            self._say(
                f"{info['sde']} | {m['kind']} ({m['size']}, {info['params'] / 1e6:.2f}M params) | data {m['data_shape']} "
                f"| {info['device']} x{info['world_size']}" + (f" | resuming at step {info['step']}" if info["step"] else "")
            )
            self._say(f"run directory: {info['out']}")
            if info.get("stale_removed"):
                self._say(f"removed {len(info['stale_removed'])} stale temp file(s) left by a killed run")
        elif ev == "step" and self.task is not None:
            self.progress.update(self.task, completed=info["step"], loss=f"{info['loss']:.4f}",
                                 speed=f"{info['examples_per_s']:.0f}")
        elif ev == "samples":
            self._say(f"samples: {info['path']}")
        elif ev == "eval":
            self._say(f"step {info['step']}: {info['metric']} = {info['value']:.4g}")
        elif ev in ("samples_error", "eval_error"):
            self._say(styled("[yellow]warning:[/] {}", info["error"]))
