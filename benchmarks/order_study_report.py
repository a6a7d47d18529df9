"""Tables, paired intervals and a figure from the records of benchmarks/order_study.py.

    python benchmarks/order_study.py --report     # reads docs/figures/order_study/*.json

Writes docs/figures/order_study.json (the summary), docs/figures/order_study.md (the tables) and
docs/figures/order_study.png (fd-digits against NFE). Only what is recorded is reported: a cell
lists the training seeds behind it, so a partly finished study reads as such.

Per training seed, a cell's value is the mean fd-digits over its sampling seeds. Across training
seeds: mean and sample sd. A paired difference (method minus VP, or method over the baseline) is
taken per training seed on the same sampling seeds and real splits; its 95% interval is a
hierarchical bootstrap (training seeds resampled, then sampling seeds within each, 10,000 draws).
A difference "exceeds the seed spread" when every training seed's paired difference has the same
sign and the interval excludes zero (for ratios: one).
"""

from __future__ import annotations

import json
import math
import random
import statistics
import sys
from pathlib import Path
from typing import Any

KINETIC_ROWS = ("vp", "cld", "hold", "cld-den", "hold-den")
BASELINE_SAMPLERS = ("diffusers/dpmsolver++", "diffusers/unipc")
CROSS_ROWS = {"ddpm-net@vp": "kinetic@vp", "ddpm-net@cld": "kinetic@cld", "ddpm-net@hold": "kinetic@hold"}
N_BOOT = 10_000


def load(records: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in sorted(Path(records).glob("*-s*-*.json"))]


def cell_values(recs: list[dict], row: str, steps: int, nfe: int) -> dict[int, dict[int, float]]:
    """training seed -> {sampling seed: fd} of one table row (kinetic method, baseline sampler or cross row)."""
    if row in KINETIC_ROWS:
        method, label = row, "kinetic"
    elif row in CROSS_ROWS:
        method, label = "ddpm", CROSS_ROWS[row]
    else:
        method, label = "ddpm", row
    out: dict[int, dict[int, float]] = {}
    for r in recs:
        if r["method"] != method or r["steps"] != steps:
            continue
        vals = {}
        for key, ev in r["evals"].items():
            lab, n, s = key.rsplit("|", 2)
            if lab == label and int(n) == nfe and ev.get("fd") is not None:
                vals[int(s)] = float(ev["fd"])
        if vals:
            out[int(r["seed"])] = vals
    return out


def seed_means(vals: dict[int, dict[int, float]]) -> dict[int, float]:
    return {seed: statistics.fmean(v.values()) for seed, v in vals.items()}


def mean_sd(v: list[float]) -> tuple[float, float]:
    if not v:
        return float("nan"), float("nan")
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def paired(a: dict[int, dict[int, float]], b: dict[int, dict[int, float]], *, ratio: bool = False,
           rng_seed: int = 0) -> dict[str, Any] | None:
    """Paired a - b (or a / b) over the training seeds both hold, on their common sampling seeds."""
    seeds = sorted(set(a) & set(b))
    pairs = {s: sorted(set(a[s]) & set(b[s])) for s in seeds}
    seeds = [s for s in seeds if pairs[s]]
    if not seeds:
        return None

    def stat(sel: list[tuple[int, list[int]]]) -> float:
        per = []
        for s, ss in sel:
            ma, mb = statistics.fmean(a[s][j] for j in ss), statistics.fmean(b[s][j] for j in ss)
            per.append(ma / mb if ratio else ma - mb)
        return statistics.fmean(per)

    per_seed = {s: stat([(s, pairs[s])]) for s in seeds}
    rng = random.Random(rng_seed)
    boots = []
    for _ in range(N_BOOT):
        sel = []
        for _ in seeds:
            s = rng.choice(seeds)
            sel.append((s, [rng.choice(pairs[s]) for _ in pairs[s]]))
        boots.append(stat(sel))
    boots.sort()
    lo, hi = boots[int(0.025 * N_BOOT)], boots[int(0.975 * N_BOOT) - 1]
    null = 1.0 if ratio else 0.0
    signs = {v > null for v in per_seed.values()} if all(v != null for v in per_seed.values()) else {True, False}
    return {"seeds": seeds, "per_seed": per_seed, "mean": statistics.fmean(per_seed.values()), "lo": lo, "hi": hi,
            "exceeds": len(signs) == 1 and not (lo <= null <= hi) and len(seeds) > 1}


