"""The training loop: last-block DSM, AdamW + warm-up, EMA, checkpoints, resume, DDP, sample grids.

    from kinetic.config import TrainConfig
    from kinetic.training import train
    summary = train(TrainConfig(sde="hold", data="digits", steps=2000, out="runs/hold-digits"))

`train` is what ``kinetic train`` runs. It never prints: pass ``callback(dict)`` for progress
(events "start", "step", "checkpoint", "samples", "end"). The run directory holds ``config.toml``,
``checkpoint.pt`` (see `kinetic.checkpoint`), ``samples/step_XXXXXXX.png``, ``loss.png`` and
``summary.json``. Launched under ``torchrun`` (WORLD_SIZE > 1) it runs DDP: NCCL on CUDA, gloo on
CPU; each rank draws from its own shard with its own seed; rank 0 alone writes files.
"""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .fileio import atomic_write, atomic_write_text
from .config import ConfigError, TrainConfig
from .losses import DSMLoss
from .score import ScoreModel, as_score_fn

__all__ = ["train", "Trainer", "TrainingError", "EMA", "save_loss_curve", "sample_to_file"]

Callback = Callable[[dict], None]
CHECKPOINT_NAME = "checkpoint.pt"


class TrainingError(RuntimeError):
    """Training cannot continue (e.g. a non-finite loss); the message names the step."""


# ---------------------------------------------------------------------- distributed
@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when train() initialised the process group itself

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name)
    if v is None or v == "":
        return default
    try:
        return int(v)
    except ValueError:
        raise ConfigError(f"environment variable {name} must be an integer, got {v!r}") from None


def _init_distributed(device_pref: str) -> DistInfo:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", 0), False)
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but torch.distributed is not available in this build of torch")
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    use_cuda = device_pref != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo", rank=rank, world_size=world)
    return DistInfo(rank, world, local, True)


def _resolve_device(pref: str, dist_info: DistInfo) -> torch.device:
    if pref == "auto":
        return torch.device("cuda", dist_info.local_rank) if torch.cuda.is_available() else torch.device("cpu")
    dev = torch.device(pref)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={pref!r} but CUDA is not available; use device='cpu'", "device")
        if dev.index is None:
            dev = torch.device("cuda", dist_info.local_rank)
    return dev


def _derive_seed(seed: int, rank: int, stream: int) -> int:
    return (int(seed) * 1_000_003 + int(rank) * 8191 + int(stream) * 131) % (2**63 - 1)


