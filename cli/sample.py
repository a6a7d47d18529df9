"""`kinetic sample`: draw samples from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from kinetic.presets import PRESETS

from .common import (
    DEFAULT_BATCH_SIZE, DEFAULT_THREADS, BatchSizeOpt, DenoiseOpt, DeviceOpt, GridOpt, GuidanceOpt,
    QuietOpt, SeedOpt, SolverOpt, StepsOpt, TEpsOpt, ThreadsOpt, check_conditioning, check_writable, cli_errors,
    config_option, console, fail, first_line, parse_class, reads_config, set_threads,
)
from .progress import step_progress


def generate(ckpt_path: Optional[Path], *, solver: str, steps: int, n: int, seed: int, device: str, quiet: bool,
             t_eps: float = 1e-3, denoise: bool = False, grid: Optional[str] = None,
             batch_size: Optional[int] = None, classes=None, guidance: float = 0.0, sde: Optional[str] = None,
             diffusers: Optional[Path] = None):
    """`kinetic.evaluation.generate` (or, with ``diffusers``, `generate_denoiser` of that folder's model under
    ``sde``) with a Rich progress bar: (samples, nfe, seconds, labels)."""
    from kinetic.evaluation import generate as _generate, generate_denoiser

    total = steps * -(-n // batch_size) if batch_size else steps
    kw = {"solver": solver, "steps": steps, "n": n, "seed": seed, "device": device, "t_eps": t_eps, "denoise": denoise,
          "grid": grid, "batch_size": batch_size, "classes": classes, "guidance": guidance}
    if diffusers is not None:
        den, shape = _load_diffusers(diffusers, classes, guidance)
        with step_progress(f"sampling ({solver})", total, quiet or solver == "ode") as cb:
            return generate_denoiser(den, sde or "vp", shape, callback=cb, what=f"the diffusers model in {diffusers}", **kw)
    with step_progress(f"sampling ({solver})", total, quiet or solver == "ode") as cb:
        return _generate(ckpt_path, callback=cb, return_labels=True, sde=sde, **kw)


def _load_diffusers(path: Path, classes, guidance: float):
    """The `kinetic.pretrained.DiffusersDenoiser` in ``path`` and its image shape (C, H, W); one line (exit 2)
    for a folder that is not one, and for --class / --guidance that the model cannot take."""
    from kinetic.pretrained import load_diffusers

    try:
        den = load_diffusers(path)
    except (ValueError, ImportError) as err:
        raise fail(f"--diffusers: {first_line(err).removeprefix('path: ')}") from None
    size = den.unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    if not den.num_classes and classes not in (None, "all"):
        raise fail(f"--class needs a class-conditional model; the diffusers model in {path} has no num_class_embeds")
    if den.num_classes and (classes == "null" or guidance):
        raise fail(f"--class null / --guidance need an unconditional branch, which the diffusers model in {path} lacks")
    if guidance:
        raise fail(f"--guidance needs a class-conditional model; the diffusers model in {path} is unconditional")
    return den, (den.channels, int(h), int(w))


def check_cross_sde(ckpt_path: Path) -> None:
    """One line (exit 2) before any work when --sde is given for a run not of the denoiser parameterisation."""
    from kinetic.checkpoint import CheckpointError, load_checkpoint

    try:
        ckpt = load_checkpoint(ckpt_path)
    except CheckpointError as err:
        raise fail(f"--checkpoint: {first_line(err)}") from None
    param = (ckpt.get("model_config") or {}).get("parameterization")
    if param != "denoiser":
        raise fail(f"--sde: this run's network has the {param!r} parameterisation, tied to the SDE it was trained for "
                   f"({(ckpt.get('sde') or {}).get('name')}); only a --parameterization denoiser run samples under another SDE")


def _save(x, nfe: int, out: Path, labels=None, nrow: Optional[int] = None) -> None:
    import numpy as np

    from kinetic.fileio import atomic_write

    if out.suffix.lower() == ".npz":
        def write(tmp):
            extra = {} if labels is None else {"labels": labels.numpy()}
            with open(tmp, "wb") as f:  # a file object: np.savez appends no suffix
                np.savez(f, samples=x.numpy(), nfe=np.int64(nfe), **extra)

        atomic_write(out, write)
        return
    from kinetic.data import save_image_grid, save_scatter

    if x.dim() == 4:
        save_image_grid(x, out, scale=max(1, -(-32 // int(x.shape[-1]))), nrow=nrow)  # 8x8 -> x4
    elif x.dim() == 2 and x.shape[1] == 2:
        save_scatter(x, out)
    else:
        raise ValueError(f"--out .png needs images or 2-D points; these samples have shape {tuple(x.shape[1:])}: use .npz")


def _check_output_space(out: Path, checkpoint: Path, n: int) -> None:
    """Refuse before sampling when the disk of ``out`` cannot hold the n float32 samples the run's data
    shape makes (an .npz holds them all; a PNG grid is smaller), with one line naming --out."""
    import math

    from kinetic.checkpoint import load_checkpoint
    from kinetic.fileio import MIN_FREE, check_free_space

    shape = load_checkpoint(checkpoint)["model_config"]["data_shape"]
    check_free_space(out.parent, MIN_FREE + 4 * n * math.prod(int(d) for d in shape), "--out")


@cli_errors
@reads_config("sample")
def sample_cmd(
    checkpoint: Annotated[Optional[Path], typer.Option(
        "--checkpoint", "-c", help="A run directory or a checkpoint .pt file (or give --diffusers).")] = None,
    diffusers: Optional[Path] = typer.Option(
        None, "--diffusers",
        help="A diffusers model folder on disk (UNet2DModel + DDPM-type scheduler, save_pretrained), sampled as a "
        "denoiser under --sde (default vp); never downloads.",
    ),
    sde: Optional[str] = typer.Option(
        None, "--sde",
        help=f"Sample under this SDE: {', '.join(PRESETS)} (default: the run's own). A run of the denoiser "
        "parameterisation serves every SDE; other runs are tied to theirs.",
    ),
    solver: SolverOpt = "ei",
    steps: StepsOpt = 50,
    n: int = typer.Option(64, "--n", help="Number of samples."),
    seed: SeedOpt = 0,
    device: DeviceOpt = "cpu",
    out: Optional[Path] = typer.Option(None, "--out", help="x.png (image grid or 2-D scatter) or x.npz (array 'samples')."),
    grid: GridOpt = None,
    t_eps: TEpsOpt = 1e-3,
    denoise: DenoiseOpt = False,
    clamp: Optional[bool] = typer.Option(
        None, "--clamp/--no-clamp",
        help="Clamp the samples to the data range [-1, 1], as a picture shows them (default: on for image data, off for 2-D toys).",
    ),
    batch_size: BatchSizeOpt = DEFAULT_BATCH_SIZE,
    class_: Optional[str] = typer.Option(
        None, "--class",
        help="A conditional model's class: a number, 'all' (default: every class in turn, one grid column each) or "
        "'null' (its unconditional branch).",
    ),
    guidance: GuidanceOpt = 0.0,
    threads: ThreadsOpt = DEFAULT_THREADS,
    config: config_option("sample") = None,
    quiet: QuietOpt = False,
) -> None:
    """Sample from a trained model; the SDE, network and data shape come from the checkpoint (--sde: a
    denoiser-parameterised run under another SDE), or from a diffusers model folder (--diffusers).

    Examples:

      kinetic sample --checkpoint runs/hold-digits --out samples.png

      kinetic sample -c runs/hold-digits/checkpoint.pt --solver em --steps 200 --n 1000 --out s.npz

      kinetic sample -c runs/cond-digits --class 3 --guidance 2 --out threes.png

      kinetic sample -c runs/vp-denoiser --sde cld --steps 20 --out cld.png

      kinetic sample --diffusers path/to/ddpm-folder --sde hold --steps 20 --out hold.png
    """
    import numpy as np

    from kinetic.evaluation import DEFAULT_GRID, clamp_to_data_range
    from kinetic.sampling import default_grid

    set_threads(threads)
    classes = parse_class(class_)
    out = check_writable(out, "--out", (".png", ".npz"))  # before the work
    if (checkpoint is None) == (diffusers is None):
        raise fail("give one of --checkpoint / -c (a run) or --diffusers (a diffusers model folder), not both"
                   if checkpoint is not None else "give --checkpoint / -c (a run) or --diffusers (a diffusers model folder)")
    if sde is not None and sde not in PRESETS:
        raise fail(f"--sde must be one of {', '.join(PRESETS)}; got {sde[:40]!r}")
    if checkpoint is not None:
        check_conditioning(checkpoint, classes, guidance)
        if sde is not None:
            check_cross_sde(checkpoint)
        if out is not None:
            _check_output_space(out, checkpoint, n)
    x, nfe, seconds, labels = generate(
        checkpoint, solver=solver, steps=steps, n=n, seed=seed, device=device, quiet=quiet, t_eps=t_eps,
        denoise=denoise, grid=grid, batch_size=batch_size, classes=classes, guidance=guidance, sde=sde,
        diffusers=diffusers,
    )
    images = x.dim() == 4
    clamped = images if clamp is None else clamp
    note = ""
    if clamped:
        x, outside = clamp_to_data_range(x)
        note = f"  clamped to [-1, 1] ({100 * outside:.2g}% of values were outside)"
    grid_columns = None
    what = ""
    if labels is not None:
        C = int(labels.max()) + 1 if classes in (None, "all") else None
        grid_columns = min(C, x.shape[0]) if C else None
        shown_class = "all classes in turn (one column each)" if C else (
            "the null class (unconditional)" if classes == "null" else f"class {classes}")
        what = f"  {shown_class}" + (f", guidance {guidance:g} (2 network evaluations per step)" if guidance else "")
    if out is not None:
        _save(x, nfe, out, labels, grid_columns)
    finite = bool(np.isfinite(x.numpy()).all())
    shown = grid if grid is not None else f"{DEFAULT_GRID or default_grid(solver)} (default)"
    console.print(
        f"{x.shape[0]} samples of shape {tuple(x.shape[1:])}{what}  solver={solver} ({shown} grid)  NFE={nfe}  "
        f"wall time {seconds:.2f} s{note}" + (f"  -> {out}" if out else "")
        + ("" if finite else "  (non-finite values!)"),
        highlight=False,
    )
