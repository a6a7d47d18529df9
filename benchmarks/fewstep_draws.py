"""Few-step sampling with exact scores over several prior draws: how safe is a cell of docs/benchmarks.md?

`kinetic.bench.fewstep` measures every sampler on one prior draw (seed 0). A ratio to the floor near the
few-step goals (3x at 5 NFE, 1.5x at 10) can move by a few tenths from one draw to the next, because the
samples' own Monte Carlo error is of the floor's size. This draws ``--seeds`` prior samples per cell and
reports the ratio of the distribution error to the floor (exact samples, `kinetic.bench.fewstep.floor`)
as min-max and mean over the draws, for `kn.sample`'s default, the k-block flow of ``ei`` and ``gls``.

    python benchmarks/fewstep_draws.py [--problems mixture4,gauss64] [--presets vp,cld,psld,hold,langevin4]
        [--nfes 5,8,10] [--seeds 5] [--n 20000] [--out docs/figures]

Writes ``fewstep_draws.{md,json}`` into ``--out``. Downloads nothing.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import kinetic as kn
from kinetic.bench import fewstep as fs
from kinetic.bench import problems as pb
from kinetic.bench.report import command_line, int_list, machine_line, parse, write_outputs

SAMPLERS = {
    "kn.sample default": {},
    "ei-3 + corrector (k-block flow)": {"solver": "ei", "gls_steps": 0},
    "gls (order 2 + corrector)": {"solver": "gls"},
}
GOAL = {5: 3.0, 10: 1.5}
"""The few-step goals: the ratio to the floor at 5 and 10 NFE."""


def run(problems, presets, nfes, seeds: int, n: int, log=print) -> dict:
    out = {"problems": {}, "nfes": list(nfes), "seeds": seeds, "n": n}
    for name in problems:
        law = pb.problem(name)
        err = fs.distribution_error(law)
        fl = fs.floor(law, err, n)
        table = {}
        for preset in presets:
            sde = fs.PRESETS[preset]()
            for label, opts in SAMPLERS.items():
                cells = []
                for steps in nfes:
                    r = [err(kn.sample(sde, law.score_fn(sde), (n, law.dim), steps=steps, t_eps=fs.T_EPS, dtype=torch.float64,
                                       generator=torch.Generator().manual_seed(s), **opts)) / fl for s in range(seeds)]
                    cells.append(r)
                table[f"{preset}|{label}"] = cells
                log(f"{name:9s} {preset:9s} {label:32s} " + "  ".join(f"{min(c):.2f}-{max(c):.2f}@{t}" for c, t in zip(cells, nfes)))
        out["problems"][name] = {"floor": fl, "ratios": table}
    return out


def to_markdown(res: dict) -> str:
    lines = [f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min). Machine: {res['machine']}.",
             f"Ratio of the distribution error to the floor (exact samples), over prior draws 0-{res['seeds'] - 1} "
             f"(n = {res['n']}): min-max (mean). Bold: outside the few-step goal ({', '.join(f'{g}x at {t} NFE' for t, g in GOAL.items())}).", ""]
    for name, p in res["problems"].items():
        lines += [f"**{name}** (floor {p['floor']:.4g})", "", "| SDE | sampler | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " |",
                  "|---|---|" + "---|" * len(res["nfes"])]
        for key, cells in p["ratios"].items():
            preset, label = key.split("|")
            row = []
            for t, c in zip(res["nfes"], cells):
                s = f"{min(c):.2f}-{max(c):.2f} ({sum(c) / len(c):.2f})"
                row.append(f"**{s}**" if t in GOAL and max(c) > GOAL[t] else s)
            lines.append(f"| {preset} | {label} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--problems", default="mixture4,gauss64")
    p.add_argument("--presets", default=",".join(fs.PRESETS))
    p.add_argument("--nfes", type=int_list, default="5,8,10")
    p.add_argument("--seeds", type=int, default=5, help="prior draws per cell (seeds 0 .. N-1)")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=None, help="folder for fewstep_draws.{json,md} (must exist)")
    a = parse(p, argv)
    problems, presets = a.problems.split(","), a.presets.split(",")
    bad = [x for x in problems if x not in pb.PROBLEMS] + [x for x in presets if x not in fs.PRESETS]
    if bad:
        p.error(f"unknown problem or preset {bad}; problems: {sorted(pb.PROBLEMS)}, presets: {sorted(fs.PRESETS)}")
    if a.seeds < 1 or a.n < 2 or any(x < 1 for x in a.nfes):
        p.error("--seeds must be >= 1, --n >= 2 and every NFE >= 1")
    if a.out is not None and not a.out.is_dir():
        p.error(f"--out: {a.out} is not a folder")
    t0 = time.perf_counter()
    res = run(problems, presets, a.nfes, a.seeds, a.n)
    res.update(seconds=time.perf_counter() - t0, machine=machine_line(), command=command_line("fewstep_draws.py", argv))
    md = to_markdown(res)
    print(md)
    if a.out is not None:
        write_outputs(a.out, {"fewstep_draws.json": res, "fewstep_draws.md": md + "\n"})


if __name__ == "__main__":
    main()
