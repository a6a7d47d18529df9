"""Solver accuracy benchmark: error against NFE with exact scores, few-step sampling, and the sampler's own overhead.

    python benchmarks/solver_accuracy.py                                 # reduced sizes (~6 CPU-minutes)
    python benchmarks/solver_accuracy.py --few-step-only --few-step tables  # the few-step tables of docs/benchmarks.md
    python benchmarks/solver_accuracy.py --full                          # every NFE level and configuration

Accuracy: for VP, CLD, PSLD, HOLD and langevin(4), on a 2-D mixture of 8 Gaussians and a
64-dimensional Gaussian, every sampler is run with the exact score (`kinetic.analytic`) at NFE
10 ... 100 (1000 full). Errors: W2 between the Gaussian fitted to the samples and the true law
(Gaussian data); sliced W2 against a fresh data sample of the same size (mixture). The Monte Carlo
floor is the same metric between two fresh data samples of the same size.

Few-step (`kinetic.bench.fewstep`, sizes in `FEW_STEP`): each preset, sampler and time
grid at NFE 3, 5, 8, 10 (20, 50, 100 full) on `mixture4` and `gauss64`: the distribution error
against the exact law with its floor, and the pathwise error against the exact probability-flow map.

Writes ``<out_dir>/benchmarks_solvers.md`` (two generated blocks; the text after its
``<!-- notes -->`` marker is kept), ``<out_dir>/figures/solver_accuracy.png``,
``<out_dir>/figures/fewstep_kinetic.{json,png}`` and the few-step block of ``<out_dir>/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Sequence

import torch
from torch import Tensor

from ..metrics import sliced_wasserstein
from . import fewstep
from .problems import eigenbasis_w2, gaussian_fit_w2, gauss64, ring8, w2_gaussian
from .report import bench_parser, command_line, machine_info, machine_line, parse, replace_section, write_outputs

F64 = torch.float64  # the exact-score benchmarks run a float64 state (kn.sample defaults to float32)

__all__ = ["w2_gaussian", "gaussian_fit_w2", "eigenbasis_w2", "sliced_wasserstein", "run_accuracy", "run_focus",
           "measure_overhead", "main", "cli"]

ACCURACY_PRESETS = ("vp", "cld", "psld", "hold", "langevin4")


# ------------------------------------------------------------------ problems
def _sdes():
    return {name: fewstep.PRESETS[name]() for name in ACCURACY_PRESETS}


def _datasets():
    return {"mixture2d": ring8(), "gauss64": gauss64()}


# (label, solver, options, grid); kinetic solvers on the quadratic grid, torchsde on its uniform one
CONFIGS = [
    ("em", "em", {}, "quadratic"),
    ("em (uniform grid)", "em", {}, "uniform"),
    ("pc (snr 0.16)", "pc", {}, "quadratic"),
    ("sscs", "sscs", {}, "quadratic"),
    ("lie_trotter", "lie_trotter", {}, "quadratic"),
    ("ei order 1 (PF)", "ei", {"gls_steps": 0, "multistep": 1}, "quadratic"),
    ("ei order 2 (PF)", "ei", {"gls_steps": 0, "multistep": 2}, "quadratic"),
    ("ei order 3 (PF, default)", "ei", {"gls_steps": 0, "multistep": 3}, "quadratic"),
    ("ei order 3 (PF, data_std 0 = gDDIM R_t)", "ei", {"gls_steps": 0, "multistep": 3, "data_std": 0.0}, "quadratic"),
    ("ei order 2 (SDE, eta 1)", "ei", {"gls_steps": 0, "multistep": 2, "eta": 1.0}, "quadratic"),
    ("torchsde euler", "torchsde", {"method": "euler"}, "uniform"),
    ("torchsde srk", "torchsde", {"method": "srk"}, "uniform"),
    ("torchsde midpoint", "torchsde", {"method": "midpoint"}, "uniform"),
]
ODE_RTOLS = (1e-2, 1e-3, 1e-4)


def _evals_per_step(sde, data, solver, opts, grid) -> float:
    from kinetic.sampling import sample

    sf = data.score_fn(sde)
    nfe = []
    for steps in (2, 4):
        _, n = sample(sde, sf, (2, data.dim), solver=solver, steps=steps, grid=grid, return_state=True, dtype=F64,
                      generator=torch.Generator().manual_seed(0), **opts)
        nfe.append(n)
    return (nfe[1] - nfe[0]) / 2.0


def _error(name: str, data, x: Tensor, fresh: Tensor) -> dict:
    """Primary error (eigenbasis W2 for gauss64, sliced W2 for the mixture), plus the full-fit W2."""
    if name == "gauss64":
        return {"error": eigenbasis_w2(x, data.mean, data.cov), "error_full": gaussian_fit_w2(x, data.mean, data.cov)}
    return {"error": sliced_wasserstein(x, fresh)}


REDUCED = ("em", "pc (snr 0.16)", "sscs", "lie_trotter", "ei order 2 (PF)", "ei order 3 (PF, default)",
           "ei order 2 (SDE, eta 1)", "torchsde euler", "torchsde srk", "torchsde midpoint")


def run_accuracy(nfes, n: int, sde_names=None, data_names=None, seed: int = 0, log=None, configs=None,
                 ode_rtols=ODE_RTOLS) -> dict:
    """Error of every configuration (labels in ``configs``, default all) at every NFE budget."""
    from kinetic.sampling import sample

    sdes, datasets = _sdes(), _datasets()
    out = {"nfes": list(nfes), "n": n, "results": {}, "floor": {}, "ode": {}}
    for dname, data in datasets.items():
        if data_names and dname not in data_names:
            continue
        fresh = data.sample(n, torch.Generator().manual_seed(seed + 101))
        floors = [_error(dname, data, data.sample(n, torch.Generator().manual_seed(seed + 202 + r)), fresh) for r in range(4)]
        out["floor"][dname] = {key: sum(f[key] for f in floors) / len(floors) for key in floors[0]}
        for sname, sde in sdes.items():
            if sde_names and sname not in sde_names:
                continue
            sf = data.score_fn(sde)
            res = out["results"].setdefault(dname, {}).setdefault(sname, {})
            for label, solver, opts, grid in CONFIGS:
                if (solver == "pc" and sde.order > 1) or (configs is not None and label not in configs):
                    continue
                per = _evals_per_step(sde, data, solver, opts, grid)
                row = []
                for target in nfes:
                    steps = max(1, int(round(target / per)))
                    t0 = time.perf_counter()
                    x, nfe = sample(sde, sf, (n, data.dim), solver=solver, steps=steps, grid=grid, return_state=True,
                                    dtype=F64, generator=torch.Generator().manual_seed(seed), **opts)
                    err = _error(dname, data, x[:, 0], fresh)
                    row.append({"target": target, "nfe": nfe, **err, "seconds": time.perf_counter() - t0})
                res[label] = row
                if log:
                    log(f"{dname:10s} {sname:10s} {label:40s} " + " ".join(f"{r['error']:.4f}@{r['nfe']}" for r in row)
                        + f"  ({sum(r['seconds'] for r in row):.1f}s)")
            orow = []
            for rtol in ode_rtols:
                x, nfe = sample(sde, sf, (n, data.dim), solver="ode", rtol=rtol, atol=rtol, return_state=True,
                                dtype=F64, generator=torch.Generator().manual_seed(seed))
                orow.append({"rtol": rtol, "nfe": nfe, **_error(dname, data, x[:, 0], fresh)})
            out["ode"].setdefault(dname, {})[sname] = orow
            if log:
                log(f"{dname:10s} {sname:10s} {'ode (DOPRI5)':40s} " + " ".join(f"{r['error']:.4f}@{r['nfe']}" for r in orow))
    return out


def run_focus(nfe: int = 20, n: int = 20_000, seed: int = 0, log=None) -> dict:
    """The gauss64 problem at one NFE budget with a large sample (a ~sqrt(n/4000) lower floor):
    em, the default ei, sscs and torchsde's methods, to resolve the ratios near the floor."""
    from kinetic.sampling import sample

    data = _datasets()["gauss64"]
    floors = [eigenbasis_w2(data.sample(n, torch.Generator().manual_seed(seed + 300 + r)), data.mean, data.cov) for r in range(3)]
    out = {"nfe": nfe, "n": n, "floor": sum(floors) / len(floors), "results": {}}
    picks = [c for c in CONFIGS if c[0] in ("em", "sscs", "lie_trotter", "ei order 3 (PF, default)", "ei order 2 (SDE, eta 1)",
                                            "torchsde euler", "torchsde midpoint", "torchsde srk")]
    for sname, sde in _sdes().items():
        sf = data.score_fn(sde)
        res = out["results"].setdefault(sname, {})
        for label, solver, opts, grid in picks:
            per = _evals_per_step(sde, data, solver, opts, grid)
            x, got = sample(sde, sf, (n, data.dim), solver=solver, steps=max(1, int(round(nfe / per))), grid=grid,
                            return_state=True, dtype=F64, generator=torch.Generator().manual_seed(seed), **opts)
            res[label] = {"nfe": got, "error": eigenbasis_w2(x[:, 0], data.mean, data.cov)}
            if log:
                log(f"focus gauss64 {sname:10s} {label:28s} {res[label]['error']:.4f}@{got}")
    return out


