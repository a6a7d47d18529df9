"""Tests for benchmarks/dtype_accuracy.py: a tiny paired run, its table, and its options."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def da():
    yield load_benchmark("dtype_accuracy")
    sys.modules.pop("dtype_accuracy", None)


def test_tiny_paired_run_differs_only_by_float32_rounding(da):
    res = da.run(["vp", "hold"], [3], seeds=1, n=300, samplers=["default", "em"], log=lambda *_: None)
    rows = res["rows"]
    assert {(r["problem"], r["preset"], r["sampler"]) for r in rows} == {
        (p, s, m) for p in da.PROBLEMS for s in ("vp", "hold") for m in ("default", "em")}
    for r in rows:
        # the pair shares its prior draw and noise: float32 moves the samples by rounding only, and it does move them
        assert 0 < r["path_rms"] < 5e-3, r  # HOLD at 3 steps: 1e-3 (its small-t state is ill-conditioned)
        assert r["within"] and r["delta_over_floor"] < 0.01 and r["ratio64"] > 0, r
        assert abs(r["ratio32"] - r["ratio64"]) <= 0.01 * r["ratio64"], r


def test_paired_noise_is_the_same_draw_in_every_dtype(da):
    import torch

    a = da._paired_noise(5)((3, 4), torch.float64, "cpu")
    b = da._paired_noise(5)((3, 4), torch.float32, "cpu")
    assert b.dtype == torch.float32 and torch.equal(a.float(), b)


def test_markdown_marks_cells_outside_the_floor(da):
    row = {"problem": "mixture4", "preset": "vp", "sampler": "em", "steps": 5, "nfe": 5, "ratio64": 2.0, "ratio32": 2.5,
           "delta_over_floor": 0.5, "within": False, "path_rms": 1e-3}
    res = {"problems": ["mixture4"], "rows": [row, {**row, "preset": "cld", "delta_over_floor": 1e-6, "within": True}],
           "floor": {"mixture4": 0.01}, "seeds": 1, "n": 10, "t_eps": 1e-3, "within": da.WITHIN, "seconds": 6.0,
           "machine": "m", "command": "c"}
    md = da.to_markdown(res)
    assert "| vp | em | 5 | 2.000 / 2.500 | 5.0e-01 | **no** | 1.0e-03 |" in md
    assert "| cld | em | 5 |" in md and "**1 of 2 cells within**" in md


@pytest.mark.parametrize("argv, message", [
    (["--presets", "nope"], "unknown preset or sampler"),
    (["--samplers", "default,x"], "unknown preset or sampler"),
    (["--nfes", "5,x"], "--nfes: comma-separated integers"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_bad_options_exit_2_naming_the_option(da, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        da.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
