"""Few-step sampling of trained networks: `gls` against the k-block flow of `ei` on the same checkpoints.

The exact-score tables of docs/benchmarks.md say which sampler is best when the score is exact; this
asks whether that holds for trained networks. For every checkpoint under ``--runs`` (e.g. the VP, CLD
and HOLD digit models of ``benchmarks/conditional.py study``, 3 seeds each) and every sampler in
`SAMPLERS`, draw n samples at each NFE (a conditional model: class i mod C for sample i, no guidance)
and score them with fd-digits (against all 1797 bundled digits) and, for a conditional model, the
class accuracy of the bundled classifier, once per sampling seed (``--seeds``: fd-digits of n = 1000 varies
by a few tenths between draws, so a crossover needs several). The last NFE serves as the converged reference.

    python benchmarks/fewstep_trained.py --runs runs/conditional --out docs/figures [--nfes 5,10,20,50,200] [--n 1000]
        [--samplers gls,gls3,kblock,eta1] [--seeds 0] [--stem fewstep_trained]

Writes ``<stem>.json`` and ``<stem>.md`` into ``--out``. Downloads nothing.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

from kinetic.bench.report import command_line, int_list, machine_line, parse, write_outputs
from kinetic.checkpoint import load_model
from kinetic.evaluation import evaluate_checkpoint, generate

SAMPLERS = {
    "gls (order 2 + corrector)": {"solver": "gls"},
    "gls, order 3 + corrector": {"solver": "gls", "multistep": 3},
    "ei-3 + corrector (k-block flow)": {"solver": "ei", "gls_steps": 0},
    "ei-3, eta 1": {"solver": "ei", "eta": 1.0},
}
"""kn.sample's default (``ei``) is the gls row at up to `kinetic.solvers.ei.default_gls_steps` steps
and the k-block row above."""
SHORT = dict(zip(("gls", "gls3", "kblock", "eta1"), SAMPLERS))
"""The names ``--samplers`` takes."""


def run(runs: Path, nfes, n: int, seeds=(0,), samplers=tuple(SAMPLERS), log=print) -> dict:
    """Every checkpoint under ``runs`` x sampler x NFE, each cell drawn with every sampling seed: its metrics are
    the mean over the seeds, and "<metric> per seed" keeps each value."""
    out = {"nfes": list(nfes), "n": n, "seeds": list(seeds), "samplers": list(samplers), "models": {}}
    ckpts = sorted(runs.glob("*/checkpoint.pt"))
    if not ckpts:
        raise SystemExit(f"--runs: no */checkpoint.pt under {runs}")
    for ck in ckpts:
        model = load_model(ck)
        sde = model[1]["sde"].get("name")
        conditional = bool(getattr(model[0], "num_classes", 0))
        metrics = ["fd-digits"] + (["class-accuracy"] if conditional else [])
        rows = {}
        for label in samplers:
            opts = SAMPLERS[label]
            solver, extra = opts["solver"], {k: v for k, v in opts.items() if k != "solver"}
            rows[label] = []
            for nfe in nfes:
                t0 = time.perf_counter()
                per_seed = [_evaluate(ck, model, metrics, n, solver, nfe, seed, extra) for seed in seeds]
                row = {"nfe": per_seed[0]["nfe"], "seconds": round(time.perf_counter() - t0, 2)}
                for m in metrics:
                    v = [r["metrics"][m]["value"] for r in per_seed]
                    row[m], row[f"{m} per seed"] = sum(v) / len(v), v
                rows[label].append(row)
            log(f"{ck.parent.name:28s} {label:38s} " + "  ".join(f"{r['fd-digits']:.2f}@{r['nfe']}" for r in rows[label]))
        out["models"][ck.parent.name] = {"sde": sde, "conditional": conditional, "rows": rows}
    return out


def _evaluate(ck, model, metrics, n, solver, steps, seed, extra):
    """Draw n samples with the sampler and its options, then score them (`evaluate_checkpoint`)."""
    samples, nfe, _, labels = generate(ck, solver=solver, steps=steps, n=n, seed=seed, model=model,
                                       return_labels=True, **extra)
    res = evaluate_checkpoint(ck, metrics, n=n, model=model, samples=samples, labels=labels)
    res["nfe"] = nfe
    return res


def to_markdown(res: dict) -> str:
    sdes = sorted({m["sde"] for m in res["models"].values()}, key=["vp", "cld", "psld", "hold", "langevin4"].index)
    lines = [f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min). Machine: {res['machine']}.",
             f"n = {res['n']} samples per cell (class i mod 10 for sample i, no guidance), sampling seeds "
             f"{', '.join(map(str, res.get('seeds', [res.get('seed')])))}; mean ± std over the checkpoints of each SDE "
             "and the sampling seeds. fd-digits: Fréchet distance in the bundled "
             "digits classifier's features to all 1797 digits (lower is better).", ""]
    for metric in ("fd-digits", "class-accuracy"):
        if not any(metric in r[0] for m in res["models"].values() for r in m["rows"].values()):
            continue
        lines += [f"**{metric}**", "", "| SDE | sampler | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " |",
                  "|---|---|" + "---:|" * len(res["nfes"])]
        for sde in sdes:
            models = [m for m in res["models"].values() if m["sde"] == sde]
            for label in res.get("samplers", SAMPLERS):
                cells = []
                for j in range(len(res["nfes"])):
                    cells_j = [m["rows"][label][j] for m in models]
                    v = [x for c in cells_j for x in c.get(f"{metric} per seed", [c[metric]])]
                    mu = sum(v) / len(v)
                    sd = math.sqrt(sum((x - mu) ** 2 for x in v) / max(len(v) - 1, 1))
                    cells.append(f"{mu:.3g} ± {sd:.2g}" if len(v) > 1 else f"{mu:.3g}")
                lines.append(f"| {sde} | {label} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=Path, required=True, help="a folder of run folders, each with a checkpoint.pt")
    p.add_argument("--out", type=Path, default=None, help="folder for fewstep_trained.{json,md} (must exist)")
    p.add_argument("--nfes", type=int_list, default="5,10,20,50,200")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seeds", type=int_list, default="0", help="sampling seeds, comma-separated")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samplers", default=",".join(SHORT), help=f"comma-separated, of {', '.join(SHORT)}")
    p.add_argument("--stem", default="fewstep_trained", help="the output files' name, without .json / .md")
    a = parse(p, argv)
    if not a.runs.is_dir():
        p.error(f"--runs: {a.runs} is not a folder")
    if a.out is not None and not a.out.is_dir():
        p.error(f"--out: {a.out} is not a folder")
    samplers = [x.strip() for x in a.samplers.split(",")]
    if not samplers or any(x not in SHORT for x in samplers):
        p.error(f"--samplers: comma-separated names of {', '.join(SHORT)} expected, got {a.samplers!r}")
    if not a.stem or "/" in a.stem:
        p.error(f"--stem: a file name without folders expected, got {a.stem!r}")
    if a.n < 2 or any(x < 1 for x in a.nfes):
        p.error("--n must be >= 2 and every NFE >= 1")
    t0 = time.perf_counter()
    res = run(a.runs, a.nfes, a.n, a.seeds, [SHORT[x] for x in samplers])
    res.update(seconds=time.perf_counter() - t0, machine=machine_line(), command=command_line("fewstep_trained.py", argv))
    md = to_markdown(res)
    print(md)
    if a.out is not None:
        write_outputs(a.out, {f"{a.stem}.json": res, f"{a.stem}.md": md + "\n"})


if __name__ == "__main__":
    main()
