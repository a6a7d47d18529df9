"""Periodic sample quality of the EMA model during training (``eval_every``): fd-digits on the
8x8 digits, sliced Wasserstein to a held-out draw on the 2-D toys (`kinetic.metrics`)."""

from __future__ import annotations

import torch

__all__ = ["metric_name", "evaluate_ema"]


def metric_name(data: str) -> str:
    """The metric ``eval_every`` logs for a dataset."""
    return "fd-digits" if data == "digits" else "swd"


def evaluate_ema(trainer) -> tuple[str, float]:
    """(metric, value) for ``config.eval_n`` samples of the EMA model, drawn like the sample grids
    (``sample_solver``, ``sample_steps``, ``sample_t_eps``, fixed seed); a conditional model draws
    every class in turn (sample i has class i mod C, no guidance)."""
    from ..data import load_dataset
    from ..evaluation import draw
    from ..metrics import fd_digits, sliced_wasserstein

    cfg = trainer.config
    sm = trainer.ema_score_model()
    labels = torch.arange(cfg.eval_n) % sm.num_classes if sm.num_classes else None
    x, _ = draw(sm.sde, sm.score, (cfg.eval_n, *trainer.data_shape), solver=cfg.sample_solver,
                steps=cfg.sample_steps, t_eps=cfg.sample_t_eps, seed=cfg.seed + 54321, device=trainer.device,
                labels=labels)
    name = metric_name(cfg.data)
    if name == "fd-digits":
        # fd-digits is computed on the raw samples; its clamping choice belongs to kinetic.metrics
        return name, float(fd_digits(x))
    ref = load_dataset(cfg.data, split="test", n=cfg.eval_n, seed=cfg.seed)
    if not bool(torch.isfinite(x).all()):
        return name, float("nan")
    gen = torch.Generator().manual_seed(0)
    return name, float(sliced_wasserstein(x.reshape(x.shape[0], -1), ref.reshape(ref.shape[0], -1), generator=gen))
