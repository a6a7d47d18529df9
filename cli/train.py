"""`kinetic train`: train a score model (register with ``app.command("train")(train)``).

Where each setting comes from is `TrainConfig.resolve`'s rule: the defaults <- a ``--config`` file
<- the flags given on the command line (Click's parameter source says which were given; only those
are passed). ``--resume`` takes the run's own config from its directory; flags may then change only
what is safe (`SAFE_ON_RESUME`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Optional

import typer

from kinetic.config import TrainConfig

from kinetic.training.signals import interrupted_message

from .common import DEFAULT_THREADS, ThreadsOpt, console, err_console, fail, first_line, set_threads, source, styled
from .progress import TrainProgress

_D = TrainConfig()  # the defaults shown by --help are the library's


def _names(field: str) -> str:
    from kinetic.config import CHOICES

    return ", ".join(CHOICES[field]())


def _option(field: str | None) -> str:
    return f"--{field.replace('_', '-')}" if field else "--config"


def _options(err) -> str:
    """The options a ConfigError is about: ``--resume / --data`` (its field, then the related ones)."""
    return " / ".join(dict.fromkeys(_option(f) for f in (err.field, *err.related)))


def _print_artefacts(summary: dict, wall: float) -> None:
    speed = summary["examples_per_s"]
    console.print(
        f"trained steps {summary['start_step']}..{summary['step']} in {wall:.0f}s"
        + (f" ({speed:.0f} examples/s)" if speed else "")
        + (f", loss {summary['loss']:.4f}" if summary["loss"] is not None else ""),
        highlight=False,
    )
    if summary.get("eval"):
        e = summary["eval"]
        console.print(f"{e['metric']} at step {e['step']}: {e['value']:.4g}", highlight=False)
    width = max(len(k) for k in summary["artefacts"]) + 1
    for what, path in summary["artefacts"].items():
        console.print(f"{(what + ':').ljust(width)} {path}", highlight=False, soft_wrap=True)
    if summary["samples_error"]:
        console.print(styled("[yellow]warning:[/] {}", summary['samples_error']), highlight=False)


def train(
    ctx: typer.Context,
    sde: str = typer.Option(_D.sde, "--sde", help=f"SDE preset: {_names('sde')} (default: hold, or by --order)."),
    order: Optional[int] = typer.Option(
        None, "--order", help="Order K: alone, 1 = vp, 2 = cld, 3 = hold, other K = langevin(K); with --sde langevin its order."
    ),
    data: str = typer.Option(_D.data, "--data", help=f"Dataset: {_names('data')}."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder for cifar10 / folder data."),
    resolution: Optional[int] = typer.Option(
        None, "--resolution", help="--data folder: side of the square images, resized and center-cropped (default 32)."
    ),
    channels: Optional[int] = typer.Option(
        None, "--channels", help="--data folder: 3 (RGB, the default) or 1 (grayscale)."
    ),
    model: str = typer.Option(_D.model, "--model", help=f"Network: {_names('model')} (auto: mlp for 2-D data, unet for images)."),
    model_size: str = typer.Option(_D.model_size, "--model-size", help=f"Network size: {_names('model_size')}."),
    parameterization: str = typer.Option(
        _D.parameterization, "--parameterization", help=f"What the network predicts: {_names('parameterization')} (see docs/training.md)."
    ),
    conditional: bool = typer.Option(
        False, "--conditional", help="Class-conditional model on the dataset's labels (digits, cifar10, a folder of class sub-folders)."
    ),
    label_dropout: float = typer.Option(
        _D.label_dropout, "--label-dropout",
        help="With --conditional: the probability a label is replaced by the null class (trains the unconditional score guidance needs).",
    ),
    steps: int = typer.Option(_D.steps, "--steps", help="Total optimisation steps (with --resume: the new total)."),
    batch_size: int = typer.Option(_D.batch_size, "--batch-size", help="Global batch size."),
    lr: float = typer.Option(_D.lr, "--lr", help="Peak learning rate (AdamW, linear warm-up)."),
    seed: int = typer.Option(_D.seed, "--seed", help="Random seed."),
    device: str = typer.Option(_D.device, "--device", help="auto, cpu, cuda or cuda:N."),
    out: Optional[Path] = typer.Option(None, "--out", help="Run directory (default: runs/<sde>-<data>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out with its own settings (only steps, logging and sampling may change)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the run in --out (its checkpoint, samples and logs)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file of TrainConfig fields; flags given here override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar and no summary."),
    sample_every: int = typer.Option(_D.sample_every, "--sample-every", help="Write a sample grid every N steps (0: at the end only)."),
    ckpt_every: int = typer.Option(_D.ckpt_every, "--ckpt-every", help="Write a checkpoint every N steps (0: at the end only)."),
    eval_every: int = typer.Option(
        _D.eval_every, "--eval-every", help="Every N steps log fd-digits (digits) or sliced Wasserstein (2-D toys) of the EMA model (0: never)."
    ),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also write TensorBoard event files (needs the tensorboard package)."),
    threads: ThreadsOpt = DEFAULT_THREADS,
) -> None:
    """Train a score model; with no options, HOLD on the 8x8 digits with the small U-Net (a few CPU minutes).

    Examples:

      kinetic train

      kinetic train --sde cld --data moons --steps 3000 --out runs/cld-moons

      kinetic train --order 4 --data digits --eval-every 200

      kinetic train --out runs/cld-moons --resume --steps 6000

      kinetic train --conditional --label-dropout 0.1 --out runs/cond-digits

      kinetic train --data folder --data-dir my_images --resolution 16 --channels 1 --out runs/mine

      torchrun --nproc_per_node 2 --no-python kinetic train --device cpu --steps 2000
    """
    values = {
        "sde": sde, "order": order, "data": data, "data_dir": str(data_dir) if data_dir is not None else None,
        "resolution": resolution, "channels": channels,
        "model": model, "model_size": model_size, "parameterization": parameterization, "conditional": conditional,
        "label_dropout": label_dropout, "steps": steps,
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
        "out": str(out) if out is not None else None, "resume": resume, "overwrite": overwrite,
        "sample_every": sample_every, "ckpt_every": ckpt_every, "eval_every": eval_every, "tensorboard": tensorboard,
    }
    flags = {k: v for k, v in values.items() if source(ctx, k) == "COMMANDLINE"}
    main_rank = int(os.environ.get("RANK", "0") or 0) == 0
    set_threads(threads)  # two threads per process on two busy cores made steps ~25x slower
    summary, wall = _train(config, flags, quiet or not main_rank)
    if summary["interrupted"]:
        if main_rank:
            err_console.print(
                f"interrupted ({summary['signal'] or 'signal'}) at step {summary['step']}; checkpoint written to "
                f"{summary['checkpoint']}; continue with: kinetic train --out {summary['out']} --resume",
                highlight=False, soft_wrap=True,
            )
        raise typer.Exit(130)
    if summary.get("skipped_warning") and main_rank:  # shown even with --quiet
        err_console.print(styled("[yellow]warning:[/] {}", summary["skipped_warning"]), highlight=False, soft_wrap=True)
    if quiet or not main_rank:
        return
    _print_artefacts(summary, wall)


def _train(config: Optional[Path], flags: dict, quiet: bool) -> tuple[dict, float]:
    """Resolve the run's config (`TrainConfig.resolve`) and train it: (summary, wall seconds); the
    library's errors become one line naming the option (exit 2; a failed run 1, Ctrl-C 130)."""
    from kinetic.checkpoint import CheckpointError
    from kinetic.config import ConfigError
    from kinetic.data import DataError
    from kinetic.training import RunDirError, TrainingError
    from kinetic.training import train as run_training

    cfg = None
    try:
        cfg = TrainConfig.resolve(config, flags)
        if "label_dropout" in flags and not cfg.conditional:
            raise fail("--label-dropout applies to a class-conditional run: add --conditional")
        if cfg.data in ("cifar10", "folder") and cfg.data_dir is not None and not Path(cfg.data_dir).exists():
            raise DataError(f"--data-dir: {cfg.data_dir} does not exist")
        t0 = time.perf_counter()
        with TrainProgress(quiet) as progress:
            summary = run_training(cfg, callback=progress)
    except ConfigError as err:
        msg = str(err)
        raise fail(msg if msg.startswith("--") else f"{_options(err)}: {msg}") from None
    except DataError as err:
        msg = first_line(err)
        raise fail(msg if "--data" in msg else f"--data: {msg}") from None
    except CheckpointError as err:
        raise fail(f"--resume: {first_line(err)}") from None
    except RunDirError as err:
        raise fail(f"--out: {err}") from None
    except TrainingError as err:
        err_console.print(styled("[bold red]Error:[/] {}", err), highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        err_console.print(interrupted_message(cfg.out_dir() if cfg is not None else None), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None
    return summary, time.perf_counter() - t0
