"""When should ``ei`` switch from the GLS plan to the k-block flow? The order study's U-Nets under both plans.

    python benchmarks/plan_switch.py [--methods vp,cld,hold] [--seeds 0,1,2] [--steps 600]
        [--nfes 5,10,20] [--sample-seeds 0,1,2] [--threads 1]

`kinetic.sample`'s default (``ei``, eta = 0) runs a grid of at most
`kinetic.solvers.ei.default_gls_steps` steps (max(3, 4k - 3)) with the GLS plan of
`kinetic.solvers.gls` and a longer one with the k-block flow. This sweep draws both plans on every
saved model of ``benchmarks/order_study.py`` (``runs/order_study/<method>-s<seed>/state-<steps>.pt``:
the digits U-Net of `kinetic train`'s defaults, 600 or 3000 steps, training seeds 0-2), at every NFE,
with ``gls_steps=0`` (the k-block flow) and ``gls_steps=NFE`` (the GLS plan); everything else is the
default. Sampling seed s draws the prior from seed 10_000 + s and scores n = 1000 samples (clamped)
against the order study's real split s, so its numbers compare with that study's.

Writes ``docs/figures/plan_switch.json`` after every model (a stopped sweep goes on from it: models
already in it are skipped) and ``docs/figures/plan_switch.md``: per model and NFE, mean fd-digits of
each plan over the sampling seeds, and across training seeds the paired difference (GLS minus
k-block) with the sign on every seed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from order_study import BY_NAME, ROOT, KineticRun, Protocol, machine, sample_kinetic, score  # noqa: E402
from quality_vs_ddpm import _jsonable, real_split  # noqa: E402

from kinetic.bench.report import int_list  # noqa: E402
from kinetic.fileio import atomic_write_text  # noqa: E402
from kinetic.sampling import DEFAULT_SOLVER  # noqa: E402
from kinetic.solvers import get_solver  # noqa: E402

PLANS = {"kblock": lambda nfe: 0, "gls": lambda nfe: nfe}
"""plan name -> the ``gls_steps`` option that selects it at ``nfe`` steps."""


def default_plan(order: int, nfe: int) -> str:
    """The plan `kinetic.sample`'s default runs at ``nfe`` steps on an SDE of ``order`` blocks (ei's own rule)."""
    return "gls" if get_solver(DEFAULT_SOLVER).uses_gls(nfe, order) else "kblock"


def draw(model, nfe: int, n: int, seed: int, gls_steps: int) -> torch.Tensor:
    """n raw samples of the order study's sampler (`order_study.sample_kinetic`) with ``gls_steps``."""
    return sample_kinetic(model.sde, model, nfe, n, seed, torch.device("cpu"), gls_steps=gls_steps)[0]


def sweep_model(method: str, seed: int, steps: int, state_file: Path, nfes, sample_seeds, n: int,
                log=print, protocol: Protocol | None = None) -> dict[str, Any]:
    """Every (NFE, plan, sampling seed) cell of one saved model: fd-digits and out-of-range share
    (``protocol``: the order study's, which sets the network size)."""
    run = KineticRun(BY_NAME[method], protocol or Protocol(), seed)
    run.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=False)["state"])
    model = run.trainer.ema_score_model()
    order = model.sde.order
    cells: dict[str, Any] = {}
    for s in sample_seeds:
        _, reference = real_split(n, s)
        for nfe in nfes:
            for plan, gls_steps in PLANS.items():
                t0 = time.perf_counter()
                res = score(draw(model, nfe, n, 10_000 + s, gls_steps(nfe)), reference)
                res["seconds"] = time.perf_counter() - t0
                cells[f"{plan}|{nfe}|{s}"] = res
                log(f"  {method} seed {seed} {steps} steps, {plan} NFE {nfe} sampling seed {s}: fd-digits "
                    f"{res['fd']:.4g} ({res['seconds']:.0f} s)" if res.get("fd") is not None else "  failed")
    return {"method": method, "seed": seed, "steps": steps, "order": order, "cells": cells,
            "default": {str(nfe): default_plan(order, nfe) for nfe in nfes}}


