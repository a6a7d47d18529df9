"""Tests for benchmarks/quality_vs_ddpm.py: sampler configs, the real split, snapshots, summaries, and a
tiny end-to-end run (trained weights and evaluations cached and reused)."""

from __future__ import annotations

import json
import math
import sys

import pytest
import torch
from conftest import load_benchmark

pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def qv():
    yield load_benchmark("quality_vs_ddpm")
    sys.modules.pop("quality_vs_ddpm", None)


def test_sampler_configs(qv):
    cfg = qv.normalise_sampler({"solver": "pc"})
    assert cfg["nfe_per_step"] == 2 and cfg["grid"] == "quadratic" and not cfg["denoise"]
    assert qv.sampler_label(cfg) == "pc/quadratic"
    lab = qv.sampler_label(qv.normalise_sampler({"solver": "ei", "grid": "uniform", "denoise": True,
                                                 "options": {"order": 2}}))
    assert lab == "ei/uniform+denoise(order=2)"
    assert qv.reachable(cfg, 10) and not qv.reachable(cfg, 11)
    assert qv.reachable(qv.normalise_sampler({"solver": "ei", "denoise": True}), 11)
    with pytest.raises(ValueError, match="unknown key"):
        qv.normalise_sampler({"solver": "ei", "step": 3})
    with pytest.raises(ValueError, match="solver must be one of"):
        qv.normalise_sampler({"solver": "rk4"})
    table = qv.parse_samplers('{"hold": [{"solver": "em"}]}')
    assert [qv.sampler_label(s) for s in qv.samplers_for("hold", table)] == ["em/quadratic"]
    assert qv.samplers_for("cld", table) == qv.samplers_for("cld", qv.DEFAULT_SAMPLERS)  # "*" entry
    with pytest.raises(ValueError, match="unknown SDE"):
        qv.parse_samplers('{"ddim": [{"solver": "em"}]}')
    with pytest.raises(ValueError, match="JSON"):
        qv.parse_samplers("{not json")


def test_real_split_is_disjoint_and_complete(qv):
    floor, ref = qv.real_split(500, seed=1)
    assert floor.shape == (500, 1, 8, 8) and ref.shape == (1297, 1, 8, 8)
    rows = {tuple(r.flatten().tolist()) for r in torch.cat([floor, ref])}
    from kinetic.data import load_dataset

    assert rows == {tuple(r.flatten().tolist()) for r in load_dataset("digits", split="all")}
    other, _ = qv.real_split(500, seed=2)
    assert not torch.equal(other, floor)  # a fresh split per seed


def test_snapshots_keep_budget_steps_and_last_step_within_wall(qv):
    snaps = qv._Snapshots({"steps": 2, "long": 4}, {"wall_steps": 2.5})
    weights = {"w": torch.zeros(1)}
    for step in range(1, 5):
        weights["w"] += 1
        snaps.after_step(step, 1.0, lambda: weights)  # 1 s per step
    assert snaps.steps == {"steps": 2, "long": 4, "wall_steps": 2}
    assert float(snaps.states["wall_steps"]["w"]) == 2.0 and float(snaps.states["long"]["w"]) == 4.0
    assert snaps.elapsed == [1.0, 2.0, 3.0, 4.0]
    slow = qv._Snapshots({"steps": 1}, {"wall_steps": 0.5})  # a first step over budget is still kept
    slow.after_step(1, 1.0, lambda: weights)
    assert slow.steps["wall_steps"] == 1


def test_trainer_prefix_is_the_shorter_run():
    # the study takes the 600-step model from step 600 of the 3000-step run: the Trainer's state
    # after s steps must not depend on the number of steps asked for
    from kinetic.config import TrainConfig
    from kinetic.training import Trainer

    def weights_after(steps, total):
        cfg = TrainConfig(sde="hold", data="moons", data_n=256, model="mlp", model_size="tiny", steps=total,
                          batch_size=16, warmup=2, seed=3, device="cpu", amp=False, n_samples=0)
        tr = Trainer.from_config(cfg)
        for _ in range(steps):
            tr.step()
        return tr.ema.shadow.state_dict()

    short, long = weights_after(4, 4), weights_after(4, 20)
    for k in short:
        assert torch.equal(short[k], long[k]), k


