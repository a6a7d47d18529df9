"""Tests for benchmarks/order_study.py and its report: exact resume of the baseline, one tiny run of each
kind end to end, the run plan and its claims, and the paired intervals."""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from conftest import load_benchmark


@pytest.fixture(scope="module")
def os_():
    yield load_benchmark("order_study")
    sys.modules.pop("order_study", None)


@pytest.fixture(scope="module")
def rep():
    yield load_benchmark("order_study_report")
    sys.modules.pop("order_study_report", None)


def tiny(os_):
    return os_.Protocol(seeds=(0,), budgets=(2, 4), nfes=(3,), sample_seeds=(0,), n=100, ddpm_steps=4, ddpm_n=50,
                        size="tiny")


def test_the_baseline_resumed_from_its_state_continues_exactly(os_):
    p = tiny(os_)
    whole = os_.DDPMRun(p, 3)
    for _ in range(4):
        whole.step()
    first = os_.DDPMRun(p, 3)
    for _ in range(2):
        first.step()
    state = first.state_dict()
    resumed = os_.DDPMRun(p, 3)
    resumed.load_state_dict(state)
    for _ in range(2):
        resumed.step()
    a, b = whole.ema_unet().state_dict(), resumed.ema_unet().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    fresh = os_.DDPMRun(p, 4)  # another seed trains another model
    for _ in range(4):
        fresh.step()
    assert not all(torch.equal(a[k], v) for k, v in fresh.ema_unet().state_dict().items())


