"""benchmarks/conditional.py's summary tables of docs/study.md and docs/math.md, on made-up results."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def cond():
    yield load_benchmark("conditional")
    sys.modules.pop("conditional", None)


def _run(acc0, fd0, inpaint):
    cell = {"class_accuracy": acc0, "fd_digits": fd0}
    return {"steps50_w0": cell, "steps50_w1": {"class_accuracy": 1.0, "fd_digits": 6.0},
            "inpaint": {"value": inpaint, "agreement": 0.5}}


def test_study_summary_is_mean_and_sample_std_over_seeds(cond):
    runs = {f"{name}-s{s}": _run(0.98 + 0.01 * s, 16.0 + s, 30.0 + 2 * s) for name in cond.STUDY_SDES for s in (0, 1)}
    res = {"settings": {"seeds": [0, 1]}, "runs": runs, "nearest_neighbour": {"value": 5.873, "agreement": 0.9125}}
    lines = cond.study_summary_markdown(res).splitlines()
    assert lines[2] == "| vp | 0.985 ± 0.007 | 1.000 ± 0.000 | 16.5 ± 0.7 | 6.0 ± 0.0 | 31.0 ± 1.4 | 0.500 ± 0.000 |"
    assert lines[-1] == "| nearest training digit (data baseline) | | | | | 5.87 | 0.912 |"


def test_exact_tables_pick_their_cells(cond):
    rep = [{"sde": s, "solver": solver, "rule": rule, "nfe": k, "mean_err": 0.2 + k / 1000 + (solver == "ei, eta=0"),
            "cov_err": 0.1} for s in cond.EXACT_SDES for solver in ("ei, eta=1", "ei, eta=0")
           for rule in ("fresh", "bridge") for k in (10, 20, 50, 200)]
    lines = cond.exact_replacement_summary({"replacement": rep}).splitlines()
    assert len(lines) == 2 + 2 * len(cond.EXACT_SDES)  # no naive rows in this result
    assert lines[2] == "| vp | fresh | 0.210 / 0.100 | 0.250 / 0.100 | 0.400 / 0.100 |"  # eta = 1, NFE 20 left out
    paint = [{"sde": "vp", "steps": st, "r": r, "jump": j, "nfe": 200, "mean_err": st / 1000, "cov_err": r / 100}
             for st, r, j in ((200, 1, 1), (100, 2, 1), (50, 4, 1), (20, 10, 1), (50, 4, 10))]
    assert cond.exact_repaint_summary({"repaint": paint}).splitlines()[2] == \
        "| vp | 0.200 / 0.010 | 0.050 / 0.040 | 0.020 / 0.100 | 0.050 / 0.040 |"
    g = [{"sde": "exact class law", "w": 0.0, "purity": 0.897, "posterior": 0.849}] + [
        {"sde": s, "w": w, "purity": 0.9, "posterior": 0.8} for s in cond.EXACT_SDES for w in (0.0, 1.0)]
    lines = cond.exact_guidance_summary({"guidance": g}).splitlines()
    assert lines[0] == "| SDE | w = 0 | w = 1 |" and lines[2] == "| exact class law | 0.897 / 0.849 |  |"
