"""Few-step sampling with exact scores on the grids optimised in closed form, against ``band`` and ``quadratic``.

For each preset, NFE and grid, `kn.sample` (its default sampler unless ``--solver`` is given) samples the
mixture4 and gauss64 problems together (one `problems.Product` state, the same as separate runs for these
coordinate-wise samplers) from ``--seeds`` prior draws, with the exact score. Reports the ratio of the
distribution error to the floor (exact samples of the same size, `kinetic.bench.fewstep.floor`) as min-max
(mean) over the draws, marked against the few-step goals, and the closed-form error of `kinetic.grid_opt`
of each grid with the seconds its fit took.

    python benchmarks/fewstep_grids.py [--presets vp,cld,psld,hold,langevin4] [--nfes 3,5,10,20,50]
        [--grids band,quadratic,optimal] [--seeds 5] [--n 20000] [--solver ei] [--out docs/figures]

Writes ``fewstep_grids.{md,json}`` (``--stem``) into ``--out``. Downloads nothing. ``--plan-choice`` only
computes the closed-form error of the default sampler's two plans on ``band`` (under a minute; writes
``STEM_plan_choice.{md,json}``):

    python benchmarks/fewstep_grids.py --presets cld,psld,hold,langevin4 --nfes 5,8,10,20 --plan-choice --out docs/figures
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import kinetic as kn
from kinetic import grid_opt, grids
from kinetic.bench import fewstep as fs
from kinetic.bench import problems as pb
from kinetic.bench.report import (
    bold_min,
    command_line,
    int_list,
    machine_line,
    parse,
    write_outputs,
)

GOAL = {3: 5.0, 5: 2.0, 10: 1.3}
"""The few-step goals: the worst draw's ratio to the floor at 3, 5 and 10 NFE."""
PROBLEMS = ("mixture4", "gauss64")


def make_grid(sde, steps: int, name: str, solver: str | None, options: dict,
              maxfev: int | None = None) -> tuple[torch.Tensor, float]:
    """(times, seconds to make them): ``optimal`` is fitted for the solver in use (the registered grid is the
    one of the default sampler), with at most ``maxfev`` evaluations."""
    t0 = time.perf_counter()
    if name == "optimal":
        ts = grid_opt.optimal_grid(sde, steps, fs.T_EPS, solver or "ei", options if solver else {}, maxfev=maxfev)
    else:
        ts = grids.time_grid(sde, steps, fs.T_EPS, name)
    return ts, time.perf_counter() - t0


