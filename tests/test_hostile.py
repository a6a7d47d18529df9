"""The second hostile probe: one test per defect, each named after its case; each failed on the code
before the fix (what it did then is in the docstring). The classes are fixed at their root:
`kinetic.fileio` (writes), `kinetic.checks` (devices, seeds, counts, memory), `cli.console`
(markup), and the checks of schedules, SDE inputs, scores and data.
"""

import json
import os
import stat
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import kinetic as kn
from kinetic.checkpoint import CheckpointError, load_checkpoint
from kinetic.cli.app import app
from kinetic.config import ConfigError, TrainConfig
from kinetic.fileio import atomic_write, atomic_write_text
from kinetic.training import train
from kinetic.training.rundir import RunDir

runner = CliRunner()
BARE = ["--data", "moons", "--model", "mlp", "--model-size", "tiny", "--batch-size", "16", "--sample-every", "0",
        "--quiet", "--threads", "1"]
TOY = [*BARE, "--device", "cpu"]


def tiny(out, **kw) -> TrainConfig:
    base = dict(sde="hold", data="moons", data_n=256, model_size="tiny", steps=4, batch_size=16, warmup=1,
                ckpt_every=0, sample_every=0, n_samples=0, log_every=1, out=str(out), device="cpu")
    base.update(kw)
    return TrainConfig(**base)


def one_line(r, code, *words):
    assert r.exit_code == code, r.output
    assert "Traceback" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output
    for w in words:
        assert w in r.output, (w, r.output)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("hostile") / "R"
    train(tiny(out, steps=6))
    return out


def _checks():
    from kinetic import checks  # imported in each test, so that each fails on its own before the fix

    return checks


def _unsafe():
    from kinetic.fileio import UnsafePathError

    return UnsafePathError


def score0(z, t):
    return torch.zeros(z.shape[0], *z.shape[2:], dtype=z.dtype)


# ---------------------------------------------------------------------- serious: links, inputs, special files
def test_1_lock_symlink_is_never_followed(tmp_path):
    """Case: a .lock symlinked to a file made `train` truncate that file and write its pid into it.
    Also: the stale-temp cleaner deleted `.*.tmp` files inside a symlinked samples/ target."""
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "run"
    out.mkdir()
    (out / ".lock").symlink_to(victim)
    with pytest.raises(ConfigError, match="symbolic link"):
        train(tiny(out))
    assert victim.read_text() == "precious"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    keep = elsewhere / ".x.png.abcdefgh.tmp"
    keep.write_text("not ours")
    out2 = tmp_path / "run2"
    out2.mkdir()
    (out2 / "samples").symlink_to(elsewhere)
    rd = RunDir(out2)
    rd.clean_stale_temp_files()
    assert keep.exists()


def test_2_output_never_overwrites_an_input(run, tmp_path):
    """Case: `evaluate -c R --json R/checkpoint.pt` replaced the checkpoint with JSON (exit 0); an
    existing file kinetic did not write (a config, a text file) was replaced too."""
    before = (run / "checkpoint.pt").read_bytes()
    for target in (run / "checkpoint.pt", run / "config.toml"):
        r = runner.invoke(app, ["evaluate", "-c", str(run), "--json", str(target), "--n", "20", "--quiet"])
        one_line(r, 2, "--json", "input of this command")
    assert (run / "checkpoint.pt").read_bytes() == before
    note = tmp_path / "notes.json"
    note.write_text("my notes, not JSON")
    r = runner.invoke(app, ["evaluate", "-c", str(run), "--json", str(note), "--n", "20", "--quiet"])
    one_line(r, 2, "--json", "not replaced")
    assert note.read_text() == "my notes, not JSON"
    r = runner.invoke(app, ["sample", "-c", str(run), "--out", str(run / "checkpoint.pt.npz"), "--n", "4", "--quiet"])
    assert r.exit_code == 0, r.output  # a new path is fine


