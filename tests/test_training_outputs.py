"""Training outputs: runs people can watch (metrics.jsonl, TensorBoard,
--eval-every, where every artefact is), --threads and --clamp for sampling."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kinetic.checkpoint import load_checkpoint
from kinetic.cli.app import app
from kinetic.config import ConfigError, TrainConfig
from kinetic.training import train

runner = CliRunner()


def tiny(out, **kw) -> TrainConfig:
    base = dict(sde="hold", data="moons", data_n=256, model_size="tiny", steps=6, batch_size=16, warmup=1,
                ckpt_every=0, sample_every=0, n_samples=0, log_every=2, out=str(out), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_jsonl_every_log_step_and_resume_drops_the_tail(tmp_path):
    out = tmp_path / "m"
    train(tiny(out, steps=6, ckpt_every=4))
    log = rows(out / "metrics.jsonl")
    assert [r["step"] for r in log] == [2, 4, 6]
    assert {"step", "loss", "lr", "grad_norm", "examples_per_s", "elapsed_s"} <= set(log[0])
    assert all(np.isfinite(r["loss"]) and r["examples_per_s"] > 0 for r in log)
    assert log[-1]["loss"] == load_checkpoint(out)["history"]["loss"][-1]
    # a kill after step 6 but a checkpoint of step 4: resuming from 4 must not log steps 6 twice
    ck = load_checkpoint(out)
    s = train(tiny(tmp_path / "m2", steps=4))
    (tmp_path / "m2" / "metrics.jsonl").write_text((out / "metrics.jsonl").read_text() + '{"step": 6, "loss"')
    train(tiny(tmp_path / "m2", steps=6, resume=True))
    assert [r["step"] for r in rows(tmp_path / "m2" / "metrics.jsonl")] == [2, 4, 6]
    assert s["step"] == 4 and ck["step"] == 6


def test_eval_every_logs_and_plots_the_metric(tmp_path):
    out = tmp_path / "e"
    events = []
    s = train(tiny(out, steps=6, eval_every=3, eval_n=40, sample_steps=4, sample_solver="em"), callback=events.append)
    evals = [r for r in rows(out / "metrics.jsonl") if "swd" in r]
    assert [r["step"] for r in evals] == [3, 6] and all(r["swd"] > 0 for r in evals)
    assert [e["step"] for e in events if e["event"] == "eval"] == [3, 6]
    hist = load_checkpoint(out)["history"]
    assert hist["eval_step"] == [3, 6] and hist["eval_metric"] == "swd"
    assert s["eval"]["metric"] == "swd" and s["eval"]["step"] == 6
    from PIL import Image

    assert Image.open(out / "loss.png").size[0] > 1000  # two panels: loss and swd
    with pytest.raises(ConfigError, match="eval_every") as e:
        TrainConfig(data="cifar10", eval_every=10)
    assert e.value.field == "eval_every"


def test_tensorboard_event_files(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tb"
    train(tiny(out, steps=4, tensorboard=True, n_samples=8, sample_steps=3, sample_solver="em"))
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()
    assert {"train/loss", "train/lr", "train/grad_norm", "train/examples_per_s"} <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("train/loss")] == [2, 4]
    assert "samples" in tags["images"]


def test_tensorboard_missing_is_one_clear_line(tmp_path, monkeypatch):
    import kinetic.training.loop as loop

    monkeypatch.setattr(loop, "tensorboard_missing", lambda: "the tensorboard package is not installed: pip install x")
    with pytest.raises(ConfigError, match="tensorboard package is not installed") as e:
        train(tiny(tmp_path / "x", tensorboard=True))
    assert e.value.field == "tensorboard" and not (tmp_path / "x").exists()  # checked before any work
    r = runner.invoke(app, ["train", "--data", "moons", "--out", str(tmp_path / "y"), "--tensorboard", "--quiet"])
    assert r.exit_code == 2 and "--tensorboard" in r.output and len(r.output.strip().splitlines()) == 1


def test_train_prints_where_each_artefact_is(tmp_path):
    out = tmp_path / "a"
    r = runner.invoke(app, ["train", "--data", "moons", "--model-size", "tiny", "--steps", "10", "--batch-size", "16",
                            "--out", str(out), "--sample-every", "0", "--device", "cpu", "--eval-every", "5"])
    assert r.exit_code == 0, r.output
    for what, name in [("checkpoint", "checkpoint.pt"), ("config", "config.toml"), ("metrics", "metrics.jsonl"),
                       ("loss curve", "loss.png"), ("summary", "summary.json"), ("samples", "step_0000010.png")]:
        line = next(ln for ln in r.stdout.splitlines() if ln.startswith(what + ":"))
        assert line.split()[-1].endswith(name) and (out.resolve() / line.split(str(out.resolve()))[1].lstrip("/")).exists()
    assert "swd at step 10" in r.stdout


def test_help_shows_the_real_defaults():
    r = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0
    options = [ln for ln in r.output.splitlines() if ln.lstrip("│ ").startswith("--")]
    line = next(ln for ln in options if "--steps " in ln)
    assert f"[default: {TrainConfig().steps}]" in line
    assert f"[default: {TrainConfig().model_size}]" in next(x for x in options if "--model-size " in x)
    assert "runs/<sde>-<data>" in next(x for x in options if "--out " in x)
    r = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "200"})
    for opt in ("--threads", "--batch-size", "--clamp"):
        assert opt in r.output


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dig") / "d"
    train(TrainConfig(data="digits", data_n=32, model="unet", model_size="tiny", steps=1, batch_size=4, warmup=1,
                      ckpt_every=0, sample_every=0, n_samples=0, out=str(out), device="cpu"))
    return out


def test_sample_clamps_images_by_default_and_reports_it(digits_run, tmp_path):
    base = ["sample", "-c", str(digits_run), "--n", "6", "--solver", "em", "--steps", "3", "--threads", "1"]
    r = runner.invoke(app, base + ["--out", str(tmp_path / "c.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "clamped to [-1, 1]" in r.output and "% of values were outside" in r.output
    x = np.load(tmp_path / "c.npz")["samples"]
    assert x.min() >= -1 and x.max() <= 1
    r = runner.invoke(app, base + ["--no-clamp", "--out", str(tmp_path / "r.npz"), "--quiet"])
    assert r.exit_code == 0 and "clamped" not in r.output
    raw = np.load(tmp_path / "r.npz")["samples"]
    assert np.array_equal(np.clip(raw, -1, 1), x) and (np.abs(raw) > 1).any()  # an untrained net overshoots


def test_sample_and_evaluate_take_threads(digits_run, tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        r = runner.invoke(app, ["evaluate", "-c", str(digits_run), "--metric", "nll", "--n", "2", "--threads", "1",
                                "--quiet"])
        assert r.exit_code == 0, r.output
        assert torch.get_num_threads() == 1
        r = runner.invoke(app, ["sample", "-c", str(digits_run), "--n", "2", "--steps", "2", "--threads", "0"])
        assert r.exit_code == 2 and "--threads" in r.output
    finally:
        torch.set_num_threads(before)
