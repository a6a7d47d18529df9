"""`kinetic train`: train a score model (register with ``app.command("train")(train)``)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from .common import console, err_console, fail

# Every option defaults to None so that "given on the command line" can be told apart from "not
# given": explicit flags override a --config file, which overrides TrainConfig's defaults.


def _option_name(field: str | None) -> str:
    return f"--{field.replace('_', '-')}" if field else "config"


def _config_from_cli(config_file: Optional[Path], flags: dict):
    """TrainConfig from TrainConfig() <- the TOML file <- explicit flags; sde chosen from --order."""
    from kinetic.config import ConfigError, TrainConfig

    if config_file is not None:
        try:
            cfg = TrainConfig.load(config_file)
        except ConfigError as err:
            raise ConfigError(f"--config: {err}", None) from None
    else:
        cfg = TrainConfig()
    given = {k: v for k, v in flags.items() if v is not None}
    if "order" in given and "sde" not in given:
        k = given["order"]
        if isinstance(k, int) and k < 1:
            raise ConfigError(f"order must be an integer >= 1; got {k}", "order")
        if cfg.sde != "langevin" or config_file is None:
            given["sde"] = {1: "vp", 2: "cld", 3: "hold"}.get(k, "langevin")
        if given["sde"] != "langevin":
            given["order"] = None  # vp / cld / hold have a fixed order
    if given.get("sde") not in (None, "langevin") and "order" not in given:
        given["order"] = None
    if "sde" in given and given["sde"] != cfg.sde and "sde_params" not in given:
        given["sde_params"] = {}  # the file's preset arguments belong to the file's SDE
    try:
        return cfg.replace(**given).validate()
    except TypeError as err:  # pragma: no cover - a field name typo in this module
        raise ConfigError(str(err), None) from None


class _Progress:
    """Rich progress bar fed by train()'s callback: loss and examples/s."""

    def __init__(self, quiet: bool):
        self.quiet = quiet
        self.progress = None
        self.task = None
        self.messages: list[str] = []

    def __enter__(self):
        if not self.quiet:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("[bold]training"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[speed]} ex/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=err_console,
                transient=False,
            )
            self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)
        return False

    def __call__(self, info: dict) -> None:
        ev = info.get("event")
        if self.progress is None:
            return
        if ev == "start":
            self.task = self.progress.add_task(
                "training", total=info["steps"], completed=info["step"], loss="-", speed="-"
            )
            self.progress.console.print(
                f"{info['sde']} | {info['model']['kind']} ({info['model']['size']}, {info['params'] / 1e6:.2f}M params) "
                f"| data {info['model']['data_shape']} | {info['device']} x{info['world_size']} | out {info['out']}",
                highlight=False,
            )
        elif ev == "step" and self.task is not None:
            self.progress.update(
                self.task, completed=info["step"], loss=f"{info['loss']:.4f}", speed=f"{info['examples_per_s']:.0f}"
            )
        elif ev == "samples":
            self.progress.console.print(f"samples: {info['path']}", highlight=False)
        elif ev == "samples_error":
            self.progress.console.print(f"[yellow]warning:[/] {info['error']}", highlight=False)


