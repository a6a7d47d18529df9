"""Tests for benchmarks/fewstep_grids.py: a tiny run, the goal marks of its table, and its options."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark

from kinetic import grid_opt


@pytest.fixture(scope="module")
def fg():
    yield load_benchmark("fewstep_grids")
    sys.modules.pop("fewstep_grids", None)


def test_tiny_run_gives_one_ratio_per_draw_a_pathwise_error_and_the_grids(fg):
    res = fg.run(["vp"], [3], ["band", "optimal"], seeds=2, n=200, n_path=20, maxfev=8, log=lambda *_: None)
    for p in fg.PROBLEMS:
        assert set(res["ratios"][p]) == {"vp|band", "vp|optimal"}
        assert all(len(c[0]) == 2 and min(c[0]) > 0 for c in res["ratios"][p].values())
        assert all(len(v) == 1 and v[0] > 0 for v in res["path"][p].values())
    band, opt = res["times"]["vp|band"][0], res["times"]["vp|optimal"][0]
    assert len(band) == len(opt) == 4 and band != opt
    assert res["closed_form"]["vp|optimal"][0] <= res["closed_form"]["vp|band"][0]  # the fit starts from band
    grid_opt.FIT_CACHE.clear()


def test_markdown_marks_cells_outside_the_goal_by_their_worst_draw(fg):
    res = {"ratios": {"mixture4": {"vp|band": [[1.0, 2.5]]}, "gauss64": {"vp|band": [[1.0, 1.9]]}},
           "closed_form": {"vp|band": [0.1]}, "fit_seconds": {"vp|band": [0.0]}, "floor": {"mixture4": 0.01, "gauss64": 0.05},
           "nfes": [5], "seeds": 2, "n": 5, "solver": None, "options": {}, "seconds": 6.0, "machine": "m", "command": "c"}
    md = fg.to_markdown(res)
    assert "| vp | band | **1.00-2.50 (1.75)** |" in md
    assert "| vp | band | 1.00-1.90 (1.45) |" in md


@pytest.mark.parametrize("argv, message", [
    (["--presets", "nope"], "unknown preset or grid"),
    (["--grids", "band,nope"], "unknown preset or grid"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--options", "[1]"], "--options: expected a JSON object"),
])
def test_bad_options_exit_2_naming_the_option(fg, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        fg.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
