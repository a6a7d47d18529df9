"""`kinetic sample`: draw samples from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import (
    DEFAULT_BATCH_SIZE, DEFAULT_THREADS, BatchSizeOpt, CheckpointOpt, DenoiseOpt, DeviceOpt, GridOpt, QuietOpt,
    SeedOpt, SolverOpt, StepsOpt, TEpsOpt, ThreadsOpt, check_writable, cli_errors, config_option, console,
    set_threads,
)
from .progress import step_progress


def generate(ckpt_path: Path, *, solver: str, steps: int, n: int, seed: int, device: str, quiet: bool,
             t_eps: float = 1e-3, denoise: bool = False, grid: Optional[str] = None,
             batch_size: Optional[int] = None):
    """`kinetic.evaluation.generate` with a Rich progress bar: (samples, nfe, seconds)."""
    from kinetic.evaluation import generate as _generate

    total = steps * -(-n // batch_size) if batch_size else steps
    with step_progress(f"sampling ({solver})", total, quiet or solver == "ode") as cb:
        return _generate(ckpt_path, solver=solver, steps=steps, n=n, seed=seed, device=device, t_eps=t_eps,
                         denoise=denoise, callback=cb, grid=grid, batch_size=batch_size)


def _save(x, nfe: int, out: Path) -> None:
    import numpy as np

    from kinetic.fileio import atomic_write

    if out.suffix.lower() == ".npz":
        def write(tmp):
            with open(tmp, "wb") as f:  # a file object: np.savez appends no suffix
                np.savez(f, samples=x.numpy(), nfe=np.int64(nfe))

        atomic_write(out, write)
        return
    from kinetic.data import save_image_grid, save_scatter

    if x.dim() == 4:
        save_image_grid(x, out, scale=max(1, -(-32 // int(x.shape[-1]))))  # 8x8 -> x4
    elif x.dim() == 2 and x.shape[1] == 2:
        save_scatter(x, out)
    else:
        raise ValueError(f"--out .png needs images or 2-D points; these samples have shape {tuple(x.shape[1:])}: use .npz")


@cli_errors
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
    threads: ThreadsOpt = DEFAULT_THREADS,
    config: config_option("sample") = None,
    quiet: QuietOpt = False,
) -> None:
    """Sample from a trained model; the SDE, network and data shape come from the checkpoint.

    Examples:

      kinetic sample --checkpoint runs/hold-digits --out samples.png

      kinetic sample -c runs/hold-digits/checkpoint.pt --solver em --steps 200 --n 1000 --out s.npz
    """
    import numpy as np

    from kinetic.evaluation import DEFAULT_GRID, clamp_to_data_range
    from kinetic.sampling import default_grid

    set_threads(threads)
    out = check_writable(out, "--out", (".png", ".npz"))  # before the work
    x, nfe, seconds = generate(
        checkpoint, solver=solver, steps=steps, n=n, seed=seed, device=device, quiet=quiet, t_eps=t_eps,
        denoise=denoise, grid=grid, batch_size=batch_size,
    )
    images = x.dim() == 4
    clamped = images if clamp is None else clamp
    note = ""
    if clamped:
        x, outside = clamp_to_data_range(x)
        note = f"  clamped to [-1, 1] ({100 * outside:.2g}% of values were outside)"
    if out is not None:
        _save(x, nfe, out)
    finite = bool(np.isfinite(x.numpy()).all())
    shown = grid if grid is not None else f"{DEFAULT_GRID or default_grid(solver)} (default)"
    console.print(
        f"{x.shape[0]} samples of shape {tuple(x.shape[1:])}  solver={solver} ({shown} grid)  NFE={nfe}  "
        f"wall time {seconds:.2f} s{note}" + (f"  -> {out}" if out else "")
        + ("" if finite else "  [red](non-finite values!)[/]"),
        highlight=False,
    )
