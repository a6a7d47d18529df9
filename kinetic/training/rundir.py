"""The run directory: where each artefact lives, the lock that keeps one run per directory, and
the checks and clean-ups done before any training work.

    out/
      config.toml        the run's TrainConfig (no run-control fields)
      checkpoint.pt      latest checkpoint (`kinetic.checkpoint`), written atomically
      metrics.jsonl      one JSON object per log step / evaluation
      loss.png           loss curve (and the periodic metric beside it)
      samples/           step_XXXXXXX.png sample grids or scatter plots of the EMA model
      summary.json       the summary `train` returns
      tensorboard/       event files (with ``tensorboard=True``)
      .lock              the pid of the run using the directory (removed on exit)
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from ..checkpoint import CHECKPOINT_NAME
from ..config import ConfigError
from ..fileio import remove_stale_temps

__all__ = ["RunDir", "RunDirInUse"]



class RunDirInUse(ConfigError):
    """Another live process holds the run directory's lock."""


def _short(path: Path, limit: int = 200) -> str:
    s = str(path)
    return s if len(s) <= limit else f"{s[:120]}...[{len(s) - 170} characters cut]...{s[-50:]}"


def _why(err: OSError) -> str:
    return err.strerror or type(err).__name__


class RunDir:
    """Paths of one run's artefacts (``path`` is absolute: ``..`` and links resolved)."""

    def __init__(self, out: str | os.PathLike[str]):
        try:
            self.path = Path(os.path.abspath(os.path.expanduser(os.fspath(out))))
            self.path = self.path.resolve()
        except (OSError, RuntimeError) as err:
            raise ConfigError(f"cannot use {str(out)[:200]!r} as run directory: {err}", "out") from None
        self.given = os.fspath(out)
        self._lock_fd: int | None = None
        self._created: list[Path] = []  # the folders create() made (removed again if the run writes nothing)

    checkpoint = property(lambda self: self.path / CHECKPOINT_NAME)
    config = property(lambda self: self.path / "config.toml")
    metrics = property(lambda self: self.path / "metrics.jsonl")
    loss_curve = property(lambda self: self.path / "loss.png")
    samples = property(lambda self: self.path / "samples")
    summary = property(lambda self: self.path / "summary.json")
    tensorboard = property(lambda self: self.path / "tensorboard")
    lock = property(lambda self: self.path / ".lock")

    # ------------------------------------------------------------------ before any work
    def create(self) -> None:
        """Make the directory (and ``samples/``) and prove it writable; ConfigError("out") otherwise."""
        p, shown = self.path, _short(self.path)
        try:
            if p.exists() and not p.is_dir():
                raise ConfigError(f"run directory {shown} exists and is not a directory", "out")
            missing = [q for q in (p, *p.parents) if not q.exists()]
            p.mkdir(parents=True, exist_ok=True)
            if not self.samples.exists():
                self.samples.mkdir()
                self._created.append(self.samples)
            self._created += missing
            fd, probe = tempfile.mkstemp(prefix=".write-test.", suffix=".tmp", dir=p)
            os.close(fd)
            os.unlink(probe)
        except NotADirectoryError:
            raise ConfigError(f"cannot create run directory {shown}: a part of the path is a file, not a directory", "out") from None
        except OSError as err:
            raise ConfigError(f"cannot create or write the run directory {shown}: {_why(err)}", "out") from None

    def acquire(self) -> None:
        """Take the directory's lock (``.lock`` holding this pid). RunDirInUse when a live process
        holds it; a lock left by a dead process is taken over."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self._acquire_by_pid()
        for _ in range(5):
            try:  # O_NOFOLLOW: a .lock that is a symbolic link is never followed (nor truncated)
                fd = os.open(self.lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK, 0o644)
            except OSError as err:
                raise ConfigError(f"cannot take the lock {_short(self.lock)}: "
                                  + ("it is a symbolic link (remove it)" if os.path.islink(self.lock) else _why(err)), "out") from None
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                raise ConfigError(f"cannot take the lock {_short(self.lock)}: it is not a regular file (remove it)", "out")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise RunDirInUse(
                    f"run directory {self.path} is in use by another training run (pid {holder[:20]}); wait for it to "
                    "finish or choose another --out", "out",
                ) from None
            try:  # the lock must still be the file at that path (its last holder unlinks it on exit)
                same = os.stat(self.lock).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fd = fd
            return None
        raise RunDirInUse(f"could not take the lock of run directory {self.path}", "out")

    def _acquire_by_pid(self) -> None:  # pragma: no cover - platforms without fcntl
        while True:
            try:
                fd = os.open(self.lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    pid = int(self.lock.read_text().split()[0])
                    os.kill(pid, 0)
                except (ValueError, IndexError, ProcessLookupError, FileNotFoundError):
                    self.lock.unlink(missing_ok=True)  # a dead process's lock
                    continue
                except PermissionError:
                    pass
                raise RunDirInUse(f"run directory {self.path} is in use by another training run (pid {pid})", "out") from None
            os.write(fd, f"{os.getpid()}\n".encode())
            self._lock_fd = fd
            return None

    def release(self) -> None:
        """Remove the lock (never raises: an unwritable directory keeps a lock file that the next
        run takes over, its holder being dead)."""
        if self._lock_fd is None:
            return
        try:
            os.unlink(self.lock)
        except OSError:
            pass
        os.close(self._lock_fd)
        self._lock_fd = None
        try:  # a run that failed before writing anything leaves no empty folder behind
            left = {e.name for e in os.scandir(self.path)}
            empty = left <= {"samples"} and not (self.samples in self._created and any(os.scandir(self.samples)))
        except OSError:
            empty = False
        for folder in self._created if empty else ():
            try:
                folder.rmdir()
            except OSError:
                break
        self._created = []

    def clean_stale_temp_files(self) -> list[Path]:
        """Remove the ``.<name>.XXXXXX.tmp`` files that a kill during an atomic write leaves behind
        (safe: the lock says no live run is writing here); a symlinked ``samples/`` is not entered."""
        return remove_stale_temps(self.path) + remove_stale_temps(self.samples)

    def clear_previous_run(self) -> None:
        """For ``overwrite``: delete the artefacts an earlier run wrote here (and nothing else)."""
        for f in (self.checkpoint, self.metrics, self.loss_curve, self.summary, self.config):
            f.unlink(missing_ok=True)
        if self.samples.is_dir() and not self.samples.is_symlink():
            for f in self.samples.glob("step_*.png"):
                f.unlink(missing_ok=True)
        if self.tensorboard.is_dir() and not self.tensorboard.is_symlink():
            shutil.rmtree(self.tensorboard, ignore_errors=True)