def run(presets, nfes, grid_names, seeds: int, n: int, solver: str | None = None, options: dict | None = None,
        n_path: int = 0, maxfev: int | None = None, log=print) -> dict:
    """The ratios to the floor per problem, preset|grid and NFE (a list over draws); with ``n_path`` > 0 also the
    pathwise error of draw 0 on its first n_path samples against the exact flow (`fewstep.reference`)."""
    options = dict(options or {})
    laws = {p: pb.problem(p) for p in PROBLEMS}
    joint = pb.Product(laws)
    errors = {p: fs.distribution_error(law) for p, law in laws.items()}
    floors = {p: fs.floor(laws[p], errors[p], n) for p in PROBLEMS}
    out = {"nfes": list(nfes), "grids": list(grid_names), "seeds": seeds, "n": n, "solver": solver,
           "options": options, "floor": floors, "ratios": {p: {} for p in PROBLEMS}, "closed_form": {},
           "fit_seconds": {}, "times": {}, "path": {p: {} for p in PROBLEMS}, "n_path": n_path}
    kwargs = {} if solver is None else {"solver": solver, **options}
    for preset in presets:
        sde = fs.PRESETS[preset]()
        ref = fs.reference(sde, joint, n, n_path, 0) if n_path > 0 else None
        cfg = fs.Config("", solver or None, options if solver else {})
        for g in grid_names:
            key = f"{preset}|{g}"
            for p in PROBLEMS:
                out["ratios"][p][key] = []
                out["path"][p][key] = []
            out["closed_form"][key], out["fit_seconds"][key], out["times"][key] = [], [], []
            for steps in nfes:
                ts, secs = make_grid(sde, steps, g, solver, options, maxfev)
                cf = float(grid_opt.plan_error(sde, ts, solver or "ei", options if solver else {}))
                cells = {p: [] for p in PROBLEMS}
                for s in range(seeds):
                    z, _ = kn.sample(sde, joint.score_fn(sde), (n, joint.dim), steps=steps, grid=ts, t_eps=fs.T_EPS,
                                  generator=torch.Generator().manual_seed(s), return_state=True, **kwargs)
                    for p in PROBLEMS:
                        cells[p].append(errors[p](z[:, 0, joint.slices[p]]) / floors[p])
                    if s == 0 and ref is not None:
                        out_x, exact = ref.target(sde, cfg.uses_gls(steps, sde.order), z)
                        for p in PROBLEMS:
                            sl = joint.slices[p]
                            out["path"][p][key].append(pb.pathwise_error(out_x[:, sl], exact[:, sl]))
                for p in PROBLEMS:
                    out["ratios"][p][key].append(cells[p])
                out["closed_form"][key].append(cf)
                out["fit_seconds"][key].append(secs)
                out["times"][key].append(ts.tolist())
                log(f"{preset:9s} {g:9s} NFE {steps:3d}  J {cf:.3g} ({secs:.1f} s)  " + "  ".join(
                    f"{p} {min(c):.2f}-{max(c):.2f}" for p, c in cells.items()))
    return out


PLANS = {"k-block flow": ("ei", {"gls_steps": 0}), "gls": ("gls", {})}


def plan_choice(presets, nfes) -> dict:
    """The closed-form error J of the two plans of the default sampler (the k-block flow with the corrector,
    the GLS plan) on the ``band`` grid, per preset and step count (no sampling): ``{"nfes": [...],
    "plans": [...], "errors": {"preset|plan": [J per step count]}}``."""
    out = {"nfes": list(nfes), "plans": list(PLANS), "errors": {}}
    for preset in presets:
        sde = fs.PRESETS[preset]()
        for label, (solver, options) in PLANS.items():
            out["errors"][f"{preset}|{label}"] = [
                float(grid_opt.plan_error(sde, grids.time_grid(sde, t, fs.T_EPS, "band"), solver, options)) for t in nfes]
    return out


def plan_choice_markdown(res: dict) -> str:
    """Markdown: `plan_choice`'s table, one row per preset and plan."""
    lines = ["| SDE | plan | " + " | ".join(f"{t} steps" for t in res["nfes"]) + " |",
             "|---|---|" + "---|" * len(res["nfes"])]
    for key, js in res["errors"].items():
        preset, label = key.split("|")
        lines.append(f"| {preset} | {label} | " + " | ".join(f"{j:.2g}" for j in js) + " |")
    return "\n".join(lines)


def _cell(c: list, goal: float | None) -> str:
    s = f"{min(c):.2f}-{max(c):.2f} ({sum(c) / len(c):.2f})"
    return f"**{s}**" if goal is not None and max(c) > goal else s


