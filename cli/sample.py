"""`kinetic sample`: draw samples from a trained checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import cli_errors, console, load_toml_defaults


def generate(ckpt_path: Path, *, solver: str, steps: int, n: int, seed: int, device: str, quiet: bool,
             t_eps: float = 1e-3, denoise: bool = False, grid: str = "quadratic"):
    """`kinetic.evaluation.generate` with a Rich progress bar: (samples, nfe, seconds)."""
    from kinetic.evaluation import generate as _generate

    from .progress import step_progress

    with step_progress(f"sampling ({solver})", steps, quiet or solver == "ode") as cb:
        return _generate(ckpt_path, solver=solver, steps=steps, n=n, seed=seed, device=device, t_eps=t_eps,
                         denoise=denoise, callback=cb, grid=grid)


@cli_errors
def sample_cmd(
    checkpoint: Path = typer.Option(..., "--checkpoint", "-c", help="A run directory or a checkpoint .pt file."),
    solver: str = typer.Option("ei", "--solver", help="em, pc, sscs, lie_trotter, ei, ode or torchsde."),
    steps: int = typer.Option(50, "--steps", help="Solver steps (ignored by the adaptive ode solver)."),
    n: int = typer.Option(64, "--n", help="Number of samples."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    out: Optional[Path] = typer.Option(None, "--out", help="x.png (image grid or 2-D scatter) or x.npz (array 'samples')."),
    grid: str = typer.Option("quadratic", "--grid", help="Time grid: uniform, quadratic (fine near the data) or logsnr."),
    t_eps: float = typer.Option(1e-3, "--t-eps", help="Sampling stops at this time."),
    denoise: bool = typer.Option(False, "--denoise", help="Finish with a Tweedie denoising step (+1 NFE)."),
    config: Optional[Path] = typer.Option(None, "--config", help="TOML file with defaults for these options; flags override it."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Sample from a trained model; the SDE, network and data shape come from the checkpoint.

    Examples:

      kinetic sample --checkpoint runs/hold-digits --out samples.png

      kinetic sample -c runs/hold-digits/checkpoint.pt --solver em --steps 200 --n 1000 --out s.npz
    """
    import numpy as np

    opts = load_toml_defaults(config, locals(), "sample", sample_cmd)
    if opts["out"] is not None and Path(opts["out"]).suffix.lower() not in (".png", ".npz"):
        raise ValueError(f"--out must end in .png or .npz, got {opts['out']}")
    x, nfe, seconds = generate(
        Path(opts["checkpoint"]), solver=opts["solver"], steps=int(opts["steps"]), n=int(opts["n"]), seed=int(opts["seed"]),
        device=opts["device"], quiet=opts["quiet"], t_eps=float(opts["t_eps"]), denoise=bool(opts["denoise"]),
        grid=opts["grid"],
    )
    out = opts["out"]
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".npz":
            np.savez(out, samples=x.numpy(), nfe=np.int64(nfe))
        else:
            from kinetic.data import save_image_grid, save_scatter

            if x.dim() == 4:
                save_image_grid(x.clamp(-1, 1), out, scale=max(1, -(-32 // int(x.shape[-1]))))  # 8x8 -> x4
            elif x.dim() == 2 and x.shape[1] == 2:
                save_scatter(x, out)
            else:
                raise ValueError(f"--out .png needs images or 2-D points; these samples have shape {tuple(x.shape[1:])}: use .npz")
    finite = bool(np.isfinite(x.numpy()).all())
    console.print(
        f"{x.shape[0]} samples of shape {tuple(x.shape[1:])}  solver={opts['solver']} ({opts['grid']} grid)  NFE={nfe}  "
        f"wall time {seconds:.2f} s" + (f"  -> {out}" if out else "") + ("" if finite else "  [red](non-finite values!)[/]")
    )
