"""`kinetic sample --sde` (a run of the denoiser parameterisation under another SDE) and
`kinetic sample --diffusers PATH` (a diffusers model folder under any SDE), with their one-line errors."""

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kinetic as kn
from kinetic.checkpoint import load_model
from kinetic.cli.app import app
from kinetic.cli.common import DEFAULT_BATCH_SIZE
from kinetic.evaluation import draw

runner = CliRunner()


def _train(out, *extra):
    r = runner.invoke(app, [
        "train", "--data", "digits", "--model", "mlp", "--model-size", "tiny", "--sde", "vp", "--steps", "5",
        "--batch-size", "32", "--out", str(out), "--sample-every", "0", "--device", "cpu", "--quiet", *extra,
    ])
    assert r.exit_code == 0, r.output
    return out


@pytest.fixture(scope="module")
def denoiser_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("den") / "run", "--parameterization", "denoiser")


def _sample(*args):
    return runner.invoke(app, ["sample", "--n", "6", "--steps", "4", "--no-clamp", "--quiet", *map(str, args)])


def _one_line_error(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(r.output.strip().splitlines()) <= 3, r.output
    for w in words:
        assert w in r.output, r.output


@pytest.mark.parametrize("sde", ["cld", "hold", "psld", "langevin"])
def test_denoiser_run_samples_under_another_sde(denoiser_run, tmp_path, sde):
    """The npz of `sample -c RUN --sde X` is the library's draw of the run's denoiser under preset X."""
    out = tmp_path / "x.npz"
    r = _sample("-c", denoiser_run, "--sde", sde, "--out", out)
    assert r.exit_code == 0, r.output
    got = np.load(out)["samples"]
    sm, _ = load_model(denoiser_run / "checkpoint.pt")
    target = kn.preset(sde)
    want, nfe = draw(target, sm.denoiser().score_fn(target), (6, 1, 8, 8), steps=4, seed=0,
                     batch_size=DEFAULT_BATCH_SIZE)
    assert got.shape == (6, 1, 8, 8) and np.isfinite(got).all() and int(np.load(out)["nfe"]) == nfe
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    own = tmp_path / "vp.npz"
    assert _sample("-c", denoiser_run, "--out", own).exit_code == 0
    assert not np.allclose(np.load(own)["samples"], got)  # another SDE, other samples


def test_sde_of_the_run_itself_is_its_own_sampling(denoiser_run, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    assert _sample("-c", denoiser_run, "--out", a).exit_code == 0
    assert _sample("-c", denoiser_run, "--sde", "vp", "--out", b).exit_code == 0
    np.testing.assert_allclose(np.load(a)["samples"], np.load(b)["samples"], rtol=1e-6, atol=1e-6)


def test_cross_sde_refusals(denoiser_run, tmp_path):
    x0_run = _train(tmp_path / "x0")
    _one_line_error(_sample("-c", x0_run, "--sde", "cld"), "denoiser")
    _one_line_error(_sample("-c", denoiser_run, "--sde", "nope"), "--sde", "hold")
    _one_line_error(_sample(), "--diffusers")
    _one_line_error(_sample("-c", denoiser_run, "--diffusers", tmp_path), "not both")


diffusers = pytest.importorskip("diffusers")

_UNET = {"sample_size": 8, "in_channels": 1, "out_channels": 1, "block_out_channels": (8, 16), "layers_per_block": 1,
         "down_block_types": ("DownBlock2D", "DownBlock2D"), "up_block_types": ("UpBlock2D", "UpBlock2D"),
         "norm_num_groups": 4, "attention_head_dim": None}


def _folder(path, **kw):
    torch.manual_seed(0)
    diffusers.UNet2DModel(**{**_UNET, **kw}).save_pretrained(path)
    diffusers.DDPMScheduler().save_pretrained(path)
    return path


def test_diffusers_folder_samples_under_hold(tmp_path):
    folder = _folder(tmp_path / "ddpm")
    out = tmp_path / "h.npz"
    r = _sample("--diffusers", folder, "--sde", "hold", "--out", out)
    assert r.exit_code == 0, r.output
    got = np.load(out)["samples"]
    den = kn.load_diffusers(folder)
    want, _ = draw(kn.hold(), den.score_fn(kn.hold()), (6, 1, 8, 8), steps=4, seed=0, batch_size=DEFAULT_BATCH_SIZE)
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-5, atol=1e-5)
    png = tmp_path / "c.png"
    assert _sample("--diffusers", folder, "--sde", "cld", "--solver", "em", "--out", png).exit_code == 0
    assert png.stat().st_size > 0
    _one_line_error(_sample("--diffusers", folder, "--class", "1"), "class-conditional")
    _one_line_error(_sample("--diffusers", tmp_path), "config.json")


def test_conditional_diffusers_folder_takes_classes(tmp_path):
    folder = _folder(tmp_path / "cond", num_class_embeds=3)
    out, one = tmp_path / "all.npz", tmp_path / "one.npz"
    assert _sample("--diffusers", folder, "--sde", "psld", "--out", out).exit_code == 0
    np.testing.assert_array_equal(np.load(out)["labels"], np.arange(6) % 3)
    assert _sample("--diffusers", folder, "--sde", "psld", "--class", "2", "--out", one).exit_code == 0
    f = np.load(one)
    np.testing.assert_array_equal(f["labels"], np.full(6, 2))
    assert not np.allclose(f["samples"], np.load(out)["samples"])  # the label reaches the U-Net
    _one_line_error(_sample("--diffusers", folder, "--class", "null"), "unconditional branch")
