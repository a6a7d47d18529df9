"""`kinetic evaluate`: NLL (bits/dim), fd-digits, FID and sliced Wasserstein for a checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import List, Optional

import typer
from rich.table import Table

from .common import cli_errors, console, load_toml_defaults, resolve_device

METRICS = ("nll", "fd-digits", "fid", "swd")


def _levels(data: str) -> int:
    """Quantisation levels of the dataset's pixels (for the bits/dim offset)."""
    return 17 if data == "digits" else 256


def evaluate_checkpoint(
    checkpoint: Path, metrics: list[str], *, n: int, solver: str, steps: int, seed: int, device: str,
    data_dir: Optional[str], inception_weights: Optional[str], reference_stats: Optional[str], quiet: bool,
    t_eps: float = 1e-3, denoise: bool = False,
) -> dict:
    """Compute the metrics; returns a plain dict (what `--json` writes)."""
    import torch

    from kinetic.checkpoint import load_checkpoint
    from kinetic.data import load_dataset

    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"--metric must be one of {', '.join(METRICS)}, got {m!r}")
    if n < 2:
        raise ValueError(f"--n must be >= 2, got {n}")
    ckpt = load_checkpoint(checkpoint)
    cfg = ckpt.get("config", {})
    data_name = cfg.get("data", "digits")
    data_dir = data_dir if data_dir is not None else cfg.get("data_dir")
    data_shape = tuple(ckpt["model_config"]["data_shape"])
    result: dict = {
        "checkpoint": str(checkpoint), "step": int(ckpt["step"]), "sde": ckpt["sde"].get("name"),
        "data": data_name, "n": n, "metrics": {},
    }
    samples = None
    if any(m in ("fd-digits", "fid", "swd") for m in metrics):
        from .sample import generate

        samples, nfe, seconds, _ = generate(
            Path(checkpoint), solver=solver, steps=steps, n=n, seed=seed, device=device, quiet=quiet,
            t_eps=t_eps, denoise=denoise,
        )
        result.update({"solver": solver, "steps": steps, "nfe": nfe, "sampling_seconds": round(seconds, 3)})
    for m in metrics:
        t0 = time.perf_counter()
        if m == "swd":
            from kinetic.metrics import sliced_wasserstein

            ref = load_dataset(data_name, data_dir=data_dir, split="test", n=n if data_name not in ("digits",) else None)
            value = float(sliced_wasserstein(samples.reshape(n, -1), ref.reshape(ref.shape[0], -1)))
            result["metrics"]["swd"] = {"value": value, "reference": f"{data_name} test split ({ref.shape[0]})"}
        elif m == "fd-digits":
            if data_shape != (1, 8, 8):
                raise ValueError(f"--metric fd-digits needs 8x8 digit images; this checkpoint models shape {data_shape}")
            from kinetic.metrics import fd_digits

            value = float(fd_digits(samples))
            result["metrics"]["fd-digits"] = {"value": value, "reference": "all 1797 bundled digits"}
        elif m == "fid":
            if inception_weights is None:
                raise ValueError(
                    "--metric fid needs --inception-weights PATH (inception-2015-12-05.pt, the TorchScript "
                    "Inception used by StyleGAN2-ADA/EDM; kinetic never downloads it)"
                )
            from kinetic.metrics import fid_from_samples

            if reference_stats is not None:
                reference = reference_stats
            else:
                reference = load_dataset(data_name, data_dir=data_dir, split="train")
            value = float(fid_from_samples(samples, reference, inception_weights, device=str(resolve_device(device))))
            result["metrics"]["fid"] = {"value": value, "reference": reference_stats or f"{data_name} train split"}
        elif m == "nll":
            from kinetic.checkpoint import load_model
            from kinetic.likelihood import bits_per_dim, log_likelihood

            dev = resolve_device(device)
            sm, _ = load_model(checkpoint, device=dev)
            x = load_dataset(data_name, data_dir=data_dir, split="test")
            x = x[:n].to(dev, torch.float64)
            gen = torch.Generator(device=dev).manual_seed(seed)
            logps = []
            from .progress import step_progress

            chunks = list(torch.split(x, 64))
            with step_progress("likelihood", len(chunks), quiet) as cb:
                for chunk in chunks:
                    logps.append(log_likelihood(sm.sde, sm.score, chunk, generator=gen).detach().cpu())
                    cb()
            logp = torch.cat(logps)
            bpd = bits_per_dim(logp, data_shape, n_bins=_levels(data_name))
            result["metrics"]["nll"] = {
                "bits_per_dim": float(bpd.mean()),
                "bits_per_dim_stderr": float(bpd.std() / len(bpd) ** 0.5),
                "nats_per_example": float(-logp.mean()),
                "examples": int(len(logp)),
                "reference": f"{data_name} test split",
                "note": "probability-flow ODE; for order k > 1 a lower bound on log p (auxiliaries marginalised)",
            }
        result["metrics"][m]["seconds"] = round(time.perf_counter() - t0, 3)
    return result


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
    res = evaluate_checkpoint(
        Path(o["checkpoint"]), list(o["metric"]), n=int(o["n"]), solver=o["solver"], steps=int(o["steps"]),
        seed=int(o["seed"]), device=o["device"], data_dir=o["data_dir"], inception_weights=o["inception_weights"],
        reference_stats=o["reference_stats"], quiet=o["quiet"], t_eps=float(o["t_eps"]), denoise=bool(o["denoise"]),
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
