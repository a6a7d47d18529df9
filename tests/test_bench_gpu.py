"""Tests for benchmarks/gpu.py: the whole script end to end at its quick sizes on the CPU, its checks, its options."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def gpu():
    yield load_benchmark("gpu")
    sys.modules.pop("gpu", None)


@pytest.fixture(scope="module")
def quick_run(gpu, tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu")
    gpu.main(["--device", "cpu", "--quick", "--out", str(out)])
    return out, json.loads((out / "gpu.json").read_text()), (out / "gpu.md").read_text()


def test_quick_run_writes_every_section_without_error(gpu, quick_run):
    _, res, md = quick_run
    for name in gpu.SECTIONS:
        assert name in res and "error" not in res[name], (name, res[name].get("error"), res[name].get("trace"))
    assert res["failed_checks"] == [] and res["quick"] and res["environment"]["device"] == "cpu"
    assert "Quick sizes" in md and "all checks within tolerance" in md and "python benchmarks/gpu.py --device cpu" in md


def test_quick_run_covers_every_fixed_grid_solver_sde_and_sampler(gpu, quick_run):
    _, res, _ = quick_run
    fixed = set(gpu.fixed_grid_solvers())
    assert fixed == {"em", "pc", "sscs", "lie_trotter", "ei", "gls"}
    sync = {(r["sde"], r["solver"]) for r in res["sync"]["rows"]}
    want = {(s, v) for s in gpu.SDES for v in fixed if gpu._runs(gpu.SDES[s](), v, res["sync"]["steps"])}
    assert sync == want and len(want) >= 20
    seed = {k for k in res["correctness"] if k.startswith("seed_match")}
    assert {f"seed_match_hold_{v}" for v in fixed - {"pc"}} <= seed and "seed_match_vp_pc" in seed
    train = res["training"]["rows"] + res["training_compiled"]["rows"]
    assert {(r["sde"], r["compiled"]) for r in train} == {(s, False) for s in gpu.TRAIN_SDES} | {("vp", True)}
    assert all(r["loss_finite"] and r["images_per_s"] > 0 for r in train)
    assert res["training"]["time_over_vp"]["vp"] == 1.0 and set(res["training"]["time_over_vp"]) == set(gpu.TRAIN_SDES)
    rows = {(r["sde"], r["solver"], r["steps"]) for r in res["sampling"]["rows"]}
    assert rows == {(s, v, n) for s in gpu.SAMPLE_SDES for v in gpu.SAMPLERS for n in gpu.QUICK["nfes"]}
    assert all(r["finite"] and r["nfe"] >= r["steps"] for r in res["sampling"]["rows"])
    assert {(r["sde"], r["solver"]) for r in res["sampling"]["overhead"]} == {(s, v) for s in gpu.SAMPLE_SDES for v in gpu.SAMPLERS}
    assert all(r["share"] >= 0 and r["plan_ms"] > 0 for r in res["sampling"]["overhead"])
    # the same kernels on the same device: identical, and every target is reported
    assert all(r["max_rel_diff"] == 0 and r["dtype"] == "torch.float64" for r in res["kernels"]["rows"])
    assert {"hold_over_vp_train_eager", "sampler_overhead_worst"} <= set(res["targets"])


def test_check_failures_flags_each_check_outside_its_tolerance(gpu, quick_run):
    _, res, _ = quick_run
    corr = res["correctness"]
    assert gpu.check_failures(corr) == []
    bad = json.loads(json.dumps(corr))
    bad["marginal_hold"]["mean"] = 1e-3
    bad["perturb_cld"]["identity"] = 1.0
    bad["sample_vp"]["finite"] = False
    bad["seed_match_hold_ei"]["rel"] = 1e-2
    bad["log_likelihood_vp"]["vs_exact"] = 1.0
    bad["train_step_hold"]["grads_finite"] = False
    bad["seed_match"] = {"error": "RuntimeError: a check group that raised"}
    assert sorted(gpu.check_failures(bad)) == sorted(["marginal_hold", "perturb_cld", "sample_vp", "seed_match_hold_ei",
                                                      "log_likelihood_vp", "train_step_hold", "seed_match"])


def test_outputs_are_saved_after_every_section(gpu, tmp_path):
    seen = []
    res = gpu.run(gpu.torch.device("cpu"), quick=True, compile_too=False, only=["kernels", "training_compiled"],
                  log=lambda s: None, save=lambda r: seen.append(sorted(k for k in gpu.SECTIONS if k in r)))
    assert seen == [["kernels"]] and res["failed_checks"] == [] and "hold_over_vp_train_eager" not in res["targets"]
    md = gpu.to_markdown({**res, "wall_s": 1.0, "command": "c"})
    assert "**Training**" in md and "error: not run" in md


def test_compiled_rows_are_skipped_when_the_budget_runs_out(gpu):
    cfg = dict(gpu.QUICK, deadline=gpu.time.perf_counter() + gpu.COMPILE_RESERVE_S - 1)
    res = gpu.training(gpu.torch.device("cpu"), cfg, compiled=True)
    assert [r["error"].startswith("skipped") for r in res["rows"]] == [True] * len(gpu.QUICK["compile_sdes"])
    assert res["time_over_vp"] == {}


def test_a_failing_section_is_recorded_and_the_rest_runs(gpu):
    res = {}
    gpu._section(res, "boom", lambda: 1 / 0, log=lambda s: None)
    gpu._section(res, "fine", lambda: {"ok": 1}, log=lambda s: None)
    assert res["boom"]["error"].startswith("ZeroDivisionError") and res["fine"] == {"ok": 1}


@pytest.mark.parametrize("argv, message", [
    (["--device", "nope"], "--device"),
    (["--device", "cpu", "--sections", "training,nope"], "--sections"),
    (["--device", "cpu", "--threads", "0"], "--threads must be >= 1"),
])
def test_bad_options_exit_2_naming_the_option(gpu, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        gpu.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
