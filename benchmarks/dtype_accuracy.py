"""Float32 against float64 sampling with exact scores: does the state's dtype move the error above the floor?

GPUs run float32 at 30-60x the float64 rate, so the data path should be float32 there; the k x k
maths stays float64 (the plans). This measures what that costs in sample quality. For each preset,
sampler and step count, the sampler (`kinetic.solvers`, on the grid `kinetic.sample` uses) runs in
float64 and in float32 from the SAME float64 prior draw (cast) and the same noise increments (drawn
in float64 and cast), with the exact score (`kinetic.analytic`) of the few-step benchmarks'
problems: mixture4 (sliced W1 to the exact law) and gauss64 (eigenbasis W2 of the Gaussian fit),
sampled together as one `kinetic.bench.problems.Product` state (`kinetic.bench.fewstep`). The pair
differs only by the state's dtype, so the comparison has no Monte Carlo noise of its own. Reported:

- the ratio of each dtype's distribution error to the floor (the same error of exact samples of the
  same size, `kinetic.bench.fewstep.floor`), mean over the ``--seeds`` prior draws;
- |Delta| / floor: the largest difference of the two errors over the draws, over the floor; "within"
  when it is at most `WITHIN` (a tenth of the floor: float32 is invisible at this sample size);
- path: the RMS of x32 - x64 over the samples (data std ~1), the largest over the draws.

    python benchmarks/dtype_accuracy.py [--presets vp,cld,hold,psld] [--nfes 5,10,20,50] [--seeds 1]
        [--n 10000] [--samplers default,em] [--threads 1] [--out docs/figures]

Writes ``dtype_accuracy.{json,md}`` into ``--out`` (when given). Downloads nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import kinetic as kn
from kinetic import solvers as kinetic_solvers
from kinetic.bench import fewstep as fs
from kinetic.bench import problems as pb
from kinetic.bench.report import command_line, int_list, machine_line, md_table, parse, write_outputs
from kinetic.sampling import default_grid

PROBLEMS = ("mixture4", "gauss64")
SAMPLERS = {
    "default": {},  # kn.sample's default: ei (the gls plan on short grids, the k-block flow beyond)
    "ei-3 + corrector": {"solver": "ei", "gls_steps": 0},
    "em": {"solver": "em"},
    "sscs": {"solver": "sscs"},
}
DTYPES = {"float64": torch.float64, "float32": torch.float32}
WITHIN = 0.1
"""A cell is within the floor when |err32 - err64| <= WITHIN * floor."""


def _paired_noise(seed: int):
    """A noise_sampler that draws float64 normals from ``seed`` and casts them: the same increments in
    every dtype."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape, dtype, device):
        return torch.randn(shape, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)

    return draw


def _solver(opts: dict):
    name = opts.get("solver", "ei")
    return kinetic_solvers.get_solver(name, **{k: v for k, v in opts.items() if k != "solver"})


def run(presets, nfes, seeds: int, n: int, samplers, log=print) -> dict:
    """Every preset x sampler x step count: per dtype the mean ratio to the floor, the largest
    |Delta| / floor and the largest pathwise gap over the draws. Plain data."""
    laws = {p: pb.problem(p) for p in PROBLEMS}
    joint = pb.Product(laws)
    errors = {p: fs.distribution_error(law) for p, law in laws.items()}
    floors = {p: fs.floor(laws[p], errors[p], n) for p in PROBLEMS}
    rows = []
    for preset in presets:
        sde = fs.PRESETS[preset]()
        score = joint.score_fn(sde)
        for label in samplers:
            slv = _solver(SAMPLERS[label])
            for steps in nfes:
                t0 = time.perf_counter()
                ts = kn.time_grid(sde, steps, fs.T_EPS, default_grid(slv))
                plan = slv.prepare(sde, ts)
                cell = {p: {"r64": [], "r32": [], "delta": [], "path": []} for p in PROBLEMS}
                for s in range(seeds):
                    z64 = sde.prior_sample((n, joint.dim), generator=torch.Generator().manual_seed(s), dtype=torch.float64)
                    out = {}
                    for dname, dtype in DTYPES.items():
                        z, nfe = slv.run(sde, score, z64.to(dtype), ts, noise_sampler=_paired_noise(1000 + s), plan=plan)
                        if z.dtype != dtype or not bool(torch.isfinite(z).all()):
                            raise RuntimeError(f"{label} in {dname}: dtype {z.dtype} or non-finite samples")
                        out[dname] = z[:, 0].double()
                    for p in PROBLEMS:
                        sl = joint.slices[p]
                        e64, e32 = errors[p](out["float64"][:, sl]), errors[p](out["float32"][:, sl])
                        c = cell[p]
                        c["r64"].append(e64 / floors[p])
                        c["r32"].append(e32 / floors[p])
                        c["delta"].append(abs(e32 - e64) / floors[p])
                        c["path"].append(float((out["float32"][:, sl] - out["float64"][:, sl]).square().mean().sqrt()))
                for p in PROBLEMS:
                    c = cell[p]
                    delta = max(c["delta"])
                    rows.append({"problem": p, "preset": preset, "sampler": label, "steps": steps, "nfe": nfe,
                                 "ratio64": sum(c["r64"]) / seeds, "ratio32": sum(c["r32"]) / seeds,
                                 "ratios64": c["r64"], "ratios32": c["r32"], "delta_over_floor": delta,
                                 "within": bool(delta <= WITHIN), "path_rms": max(c["path"]),
                                 "seconds": time.perf_counter() - t0})
                    r = rows[-1]
                    log(f"{p:8s} {preset:5s} {label:18s} {steps:3d} steps: ratio64 {r['ratio64']:.3f} "
                        f"ratio32 {r['ratio32']:.3f} |d|/floor {delta:.2g} path {r['path_rms']:.2g}")
    return {"problems": list(PROBLEMS), "presets": list(presets), "nfes": list(nfes), "seeds": seeds, "n": n,
            "t_eps": fs.T_EPS, "within": WITHIN, "samplers": {k: SAMPLERS[k] for k in samplers}, "floor": floors,
            "rows": rows}