def test_3_atomic_write_refuses_links_and_special_files(tmp_path):
    """Case: `--json /dev/full` as root replaced the device with a regular file; a symlinked --json
    was replaced (its target left stale); a FIFO --out was replaced."""
    target = tmp_path / "target.json"
    target.write_text("{}")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    with pytest.raises(_unsafe(), match="symbolic link"):
        atomic_write_text(link, "{}")
    assert link.is_symlink()
    fifo = tmp_path / "f.npz"
    os.mkfifo(fifo)
    with pytest.raises(_unsafe(), match="FIFO"):
        atomic_write_text(fifo, "x")
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    r = runner.invoke(app, ["evaluate", "-c", "nowhere", "--json", "/dev/full"])
    one_line(r, 2, "--json", "device")


# ---------------------------------------------------------------------- resources
def test_4_train_has_a_memory_guard(tmp_path):
    """Case: `train --batch-size 100000000` was killed by the kernel at 24 GB after 103 s, leaving
    config.toml and samples/ behind."""
    out = tmp_path / "big"
    r = runner.invoke(app, ["train", *TOY, "--steps", "2", "--batch-size", "100000000", "--out", str(out)])
    one_line(r, 2, "--batch-size", "GiB")
    assert not out.exists()


def test_5_threads_and_seeds_bounded_above():
    """Case: `--threads 100000` segfaulted (exit 139); `steps = 10**30` and other counts had no upper
    bound (seeds: test 12)."""
    r = runner.invoke(app, ["sample", "-c", "nowhere", "--threads", "100000"])
    one_line(r, 2, "--threads", str(_checks().max_threads()))
    with pytest.raises(ValueError, match="threads"):
        _checks().check_threads(_checks().max_threads() + 1)
    assert _checks().check_threads(1) == 1
    for field in ("steps", "log_every", "eval_n"):  # every other count is bounded above too
        with pytest.raises(ConfigError, match=rf"{field} must be an integer in \[\d, 2\*\*53\]"):
            TrainConfig(**{field: 10**30})


def test_6_full_disk_is_one_line_naming_the_path(tmp_path, monkeypatch):
    """Case: a full disk while training gave torch's two chained "enforce fail at
    inline_container.cc" tracebacks; sample said "No space left" without the path after the work."""
    import kinetic.fileio as fileio

    def torch_fails(tmp):
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 64 vs 0")

    monkeypatch.setattr(fileio, "_free_bytes", lambda folder: 1000)
    with pytest.raises(OSError, match="no space left on the disk that holds") as e:
        atomic_write(tmp_path / "c.pt", torch_fails)
    assert e.value.filename == str(tmp_path / "c.pt")
    assert not list(tmp_path.iterdir())  # no temp left
    r = runner.invoke(app, ["sample", "-c", "nowhere", "--out", str(tmp_path / "s.npz")])
    one_line(r, 2, "no space left", str(tmp_path))


def test_6_sample_checks_the_output_size_before_the_work(run, tmp_path, monkeypatch):
    """Where the size is known (n samples of the run's data shape), sample refuses a disk that cannot
    hold them before sampling, naming --out and the MiB needed; a disk that can, samples."""
    import kinetic.evaluation
    import kinetic.fileio as fileio

    def no_sampling(*args, **kwargs):  # the refusal must come before any sampling
        raise AssertionError("sampled before checking the disk")

    monkeypatch.setattr(fileio, "_free_bytes", lambda folder: 3 * 2**20)  # 3 MiB free: above MIN_FREE
    with monkeypatch.context() as m:
        m.setattr(kinetic.evaluation, "generate", no_sampling)
        r = runner.invoke(app, ["sample", "-c", str(run), "--n", "1000000", "--out", str(tmp_path / "s.npz")])
    one_line(r, 2, "no space left", "MiB needed")
    r = runner.invoke(app, ["sample", "-c", str(run), "--n", "8", "--steps", "2", "--out", str(tmp_path / "s.npz"),
                            "--quiet"])
    assert r.exit_code == 0, r.output