def to_markdown(res: dict) -> str:
    who = "kn.sample's default sampler" if res["solver"] is None else f"solver {res['solver']} {res['options'] or ''}"
    lines = [f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min). Machine: {res['machine']}.",
             (f"Ratio of the distribution error to the floor (exact samples) of {who}, over prior draws "
             f"0-{res['seeds'] - 1} (n = {res['n']}): min-max (mean). Bold: the worst draw misses the goal "
             f"({', '.join(f'{g}x at {t} NFE' for t, g in GOAL.items())}). J: the closed-form error of the grid "
             "(`kinetic.grid_opt.plan_error`)."), ""]
    for p in PROBLEMS:
        lines += [f"**{p}** (floor {res['floor'][p]:.4g})", "",
                  "| SDE | grid | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " |",
                  "|---|---|" + "---|" * len(res["nfes"])]
        for key, cells in res["ratios"][p].items():
            preset, g = key.split("|")
            lines.append(f"| {preset} | {g} | " + " | ".join(_cell(c, GOAL.get(t)) for t, c in zip(res["nfes"], cells)) + " |")
        lines.append("")
    if res.get("n_path"):
        for p in PROBLEMS:
            lines += [f"**{p}: pathwise error of draw 0** (first {res['n_path']} samples, against the exact flow)", "",
                      "| SDE | grid | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " |",
                      "|---|---|" + "---|" * len(res["nfes"])]
            for key, vals in res["path"][p].items():
                preset, g = key.split("|")
                lines.append(f"| {preset} | {g} | " + " | ".join(f"{v:.3g}" for v in vals) + " |")
            lines.append("")
    lines += ["**closed-form error J** (and the seconds to make the grid)", "",
              "| SDE | grid | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " |", "|---|---|" + "---|" * len(res["nfes"])]
    for key, js in res["closed_form"].items():
        preset, g = key.split("|")
        lines.append(f"| {preset} | {g} | " + " | ".join(f"{j:.2g} ({s:.1f} s)" for j, s in zip(js, res["fit_seconds"][key])) + " |")
    return "\n".join(lines)


def summary_markdown(res: dict) -> str:
    """The worst draw of the ratio to the floor of each grid (and with ``n_path`` the pathwise error of draw 0),
    grids side by side in one cell, the best in bold: the tables of docs/benchmarks.md ("Grids optimised in
    closed form"). One NFE without pathwise errors: one table, a column per problem."""
    grid_names = " / ".join(res["grids"])
    presets = list(dict.fromkeys(k.split("|")[0] for k in res["ratios"][PROBLEMS[0]]))
    draws = f"draws 0-{res['seeds'] - 1}"

    def worst(p, preset, i):
        return " / ".join(bold_min([max(res["ratios"][p][f"{preset}|{g}"][i]) for g in res["grids"]], ".2f"))

    def path(p, preset, i):
        return " / ".join(bold_min([res["path"][p][f"{preset}|{g}"][i] for g in res["grids"]], ".2g"))

    if len(res["nfes"]) == 1 and not res.get("n_path"):
        t = res["nfes"][0]
        lines = [f"**NFE {t}**: worst draw ({draws}) of the ratio to the floor, {grid_names}; bold: the best", "",
                 "| SDE | " + " | ".join(PROBLEMS) + " |", "|---|" + "---|" * len(PROBLEMS)]
        lines += [f"| {preset} | " + " | ".join(worst(p, preset, 0) for p in PROBLEMS) + " |" for preset in presets]
        return "\n".join(lines)
    nfes = " and ".join(str(t) for t in res["nfes"])
    lines = []
    for p in PROBLEMS:
        head = [f"ratio, NFE {t}" for t in res["nfes"]]
        what = f"worst draw ({draws}) of the ratio to the floor"
        if res.get("n_path"):
            head += [f"pathwise, NFE {t}" for t in res["nfes"]]
            what += f" and the pathwise error of draw 0 (first {res['n_path']} samples)"
        lines += [f"**{p}, NFE {nfes}**: {what}, {grid_names}; bold: the best", "",
                  "| SDE | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
        for preset in presets:
            cells = [worst(p, preset, i) for i in range(len(res["nfes"]))]
            if res.get("n_path"):
                cells += [path(p, preset, i) for i in range(len(res["nfes"]))]
            lines.append(f"| {preset} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines).rstrip()


def plot(res: dict, path) -> None:
    """sigma_tilde at the grid's nodes against the node index, per preset (columns) and NFE (rows), one line per grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    presets = list(dict.fromkeys(k.split("|")[0] for k in res["times"]))
    fig, axes = plt.subplots(len(res["nfes"]), len(presets), figsize=(3.2 * len(presets), 2.6 * len(res["nfes"])),
                             squeeze=False)
    for j, preset in enumerate(presets):
        sde = fs.PRESETS[preset]()
        for i, steps in enumerate(res["nfes"]):
            ax = axes[i][j]
            for g in res["grids"]:
                ts = torch.tensor(res["times"][f"{preset}|{g}"][i], dtype=torch.float64)
                sig = sde.coefficients(ts).sigma_tilde
                ax.plot(range(len(ts)), sig.numpy(), marker="o", ms=3, label=g)
            ax.set_yscale("log")
            ax.set_title(f"{preset}, {steps} steps", fontsize=8)
            ax.set_xlabel("node", fontsize=7)
            ax.set_ylabel("sigma_tilde", fontsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(fs.PRESETS))
    p.add_argument("--nfes", type=int_list, default="3,5,10,20,50")
    p.add_argument("--grids", default="band,quadratic,optimal")
    p.add_argument("--seeds", type=int, default=5, help="prior draws per cell (seeds 0 .. N-1)")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--solver", default=None, help="a deterministic solver (default: kn.sample's own default)")
    p.add_argument("--options", default="{}", help="the solver's options as JSON, e.g. '{\"gls_steps\": 0}'")
    p.add_argument("--n-path", type=int, default=0, help="pathwise error of draw 0 on this many samples (0: none)")
    p.add_argument("--maxfev", type=int, default=None, help="at most this many evaluations per fit")
    p.add_argument("--plan-choice", action="store_true",
                   help="only the closed-form error of the k-block and GLS plans on band (no sampling); with --out "
                        "writes STEM_plan_choice.{json,md}")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--stem", default="fewstep_grids")
    p.add_argument("--out", type=Path, default=None, help="folder for STEM.{json,md} (must exist)")
    a = parse(p, argv)
    presets, names = a.presets.split(","), a.grids.split(",")
    bad = [x for x in presets if x not in fs.PRESETS] + [g for g in names if g not in grids.GRIDS]
    if bad:
        p.error(f"unknown preset or grid {bad}; presets: {sorted(fs.PRESETS)}, grids: {sorted(grids.GRIDS)}")
    if a.seeds < 1 or a.n < 2 or any(x < 1 for x in a.nfes):
        p.error("--seeds must be >= 1, --n >= 2 and every NFE >= 1")
    try:
        options = json.loads(a.options)
    except json.JSONDecodeError:
        options = None
    if not isinstance(options, dict):
        p.error(f"--options: expected a JSON object, got {a.options!r}")
    if a.out is not None and not a.out.is_dir():
        p.error(f"--out: {a.out} is not a folder")
    if a.plan_choice:
        t0 = time.perf_counter()
        res = plan_choice(presets, a.nfes)
        res.update(seconds=time.perf_counter() - t0, machine=machine_line(),
                   command=command_line("fewstep_grids.py", argv))
        md = plan_choice_markdown(res)
        print(md)
        if a.out is not None:
            write_outputs(a.out, {f"{a.stem}_plan_choice.json": res, f"{a.stem}_plan_choice.md": md + "\n"})
        return
    t0 = time.perf_counter()
    res = run(presets, a.nfes, names, a.seeds, a.n, a.solver, options, a.n_path, a.maxfev)
    res.update(seconds=time.perf_counter() - t0, machine=machine_line(), command=command_line("fewstep_grids.py", argv))
    md = to_markdown(res)
    print(md)
    if a.out is not None:
        write_outputs(a.out, {f"{a.stem}.json": res, f"{a.stem}.md": md + "\n"})
        plot(res, a.out / f"{a.stem}.png")


if __name__ == "__main__":
    main()
