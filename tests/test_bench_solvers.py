"""The solver benchmark's overhead timing runs for every accuracy preset (PSLD: two noised blocks)."""

from kinetic.bench.solvers import ACCURACY_PRESETS, measure_overhead


def test_overhead_runs_for_every_preset_with_its_noised_blocks():
    rows = measure_overhead(batch=2, steps=2, repeats=1)
    assert set(rows) == set(ACCURACY_PRESETS)
    for name, r in rows.items():
        assert r["unet_ms"] > 0
        assert all(r[s]["per_step_ms"] > 0 for s in ("em", "sscs", "lie_trotter", "ei order 2")), name
