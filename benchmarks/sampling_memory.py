"""What `kinetic.sample`'s defaults cost: peak memory against n (with and without batching); and, with
``--grids``, the error of the default solver on each fixed time grid.

    python benchmarks/sampling_memory.py --out docs  # n = 1e4 and 1e5, 2-D mixture and 8x8 images (~3 min)
    python benchmarks/sampling_memory.py --n 10000   # one size, printed only
    python benchmarks/sampling_memory.py --grids     # ei (default options) on every fixed grid, NFE 5..50

Each configuration runs in a fresh subprocess (one torch thread) and reports the peak resident
memory above the process's own baseline (after imports and a 64-sample warm-up run): the default
solver (ei, 20 steps, float64) under CLD, with the exact score of a 2-D mixture of 8 Gaussians
(`kinetic.analytic`) and with a tiny convolutional score on 8x8 images (1 channel). Modes:
``sample`` (all n at once), ``sample(batch_size=B)`` (the output is kept: n * D numbers) and
``sample_batches`` (each batch dropped after use: memory independent of n).

``--out DIR`` writes DIR/figures/sampling_memory.json (the rows, the machine, the command, the wall
time), which `to_markdown` renders as the "sampling-memory" block of docs/benchmarks.md
(benchmarks/_docs_tables.py); ``--json FILE`` writes the same JSON to FILE. Both paths are checked
before the work. The ``--grids`` comparison recorded in docs/benchmarks.md (History) predates the
`band` grid; the current evidence for the default grid is benchmarks/fewstep_grids.py.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

#: what --out writes under its folder
OUT_JSON = "figures/sampling_memory.json"
MODES = ("sample", "sample_batch_size", "sample_batches")
DATA = {"mixture2d": "2-D mixture", "images8x8": "8x8 images"}


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # kB on Linux


def worker(data: str, n: int, mode: str, batch: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    import kinetic as kn
    from kinetic.analytic import GaussianMixture

    sde = kn.cld()
    if data == "mixture2d":
        shape = (2,)
        score = GaussianMixture.ring(8, 1.41, 0.15).score_fn(sde)
    else:
        shape = (1, 8, 8)
        net = torch.nn.Conv2d(sde.order, 1, 3, padding=1).double()

        def score(z, t):
            with torch.no_grad():
                return net(z.reshape(z.shape[0], sde.order, 8, 8)).reshape(z.shape[0], *shape)

    gen = torch.Generator().manual_seed(0)
    kn.sample(sde, score, (64, *shape), steps=steps, generator=gen, dtype=torch.float64)  # warm-up: plan, allocator, caches
    base = _peak_mb()
    t0 = time.perf_counter()
    if mode == "sample":
        x = kn.sample(sde, score, (n, *shape), steps=steps, generator=gen, dtype=torch.float64)
        total = float(x.sum())
    elif mode == "sample_batch_size":
        x = kn.sample(sde, score, (n, *shape), steps=steps, generator=gen, batch_size=batch, dtype=torch.float64)
        total = float(x.sum())
    else:
        total = 0.0
        for xb in kn.sample_batches(sde, score, (n, *shape), steps=steps, generator=gen, batch_size=batch, dtype=torch.float64):
            total += float(xb.sum())
    seconds = time.perf_counter() - t0
    return {"data": data, "n": n, "mode": mode, "batch": batch if mode != "sample" else None, "steps": steps,
            "baseline_mb": round(base, 1), "peak_mb": round(_peak_mb(), 1), "extra_mb": round(_peak_mb() - base, 1),
            "seconds": round(seconds, 2), "checksum": total}


def _grid_problems():
    """The two problems of benchmarks/solver_accuracy.py: a 2-D ring of 8 Gaussians (std 0.1) and a
    64-D Gaussian with variances 0.05 .. 1.6 in a random basis (seed 0)."""
    import torch
    from kinetic.analytic import GaussianData, GaussianMixture

    g = torch.Generator().manual_seed(0)
    d = 64
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    lam = torch.logspace(-1.3, 0.2, d, dtype=torch.float64)
    gauss = GaussianData(0.5 * torch.randn(d, generator=g, dtype=torch.float64), Q @ torch.diag(lam) @ Q.T)
    return {"mixture2d": GaussianMixture.ring(8, 1.41, 0.1), "gauss64": gauss}


def grids(n: int = 4000, nfes=(5, 10, 20, 50)) -> dict:
    """Error of ei with its default options on every grid, for VP, CLD, HOLD and langevin(4): sliced
    W2 to fresh data (mixture2d) and the eigenbasis Gaussian-fit W2 (gauss64), as in
    docs/benchmarks_solvers.md, with the Monte Carlo floor of each."""
    import torch

    torch.set_num_threads(1)
    import kinetic as kn
    from kinetic.bench.solvers import eigenbasis_w2, sliced_wasserstein
    from kinetic.grids import GRIDS

    def error(name, data, x, fresh):
        return eigenbasis_w2(x, data.mean, data.cov) if name == "gauss64" else sliced_wasserstein(x, fresh)

    sdes = {"vp": kn.vp(), "cld": kn.cld(), "hold": kn.hold(), "langevin4": kn.langevin(4)}
    out = {"n": n, "nfes": list(nfes), "floor": {}, "error": {}}
    for dname, data in _grid_problems().items():
        fresh = data.sample(n, torch.Generator().manual_seed(101))
        out["floor"][dname] = sum(error(dname, data, data.sample(n, torch.Generator().manual_seed(202 + r)), fresh)
                                  for r in range(4)) / 4
        for sname, sde in sdes.items():
            for grid in (g for g in GRIDS if g != "optimal"):  # optimal: fitted per call, benchmarks/fewstep_grids.py
                row = [error(dname, data, kn.sample(sde, data.score_fn(sde), (n, data.dim), steps=nfe, grid=grid, dtype=torch.float64,
                                                    generator=torch.Generator().manual_seed(0)), fresh) for nfe in nfes]
                out["error"][f"{dname} {sname} {grid}"] = row
                print(f"{dname:10s} {sname:10s} {grid:10s} " + " ".join(f"{e:.4f}" for e in row), flush=True)
    return out


def _memory_gib() -> float | None:
    """Total RAM in GiB (/proc/meminfo; None elsewhere)."""
    from kinetic.checks import meminfo

    total = meminfo("MemTotal")
    return None if total is None else round(total / 2**30, 1)


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def to_markdown(d: dict) -> str:
    """The memory table of docs/benchmarks.md, with the command, the machine and the setup above it:
    one row per (data, n), one cell per mode, "extra MB (seconds)"."""
    from kinetic.bench.report import machine_line

    rows, batch = d["rows"], d["batch"]
    cell = {(r["data"], r["n"], r["mode"]): f"{r['extra_mb']:.1f} MB ({r['seconds']:.1f} s)" for r in rows}
    keys = list(dict.fromkeys((r["data"], r["n"]) for r in rows))
    lo, hi = min(r["baseline_mb"] for r in rows), max(r["baseline_mb"] for r in rows)
    base = f"{lo:.0f}" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}"
    machine = machine_line(d["machine"]) + (f", {d['memory_gib']:g} GiB RAM" if d.get("memory_gib") else "")
    load = d.get("load_average") or [None, None]
    if None not in load:
        machine += f"; 1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end"
    lines = [
        f"Command: `{d['command']}` ({d['seconds'] / 60:.1f} min wall). Machine: {machine}.",
        "",
        f"Peak resident memory above the process's own baseline ({base} MB after imports "
        f"and a 64-sample warm-up), each configuration in a fresh process: CLD, the default solver (`ei`, "
        f"{d['steps']} steps, float64), the exact score of a 2-D mixture of 8 Gaussians, or a one-layer 3x3 "
        f"convolution as the score on 8x8 images. `batch_size` {batch}.",
        "",
        f"| data | n | `kn.sample` (all at once) | `kn.sample(batch_size={batch})` | "
        f"`kn.sample_batches(batch_size={batch})` |",
        "|---|---:|---:|---:|---:|",
    ]
    for data, n in keys:
        cells = [cell.get((data, n, m), "-") for m in MODES]
        lines.append(f"| {DATA.get(data, data)} | {n:,} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="*", default=[10_000, 100_000])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data", nargs="*", default=list(DATA), choices=list(DATA))
    p.add_argument("--grids", action="store_true", help="compare the time grids for the default solver instead")
    p.add_argument("--out", type=Path, default=None,
                   help=f"folder (e.g. docs) for {OUT_JSON}: the rows, machine, command and wall time")
    p.add_argument("--json", type=Path, default=None, help="write the same JSON to this file")
    p.add_argument("--worker", nargs=3, metavar=("DATA", "N", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.worker[2], a.batch, a.steps)))
        return 0
    # every output path is checked before the work (one line naming the option, exit code 2)
    from kinetic.fileio import UnsafePathError, check_output

    if a.grids and a.out is not None:
        return _fail("--out writes the memory rows only; --grids writes its JSON with --json FILE")
    if not a.grids and (not a.n or min(a.n) < 1 or a.batch < 1 or a.steps < 1 or not a.data):
        return _fail(f"--n (at least one, each >= 1), --batch and --steps must be >= 1, --data not empty; got "
                     f"--n {a.n} --batch {a.batch} --steps {a.steps} --data {a.data}")
    targets = []
    try:
        if a.out is not None:
            if not a.out.is_dir():
                return _fail(f"--out: {a.out} is not a folder")
            if (a.out / "figures").exists() and not (a.out / "figures").is_dir():
                return _fail(f"--out: {a.out / 'figures'} exists and is not a folder")
            targets.append(check_output(a.out / OUT_JSON, "--out"))
        if a.json is not None:
            if not a.json.parent.is_dir():
                return _fail(f"--json: the folder of {a.json} does not exist")
            targets.append(check_output(a.json, "--json"))
    except (UnsafePathError, OSError) as err:
        return _fail(str(err))
    from kinetic.fileio import atomic_write_text

    if a.grids:
        res = grids()
        print("floors:", ", ".join(f"{k} {v:.4f}" for k, v in res["floor"].items()))
        for path in targets:
            atomic_write_text(path, json.dumps(res, indent=1) + "\n")
        return 0
    import torch

    from kinetic.bench.report import command_line, machine_info

    torch.set_num_threads(1)  # as in every worker: the machine record says the workers' thread count
    res = {"command": command_line("sampling_memory.py", argv), "machine": machine_info(), "memory_gib": _memory_gib(),
           "steps": a.steps, "batch": a.batch, "data": a.data, "n": a.n, "load_average": [_load(), None], "rows": []}
    t0 = time.perf_counter()
    for data in a.data:
        for n in a.n:
            for mode in MODES:
                cmd = [sys.executable, __file__, "--worker", data, str(n), mode, "--batch", str(a.batch), "--steps", str(a.steps)]
                out = subprocess.run(cmd, capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    print(f"error: the worker {data} n={n} {mode} failed (exit code {out.returncode})", file=sys.stderr)
                    return 1
                row = json.loads(out.stdout.strip().splitlines()[-1])
                res["rows"].append(row)
                print(f"{data:10s} n={n:<7d} {mode:18s} extra {row['extra_mb']:8.1f} MB (peak {row['peak_mb']:.0f} MB, "
                      f"baseline {row['baseline_mb']:.0f} MB)  {row['seconds']:.1f}s", flush=True)
    res["seconds"] = round(time.perf_counter() - t0, 1)
    res["load_average"][1] = _load()
    for path in targets:
        atomic_write_text(path, json.dumps(res, indent=1) + "\n")
        print(f"wrote {path}")
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