# ---------------------------------------------------------------------- EMA
class EMA:
    """Exponential moving average of a network's weights (a separate copy in eval mode).

    decay at step s: min(decay, (1 + s) / (10 + s)) so short runs are not dominated by the init.
    """

    def __init__(self, net: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p = [p for p in self.shadow.parameters()]
        cur_p = [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - d)
        for b_ema, b in zip(self.shadow.buffers(), net.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.shadow.load_state_dict(sd)


class _Autocast(nn.Module):
    """Runs the wrapped network under bf16 autocast (CUDA only); returns float32."""

    is_kinetic_wrapper = True

    def __init__(self, net: nn.Module):
        super().__init__()
        self.inner = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        with torch.autocast(device_type="cuda", dtype=torch.bfloat16):
            return self.inner(x, t).float()


# ---------------------------------------------------------------------- the trainer
class Trainer:
    """One run's state (SDE, data, network, EMA, optimiser, generators) and its `step`.

    Used by `train` (which adds the run directory, checkpoints, signals and sampling) and by the
    throughput benchmark. ``data`` overrides loading ``config.data``.
    """

    def __init__(
        self,
        config: TrainConfig,
        *,
        dist_info: DistInfo | None = None,
        device: torch.device | str | None = None,
        data: Tensor | None = None,
    ):
        from .data import DataError, load_dataset
        from .models import build_model

        self.config = cfg = config.validate()
        self.dist = dist_info or DistInfo()
        self.device = torch.device(device) if device is not None else _resolve_device(cfg.device, self.dist)
        self.sde = cfg.build_sde()
        if cfg.t_eps >= self.sde.T:
            raise ConfigError(f"t_eps={cfg.t_eps} must be smaller than the SDE's T={self.sde.T}", "t_eps")
        if data is None:
            try:
                data = load_dataset(cfg.data, data_dir=cfg.data_dir, n=cfg.data_n, seed=cfg.seed, resolution=cfg.resolution)
            except DataError:
                raise
        if not isinstance(data, Tensor) or data.dim() < 2 or data.shape[0] < 1:
            raise ConfigError("data must be a tensor of shape (N, *data_shape)")
        self.data_shape = tuple(int(s) for s in data.shape[1:])
        self.reference = data[: min(2000, data.shape[0])]  # for scatter plots
        shard = data[self.dist.rank :: self.dist.world_size] if self.dist.enabled else data
        if shard.shape[0] < 1:
            raise ConfigError(f"data has {data.shape[0]} examples, fewer than the {self.dist.world_size} ranks", "data")
        self.data = shard.to(self.device, torch.float32)
        if cfg.batch_size % self.dist.world_size:
            raise ConfigError(
                f"batch_size={cfg.batch_size} must be divisible by the number of ranks ({self.dist.world_size})",
                "batch_size",
            )
        self.local_batch = cfg.batch_size // self.dist.world_size

        kind = cfg.model if cfg.model != "auto" else ("mlp" if len(self.data_shape) == 1 else "unet")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        try:
            net = build_model(kind, cfg.model_size, self.data_shape, self.sde.order)
        except ValueError as err:
            raise ConfigError(str(err), "model") from None
        self.net = net.to(self.device)
        self.model_config = {
            "kind": kind,
            "size": cfg.model_size,
            "data_shape": list(self.data_shape),
            "order": self.sde.order,
            "parameterization": cfg.parameterization,
            "data_std": cfg.data_std,
            "input_scaling": cfg.input_scaling,
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
            data_std=cfg.data_std, input_scaling=cfg.input_scaling,
        )
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)

        torch.manual_seed(_derive_seed(cfg.seed, self.dist.rank, 2))  # dropout etc.: per rank
        self.data_gen = torch.Generator(device="cpu").manual_seed(_derive_seed(cfg.seed, self.dist.rank, 0))
        self.noise_gen = torch.Generator(device=self.device).manual_seed(_derive_seed(cfg.seed, self.dist.rank, 1))
        self.step_count = 0
        self.skipped = 0
        self.history: dict[str, list] = {"step": [], "loss": []}
        self._window: list[float] = []
        self.stop_requested = False

    # ------------------------------------------------------------------ schedule
    def lr_at(self, step: int) -> float:
        """Linear warm-up over ``warmup`` steps, then constant."""
        w = self.config.warmup
        return self.config.lr * (min(1.0, (step + 1) / w) if w > 0 else 1.0)

    # ------------------------------------------------------------------ one step
    def step(self) -> dict[str, Any]:
        """One optimisation step; returns {"step", "loss", "lr", "grad_norm", "skipped", "stop"}.

        "stop" is True when any rank had ``stop_requested`` set before this step (a signal).

        A non-finite loss (or gradient norm) raises TrainingError unless ``skip_nonfinite``,
        in which case the update is skipped (the step still counts).
        """
        cfg = self.config
        lr = self.lr_at(self.step_count)
        for g in self.opt.param_groups:
            g["lr"] = lr
        idx = torch.randint(self.data.shape[0], (self.local_batch,), generator=self.data_gen)
        x0 = self.data[idx.to(self.data.device)]
        loss = self.loss_fn(self.train_model, x0, generator=self.noise_gen)

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
        if ok:
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            max_norm = cfg.grad_clip if cfg.grad_clip > 0 else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.net.parameters(), max_norm))
            ok = math.isfinite(grad_norm)
            what = "gradient norm"
        else:
            what = "loss"
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
        if self._window and (step_index % cfg.log_every == 0):
            self.history["step"].append(step_index)
            self.history["loss"].append(sum(self._window) / len(self._window))
            self._window = []
        return {"step": step_index, "loss": loss_val, "lr": lr, "grad_norm": grad_norm, "skipped": not ok, "stop": stop}

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

            gathered: list = [None] * self.dist.world_size
            dist.all_gather_object(gathered, {k: v for k, v in rng.items()})
            ranks = gathered
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
            "history": {"step": list(self.history["step"]), "loss": list(self.history["loss"]),
                        "window": list(self._window)},
            "skipped": self.skipped,
            "world_size": self.dist.world_size,
        }

    def check_compatible(self, ckpt: dict[str, Any], where: str = "checkpoint") -> None:
        """CheckpointError unless the checkpoint's SDE and model match this run's."""
        if not _close(ckpt.get("sde"), self.sde.spec()):
            raise CheckpointError(
                f"{where} was trained with a different SDE ({ckpt.get('sde', {}).get('name')!r}, "
                f"params {ckpt.get('sde', {}).get('params')}) than this run ({self.sde.name!r}, params "
                f"{self.sde.params}); use another --out or the same SDE settings"
            )
        mc = ckpt.get("model_config", {})
        diff = [k for k in self.model_config if not _close(mc.get(k), self.model_config[k])]
        if diff:
            parts = ", ".join(f"{k}: {mc.get(k)!r} -> {self.model_config[k]!r}" for k in diff)
            raise CheckpointError(f"{where} has a different model configuration ({parts})")

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
        self.history = {"step": list(hist.get("step", [])), "loss": list(hist.get("loss", []))}
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
            torch.manual_seed(_derive_seed(s, self.dist.rank, 2))
            self.data_gen.manual_seed(_derive_seed(s, self.dist.rank, 0))
            self.noise_gen.manual_seed(_derive_seed(s, self.dist.rank, 1))

    def ema_score_model(self) -> ScoreModel:
        """The EMA network wrapped as a ScoreModel (eval mode)."""
        cfg = self.config
        return ScoreModel(
            self.ema.shadow, self.sde, cfg.parameterization, data_std=cfg.data_std, input_scaling=cfg.input_scaling
        ).eval()


