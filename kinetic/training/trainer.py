"""`Trainer`: one run's state (SDE, data, network, EMA, optimiser, generators) and its `step`.

Used by `kinetic.training.train` (which adds the run directory, checkpoints, signals and outputs)
and by the throughput benchmark. The objective is denoising score matching of the noised blocks
(`kinetic.losses.DSMLoss`), optimised by AdamW with a linear warm-up.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..checkpoint import CheckpointError, check_compatible
from ..config import ConfigError, TrainConfig
from ..losses import DSMLoss
from ..score import ScoreModel, output_blocks
from ..checks import check_training_memory
from ..data import check_data_fingerprint, data_fingerprint
from .distributed import DistInfo, derive_seed, resolve_device
from .ema import EMA

__all__ = ["Trainer", "TrainingError"]


class TrainingError(RuntimeError):
    """Training cannot continue (a non-finite loss, an unwritable run directory); the message says
    at which step and what was kept."""


class _Autocast(nn.Module):
    """Runs the wrapped network under bf16 autocast (CUDA only); returns float32."""

    is_kinetic_wrapper = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.inner = net

    def forward(self, x: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return (self.inner(x, t) if labels is None else self.inner(x, t, labels)).float()


class Trainer:
    """One run's state and its optimisation `step`; ``data`` (and ``labels`` (N,) int64 for a
    conditional run) overrides loading ``config.data``."""

    def __init__(
        self,
        config: TrainConfig,
        *,
        dist_info: DistInfo | None = None,
        device: torch.device | str | None = None,
        data: Tensor | None = None,
        labels: Tensor | None = None,
    ):
        from ..data import DataError, dataset_classes, load_dataset
        from ..models import auto_kind, build_model  # kinetic.models: the repository's models/ folder

        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a kinetic.config.TrainConfig, got {type(config).__name__}")
        self.config = cfg = config  # checked when it was made
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device) if device is not None else resolve_device(cfg.device, self.dist)
        self.sde = cfg.build_sde()
        self.num_classes = 0
        if data is None:
            got = load_dataset(cfg.data, data_dir=cfg.data_dir, n=cfg.data_n, seed=cfg.seed, resolution=cfg.resolution,
                               labels=cfg.conditional)
            data, labels = got if cfg.conditional else (got, None)
            if cfg.conditional:
                self.num_classes = dataset_classes(cfg.data, cfg.data_dir)
        elif cfg.conditional:
            if labels is None:
                raise ConfigError("a conditional run needs labels with its data (Trainer(data=..., labels=...))", "conditional")
            try:
                self.num_classes = dataset_classes(cfg.data, cfg.data_dir)
            except DataError:
                self.num_classes = 0
            self.num_classes = max(self.num_classes, int(labels.max()) + 1 if labels.numel() else 0)
        if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 1:
            raise ConfigError("data must be a tensor of shape (N, *data_shape)", "data")
        if cfg.conditional:
            if (not isinstance(labels, Tensor) or labels.shape != (data.shape[0],) or labels.is_floating_point()
                    or labels.numel() == 0 or int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
                raise ConfigError(
                    f"labels must be {data.shape[0]} integers in [0, {self.num_classes}), one per example", "conditional"
                )
            labels = labels.to(torch.int64)
        elif labels is not None:
            raise ConfigError("labels were given for an unconditional run (set conditional=True)", "conditional")
        if not bool(torch.isfinite(data).all()):
            bad = int((~torch.isfinite(data.reshape(data.shape[0], -1))).any(1).sum())
            raise ConfigError(f"data has non-finite values (NaN or inf) in {bad} of its {data.shape[0]} examples", "data")
        self.data_shape = tuple(int(s) for s in data.shape[1:])
        self.data_fingerprint = data_fingerprint(data)  # a resumed run checks it trains on the same data
        self.reference = data[: min(2000, data.shape[0])]  # for scatter plots
        shard = data[self.dist.rank :: self.dist.world_size] if self.dist.enabled else data
        if shard.shape[0] < 1:
            raise ConfigError(f"data has {data.shape[0]} examples, fewer than the {self.dist.world_size} ranks", "data")
        self.data = shard.to(self.device, torch.float32)
        self.labels = None
        if labels is not None:
            lab = labels[self.dist.rank :: self.dist.world_size] if self.dist.enabled else labels
            self.labels = lab.to(self.device)
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(
                f"batch_size={cfg.batch_size} must be divisible by the number of ranks ({self.dist.world_size})",
                "batch_size",
            )
        self.local_batch = cfg.batch_size // self.dist.world_size

        kind = cfg.model if cfg.model != "auto" else auto_kind(self.data_shape)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        try:
            net = build_model(
                kind, cfg.model_size, self.data_shape, self.sde.order, output_blocks(self.sde, cfg.parameterization),
                num_classes=self.num_classes,
            )
        except ValueError as err:
            raise ConfigError(str(err), "model") from None
        check_training_memory(self.local_batch, self.sde.order, self.data_shape, net, self.data, self.device)
        self.net = net.to(self.device)
        self.model_config = {
            "kind": kind,
            "size": cfg.model_size,
            "data_shape": list(self.data_shape),
            "order": self.sde.order,
            "parameterization": cfg.parameterization,
            "data_std": cfg.data_std,
            "input_scaling": cfg.input_scaling,
            "num_classes": self.num_classes,
        }
        self.ema = EMA(self.net, cfg.ema_decay)

        core: nn.Module = self.net
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            core = DDP(core, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        if cfg.compile:
            core = torch.compile(core)
        if cfg.amp and self.device.type == "cuda":
            core = _Autocast(core)
        self.train_model = ScoreModel(
            core, self.sde, cfg.parameterization, data_std=cfg.data_std, input_scaling=cfg.input_scaling
        )
        self.loss_fn = DSMLoss(
            self.sde, cfg.parameterization, cfg.weighting, cfg.t_eps, cfg.time_sampling,
            data_std=cfg.data_std, input_scaling=cfg.input_scaling, label_dropout=cfg.label_dropout if cfg.conditional else 0.0,
        )
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        torch.manual_seed(derive_seed(cfg.seed, self.dist.rank, 2))  # dropout etc.: per rank
        self.data_gen = torch.Generator(device="cpu").manual_seed(derive_seed(cfg.seed, self.dist.rank, 0))
        self.noise_gen = torch.Generator(device=self.device).manual_seed(derive_seed(cfg.seed, self.dist.rank, 1))
        self.step_count = 0
        self.skipped = 0
        self.history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "eval_value": []}
        self._window: list[float] = []
        self.stop_requested = False

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
            s = self.config.seed + 7 * self.step_count
            torch.manual_seed(derive_seed(s, self.dist.rank, 2))
            self.data_gen.manual_seed(derive_seed(s, self.dist.rank, 0))
            self.noise_gen.manual_seed(derive_seed(s, self.dist.rank, 1))

    def ema_score_model(self) -> ScoreModel:
        """The EMA network wrapped as a ScoreModel (eval mode)."""
        cfg = self.config
        return ScoreModel(
            self.ema.shadow, self.sde, cfg.parameterization, data_std=cfg.data_std, input_scaling=cfg.input_scaling
        ).eval()