# ---------------------------------------------------------------------- one clear line
def test_7_user_strings_are_never_rich_markup(run, tmp_path):
    """Case: `--out 'a[/]b.npz'` wrote the file then exited 1 with a MarkupError; `'x[bold]y.npz'`
    was shown as "xy.npz"; `--config` help lost "[sample]"; `sample = 5` said ":  must be a table"."""
    for name in ("a[/]b.npz", "x[bold]y.npz"):
        r = runner.invoke(app, ["sample", "-c", str(run), "--out", str(tmp_path / name), "--n", "4", "--quiet"])
        assert r.exit_code == 0, r.output
        assert name in r.output.replace("\n", ""), r.output
    r = runner.invoke(app, ["sample", "--help"], env={"COLUMNS": "250"})
    assert "[sample]" in r.output
    cfg = tmp_path / "c.toml"
    cfg.write_text("sample = 5\n")
    r = runner.invoke(app, ["sample", "-c", str(run), "--config", str(cfg)])
    one_line(r, 2, "[sample] must be a table")


def test_8_misspelt_config_sections_refused(run, tmp_path):
    """Case: `[sampel]`, `[Sample]`, `[evaluat]` were silently ignored."""
    for sec in ("sampel", "Sample", "evaluat"):
        cfg = tmp_path / f"{sec}.toml"
        cfg.write_text(f"[{sec}]\nn = 5\n")
        r = runner.invoke(app, ["sample", "-c", str(run), "--config", str(cfg)])
        one_line(r, 2, "unknown section", f"[{sec}]")


def test_9_unwritable_cache_is_a_warning(tmp_path, monkeypatch):
    """Case: an unwritable cache (HOME read-only, KINETIC_CACHE at /proc or at a file) made
    `evaluate --metric fd-digits` exit 2."""
    from kinetic.fileio import CacheWarning
    from kinetic.metrics import digits_classifier as dc

    afile = tmp_path / "afile"
    afile.write_text("x")
    monkeypatch.setattr(dc, "_MEMO", {})
    with pytest.warns(CacheWarning, match="not cached"):
        clf = dc.load_digits_classifier(afile)
    assert clf.path is None and clf.test_accuracy > 0.8


def test_10_per_class_without_value_says_why_and_json_is_valid(tmp_path):
    """Case: fd-digits-per-class on too few samples reported `nan`, exit 0, and its JSON held a bare
    NaN that strict parsers reject."""
    from kinetic.fileio import json_text
    from kinetic.metrics.conditional import per_class_mean

    res = per_class_mean({}, torch.arange(5))
    assert res["value"] is None and "2 samples" in res["reason"]
    text = json_text({"metrics": {"m": float("nan"), "l": [float("inf"), 1.0]}})
    parsed = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert parsed == {"metrics": {"m": None, "l": [None, 1.0]}}


@pytest.mark.parametrize("device", ["mps", "cuda:-1", "nonsense", "meta", "cpu:3"])
def test_11_one_device_parser(device, tmp_path):
    """Case: `--device mps` gave a traceback in sample and evaluate, `train --device cuda:-1` too;
    train and sample accepted different strings; the API surfaced raw torch errors."""
    with pytest.raises(ValueError, match="device"):
        _checks().parse_device(device)
    with pytest.raises(ValueError, match="device"):
        kn.sample(kn.hold(), score0, (2, 2), steps=2, device=device)
    r = runner.invoke(app, ["sample", "-c", "nowhere", "--device", device, "--n", "2"])
    assert r.exit_code == 2 and "Traceback" not in r.output
    r = runner.invoke(app, ["train", *BARE, "--device", device, "--steps", "2", "--out", str(tmp_path / "d")])
    one_line(r, 2, "--device")
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_11b_cuda_without_gpu_leaves_no_run_directory(tmp_path):
    """Case: `train --device cuda` on a CPU machine left an empty run directory; `device='cuda'` in
    the API gave an AssertionError."""
    r = runner.invoke(app, ["train", *BARE, "--device", "cuda", "--steps", "2", "--out", str(tmp_path / "c")])
    one_line(r, 2, "--device", "no CUDA")
    assert not (tmp_path / "c").exists()
    with pytest.raises(ValueError, match="no CUDA"):
        kn.sample(kn.hold(), score0, (2, 2), steps=2, device="cuda")