def summarise(recs: list[dict]) -> dict[str, Any]:
    if not recs:
        return {"cells": {}, "floor": {}, "runs": 0}
    proto = recs[0]["protocol"]
    nfes, budgets = list(proto["nfes"]), list(proto["budgets"])
    rows = list(KINETIC_ROWS) + list(BASELINE_SAMPLERS) + list(CROSS_ROWS)
    cells: dict[str, Any] = {}
    for steps in budgets:
        for nfe in nfes:
            for row in rows:
                vals = cell_values(recs, row, steps, nfe)
                if vals:
                    sm = seed_means(vals)
                    m, s = mean_sd(list(sm.values()))
                    cells[f"{row}|{steps}|{nfe}"] = {"mean": m, "sd": s, "per_seed": sm, "seeds": sorted(sm)}
        ddpm = cell_values(recs, "diffusers/ddpm", steps, proto["ddpm_steps"])
        if ddpm:
            sm = seed_means(ddpm)
            m, s = mean_sd(list(sm.values()))
            cells[f"diffusers/ddpm|{steps}|{proto['ddpm_steps']}"] = {"mean": m, "sd": s, "per_seed": sm,
                                                                     "seeds": sorted(sm)}
    floor: dict[str, list[float]] = {}
    for r in recs:
        for key, v in r["floor"].items():
            n, s = key.split("|")
            floor.setdefault(n, {})[s] = v  # the same split gives the same floor in every record
    floors = {n: mean_sd(list(v.values())) for n, v in floor.items()}
    floor_splits = {n: [v[s] for s in sorted(v)] for n, v in floor.items()}
    # paired comparisons
    comps: dict[str, Any] = {}
    for steps in budgets:
        for nfe in nfes:
            vp = cell_values(recs, "vp", steps, nfe)
            base_row = best_baseline(cells, steps, nfe)
            base = cell_values(recs, base_row, steps, nfe) if base_row else {}
            for row in [r for r in rows if r not in BASELINE_SAMPLERS]:
                vals = cell_values(recs, row, steps, nfe)
                if row != "vp" and vals and vp:
                    comps[f"{row}-vp|{steps}|{nfe}"] = paired(vals, vp)
                if vals and base:
                    comps[f"{row}/base|{steps}|{nfe}"] = paired(vals, base, ratio=True)
            if base_row:
                comps[f"base|{steps}|{nfe}"] = {"row": base_row}
    return {"protocol": proto, "cells": cells, "floor": floors, "floor_splits": floor_splits, "comparisons": comps,
            "runs": len(recs),
            "recorded": sorted(f"{r['method']}-s{r['seed']}-{r['steps']}" for r in recs)}


def best_baseline(cells: dict, steps: int, nfe: int) -> str | None:
    """The baseline's best scheduler at (steps, NFE): lowest mean over the seeds recorded."""
    cand = [(cells[f"{r}|{steps}|{nfe}"]["mean"], r) for r in BASELINE_SAMPLERS if f"{r}|{steps}|{nfe}" in cells]
    return min(cand)[1] if cand else None


def _f(m: float, s: float | None = None) -> str:
    if m is None or not math.isfinite(m):
        return "—"
    return f"{m:.2f} ± {s:.2f}" if s is not None and math.isfinite(s) and s > 0 else f"{m:.2f}"


ROW_NAMES = {
    "vp": "kinetic VP", "cld": "kinetic CLD", "hold": "kinetic HOLD", "cld-den": "kinetic CLD, denoiser",
    "hold-den": "kinetic HOLD, denoiser", "diffusers/dpmsolver++": "DDPM recipe, DPM-Solver++",
    "diffusers/unipc": "DDPM recipe, UniPC", "ddpm-net@vp": "DDPM-trained net, kinetic VP sampler",
    "ddpm-net@cld": "DDPM-trained net, kinetic CLD sampler", "ddpm-net@hold": "DDPM-trained net, kinetic HOLD sampler",
}


