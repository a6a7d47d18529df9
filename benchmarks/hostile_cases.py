"""Replay the hostile-user cases (both robustness probes: data loss, hangs, tracebacks, misreads) against this tree.

    python benchmarks/hostile_cases.py [--out docs/figures/hostile_cases.md]

Every case runs the real CLI in a subprocess (with a time and memory limit) or the API in a child
Python, in a scratch directory, and records what it does now: the exit code, whether a traceback
was printed, the first line of the message and the wall time. The table is what the note of the
issue lists; `tests/test_run_safety.py` and `tests/test_hostile.py` (the second probe, rows "r2.N" for its
defect N) hold one assertion per case.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

TIME_LIMIT = 300  # seconds per case
MEMORY_LIMIT = 6 * 2**30  # bytes of address space per case


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run(cmd: list[str] | str, cwd: Path, py: bool = False, env: dict | None = None) -> dict:
    """Run one case; `py`: cmd is Python source for a child interpreter."""
    argv = [sys.executable, "-c", cmd] if py else [sys.executable, "-c", "from kinetic.cli.app import main; main()", *cmd]
    env = {"PYTHONWARNINGS": "ignore", **(os.environ if env is None else env), "COLUMNS": "200"}
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=TIME_LIMIT, env=env,
                           preexec_fn=_limits)
        rc, out = p.returncode, (p.stderr + p.stdout)
    except subprocess.TimeoutExpired:
        rc, out = "timeout", ""
    lines = [ln.strip(" │╭╮╰╯─") for ln in out.splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= set("─╭╮╰╯│ ")]
    msg = next((ln for ln in lines if ln.startswith(("Error", "error", "ValueError", "TypeError"))), None)
    msg = msg or (lines[-1] if lines else "")
    return {"rc": rc, "traceback": "Traceback (most recent call last)" in out, "message": msg[:160], "lines": lines,
            "seconds": time.perf_counter() - t0}


def _step(run_dir: Path) -> int:
    from kinetic.checkpoint import load_checkpoint

    return int(load_checkpoint(run_dir)["step"])


def cases(d: Path) -> list[tuple]:
    """(section, case, command, is_python) in the order of the issue; R is a small moons run."""
    R = str(d / "R")
    binary = d / "binary.toml"
    base = ["train", "--data", "moons", "--model", "mlp", "--steps", "20", "--threads", "1", "--quiet"]

    def cfg(name: str, text: str) -> str:
        (d / name).write_text(text)
        return str(d / name)

    return [
        ("1", "langevin(8).cholesky at t = 0.01", "import kinetic as kn, torch; "
         "print(kn.langevin(8).cholesky(torch.tensor([0.01], dtype=torch.float64)).shape)", True),
        ("1", "train --order 9", ["train", "--order", "9", "--data", "moons", "--model", "mlp", "--steps", "2",
                                 "--threads", "1", "--quiet", "--out", str(d / "o9")], False),
        ("1", "train --order 1000", ["train", "--order", "1000", "--data", "moons", "--steps", "2",
                                    "--out", str(d / "o1000")], False),
        ("1", "drift with positive eigenvalue", "import kinetic as kn, torch; "
         "kn.LinearSDE(torch.tensor([[0.5]]), torch.tensor([[1.0]]))", True),
        ("1", "transition(s, t) with s > t", "import kinetic as kn, torch; "
         "T = kn.hold().transition(torch.tensor([0.5]), torch.tensor([0.2])); print('backward map', tuple(T.shape))",
         True),
        ("2", "--config X/config.toml replays overwrite", ["train", "--config", f"{R}/config.toml", "--steps", "10",
                                                          "--threads", "1", "--quiet"], False),
        ("2", "second training on the same --out", "SECOND", False),
        ("2", "sample --out <a file>/s.npz (unwritable)", ["sample", "-c", R, "--n", "8", "--steps", "5",
                                                  "--out", str(d / "afile" / "s.npz")], False),
        ("2", "evaluate --json <a file>/e.json (unwritable)", ["evaluate", "-c", R, "--n", "64", "--steps", "5",
                                               "--json", str(d / "afile" / "e.json")], False),
        ("2", "stale .checkpoint.pt.*.tmp after SIGKILL", "STALE", False),
        ("2", "train --out R --resume (the interrupt hint)", ["train", "--out", R, "--resume", "--steps", "80",
                                                             "--threads", "1", "--quiet"], False),
        ("2", "--resume --steps 20 on a run past it", ["train", "--out", R, "--resume", "--steps", "5",
                                                       "--threads", "1", "--quiet"], False),
        ("2", "--resume --overwrite", ["train", "--out", R, "--resume", "--overwrite"], False),
        ("3", "log_likelihood with a NaN score", "import kinetic as kn, torch; "
         "kn.log_likelihood(kn.vp(), lambda z, t: z[:, 0] * float('nan'), torch.randn(4, 2))", True),
        ("3", "sample --steps 100000000", ["sample", "-c", R, "--n", "8", "--steps", "100000000",
                                           "--out", str(d / "s1.npz")], False),
        ("3", "sample --n 100000 --batch-size 1000", ["sample", "-c", R, "--n", "100000", "--steps", "5",
                                                      "--batch-size", "1000", "--out", str(d / "big.npz")], False),
        ("4", "info --param beta=1e308", ["info", "--sde", "vp", "--param", "beta_max=1e308"], False),
        ("4", "train --out <a file>/run", [*base, "--out", str(d / "afile" / "run")], False),
        ("4", "train --out <read-only dir> (/proc)", [*base, "--out", "/proc/kinetic-run"], False),
        ("4", "train --out <5000 characters>", [*base, "--out", str(d / ("x" * 5000))], False),
        ("4", "train --config <binary file>", ["train", "--config", str(binary)], False),
        ("4", "sample --n 100000000000", ["sample", "-c", R, "--n", "100000000000", "--steps", "5",
                                          "--out", str(d / "s2.npz")], False),
        ("4", "sample --n 99999999999999999999999", ["sample", "-c", R, "--n", "99999999999999999999999",
                                                     "--out", str(d / "s3.npz")], False),
        ("5", 'sample config denoise = "no"', ["sample", "-c", R, "--config", cfg("d.toml", 'denoise = "no"\n'),
                                               "--out", str(d / "s4.npz")], False),
        ("5", "sample config steps = 2.5", ["sample", "-c", R, "--config", cfg("s.toml", "steps = 2.5\n"),
                                            "--out", str(d / "s5.npz")], False),
        ("5", 'sample config n = "many"', ["sample", "-c", R, "--config", cfg("n.toml", 'n = "many"\n'),
                                           "--out", str(d / "s6.npz")], False),
        ("5", 'evaluate config metric = "nll"', ["evaluate", "-c", R, "--n", "32", "--config",
                                                   cfg("m.toml", 'metric = "nll"\n')],
         False),
        ("5", "config path is a directory", ["sample", "-c", R, "--config", str(d), "--out", str(d / "s7.npz")], False),
        ("5", "NaN training data blamed on t", "import kinetic as kn, torch; from kinetic.training import Trainer; "
         "d = torch.randn(64, 2); d[5, 1] = float('nan'); "
         "Trainer.from_config(kn.TrainConfig(data='moons', model='mlp', steps=2, out='nan-run'), data=d)", True),
        ("5", "NaN weights in a checkpoint", ["sample", "-c", str(d / "nan.pt"), "--out", str(d / "s9.npz")], False),
        ("5", "100 kB hostile value echoed", ["sample", "-c", R, "--solver", "x" * 100_000], False),
        ("5", "random bytes as a checkpoint", ["sample", "-c", str(d / "junk.pt"), "--out", str(d / "s8.npz")], False),
        ("5", "score that does not depend on z (exact divergence)", "import kinetic as kn, torch; "
         "kn.log_likelihood(kn.vp(), lambda z, t: torch.zeros(z.shape[0], 2), torch.randn(4, 2), exact_divergence=True)", True),
        ("5", "log_likelihood score returns a list", "import kinetic as kn, torch; "
         "kn.log_likelihood(kn.vp(), lambda z, t: [z], torch.randn(4, 2))", True),
        ("5", "empty batch", "import kinetic as kn, torch; kn.vp().perturb(torch.zeros(0, 2), torch.zeros(0))", True),
        ("5", "0 x 0 drift", "import kinetic as kn, torch; kn.LinearSDE(torch.zeros(0, 0), torch.zeros(0, 0))", True),
        ("5", "inception file with a wrong hash", "import kinetic.metrics.fid as f, pathlib; "
         "p = pathlib.Path('inception-2015-12-05.pt'); p.write_bytes(b'not torchscript'); f.load_inception(p)", True),
        *round2(d, R, base),
    ]


def _intact(run_dir: Path) -> str:
    try:
        return f"checkpoint intact (step {_step(run_dir)})"
    except Exception:  # noqa: BLE001 - the case is what is reported
        return "checkpoint LOST"


def _unchanged(path: Path, text: str) -> str:
    return f"{path.name} unchanged" if path.read_text() == text else f"{path.name} CHANGED"


def round2(d: Path, R: str, base: list[str]) -> list[tuple]:
    """The second probe's cases ("r2.N": its defect N), with members of each class; a fifth
    element is a check run afterwards, whose words are added to the message."""
    py = "import kinetic as kn, torch, numpy as np; "
    sc = "lambda z, t: torch.zeros(z.shape[0], 2)"
    j = str(d / "r2")
    ev = ["evaluate", "-c", R, "--n", "32", "--steps", "3", "--quiet"]
    sa = ["sample", "-c", R, "--n", "8", "--steps", "3", "--quiet"]

    def cfg(name: str, text: str) -> str:
        (d / name).write_text(text)
        return str(d / name)

    return [
        ("r2.1", "train with .lock -> symlink to a file", [*base, "--out", f"{j}/L"], False,
         lambda: _unchanged(d / "victim.txt", "precious")),
        ("r2.1", "train with samples/ -> symlink holding .*.tmp", [*base, "--out", f"{j}/S"], False,
         lambda: "foreign temp kept" if (d / "foreign" / ".x.png.abcdefgh.tmp").exists() else "foreign temp DELETED"),
        ("r2.2", "evaluate -c R --json R/checkpoint.pt", [*ev, "--json", f"{R}/checkpoint.pt"], False,
         lambda: _intact(Path(R))),
        ("r2.2", "evaluate -c R --json R/config.toml", [*ev, "--json", f"{R}/config.toml"], False),
        ("r2.2", "sample --config c.npz --out c.npz (its own config)", [*sa, "--config", cfg("c.npz", "n = 4\n"),
                                                             "--out", str(d / "c.npz")], False),
        ("r2.2", "evaluate --json <a text file kinetic did not write>", [*ev, "--json", str(d / "notes.json")], False,
         lambda: _unchanged(d / "notes.json", "my notes")),
        ("r2.3", "evaluate --json /dev/full", [*ev, "--json", "/dev/full"], False,
         lambda: "/dev/full still a device" if Path("/dev/full").is_char_device() else "/dev/full REPLACED"),
        ("r2.3", "evaluate --json <symlink>", [*ev, "--json", str(d / "link.json")], False,
         lambda: "link kept" if (d / "link.json").is_symlink() else "link REPLACED"),
        ("r2.3", "sample --out <FIFO>.npz", [*sa, "--out", str(d / "fifo.npz")], False),
        ("r2.4", "train --batch-size 100000000", [*base, "--batch-size", "100000000", "--out", f"{j}/B"], False,
         lambda: "no run directory left" if not (d / "r2" / "B").exists() else "run directory LEFT"),
        ("r2.5", "sample --threads 100000", [*sa, "--threads", "100000"], False),
        ("r2.5", "train --threads 100000", [*base[:-3], "--threads", "100000", "--quiet", "--out", f"{j}/T"], False),
        ("r2.5", "evaluate --threads 0", [*ev, "--threads", "0"], False),
        ("r2.6", "atomic write on a full disk (simulated)", "import kinetic.fileio as f; f._free_bytes = lambda p: 0; "
         "f.atomic_write('x.pt', lambda tmp: (_ for _ in ()).throw(RuntimeError('enforce fail at inline_container.cc')))",
         True),
        ("r2.7", "sample --out 'a[/]b.npz'", [*sa, "--out", str(d / "a[/]b.npz")], False),
        ("r2.7", "sample --out 'x[bold]y.npz'", [*sa, "--out", str(d / "x[bold]y.npz")], False),
        ("r2.7", "sample --help shows [sample]", "from typer.testing import CliRunner; from kinetic.cli.app import app; "
         "r = CliRunner().invoke(app, ['sample', '--help'], env={'COLUMNS': '250'}); "
         "print(next((ln.strip(' │') for ln in r.output.splitlines() if 'top level' in ln), 'no --config line'))", True),
        ("r2.7", "sample config sample = 5", [*sa, "--config", cfg("t5.toml", "sample = 5\n")], False),
        ("r2.7", "train --data 'nope[bold]x' error line", [*base, "--data", "nope[bold]x", "--out", f"{j}/M"], False),
        ("r2.8", "sample config [sampel]", [*sa, "--config", cfg("t6.toml", "[sampel]\nn = 4\n")], False),
        ("r2.8", "evaluate config [Sample]", [*ev, "--config", cfg("t7.toml", "[Sample]\nn = 4\n")], False),
        ("r2.8", "evaluate config [evaluat]", [*ev, "--config", cfg("t8.toml", "[evaluat]\nn = 4\n")], False),
        *[("r2.9", f"KINETIC_CACHE={shown}: fd-digits classifier", f"import os; os.environ['KINETIC_CACHE'] = {where!r}; "
           "import warnings; from kinetic.metrics import load_digits_classifier as l; "
           "w = warnings.catch_warnings(record=True); got = w.__enter__(); warnings.simplefilter('always'); "
           "a = l().test_accuracy; print(f'accuracy {a:.3f}; warning: ' + '; '.join(str(x.message) for x in got))", True)
          for shown, where in (("/proc/x", "/proc/x"), ("<a file>", str(d / "afile")))],
        ("r2.9", "evaluate --metric fd-digits, HOME unwritable (/proc)", "CACHE_RO", False),
        ("r2.10", "fd-digits-per-class, too few samples (JSON)", py + "from kinetic.fileio import json_text; "
         "from kinetic.metrics.conditional import per_class_mean; import json; "
         "print(json.loads(json_text(per_class_mean({}, torch.arange(5))))['reason'])", True),
        ("r2.11", "sample --device mps", [*sa, "--device", "mps"], False),
        ("r2.11", "evaluate --device mps", [*ev, "--device", "mps"], False),
        ("r2.11", "train --device cuda:-1", [*base, "--device", "cuda:-1", "--out", f"{j}/D1"], False),
        ("r2.11", "train --device cuda (no GPU here)", [*base, "--device", "cuda", "--out", f"{j}/D2"], False,
         lambda: "no run directory left" if not (d / "r2" / "D2").exists() else "run directory LEFT"),
        ("r2.11", "sample --device cpu:3", [*sa, "--device", "cpu:3"], False),
        ("r2.11", "API kn.sample(device='nonsense')", py + f"kn.sample(kn.hold(), {sc}, (2, 2), device='nonsense')", True),
        ("r2.11", "API kn.sample(device='cuda') (no GPU)", py + f"kn.sample(kn.hold(), {sc}, (2, 2), device='cuda')", True),
        ("r2.12", "train --seed 4294967296", [*base, "--seed", "4294967296", "--steps", "2", "--out", f"{j}/SD"], False),
        ("r2.12", "train --seed 1e20", [*base, "--seed", "1e20", "--out", f"{j}/SE"], False),
        ("r2.12", "sample --seed 99999999999999999999", [*sa, "--seed", "99999999999999999999"], False),
        ("r2.12", "evaluate --seed -1", [*ev, "--seed", "-1"], False),
        ("r2.13", "interrupt message with a checkpoint", "from kinetic.training.signals import interrupted_message; "
         f"print(interrupted_message({R!r}))", True),
        ("r2.14", "relative --data-dir stored resolved", "import kinetic as kn; "
         "print('data_dir =', kn.TrainConfig(data='folder', data_dir='imgs').data_dir)", True),
        ("r2.14", "resume on other images (fingerprint)", "RESUME_OTHER", False),
        ("r2.15", "LinearSDE with a complex drift", py + "kn.LinearSDE(np.array([[-1+2j]]), [[1.0]])", True),
        ("r2.15", "LinearSDE with a bool diffusion", py + "kn.LinearSDE([[-1.0]], [[True]])", True),
        ("r2.15", "score returns complex", py + "kn.sample(kn.vp(), lambda z, t: torch.zeros(z.shape[0], 2, "
         "dtype=torch.complex64), (2, 2), steps=2)", True),
        ("r2.15", "score returns int64", py + "kn.sample(kn.vp(), lambda z, t: torch.zeros(z.shape[0], 2, "
         "dtype=torch.int64), (2, 2), steps=2)", True),
        ("r2.16", "CustomSchedule(beta=1, B=-t)", py + "from kinetic.schedules import CustomSchedule as C; "
         "kn.LinearSDE([[-1.]], [[1.]], schedule=C(torch.ones_like, lambda t: -t))", True),
        ("r2.16", "CustomSchedule B(0) = 1", py + "from kinetic.schedules import CustomSchedule as C; "
         "kn.LinearSDE([[-1.]], [[1.]], schedule=C(torch.ones_like, lambda t: t + 1))", True),
        ("r2.16", "CustomSchedule beta < 0 between 33 points", py + "from kinetic.schedules import CustomSchedule as C; "
         "kn.LinearSDE([[-1.]], [[1.]], schedule=C(lambda t: 1 - 2.0 * ((t - 0.5017).abs() < 1e-3), lambda t: t))", True),
        ("r2.16", "CustomSchedule B = 2t with beta = 1", py + "from kinetic.schedules import CustomSchedule as C; "
         "kn.LinearSDE([[-1.]], [[1.]], schedule=C(torch.ones_like, lambda t: 2 * t))", True),
        ("r2.17", "kn.sample(generator=5)", py + f"kn.sample(kn.vp(), {sc}, (2, 2), steps=2, generator=5)", True),
        ("r2.17", "score on the meta device", py + "kn.sample(kn.vp(), lambda z, t: torch.zeros(z.shape[0], 2, "
         "device='meta'), (2, 2), steps=2)", True),
        ("r2.18", "skip_nonfinite with --lr 1e4", ["train", "--data", "moons", "--model", "mlp", "--steps", "200", "--config",
                                                     cfg("skip.toml", "skip_nonfinite = true\nlr = 1e4\n"),
                                                     "--threads", "1", "--quiet", "--out", f"{j}/K"], False),
        ("r2.19", "log_likelihood with x = 1e30", py + f"kn.log_likelihood(kn.hold(), {sc}, torch.full((2, 2), 1e30))",
         True),
        ("r2.19", "log_likelihood float16 x = 1e3", py + f"kn.log_likelihood(kn.hold(), {sc}, "
         "torch.full((2, 2), 1e3, dtype=torch.float16))", True),
        ("r2.20", "sample -c <truncated checkpoint>", [*sa, "-c", str(d / "trunc.pt")], False),
        ("r2.20", "sample -c <0-byte checkpoint>", [*sa, "-c", str(d / "empty.pt")], False),
        ("r2.21", "stale .s.png.XXXX.tmp cleaned by the next sample", [*sa, "--out", str(d / "s.png")], False,
         lambda: "stale temp removed" if not (d / ".s.png.abcdefgh.tmp").exists() else "stale temp LEFT"),
        ("r2.22", "16-bit PNG folder: mean on [-1, 1]", "from kinetic.data import load_image_folder; "
         f"print('mean', round(float(load_image_folder({str(d / 'img16')!r}, resolution=8, channels=1).mean()), 4), "
         "'(expected -0.5)')", True),
    ]


def _images(folder: Path, seed: int) -> None:
    from PIL import Image

    import numpy as np

    (folder / "a").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(4):
        Image.fromarray((rng.random((8, 8)) * 255).astype(np.uint8)).save(folder / "a" / f"{i}.png")


def _round2_setup(d: Path) -> None:
    """Files the second probe's cases need: links, a FIFO, damaged checkpoints, image folders."""
    import numpy as np
    from PIL import Image

    (d / "victim.txt").write_text("precious")
    (d / "r2" / "L").mkdir(parents=True)
    (d / "r2" / "L" / ".lock").symlink_to(d / "victim.txt")
    (d / "foreign").mkdir()
    (d / "foreign" / ".x.png.abcdefgh.tmp").write_text("not kinetic's")
    (d / "r2" / "S").mkdir()
    (d / "r2" / "S" / "samples").symlink_to(d / "foreign")
    (d / "notes.json").write_text("my notes")
    (d / "target.json").write_text("{}")
    (d / "link.json").symlink_to(d / "target.json")
    os.mkfifo(d / "fifo.npz")
    data = (d / "R" / "checkpoint.pt").read_bytes()
    (d / "trunc.pt").write_bytes(data[: len(data) // 2])
    (d / "empty.pt").write_bytes(b"")
    stale = d / ".s.png.abcdefgh.tmp"
    stale.write_bytes(b"")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    (d / "img16" / "a").mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 16384, dtype=np.uint16)).save(d / "img16" / "a" / "x.png")
    _images(d / "imgs", 0)
    (d / "res.toml").write_text("resolution = 8\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="docs/figures/hostile_cases.md")
    a = p.parse_args()
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a"):  # the output path is checked before the work
        pass
    d = Path(tempfile.mkdtemp(prefix="kinetic-hostile-"))
    rows = []
    try:
        setup = run(["train", "--data", "moons", "--model", "mlp", "--steps", "50", "--threads", "1", "--quiet",
                     "--out", str(d / "R")], d)
        assert setup["rc"] == 0, setup
        (d / "afile").write_text("a file")
        (d / "binary.toml").write_bytes(bytes(range(256)) * 4)
        (d / "junk.pt").write_bytes(os.urandom(4096))
        from kinetic.checkpoint import load_checkpoint

        ck = load_checkpoint(d / "R")
        key = next(iter(ck["ema"]))
        ck["ema"][key] = ck["ema"][key] * float("nan")
        torch.save(ck, d / "nan.pt")
        _round2_setup(d)
        for sec, name, cmd, py, *post in cases(d):
            if cmd == "SECOND":  # two trainings on one directory, started together
                x = str(d / "two")
                argv = [sys.executable, "-c", "from kinetic.cli.app import main; main()", "train", "--data", "moons", "--model", "mlp",
                        "--steps", "400", "--threads", "1", "--quiet", "--out", x]
                first = subprocess.Popen(argv, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(8)
                r = run(argv[3:], d)
                first.wait()
                r["message"] = f"first run rc {first.returncode}; second: " + r["message"]
            elif cmd == "RESUME_OTHER":  # a run's folder of images replaced by others, then resumed
                base = ["--data", "folder", "--data-dir", str(d / "imgs"), "--model", "mlp", "--threads", "1", "--quiet",
                        "--config", str(d / "res.toml"), "--out", str(d / "F")]
                first = run(["train", *base, "--steps", "2"], d)
                _images(d / "imgs", 1)
                r = run(["train", "--out", str(d / "F"), "--resume", "--steps", "4", "--threads", "1", "--quiet"], d)
                r["message"] = f"first run rc {first['rc']}; resumed on other images: " + r["message"]
            elif cmd == "CACHE_RO":  # an unwritable HOME (/proc: even root cannot write there): a warning only
                first = run(["train", "--data", "digits", "--model", "mlp", "--steps", "3", "--threads", "1", "--quiet",
                             "--out", str(d / "DG")], d)
                env = {k: v for k, v in os.environ.items() if k != "KINETIC_CACHE"}
                env.update(HOME="/proc/kinetic-home", PYTHONWARNINGS="default")
                r = run(["evaluate", "-c", str(d / "DG"), "--metric", "fd-digits", "--n", "32", "--steps", "3",
                         "--quiet", "--threads", "1"], d, env=env)
                said = [ln for ln in r["lines"] if ln.startswith(("warning", "fd-digits", "Error"))]
                r["message"] = f"digits run rc {first['rc']}; " + " / ".join(said)[:300]
            elif cmd == "STALE":
                (d / "R" / ".checkpoint.pt.k3j2h9q1.tmp").write_bytes(b"partial")
                r = run(["train", "--out", str(d / "R"), "--resume", "--steps", "60", "--threads", "1", "--quiet"], d)
                r["message"] = ("temp file removed" if not (d / "R" / ".checkpoint.pt.k3j2h9q1.tmp").exists()
                                else "temp file still there") + "; " + r["message"]
            else:
                before = (d / "R" / "checkpoint.pt").read_bytes()
                r = run(cmd, d, py=py)
                if name.startswith("--config"):
                    same = (d / "R" / "checkpoint.pt").read_bytes() == before
                    r["message"] = (("R's checkpoint unchanged" if same else "R's checkpoint REPLACED")
                                    + f"; new run in {', '.join(p.name for p in (d / 'runs').iterdir())}")
                elif "resume" in name and r["rc"] == 0:
                    r["message"] = r["message"] or "resumed"
                    r["message"] += f" (R now at step {_step(d / 'R')})"
            if post:
                r["message"] = f"{post[0]()}; {r['message']}"
            r["api"] = py and cmd not in ("SECOND", "STALE")
            rows.append((sec, name, r))
            print(f"[{sec}] {name}: rc {r['rc']}, traceback {r['traceback']}, {r['seconds']:.1f} s: {r['message']}",
                  flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    md = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; command: "
          f"`python benchmarks/hostile_cases.py`; limits per case {TIME_LIMIT} s and {MEMORY_LIMIT // 2**30} GiB.", "",
          "API cases run in a child Python: a clear exception is their contract (exit 1, shown as `raises`).", "",
          "Rows r2.N replay the second probe's defect N and other members of its class; where a file could be lost, "
          "the message starts with what became of it.", "",
          "| § | case | exit | traceback | s | what it says now (first line) |", "|---|---|---|---|---|---|"]
    for sec, name, r in rows:
        msg = r["message"].replace("|", "\\|")
        md.append(f"| {sec} | {name} | {r['rc']} | {'raises' if r['api'] and r['traceback'] else 'yes' if r['traceback'] else 'no'} | {r['seconds']:.1f} | {msg} |")
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
