"""Every command the documentation shows parses: README.md and docs/**/*.md, in ```bash / ```sh /
```console blocks (console: the lines after "$ "), indented code lines and inline `code`.

- ``kinetic ...``: the subcommand exists and click accepts its options and values
  (``make_context(..., resilient_parsing=False)`` of the Typer app's subcommand; nothing runs).
- ``python benchmarks/X.py ...`` and ``python -m kinetic.X ...``: the script exists and its argparse
  parser accepts the arguments (``parse_args`` is patched to stop right after parsing, so main never runs).

Written for prose: ``\\`` continuations, pipes, ``&&``, redirections, comments, ``VAR=1`` and
``nice``/``torchrun --no-python`` prefixes are handled; ``...`` is dropped; ``[--opt]`` is read as
``--opt``; ``--a/--b`` (a flag pair) checks both; placeholder values (``RUN``, ``<run>``, ``DIR``) are
replaced by a value of the option's type.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import runpy
import sys

import pytest
import typer
from _docs_extract import ROOT, Command, commands, doc_files

UsageError = typer.BadParameter.__mro__[1]  # click's UsageError (vendored by recent Typer), as cli/app.py
MissingParameter = next(c for c in typer.BadParameter.__subclasses__() if c.__name__ == "MissingParameter")

_PLACEHOLDER = re.compile(r"^(<[^>]+>|[A-Z][A-Z0-9_]*|\{[^}]*\})$")


def _all_commands() -> list[Command]:
    return [c for f in doc_files() for c in commands(f)]


ALL = _all_commands()


def _clean(args: list[str]) -> list[list[str]]:
    """The words as a parser sees them; a ``--a/--b`` pair gives one variant per flag."""
    out = []
    for a in args:
        if a in ("...", "…"):
            continue
        if a.startswith("[") or a.endswith("]"):
            a = a.strip("[]")
            if not a:
                continue
        out.append(a)
    variants = [out]
    for i, a in enumerate(out):
        if a.startswith("--") and "/--" in a:
            variants = [v[:i] + [alt] + v[i + 1:] for v in variants for alt in a.split("/")]
    return variants


# ------------------------------------------------------------------ kinetic
def _group() -> "typer.core.TyperGroup":
    sys.path.insert(0, str(ROOT))
    try:
        from cli.app import app
    finally:
        sys.path.remove(str(ROOT))
    return typer.main.get_command(app)


def _dummy(param) -> str:
    """A value of the option's type, for a placeholder (RUN, <n>) written in its place."""
    import enum

    t = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(t, type) and issubclass(t, enum.Enum):
        return str(next(iter(t)).value)
    return {int: "1", float: "1.0"}.get(t, "placeholder")


def _fill_placeholders(cmd, args: list[str]) -> list[str]:
    """Replace a placeholder value (RUN, <run>, FILE) by one of its option's type."""
    by_opt = {o: p for p in cmd.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts}
    out = list(args)
    for i, a in enumerate(out):
        if i and _PLACEHOLDER.match(a) and out[i - 1] in by_opt and not by_opt[out[i - 1]].is_flag:
            out[i] = _dummy(by_opt[out[i - 1]])
    return out


def _check_kinetic(c: Command, group, args: list[str]) -> None:
    i = 0
    while i < len(args) and args[i].startswith("-"):  # root options: only their names, no callbacks run
        names = {o for p in group.params for o in p.opts + p.secondary_opts}
        assert args[i] in names, f"{c.where()}\n  `kinetic` has no option {args[i]!r} (it has {sorted(names)})"
        i += 1
    if i == len(args):
        return
    name, rest = args[i], args[i + 1:]
    assert name in group.commands, (f"{c.where()}\n  no subcommand {name!r} of kinetic "
                                    f"(it has {sorted(group.commands)})")
    sub = group.commands[name]
    rest = _fill_placeholders(sub, rest)
    parent = group.make_context("kinetic", [name], resilient_parsing=True)  # resilient: no callbacks
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            sub.make_context(name, list(rest), parent=parent, resilient_parsing=False)
    except typer.Exit:  # --help
        pass
    except UsageError as e:
        if isinstance(e, MissingParameter) and not rest:
            return  # a bare `kinetic bench` names the command; with arguments, a missing one is an error
        pytest.fail(f"{c.where()}\n  kinetic {name} refuses {rest}: {e.format_message()}")


# ------------------------------------------------------------------ benchmark scripts
class _Parsed(Exception):
    pass


def _check_script(c: Command, monkeypatch, args: list[str]) -> None:
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, a=None, namespace=None):
        original(self, a, namespace)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            if c.program.startswith("-m "):
                monkeypatch.setattr(sys, "argv", [c.program[3:], *args])
                runpy.run_module(c.program[3:], run_name="__main__", alter_sys=False)
            else:
                path = ROOT / c.program
                assert path.exists(), f"{c.where()}\n  no script {c.program}"
                monkeypatch.setattr(sys, "argv", [str(path), *args])
                monkeypatch.syspath_prepend(str(path.parent))
                runpy.run_path(str(path), run_name="__main__")
    except _Parsed:
        return
    except SystemExit as e:
        if e.code in (0, None):
            return
        last = (err.getvalue().strip().splitlines() or [f"exit status {e.code}"])[-1]
        pytest.fail(f"{c.where()}\n  {c.program} refuses {args}: {last}")
    pytest.fail(f"{c.where()}\n  {c.program} returned without parsing its arguments with argparse")


def test_the_docs_have_commands():
    """The extraction finds what is there (a broken extractor would pass every test below vacuously)."""
    programs = {c.program for c in ALL}
    assert "kinetic" in programs and any(p.startswith("benchmarks/") for p in programs), programs
    assert len(ALL) > 30


@pytest.mark.parametrize("c", [c for c in ALL if c.program == "kinetic"], ids=lambda c: f"{c.file}:{c.line}")
def test_kinetic_command_parses(c: Command):
    group = _group()
    for args in _clean(c.args):
        _check_kinetic(c, group, args)


@pytest.mark.filterwarnings("ignore:.*found in sys.modules:RuntimeWarning")
@pytest.mark.parametrize("c", [c for c in ALL if c.program != "kinetic"], ids=lambda c: f"{c.file}:{c.line}")
def test_benchmark_command_parses(c: Command, monkeypatch):
    for args in _clean(c.args):
        _check_script(c, monkeypatch, args)


def test_a_wrong_flag_is_caught(monkeypatch):
    """The checks fail on an option that does not exist, for both kinds of command."""
    k = Command("x.md", 1, "kinetic sample --no-such-flag 3", "kinetic", ["sample", "--no-such-flag", "3"])
    with pytest.raises(pytest.fail.Exception, match=r"(?s)x.md:1: .*no-such-flag"):
        _check_kinetic(k, _group(), k.args)
    b = Command("x.md", 2, "python benchmarks/kernels.py --no-such-flag", "benchmarks/kernels.py", ["--no-such-flag"])
    with pytest.raises(pytest.fail.Exception, match=r"(?s)x.md:2: .*unrecognized arguments"):
        _check_script(b, monkeypatch, b.args)
