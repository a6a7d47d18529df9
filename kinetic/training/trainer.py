"""`Trainer`: one run's state (SDE, data, network, EMA, optimiser, generators) and its `step`.

Used by `kinetic.training.train` (which adds the run directory, checkpoints, signals and outputs)
and by the benchmarks. It takes its parts (network, loss, data, optimiser); `Trainer.from_config`
builds the default ones (`kinetic.training.parts`): denoising score matching of the noised blocks
(`kinetic.losses.DSMLoss`), optimised by AdamW with a linear warm-up.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from ..checkpoint import CheckpointError, check_compatible
from ..config import ConfigError, TrainConfig
from ..data import check_data_fingerprint
from ..score import ScoreModel
from .distributed import DistInfo, derive_seed, resolve_device
from .ema import EMA
from .parts import RunData, build_trainer, score_model

__all__ = ["Trainer", "TrainingError"]


class TrainingError(RuntimeError):
    """Training cannot continue (a non-finite loss, an unwritable run directory); the message says
    at which step and what was kept."""


class Trainer:
    """One run's state and its optimisation `step`, from the parts it is given.

    ``network`` (any ``nn.Module`` ``net(h, t[, labels])``, on ``device``: the weights the EMA,
    the optimiser and checkpoints hold), ``train_model`` (the `ScoreModel` the loss is taken of:
    ``network`` as `kinetic.training.parts.train_model` wraps it for DDP / compile / autocast;
    None: ``network`` itself), ``sde``, ``data`` (`RunData`: this rank's shard), ``spec`` (the
    model spec a checkpoint records), ``loss`` (``loss(score_model, x0, generator=, labels=)``)
    and ``optimizer`` (over ``network``'s parameters). `Trainer.from_config`
    (`kinetic.training.parts.build_trainer`) builds them from a `TrainConfig`; ``config`` still
    supplies the schedule, clipping, EMA decay, logging and seeds.
    """

    def __init__(self, config: TrainConfig, *, network: nn.Module, sde, data: RunData, spec: dict[str, Any],
                 loss: nn.Module, optimizer: torch.optim.Optimizer, train_model: ScoreModel | None = None,
                 dist_info: DistInfo | None = None, device: torch.device | str | None = None):
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a kinetic.config.TrainConfig, got {type(config).__name__}")
        self.config = cfg = config  # checked when it was made
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device, self.dist)
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(
                f"batch_size={cfg.batch_size} must be divisible by the number of ranks ({self.dist.world_size})",
                "batch_size",
            )
        self.local_batch = cfg.batch_size // self.dist.world_size
        self.sde = sde
        self.data, self.labels, self.reference = data.data, data.labels, data.reference
        self.data_shape, self.num_classes = data.data_shape, data.num_classes
        self.data_fingerprint = data.fingerprint
        self.net = network
        self.model_config = dict(spec)
        self.ema = EMA(self.net, cfg.ema_decay)
        self.train_model = train_model if train_model is not None else score_model(network, sde, spec)
        self.loss_fn = loss
        self.opt = optimizer
        self._seed_streams(cfg.seed)
        self.step_count = 0
        self.skipped = 0
        self.history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_value": []}
        self._window: list[float] = []
        self.stop_requested = False

    @classmethod
    def from_config(cls, config: TrainConfig, **parts) -> "Trainer":
        """The Trainer of ``config`` (`kinetic.training.parts.build_trainer`: ``network``, ``data``,
        ``labels``, ``dist_info``, ``device`` override what the config names)."""
        return build_trainer(config, **parts)

    def _seed_streams(self, seed: int) -> None:
        """Per-rank streams: the global one (dropout etc.), the batch indices and the noise."""
        torch.manual_seed(derive_seed(seed, self.dist.rank, 2))
        self.data_gen = torch.Generator(device="cpu").manual_seed(derive_seed(seed, self.dist.rank, 0))
        self.noise_gen = torch.Generator(device=self.device).manual_seed(derive_seed(seed, self.dist.rank, 1))

    # ------------------------------------------------------------------ schedule
    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then constant."""
        w = self.config.warmup
        return self.config.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        """One optimisation step; returns {"step", "loss", "lr", "grad_norm", "skipped", "stop", "logged"}.

        "stop" is True when any rank had ``stop_requested`` set before this step (a signal);
        "logged" is the mean loss since the last log step when this step is one (else None).
        A non-finite loss (or gradient norm) raises TrainingError unless ``skip_nonfinite``,
        in which case the update is skipped (the step still counts).
        """
        cfg = self.config
        lr = self.lr_at(self.step_count)
        for g in self.opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(self.data.shape[0], (self.local_batch,), generator=self.data_gen)
        x0 = self.data[idx.to(self.data.device)]
        y = None if self.labels is None else self.labels[idx.to(self.labels.device)]
        loss = self.loss_fn(self.train_model, x0, generator=self.noise_gen, labels=y)

        stats = torch.stack([loss.detach().float(), torch.tensor(float(self.stop_requested), device=loss.device)])
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(stats)
            stats[0] /= self.dist.world_size
        # the stop decision uses the reduced flag, so every rank stops after the same step
        loss_val, stop = float(stats[0]), bool(stats[1] > 0)
        step_index = self.step_count + 1  # 1-based number of the step being taken

        grad_norm = float("nan")
        ok = math.isfinite(loss_val)
        what = "loss"
        if ok:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm))
            ok = math.isfinite(grad_norm)
            what = "gradient norm"
        if not ok:
            self.opt.zero_grad(set_to_none=True)
            if not cfg.skip_nonfinite:
                bad = grad_norm if what == "gradient norm" else loss_val
                raise TrainingError(f"non-finite {what} ({bad}) at step {step_index}")
            self.skipped += 1
        else:
            self.opt.step()
            self.ema.update(self.net, self.step_count)
        self.step_count = step_index
        if ok:
            self._window.append(loss_val)
        logged = None
        if self._window and (step_index % cfg.log_every == 0):
            logged = sum(self._window) / len(self._window)
            self.history["step"].append(step_index)
            self.history["loss"].append(logged)
            self._window = []
        return {"step": step_index, "loss": loss_val, "lr": lr, "grad_norm": grad_norm, "skipped": not ok,
                "stop": stop, "logged": logged}

    def record_eval(self, metric: str, value: float) -> None:
        """Add a periodic quality value (at the current step) to the history."""
        self.history["eval_metric"] = metric
        self.history["eval_step"].append(self.step_count)
        self.history["eval_value"].append(float(value))

    # ------------------------------------------------------------------ state
    def _rng_state(self) -> dict[str, Any]:
        return {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "data": self.data_gen.get_state(),
            "noise": self.noise_gen.get_state(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything a checkpoint holds (a collective under DDP: every rank must call it)."""
        rng = self._rng_state()
        if self.dist.enabled:
            import torch.distributed as dist

            ranks: list = [None] * self.dist.world_size
            dist.all_gather_object(ranks, dict(rng))
        else:
            ranks = [rng]
        return {
            "step": self.step_count,
            "model": self.net.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.opt.state_dict(),
            "rng": {"ranks": ranks},
            "sde": self.sde.spec(),
            "model_config": dict(self.model_config),
            "config": self.config.to_dict(),
            "history": {**{k: (list(v) if isinstance(v, list) else v) for k, v in self.history.items()},
                        "window": list(self._window)},
            "skipped": self.skipped,
            "data_fingerprint": self.data_fingerprint,
            "world_size": self.dist.world_size,
        }

    def check_compatible(self, ckpt: dict[str, Any], where: str = "checkpoint") -> None:
        """CheckpointError unless the checkpoint's SDE and model match this run's."""
        check_compatible(ckpt, self.sde, self.model_config, where)
        check_data_fingerprint(ckpt.get("data_fingerprint"), self.data_fingerprint, self.config.data_dir, where)

    def load_state_dict(self, ckpt: dict[str, Any]) -> None:
        """Restore a checkpoint written by `state_dict` (after `check_compatible`)."""
        try:
            self.net.load_state_dict(ckpt["model"])
            self.ema.load_state_dict(ckpt["ema"])
            self.opt.load_state_dict(ckpt["optimizer"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(f"checkpoint does not fit this model: {err}") from None
        self.step_count = int(ckpt["step"])
        self.skipped = int(ckpt.get("skipped", 0))
        hist = ckpt.get("history") or {}
        self.history = {k: list(hist.get(k, [])) for k in ("step", "loss", "eval_step", "eval_value")}
        if "eval_metric" in hist:
            self.history["eval_metric"] = hist["eval_metric"]
        self._window = list(hist.get("window", []))
        ranks = (ckpt.get("rng") or {}).get("ranks") or []
        if len(ranks) == self.dist.world_size and self.dist.rank < len(ranks):
            r = ranks[self.dist.rank]
            torch.set_rng_state(r["torch"])
            if r.get("cuda") is not None and torch.cuda.is_available() and len(r["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(r["cuda"])
            self.data_gen.set_state(r["data"])
            self.noise_gen.set_state(r["noise"])
        else:  # another world size: fresh, deterministic streams for this step
            self._seed_streams(self.config.seed + 7 * self.step_count)

    def ema_score_model(self) -> ScoreModel:
        """The EMA network wrapped as a ScoreModel (eval mode)."""
        return score_model(self.ema.shadow, self.sde, self.model_config).eval()
