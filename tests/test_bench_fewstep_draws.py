"""Tests for benchmarks/fewstep_draws.py: a tiny run, the goal marks of its table, and its options."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def fd():
    yield load_benchmark("fewstep_draws")
    sys.modules.pop("fewstep_draws", None)


def test_tiny_run_gives_one_ratio_per_draw_and_the_default_matches_its_plan(fd):
    res = fd.run(["mixture4"], ["cld"], [4], seeds=2, n=300, log=lambda *_: None)
    r = res["problems"]["mixture4"]["ratios"]
    assert set(r) == {f"cld|{label}" for label in fd.SAMPLERS} and all(len(c[0]) == 2 for c in r.values())
    assert all(v > 0 for c in r.values() for v in c[0])
    assert r["cld|kn.sample default"] == r["cld|gls (order 2 + corrector)"]  # 4 steps <= default_gls_steps(2)
    assert r["cld|ei-3 + corrector (k-block flow)"] != r["cld|gls (order 2 + corrector)"]


def test_markdown_marks_cells_outside_the_goal_by_their_worst_draw(fd):
    res = {"problems": {"p": {"floor": 0.01, "ratios": {"vp|a": [[1.0, 1.6], [2.0, 3.5]], "vp|b": [[1.0, 1.4], [9.0, 9.0]]}}},
           "nfes": [10, 5], "seeds": 2, "n": 5, "seconds": 6.0, "machine": "m", "command": "c"}
    md = fd.to_markdown(res)
    assert "| vp | a | **1.00-1.60 (1.30)** | **2.00-3.50 (2.75)** |" in md
    assert "| vp | b | 1.00-1.40 (1.20) | **9.00-9.00 (9.00)** |" in md


@pytest.mark.parametrize("argv, message", [
    (["--presets", "nope"], "unknown problem or preset"),
    (["--nfes", "5,x"], "--nfes: comma-separated integers"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_bad_options_exit_2_naming_the_option(fd, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        fd.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
