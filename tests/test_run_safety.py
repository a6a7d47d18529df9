"""Run safety in the training / CLI area: nothing lost, nothing hangs, every bad input one clear line.

Each test names the case it reproduces; each failed on the code before the fix.
"""

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from kinetic.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from kinetic.cli.app import app
from kinetic.config import ConfigError, TrainConfig
from kinetic.training import RunDirError, train
from kinetic.training.rundir import RunDirInUse

runner = CliRunner()
TOY = ["--data", "moons", "--model", "mlp", "--model-size", "tiny", "--batch-size", "16", "--sample-every", "0",
       "--device", "cpu", "--quiet"]


def tiny(out, **kw) -> TrainConfig:
    base = dict(sde="hold", data="moons", data_n=256, model_size="tiny", steps=4, batch_size=16, warmup=1,
                ckpt_every=0, sample_every=0, n_samples=0, log_every=1, out=str(out), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def one_line_exit_2(r, *words):
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, (w, r.output)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("safety") / "R"
    train(tiny(out, steps=6))
    return out


# ---------------------------------------------------------------------- 2. data loss
def test_saved_config_does_not_replay_run_control(tmp_path, monkeypatch):
    """Case: `--config X/config.toml --steps 10` silently restarted X from step 0 (overwrite = true saved)."""
    x = tmp_path / "X"
    r = runner.invoke(app, ["train", *TOY, "--steps", "4", "--out", str(x), "--overwrite"])
    assert r.exit_code == 0, r.output
    text = (x / "config.toml").read_text()
    keys = set(tomllib.loads(text))
    assert not keys & {"overwrite", "resume", "out"}, keys
    before = (x / "checkpoint.pt").read_bytes()
    monkeypatch.chdir(tmp_path)  # the re-run goes to runs/<sde>-<data> here, never into X
    r = runner.invoke(app, ["train", "--config", str(x / "config.toml"), "--steps", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert (x / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(tmp_path / "runs" / "hold-moons")["step"] == 2
    # a config written by kinetic 0.1.0 holds overwrite = true: refused, not replayed
    (tmp_path / "old.toml").write_text(text + "overwrite = true\n")
    r = runner.invoke(app, ["train", "--config", str(tmp_path / "old.toml"), "--out", str(x), "--quiet"])
    one_line_exit_2(r, "overwrite")
    assert (x / "checkpoint.pt").read_bytes() == before
    with pytest.raises(ConfigError, match="overwrite"):
        TrainConfig.load(tmp_path / "old.toml")


def test_second_run_on_the_same_directory_is_refused(tmp_path):
    """Case: two trainings on one --out both exited 0 and mixed their files."""
    out = tmp_path / "L"
    seen = {}

    def cb(info):
        if info["event"] == "step" and info["step"] == 2:
            with pytest.raises(RunDirInUse, match=f"pid {os.getpid()}"):
                train(tiny(out, steps=3, overwrite=True))
            seen["lock"] = (out / ".lock").read_text().strip()

    train(tiny(out, steps=4), callback=cb)
    assert seen["lock"] == str(os.getpid())
    assert not (out / ".lock").exists()  # removed on exit
    # a lock left by a dead process is taken over
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (out / ".lock").write_text(dead.stdout)
    assert train(tiny(out, steps=6, resume=True))["step"] == 6


def test_out_with_dotdot_is_resolved_visibly(tmp_path):
    """Case: `out` with `..` wrote somewhere the user did not see."""
    (tmp_path / "a").mkdir()
    s = train(tiny(tmp_path / "a" / ".." / "b", steps=1))
    assert s["out"] == str((tmp_path / "b").resolve()) and ".." not in s["checkpoint"]
    r = runner.invoke(app, ["train", *TOY[:-1], "--steps", "1", "--out", str(tmp_path / "a" / ".." / "c")])
    assert r.exit_code == 0, r.output
    assert f"run directory: {(tmp_path / 'c').resolve()}" in r.output


@pytest.mark.parametrize("cmd", ["sample", "evaluate"])
def test_output_path_checked_before_the_work(run, tmp_path, monkeypatch, cmd):
    """Case: `sample --out <unwritable>/s.npz`, `evaluate --json <unwritable>` failed after all the computing."""
    import kinetic.evaluation as ev

    (tmp_path / "file").write_text("x")
    monkeypatch.setattr(ev, "draw", lambda *a, **k: pytest.fail("sampled before checking the output path"))
    opt = "--out" if cmd == "sample" else "--json"
    r = runner.invoke(app, [cmd, "-c", str(run), opt, str(tmp_path / "file" / "s.npz"), "--quiet"])
    one_line_exit_2(r, opt, "cannot write", "a part of the path is a file")


def test_stale_temp_files_are_removed(tmp_path):
    """Case: `.checkpoint.pt.*.tmp` left by a SIGKILL stayed in the run directory forever."""
    out = tmp_path / "S"
    (out / "samples").mkdir(parents=True)
    stale = [out / ".checkpoint.pt.k3j4h5l6.tmp", out / ".loss.png.a8b7c6d5.tmp", out / "samples" / ".step_0000001.png.zzzzzzzz.tmp"]
    for f in stale:
        f.write_bytes(b"partial")
    (out / "notes.tmp").write_text("mine")  # not kinetic's: kept
    s = train(tiny(out, steps=1))
    assert sorted(s["stale_removed"]) == sorted(str(f.resolve()) for f in stale)
    assert not any(f.exists() for f in stale) and (out / "notes.tmp").exists()


def test_resume_takes_the_runs_own_config(run, tmp_path):
    """Case: the interrupt hint `kinetic train --out R --resume` rebuilt a different model (digits/unet)."""
    import shutil

    r_dir = tmp_path / "R"
    shutil.copytree(run, r_dir)
    r = runner.invoke(app, ["train", "--out", str(r_dir), "--resume", "--steps", "8", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(r_dir)["step"] == 8
    r = runner.invoke(app, ["train", "--out", str(r_dir), "--resume", "--steps", "9", "--data", "digits", "--quiet"])
    one_line_exit_2(r, "--resume", "--data", "digits")
    with pytest.raises(CheckpointError, match="lr"):  # the library refuses unsafe changes too
        train(tiny(r_dir, steps=10, resume=True, lr=0.5))


def test_resume_with_fewer_steps_says_so_and_keeps_the_config(run, tmp_path):
    """Case: `--resume --steps 20` on a run at step 60 exited 0, did nothing, rewrote config.toml."""
    before = (run / "config.toml").read_bytes()
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "3", "--quiet"])
    one_line_exit_2(r, "--steps", "already at step 6")
    assert (run / "config.toml").read_bytes() == before and load_checkpoint(run)["step"] == 6


def test_resume_and_overwrite_together_is_a_usage_error(run):
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--overwrite", "--steps", "9", "--quiet"])
    one_line_exit_2(r, "--resume", "--overwrite")
    with pytest.raises(ConfigError, match="exclude") as e:
        TrainConfig(resume=True, overwrite=True)
    assert e.value.field == "overwrite"


# ---------------------------------------------------------------------- 4. one line, exit 2
def test_bad_output_directories_are_one_line(tmp_path):
    """Cases: --out under a file, a 5000-character --out (raw OSErrors before)."""
    (tmp_path / "afile").write_text("x")
    r = runner.invoke(app, ["train", *TOY, "--steps", "1", "--out", str(tmp_path / "afile" / "run")])
    one_line_exit_2(r, "--out", "is a file")
    r = runner.invoke(app, ["train", *TOY, "--steps", "1", "--out", str(tmp_path / ("a" * 5000))])
    one_line_exit_2(r, "--out", "characters cut")
    assert len(r.output) < 1200


def test_output_directory_unwritable_mid_run_keeps_the_checkpoint(tmp_path, monkeypatch):
    """Case: an output directory made unwritable mid-run gave a raw OSError; the state must survive."""
    import kinetic.checkpoint as ck

    out = tmp_path / "U"
    real = ck.atomic_write

    def cb(info):
        if info["event"] == "step" and info["step"] == 3:
            def refuse(path, write):
                if Path(path).parent == out.resolve():
                    raise PermissionError(13, "Permission denied", str(path))
                return real(path, write)

            monkeypatch.setattr(ck, "atomic_write", refuse)

    with pytest.raises(RunDirError, match="Permission denied.*step 2 is kept.*state at step 4 was saved to") as e:
        train(tiny(out, steps=6, ckpt_every=2), callback=cb)
    assert load_checkpoint(out)["step"] == 2  # the last good checkpoint is intact
    rescue = Path(str(e.value).split("saved to ")[1].split(" (")[0])
    assert load_checkpoint(rescue)["step"] == 4
    assert not (out / ".lock").exists()


def test_info_overflow_and_binary_config_are_one_line(tmp_path):
    """Cases: `info --param beta=1e308` (OverflowError), `train --config <binary file>` (UnicodeDecodeError),
    a config path that is a directory ("does not exist")."""
    one_line_exit_2(runner.invoke(app, ["info", "--param", "beta=1e308"]), "--param", "overflow")
    (tmp_path / "bin.toml").write_bytes(bytes(range(256)))
    one_line_exit_2(runner.invoke(app, ["train", "--config", str(tmp_path / "bin.toml")]), "--config", "not a text file")
    one_line_exit_2(runner.invoke(app, ["train", "--config", str(tmp_path)]), "--config", "is a directory")


def test_unbounded_sampling_requests_are_one_line(run):
    """Cases: `sample --steps 100000000` (23.8 GB, OOM-killed), `--n 100000000000` (allocator error),
    `--n 99999999999999999999999` (raw randn error)."""
    one_line_exit_2(runner.invoke(app, ["sample", "-c", str(run), "--n", "8", "--steps", "100000000", "--quiet"]),
                    "steps", "100000")
    for n in ("100000000000", "99999999999999999999999"):
        one_line_exit_2(runner.invoke(app, ["sample", "-c", str(run), "--n", n, "--quiet"]), f"n={n}", "memory")


# ---------------------------------------------------------------------- 5. silent misreads
@pytest.mark.parametrize("line, word", [('denoise = "no"', "true or false"), ("steps = 2.5", "an integer"),
                                        ('n = "many"', "an integer")])
def test_config_file_types_are_checked_like_flags(run, tmp_path, line, word):
    """Cases: `denoise = "no"` turned denoising on, `steps = 2.5` ran 2 steps, `n = "many"` said int()."""
    (tmp_path / "s.toml").write_text(line + "\n")
    r = runner.invoke(app, ["sample", "-c", str(run), "--config", str(tmp_path / "s.toml"), "--quiet"])
    one_line_exit_2(r, line.split(" ")[0], word)


def test_config_metric_string_and_directory(run, tmp_path):
    """Cases: `metric = "nll"` (a string) said "got 'n'"; a config directory said "does not exist"."""
    (tmp_path / "e.toml").write_text('metric = "swd"\nn = 20\nsteps = 2\nsolver = "em"\n')
    r = runner.invoke(app, ["evaluate", "-c", str(run), "--config", str(tmp_path / "e.toml"), "--json",
                            str(tmp_path / "r.json"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert list(json.loads((tmp_path / "r.json").read_text())["metrics"]) == ["swd"]
    one_line_exit_2(runner.invoke(app, ["sample", "-c", str(run), "--config", str(tmp_path), "--quiet"]),
                    "--config", "is a directory")


def test_non_finite_data_and_weights_are_named(run, tmp_path):
    """Case: NaN inputs or NaN weights were blamed on t."""
    from kinetic.training import Trainer

    data = torch.randn(64, 2)
    data[5, 1] = float("nan")
    with pytest.raises(ConfigError, match="data has non-finite values.*1 of its 64") as e:
        Trainer.from_config(tiny(tmp_path / "n"), data=data)
    assert e.value.field == "data"
    ck = load_checkpoint(run)
    key = next(iter(ck["ema"]))
    ck["ema"][key] = ck["ema"][key] * float("nan")
    bad = tmp_path / "nan.pt"
    torch.save(ck, bad)
    with pytest.raises(CheckpointError, match=f"non-finite ema weights \\({key}"):
        load_model(bad)
    one_line_exit_2(runner.invoke(app, ["sample", "-c", str(bad), "--quiet"]), "non-finite")


def test_hostile_values_are_truncated_and_pickles_refused_plainly(run, tmp_path):
    """Cases: error lines echoed a 1 MB value; a malicious checkpoint repeated torch's weights_only=False hint."""
    r = runner.invoke(app, ["train", "--sde", "b" * 100_000, "--quiet"])
    one_line_exit_2(r, "--sde", "characters")
    assert len(r.output) < 1200
    torch.save({"x": torch.nn.Linear(2, 2)}, tmp_path / "mal.pt")
    r = runner.invoke(app, ["sample", "-c", str(tmp_path / "mal.pt"), "--quiet"])
    one_line_exit_2(r, "not a kinetic checkpoint", "never unpickles")
    assert "weights_only" not in r.output
    for junk in (bytes(range(256)) * 16, b"\x88" + bytes(4095), b"PK\x03\x04" + bytes(100)):  # not even a pickle
        (tmp_path / "junk.pt").write_bytes(junk)
        r = runner.invoke(app, ["sample", "-c", str(tmp_path / "junk.pt"), "--quiet"])
        one_line_exit_2(r, "not a kinetic checkpoint")
        assert "weights_only" not in r.output


# ---------------------------------------------------------------------- compatibility
def test_checkpoints_written_by_kinetic_0_1_0_still_load_and_resume(run, tmp_path):
    """Format version 1 as main wrote it: config with out/resume/overwrite, history without eval keys."""
    ck = load_checkpoint(run)
    ck["config"].update(out=str(run), resume=False, overwrite=False)
    for k in ("eval_every", "eval_n", "tensorboard"):
        ck["config"].pop(k)
    ck["history"] = {k: ck["history"][k] for k in ("step", "loss", "window")}
    old = tmp_path / "old"
    old.mkdir()
    legacy = {k: v for k, v in ck.items() if k not in ("format", "format_version", "kinetic_version")}
    save_checkpoint(legacy, old / "checkpoint.pt")
    sm, _ = load_model(old)
    assert sm.sde.name == "hold"
    r = runner.invoke(app, ["train", "--out", str(old), "--resume", "--steps", "8", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(old)["step"] == 8


def test_batched_sampling_is_deterministic_and_matches_one_chunk(run, tmp_path):
    """`--batch-size`: the same samples for any n <= batch size as unbatched; chunks seeded per chunk."""
    args = ["sample", "-c", str(run), "--n", "30", "--solver", "em", "--steps", "4", "--quiet"]
    for name, extra in [("a", ["--batch-size", "30"]), ("b", ["--batch-size", "1000"]), ("c", ["--batch-size", "7"]),
                        ("d", ["--batch-size", "7"])]:
        r = runner.invoke(app, args + extra + ["--out", str(tmp_path / f"{name}.npz")])
        assert r.exit_code == 0, r.output
    a, b, c, d = (np.load(tmp_path / f"{k}.npz")["samples"] for k in "abcd")
    assert np.array_equal(a, b) and np.array_equal(c, d) and c.shape == (30, 2)
    assert not np.array_equal(a, c)  # other chunks, other noise
