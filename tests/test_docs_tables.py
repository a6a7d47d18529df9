"""The tables of figures that docs/ marks as generated (benchmarks/_docs_tables.py: TABLES) are what
their JSON under docs/figures says: each block is re-rendered from its JSON, with its benchmark's own
renderer, and compared with the document, character for character. The block's last line names the
JSON and the commit that recorded it; that commit must be one that changed the JSON."""

from __future__ import annotations

import dataclasses
import difflib
import re

import pytest
from conftest import load_benchmark

dt = load_benchmark("_docs_tables")


def problem(t, block: str | None) -> str | None:
    """Why the block ``block`` (the text between the markers of table ``t``) is not what its JSON says."""
    where = f"{t.doc}, block <!-- {t.name}:begin -->"
    if block is None:
        return f"{where}: missing (the markers are gone)"
    commit = dt.stated_commit(block)
    if commit is None:
        return f"{where}: no provenance line (run python benchmarks/_docs_tables.py)"
    if commit == "uncommitted":
        return f"{where}: rendered from an uncommitted docs/figures/{t.source}; commit it, then rerun " \
               "python benchmarks/_docs_tables.py"
    known = dt.commits_of(t.source)
    if known and not any(h.startswith(commit) for h in known):
        return f"{where}: commit {commit} never changed docs/figures/{t.source}"
    expected = dt.render(t, commit)
    if block != expected:
        diff = "\n".join(list(difflib.unified_diff(block.splitlines(), expected.splitlines(), "document",
                                                   f"rendered from docs/figures/{t.source}", lineterm=""))[:24])
        return f"{where} differs from docs/figures/{t.source} (python benchmarks/_docs_tables.py rewrites it):\n{diff}"
    return None


@pytest.mark.parametrize("t", dt.TABLES, ids=lambda t: f"{t.doc}:{t.name}")
def test_generated_table_matches_its_json(t):
    msg = problem(t, dt.current(t))
    assert msg is None, msg


def test_a_typed_edit_is_caught():
    """One figure changed by hand in a block, or its provenance dropped, is reported."""
    t = next(t for t in dt.TABLES if t.name == "throughput")
    block = dt.current(t)
    row = next(line for line in block.splitlines() if line.startswith("| hold"))
    cells = row.split("|")
    cells[2] = " 0.001 "
    edited = block.replace(row, "|".join(cells), 1)
    assert edited != block
    assert "differs from docs/figures/train_throughput.json" in problem(t, edited)
    assert "no provenance line" in problem(t, block[:block.index("_Generated")])
    assert "missing" in problem(t, None)


def test_every_table_names_its_command():
    for t in dt.TABLES:
        block = dt.current(t) or ""
        assert "command: `python " in block, f"{t.doc} {t.name}: no command in the provenance line"


@pytest.mark.parametrize("t", dt.TABLES, ids=lambda t: f"{t.doc}:{t.name}")
def test_a_changed_figure_in_any_table_row_is_caught(t):
    """The last figure of the block's last table row, changed by one, is reported."""
    block = dt.current(t)
    row = [ln for ln in block[:block.index("_Generated")].splitlines() if ln.strip().startswith("|") and re.search(r"\d", ln)][-1]
    m = list(re.finditer(r"\d", row))[-1]
    edited = block.replace(row, row[:m.start()] + str((int(m.group()) + 1) % 10) + row[m.end():], 1)
    assert edited != block
    assert f"differs from docs/figures/{t.source}" in problem(t, edited)


def test_a_quoted_command_must_be_the_one_its_json_records():
    t = next(t for t in dt.TABLES if t.quoted)
    with pytest.raises(ValueError, match="is not docs/figures/"):
        dt.render(dataclasses.replace(t, quoted=t.quoted.replace("--n 250", "--n 251")), "0000000")