def test_a_kinetic_run_and_its_resumed_long_budget_write_records(os_, tmp_path):
    p = tiny(os_)
    rec = os_.run_one("hold-den", 0, 2, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    assert (tmp_path / "rec" / "hold-den-s0-2.json").is_file() and (tmp_path / "runs" / "hold-den-s0" / "state-2.pt").is_file()
    assert set(rec["evals"]) == {"kinetic|3|0"} and rec["evals"]["kinetic|3|0"]["nfe"] == 3
    assert rec["evals"]["kinetic|3|0"]["fd"] > rec["floor"]["100|0"] > 0
    long = os_.run_one("hold-den", 0, 4, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    assert long["train"]["resumed_from"] == 2 and json.loads((tmp_path / "rec" / "hold-den-s0-4.json").read_text())["steps"] == 4


def test_a_baseline_run_samples_every_scheduler_and_the_kinetic_orders(os_, tmp_path):
    p = tiny(os_)
    rec = os_.run_one("ddpm", 0, 2, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    labels = {k.rsplit("|", 2)[0] for k in rec["evals"]}
    assert labels == {"diffusers/dpmsolver++", "diffusers/unipc", "diffusers/ddpm", "kinetic@vp", "kinetic@cld",
                      "kinetic@hold"}
    assert rec["evals"]["diffusers/ddpm|4|0"]["n"] == 50 and rec["evals"]["kinetic@hold|3|0"]["nfe"] == 3
    assert all(e.get("fd") is not None for e in rec["evals"].values())
    assert (tmp_path / "runs" / "ddpm-s0" / "diffusers-2" / "scheduler_config.json").is_file()


def test_resample_replaces_only_the_chosen_cells_from_the_saved_state(os_, tmp_path):
    p = tiny(os_)
    rec = os_.run_one("ddpm", 1, 2, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    path = tmp_path / "rec" / "ddpm-s1-2.json"
    edited = json.loads(path.read_text())
    for key in edited["evals"]:
        edited["evals"][key]["fd"] = -1.0  # marks every cell: only the resampled ones lose the mark
    path.write_text(json.dumps(edited))
    out = os_.resample("ddpm", 1, 2, p, tmp_path / "runs", tmp_path / "rec", "kinetic@hold", log=lambda *_: None)
    again = json.loads(path.read_text())
    assert again == out and again["resampled"][-1]["prefix"] == "kinetic@hold"
    for key, ev in again["evals"].items():
        if key.startswith("kinetic@hold"):
            assert ev["fd"] == pytest.approx(rec["evals"][key]["fd"], rel=1e-6)  # the same state, the same seeds
        else:
            assert ev["fd"] == -1.0
    with pytest.raises(os_.StudyError, match="no cell of ddpm"):
        os_.resample("ddpm", 1, 2, p, tmp_path / "runs", tmp_path / "rec", "nope", log=lambda *_: None)
    with pytest.raises(os_.StudyError, match="needs the record"):
        os_.resample("vp", 1, 2, p, tmp_path / "runs", tmp_path / "rec", "kinetic", log=lambda *_: None)


def test_a_run_stopped_while_sampling_goes_on_from_its_state_and_cells(os_, tmp_path):
    p = os_.Protocol(seeds=(0,), budgets=(2,), nfes=(3, 4), sample_seeds=(0,), n=100, size="tiny")
    first = os_.run_one("vp", 0, 2, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    (tmp_path / "rec" / "vp-s0-2.json").unlink()  # as if stopped after the first cell:
    kept = {"kinetic|3|0": {**first["evals"]["kinetic|3|0"], "fd": -1.0}}
    (tmp_path / "runs" / "vp-s0" / "partial-2.json").write_text(json.dumps({"evals": kept, "floor": first["floor"]}))
    again = os_.run_one("vp", 0, 2, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    assert again["train"]["seconds"] == first["train"]["seconds"]  # not trained again
    assert again["evals"]["kinetic|3|0"]["fd"] == -1.0  # the cell already sampled is kept
    assert again["evals"]["kinetic|4|0"]["fd"] == pytest.approx(first["evals"]["kinetic|4|0"]["fd"], rel=1e-6)
    assert not (tmp_path / "runs" / "vp-s0" / "partial-2.json").exists()


def test_the_plan_runs_every_default_budget_first_and_claims_are_exclusive(os_, tmp_path):
    p = os_.Protocol()
    runs = p.runs()
    assert runs[:6] == [(m.name, 0, 600) for m in os_.METHODS] and len(runs) == 18 + 9
    assert {r for r in runs if r[2] == 3000} == {(m, s, 3000) for m in ("ddpm", "vp", "hold") for s in (0, 1, 2)}
    assert [r[0] for r in runs[-3:]] == ["ddpm"] * 3  # the baseline's long runs, the costliest, come last
    assert os_._claim(tmp_path, "vp", 0, 600)
    assert not os_._claim(tmp_path, "vp", 0, 600)  # held by a live process (this one)
    os_._marker(tmp_path, "vp", 0, 600).write_text("999999999")  # a process that does not exist
    assert os_._claim(tmp_path, "vp", 0, 600)
    assert os_._marker(tmp_path, "vp", 0, 600).read_text() == str(os.getpid())


@pytest.mark.parametrize("argv, message", [
    (["--run", "vp", "--seed", "0"], "--run needs --seed and --steps"),
    (["--run", "cld", "--seed", "0", "--steps", "3000"], "--steps 3000 is not a budget of cld"),
    (["--threads", "0", "--plan"], "--threads must lie in"),
])
def test_bad_options_exit_2_in_one_line(os_, capsys, argv, message):
    assert os_.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_paired_intervals_and_the_seed_spread(rep):
    a = {0: {0: 5.0, 1: 5.2}, 1: {0: 6.0, 1: 6.1}, 2: {0: 4.0, 1: 4.4}}
    shifted = {s: {j: v + 1.5 for j, v in d.items()} for s, d in a.items()}
    c = rep.paired(shifted, a)
    assert c["mean"] == pytest.approx(1.5) and c["lo"] == pytest.approx(1.5) and c["hi"] == pytest.approx(1.5)
    assert c["exceeds"]
    mixed = {0: {0: 6.0, 1: 6.2}, 1: {0: 5.0, 1: 5.1}, 2: {0: 4.5, 1: 4.9}}  # +1, -1, +0.5
    m = rep.paired(mixed, a)
    assert m["mean"] == pytest.approx(0.5 / 3) and m["lo"] < 0 < m["hi"] and not m["exceeds"]
    r = rep.paired({s: {j: 0.5 * v for j, v in d.items()} for s, d in a.items()}, a, ratio=True)
    assert r["mean"] == pytest.approx(0.5) and r["exceeds"]
    assert not rep.paired({0: {0: 1.0}}, {0: {0: 2.0}})["exceeds"]  # one seed never exceeds the spread


def test_the_report_reads_only_what_is_recorded(os_, rep, tmp_path):
    p = tiny(os_)
    for name in ("vp", "hold"):
        os_.run_one(name, 0, 2, p, tmp_path / "runs", tmp_path / "rec", log=lambda *_: None)
    md = rep.report(tmp_path / "rec", p, tmp_path / "docs")
    assert "Runs recorded: 2 (hold-s0-2, vp-s0-2)" in md and "kinetic HOLD" in md and "DDPM recipe" not in md
    summary = json.loads((tmp_path / "docs" / "figures" / "order_study.json").read_text())
    hold, vp = summary["cells"]["hold|2|3"]["mean"], summary["cells"]["vp|2|3"]["mean"]
    assert summary["comparisons"]["hold-vp|2|3"]["mean"] == pytest.approx(hold - vp)
    assert (tmp_path / "docs" / "figures" / "order_study.png").is_file()
