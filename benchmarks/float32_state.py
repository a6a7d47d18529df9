"""A float32 sampler state against a float64 one, with exact scores: does the default dtype cost accuracy?

    python benchmarks/float32_state.py                 # n = 4000, NFE 5, 10, 20, 50
    python benchmarks/float32_state.py --n 1000 --out docs/figures

For VP, CLD and HOLD, the mixture4 and gauss64 problems (`kinetic.bench.problems`) and the samplers
ei (the default), sscs and em on their default grids, both runs start from the same float64 prior draw
(rounded to float32 for the float32 run) and take the same float64 noise (rounded likewise), so the
difference is the float32 arithmetic alone. Reported: the distribution error of each run (sliced W2 to
fresh data for mixture4, eigenbasis W2 for gauss64, as in benchmarks/solver_accuracy.py), their
difference as a share of the Monte Carlo floor (the error of fresh data), and the pathwise RMS
distance between the two runs' samples.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def measure(n: int, nfes, log=print) -> dict:
    import torch

    import kinetic as kn
    from kinetic.bench.problems import eigenbasis_w2, gauss64, mixture4, pathwise_error
    from kinetic.bench.solvers import sliced_wasserstein
    from kinetic.sampling import default_grid, time_grid
    from kinetic.solvers import get_solver

    def noise_from(seed: int):
        g = torch.Generator().manual_seed(seed)
        return lambda shape, dtype, device: torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)

    rows = []
    for pname, law in (("mixture4", mixture4()), ("gauss64", gauss64())):
        fresh = law.sample(n, torch.Generator().manual_seed(101))
        if pname == "gauss64":
            def err(x, law=law):
                return eigenbasis_w2(x.double(), law.mean, law.cov)
        else:
            def err(x, fresh=fresh):
                return sliced_wasserstein(x.double(), fresh)
        floor = sum(err(law.sample(n, torch.Generator().manual_seed(202 + r))) for r in range(3)) / 3
        for sname, sde in (("vp", kn.vp()), ("cld", kn.cld()), ("hold", kn.hold())):
            sf = law.score_fn(sde)
            z64 = sde.prior_sample((n, law.dim), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
            for solver in ("ei", "sscs", "em"):
                slv = get_solver(solver)
                for nfe in nfes:
                    ts = time_grid(sde, nfe, 1e-3, default_grid(solver))
                    plan = slv.prepare(sde, ts)
                    a, _ = slv.run(sde, sf, z64.float(), ts, plan=plan, noise_sampler=noise_from(1))
                    b, _ = slv.run(sde, sf, z64, ts, plan=plan, noise_sampler=noise_from(1))
                    e32, e64 = err(a[:, 0]), err(b[:, 0])
                    row = {"problem": pname, "sde": sname, "solver": solver, "nfe": nfe, "floor": floor,
                           "error_float32": e32, "error_float64": e64, "diff_over_floor": abs(e32 - e64) / floor,
                           "pathwise_rms": pathwise_error(a[:, 0].double(), b[:, 0])}
                    rows.append(row)
                    log(f"{pname:9s} {sname:5s} {solver:5s} {nfe:3d}  error f32 {e32:.4f} f64 {e64:.4f} "
                        f"(floor {floor:.4f})  pathwise {row['pathwise_rms']:.1e}")
    return {"n": n, "nfes": list(nfes), "rows": rows}


def markdown(res: dict, command: str, seconds: float) -> str:
    lines = [f"Command: `{command}` ({seconds / 60:.1f} min), n = {res['n']}, NFE {', '.join(map(str, res['nfes']))}.",
             "", "| problem | SDE | solver | largest error difference / floor | largest pathwise RMS (f32 vs f64) |",
             "|---|---|---|---|---|"]
    groups: dict = {}
    for r in res["rows"]:
        groups.setdefault((r["problem"], r["sde"], r["solver"]), []).append(r)
    for (p, s, v), rs in groups.items():
        worst = max(rs, key=lambda r: r["pathwise_rms"])
        lines.append(f"| {p} | {s} | {v} | {max(r['diff_over_floor'] for r in rs):.3f} | "
                     f"{worst['pathwise_rms']:.1e} (at {worst['nfe']} NFE) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--nfes", default="5,10,20,50")
    ap.add_argument("--out", type=Path, default=None, help="folder for float32_state.json and .md")
    a = ap.parse_args(argv)
    t0 = time.perf_counter()
    res = measure(a.n, [int(s) for s in a.nfes.split(",")])
    md = markdown(res, "python benchmarks/float32_state.py" + (f" --n {a.n}" if a.n != 4000 else ""),
                  time.perf_counter() - t0)
    print(md)
    if a.out is not None:
        from kinetic.fileio import atomic_write_text

        a.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.out / "float32_state.json", json.dumps(res, indent=1))
        atomic_write_text(a.out / "float32_state.md", md)


if __name__ == "__main__":
    main()