def test_12_seeds_bounded_and_named(run, tmp_path):
    """Case: `train --seed 4294967296` gave a traceback (numpy's 32-bit seed); `sample --seed
    99999999999999999999` said "Overflow when unpacking long long" with no option named."""
    r = runner.invoke(app, ["sample", "-c", str(run), "--seed", "99999999999999999999", "--n", "2"])
    one_line(r, 2, "seed", "2**63")
    train(tiny(tmp_path / "s", steps=1, seed=4294967296))
    with pytest.raises(ConfigError, match="seed"):
        tiny(tmp_path / "t", seed=2**63)


def test_13_interrupt_message_tells_the_checkpoint(run, monkeypatch):
    """Case: three SIGINTs 50 ms apart printed "interrupted before training started; nothing
    written", although a checkpoint existed."""
    import kinetic.training

    def interrupted(cfg, callback=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(kinetic.training, "train", interrupted)
    r = runner.invoke(app, ["train", "--out", str(run), "--resume", "--steps", "50", "--quiet", "--threads", "1"])
    assert r.exit_code == 130, r.output
    assert "nothing written" not in r.output
    assert "checkpoint (step 6) is kept" in r.output and "--resume" in r.output


def _folder(root: Path, seed: int) -> Path:
    from PIL import Image

    (root / "a").mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(4):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(root / "a" / f"{i}.png")
    return root


def test_14_data_dir_resolved_and_fingerprinted(tmp_path, monkeypatch):
    """Case: a relative --data-dir was stored relative; a run copied elsewhere and resumed there
    silently trained on another folder's images."""
    monkeypatch.chdir(tmp_path)
    _folder(tmp_path / "imgs", 0)
    cfg = tiny(tmp_path / "F", data="folder", data_dir="imgs", resolution=8, data_n=None, steps=2)
    assert cfg.data_dir == str(tmp_path / "imgs")
    train(cfg)
    for f in (tmp_path / "imgs" / "a").iterdir():  # the same folder, other images
        f.unlink()
    _folder(tmp_path / "imgs2", 1)
    for f in (tmp_path / "imgs2" / "a").iterdir():
        f.rename(tmp_path / "imgs" / "a" / f.name)
    with pytest.raises(kn.data.DataError, match="not the data"):
        train(cfg.replace(steps=4, resume=True))


def test_15_complex_and_non_floating_inputs_refused():
    """Case: `LinearSDE(np.array([[-1+2j]]), [[1.0]])` built a real SDE with only a UserWarning; a
    complex, int64 or bool score output was cast silently."""
    with pytest.raises(TypeError, match="drift must be real"):
        kn.LinearSDE(np.array([[-1 + 2j]]), [[1.0]])
    with pytest.raises(TypeError, match="diffusion must be real"):
        kn.LinearSDE([[-1.0]], torch.tensor([[1.0 + 1j]]))
    for dt in (torch.complex64, torch.int64, torch.bool):
        with pytest.raises(TypeError, match="real floating"):
            kn.sample(kn.vp(), lambda z, t, dt=dt: torch.zeros(z.shape[0], 2, dtype=dt), (2, 2), steps=2)


def test_16_custom_schedules_checked():
    """Case: `CustomSchedule(beta=1, B=-t)` gave covariance(0.5) = -0.859; B(0) != 0 was accepted;
    a negative beta between the 33 check points went unseen."""
    from kinetic.schedules import CustomSchedule

    one = torch.ones_like
    cases = [
        ((one, lambda t: -t), "B(t) must be increasing"),
        ((one, lambda t: t + 1), "B(0) must be 0"),
        ((lambda t: 1 - 2.0 * ((t - 0.5017).abs() < 1e-3), lambda t: t),  # negative between the old 33 points
         "beta(t) must be finite and positive"),
        ((one, lambda t: 2 * t), "integral of beta"),
    ]
    for (beta, B), words in cases:
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            kn.LinearSDE([[-1.0]], [[1.0]], schedule=CustomSchedule(beta, B))
    sde = kn.LinearSDE([[-1.0]], [[1.0]], schedule=CustomSchedule(lambda t: 2 * t + 1, lambda t: t * t + t))
    assert sde.order == 1


def test_17_generator_and_score_device_checked():
    """Case: `generator=5` reached torch's randn overload dump; a score on another device (meta
    included) reached torch."""
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        kn.sample(kn.vp(), score0, (2, 2), steps=2, generator=5)
    with pytest.raises(ValueError, match="device"):
        kn.sample(kn.vp(), lambda z, t: torch.zeros(z.shape[0], 2, device="meta"), (2, 2), steps=2)


def test_18_skipped_steps_bounded(tmp_path):
    """Case: skip_nonfinite with lr 1e4 skipped 194 of 200 steps, exit 0, and no line said so."""
    assert _checks().skipped_steps_verdict(194, 200)[1]
    msg, stop = _checks().skipped_steps_verdict(20, 200)
    assert msg and not stop and "20 of the 200" in msg
    assert _checks().skipped_steps_verdict(0, 200) == (None, False)
    cfg = tmp_path / "c.toml"
    cfg.write_text("skip_nonfinite = true\nlr = 1e4\n")
    r = runner.invoke(app, ["train", *TOY, "--config", str(cfg), "--steps", "200", "--out", str(tmp_path / "s")])
    assert r.exit_code == 1, r.output
    assert "not training" in r.output and "skip_nonfinite" in r.output


def test_19_log_likelihood_checks_data_magnitude():
    """Case: log_likelihood under HOLD with x = 1e30 blamed the score and the tolerances."""
    with pytest.raises(ValueError, match="magnitude"):
        kn.log_likelihood(kn.hold(), score0, torch.full((2, 2), 1e30))
    with pytest.raises(ValueError, match="magnitude"):
        kn.log_likelihood(kn.hold(), score0, torch.full((2, 2), 1e3, dtype=torch.float16))


def test_20_truncated_and_empty_checkpoints_named(run, tmp_path):
    """Case: a truncated checkpoint was "not a kinetic checkpoint" in a message cut mid-sentence; a
    0-byte file gave "EOFError"."""
    data = (run / "checkpoint.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "e.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match="truncated") as e:
        load_checkpoint(tmp_path / "t.pt")
    assert str(e.value).endswith("cut off")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "e.pt")
    r = runner.invoke(app, ["sample", "-c", str(tmp_path / "e.pt")])
    one_line(r, 2, "empty (0 bytes)")


