"""`kinetic train --resolution / --channels`: an image folder trained at the shape asked for, and one
line (exit 2) naming the flag for a value that cannot be used."""

import numpy as np
import pytest
from typer.testing import CliRunner

from kinetic.checkpoint import load_checkpoint
from kinetic.cli.app import app

runner = CliRunner()


def _png_folder(root, n=20):
    """n random RGB PNGs of 20 x 24 pixels (not square: the loader resizes and center-crops)."""
    from PIL import Image

    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(root / f"{i:02d}.png")
    return root


def _train(*args):
    return runner.invoke(app, ["train", "--steps", "2", "--model-size", "tiny", "--quiet", *[str(a) for a in args]])


def test_folder_trains_at_the_resolution_and_channels_given(tmp_path):
    imgs = _png_folder(tmp_path / "imgs")
    out = tmp_path / "run"
    r = _train("--data", "folder", "--data-dir", imgs, "--resolution", "12", "--channels", "1", "--out", out)
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out)
    assert ckpt["model_config"]["data_shape"] == [1, 12, 12]
    assert ckpt["config"]["resolution"] == 12 and ckpt["config"]["channels"] == 1
    # the model just trained samples at that shape
    s = tmp_path / "s.npz"
    r = runner.invoke(app, ["sample", "-c", str(out), "--n", "3", "--steps", "2", "--out", str(s), "--quiet"])
    assert r.exit_code == 0, r.output
    assert np.load(s)["samples"].shape == (3, 1, 12, 12)
    # and is evaluated on its held-out images at that shape (not the loader's default 3 x 32 x 32)
    r = runner.invoke(app, ["evaluate", "-c", str(out), "--metric", "nll", "--n", "2", "--quiet"])
    assert r.exit_code == 0, r.output


def test_folder_default_shape_is_rgb_32(tmp_path):
    imgs = _png_folder(tmp_path / "imgs", n=3)
    out = tmp_path / "run"
    r = _train("--data", "folder", "--data-dir", imgs, "--out", out, "--model", "mlp")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out)["model_config"]["data_shape"] == [3, 32, 32]


@pytest.mark.parametrize("args, flag", [
    (["--data", "folder", "--resolution", "0"], "--resolution"),
    (["--data", "folder", "--channels", "2"], "--channels"),
    (["--data", "folder", "--channels", "0"], "--channels"),
    (["--data", "digits", "--resolution", "16"], "--resolution"),
    (["--data", "cifar10", "--channels", "1"], "--channels"),
    (["--data", "moons", "--resolution", "8"], "--resolution"),
    (["--data", "moons", "--channels", "3"], "--channels"),
])
def test_bad_shape_is_one_line_naming_the_flag(tmp_path, args, flag):
    imgs = _png_folder(tmp_path / "imgs", n=2)
    r = _train(*args, "--data-dir", imgs, "--out", tmp_path / "run")
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and flag in lines[0], r.output
    assert not (tmp_path / "run").exists()  # refused before the run directory is made
