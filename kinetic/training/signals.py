"""SIGINT / SIGTERM during training: finish the step, write a checkpoint, stop."""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopSignals", "interrupted_message"]


def interrupted_message(out) -> str:
    """The line for an interrupt that ended training abruptly (a second signal before the step
    finished): what the run directory ``out`` holds now, read from disk (a checkpoint may exist
    from this run's earlier steps or an earlier run), never "nothing written" when one does."""
    from pathlib import Path

    from ..checkpoint import CHECKPOINT_NAME

    ckpt = Path(out) / CHECKPOINT_NAME if out is not None else None
    if ckpt is None or not ckpt.is_file():
        return "interrupted before the first checkpoint; no checkpoint was written"
    step = ""
    try:
        from ..checkpoint import load_checkpoint

        step = f" (step {int(load_checkpoint(ckpt)['step'])})"
    except Exception:  # noqa: BLE001 - the message must come out whatever the file holds
        pass
    return (f"interrupted; the last checkpoint{step} is kept at {ckpt}; continue with: kinetic train --out {out} "
            "--resume")


class StopSignals:
    """While active, SIGINT / SIGTERM set ``target.stop_requested`` (the loop writes a checkpoint
    at the end of the current step); a second signal falls through to the previous handler.
    Handlers are installed only from the main thread and restored on exit."""

    def __init__(self, target: Any):
        self.target = target
        self.previous: dict[int, Any] = {}
        self.received: int | None = None

    @property
    def name(self) -> str | None:
        return signal.Signals(self.received).name if self.received else None

    def _handler(self, signum, frame):
        self.received = signum
        self.target.stop_requested = True
        prev = self.previous.get(signum, signal.SIG_DFL)
        signal.signal(signum, prev if prev is not None else signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.previous[s] = signal.signal(s, self._handler)
                except (ValueError, OSError):  # pragma: no cover - unusual platforms
                    pass
        return self

    def __exit__(self, *exc):
        for s, prev in self.previous.items():
            try:
                signal.signal(s, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass
        return False
