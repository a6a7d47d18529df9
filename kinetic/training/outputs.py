"""What a run writes besides its checkpoint: the loss curve, sample grids, metrics.jsonl and
(optionally) TensorBoard event files. Every file is written atomically or appended line by line."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..fileio import atomic_write, atomic_write_text
from ..score import ScoreModel, as_score_fn

__all__ = ["save_loss_curve", "sample_to_file", "MetricsLog", "TensorBoardLog", "tensorboard_missing"]


def _moving_mean(v: list[float], w: int) -> list[float]:
    return [sum(v[max(0, i - w + 1) : i + 1]) / len(v[max(0, i - w + 1) : i + 1]) for i in range(len(v))]


def save_loss_curve(history: dict[str, Any], path: str | os.PathLike[str], title: str | None = None) -> Path | None:
    """Loss vs step (log scale) as PNG via matplotlib's Agg canvas, with the periodic metric
    (``history["eval_step"/"eval_value"]``) in a second panel beside it; None when there is no data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, losses = history.get("step", []), history.get("loss", [])
    if not steps:
        return None
    ev_steps, ev_values = history.get("eval_step") or [], history.get("eval_value") or []
    panels = 2 if ev_steps else 1
    fig = Figure(figsize=(6 * panels, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, panels, 1)
    ax.plot(steps, losses, lw=0.8, color="tab:blue", alpha=0.5, label="loss")
    if len(losses) >= 10:
        w = max(2, len(losses) // 20)
        ax.plot(steps, _moving_mean(losses, w), lw=1.5, color="tab:red", label=f"moving mean ({w})")
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (sum over dims)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    if ev_steps:
        ax2 = fig.add_subplot(1, panels, 2)
        metric = history.get("eval_metric", "metric")
        ax2.plot(ev_steps, ev_values, "o-", color="tab:green", lw=1.2, ms=3)
        finite = [v for v in ev_values if math.isfinite(v)]
        if finite and min(finite) > 0:
            ax2.set_yscale("log")
        ax2.set_xlabel("step")
        ax2.set_ylabel(f"{metric} (EMA model, lower is better)")
        ax2.set_title(f"{metric} every {ev_steps[0] if len(ev_steps) == 1 else ev_steps[1] - ev_steps[0]} steps")
        ax2.grid(alpha=0.3)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def sample_to_file(
    score_model: ScoreModel,
    shape: tuple[int, ...],
    path: str | os.PathLike[str],
    *,
    solver: str = "em",
    steps: int = 100,
    t_eps: float = 1e-3,
    seed: int = 0,
    reference: Tensor | None = None,
    title: str | None = None,
) -> Path:
    """Draw ``shape[0]`` samples (`kinetic.evaluation.draw`, the library's default grid) and save an
    image grid (C, H, W data, clamped to [-1, 1]; images under 32 px are enlarged by
    nearest-neighbour repetition) or a scatter plot (2-D data, over ``reference``). A conditional
    model draws the classes in turn (sample i has class i mod C; one column per class)."""
    from ..data import save_image_grid, save_scatter
    from ..evaluation import draw

    if not (len(shape) == 2 and shape[1] == 2) and len(shape) != 4:
        raise ValueError(f"cannot plot samples of shape {tuple(shape)}: need (n, 2) points or (n, C, H, W) images")
    p = next(score_model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    was_training = score_model.training
    score_model.eval()
    try:
        C = score_model.num_classes
        labels = torch.arange(shape[0]) % C if C else None
        x, _ = draw(score_model.sde, as_score_fn(score_model), shape, solver=solver, steps=steps, t_eps=t_eps,
                    seed=seed, device=device, labels=labels)
    finally:
        score_model.train(was_training)
    if len(shape) == 2:
        return save_scatter(x, path, reference=reference, title=title)
    f = max(1, math.ceil(32 / min(x.shape[-2:])))  # small images (8x8 digits): nearest x f for viewing
    return save_image_grid(x.clamp(-1, 1), path, scale=f, nrow=C or None)


def _plain(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON has no NaN / inf
    return v


class MetricsLog:
    """``metrics.jsonl``: one JSON object per line (step, loss, lr, grad_norm, examples_per_s,
    elapsed_s; or step and a periodic metric), appended as the run goes; read with
    ``pandas.read_json(path, lines=True)`` or ``[json.loads(l) for l in open(path)]``."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path)

    def append(self, row: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({k: _plain(v) for k, v in row.items()}) + "\n")

    def keep_until(self, step: int) -> None:
        """Drop rows after ``step`` (a resume from a checkpoint older than the log's tail)."""
        if not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= step:
                    kept.append(line)
            except (ValueError, TypeError, AttributeError):
                continue  # a line cut by a kill mid-write
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))


def tensorboard_missing() -> str | None:
    """None when TensorBoard event files can be written, else why not (one line)."""
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401  (needs the tensorboard package)
    except ImportError:
        return "the tensorboard package is not installed: pip install 'kinetic[tensorboard]' (or pip install tensorboard)"
    return None


class TensorBoardLog:
    """Scalars and sample images as TensorBoard event files in ``logdir``; on resume the events
    after ``start_step`` are purged so the curves match the checkpoint."""

    def __init__(self, logdir: str | os.PathLike[str], start_step: int = 0):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(logdir), purge_step=start_step if start_step > 0 else None)

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)
        self.writer.flush()

    def image(self, tag: str, png: str | os.PathLike[str], step: int) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(png) as im:
            arr = np.asarray(im.convert("RGB"))
        self.writer.add_image(tag, arr, step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
