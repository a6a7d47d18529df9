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


def test_summary_bolds_the_grid_with_the_smallest_worst_draw(fg):
    # ratios[problem][preset|grid][NFE index] = one ratio per draw; band wins on the mean and the best draw,
    # optimal on the worst draw at NFE 3
    ratios = {"mixture4": {"vp|band": [[1.0, 2.5], [1.0, 1.1]], "vp|optimal": [[2.0, 2.2], [1.2, 1.0]]},
              "gauss64": {"vp|band": [[1.0, 1.2], [0.9, 0.9]], "vp|optimal": [[1.0, 1.3], [0.8, 0.8]]}}
    res = {"grids": ["band", "optimal"], "seeds": 2, "nfes": [3, 5], "ratios": ratios}
    md = fg.summary_markdown(res)
    assert "| vp | 2.50 / **2.20** | **1.10** / 1.20 |" in md
    assert "| vp | **1.20** / 1.30 | 0.90 / **0.80** |" in md
    one = fg.summary_markdown({**res, "nfes": [3], "ratios": {p: {k: v[:1] for k, v in r.items()} for p, r in ratios.items()}})
    assert "| SDE | mixture4 | gauss64 |" in one and "| vp | 2.50 / **2.20** | **1.20** / 1.30 |" in one
    path = {p: {"vp|band": [0.01, 0.002], "vp|optimal": [0.02, 0.001]} for p in fg.PROBLEMS}
    md = fg.summary_markdown({**res, "n_path": 50, "path": path})
    assert "| vp | 2.50 / **2.20** | **1.10** / 1.20 | **0.01** / 0.02 | 0.002 / **0.001** |" in md


def test_plan_choice_table_has_a_row_per_preset_and_plan(fg):
    res = fg.plan_choice(["cld"], [5])
    assert list(res["errors"]) == ["cld|k-block flow", "cld|gls"] and all(j[0] > 0 for j in res["errors"].values())
    md = fg.plan_choice_markdown({"nfes": [5, 8], "errors": {"cld|gls": [0.0032, 4.2e-05]}})
    assert md.splitlines()[-1] == "| cld | gls | 0.0032 | 4.2e-05 |"


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