def to_markdown(summary: dict[str, Any]) -> str:
    if not summary["cells"]:
        return "No run of the study is recorded yet.\n"
    p = summary["protocol"]
    nfes, cells, comps = p["nfes"], summary["cells"], summary["comparisons"]
    fl = summary["floor"]
    lines = [
        f"Runs recorded: {summary['runs']} ({', '.join(summary['recorded'])}).", "",
        f"fd-digits (lower is better) of n = {p['n']} samples clamped to [-1, 1], against the other "
        f"{1797 - p['n']} real digits of the split; per training seed the mean over sampling seeds "
        f"{p['sample_seeds']} (each with its own real split); mean ± sd over training seeds, the seeds in brackets. "
        f"Floor (the n real digits of a split against the same reference), mean ± sd over the splits: "
        f"**{_f(*fl.get(str(p['n']), (float('nan'), 0)))}** "
        f"({', '.join(f'{v:.2f}' for v in summary['floor_splits'].get(str(p['n']), []))}).", ""]
    for steps in p["budgets"]:
        present = [r for r in ROW_NAMES if any(f"{r}|{steps}|{v}" in cells for v in nfes)]
        if not present:
            continue
        lines += [f"#### {steps} training steps", "", "| method | " + " | ".join(f"NFE {v}" for v in nfes) + " |",
                  "|---|" + "---|" * len(nfes)]
        for r in present:
            cs = []
            for v in nfes:
                c = cells.get(f"{r}|{steps}|{v}")
                cs.append("—" if c is None else f"{_f(c['mean'], c['sd'])} ({','.join(map(str, c['seeds']))})")
            lines.append(f"| {ROW_NAMES[r]} | " + " | ".join(cs) + " |")
        lines.append("")
        d = cells.get(f"diffusers/ddpm|{steps}|{p['ddpm_steps']}")
        if d:
            lines += [f"DDPM recipe with DDPMScheduler's {p['ddpm_steps']} steps (NFE {p['ddpm_steps']}), n = "
                      f"{p['ddpm_n']} against the other {1797 - p['ddpm_n']} digits: {_f(d['mean'], d['sd'])} (seeds "
                      f"{','.join(map(str, d['seeds']))}); floor at that n: {_f(*fl.get(str(p['ddpm_n']), (float('nan'), 0)))}.",
                      ""]
        lines += [f"Paired difference to kinetic VP at {steps} steps (fd-digits; negative: better than VP), "
                  "mean over training seeds [95% bootstrap interval]; **bold**: exceeds the seed spread.", "",
                  "| method | " + " | ".join(f"NFE {v}" for v in nfes) + " |", "|---|" + "---|" * len(nfes)]
        for r in [r for r in present if r not in BASELINE_SAMPLERS and r != "vp"]:
            lines.append(f"| {ROW_NAMES[r]} | " + " | ".join(_cmp(comps.get(f"{r}-vp|{steps}|{v}")) for v in nfes)
                         + " |")
        if not any(f"base|{steps}|{v}" in comps for v in nfes):
            lines.append("")
            continue
        lines += ["", f"Ratio to the DDPM recipe's best scheduler at the same NFE, {steps} steps (below 1: better; "
                  "the goal is at most 0.7 on every seed at NFE 10 and 20), mean over training seeds [95% interval] "
                  "and the per-seed ratios; **bold**: exceeds the seed spread.", "",
                  "| method | " + " | ".join(f"NFE {v} ({_base(comps, steps, v)})" for v in nfes) + " |",
                  "|---|" + "---|" * len(nfes)]
        for r in [r for r in present if r not in BASELINE_SAMPLERS]:
            lines.append(f"| {ROW_NAMES[r]} | " + " | ".join(_cmp(comps.get(f"{r}/base|{steps}|{v}"), per_seed=True)
                                                            for v in nfes) + " |")
        lines.append("")
    return "\n".join(lines)


def _base(comps: dict, steps: int, nfe: int) -> str:
    b = comps.get(f"base|{steps}|{nfe}")
    return "—" if not b else b["row"].split("/")[1]


def _cmp(c: dict | None, per_seed: bool = False) -> str:
    if not c:
        return "—"
    txt = f"{c['mean']:+.2f} [{c['lo']:+.2f}, {c['hi']:+.2f}]" if not per_seed else \
        f"{c['mean']:.2f} [{c['lo']:.2f}, {c['hi']:.2f}]; " + "/".join(f"{v:.2f}" for v in c["per_seed"].values())
    return f"**{txt}**" if c["exceeds"] else txt


def plot(summary: dict[str, Any], path: Path) -> Path | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from kinetic.fileio import atomic_write

    if not summary["cells"]:
        return None
    p = summary["protocol"]
    budgets = [b for b in p["budgets"] if any(k.split("|")[1] == str(b) for k in summary["cells"])]
    fig = Figure(figsize=(6 * len(budgets), 4.5), dpi=110)
    FigureCanvasAgg(fig)
    fm, fs = summary["floor"].get(str(p["n"]), (float("nan"), 0.0))
    for i, steps in enumerate(budgets):
        ax = fig.add_subplot(1, len(budgets), i + 1)
        for j, r in enumerate(ROW_NAMES):
            pts = [(v, summary["cells"][f"{r}|{steps}|{v}"]) for v in p["nfes"] if f"{r}|{steps}|{v}" in summary["cells"]]
            if not pts:
                continue
            style = {"ls": "--", "marker": "s"} if r.startswith(("diffusers", "ddpm-net")) else {"ls": "-", "marker": "o"}
            ax.errorbar([q[0] for q in pts], [q[1]["mean"] for q in pts], yerr=[q[1]["sd"] for q in pts], capsize=3,
                        color=f"C{j % 10}", label=ROW_NAMES[r], **style)
        if math.isfinite(fm):
            ax.axhline(fm, color="grey", lw=1, label=f"real digits (floor {fm:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(f"fd-digits (n = {p['n']}, clamped)")
        ax.set_title(f"{steps} training steps")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def report(records: Path, protocol: Any, docs: Path) -> str:
    """Summarise the records, write order_study.{json,md,png} under docs/figures; returns the tables."""
    from kinetic.fileio import atomic_write_text

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from quality_vs_ddpm import _jsonable  # the sibling script's plain-JSON helper

    summary = summarise(load(records))
    tables = to_markdown(summary)
    figs = Path(docs) / "figures"
    atomic_write_text(figs / "order_study.json", json.dumps(_jsonable(summary), indent=1))
    atomic_write_text(figs / "order_study.md", tables)
    plot(summary, figs / "order_study.png")
    return tables
