"""The ```python blocks of README.md and the guide (docs/guide/**/*.md, docs/training.md,
docs/pretrained.md, docs/cli.md, docs/math.md) run.

Each block runs in a temporary working directory, in one namespace per file, in order: a block may
use the names an earlier block of the same file defined (README's quick start does).

To show a block that must not run (it needs your data, a GPU, an hour): fence it ```python-norun
(the guide's convention; it is not a python block here), or put the HTML comment ``<!-- norun -->``
on the line just above a ```python fence. Keep the blocks that run small (a few seconds each).

EXPECTED_FAILURES lists the blocks known not to run as written, each with why (xfail, strict:
once a block runs, the test says so and the entry must go). An entry marked slow is not run at all.
"""

from __future__ import annotations

import os
import traceback

import pytest
import torch
from _docs_extract import ROOT, fenced_blocks, rel

GUIDE = ["README.md", "docs/training.md", "docs/pretrained.md", "docs/cli.md", "docs/math.md"]

# (file, first line of the block's code) -> (why, slow: not run at all)
EXPECTED_FAILURES: dict[tuple[str, int], tuple[str, bool]] = {}  # none now: blocks that cannot run are python-norun


def _files() -> list[str]:
    found = list(GUIDE) + sorted(rel(p) for p in (ROOT / "docs" / "guide").rglob("*.md"))
    return [f for f in dict.fromkeys(found) if (ROOT / f).exists()]


def _blocks():
    out = []
    for f in _files():
        for b in fenced_blocks((ROOT / f).read_text(encoding="utf-8")):
            if b.lang in ("python", "py"):
                out.append((f, b))
    return out


BLOCKS = _blocks()
_NAMESPACES: dict[str, dict] = {}


def _params():
    for f, b in BLOCKS:
        marks = []
        if b.before == "<!-- norun -->":
            marks.append(pytest.mark.skip(reason="marked <!-- norun -->"))
        elif (f, b.line) in EXPECTED_FAILURES:
            why, slow = EXPECTED_FAILURES[(f, b.line)]
            marks.append(pytest.mark.xfail(reason=why, strict=True, run=not slow))
        yield pytest.param(f, b, id=f"{f}:{b.line}", marks=marks)


def test_the_guide_has_python_blocks():
    assert any(f == "README.md" for f, _ in BLOCKS), "no ```python block found in README.md"


def test_expected_failures_name_existing_blocks():
    """An entry of EXPECTED_FAILURES whose block moved or went would silently cover nothing."""
    lines = {(f, b.line) for f, b in BLOCKS}
    stale = [k for k in EXPECTED_FAILURES if k not in lines]
    assert not stale, f"EXPECTED_FAILURES names no python block at {stale}; update the list"


@pytest.mark.parametrize("f,b", list(_params()))
def test_python_block_runs(f, b, tmp_path_factory, monkeypatch):
    ns = _NAMESPACES.get(f)
    if ns is None:
        ns = _NAMESPACES[f] = {"__name__": "__docs__", "__cwd__": tmp_path_factory.mktemp("docs")}
    monkeypatch.chdir(ns["__cwd__"])
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    try:
        exec(compile(b.text, f"{f}:{b.line}", "exec"), ns)
    except Exception:
        pytest.fail(f"the python block of {f} at line {b.line} fails:\n{traceback.format_exc(limit=-3)}",
                    pytrace=False)
    finally:
        torch.set_default_dtype(dtype)
        torch.set_num_threads(threads)
        assert os.getcwd()  # still somewhere