def test_21_stale_temps_of_every_output_are_cleaned(run, tmp_path):
    """Case: a SIGKILL during sample's PNG write left a 0-byte `.s.png.XXXX.tmp` that no later run
    cleaned."""
    stale = tmp_path / ".s.png.abc123xy.tmp"
    stale.write_bytes(b"")
    old = time.time() - 3600
    os.utime(stale, (old, old))
    fresh = tmp_path / ".s.png.zzz999qq.tmp"  # a write in progress elsewhere: left alone
    fresh.write_bytes(b"")
    r = runner.invoke(app, ["sample", "-c", str(run), "--out", str(tmp_path / "s.png"), "--n", "4", "--quiet"])
    assert r.exit_code == 0, r.output
    assert not stale.exists() and fresh.exists() and (tmp_path / "s.png").is_file()


def test_22_sixteen_bit_png_scaled_by_bit_depth(tmp_path):
    """Case: a 16-bit PNG (I;16) loaded as nearly white (mean 0.994 on the [-1, 1] scale)."""
    from PIL import Image

    from kinetic.data import load_image_folder

    (tmp_path / "a").mkdir()
    Image.fromarray(np.full((8, 8), 16384, dtype=np.uint16)).save(tmp_path / "a" / "x.png")
    assert Image.open(tmp_path / "a" / "x.png").mode.startswith("I")
    x = load_image_folder(tmp_path, resolution=8, channels=1)
    expected = round(16384 * 255 / 65535) / 127.5 - 1  # a quarter of the range: about -0.5
    assert abs(float(x.mean()) - expected) < 1e-6
