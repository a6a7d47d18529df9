"""Few-step sampling with exact scores: every kinetic sampler and grid at NFE 3 ... 50.

For each preset (`PRESETS`) and problem (``mixture4``: 4 unequal 2-D Gaussians, n = 20000;
``gauss64``: the anisotropic 64-D Gaussian) every sampler configuration (`CONFIGS`) runs through
`kinetic.sample` on every time grid (`GRIDS`) at each NFE budget, with the exact score
(`kinetic.analytic`). Two errors:

- distribution: sliced W1 to the exact law (mixture4) or the eigenbasis W2 of the Gaussian fit
  (gauss64), against the floor = the same error of exact samples of the same size;
- pathwise (deterministic samplers only): the RMS distance of the sampler's output to the exact
  probability-flow map of the SAME prior draw (`problems.flow_map`, a tight DOPRI5), on the first
  ``n_path`` samples. It separates the solver's error from Monte Carlo noise.

No final denoising step; t_eps = 1e-3. Used by `kinetic.bench.solvers` (the tables of
``benchmarks/solver_accuracy.py``) and `kinetic.bench.peers` (the kinetic side of the comparison).
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

import kinetic as kn
from kinetic import grids as kinetic_grids
from kinetic import solvers as kinetic_solvers

from . import problems as pb
from .report import int_list, parse

__all__ = [
    "PRESETS", "GRIDS", "Config", "CONFIGS", "REDUCED", "NFES",
    "distribution_error", "floor", "Reference", "reference", "run_config", "run", "best",
    "to_markdown", "best_table", "cell", "config_name", "nfe_axis", "save_figure", "plot",
]

F64 = torch.float64
T_EPS = 1e-3

PRESETS: dict[str, Callable[[], kn.LinearSDE]] = {
    "vp": kn.vp, "cld": kn.cld, "psld": kn.psld, "hold": kn.hold, "langevin4": lambda: kn.langevin(4),
}
"""name -> preset constructor: adding a preset is one line."""

GRIDS = ("uniform", "quadratic", "logsnr", "band")
NFES = (3, 5, 8, 10, 20, 50)


@dataclass(frozen=True)
class Config:
    """A sampler configuration: ``solver`` None means `kinetic.sample`'s own default solver and grid."""

    label: str
    solver: str | None
    options: dict = field(default_factory=dict)

    def grids(self) -> tuple:
        return (None,) if self.solver is None else GRIDS

    def solver_name(self) -> str:
        return self.solver or inspect.signature(kn.sample).parameters["solver"].default

    def uses_gls(self, steps: int, sde_order: int) -> bool:
        """Whether a run of ``steps`` steps on an SDE of order k = ``sde_order`` integrates the VE flow of the
        GLS estimate (`kinetic.solvers.gls`)."""
        slv = kinetic_solvers.get_solver(self.solver_name(), **self.options)
        return bool(getattr(slv, "uses_gls", lambda s, k: False)(steps, sde_order))

    def deterministic(self) -> bool:
        return not kinetic_solvers.get_solver(self.solver_name(), **self.options).stochastic


CONFIGS = [
    Config("kn.sample default", None),
    Config("em", "em"),
    Config("em (PF)", "em", {"probability_flow": True}),
    Config("pc", "pc"),
    Config("sscs", "sscs"),
    Config("lie_trotter", "lie_trotter"),
    Config("ei-1", "ei", {"gls_steps": 0, "multistep": 1, "corrector": False}),
    Config("ei-2", "ei", {"gls_steps": 0, "multistep": 2, "corrector": False}),
    Config("ei-3", "ei", {"gls_steps": 0, "multistep": 3, "corrector": False}),
    Config("ei-3 (data scale 0)", "ei", {"gls_steps": 0, "multistep": 3, "data_std": 0.0, "corrector": False}),
    Config("ei-2 + corrector", "ei", {"gls_steps": 0, "multistep": 2, "corrector": True}),
    Config("ei-3 + corrector", "ei", {"gls_steps": 0, "multistep": 3, "corrector": True}),
    Config("ei-3 + corrector, logsigma", "ei", {"gls_steps": 0, "multistep": 3, "corrector": True, "poly": "logsigma"}),
    Config("ei-2 (eta 1)", "ei", {"gls_steps": 0, "multistep": 2, "eta": 1.0}),
    Config("ei-3 (eta 1)", "ei", {"gls_steps": 0, "multistep": 3, "eta": 1.0}),
    Config("gls-2 + corrector", "gls", {"multistep": 2}),
    Config("gls-3 + corrector", "gls", {"multistep": 3}),
    Config("gls-3", "gls", {"multistep": 3, "corrector": False}),
]
REDUCED = ("kn.sample default", "em", "sscs", "ei-2", "ei-3", "ei-2 (eta 1)", "pc")
FEWSTEP_TABLE = ("kn.sample default", "ei-3", "ei-3 + corrector", "ei-3 (eta 1)", "gls-3 + corrector", "gls-3")
"""The configurations compared by ``python -m kinetic.bench.fewstep`` (the tables of docs/benchmarks.md, "Few-step sampling")."""