def _close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Structural equality of plain data, floats to a relative tolerance."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], rel) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_close(x, y, rel) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b or abs(a - b) <= rel * max(abs(a), abs(b))
    return a == b


# ---------------------------------------------------------------------- outputs
def save_loss_curve(history: dict[str, list], path: str | os.PathLike[str], title: str | None = None) -> Path | None:
    """Loss vs step (log scale) as PNG via matplotlib's Agg canvas; None when there is no data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    steps, losses = history.get("step", []), history.get("loss", [])
    if not steps:
        return None
    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(steps, losses, lw=0.8, color="tab:blue", alpha=0.5, label="loss")
    if len(losses) >= 10:
        w = max(2, len(losses) // 20)
        sm = [sum(losses[max(0, i - w + 1) : i + 1]) / len(losses[max(0, i - w + 1) : i + 1]) for i in range(len(losses))]
        ax.plot(steps, sm, lw=1.5, color="tab:red", label=f"moving mean ({w})")
    if min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("DSM loss (sum over dims)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
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
    """Draw ``shape[0]`` samples with `kinetic.sampling.sample` and save an image grid (C, H, W data;
    images under 32 px are enlarged by nearest-neighbour repetition) or a scatter plot (2-D data,
    over ``reference``)."""
    from .data import save_image_grid, save_scatter
    from .sampling import sample  # lazy: the samplers live in their own module

    p = next(score_model.parameters(), None)
    device = p.device if p is not None else torch.device("cpu")
    gen = torch.Generator(device=device).manual_seed(int(seed))
    was_training = score_model.training
    score_model.eval()
    try:
        with torch.no_grad():
            x = sample(score_model.sde, as_score_fn(score_model), shape, solver=solver, steps=steps, t_eps=t_eps,
                       generator=gen, device=device)
    finally:
        score_model.train(was_training)
    x = x.detach().float().cpu()
    if len(shape) == 2 and shape[1] == 2:
        return save_scatter(x, path, reference=reference, title=title)
    if len(shape) == 4:
        f = max(1, math.ceil(32 / min(x.shape[-2:])))  # small images (8x8 digits): nearest x f for viewing
        return save_image_grid(x.clamp(-1, 1), path, scale=f)
    raise ValueError(f"cannot plot samples of shape {tuple(shape)}: need (n, 2) points or (n, C, H, W) images")


# ---------------------------------------------------------------------- signals
class _StopSignals:
    """While active, SIGINT / SIGTERM set ``trainer.stop_requested`` (a checkpoint is written at the
    end of the current step); a second signal falls through to the previous handler."""

    def __init__(self, trainer: Trainer):
        self.trainer = trainer
        self.previous: dict[int, Any] = {}
        self.received: int | None = None

    def _handler(self, signum, frame):
        self.received = signum
        self.trainer.stop_requested = True
        prev = self.previous.get(signum, signal.SIG_DFL)
        signal.signal(signum, prev if prev is not None else signal.SIG_DFL)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                try:
                    self.previous[s] = signal.signal(s, self._handler)
                except (ValueError, OSError):  # pragma: no cover - unusual platforms
                    pass
        return self

    def __exit__(self, *exc):
        for s, prev in self.previous.items():
            try:
                signal.signal(s, prev if prev is not None else signal.SIG_DFL)
            except (ValueError, OSError):  # pragma: no cover
                pass
        return False


# ---------------------------------------------------------------------- entry point
def train(config: TrainConfig, callback: Callback | None = None) -> dict[str, Any]:
    """Train a score model as ``config`` says; returns a summary dict.

    Writes (rank 0) to ``config.out_dir()``: ``config.toml``, ``checkpoint.pt`` every ``ckpt_every``
    steps and at the end (atomically), sample grids / scatter plots of the EMA model every
    ``sample_every`` steps and at the end, ``loss.png`` and ``summary.json``. With ``resume`` it
    continues bit-for-bit from ``checkpoint.pt``. SIGINT / SIGTERM stop after the current step
    with a checkpoint (summary["interrupted"] is True). A non-finite loss raises TrainingError
    naming the step (the last checkpoint is kept) unless ``skip_nonfinite``.

    Summary keys: out, checkpoint, start_step, step, steps, loss, elapsed_s, examples_per_s,
    samples (paths), loss_curve, interrupted, skipped_steps, world_size, device, samples_error.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a kinetic.config.TrainConfig, got {type(config).__name__}")
    cfg = copy.deepcopy(config).validate()
    dist_info = _init_distributed(cfg.device)
    try:
        return _train(cfg, dist_info, callback if dist_info.is_main else None)
    finally:
        if dist_info.owns_group:
            import torch.distributed as dist

            dist.destroy_process_group()


