"""`kinetic sample`: draw samples from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    DEFAULT_BATCH_SIZE, DEFAULT_THREADS, BatchSizeOpt, CheckpointOpt, DenoiseOpt, DeviceOpt, GridOpt, GuidanceOpt,
    QuietOpt, SeedOpt, SolverOpt, StepsOpt, TEpsOpt, ThreadsOpt, check_conditioning, check_writable, cli_errors,
    config_option, console, parse_class, reads_config, set_threads,
)
from .progress import step_progress


def generate(ckpt_path: Path, *, solver: str, steps: int, n: int, seed: int, device: str, quiet: bool,
             t_eps: float = 1e-3, denoise: bool = False, grid: Optional[str] = None,
             batch_size: Optional[int] = None, classes=None, guidance: float = 0.0):
    """`kinetic.evaluation.generate` with a Rich progress bar: (samples, nfe, seconds, labels)."""
    from kinetic.evaluation import generate as _generate

    total = steps * -(-n // batch_size) if batch_size else steps
    with step_progress(f"sampling ({solver})", total, quiet or solver == "ode") as cb:
        return _generate(ckpt_path, solver=solver, steps=steps, n=n, seed=seed, device=device, t_eps=t_eps,
                         denoise=denoise, callback=cb, grid=grid, batch_size=batch_size, classes=classes,
                         guidance=guidance, return_labels=True)


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


@cli_errors
@reads_config("sample")
def sample_cmd(
    checkpoint: CheckpointOpt,
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
    """Sample from a trained model; the SDE, network and data shape come from the checkpoint.

    Examples:

      kinetic sample --checkpoint runs/hold-digits --out samples.png

      kinetic sample -c runs/hold-digits/checkpoint.pt --solver em --steps 200 --n 1000 --out s.npz

      kinetic sample -c runs/cond-digits --class 3 --guidance 2 --out threes.png
    """
    import numpy as np

    from kinetic.evaluation import DEFAULT_GRID, clamp_to_data_range
    from kinetic.sampling import default_grid

    set_threads(threads)
    classes = parse_class(class_)
    out = check_writable(out, "--out", (".png", ".npz"))  # before the work
    check_conditioning(checkpoint, classes, guidance)
    x, nfe, seconds, labels = generate(
        checkpoint, solver=solver, steps=steps, n=n, seed=seed, device=device, quiet=quiet, t_eps=t_eps,
        denoise=denoise, grid=grid, batch_size=batch_size, classes=classes, guidance=guidance,
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