# ------------------------------------------------------------------ overhead
def measure_overhead(batch: int = 64, steps: int = 100, repeats: int = 5) -> dict:
    """Per-step time of each sampler with a free score (zeros) vs one `small` UNet forward pass on
    (batch, k, 8, 8) float32, for k = 1..4. Sampler state in float32 (as with a network)."""
    from kinetic.models import UNet
    from kinetic.sampling import sample

    rows = {}
    for sname, sde in _sdes().items():
        k = sde.order
        noised = list(sde.noised_blocks)
        net = UNet.from_preset("small", in_channels=k, out_channels=len(noised), resolution=8).eval()
        x = torch.randn(batch, k, 8, 8)
        tt = torch.rand(batch)
        with torch.no_grad():
            for _ in range(3):
                net(x, tt)
            ts = []
            for _ in range(repeats * 4):
                t0 = time.perf_counter()
                net(x, tt)
                ts.append(time.perf_counter() - t0)
        unet = sorted(ts)[len(ts) // 2]
        def score(z, t, noised=noised):  # nearly free, nonzero (the pc corrector divides by its norm)
            return -z[:, noised[0]] if len(noised) == 1 else -z[:, noised]

        r = {"unet_ms": 1e3 * unet}
        for label, solver, opts in [("em", "em", {}), ("sscs", "sscs", {}), ("lie_trotter", "lie_trotter", {}),
                                    ("ei order 2", "ei", {"gls_steps": 0, "multistep": 2}), ("ei order 2 eta 1", "ei", {"gls_steps": 0, "multistep": 2, "eta": 1.0}),
                                    ("pc", "pc", {})]:
            if solver == "pc" and k > 1:
                continue
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                sample(sde, score, (batch, 1, 8, 8), solver=solver, steps=steps, dtype=torch.float32, **opts)
                times.append(time.perf_counter() - t0)
            per = sorted(times)[len(times) // 2] / steps
            r[label] = {"per_step_ms": 1e3 * per, "fraction": per / unet}
        rows[sname] = r
    return rows


# ------------------------------------------------------------------ report
def _plot(acc: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dnames = list(acc["results"])
    snames = list(next(iter(acc["results"].values())))
    fig, axes = plt.subplots(len(dnames), len(snames), figsize=(4.2 * len(snames), 3.6 * len(dnames)), squeeze=False)
    labels = list(dict.fromkeys(lab for d in dnames for s in snames for lab in acc["results"][d][s]))
    cmap = plt.get_cmap("tab20")
    color = {lab: cmap(i % 20) for i, lab in enumerate(labels)}
    for i, d in enumerate(dnames):
        for j, s in enumerate(snames):
            ax = axes[i][j]
            for label, row in acc["results"][d][s].items():
                style = "--" if label.startswith("torchsde") else "-"
                ax.loglog([r["nfe"] for r in row], [r["error"] for r in row], style, marker="o", ms=3, label=label,
                          color=color[label])
            ax.set_ylim(0.5 * acc["floor"][d]["error"], 10.0)  # larger errors (diverged runs) are off the chart
            orow = acc["ode"][d][s]
            ax.loglog([r["nfe"] for r in orow], [r["error"] for r in orow], ":", marker="s", ms=3, color="k", label="ode (DOPRI5)")
            ax.axhline(acc["floor"][d]["error"], color="gray", lw=1, ls="-.", label="MC floor")
            ax.set_title(f"{s} / {d} (errors > 10 off the chart)", fontsize=9)
            ax.set_xlabel("NFE")
            ax.set_ylabel("W2 (Gaussian fit, eigenbasis)" if d == "gauss64" else "sliced W2")
    handles, names = max((ax.get_legend_handles_labels() for row in axes for ax in row), key=lambda hn: len(hn[1]))
    fig.legend(handles, names, fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, 0.86, 1))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(acc: dict, ovh: dict | None, command: str, seconds: float, focus: dict | None = None) -> str:
    lines = [
        "# Solver accuracy with exact scores",
        "",
        f"Command: `{command}` ({seconds / 60:.1f} min). Machine: {machine_line()}, float64 state.",
        f"Samples per run: n = {acc['n']}. Kinetic samplers on the quadratic time grid, torchsde on its uniform grid; "
        "t_eps = 1e-3, no final denoising step. Cells: error (NFE when it differs from the column).",
        "",
        "![error vs NFE](figures/solver_accuracy.png)",
        "",
    ]
    for d, per_sde in acc["results"].items():
        metric = ("W2 between the Gaussian fitted (in the eigenbasis of S, see below) to the samples and the true N(m, S)"
                  if d == "gauss64" else "sliced W2 to a fresh data sample")
        fl = acc["floor"][d]
        lines += [f"## {d}: {metric}", "",
                  f"Monte Carlo floor (same metric, fresh data samples of the same size, mean of 4): **{fl['error']:.4f}**"
                  + (f"; for the full-covariance fit: {fl['error_full']:.4f}" if "error_full" in fl else ""), ""]
        for s, rows in per_sde.items():
            lines += [f"### {s}", "", "| solver | " + " | ".join(str(t) for t in acc["nfes"]) + " |",
                      "|---|" + "---:|" * len(acc["nfes"])]
            for label, row in rows.items():
                cells = [f"{r['error']:.4f}" + ("" if r["nfe"] == r["target"] else f" ({r['nfe']})") for r in row]
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            orow = acc["ode"][d][s]
            lines.append("| ode (DOPRI5), rtol " + "/".join(f"{r['rtol']:g}" for r in orow) + " | "
                         + "; ".join(f"{r['error']:.4f} @ {r['nfe']}" for r in orow) + " |" + " |" * (len(acc["nfes"]) - 1))
            lines.append("")
    # 20-NFE summary
    if 20 in acc["nfes"]:
        j = acc["nfes"].index(20)
        lines += ["## At 20 NFE", "", "| data | sde | best kinetic sampler | error | em | torchsde best | ratio em / best | ratio torchsde / best |",
                  "|---|---|---|---:|---:|---:|---:|---:|"]
        for d, per_sde in acc["results"].items():
            for s, rows in per_sde.items():
                kin = {lab: r[j]["error"] for lab, r in rows.items() if not lab.startswith("torchsde") and not lab.startswith("em")}
                best = min(kin, key=kin.get)
                em = rows["em"][j]["error"]
                ts = min(r[j]["error"] for lab, r in rows.items() if lab.startswith("torchsde"))
                lines.append(f"| {d} | {s} | {best} | {kin[best]:.4f} | {em:.4f} | {ts:.4f} | {em / kin[best]:.1f} | {ts / kin[best]:.1f} |")
        lines += ["", "Floors: " + ", ".join(f"{d} {acc['floor'][d]['error']:.4f}" for d in acc["results"]) + ". Ratios near "
                  "the floor understate the true gap (the error of the best sampler is then mostly Monte Carlo noise).", ""]
        if "gauss64" in acc["results"]:
            labels = list(dict.fromkeys(lab for rows in acc["results"]["gauss64"].values() for lab in rows))
            lines += ["Full-covariance fit W2 (the metric as first specified; its floor is "
                      f"{acc['floor']['gauss64']['error_full']:.4f}) at 20 NFE:", "",
                      "| sde | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(labels)]
            for s, rows in acc["results"]["gauss64"].items():
                lines.append(f"| {s} | " + " | ".join(f"{rows[lab][j]['error_full']:.3f}" if lab in rows else "-" for lab in labels) + " |")
            lines.append("")
    if focus:
        labels = list(next(iter(focus["results"].values())))
        lines += [f"## gauss64 at {focus['nfe']} NFE with n = {focus['n']} (floor {focus['floor']:.4f})", "",
                  "| sde | " + " | ".join(labels) + " | em / best kinetic | best torchsde / best kinetic |",
                  "|---|" + "---:|" * (len(labels) + 2)]
        for s, rows in focus["results"].items():
            kin = min(v["error"] for lab, v in rows.items() if not lab.startswith(("torchsde", "em")))
            ts = min(v["error"] for lab, v in rows.items() if lab.startswith("torchsde"))
            cells = [f"{v['error']:.4f}" + ("" if v["nfe"] == focus["nfe"] else f" ({v['nfe']})") for v in rows.values()]
            lines.append(f"| {s} | " + " | ".join(cells) + f" | {rows['em']['error'] / kin:.1f} | {ts / kin:.1f} |")
        lines.append("")
    if ovh:
        labels = [k for k in next(iter(ovh.values())) if k != "unet_ms"]
        lines += ["## Sampler overhead per step vs one `small` UNet forward (batch 64, 8x8, float32)", "",
                  "| sde | UNet forward (ms) | " + " | ".join(labels) + " |", "|---|---:|" + "---:|" * len(labels)]
        for s, r in ovh.items():
            cells = [f"{r[l]['per_step_ms']:.3f} ms ({100 * r[l]['fraction']:.1f}%)" if l in r else "-" for l in labels]
            lines.append(f"| {s} | {r['unet_ms']:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


FEW_STEP = {
    # the default run: order 1 against order 3, small samples (about 2 CPU-minutes)
    "reduced": {"presets": ("vp", "hold"), "nfes": (3, 5, 8, 10), "n": 4_000, "n_path": 500, "rtol": 1e-6,
                "configs": fewstep.REDUCED},
    # the few-step tables of docs/benchmarks.md: every preset, n = 20000 (about 12 CPU-minutes)
    "tables": {"presets": None, "nfes": (3, 5, 8, 10), "n": 20_000, "n_path": 500, "rtol": 1e-6,
              "configs": fewstep.REDUCED},
    # every configuration up to NFE 100 and a tight reference (hours)
    "full": {"presets": None, "nfes": (3, 5, 8, 10, 20, 50, 100), "n": 20_000, "n_path": 2000, "rtol": 1e-10,
             "configs": None},
}
"""Sizes of the few-step part (``--few-step``)."""
_SKELETON = "<!-- accuracy:begin -->\n<!-- accuracy:end -->\n\n<!-- few-step:begin -->\n<!-- few-step:end -->\n\n<!-- notes -->\n"


def _report_file(path: str) -> None:
    """Make sure the report has its two generated blocks before the hand-written notes (an older
    report without markers: everything before ``<!-- notes -->`` is the accuracy block)."""
    old = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    if "<!-- accuracy:begin -->" in old and "<!-- few-step:begin -->" in old:
        return
    head, notes = (old.split("<!-- notes -->", 1) + [""])[:2] if "<!-- notes -->" in old else (old, "")
    text = _SKELETON.replace("<!-- accuracy:begin -->\n", "<!-- accuracy:begin -->\n" + head.rstrip() + "\n" if head.strip() else "<!-- accuracy:begin -->\n")
    write_outputs(os.path.dirname(path) or ".", {os.path.basename(path): text + notes.lstrip("\n")})


def few_step_summary(few: dict, command: str, seconds: float) -> str:
    """The docs/benchmarks.md block: command, machine, the best-of tables and the figure."""
    lines = [f"Command: `{command}` ({seconds / 60:.1f} min). Machine: {machine_line()}, float64 state.",
             "Exact scores, no network; every kinetic sampler configuration and time grid (uniform, quadratic, "
             "logsnr) through `kn.sample`, t_eps = 1e-3, no final denoising. Distribution error: sliced W1 to the "
             "exact law (mixture4) or the eigenbasis W2 of the Gaussian fit (gauss64), with the ratio to the floor "
             "(the same error of exact samples of the same size). Pathwise error: RMS distance to the exact "
             "probability-flow map of the same prior draw (deterministic samplers). Per-configuration tables: "
             "[benchmarks_solvers.md](benchmarks_solvers.md).", ""]
    for p in few["results"]:
        metric = "sliced W1 to the exact law" if p.startswith("mixture") else "eigenbasis W2 of the Gaussian fit"
        lines += [f"**{p}** (n = {few['n'][p]}, {metric}; floor {few['floor'][p]:.4g}). Best of all kinetic samplers "
                  "and grids:", "", *fewstep.best_table(few, p), "",
                  f"Pathwise error of the best deterministic sampler ({p}):", "",
                  *fewstep.best_table(few, p, "path_error"), ""]
    lines += ["![few-step error against NFE](figures/fewstep_kinetic.png)", ""]
    return "\n".join(lines)


def main(full: bool = False, out_dir: str = "docs", overhead: bool = True, log=None, n: int | None = None,
         all_configs: bool | None = None, command: str | None = None, accuracy: bool = True,
         few_step: str | None = None) -> dict:
    """Run the benchmark; write ``<out_dir>/benchmarks_solvers.md`` (its generated blocks; the notes after
    ``<!-- notes -->`` stay), ``<out_dir>/figures/solver_accuracy.png``, and for the few-step part
    ``<out_dir>/figures/fewstep_kinetic.{json,png}`` and its block in ``<out_dir>/benchmarks.md``.

    Reduced (default): NFE 10, 20, 50, 100, n = 2000, the main configurations (4 CPU-minutes), and
    the few-step part at ``few_step`` size (`FEW_STEP`: "reduced" by default, "full" with full;
    "none" skips it). Full: NFE 10 ... 1000, n = 10000, every configuration (hours on 2 cores).
    ``log``: a callable receiving one progress line per configuration (the script passes print).
    """
    t0 = time.perf_counter()
    command = command or "python benchmarks/solver_accuracy.py" + (" --full" if full else "")
    path = os.path.join(out_dir, "benchmarks_solvers.md")
    _report_file(path)
    out: dict = {}
    if accuracy:
        if full:
            nfes, n_acc, rtols = (10, 20, 50, 100, 200, 1000), n or 10_000, ODE_RTOLS
        else:
            nfes, n_acc, rtols = (10, 20, 50, 100), n or 2_000, ODE_RTOLS[:2]
        all_configs = full if all_configs is None else all_configs
        acc = run_accuracy(nfes, n_acc, log=log, configs=None if all_configs else REDUCED, ode_rtols=rtols)
        focus = run_focus(20, 50_000 if full else 5 * n_acc, log=log)
        ovh = measure_overhead() if overhead else None
        seconds = time.perf_counter() - t0
        replace_section(path, "accuracy", _markdown(acc, ovh, command, seconds, focus))
        _plot(acc, os.path.join(out_dir, "figures", "solver_accuracy.png"))
        out.update({"accuracy": acc, "focus": focus, "overhead": ovh})
    few_step = few_step or ("full" if full else "reduced")
    if few_step not in (*FEW_STEP, "none"):
        raise ValueError(f"few_step must be one of {', '.join(FEW_STEP)} or none, got {few_step!r}")
    if few_step != "none":
        t1 = time.perf_counter()
        few = fewstep.run(log=log, **FEW_STEP[few_step])
        seconds = time.perf_counter() - t1
        few["machine"], few["command"], few["seconds"] = machine_info(), command, seconds
        write_outputs(out_dir, {"figures/fewstep_kinetic.json": few})
        fewstep.plot(few, os.path.join(out_dir, "figures", "fewstep_kinetic.png"))
        replace_section(path, "few-step", "## Few-step sampling\n\n" + f"Command: `{command}`. "
                        + fewstep.to_markdown(few))
        replace_section(os.path.join(out_dir, "benchmarks.md"), "few-step-kinetic", few_step_summary(few, command, seconds),
                        title="## Few-step sampling with exact scores")
        out["few_step"] = few
    out["seconds"] = time.perf_counter() - t0
    return out


def cli(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/solver_accuracy.py [--full] [--out DIR] [--few-step-only] ...``."""
    p = bench_parser(__doc__.splitlines()[0], full_help="all NFE levels (up to 1000) and n = 10000; every configuration",
                     out_help="writes OUT/benchmarks_solvers.md, OUT/figures/solver_accuracy.png, OUT/figures/fewstep_*")
    p.add_argument("--out-dir", dest="out", help=argparse.SUPPRESS)  # the older name of --out
    p.add_argument("--no-overhead", action="store_true", help="skip the sampler-overhead timing")
    p.add_argument("--n", type=int, default=None, help="samples per run (default 2000 reduced, 10000 full)")
    p.add_argument("--all-configs", action="store_true", help="every solver configuration (default only with --full)")
    p.add_argument("--few-step", choices=[*FEW_STEP, "none", "issue"], default=None,
                   help="size of the few-step part: reduced (default), tables (the tables of "
                        "docs/benchmarks.md; 'issue' is its older name), full (default with --full) or none")
    p.add_argument("--few-step-only", action="store_true", help="only the few-step part")
    a = parse(p, argv)
    if a.few_step == "issue":  # the older name of "tables", as recorded commands spell it
        a.few_step = "tables"
    if a.few_step_only and a.few_step == "none":
        p.error("--few-step-only and --few-step none leave nothing to run")
    main(full=a.full, out_dir=a.out, overhead=not a.no_overhead, n=a.n, all_configs=a.all_configs or None,
         command=command_line("solver_accuracy.py", argv), accuracy=not a.few_step_only, few_step=a.few_step,
         log=lambda line: print(line, flush=True))
