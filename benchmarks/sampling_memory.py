"""What `kinetic.sample`'s defaults cost: peak memory against n (with and without batching), and the
error of the default solver on each time grid (the evidence for its default grid).

    python benchmarks/sampling_memory.py            # n = 1e4 and 1e5, 2-D mixture and 8x8 images
    python benchmarks/sampling_memory.py --n 10000  # one size
    python benchmarks/sampling_memory.py --grids    # ei (default options) on every grid, NFE 5..50

Each configuration runs in a fresh subprocess (one torch thread) and reports the peak resident
memory above the process's own baseline (after imports and a 64-sample warm-up run): the default
solver (ei, 20 steps, float64) under CLD, with the exact score of a 2-D mixture of 8 Gaussians
(`kinetic.analytic`) and with a tiny convolutional score on 8x8 images (1 channel). Modes:
``sample`` (all n at once), ``sample(batch_size=B)`` (the output is kept: n * D numbers) and
``sample_batches`` (each batch dropped after use: memory independent of n).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time


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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="*", default=[10_000, 100_000])
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--data", nargs="*", default=["mixture2d", "images8x8"])
    p.add_argument("--grids", action="store_true", help="compare the time grids for the default solver instead")
    p.add_argument("--json", default=None, help="write the rows to this file")
    p.add_argument("--worker", nargs=3, metavar=("DATA", "N", "MODE"), help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker[0], int(a.worker[1]), a.worker[2], a.batch, a.steps)))
        return
    if a.grids:
        res = grids()
        print("floors:", ", ".join(f"{k} {v:.4f}" for k, v in res["floor"].items()))
        if a.json:
            with open(a.json, "w") as f:
                json.dump(res, f, indent=1)
        return
    rows = []
    for data in a.data:
        for n in a.n:
            for mode in ("sample", "sample_batch_size", "sample_batches"):
                cmd = [sys.executable, __file__, "--worker", data, str(n), mode, "--batch", str(a.batch), "--steps", str(a.steps)]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{data:10s} n={n:<7d} {mode:18s} extra {row['extra_mb']:8.1f} MB (peak {row['peak_mb']:.0f} MB, "
                      f"baseline {row['baseline_mb']:.0f} MB)  {row['seconds']:.1f}s", flush=True)
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, 1 torch thread, "
               f"Python {platform.python_version()}")
    print("machine:", machine)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