def to_markdown(res: dict) -> str:
    within = sum(r["within"] for r in res["rows"])
    worst = max(res["rows"], key=lambda r: r["delta_over_floor"])
    lines = [f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min). Machine: {res['machine']}.", "",
             f"Exact scores, t_eps = {res['t_eps']:g}, n = {res['n']} samples per problem, prior draws "
             f"0-{res['seeds'] - 1}; each float32 run starts from the float64 run's prior draw and uses its noise "
             f"increments. Cells: the ratio of the distribution error to the floor, float64 / float32 (mean over the "
             f"draws); abs Delta: the largest |err32 - err64| over the floor; within: abs Delta <= {res['within']}; "
             "path: the largest RMS of x32 - x64 (data std ~1).", "",
             f"**{within} of {len(res['rows'])} cells within**; the largest abs Delta {worst['delta_over_floor']:.2g} "
             f"({worst['problem']}, {worst['preset']}, {worst['sampler']}, {worst['nfe']} NFE); the largest pathwise "
             f"gap {max(r['path_rms'] for r in res['rows']):.2g}.", ""]
    for p in res["problems"]:
        lines += [f"**{p}** (floor {res['floor'][p]:.4g})", ""]
        body = []
        for r in res["rows"]:
            if r["problem"] != p:
                continue
            body.append([r["preset"], r["sampler"], str(r["nfe"]), f"{r['ratio64']:.3f} / {r['ratio32']:.3f}",
                         f"{r['delta_over_floor']:.1e}", "yes" if r["within"] else "**no**", f"{r['path_rms']:.1e}"])
        lines += md_table(["SDE", "sampler", "NFE", "ratio f64 / f32", "abs Delta", "within", "path"], body) + [""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default="vp,cld,hold,psld")
    p.add_argument("--samplers", default="default,em", help=f"of {', '.join(SAMPLERS)}")
    p.add_argument("--nfes", type=int_list, default="5,10,20,50", help="solver steps (NFE for one-call steps)")
    p.add_argument("--seeds", type=int, default=1, help="prior draws per cell (seeds 0 .. N-1)")
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="folder for dtype_accuracy.{json,md} (must exist)")
    a = parse(p, argv)
    presets, samplers = a.presets.split(","), a.samplers.split(",")
    bad = [x for x in presets if x not in fs.PRESETS] + [x for x in samplers if x not in SAMPLERS]
    if bad:
        p.error(f"unknown preset or sampler {bad}; presets: {sorted(fs.PRESETS)}, samplers: {list(SAMPLERS)}")
    if a.seeds < 1 or a.n < 2 or any(x < 1 for x in a.nfes):
        p.error("--seeds must be >= 1, --n >= 2 and every NFE >= 1")
    if a.out is not None and not a.out.is_dir():
        p.error(f"--out: {a.out} is not a folder")
    t0 = time.perf_counter()
    res = run(presets, a.nfes, a.seeds, a.n, samplers)
    res.update(seconds=time.perf_counter() - t0, machine=machine_line(), command=command_line("dtype_accuracy.py", argv))
    md = to_markdown(res)
    print(md)
    if a.out is not None:
        write_outputs(a.out, {"dtype_accuracy.json": res, "dtype_accuracy.md": md + "\n"})
    return res


if __name__ == "__main__":
    main()
