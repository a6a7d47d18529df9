"""The summary tables of docs/study.md's mixing section (benchmarks/mixing.py's renderers), on a made-up result."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def mx():
    yield load_benchmark("mixing")
    sys.modules.pop("mixing", None)


def _headline(per: dict, how="noise", tol=1e-3, pair="hold/vp") -> dict:
    return {"normalisation": how, "tol": tol, "pair": pair, "per_dataset": per,
            "min": min(per.values()), "max": max(per.values())}


def test_verdict_ranges_leave_out_gaussians8_and_cover_both_tolerances(mx):
    rows = [_headline({"digits64": 1.3, "asym2": 1.5, "gaussians8": 6.0}, how, tol, pair)
            for how in ("time", "noise", "noise_rel", "spectral") for tol in (1e-3, 1e-5)
            for pair in ("hold/vp", "hold/langevin1", "hold/cld")]
    rows[2] = _headline({"digits64": 0.6, "asym2": 0.7, "gaussians8": 1.1}, "time", 1e-3, "hold/cld")
    rows[5] = _headline({"digits64": 0.75, "asym2": 0.8, "gaussians8": 1.1}, "time", 1e-5, "hold/cld")
    md = mx.verdict_markdown({"headline": rows})
    assert "| (b) equal noise | 1.30–1.50× slower | 1.30–1.50× slower |" in md
    assert "×0.60–0.80 (1.2–1.7× faster) |" in md  # both tolerances, gaussians8 left out


def test_headline_cell_is_the_range_then_the_named_data_set(mx):
    rows = [_headline({"digits64": 0.674, "asym2": 0.638, "gaussians8": 1.06}, how, tol, pair)
            for how in mx.LABELS for tol in (1e-3,) for pair, _ in mx.PAIRS]
    md = mx.headline_markdown({"headline": rows, "tolerances": [1e-3]})
    assert md.splitlines()[2] == "| (a) time | 1e-3 | " + " | ".join(["0.64–1.06 (0.67)"] * 4) + " |"


def test_tolerance_table_gives_one_ratio_when_both_tolerances_agree(mx):
    def sde_star(a, b):
        return {how: {"0.001": a, "1e-05": b} for how in mx.LABELS}

    res = {"tolerances": [1e-3, 1e-5], "sdes": {"langevin1": {"order": 1}, "hold": {"order": 3}},
           "kl_at_T": {"d": {"langevin1": 1.53e-6, "hold": 3.57e-7}},
           "t_star": {"d": {"langevin1": sde_star(0.595, 0.883), "hold": sde_star(0.656, 0.859)}},
           "ratios": {"d": {how: {"langevin1": {"0.001": {"vs_ou": 1.0}, "1e-05": {"vs_ou": 1.0}},
                                  "hold": {"0.001": {"vs_ou": 1.1}, "1e-05": {"vs_ou": 12.34}}} for how in mx.LABELS}}}
    md = mx.tolerance_markdown(res, "d")
    assert "| langevin(1) = OU | 1 | 1.5e-6 | 0.595 / 0.883 (×1.00) |" in md
    assert "| **hold** | 3 | 3.6e-7 | 0.656 / 0.859 (×1.10 / ×12.3) |" in md
