"""Tests for benchmarks/plan_switch.py: it names the plan the default runs, draws the plans it says, and
summarises the paired difference with its signs."""

from __future__ import annotations

import sys

import pytest
import torch
from conftest import load_benchmark


@pytest.fixture(scope="module")
def ps():
    yield load_benchmark("plan_switch")
    for name in ("plan_switch", "order_study"):
        sys.modules.pop(name, None)


def test_default_plan_is_the_one_ei_runs(ps):
    from kinetic.solvers.ei import ExponentialIntegrator

    ei = ExponentialIntegrator()
    for order in range(1, 6):
        for nfe in range(1, 26):
            assert (ps.default_plan(order, nfe) == "gls") == ei.uses_gls(nfe, order), (order, nfe)


def test_the_plans_drawn_are_the_gls_solver_and_the_kblock_flow(ps):
    import kinetic as kn

    class Model:  # any score model: an exact-score-free toy that depends on the state
        sde = kn.hold()

        def __call__(self, z, t):
            return -z[:, -1] * (1 + t.view(-1, *[1] * (z.dim() - 2)))

    model = Model()
    gls = ps.draw(model, 4, 8, 3, gls_steps=4)
    gen = torch.Generator().manual_seed(3)
    ref = kn.sample(model.sde, model, (8, *sys.modules["order_study"].DATA_SHAPE), solver="gls", steps=4, generator=gen)
    torch.testing.assert_close(gls, ref)
    kblock = ps.draw(model, 4, 8, 3, gls_steps=0)
    assert not torch.allclose(gls, kblock)


def test_summary_pairs_the_plans_per_training_seed(ps):
    def model(seed, kb, gl):
        cells = {f"kblock|10|{s}": {"fd": kb + s} for s in (0, 1)}
        cells.update({f"gls|10|{s}": {"fd": gl + s} for s in (0, 1)})
        return {"method": "cld", "seed": seed, "steps": 600, "order": 2, "cells": cells, "default": {"10": "kblock"}}

    row = ps.summarise([model(0, 10.0, 8.0), model(1, 12.0, 11.0)])["cld|600|10"]
    assert row["kblock"] == pytest.approx(11.5) and row["gls"] == pytest.approx(10.0)
    assert (row["diff"], row["diff_min"], row["diff_max"]) == pytest.approx((-1.5, -2.0, -1.0))
    assert row["best"] == "gls"
    row = ps.summarise([model(0, 10.0, 8.0), model(1, 12.0, 13.0)])["cld|600|10"]
    assert row["best"] == "mixed"
    assert "| cld | 600 | 10 | kblock | **" in ps.to_markdown({"r": row}, {"n": 1000, "sample_seeds": [0, 1]})