def train(
    sde: Optional[str] = typer.Option(None, "--sde", help="vp, ve, cld, hold or langevin [default: hold]."),
    order: Optional[int] = typer.Option(
        None, "--order", help="Order K: alone, 1 = vp, 2 = cld, 3 = hold, other K = langevin(K); with --sde langevin its order."
    ),
    data: Optional[str] = typer.Option(
        None, "--data", help="swissroll, moons, checkerboard, gaussians8, digits, cifar10 or folder [default: digits]."
    ),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder for cifar10 / folder data."),
    model: Optional[str] = typer.Option(None, "--model", help="mlp or unet [default: mlp for 2-D data, unet for images]."),
    model_size: Optional[str] = typer.Option(None, "--model-size", help="tiny, small or cifar [default: small]."),
    parameterization: Optional[str] = typer.Option(
        None, "--parameterization", help="x0, eps, score or mixed (see docs/training.md) [default: x0]."
    ),
    steps: Optional[int] = typer.Option(None, "--steps", help="Total optimisation steps [default: TrainConfig.steps]."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Global batch size."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Peak learning rate (AdamW, linear warm-up)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Random seed [default: 0]."),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or cuda:N [default: auto]."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory [default: runs/<sde>-<data>]."),
    resume: Optional[bool] = typer.Option(None, "--resume", help="Continue the run in --out from its checkpoint."),
    overwrite: Optional[bool] = typer.Option(None, "--overwrite", help="Start afresh even if --out holds a checkpoint."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of TrainConfig fields; flags override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    sample_every: Optional[int] = typer.Option(None, "--sample-every", help="Write a sample grid every N steps (0: at the end only)."),
    ckpt_every: Optional[int] = typer.Option(None, "--ckpt-every", help="Write a checkpoint every N steps (0: at the end only)."),
    threads: int = typer.Option(
        1, "--threads", help="torch CPU threads (1 is fastest for the small models and on shared machines)."
    ),
) -> None:
    """Train a score model; with no options, HOLD on the 8x8 digits with the small U-Net (a few CPU minutes).

    Examples:

      kinetic train

      kinetic train --sde cld --data moons --steps 3000 --out runs/cld-moons

      kinetic train --order 4 --data digits --resume

      torchrun --nproc_per_node 2 --no-python kinetic train --device cpu --steps 2000
    """
    from kinetic.checkpoint import CheckpointError
    from kinetic.config import ConfigError
    from kinetic.data import DataError
    from kinetic.training import TrainingError
    from kinetic.training import train as run_training

    flags = {
        "sde": sde, "order": order, "data": data, "data_dir": str(data_dir) if data_dir is not None else None,
        "model": model, "model_size": model_size, "parameterization": parameterization, "steps": steps,
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
        "out": str(out) if out is not None else None, "resume": resume, "overwrite": overwrite,
        "sample_every": sample_every, "ckpt_every": ckpt_every,
    }
    main_rank = int(os.environ.get("RANK", "0") or 0) == 0
    if threads < 1:
        raise fail(f"--threads: must be an integer >= 1; got {threads}")
    import torch

    torch.set_num_threads(threads)  # two threads per process on two busy cores made steps ~25x slower
    try:
        cfg = _config_from_cli(config, flags)
        if cfg.data in ("cifar10", "folder") and cfg.data_dir is not None and not Path(cfg.data_dir).exists():
            raise DataError(f"--data-dir: {cfg.data_dir} does not exist")
        t0 = time.perf_counter()
        with _Progress(quiet or not main_rank) as progress:
            summary = run_training(cfg, callback=progress)
    except ConfigError as err:
        msg = str(err)
        name = _option_name(err.field)
        raise fail(msg if msg.startswith("--") else f"{name}: {msg}") from None
    except DataError as err:
        msg = str(err).strip().splitlines()[0]
        raise fail(msg if "--data" in msg else f"--data: {msg}") from None
    except CheckpointError as err:
        raise fail(f"--resume: {str(err).strip().splitlines()[0]}") from None
    except TrainingError as err:
        err_console.print(f"[bold red]Error:[/] {err}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print("interrupted before training started; nothing written", highlight=False)
        raise typer.Exit(130) from None
    wall = time.perf_counter() - t0
    if summary["interrupted"]:
        if main_rank:
            err_console.print(
                f"interrupted ({summary['signal'] or 'signal'}) at step {summary['step']}; checkpoint written to "
                f"{summary['checkpoint']}; continue with: kinetic train --out {summary['out']} --resume",
                highlight=False, soft_wrap=True,
            )
        raise typer.Exit(130)
    if quiet or not main_rank:
        return
    speed = summary["examples_per_s"]
    console.print(
        f"trained steps {summary['start_step']}..{summary['step']} in {wall:.0f}s"
        + (f" ({speed:.0f} examples/s)" if speed else "")
        + (f", loss {summary['loss']:.4f}" if summary["loss"] is not None else ""),
        highlight=False,
    )
    console.print(f"checkpoint: {summary['checkpoint']}", highlight=False)
    if summary["samples"]:
        console.print(f"samples:    {summary['samples'][-1]}", highlight=False)
    if summary["samples_error"]:
        console.print(f"[yellow]warning:[/] {summary['samples_error']}", highlight=False)
    if summary["loss_curve"]:
        console.print(f"loss curve: {summary['loss_curve']}", highlight=False)
