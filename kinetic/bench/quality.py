"""Does order help? Sample quality of VP, CLD, HOLD and langevin(4) trained under one equal budget.

Every SDE gets the same network (the flattening MLP of `--model mlp`, preset `small`), the same data,
steps, batch size, learning rate and seeds. Each trained model is evaluated with several samplers at
NFE 10, 20, 50, 100 and 1000: fd-digits (digits) or sliced Wasserstein (2-D toy), plus the NLL in
bits/dim on the held-out digits through the probability-flow ODE.

    python benchmarks/quality.py [--full] [--out docs]        (reduced: 1 seed, fewer steps)
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Sequence

from .report import bench_parser, parse, write_outputs

__all__ = ["OBJECTIVES", "SDES", "NFES", "run", "to_markdown", "main", "cli"]

SDES = [("vp", None), ("cld", None), ("hold", None), ("langevin", 4)]
NFES = [10, 20, 50, 100, 1000]


def _label(sde: str, order) -> str:
    return f"langevin{order}" if sde == "langevin" else sde


def _samplers(order: int) -> list[str]:
    """EM (the baseline) and kinetic's exact-linear-part samplers that apply to this order."""
    return ["em", "ei", "sscs"] if order > 1 else ["em", "ei", "pc"]


OBJECTIVES = {
    # the objective of the recorded study: x0 parameterisation, plain eps-MSE weighting, t ~ U[t_eps, T]
    "x0-uniform": {"parameterization": "x0", "weighting": "eps", "time_sampling": "uniform"},
    # kinetic's training default: EDM weighting with log-normal noise levels
    "edm-lognormal": {"parameterization": "x0", "weighting": "edm", "time_sampling": "lognormal"},
}


def _train_one(sde, order, data, seed, steps, batch, lr, out: Path, objective: str = "x0-uniform"):
    from kinetic.config import TrainConfig
    from kinetic.training import train

    cfg = TrainConfig(
        sde=sde, order=order, data=data, model="mlp", model_size="small", steps=steps, batch_size=batch, lr=lr,
        warmup=min(200, steps // 10), seed=seed, device="cpu", out=str(out), overwrite=True, sample_every=0,
        ckpt_every=0, ema_decay=0.999, **OBJECTIVES[objective],
    )
    return train(cfg)


def run(full: bool = False, out_dir: str = "docs", runs_dir: str = "runs/quality", log=print,
        objective: str = "x0-uniform", seeds=None, nfes=None, datasets=("digits", "moons")) -> dict:
    from kinetic.checkpoint import load_model
    from kinetic.data import save_image_grid
    from kinetic.evaluation import evaluate_checkpoint

    seeds = list(seeds) if seeds is not None else ([0, 1, 2] if full else [0])
    steps = 4000 if full else 1500
    toy_steps = 2000 if full else 800
    n = 1000 if full else 500
    nfes = list(nfes) if nfes is not None else (NFES if full else [10, 20, 50, 100])
    results: dict = {"config": {"seeds": seeds, "steps": steps, "toy_steps": toy_steps, "batch": 128, "lr": 1e-3,
                                "network": "mlp small (flattening MLP, hidden 256, depth 4)", "n_samples": n,
                                "nfes": nfes, "objective": objective, **OBJECTIVES[objective]}, "runs": []}
    figs = Path(out_dir) / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    for data, metric in [(d, m) for d, m in [("digits", "fd-digits"), ("moons", "swd")] if d in datasets]:
        for sde, order in SDES:
            label = _label(sde, order)
            for seed in seeds:
                out = Path(runs_dir) / f"{data}-{label}-s{seed}"
                t0 = time.perf_counter()
                summ = _train_one(sde, order, data, seed, steps if data == "digits" else toy_steps, 128, 1e-3, out,
                                  objective)
                train_s = time.perf_counter() - t0
                model = load_model(out)
                k = model[0].sde.order
                row = {"data": data, "sde": label, "order": k, "seed": seed, "train_seconds": round(train_s, 1),
                       "final_loss": summ.get("loss"), "metric": metric, "values": {}}
                for solver in _samplers(k):
                    for nfe in nfes:
                        steps_for = nfe // 2 if solver == "pc" else nfe
                        res = evaluate_checkpoint(out, [metric], n=n, solver=solver, steps=steps_for, seed=seed,
                                                  model=model)
                        row["values"][f"{solver}@{nfe}"] = res["metrics"][metric]["value"]
                        log(f"{data} {label} seed {seed} {solver} NFE {res['nfe']}: {metric} = "
                            f"{res['metrics'][metric]['value']:.4g}")
                if data == "digits":
                    nll = evaluate_checkpoint(out, ["nll"], n=297, seed=seed, model=model)["metrics"]["nll"]
                    row["nll_bpd"] = nll["bits_per_dim"]
                    row["nll_bpd_stderr"] = nll["bits_per_dim_stderr"]
                    log(f"{data} {label} seed {seed}: NLL {nll['bits_per_dim']:.4f} bits/dim")
                    if seed == seeds[0]:
                        from kinetic.evaluation import generate

                        x, _, _ = generate(out, solver="ei", steps=100, n=64, seed=0, model=model)
                        save_image_grid(x.clamp(-1, 1), figs / f"quality_digits_{objective}_{label}.png", nrow=8,
                                        scale=4)
                results["runs"].append(row)
                write_outputs(out_dir, {f"quality_results_{objective}.json": results})
    return results


def _mean_std(v: list[float]) -> str:
    if len(v) == 1:
        return f"{v[0]:.3g}"
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1))
    return f"{m:.3g} ± {s:.2g}"


