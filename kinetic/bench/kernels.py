"""Cost of the exact kernels: `perturb` for a HOLD image batch against a hand-written VP
perturbation (the least any library can do), and the k x k maths for many time points.

    python benchmarks/kernels.py [--full] [--out docs]
"""

from __future__ import annotations

import time
from typing import Sequence

import torch

import kinetic as kn

from .report import bench_parser, machine_info, machine_line, parse, write_outputs

__all__ = ["run", "to_markdown", "main", "cli"]


def _best_of(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _vp_floor(x0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Hand-written VP perturbation: mean coefficient and std in closed form, one fused expression."""
    B = 0.1 * t + 0.5 * 19.9 * t * t
    a = torch.exp(-0.5 * B).view(-1, 1, 1, 1)
    s = torch.sqrt(-torch.expm1(-B)).view(-1, 1, 1, 1)
    eps = torch.randn_like(x0)
    return a * x0 + s * eps


def run(full: bool = False) -> dict:
    torch.manual_seed(0)
    batch = 128
    shape = (3, 32, 32)
    repeats = 20 if full else 7
    x0 = torch.randn(batch, *shape)
    t = torch.rand(batch) * 0.999 + 1e-3
    hold, vp, cld, lang = kn.hold(), kn.vp(), kn.cld(), kn.langevin(4)

    t_floor = _best_of(lambda: _vp_floor(x0, t), repeats)
    res = {"batch": batch, "data_shape": list(shape), "vp_floor_s": t_floor}
    for name, sde in [("vp", vp), ("cld", cld), ("hold", hold), ("langevin4", lang)]:
        sec = _best_of(lambda: sde.perturb(x0, t), repeats)
        # per data element: the state has k blocks, so k times the elements of the VP floor
        res[f"{name}_perturb_s"] = sec
        res[f"{name}_ratio_total"] = sec / t_floor
        res[f"{name}_ratio_per_element"] = sec / (sde.order * t_floor)
    n_t = 100_000 if full else 20_000
    tt = torch.rand(n_t, dtype=torch.float64)
    for name, sde in [("cld", cld), ("hold", hold), ("langevin4", lang)]:
        res[f"{name}_cov_{n_t}_s"] = _best_of(lambda: sde.covariance(tt), 3)
        res[f"{name}_chol_{n_t}_s"] = _best_of(lambda: sde.cholesky(tt), 3)
    res["n_times"] = n_t
    res["machine"] = machine_info()
    return res


def to_markdown(res: dict) -> str:
    n = res["n_times"]
    lines = [
        f"Batch {res['batch']} x {tuple(res['data_shape'])}, float32, best of several runs; machine: {machine_line(res['machine'])}.",
        "",
        "| SDE | perturb (ms) | / VP floor (total) | / VP floor per data element |",
        "|---|---|---|---|",
        f"| hand-written VP floor | {1e3 * res['vp_floor_s']:.2f} | 1.00 | 1.00 |",
    ]
    for name in ("vp", "cld", "hold", "langevin4"):
        lines.append(
            f"| {name} | {1e3 * res[name + '_perturb_s']:.2f} | {res[name + '_ratio_total']:.2f} | "
            f"{res[name + '_ratio_per_element']:.2f} |"
        )
    lines += ["", f"k x k maths for {n:,} time points (float64):", "", "| SDE | covariance (ms) | covariance + Cholesky (ms) |", "|---|---|---|"]
    for name in ("cld", "hold", "langevin4"):
        lines.append(f"| {name} | {1e3 * res[f'{name}_cov_{n}_s']:.1f} | {1e3 * res[f'{name}_chol_{n}_s']:.1f} |")
    return "\n".join(lines) + "\n"


def main(full: bool = False, out_dir: str | None = None) -> dict:
    """Run the benchmark; with out_dir, write out_dir/bench_kernels.{json,md}."""
    res = run(full)
    if out_dir:
        write_outputs(out_dir, {"bench_kernels.json": res, "bench_kernels.md": to_markdown(res)})
    return res


def cli(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/kernels.py [--full] [--out DIR] [--threads N]``."""
    p = bench_parser(__doc__.splitlines()[0], full_help="more repeats and 100,000 time points",
                     out_default=None, out_help="directory for bench_kernels.{json,md}")
    a = parse(p, argv)
    print(to_markdown(main(a.full, a.out)))


if __name__ == "__main__":
    cli()
