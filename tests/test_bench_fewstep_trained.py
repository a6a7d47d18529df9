"""Tests for benchmarks/fewstep_trained.py: its options and its tables (the sampling itself is `generate`'s,
tested elsewhere)."""

from __future__ import annotations

import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def ft():
    yield load_benchmark("fewstep_trained")
    sys.modules.pop("fewstep_trained", None)


def test_short_names_cover_every_sampler_and_the_kblock_row_pins_the_flow(ft):
    assert list(ft.SHORT.values()) == list(ft.SAMPLERS)
    assert ft.SAMPLERS[ft.SHORT["kblock"]] == {"solver": "ei", "gls_steps": 0}


@pytest.mark.parametrize("argv, message", [
    (["--samplers", "gls,nope"], "--samplers: comma-separated names"),
    (["--stem", "a/b"], "--stem: a file name without folders"),
    (["--nfes", "5,x"], "--nfes: comma-separated integers"),
    (["--n", "1"], "--n must be >= 2"),
    (["--seeds", "0,a"], "--seeds: comma-separated integers"),
])
def test_bad_options_exit_2_naming_the_option(ft, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        ft.main(["--runs", str(tmp_path), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_folder_without_checkpoints_is_one_clear_line(ft, tmp_path):
    with pytest.raises(SystemExit, match="--runs: no \\*/checkpoint.pt under"):
        ft.run(tmp_path, [5], 10, [0])


def test_markdown_has_the_chosen_samplers_only_with_mean_and_std_over_seeds(ft):
    gls, kb = ft.SHORT["gls"], ft.SHORT["kblock"]
    rows = lambda a, b: {gls: [{"nfe": 5, "fd-digits": a}], kb: [{"nfe": 5, "fd-digits": b}]}
    res = {"nfes": [5], "n": 10, "seed": 0, "samplers": [gls, kb], "seconds": 60.0, "machine": "m", "command": "c",
           "models": {"cld-s0": {"sde": "cld", "conditional": False, "rows": rows(3.0, 2.0)},
                      "cld-s1": {"sde": "cld", "conditional": False, "rows": rows(5.0, 2.0)}}}
    md = ft.to_markdown(res)
    assert f"| cld | {gls} | 4 ± 1.4 |" in md and f"| cld | {kb} | 2 ± 0 |" in md
    assert ft.SHORT["eta1"] not in md and "class-accuracy" not in md


def test_markdown_pools_sampling_seeds_and_checkpoints(ft):
    gls = ft.SHORT["gls"]
    cell = lambda v: {gls: [{"nfe": 5, "fd-digits": sum(v) / len(v), "fd-digits per seed": v}]}
    res = {"nfes": [5], "n": 10, "seeds": [0, 1], "samplers": [gls], "seconds": 60.0, "machine": "m", "command": "c",
           "models": {"hold-a": {"sde": "hold", "conditional": False, "rows": cell([1.0, 2.0])},
                      "hold-b": {"sde": "hold", "conditional": False, "rows": cell([3.0, 4.0])}}}
    md = ft.to_markdown(res)
    assert "sampling seeds 0, 1" in md and f"| hold | {gls} | 2.5 ± 1.3 |" in md