def to_markdown(results: dict) -> str:
    cfg = results["config"]
    lines = [f"Objective `{cfg.get('objective', 'x0-uniform')}`; {cfg['steps']} steps (toy {cfg['toy_steps']}), "
             f"batch {cfg['batch']}, lr {cfg['lr']}, {cfg['network']}, n = {cfg['n_samples']} samples.", ""]
    for data, metric in [("digits", "fd-digits"), ("moons", "swd")]:
        rows = [r for r in results["runs"] if r["data"] == data]
        if not rows:
            continue
        lines += [f"### {data}: {metric} (lower is better; mean ± std over seeds {cfg['seeds']})", ""]
        keys = sorted({k for r in rows for k in r["values"]}, key=lambda s: (s.split("@")[0], int(s.split("@")[1])))
        solvers = sorted({k.split("@")[0] for k in keys}, key=["em", "pc", "sscs", "ei"].index)
        head = "| SDE | sampler | " + " | ".join(f"NFE {n}" for n in cfg["nfes"]) + " |"
        lines += [head, "|" + "---|" * (2 + len(cfg["nfes"]))]
        for label in [_label(s, o) for s, o in SDES]:
            rs = [r for r in rows if r["sde"] == label]
            if not rs:
                continue
            for solver in solvers:
                cells = []
                for nfe in cfg["nfes"]:
                    v = [r["values"].get(f"{solver}@{nfe}") for r in rs]
                    v = [x for x in v if x is not None]
                    cells.append(_mean_std(v) if v else "—")
                if any(c != "—" for c in cells):
                    lines.append(f"| {label} | {solver} | " + " | ".join(cells) + " |")
        if data == "digits":
            lines += ["", "| SDE | NLL (bits/dim, held-out 297 digits) | train time (s) |", "|---|---|---|"]
            for label in [_label(s, o) for s, o in SDES]:
                rs = [r for r in rows if r["sde"] == label]
                if rs:
                    lines.append(f"| {label} | {_mean_std([r['nll_bpd'] for r in rs])} | "
                                 f"{_mean_std([r['train_seconds'] for r in rs])} |")
        lines.append("")
    return "\n".join(lines)


def main(full: bool = False, out_dir: str = "docs") -> dict:
    """Run the study with the x0-uniform objective; writes out_dir/quality_tables_x0-uniform.md."""
    res = run(full, out_dir, log=lambda *a: None)
    write_outputs(out_dir, {"quality_tables_x0-uniform.md": to_markdown(res)})
    return res


def cli(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/quality.py [--full] [--out DIR] [--objective ...]``: writes
    OUT/quality_tables_<objective>.md, OUT/quality_results_<objective>.json and sample grids."""
    p = bench_parser(__doc__.splitlines()[0], full_help="3 seeds, 4000 steps, n=1000, NFE up to 1000")
    p.add_argument("--runs", default="runs/quality", help="directory for the trained runs")
    p.add_argument("--objective", default="x0-uniform", choices=sorted(OBJECTIVES))
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--nfes", type=int, nargs="+", default=None)
    p.add_argument("--datasets", nargs="+", default=["digits", "moons"])
    a = parse(p, argv)
    r = run(a.full, a.out, a.runs, log=lambda *x: print(*x, flush=True), objective=a.objective, seeds=a.seeds,
            nfes=a.nfes, datasets=a.datasets)
    write_outputs(a.out, {f"quality_tables_{a.objective}.md": to_markdown(r)})
    print(to_markdown(r))


if __name__ == "__main__":
    cli()
