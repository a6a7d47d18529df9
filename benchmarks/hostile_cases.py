"""Replay the hostile-user cases (robustness issue: data loss, hangs, tracebacks, misreads) against this tree.

    python benchmarks/hostile_cases.py [--out docs/figures/hostile_cases.md]

Every case runs the real CLI in a subprocess (with a time and memory limit) or the API in a child
Python, in a scratch directory, and records what it does now: the exit code, whether a traceback
was printed, the first line of the message and the wall time. The table is what the note of the
issue lists; `tests/test_run_safety.py` holds one assertion per case.
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


def run(cmd: list[str] | str, cwd: Path, py: bool = False) -> dict:
    """Run one case; `py`: cmd is Python source for a child interpreter."""
    argv = [sys.executable, "-c", cmd] if py else [sys.executable, "-c", "from kinetic.cli.app import main; main()", *cmd]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "COLUMNS": "200"}
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
    return {"rc": rc, "traceback": "Traceback (most recent call last)" in out, "message": msg[:160],
            "seconds": time.perf_counter() - t0}


def _step(run_dir: Path) -> int:
    from kinetic.checkpoint import load_checkpoint

    return int(load_checkpoint(run_dir)["step"])


def cases(d: Path) -> list[tuple[str, str, object, bool]]:
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
    ]


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
        for sec, name, cmd, py in cases(d):
            if cmd == "SECOND":  # two trainings on one directory, started together
                x = str(d / "two")
                argv = [sys.executable, "-c", "from kinetic.cli.app import main; main()", "train", "--data", "moons", "--model", "mlp",
                        "--steps", "400", "--threads", "1", "--quiet", "--out", x]
                first = subprocess.Popen(argv, cwd=d, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(8)
                r = run(argv[3:], d)
                first.wait()
                r["message"] = f"first run rc {first.returncode}; second: " + r["message"]
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
            r["api"] = py and cmd not in ("SECOND", "STALE")
            rows.append((sec, name, r))
            print(f"[{sec}] {name}: rc {r['rc']}, traceback {r['traceback']}, {r['seconds']:.1f} s: {r['message']}",
                  flush=True)
    finally:
        shutil.rmtree(d, ignore_errors=True)
    md = [f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; command: "
          f"`python benchmarks/hostile_cases.py`; limits per case {TIME_LIMIT} s and {MEMORY_LIMIT // 2**30} GiB.", "",
          "API cases run in a child Python: a clear exception is their contract (exit 1, shown as `raises`).", "",
          "| § | case | exit | traceback | s | what it says now (first line) |", "|---|---|---|---|---|---|"]
    for sec, name, r in rows:
        msg = r["message"].replace("|", "\\|")
        md.append(f"| {sec} | {name} | {r['rc']} | {'raises' if r['api'] and r['traceback'] else 'yes' if r['traceback'] else 'no'} | {r['seconds']:.1f} | {msg} |")
    out.write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