def summarise(models: list[dict]) -> dict[str, Any]:
    """(method, steps, NFE) -> per-seed means of each plan, the paired GLS - k-block difference and its signs."""
    out: dict[str, Any] = {}
    for m in models:
        nfes = sorted({int(k.split("|")[1]) for k in m["cells"]})
        for nfe in nfes:
            key = f"{m['method']}|{m['steps']}|{nfe}"
            row = out.setdefault(key, {"method": m["method"], "steps": m["steps"], "nfe": nfe,
                                       "default": m["default"][str(nfe)], "seeds": {}})
            means = {}
            for plan in PLANS:
                v = [c["fd"] for k, c in m["cells"].items() if k.startswith(f"{plan}|{nfe}|") and c.get("fd") is not None]
                means[plan] = statistics.fmean(v) if v else None
            row["seeds"][str(m["seed"])] = means
    for row in out.values():
        per = [v for v in row["seeds"].values() if None not in v.values()]
        for plan in PLANS:
            vals = [v[plan] for v in per]
            row[plan] = statistics.fmean(vals) if vals else None
            row[f"{plan}_sd"] = statistics.stdev(vals) if len(vals) > 1 else None
        diffs = [v["gls"] - v["kblock"] for v in per]
        row["diff"] = statistics.fmean(diffs) if diffs else None
        row["diff_min"], row["diff_max"] = (min(diffs), max(diffs)) if diffs else (None, None)
        row["best"] = None if not diffs else ("gls" if all(d < 0 for d in diffs) else
                                              "kblock" if all(d > 0 for d in diffs) else "mixed")
    return out


def to_markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["| SDE | steps | NFE | default | k-block flow | GLS plan | GLS - k-block (min, max over seeds) | "
             "better on every seed | training seeds |", "|---|---|---|---|---|---|---|---|---|"]
    for row in sorted(summary.values(), key=lambda r: (r["method"], r["steps"], r["nfe"])):
        def f(plan):
            m, s = row[plan], row[f"{plan}_sd"]
            if m is None:
                return "-"
            txt = f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")
            return f"**{txt}**" if plan == row["default"] else txt
        d = "-" if row["diff"] is None else f"{row['diff']:+.2f} ({row['diff_min']:+.2f}, {row['diff_max']:+.2f})"
        lines.append(f"| {row['method']} | {row['steps']} | {row['nfe']} | {row['default']} | {f('kblock')} | "
                     f"{f('gls')} | {d} | {row['best'] or '-'} | {', '.join(sorted(row['seeds']))} |")
    lines += ["", f"fd-digits (n = {meta['n']}, clamped), mean ± sd over training seeds of the mean over sampling "
              f"seeds {', '.join(map(str, meta['sample_seeds']))}; bold: the plan the default runs. "
              "\"Better on every seed\": the sign of GLS - k-block is the same on every training seed."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--methods", default="vp,cld,hold", help="order study methods (kinetic ones), comma-separated")
    ap.add_argument("--seeds", type=int_list, default="0,1,2", help="training seeds")
    ap.add_argument("--steps", type=int_list, default="600", help="training budgets (saved states)")
    ap.add_argument("--nfes", type=int_list, default="5,10,20")
    ap.add_argument("--sample-seeds", type=int_list, default="0,1,2")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "order_study")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "figures")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    methods = [m for m in a.methods.split(",") if m]
    bad = [m for m in methods if m not in BY_NAME or BY_NAME[m].kind != "kinetic"]
    if bad:
        known = ", ".join(k for k, v in BY_NAME.items() if v.kind == "kinetic")
        print(f"error: --methods takes kinetic methods of the order study ({known}), got {', '.join(bad)}",
              file=sys.stderr)
        return 2
    if not a.out.is_dir():
        print(f"error: --out {a.out} is not a folder", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    path = a.out / "plan_switch.json"
    res = json.loads(path.read_text()) if path.is_file() else {"models": []}
    done = {(m["method"], m["seed"], m["steps"]) for m in res["models"]}
    for steps in a.steps:
        for method in methods:
            for seed in a.seeds:
                state = a.runs / f"{method}-s{seed}" / f"state-{steps}.pt"
                if (method, seed, steps) in done:
                    continue
                if not state.is_file():
                    print(f"skip {method} seed {seed} at {steps} steps: no {state}", flush=True)
                    continue
                res["models"].append(sweep_model(method, seed, steps, state, a.nfes, a.sample_seeds, a.n,
                                                 log=lambda s: print(s, flush=True)))
                res.update({"n": a.n, "sample_seeds": list(a.sample_seeds), "machine": machine(),
                            "command": "python benchmarks/plan_switch.py " + " ".join(argv or sys.argv[1:])})
                res["summary"] = summarise(res["models"])
                atomic_write_text(path, json.dumps(_jsonable(res), indent=1))
                atomic_write_text(a.out / "plan_switch.md", to_markdown(res["summary"], res))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
