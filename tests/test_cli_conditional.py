"""The CLI of conditional generation: train --conditional, sample --class/--guidance (a grid of
all classes by default), evaluate class-accuracy / fd-digits-per-class / inpaint, and the
one-line errors (exit 2) for bad conditioning input."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kinetic.cli.app import app

runner = CliRunner()


def train(out, *extra):
    return runner.invoke(app, [
        "train", "--data", "digits", "--model", "mlp", "--model-size", "tiny", "--sde", "cld", "--steps", "20",
        "--batch-size", "32", "--out", str(out), "--sample-every", "0", "--device", "cpu", "--quiet", *extra,
    ])


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cond") / "run"
    r = train(out, "--conditional", "--label-dropout", "0.2")
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    r = train(out)
    assert r.exit_code == 0, r.output
    return out


def test_conditional_run_records_its_classes(cond_run):
    import kinetic as kn

    sm, ckpt = kn.load_model(cond_run)
    assert sm.num_classes == 10 and ckpt["model_config"]["num_classes"] == 10
    assert ckpt["config"]["conditional"] is True and ckpt["config"]["label_dropout"] == 0.2
    assert "mlp.label_embed.table.weight" in ckpt["model"]  # FlatMLP(MLP) on images
    assert (cond_run / "samples").is_dir()


def test_sample_grid_of_all_classes_and_one_class(cond_run, tmp_path):
    r = runner.invoke(app, ["sample", "-c", str(cond_run), "--n", "20", "--steps", "6", "--out",
                            str(tmp_path / "all.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "all classes in turn" in r.output and "NFE=6" in r.output
    f = np.load(tmp_path / "all.npz")
    assert f["samples"].shape == (20, 1, 8, 8) and np.array_equal(f["labels"], np.arange(20) % 10)
    r = runner.invoke(app, ["sample", "-c", str(cond_run), "--n", "8", "--steps", "6", "--class", "3",
                            "--guidance", "2", "--out", str(tmp_path / "three.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "class 3" in r.output and "guidance 2" in r.output and "NFE=12" in r.output  # 2 evaluations per step
    f = np.load(tmp_path / "three.npz")
    assert (f["labels"] == 3).all() and int(f["nfe"]) == 12
    r = runner.invoke(app, ["sample", "-c", str(cond_run), "--n", "30", "--steps", "4", "--out",
                            str(tmp_path / "g.png"), "--quiet"])
    assert r.exit_code == 0, r.output
    from PIL import Image

    with Image.open(tmp_path / "g.png") as im:  # 10 columns (one per class) of 8 px + padding, x4
        assert im.size[0] == 4 * (10 * 10 + 2)


def test_evaluate_conditional_metrics(cond_run, tmp_path):
    r = runner.invoke(app, ["evaluate", "-c", str(cond_run), "--metric", "class-accuracy", "--metric",
                            "fd-digits-per-class", "--metric", "inpaint", "--n", "40", "--steps", "5", "--guidance", "1",
                            "--json", str(tmp_path / "r.json"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    m = res["metrics"]
    assert 0.0 <= m["class-accuracy"]["value"] <= 1.0 and len(m["class-accuracy"]["per_class"]) == 10
    assert len(m["fd-digits-per-class"]["per_class"]) == 10 and m["fd-digits-per-class"]["value"] > 0
    assert m["inpaint"]["n"] == 40 and 0 <= m["inpaint"]["agreement"] <= 1 and m["inpaint"]["value"] > 0
    assert res["guidance"] == 1.0 and res["nfe"] == 10


def one_line_exit_2(args):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 or "Error:" in lines[0], r.output
    return " ".join(r.output.split())


def test_bad_conditioning_input(cond_run, plain_run, tmp_path):
    msg = one_line_exit_2(["sample", "-c", str(plain_run), "--class", "3", "--n", "4"])
    assert "--class" in msg and "unconditional" in msg
    msg = one_line_exit_2(["sample", "-c", str(plain_run), "--guidance", "1", "--n", "4"])
    assert "--guidance" in msg and "unconditional" in msg
    msg = one_line_exit_2(["evaluate", "-c", str(plain_run), "--guidance", "1", "--n", "4"])
    assert "--guidance" in msg
    msg = one_line_exit_2(["sample", "-c", str(cond_run), "--class", "10", "--n", "4"])
    assert "[0, 9]" in msg
    msg = one_line_exit_2(["sample", "-c", str(cond_run), "--class", "seven", "--n", "4"])
    assert "--class" in msg
    msg = one_line_exit_2(["sample", "-c", str(cond_run), "--guidance", "-1", "--n", "4"])
    assert ">= 0" in msg
    msg = one_line_exit_2(["evaluate", "-c", str(plain_run), "--metric", "class-accuracy", "--n", "4"])
    assert "conditional" in msg
    msg = one_line_exit_2(["train", "--data", "moons", "--conditional", "--steps", "1", "--out", str(tmp_path / "m")])
    assert "--conditional" in msg and "unlabelled" in msg
    msg = one_line_exit_2(["train", "--data", "digits", "--label-dropout", "0.3", "--steps", "1", "--out",
                           str(tmp_path / "d")])
    assert "--conditional" in msg
    msg = one_line_exit_2(["train", "--data", "digits", "--conditional", "--label-dropout", "1.5", "--steps", "1",
                           "--out", str(tmp_path / "e")])
    assert "--label-dropout" in msg


def test_class_on_an_unlabelled_dataset(tmp_path):
    out = tmp_path / "moons"
    r = runner.invoke(app, ["train", "--data", "moons", "--model", "mlp", "--model-size", "tiny", "--steps", "3",
                            "--out", str(out), "--sample-every", "0", "--quiet"])
    assert r.exit_code == 0, r.output
    msg = one_line_exit_2(["sample", "-c", str(out), "--class", "1", "--n", "4"])
    assert "--class" in msg and "'moons' has no class labels" in msg


def test_unconditional_checkpoint_of_main_still_loads_and_resumes(plain_run, tmp_path):
    """A checkpoint written before class labels existed (no num_classes in model_config, no
    conditional / label_dropout in its config) loads, samples and resumes unchanged."""
    import shutil

    import kinetic as kn
    from kinetic.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "old"
    shutil.copytree(plain_run, run)
    ckpt = load_checkpoint(run)
    del ckpt["model_config"]["num_classes"]
    for key in ("conditional", "label_dropout"):
        del ckpt["config"][key]
    for key in ("format", "format_version", "kinetic_version"):
        ckpt.pop(key)
    save_checkpoint(ckpt, run / "checkpoint.pt")
    text = (run / "config.toml").read_text()
    (run / "config.toml").write_text("\n".join(ln for ln in text.splitlines()
                                               if not ln.startswith(("conditional", "label_dropout"))) + "\n")
    sm, _ = kn.load_model(run)
    assert sm.num_classes == 0
    new, _ = kn.load_model(plain_run)
    z = torch.randn(3, 2, 1, 8, 8)
    assert torch.equal(sm.score(z, torch.full((3,), 0.4)), new.score(z, torch.full((3,), 0.4)))
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "22", "--quiet"])
    assert r.exit_code == 0, r.output
