"""Safe file writes: a crash mid-write never leaves a truncated checkpoint, image or table, and no
write follows a symbolic link, replaces a special file (FIFO, device, socket) or overwrites an input
of the same command.

`atomic_write` writes a temp file in the target folder and renames it over ``path``, which must be a
new path or a regular file (`check_target`). `check_output` is the check a command makes before any
work: ``path`` is not one of its inputs (same file by `os.path.samefile`, so links and ``..`` do not
hide it) and, if it exists, holds what that kind of output holds (a PNG, an .npz of samples, JSON),
so a checkpoint, a config or another file kinetic did not write is never replaced. `is_stale_temp`
names the temp files a killed write leaves, for the cleaners.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import re
import stat
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Callable, Iterable

__all__ = ["atomic_write", "atomic_write_text", "check_target", "check_output", "UnsafePathError",
           "is_stale_temp", "remove_stale_temps", "command_inputs", "write_cache", "json_text", "damaged_file_reason",
           "check_free_space",
           "CacheWarning"]

# atomic_write's temp files: ".<name>.<mkstemp's random part>.tmp"
_STALE_TMP = re.compile(r"^\..+\.[A-Za-z0-9_]{6,}\.tmp$")


#: seconds without change after which an output's temp file counts as left by a killed write
STALE_AGE = 60.0


class UnsafePathError(ValueError):
    """A write would follow a symbolic link, replace a special file or overwrite an input."""


def _short(path, limit: int = 200) -> str:
    s = str(path)
    return s if len(s) <= limit else f"{s[:120]}...[{len(s) - 170} characters cut]...{s[-50:]}"


def check_target(path: str | os.PathLike[str], option: str = "path") -> Path:
    """``path`` (expanded) if it is a new path or a regular file; UnsafePathError naming ``option``
    for a symbolic link (kinetic never writes through a link it did not create: the target would be
    left stale or an unrelated file replaced) or a special file (FIFO, device, socket)."""
    path = Path(os.path.expanduser(os.fspath(path)))
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError:
        return path  # e.g. a part of the path is a file: the write itself gives the clear error
    if stat.S_ISLNK(st.st_mode):
        raise UnsafePathError(f"{option}: {_short(path)} is a symbolic link; kinetic writes only regular files or "
                              "new paths: give the link's target or another path")
    if stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(f"{option}: {_short(path)} is a directory; give a file name")
    if not stat.S_ISREG(st.st_mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode)
                or stat.S_ISBLK(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else "a special file")
        raise UnsafePathError(f"{option}: {_short(path)} is {kind}, not a regular file; kinetic writes only regular "
                              "files or new paths")
    return path


def _same(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


def _holds_kind(path: Path, suffix: str) -> bool:
    """True when the existing file at ``path`` holds what kinetic writes for ``suffix`` (or nothing)."""
    try:
        if path.stat().st_size == 0:
            return True
        with open(path, "rb") as f:
            head = f.read(8)
        if suffix == ".png":
            return head == b"\x89PNG\r\n\x1a\n"
        if suffix == ".npz":
            with zipfile.ZipFile(path) as z:
                return "samples.npy" in z.namelist()
        if suffix == ".json":
            return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
        if suffix == ".md":
            return path.read_text(encoding="utf-8").startswith(("<!--", "#", "|", "Machine"))
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError):
        return False
    return False


def check_output(path: str | os.PathLike[str], option: str, inputs: Iterable[tuple[str, str | os.PathLike[str]]] = (),
                 kind: str | None = None) -> Path:
    """``path`` checked before any work: `check_target`, not the same file as any of ``inputs``
    ((option, path) pairs; a directory stands for its ``checkpoint.pt`` and ``config.toml``), and if
    it exists, a file of the output's ``kind`` (its suffix by default: .png, .npz or .json) that
    kinetic could have written. UnsafePathError (one line naming ``option``) otherwise."""
    path = check_target(path, option)
    for name, inp in inputs:
        inp = Path(os.path.expanduser(os.fspath(inp)))
        candidates = [inp / "checkpoint.pt", inp / "config.toml", inp] if inp.is_dir() else [inp]
        for c in candidates:
            if c.exists() and path.exists() and _same(path, c):
                raise UnsafePathError(f"{option}: {_short(path)} is an input of this command ({name} {_short(c)}); "
                                      "an output never overwrites an input: choose another path")
    check_free_space(path.parent, MIN_FREE, option)
    kind = (kind or path.suffix).lower()
    if path.exists() and not _holds_kind(path, kind):
        what = {".png": "a PNG image", ".npz": "an .npz of samples", ".json": "a JSON object"}.get(kind, f"a {kind} file")
        raise UnsafePathError(f"{option}: {_short(path)} exists and is not {what} that kinetic wrote; it is not replaced: "
                              "remove it first or choose another path")
    return path


def command_inputs(output_option: str) -> list[tuple[str, Path]]:
    """The paths given to the running Click command (``--checkpoint``, ``--config``, ``--data-dir``,
    ...), every option but ``output_option`` and the other outputs: the "inputs of this command" that
    `check_output` protects. Empty outside a Click command."""
    ctx = None
    for mod in ("typer._click.globals", "click.globals"):  # Typer may ship its own copy of Click
        try:
            ctx = __import__(mod, fromlist=["get_current_context"]).get_current_context(silent=True)
        except ImportError:
            continue
        if ctx is not None:
            break
    if ctx is None:
        return []
    outputs = {"out", "json_out", "json", output_option.lstrip("-").replace("-", "_")}
    found = []
    for p in ctx.command.params:
        v = ctx.params.get(p.name)
        if p.name in outputs or not isinstance(v, (str, os.PathLike)) or not str(v):
            continue
        if os.path.exists(os.path.expanduser(os.fspath(v))):
            found.append(("--" + p.name.replace("_", "-"), Path(os.path.expanduser(os.fspath(v)))))
    return found


#: below this many free bytes a disk counts as full (an output is refused before the work)
MIN_FREE = 1 << 20


def _free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_error(err: BaseException, path: Path) -> BaseException:
    """``err`` of a failed write as one OSError naming the path and the disk when the disk is full
    (torch's "enforce fail at inline_container.cc" included); other errors unchanged."""
    free = _free_bytes(path.parent)
    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or "No space" in str(err) or (
        free is not None and free < MIN_FREE)
    if not full:
        return err
    shown = "" if free is None else f" ({free / 2**20:.3g} MiB free)"
    return OSError(errno.ENOSPC, f"no space left on the disk that holds {_short(path.parent)}{shown}; free some "
                   "space or write elsewhere", str(path))


def check_free_space(folder: str | os.PathLike[str], need: int = MIN_FREE, option: str = "path") -> None:
    """OSError(ENOSPC) naming ``option`` and the folder when its disk has fewer than ``need`` bytes
    free: said before the work, not after it."""
    folder = Path(folder)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    free = _free_bytes(folder)
    if free is not None and free < need:
        raise OSError(errno.ENOSPC, f"{option}: no space left on the disk that holds {_short(folder)} "
                      f"({free / 2**20:.3g} MiB free, {need / 2**20:.3g} MiB needed)", str(folder))


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` on a temp file in the target folder, then ``os.replace`` it to ``path``.

    ``path`` must be a new path or a regular file (`check_target`: a symbolic link or special file
    is refused before and checked again just before the rename). The temp file is removed on any
    failure (including KeyboardInterrupt).
    """
    path = check_target(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a kill during an earlier write of this same output left its temp file: remove it (once it has
    # not been touched for a minute, so that a write in progress elsewhere is left alone)
    remove_stale_temps(path.parent, path.name + ".", min_age=STALE_AGE)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        try:
            write(tmp)
        except (OSError, RuntimeError) as err:  # torch.save reports a full disk as a RuntimeError
            raise _disk_error(err, path) from None
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        check_target(path)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


class CacheWarning(UserWarning):
    """A cache could not be written; the work goes on without it."""


def write_cache(path: str | os.PathLike[str], write: Callable[[str], None], what: str) -> bool:
    """`atomic_write` for a cache file, which is optional: on failure (read-only ``HOME``,
    ``$KINETIC_CACHE`` pointing at /proc or at a file, a full disk) warn once with a `CacheWarning`
    naming the path and go on. True when the cache was written."""
    import warnings

    try:
        atomic_write(path, write)
        return True
    except (OSError, ValueError, RuntimeError) as err:
        why = getattr(err, "strerror", None) or str(err).splitlines()[0] if str(err) else type(err).__name__
        warnings.warn(f"{what} not cached: cannot write {_short(path)} ({why}); it is kept in memory for this run "
                      "(set KINETIC_CACHE to a writable folder)", CacheWarning, stacklevel=2)
        return False


def json_text(obj, indent: int = 2) -> str:
    """``json.dumps`` that always gives valid JSON: NaN and infinities become null (strict parsers
    reject a bare NaN); the result says why where it matters (e.g. a metric's ``"reason"``)."""
    import math

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), indent=indent, allow_nan=False, default=str)


def damaged_file_reason(path: str | os.PathLike[str]) -> str | None:
    """Why a file that a reader rejected is damaged, when that can be told: "it is empty (0 bytes)"
    or "it is truncated (...)" for a zip archive (torch's format, .npz) cut short; None otherwise."""
    try:
        size = os.path.getsize(path)
        if size == 0:
            return "it is empty (0 bytes): the write that made it was cut off before any data"
        with open(path, "rb") as f:
            head = f.read(512)
        n = int.from_bytes(head[26:28], "little") if len(head) >= 30 else 0
        name = head[30:30 + n].decode("ascii", "replace") if n else ""
        # the first member of a torch file is "<archive>/data.pkl" (or another "<archive>/..." entry)
        if head[:4] == b"PK\x03\x04" and "/" in name and name.isprintable():
            try:
                with zipfile.ZipFile(path) as z:
                    if z.testzip() is None:
                        return None
            except (zipfile.BadZipFile, OSError, EOFError, ValueError):
                pass
            return (f"it is truncated ({size} bytes of a torch zip archive without its end): a copy or write was "
                    "cut off")
    except OSError:
        return None
    return None


def is_stale_temp(name: str) -> bool:
    """True for the name of a temp file that `atomic_write` makes (``.<name>.XXXXXXXX.tmp``)."""
    return bool(_STALE_TMP.match(name))


def remove_stale_temps(folder: str | os.PathLike[str], prefix: str = "", min_age: float = 0.0) -> list[Path]:
    """Remove the temp files that a kill during `atomic_write` left in ``folder`` (for outputs whose
    name starts with ``prefix``) and not modified for ``min_age`` seconds. Never follows a link: a folder that is a symbolic link is not
    entered and only regular files (not links) are removed."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        if stat.S_ISLNK(os.lstat(folder).st_mode) or not folder.is_dir():
            return removed
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for e in entries:
        if not (is_stale_temp(e.name) and e.name.startswith("." + prefix)):
            continue
        try:
            if e.is_file(follow_symlinks=False) and time.time() - e.stat(follow_symlinks=False).st_mtime >= min_age:
                os.unlink(e.path)
                removed.append(Path(e.path))
        except OSError:
            pass
    return removed
