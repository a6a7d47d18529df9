"""End to end through the CLI: train a toy for a few steps, sample to .npz and .png, evaluate."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kinetic.cli.app import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("e2e") / "run"
    r = runner.invoke(
        app,
        ["train", "--data", "moons", "--model", "mlp", "--model-size", "tiny", "--steps", "30", "--batch-size", "64",
         "--out", str(out), "--sample-every", "0", "--device", "cpu", "--quiet"],
    )
    assert r.exit_code == 0, r.output
    assert (out / "checkpoint.pt").is_file() and (out / "config.toml").is_file() and (out / "loss.png").is_file()
    return out


def test_sample_npz_and_png(run_dir, tmp_path):
    r = runner.invoke(app, ["sample", "-c", str(run_dir), "--n", "50", "--solver", "em", "--steps", "10",
                            "--out", str(tmp_path / "s.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "NFE=10" in r.output
    f = np.load(tmp_path / "s.npz")
    assert f["samples"].shape == (50, 2) and int(f["nfe"]) == 10 and np.isfinite(f["samples"]).all()
    r = runner.invoke(app, ["sample", "-c", str(run_dir / "checkpoint.pt"), "--n", "40", "--solver", "sscs",
                            "--steps", "5", "--out", str(tmp_path / "s.png"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "s.png").stat().st_size > 1000
    # same seed, same samples
    r2 = runner.invoke(app, ["sample", "-c", str(run_dir), "--n", "50", "--solver", "em", "--steps", "10",
                             "--out", str(tmp_path / "s2.npz"), "--quiet"])
    assert r2.exit_code == 0
    assert np.array_equal(np.load(tmp_path / "s2.npz")["samples"], f["samples"])


def test_evaluate_swd_json(run_dir, tmp_path):
    r = runner.invoke(app, ["evaluate", "-c", str(run_dir), "--metric", "swd", "--n", "200", "--solver", "em",
                            "--steps", "20", "--json", str(tmp_path / "r.json"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["sde"] == "hold" and res["nfe"] == 20
    assert np.isfinite(res["metrics"]["swd"]["value"]) and res["metrics"]["swd"]["value"] > 0


def test_config_file_and_flag_override(run_dir, tmp_path):
    cfg = tmp_path / "s.toml"
    cfg.write_text('solver = "em"\nsteps = 7\nn = 12\n')
    r = runner.invoke(app, ["sample", "-c", str(run_dir), "--config", str(cfg), "--steps", "9",
                            "--out", str(tmp_path / "c.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    f = np.load(tmp_path / "c.npz")
    assert f["samples"].shape == (12, 2) and int(f["nfe"]) == 9  # flag beats file, file beats default


def test_config_file_may_name_the_checkpoint(run_dir, tmp_path):
    """``checkpoint = ...`` in the file stands for -c (a run or --diffusers is still required, from the
    command line or the file)."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'checkpoint = "{run_dir}"\n[sample]\nn = 5\nsteps = 3\n')
    r = runner.invoke(app, ["sample", "--config", str(cfg), "--out", str(tmp_path / "c.npz"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "c.npz")["samples"].shape == (5, 2)
    r = runner.invoke(app, ["sample", "--quiet"])
    assert r.exit_code == 2 and "--checkpoint" in r.output and "--diffusers" in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


@pytest.mark.parametrize(
    "args, word",
    [
        (["sample", "-c", "/nonexistent/run"], "checkpoint"),
        (["sample", "-c", "RUN", "--solver", "bogus"], "solver"),
        (["sample", "-c", "RUN", "--steps", "-3"], "steps"),
        (["sample", "-c", "RUN", "--out", "x.txt"], "--out"),
        (["evaluate", "-c", "RUN", "--metric", "bogus"], "metric"),
        (["evaluate", "-c", "RUN", "--metric", "fd-digits", "--n", "10", "--steps", "2", "--solver", "em"], "fd-digits"),
        (["evaluate", "-c", "RUN", "--metric", "fid", "--n", "10", "--steps", "2", "--solver", "em"], "inception"),
        (["train", "--order", "0"], "order"),
    ],
)
def test_errors_exit_2_one_line(run_dir, tmp_path, args, word):
    args = [str(run_dir) if a == "RUN" else a for a in args]
    r = runner.invoke(app, args + (["--quiet"] if args[0] != "train" else ["--quiet", "--out", str(tmp_path / "t")]))
    assert r.exit_code == 2, (args, r.output)
    assert word in r.output
    assert "Traceback" not in r.output


def test_bad_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    r = runner.invoke(app, ["sample", "-c", str(bad), "--quiet"])
    assert r.exit_code == 2 and "checkpoint" in r.output


@pytest.mark.parametrize("parameterization", ["x0", "eps"])
def test_psld_run_trains_samples_and_evaluates(tmp_path, parameterization):
    """Noise on two blocks end to end: `train --sde psld` (a denoiser, or a two-block eps network),
    `sample` with every fixed-grid sampler that can run it, `evaluate` (swd, nll), `info`."""
    out = tmp_path / "psld"
    r = runner.invoke(app, ["train", "--sde", "psld", "--data", "moons", "--model", "mlp", "--model-size", "tiny",
                            "--steps", "20", "--batch-size", "32", "--out", str(out), "--sample-every", "0",
                            "--parameterization", parameterization, "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    for solver in ("ei", "em", "sscs", "lie_trotter", "pc"):
        r = runner.invoke(app, ["sample", "-c", str(out), "--n", "16", "--solver", solver, "--steps", "5",
                                "--out", str(tmp_path / f"{solver}.npz"), "--quiet"])
        assert r.exit_code == 0, (solver, r.output)
        assert np.isfinite(np.load(tmp_path / f"{solver}.npz")["samples"]).all()
    r = runner.invoke(app, ["evaluate", "-c", str(out), "--metric", "swd", "--metric", "nll", "--n", "16",
                            "--steps", "5", "--json", str(tmp_path / "r.json"), "--quiet"])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "r.json").read_text())
    assert res["sde"] == "psld" and np.isfinite(res["metrics"]["nll"]["bits_per_dim"])
    r = runner.invoke(app, ["info", "--sde", "psld", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["noised_blocks"] == [0, 1]
