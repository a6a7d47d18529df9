"""`kinetic evaluate`: NLL (bits/dim), fd-digits, FID and sliced Wasserstein for a checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import cli_errors, console, load_toml_defaults
from .progress import step_progress

@cli_errors
def evaluate_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="A run directory or a checkpoint .pt file."),
    metric: List[str] = typer.Option(["swd"], "--metric", "-m", help="nll, fd-digits, fid or swd; repeatable."),
    n: int = typer.Option(1000, "--n", help="Samples to draw (fd-digits/fid/swd) or held-out examples (nll)."),
    solver: str = typer.Option("ei", "--solver", help="Sampler for the sample-based metrics."),
    steps: int = typer.Option(50, "--steps", help="Sampler steps."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    data_dir: Optional[str] = typer.Option(None, "--data-dir", help="Data folder (cifar10/folder), if not the training one."),
    inception_weights: Optional[str] = typer.Option(None, "--inception-weights", help="Path to inception-2015-12-05.pt (for fid)."),
    reference_stats: Optional[str] = typer.Option(None, "--reference-stats", help="FID reference statistics .npz (mu, sigma)."),
    grid: str = typer.Option("quadratic", "--grid", help="Time grid: uniform, quadratic (fine near the data) or logsnr."),
    t_eps: float = typer.Option(1e-3, "--t-eps", help="Sampling stops at this time."),
    denoise: bool = typer.Option(False, "--denoise", help="Finish sampling with a Tweedie denoising step."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the results to this JSON file."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with defaults for these options; flags override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Evaluate a checkpoint: NLL in bits/dim on held-out data, fd-digits, FID or sliced Wasserstein.

    Examples:

      kinetic evaluate -c runs/hold-digits --metric fd-digits --metric nll --n 500

      kinetic evaluate -c runs/hold-moons --metric swd --json results.json

      kinetic evaluate -c runs/cifar --metric fid --inception-weights ~/inception-2015-12-05.pt
    """
    o = load_toml_defaults(config, locals(), "evaluate", evaluate_cmd)
    from kinetic.evaluation import evaluate_checkpoint

    with step_progress("evaluating", None, o["quiet"]) as cb:
        res = evaluate_checkpoint(
            Path(o["checkpoint"]), list(o["metric"]), n=int(o["n"]), solver=o["solver"], steps=int(o["steps"]),
            seed=int(o["seed"]), device=o["device"], data_dir=o["data_dir"], inception_weights=o["inception_weights"],
            reference_stats=o["reference_stats"], t_eps=float(o["t_eps"]), denoise=bool(o["denoise"]), callback=cb,
            grid=o["grid"],
        )
    table = Table(title=f"{res['sde']} on {res['data']}, step {res['step']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("details")
    for m, v in res["metrics"].items():
        if m == "nll":
            table.add_row("nll (bits/dim)", f"{v['bits_per_dim']:.4f} ± {v['bits_per_dim_stderr']:.4f}",
                          f"{v['examples']} held-out examples, {v['nats_per_example']:.3f} nats/example")
        else:
            extra = f"n={res['n']}, {res.get('solver')} NFE={res.get('nfe')}; vs {v['reference']}"
            table.add_row(m, f"{v['value']:.4f}", extra)
    console.print(table)
    if o["json_out"] is not None:
        Path(o["json_out"]).write_text(json.dumps(res, indent=2))