# ------------------------------------------------------------------ errors and the reference
def distribution_error(law) -> Callable[[Tensor], float]:
    """The error of samples x (n, d) against the exact law: sliced W1 (mixtures, `problems.SlicedW1ToMixture`)
    or the eigenbasis W2 of the Gaussian fit (Gaussians)."""
    if isinstance(law, kn.analytic.GaussianMixture):
        return pb.SlicedW1ToMixture(law, n_proj=32)
    return lambda x: pb.eigenbasis_w2(x, law.mean, law.cov)


def floor(law, error: Callable[[Tensor], float], n: int, seed: int = 0, repeats: int = 3) -> float:
    """The distribution error of exact samples of size n (mean over ``repeats`` draws)."""
    return sum(error(law.sample(n, torch.Generator().manual_seed(seed + 500 + r))) for r in range(repeats)) / repeats


@dataclass
class Reference:
    """The prior draw z_T (n, k, d) of a seed, its exact probability-flow image x_ref (n_path, d), and
    x_gls (n_path, d): the GLS estimate at t_eps under the flow of the ``gls`` solver
    (`problems.gls_flow_map`; the same as x_ref for k = 1)."""

    z_T: Tensor
    x_ref: Tensor
    nfe: int
    seconds: float
    x_gls: Tensor | None = None

    def target(self, sde, gls: bool, z: Tensor) -> tuple[Tensor, Tensor]:
        """(output, exact) of a deterministic sampler whose final state is z (n, k, d): the data block and
        x_ref, or for a run of the GLS flow (``gls``) on k > 1 the GLS estimate of the state and x_gls."""
        if gls and sde.order > 1:
            return pb.gls_estimate(sde, z[: self.x_gls.shape[0]], T_EPS), self.x_gls
        return z[: self.x_ref.shape[0], 0], self.x_ref


def reference(sde, law, n: int, n_path: int, seed: int = 0, rtol: float = 1e-8) -> Reference:
    """Draw z_T as `kinetic.sample` does for ``generator=manual_seed(seed)`` and map its first
    ``n_path`` rows through the probability-flow ODE (`problems.flow_map`) to t_eps."""
    z_T = sde.prior_sample((n, law.dim), generator=torch.Generator().manual_seed(seed), dtype=F64)
    sf = law.score_fn(sde)
    calls = [0]

    def counted(z, t):
        calls[0] += 1
        return sf(z, t)

    t0 = time.perf_counter()
    x_ref = pb.flow_map(sde, counted, z_T[:n_path], T_EPS, rtol=rtol)[:, 0]
    seconds = time.perf_counter() - t0
    x_gls = None if sde.order == 1 else pb.gls_flow_map(sde, sf, z_T[:n_path], T_EPS, rtol=rtol)
    return Reference(z_T, x_ref, calls[0], seconds, x_gls)


class _FirstCall:
    """Wraps a score_fn and remembers the state of its first call (to check the prior draw)."""

    def __init__(self, fn):
        self.fn, self.first = fn, None

    def __call__(self, z, t):
        if self.first is None:
            self.first = (z.detach().clone(), float(t.reshape(-1)[0]))
        return self.fn(z, t)


def _sample(sde, score, n: int, d: int, cfg: Config, grid, steps: int, seed: int):
    kwargs = {} if cfg.solver is None else {"solver": cfg.solver, "grid": grid, **cfg.options}
    return kn.sample(sde, score, (n, d), steps=steps, t_eps=T_EPS, return_state=True, dtype=torch.float64,
                     generator=torch.Generator().manual_seed(seed), **kwargs)


_CANNOT_RUN = (ValueError, AttributeError, NotImplementedError)
"""What a sampler raises for an SDE it does not support yet (e.g. noise on several blocks): the row is skipped."""


