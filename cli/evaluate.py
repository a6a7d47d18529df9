"""`kinetic evaluate`: NLL (bits/dim), fd-digits, FID and sliced Wasserstein for a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import (
    DEFAULT_BATCH_SIZE, DEFAULT_THREADS, BatchSizeOpt, CheckpointOpt, DenoiseOpt, DeviceOpt, GridOpt, GuidanceOpt,
    QuietOpt, SeedOpt, SolverOpt, StepsOpt, TEpsOpt, ThreadsOpt, check_conditioning, check_writable, cli_errors,
    config_option, console, reads_config, set_threads,
)
from .progress import step_progress


def _metric_names() -> str:
    from kinetic.evaluation import METRICS

    return ", ".join(METRICS)


@cli_errors
@reads_config("evaluate")
def evaluate_cmd(
    checkpoint: CheckpointOpt,
    metric: List[str] = typer.Option(["swd"], "--metric", "-m", help=f"{_metric_names()}; repeatable."),
    n: int = typer.Option(1000, "--n", help="Samples to draw (fd-digits/fid/swd) or held-out examples (nll)."),
    solver: SolverOpt = "ei",
    steps: StepsOpt = 50,
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data folder (cifar10/folder), if not the training one."),
    inception_weights: Optional[str] = typer.Option(
        None, "--inception-weights",
        help="Path to inception-2015-12-05.pt (for fid). Loading it runs code from the file (TorchScript): use only a file you trust.",
    ),
    reference_stats: Optional[str] = typer.Option(None, "--reference-stats", help="FID reference statistics .npz (mu, sigma)."),
    grid: GridOpt = None,
    t_eps: TEpsOpt = 1e-3,
    denoise: DenoiseOpt = False,
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    guidance: GuidanceOpt = 0.0,
    threads: ThreadsOpt = DEFAULT_THREADS,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    config: config_option("evaluate") = None,
    quiet: QuietOpt = False,
) -> None:
    """Evaluate a checkpoint: NLL in bits/dim on held-out data, fd-digits, FID or sliced Wasserstein.

    Examples:

      kinetic evaluate -c runs/hold-digits --metric fd-digits --metric nll --n 500

      kinetic evaluate -c runs/hold-moons --metric swd --json results.json

      kinetic evaluate -c runs/cifar --metric fid --inception-weights ~/inception-2015-12-05.pt

      kinetic evaluate -c runs/cond-digits --metric class-accuracy --metric fd-digits-per-class --guidance 1

      kinetic evaluate -c runs/hold-digits --metric inpaint --solver ei --n 297
    """
    from kinetic.evaluation import evaluate_checkpoint
    from kinetic.fileio import atomic_write_text, json_text

    set_threads(threads)
    json_out = check_writable(json_out, "--json")  # before the work
    check_conditioning(checkpoint, None, guidance)
    with step_progress("evaluating", None, quiet) as cb:
        res = evaluate_checkpoint(
            checkpoint, list(metric), n=n, solver=solver, steps=steps, seed=seed, device=device, data_dir=data_dir,
            inception_weights=inception_weights, reference_stats=reference_stats, t_eps=t_eps, denoise=denoise,
            callback=cb, grid=grid, batch_size=batch_size, guidance=guidance,
        )
    table = Table(title=f"{res['sde']} on {res['data']}, step {res['step']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("details")
    for m, v in res["metrics"].items():
        if m == "nll":
            table.add_row("nll (bits/dim)", f"{v['bits_per_dim']:.4f} ± {v['bits_per_dim_stderr']:.4f}",
                          f"{v['examples']} held-out examples, {v['nats_per_example']:.3f} nats/example")
        elif m == "inpaint":
            table.add_row("inpaint fd-digits", f"{v['value']:.4f}",
                          f"{v['n']} completions of {v['test_digits']} held-out digits (right half), NFE={v['nfe']}")
            table.add_row("inpaint agreement", f"{v['agreement']:.4f}",
                          f"classifier vs true label (on the true digits: {v['known_accuracy']:.4f})")
        else:
            g = f", guidance {res['guidance']:g}" if res.get("guidance") else ""
            extra = f"n={res['n']}, {res.get('solver')} NFE={res.get('nfe')}{g}; vs {v['reference']}"
            table.add_row(m, "-" if v["value"] is None else f"{v['value']:.4f}", v.get("reason") or extra)
    console.print(table)
    if json_out is not None:
        atomic_write_text(json_out, json_text(res))
