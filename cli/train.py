"""`kinetic train`: train a score model (register with ``app.command("train")(train)``).

Where each setting comes from: TrainConfig's defaults <- a ``--config`` file <- flags given on the
command line (Click's parameter source says which were given). ``--resume`` takes the run's own
config from its directory; flags may then change only what is safe (`SAFE_ON_RESUME`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Optional

import typer

from kinetic.config import RUN_CONTROL, SAFE_ON_RESUME, TrainConfig

from kinetic.training.signals import interrupted_message

from .common import DEFAULT_THREADS, ThreadsOpt, clip, console, err_console, fail, first_line, set_threads, source, styled
from .progress import TrainProgress

_D = TrainConfig()  # the defaults shown by --help are the library's


def _names(field: str) -> str:
    from kinetic.config import CHOICES

    return ", ".join(CHOICES[field]())


#: options that map to TrainConfig fields (the others steer the command itself)
FIELDS = ("sde", "order", "data", "data_dir", "model", "model_size", "parameterization", "conditional", "label_dropout",
          "steps", "batch_size", "lr", "seed", "device", "out", "resume", "overwrite", "sample_every", "ckpt_every",
          "eval_every", "tensorboard")


def _option(field: str | None) -> str:
    return f"--{field.replace('_', '-')}" if field else "--config"


def _read_file(config_file: Optional[Path]) -> dict[str, Any]:
    """The --config file as TrainConfig fields (resume / overwrite never replayed from a file)."""
    from kinetic.config import ConfigError, load_toml

    if config_file is None:
        return {}
    try:
        d = load_toml(config_file)
        for name in ("resume", "overwrite"):
            if d.get(name) is True:
                raise ConfigError(f"{name} = true in a config file is not used (run control is never read from a "
                                  f"file): give {_option(name)} on the command line", name)
            d.pop(name, None)
        TrainConfig.from_dict(d)  # unknown fields and bad values, named as the file's
    except ConfigError as err:
        raise fail(f"--config {clip(config_file, 200)}: {err}") from None
    return d


def _run_config(out: Path) -> dict[str, Any]:
    """The config of the run in ``out``: its config.toml, else its checkpoint's."""
    from kinetic.checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint
    from kinetic.config import ConfigError, load_toml

    if not (out / CHECKPOINT_NAME).is_file():
        raise fail(f"--resume: no checkpoint to resume from at {clip(out / CHECKPOINT_NAME, 300)}")
    try:
        d = load_toml(out / "config.toml") if (out / "config.toml").is_file() else load_checkpoint(out).get("config", {})
    except (ConfigError, CheckpointError) as err:
        raise fail(f"--resume: {first_line(err)}") from None
    fields = set(TrainConfig.field_names())
    return {k: v for k, v in d.items() if k in fields and k not in RUN_CONTROL}


def resolve_config(config_file: Optional[Path], flags: dict[str, Any]) -> TrainConfig:
    """TrainConfig from the defaults <- the file <- the flags given; --order alone picks the preset;
    with --resume, the run's own config <- the safe flags."""
    from kinetic.presets import preset_for_order

    base = _read_file(config_file)
    given = dict(flags)
    if given.get("resume") and given.get("overwrite"):
        raise fail("--resume and --overwrite exclude each other: --resume continues the run, --overwrite replaces it")
    if "order" in given and "sde" not in given:
        k = given["order"]
        if isinstance(k, int) and k < 1:
            raise fail(f"--order: order must be an integer >= 1; got {k}")
        if base.get("sde") != "langevin":
            given["sde"] = preset_for_order(k)
        if given["sde"] != "langevin":
            given["order"] = None  # vp / cld / hold have a fixed order
    if given.get("sde") not in (None, "langevin") and "order" not in given:
        given["order"] = None
    if "sde" in given and given["sde"] != base.get("sde", _D.sde) and "sde_params" not in given:
        base.pop("sde_params", None)  # the file's preset arguments belong to the file's SDE
    values = {**base, **given}
    if given.get("resume"):
        where = TrainConfig.from_dict({k: v for k, v in values.items() if k != "resume"}).out_dir()
        run = _run_config(where)
        from kinetic.checkpoint import _close

        changed = [k for k, v in values.items() if k in run and k not in SAFE_ON_RESUME + RUN_CONTROL
                   and not _close(v, run[k])]
        if changed:
            parts = ", ".join(f"{_option(k) if k in given else k} {clip(repr(values[k]), 60)} (the run has "
                              f"{clip(repr(run[k]), 60)})" for k in changed)
            raise fail(f"--resume: {parts}; a resumed run keeps its settings: leave them out, or use another --out "
                       f"(may change: {', '.join(SAFE_ON_RESUME)})")
        values = {**run, **{k: v for k, v in values.items() if k in SAFE_ON_RESUME}, "out": str(where), "resume": True}
    return TrainConfig.from_dict(values)


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
    sde: str = typer.Option(_D.sde, "--sde", help=f"SDE preset: {_names('sde')}."),
    order: Optional[int] = typer.Option(
        None, "--order", help="Order K: alone, 1 = vp, 2 = cld, 3 = hold, other K = langevin(K); with --sde langevin its order."
    ),
    data: str = typer.Option(_D.data, "--data", help=f"Dataset: {_names('data')}."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", help="Folder for cifar10 / folder data."),
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

      torchrun --nproc_per_node 2 --no-python kinetic train --device cpu --steps 2000
    """
    from kinetic.checkpoint import CheckpointError
    from kinetic.config import ConfigError
    from kinetic.data import DataError
    from kinetic.training import RunDirError, TrainingError
    from kinetic.training import train as run_training

    values = {
        "sde": sde, "order": order, "data": data, "data_dir": str(data_dir) if data_dir is not None else None,
        "model": model, "model_size": model_size, "parameterization": parameterization, "conditional": conditional,
        "label_dropout": label_dropout, "steps": steps,
        "batch_size": batch_size, "lr": lr, "seed": seed, "device": device,
        "out": str(out) if out is not None else None, "resume": resume, "overwrite": overwrite,
        "sample_every": sample_every, "ckpt_every": ckpt_every, "eval_every": eval_every, "tensorboard": tensorboard,
    }
    flags = {k: v for k, v in values.items() if source(ctx, k) == "COMMANDLINE"}
    main_rank = int(os.environ.get("RANK", "0") or 0) == 0
    set_threads(threads)  # two threads per process on two busy cores made steps ~25x slower
    cfg = None
    try:
        cfg = resolve_config(config, flags)
        if "label_dropout" in flags and not cfg.conditional:
            raise fail("--label-dropout applies to a class-conditional run: add --conditional")
        if cfg.data in ("cifar10", "folder") and cfg.data_dir is not None and not Path(cfg.data_dir).exists():
            raise DataError(f"--data-dir: {cfg.data_dir} does not exist")
        t0 = time.perf_counter()
        with TrainProgress(quiet or not main_rank) as progress:
            summary = run_training(cfg, callback=progress)
    except ConfigError as err:
        msg = str(err)
        raise fail(msg if msg.startswith("--") else f"{_option(err.field)}: {msg}") from None
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
    wall = time.perf_counter() - t0
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