def run_config(sde, law, errors: dict, cfg: Config, grid, nfes, n: int, ref: Reference | None,
               seed: int = 0) -> dict[str, list[dict]]:
    """One configuration on one grid at every NFE budget.

    law: a data law, or a `problems.Product` of several; errors: {problem: (column slice, error fn)}.
    Returns {problem: rows {target, nfe, error, path_error, seconds}}. Steps = the budget divided
    by the NFE a step takes (learnt from the first run: pc takes 2), never above the budget. A run
    that fails (e.g. pc on order > 1) gives a row {"target", "skipped": reason}.
    """
    try:
        path = ref is not None and cfg.deterministic()
    except _CANNOT_RUN as err:
        return {p: [{"skipped": str(err).splitlines()[0]}] for p in errors}
    out: dict[str, list[dict]] = {p: [] for p in errors}
    per = None
    for target in nfes:
        t0 = time.perf_counter()
        try:
            steps = max(1, int(target // (per or 1)))
            score = _FirstCall(law.score_fn(sde))
            z, nfe = _sample(sde, score, n, law.dim, cfg, grid, steps, seed)
            if per is None:
                per = nfe / steps
                if nfe > target and steps > 1:  # more than one NFE a step: the largest step count in budget
                    score = _FirstCall(law.score_fn(sde))
                    z, nfe = _sample(sde, score, n, law.dim, cfg, grid, max(1, int(target // per)), seed)
        except _CANNOT_RUN as err:  # an SDE the solver cannot run, a grid with repeated times, non-finite samples
            for rows in out.values():
                rows.append({"target": target, "skipped": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            continue
        if path:
            z_first, t_first = score.first
            if abs(t_first - sde.T) < 1e-12 and not torch.equal(z_first, ref.z_T):
                raise RuntimeError("kinetic.sample's prior draw differs from sde.prior_sample with the same "
                                   "generator: the pathwise error would compare different draws")
        seconds = time.perf_counter() - t0
        for p, (sl, error) in errors.items():
            x = z[:, 0, sl]
            if path:
                out_x, exact = ref.target(sde, cfg.uses_gls(int(round(nfe / per)), sde.order), z)
                pe = pb.pathwise_error(out_x[:, sl], exact[:, sl])
            else:
                pe = None
            out[p].append({"target": target, "nfe": nfe, "error": error(x), "path_error": pe, "seconds": seconds})
    return out


def _coordinatewise(cfg: Config) -> bool:
    """Samplers that act on each data coordinate alike (all but pc, whose step uses the score's norm)."""
    return cfg.solver != "pc"


def run(problems=("mixture4", "gauss64"), presets=None, nfes=NFES, n: int = 20_000, n_path: int = 500,
        configs=None, seed: int = 0, rtol: float = 1e-8, log=None, references: dict | None = None) -> dict:
    """Every configuration (labels ``configs``, default all) x grid x NFE, per preset and problem.

    The problems are sampled together as one `problems.Product` state (n samples of each; the same
    as separate runs for coordinate-wise samplers, at half the cost of the k x k plans); pc runs
    each problem on its own. Returns plain data: {"nfes", "n", "n_path", "rtol", "floor": {problem},
    "reference": {sde}, "results": {problem: {sde: {label: {grid: [rows]}}}}, "deterministic": {label}}.
    ``references``: a dict that receives each preset's `Reference` (to reuse the exact flow).
    """
    presets = list(presets or PRESETS)
    cfgs = [c for c in CONFIGS if configs is None or c.label in configs]
    laws = {p: pb.problem(p) for p in problems}
    joint = pb.Product(laws)
    errors = {p: (joint.slices[p], distribution_error(law)) for p, law in laws.items()}
    out = {"nfes": list(nfes), "n": {p: n for p in problems}, "n_path": n_path, "rtol": rtol, "t_eps": T_EPS,
           "floor": {p: floor(laws[p], errors[p][1], n, seed) for p in problems}, "reference": {},
           "results": {p: {} for p in problems}, "deterministic": {c.label: c.deterministic() for c in cfgs}}
    for sname in presets:
        sde = PRESETS[sname]()
        ref = reference(sde, joint, n, n_path, seed, rtol)
        out["reference"][sname] = {"nfe": ref.nfe, "seconds": ref.seconds}
        if references is not None:
            references[sname] = ref
        for p in problems:
            out["results"][p][sname] = {}
        for cfg in cfgs:
            for g in cfg.grids():
                if _coordinatewise(cfg):
                    per_problem = run_config(sde, joint, errors, cfg, g, nfes, n, ref, seed)
                else:  # stochastic: no pathwise error, so no reference needed
                    per_problem = {p: run_config(sde, laws[p], {p: (slice(None), errors[p][1])}, cfg, g, nfes, n,
                                                 None, seed)[p] for p in problems}
                for p, rows in per_problem.items():
                    out["results"][p][sname].setdefault(cfg.label, {})[str(g)] = rows
            if log:
                for p in problems:
                    log(f"few-step {p:8s} {sname:9s} {cfg.label:22s} " + "  ".join(
                        f"{g}: " + " ".join(f"{r['error']:.3g}@{r['nfe']}" for r in rows if "error" in r)
                        for g, rows in out["results"][p][sname][cfg.label].items()))
    return out


# ------------------------------------------------------------------ summaries
def best(res: dict, problem: str, sde: str, target: int, key: str = "error", labels=None) -> dict | None:
    """The smallest ``key`` over configurations (``labels``, default all) and grids at NFE <= target:
    {"value", "label", "grid", "nfe"} or None."""
    found = None
    for label, per_grid in res["results"][problem][sde].items():
        if labels is not None and label not in labels:
            continue
        for grid, rows in per_grid.items():
            for r in rows:
                v = r.get(key)
                if r.get("target") == target and v is not None and r["nfe"] <= target and math.isfinite(v):
                    if found is None or v < found["value"]:
                        found = {"value": v, "label": label, "grid": grid, "nfe": r["nfe"]}
    return found


def cell(v: float | None, fl: float | None = None) -> str:
    if v is None:
        return "-"
    s = f"{v:.3g}" if v < 100 else f"{v:.0f}"
    return s + (f" ({v / fl:.1f}x)" if fl else "")


def config_name(b: dict) -> str:
    """"label, grid" of a `best` result ("kn.sample default" has no grid of its own)."""
    return b["label"] if b["grid"] == "None" else f"{b['label']}, {b['grid']}"


def best_table(res: dict, problem: str, key: str = "error") -> list[str]:
    """Markdown rows: NFE x SDE, the best of all kinetic samplers and grids ("path_error": deterministic)."""
    sdes = list(res["results"][problem])
    fl = res["floor"][problem] if key == "error" else None
    lines = ["| NFE | " + " | ".join(sdes) + " |", "|---|" + "---|" * len(sdes)]
    for target in res["nfes"]:
        cells = []
        for s in sdes:
            b = best(res, problem, s, target, key)
            cells.append("-" if b is None else f"{cell(b['value'], fl)}: {config_name(b)}")
        lines.append(f"| {target} | " + " | ".join(cells) + " |")
    return lines


def to_markdown(res: dict) -> str:
    """Per problem: the best-of tables, then per SDE every configuration x grid (error and ratio to
    the floor; the pathwise error for deterministic samplers)."""
    refs = ", ".join(f"{s} {r['nfe']} NFE" for s, r in res["reference"].items())
    lines = [f"No final denoising, t_eps = {res['t_eps']:g}. Pathwise errors: RMS over the first {res['n_path']} "
             f"samples of |x - x_ref|, x_ref the probability-flow ODE (DOPRI5 in log t, rtol = atol = {res['rtol']:g}, "
             f"max norm; {refs}) from the same prior draw. A cell `v (r x)` is the error and its ratio to the floor; "
             "`@m`: the run used m NFE (the budget in the column could not be met exactly).", ""]
    for p, per_sde in res["results"].items():
        metric = "sliced W1 to the exact law" if p.startswith("mixture") else "eigenbasis W2 of the Gaussian fit"
        lines += [f"### {p}: {metric}, n = {res['n'][p]}; floor (exact samples) {res['floor'][p]:.4g}", "",
                  "Best of all kinetic samplers and grids (distribution error):", "", *best_table(res, p), "",
                  "Best deterministic sampler, pathwise error:", "", *best_table(res, p, "path_error"), ""]
        for s, per_label in per_sde.items():
            lines += [f"#### {p} / {s}", "",
                      "| sampler | grid | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " | pathwise at "
                      + ", ".join(str(t) for t in res["nfes"]) + " |",
                      "|---|---|" + "---:|" * len(res["nfes"]) + "---|"]
            for label, per_grid in per_label.items():
                for grid, rows in per_grid.items():
                    if all("skipped" in r for r in rows):
                        continue
                    by = {r["target"]: r for r in rows}
                    cells, paths = [], []
                    for t in res["nfes"]:
                        r = by.get(t, {})
                        if "error" not in r:
                            cells.append("-")
                            paths.append("-")
                            continue
                        cells.append(cell(r["error"], res["floor"][p]) + ("" if r["nfe"] == t else f" @{r['nfe']}"))
                        paths.append("-" if r["path_error"] is None else f"{r['path_error']:.2g}")
                    path = ", ".join(paths) if res["deterministic"].get(label) else "(stochastic)"
                    lines.append(f"| {label} | {grid if grid != 'None' else 'default'} | " + " | ".join(cells)
                                 + f" | {path} |")
            lines.append("")
    return "\n".join(lines)


def nfe_axis(ax, nfes) -> None:
    """Log-log axes with the NFE budgets as the x ticks."""
    from matplotlib.ticker import NullFormatter

    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(list(nfes))
    ax.set_xticklabels([str(t) for t in nfes])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("NFE (score calls)")


def save_figure(fig, axes, path: str, right: float) -> None:
    """One legend for all panels (each label once) at the right of ``right`` (a fraction), saved and closed."""
    import matplotlib.pyplot as plt

    handles = {}
    for ax in axes.reshape(-1):
        for h, n in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(n, h)
    fig.legend(list(handles.values()), list(handles), fontsize=7, loc="center right")
    fig.tight_layout(rect=(0, 0, right, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot(res: dict, path: str, top: float = 10.0) -> None:
    """Error against NFE: a row per (problem, distribution / pathwise error), a column per SDE, one
    line per sampler (its best grid at each NFE; dashed: stochastic). Errors above ``top`` are off the chart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(res["results"])
    sdes = list(next(iter(res["results"].values())))
    rows = [(p, key) for p in probs for key in ("error", "path_error")]
    fig, axes = plt.subplots(len(rows), len(sdes), figsize=(3.8 * len(sdes), 3.0 * len(rows)), squeeze=False)
    labels = list(res["deterministic"])
    cmap = plt.get_cmap("tab10")
    color = {label: cmap(i % 10) for i, label in enumerate(labels)}
    for i, (p, key) in enumerate(rows):
        for j, s in enumerate(sdes):
            ax = axes[i][j]
            for label in labels:
                if key == "path_error" and not res["deterministic"][label]:
                    continue
                pts = [(t, best(res, p, s, t, key, labels=[label])) for t in res["nfes"]]
                pts = [(t, b["value"]) for t, b in pts if b is not None]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=3, color=color[label], label=label,
                            ls="-" if res["deterministic"][label] else "--")
            if key == "error":
                ax.axhline(res["floor"][p], color="gray", lw=1, ls="-.", label="floor (exact samples)")
            nfe_axis(ax, res["nfes"])
            lo, hi = ax.get_ylim()
            ax.set_ylim(lo, min(hi, top))
            ax.set_title(f"{s} / {p}: {'distribution' if key == 'error' else 'pathwise'} error", fontsize=8)
    save_figure(fig, axes, path, 0.85)


def main(argv=None) -> None:
    """``python -m kinetic.bench.fewstep [--presets vp,hold] [--configs LABEL;LABEL] [--grids quadratic,band]
    [--nfes 3,5,8,10] [--n 20000] [--threads 1] [--out FILE.md]``: `run` for some configurations and grids;
    writes `to_markdown` (and FILE.json with the raw rows), prints one line per configuration."""
    import argparse
    import json
    import os

    global GRIDS  # Config.grids() reads it

    p = argparse.ArgumentParser(prog="python -m kinetic.bench.fewstep", description=main.__doc__.splitlines()[0])
    p.add_argument("--presets", default=",".join(PRESETS))
    p.add_argument("--configs", default=";".join(FEWSTEP_TABLE), help="labels of CONFIGS, separated by ';'")
    p.add_argument("--grids", default=",".join(GRIDS))
    p.add_argument("--nfes", type=int_list, default="3,5,8,10")
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--n-path", type=int, default=500)
    p.add_argument("--rtol", type=float, default=1e-6)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="markdown file to write (its folder must exist)")
    a = parse(p, argv)  # also sets torch's thread count
    labels = [c for c in a.configs.split(";") if c]
    known = {c.label for c in CONFIGS}
    bad = [c for c in labels if c not in known] + [g for g in a.grids.split(",") if g not in kinetic_grids.GRIDS]
    bad += [s for s in a.presets.split(",") if s not in PRESETS]
    if bad:
        p.error(f"unknown configuration, grid or preset {bad}; configurations: {sorted(known)}")
    if a.out and not os.path.isdir(os.path.dirname(os.path.abspath(a.out))):
        p.error(f"--out: the folder of {a.out!r} does not exist")
    GRIDS = tuple(a.grids.split(","))
    t0 = time.perf_counter()
    res = run(presets=a.presets.split(","), nfes=a.nfes, n=a.n, n_path=a.n_path,
              configs=labels, rtol=a.rtol, log=print)
    res["seconds"] = time.perf_counter() - t0
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            f.write(to_markdown(res) + "\n")
        with open(os.path.splitext(a.out)[0] + ".json", "w", encoding="utf-8") as f:
            json.dump(res, f)
    print(f"{res['seconds']:.0f} s")


if __name__ == "__main__":
    main()