def _barrier(dist_info: DistInfo) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()


def _train(cfg: TrainConfig, dist_info: DistInfo, callback: Callback | None) -> dict[str, Any]:
    emit = callback or (lambda d: None)
    out = cfg.out_dir()
    ckpt_path = out / CHECKPOINT_NAME
    if cfg.resume and not ckpt_path.is_file():
        raise CheckpointError(f"no checkpoint to resume from at {ckpt_path}")
    if not cfg.resume and ckpt_path.is_file() and not cfg.overwrite:
        raise ConfigError(
            f"{out} already holds a checkpoint; resume it (--resume), choose another --out, or pass --overwrite",
            "out",
        )
    trainer = Trainer(cfg, dist_info=dist_info)
    if cfg.resume:
        ckpt = load_checkpoint(ckpt_path, map_location=trainer.device)
        trainer.check_compatible(ckpt, where=str(ckpt_path))
        trainer.load_state_dict(ckpt)
        del ckpt
    _barrier(dist_info)
    main = dist_info.is_main
    if main:
        out.mkdir(parents=True, exist_ok=True)
        cfg.save(out / "config.toml")
        (out / "samples").mkdir(exist_ok=True)

    start_step = trainer.step_count
    n_params = sum(p.numel() for p in trainer.net.parameters())
    emit({
        "event": "start", "step": start_step, "steps": cfg.steps, "out": str(out), "device": str(trainer.device),
        "world_size": dist_info.world_size, "params": n_params, "sde": repr(trainer.sde),
        "model": trainer.model_config, "batch_size": cfg.batch_size,
    })

    samples: list[str] = []
    samples_error: str | None = None
    sample_shape = (cfg.n_samples, *trainer.data_shape)

    def write_checkpoint() -> Path:
        state = trainer.state_dict()  # collective under DDP
        if main:
            save_checkpoint(state, ckpt_path)
            save_loss_curve(trainer.history, out / "loss.png", title=f"{trainer.sde.name} on {cfg.data}")
            emit({"event": "checkpoint", "step": trainer.step_count, "path": str(ckpt_path)})
        return ckpt_path

    sampling_available = True

    def write_samples() -> None:
        nonlocal samples_error, sampling_available
        if not main or cfg.n_samples <= 0 or not sampling_available:
            return
        path = out / "samples" / f"step_{trainer.step_count:07d}.png"
        try:
            sample_to_file(
                trainer.ema_score_model(), sample_shape, path, solver=cfg.sample_solver, steps=cfg.sample_steps,
                t_eps=cfg.sample_t_eps, seed=cfg.seed + 12345,
                reference=trainer.reference if len(trainer.data_shape) == 1 else None,
                title=f"{trainer.sde.name}, EMA, step {trainer.step_count}",
            )
        except (ImportError, ValueError, TypeError, NotImplementedError) as err:
            # no sampler (ImportError: stop trying) or a failed draw (e.g. non-finite samples early in
            # training, a bad solver name): keep training and report it
            sampling_available = not isinstance(err, ImportError)
            samples_error = f"sampling at step {trainer.step_count} failed: {type(err).__name__}: {err}"
            emit({"event": "samples_error", "step": trainer.step_count, "error": samples_error})
            return
        samples.append(str(path))
        emit({"event": "samples", "step": trainer.step_count, "path": str(path)})

    t_start = time.perf_counter()
    step_time = None
    interrupted = False
    last: dict[str, Any] = {}
    with _StopSignals(trainer) as sig:
        while trainer.step_count < cfg.steps:
            t0 = time.perf_counter()
            try:
                info = trainer.step()
            except TrainingError as err:
                kept = f"; the last checkpoint ({ckpt_path}) is kept" if ckpt_path.is_file() else ""
                raise TrainingError(f"{err}{kept}") from None
            dt = time.perf_counter() - t0
            step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
            info.update({
                "event": "step", "steps": cfg.steps, "examples_per_s": cfg.batch_size / step_time,
                "elapsed_s": time.perf_counter() - t_start,
            })
            last = info
            emit(info)
            s = trainer.step_count
            if info.pop("stop"):
                interrupted = True
                break
            if cfg.ckpt_every and s % cfg.ckpt_every == 0 and s < cfg.steps:
                write_checkpoint()
            if cfg.sample_every and s % cfg.sample_every == 0 and s < cfg.steps:
                write_samples()
        if trainer.step_count > start_step or not ckpt_path.is_file():
            write_checkpoint()
        if not interrupted and trainer.step_count > start_step:
            write_samples()
        signal_name = signal.Signals(sig.received).name if sig.received else None
    elapsed = time.perf_counter() - t_start
    done = trainer.step_count - start_step
    summary = {
        "out": str(out),
        "checkpoint": str(ckpt_path),
        "start_step": start_step,
        "step": trainer.step_count,
        "steps": cfg.steps,
        "loss": trainer.history["loss"][-1] if trainer.history["loss"] else last.get("loss"),
        "elapsed_s": elapsed,
        "examples_per_s": cfg.batch_size / step_time if step_time else None,
        "samples": samples,
        "samples_error": samples_error,
        "loss_curve": str(out / "loss.png") if (out / "loss.png").is_file() else None,
        "interrupted": interrupted,
        "signal": signal_name,
        "skipped_steps": trainer.skipped,
        "steps_done": done,
        "world_size": dist_info.world_size,
        "device": str(trainer.device),
        "params": n_params,
    }
    if main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    emit({"event": "end", **summary})
    return summary