def test_adapter_loop_mirrors_the_trainer(qv, monkeypatch):
    # with kinetic's own U-Net given as the custom network, the benchmark's run of an adapter method
    # must reproduce the Trainer's own (the loop of kn.train) exactly: same init, data, noise,
    # warm-up, clipping and EMA
    from kinetic.models import build_model
    from kinetic.training import Trainer

    torch.set_num_threads(1)
    settings = qv.Settings(seeds=[0], steps=3, long_factor=1, size="tiny")
    method = next(m for m in qv.METHODS if m.name == "hold+dunet")
    monkeypatch.setattr(qv, "build_network", lambda m, st, sde=None: build_model("unet", st.size, (1, 8, 8), sde.order))
    snaps, _ = qv.train_kinetic(method, settings, 5, {}, lambda s: None)
    trainer = Trainer.from_config(qv.base_config(method, settings, 5))
    for _ in range(3):
        trainer.step()
    ref = trainer.ema.shadow.state_dict()
    assert snaps.steps["steps"] == 3 and snaps.states["steps"].keys() == ref.keys()
    for k, v in ref.items():
        torch.testing.assert_close(snaps.states["steps"][k], v, rtol=0, atol=0, msg=k)


def test_best_label_and_mean_sd(qv):
    evs = {"0": {"steps|a|10": {"fd": 3.0}, "steps|b|10": {"fd": 2.0}, "steps|c|10": {"fd": 1.0}},
           "1": {"steps|a|10": {"fd": 5.0}, "steps|b|10": {"fd": 2.5}, "steps|c|10": {"fd": None}}}
    label, m, s = qv.best_label(evs, "steps", 10)
    assert label == "b" and m == pytest.approx(2.25) and s == pytest.approx(math.sqrt(0.125))  # c has a nan seed
    assert qv.best_label(evs, "steps", 10, ["a"])[0] == "a"
    assert qv.best_label(evs, "steps", 20)[0] is None
    assert qv.mean_sd([4.0]) == (4.0, 0.0)
    assert all(math.isnan(v) for v in qv.mean_sd([1.0, float("nan")]))


