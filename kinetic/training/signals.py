"""SIGINT / SIGTERM during training: finish the step, write a checkpoint, stop."""

from __future__ import annotations

import signal
import threading
from typing import Any

__all__ = ["StopSignals"]


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
