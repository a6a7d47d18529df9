"""The shared denoiser on the digits U-Net: one VP-trained denoiser sampled under other SDEs, and the
denoiser parameterisation against the x0 parameterisation.

Runs, in this order, each a ``kinetic train`` with its defaults (digits, the small U-Net, 600 steps of
batch 64, seed 0) bounded by ``--train-timeout`` seconds; the results are written after every finished
part, so a cut-off study keeps what finished:

a. ``--sde vp --parameterization denoiser``, then that one network sampled under VP, CLD, HOLD and PSLD
   (`kinetic.as_score_fn` of its `Denoiser` and each preset) with the default sampler (``ei``, its default
   grid) at each NFE of ``--nfes``: fd-digits of n samples (against all 1797 bundled digits);
b. ``--sde hold``, denoiser against the default x0 parameterisation: fd-digits at ``--cmp-nfe`` and the
   training throughput (summary.json's examples_per_s, which includes the run's periodic work);
c. the same for ``--sde cld`` (``--parts abc``).

    OMP_NUM_THREADS=1 python benchmarks/denoiser_study.py --runs runs/denoiser_study --out docs/figures \
        [--parts ab] [--nfes 10,20,50] [--n 1000] [--threads 1] [--stop-after HH:MM]

``--stop-after`` (UTC): no new training run starts after that time. Writes ``denoiser_study.json`` and
``denoiser_study.md`` into ``--out``. Downloads nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

import kinetic as kn
from kinetic.bench.report import bold_min
from kinetic.checkpoint import load_model
from kinetic.evaluation import draw
from kinetic.fileio import atomic_write_text
from kinetic.metrics import fd_digits

CROSS_SDES = ("vp", "cld", "hold", "psld")


def _late(stop_after: str | None) -> bool:
    if not stop_after:
        return False
    now = datetime.now(timezone.utc)
    hh, mm = (int(v) for v in stop_after.split(":"))
    return (now.hour, now.minute) >= (hh, mm)


def train(runs: Path, sde: str, param: str, threads: int, timeout: int, log) -> dict | None:
    """One ``kinetic train`` run (reused when its summary.json exists); its summary, or None if cut off."""
    out = runs / f"{sde}-{param}"
    summary = out / "summary.json"
    if not summary.exists():
        cmd = ["kinetic", "train"]
        cmd += ["--sde", sde, "--parameterization", param, "--threads", str(threads), "--out", str(out), "-q"]
        log(f"train: {' '.join(cmd)}")
        try:
            subprocess.run(["timeout", str(timeout), *cmd], check=True)
        except subprocess.CalledProcessError as err:
            log(f"train {sde}-{param} did not finish (exit {err.returncode})")
            return None
    return json.loads(summary.read_text())


def machine(threads: int) -> str:
    return f"{os.cpu_count()}-core {platform.machine()} CPU, torch {torch.__version__}, {threads} thread(s) (shared machine)"


def step_rate(run_dir: Path) -> float | None:
    """The median training throughput (examples/s) over the run's logged intervals (metrics.jsonl):
    the step time without the run's start-up and final sampling."""
    log = run_dir / "metrics.jsonl"
    if not log.exists():
        return None
    rates = sorted(float(r["examples_per_s"]) for r in map(json.loads, log.read_text().splitlines())
                   if r.get("examples_per_s") and "step" in r)
    return round(rates[len(rates) // 2], 2) if rates else None


def fd_of(ckpt: Path, sde_name: str, nfe: int, n: int, seed: int = 0) -> dict:
    """fd-digits of n samples of the checkpoint's denoiser (or its own score) under preset ``sde_name``."""
    sm, ck = load_model(ckpt)
    shape = (n, *ck["model_config"]["data_shape"])
    if sm.parameterization == "denoiser":
        sde = kn.preset(sde_name)
        score = kn.as_score_fn(sm.denoiser(), sde)
    else:
        sde, score = sm.sde, sm.score
    t0 = time.perf_counter()
    x, got = draw(sde, score, shape, steps=nfe, seed=seed, batch_size=500)
    secs = time.perf_counter() - t0
    return {"sde": sde_name, "steps": nfe, "nfe": got, "fd_digits": round(float(fd_digits(x)), 4),
            "sampling_seconds": round(secs, 2)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/denoiser_study"))
    p.add_argument("--out", type=Path, default=Path("docs/figures"))
    p.add_argument("--parts", default="ab")
    p.add_argument("--nfes", default="10,20,50")
    p.add_argument("--cmp-nfe", type=int, default=20)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-timeout", type=int, default=1500)
    p.add_argument("--stop-after", default=None)
    p.add_argument("--refresh", action="store_true",
                   help="only re-read the runs' metrics logs into the existing JSON and rewrite the tables")
    p.add_argument("--merge", type=Path, action="append", default=[],
                   help="with --refresh: also take the results of this --out folder (parts run in parallel)")
    a = p.parse_args(argv)
    if a.refresh:
        res = json.loads((a.out / "denoiser_study.json").read_text())
        res["machine"] = machine(a.threads)
        for extra in a.merge:  # the parts run by another process (another --out)
            more = json.loads((extra / "denoiser_study.json").read_text())
            res["compare"].update(more["compare"])
            res["not_finished"] += more["not_finished"]
            also = f"; python benchmarks/denoiser_study.py {more['command'].split(' ', 2)[-1]}"
            res["command"] += also if also not in res["command"] else ""
        res["not_finished"] = [m for m in dict.fromkeys(res["not_finished"]) if m.split(":")[0] not in res["compare"]]
        for key, e in res["compare"].items():
            e["median_examples_per_s"] = step_rate(a.runs / key)
            e["train_steps"] = json.loads((a.runs / key / "summary.json").read_text()).get("step")
        if "vp_denoiser_run" in res:
            res["vp_denoiser_run"]["median_examples_per_s"] = step_rate(a.runs / "vp-denoiser")
        atomic_write_text(a.out / "denoiser_study.json", json.dumps(res, indent=1) + "\n")
        atomic_write_text(a.out / "denoiser_study.md", markdown(res, res.get("nfes", [10, 20, 50])))
        return
    torch.set_num_threads(a.threads)
    nfes = [int(v) for v in a.nfes.split(",")]
    log = lambda s: print(f"[{datetime.now(timezone.utc):%H:%M:%S}] {s}", flush=True)
    a.runs.mkdir(parents=True, exist_ok=True)
    a.out.mkdir(parents=True, exist_ok=True)
    res: dict = {
        "command": "python benchmarks/denoiser_study.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(a.threads),
        "n": a.n, "nfes": nfes, "cmp_nfe": a.cmp_nfe, "solver": "ei (default grid)", "cross_sde": [], "compare": {}, "not_finished": [],
    }

    def write():
        atomic_write_text(a.out / "denoiser_study.json", json.dumps(res, indent=1) + "\n")
        atomic_write_text(a.out / "denoiser_study.md", markdown(res, nfes))

    plan = []
    if "a" in a.parts:
        plan.append(("a", "vp"))
    if "b" in a.parts:
        plan.append(("b", "hold"))
    if "c" in a.parts:
        plan.append(("c", "cld"))
    for part, sde in plan:
        params = ["denoiser"] if part == "a" else ["denoiser", "x0"]
        for param in params:
            key = f"{sde}-{param}"
            if _late(a.stop_after) and not (a.runs / key / "summary.json").exists():
                res["not_finished"].append(f"{key}: not started (past {a.stop_after} UTC)")
                write()
                continue
            s = train(a.runs, sde, param, a.threads, a.train_timeout, log)
            if s is None:
                res["not_finished"].append(f"{key}: training cut off at {a.train_timeout} s")
                write()
                continue
            ck = Path(s["checkpoint"])
            entry = {"examples_per_s": s.get("examples_per_s"), "median_examples_per_s": step_rate(a.runs / key),
                     "elapsed_s": s.get("elapsed_s"), "train_steps": s.get("step")}
            if part == "a":
                res["vp_denoiser_run"] = entry
                write()
                for nfe in nfes:  # NFE-major: a cut-off study keeps every SDE at the smaller budgets
                    for sde_name in CROSS_SDES:
                        row = fd_of(ck, sde_name, nfe, a.n)
                        log(f"cross {row}")
                        res["cross_sde"].append(row)
                        write()
            else:
                entry.update(fd_of(ck, sde, a.cmp_nfe, a.n))
                log(f"compare {key} {entry}")
                res["compare"][key] = entry
                write()
    write()


def markdown(res: dict, nfes) -> str:
    lines = ["# The shared denoiser on the digits U-Net", "", f"`{res['command']}`", "", f"Machine: {res['machine']}.",
             f"fd-digits of n = {res['n']} samples (against all 1797 bundled digits), sampler {res['solver']}.", ""]
    if res["cross_sde"]:
        lines += ["## One VP-trained denoiser sampled under other SDEs", "",
                  "| SDE | " + " | ".join(f"NFE {v}" for v in nfes) + " |", "|---|" + "---:|" * len(nfes)]
        for sde in CROSS_SDES:
            cells = {r["steps"]: r for r in res["cross_sde"] if r["sde"] == sde}
            if cells:
                lines.append(f"| {sde} | " + " | ".join(
                    f"{cells[v]['fd_digits']:.2f}" if v in cells else "-" for v in nfes) + " |")
        lines.append("")
    if res["compare"]:
        lines += ["## Denoiser against x0 parameterisation", "",
                  "| run | fd-digits | NFE | examples/s (median of the log) | examples/s (whole run) | training s |",
                  "|---|---:|---:|---:|---:|---:|"]
        for key, e in res["compare"].items():
            med = e.get("median_examples_per_s")
            lines.append(f"| {key} | {e['fd_digits']:.2f} | {e['nfe']} | {'-' if med is None else f'{med:.1f}'} | "
                         f"{e['examples_per_s']:.1f} | {e['elapsed_s']:.0f} |")
        lines.append("")
    if res["not_finished"]:
        lines += ["Not finished: " + "; ".join(res["not_finished"]), ""]
    return "\n".join(lines)


def cross_sde_markdown(res: dict) -> str:
    """docs/study.md's table: the VP-trained denoiser's fd-digits under each SDE and NFE (-: not run); bold: the
    best per NFE."""
    nfes = res.get("nfes", [10, 20, 50])
    cells = {(r["sde"], r["steps"]): r["fd_digits"] for r in res["cross_sde"]}
    sdes = [s for s in CROSS_SDES if any((s, v) in cells for v in nfes)]
    best = {v: min(cells[s, v] for s in sdes if (s, v) in cells) for v in nfes}
    lines = ["| sampled under | " + " | ".join(f"NFE {v}" for v in nfes) + " |", "|---|" + "---:|" * len(nfes)]
    for s in sdes:
        label = f"{s.upper()} (its own SDE)" if s == "vp" else s.upper()
        row = ["-" if (s, v) not in cells else f"**{cells[s, v]:.2f}**" if cells[s, v] == best[v] else f"{cells[s, v]:.2f}"
               for v in nfes]
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def compare_markdown(res: dict) -> str:
    """docs/study.md's table: each SDE trained with the denoiser and the x0 parameterisation, fd-digits at
    ``cmp_nfe`` (bold: the better of the SDE's pair) and the training rate."""
    labels = {"denoiser": "`--parameterization denoiser`", "x0": "x0 (default)"}
    lines = ["| run | fd-digits | examples/s (median of the log) | examples/s (whole run) |", "|---|---:|---:|---:|"]
    for sde in dict.fromkeys(k.split("-")[0] for k in res["compare"]):
        keys = [k for k in (f"{sde}-denoiser", f"{sde}-x0") if k in res["compare"]]
        fds = bold_min([res["compare"][k]["fd_digits"] for k in keys])
        for k, fd in zip(keys, fds):
            e = res["compare"][k]
            med = e.get("median_examples_per_s")
            lines.append(f"| {sde.upper()}, {labels[k.split('-', 1)[1]]} | {fd} | {'-' if med is None else f'{med:.1f}'} | "
                         f"{e['examples_per_s']:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