@pytest.mark.slow
def test_tiny_study_end_to_end_and_cache(qv, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("KINETIC_CACHE", str(tmp_path / "cache"))
    settings = qv.Settings(seeds=[0], steps=2, long_factor=2, n=24, nfes=[2], size="tiny", ddpm_steps=3,
                           fast_schedulers=[["dpmsolver++", 2]])
    methods = [m for m in qv.METHODS if m.name in ("vp", "hold+dunet")]
    table = qv.parse_samplers('{"vp": [{"solver": "ei"}, {"solver": "em"}], "hold": [{"solver": "ei"}]}')
    logs: list[str] = []
    res = qv.run_study(settings, methods, tmp_path / "runs", table, log=logs.append)
    assert list(res["runs"]) == ["ddpm", "vp", "hold+dunet"]  # the baseline runs first, always
    summ = res["summary"]
    assert math.isfinite(summ["floor"][0]) and summ["floor"][1] == 0.0
    vp = summ["methods"]["vp"]
    assert vp["cells"]["steps|2"]["sampler"] in ("ei/quadratic", "em/quadratic")
    evs = res["runs"]["vp"]["0"]["evals"]
    assert {"steps|ei/quadratic|2", "steps|em/quadratic|2", "long|ei/quadratic|2", "long|em/quadratic|2"} <= set(evs)
    # the wall-clock snapshots are evaluated with the best sampler of the equal-steps budget only
    wall = [k for k in evs if k.startswith("wall_")]
    assert sorted(wall) == sorted([f"wall_steps|{vp['cells']['steps|2']['sampler']}|2",
                                   f"wall_long|{vp['cells']['long|2']['sampler']}|2"])
    for e in evs.values():
        assert 0.0 <= e["out_of_range"] <= 1.0 and e["nfe"] == 2
    base = summ["methods"]["ddpm"]
    assert base["params"] == summ["methods"]["hold+dunet"]["params"] - 2 * 32 * 9  # conv_in: 2 more input channels
    assert set(base["cells"]) >= {"steps|2", "steps|3", "wall_long|3"}
    rec = res["runs"]["vp"]["0"]["train"]
    assert rec["snapshots"]["steps"] == 2 and rec["snapshots"]["long"] == 4
    assert rec["wall_budget_s"]["wall_steps"] == pytest.approx(
        res["runs"]["ddpm"]["0"]["train"]["elapsed_at"]["2"])
    md = qv.to_markdown(res)
    assert "real digits (floor)" in md and "M = 1773" in md and "(equal wall-clock)" in md
    out = tmp_path / "out"
    qv.plot_fd_vs_nfe(res, out / "fd.png")
    qv.plot_sample_grids(res, tmp_path / "runs", out / "grid.png")
    assert (out / "fd.png").stat().st_size > 0 and (out / "grid.png").stat().st_size > 0
    json.dumps(qv._jsonable(res))  # plain JSON

    # a second call reuses every trained run and evaluation
    def no_training(*a, **k):
        raise AssertionError("retrained a cached run")

    for name in ("train_ddpm", "train_kinetic", "sample_kinetic", "sample_diffusers"):
        monkeypatch.setattr(qv, name, no_training)
    again = qv.run_study(settings, methods, tmp_path / "runs", table, log=lambda s: None)
    assert again["summary"]["methods"]["vp"]["cells"] == summ["methods"]["vp"]["cells"]
    # other settings in the same cache: one clear error, nothing replaced
    with pytest.raises(qv.StudyError, match="other settings"):
        qv.run_study(qv.Settings(**{**qv.dataclasses.asdict(settings), "steps": 3}), methods, tmp_path / "runs",
                     table, log=lambda s: None)


def test_cli_rejects_bad_input(qv, capsys):
    assert qv.main(["--quick", "--n", "1"]) == 2
    assert "n must lie in" in capsys.readouterr().err
    assert qv.main(["--quick", "--samplers", '{"hold": [{"solver": "nope"}]}']) == 2
    assert "solver must be one of" in capsys.readouterr().err


def test_first_look_table_takes_the_baseline_scheduler_with_the_best_mean(qv):
    runs = {"vp": {"0": {"evals": {"steps|ei/quadratic|10": {"fd": 8.56}, "steps|ei/quadratic|20": {"fd": 7.97}}},
                   "1": {"evals": {"steps|ei/quadratic|10": {"fd": 11.4}, "steps|ei/quadratic|20": {"fd": 11.4}}}},
            "ddpm": {s: {"evals": {"steps|unipc|10": {"fd": u}, "steps|dpmsolver++|10": {"fd": d},
                                   "steps|dpmsolver++|20": {"fd": 15.5}, "steps|ddpm|1000": {"fd": 10.6}}}
                     for s, u, d in (("0", 18.8, 20.2), ("1", 14.3, 13.0))}}
    res = {"settings": {"seeds": [0, 1], "nfes": [10, 20], "ddpm_steps": 1000,
                        "fast_schedulers": [["dpmsolver++", 10], ["dpmsolver++", 20], ["unipc", 10]]},
           "floor": {"0": {"fd": 8.31}, "1": {"fd": 6.09}}, "runs": runs,
           "summary": {"floor": [7.2, 1.57], "methods": {
               "vp": {"cells": {"steps|10": {"fd": 9.98, "sd": 2.0}, "steps|20": {"fd": 9.7, "sd": 2.4}}},
               "ddpm": {"cells": {"steps|10": {"sampler": "unipc"}},
                        "schedulers": {"steps|unipc|10": {"fd": 16.55, "sd": 3.2}, "steps|dpmsolver++|10": {"fd": 16.6, "sd": 5},
                                       "steps|dpmsolver++|20": {"fd": 15.5, "sd": 0.0}, "steps|ddpm|1000": {"fd": 10.6, "sd": 0.0}}}}}}
    lines = qv.first_look_markdown(res).splitlines()
    assert "NFE 10 (the best mean of DPM-Solver++ / UniPC)" in lines[0]
    assert lines[3] == "| 1 | 6.09 | 11.4 | 11.4 | 14.3 (UniPC) | 15.5 | 10.6 |"  # UniPC on every seed, as its mean
    assert lines[4] == "| mean ± sd | 7.2 ± 1.6 | 10.0 ± 2.0 | 9.7 ± 2.4 | 16.6 ± 3.2 | 15.5 ± 0.0 | 10.6 ± 0.0 |"
