"""`train`: the run loop on one page (after EDM's ``training_loop.py``).

    claim the run directory -> build the Trainer (resume: restore the checkpoint) -> loop:
        step -> log (metrics.jsonl, TensorBoard) -> checkpoint / samples / eval at their intervals
    -> final checkpoint, samples and eval -> summary.json

It never prints: progress goes to ``callback(dict)`` (events "start", "step", "checkpoint",
"samples", "samples_error", "eval", "eval_error", "end").
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..checkpoint import CHECKPOINT_NAME, CheckpointError, load_checkpoint, save_checkpoint
from ..checks import skipped_steps_verdict
from ..config import SAFE_ON_RESUME, ConfigError, TrainConfig
from ..fileio import atomic_write_text, json_text
from .distributed import DistInfo, all_ok, barrier, init_distributed, resolve_device, shutdown
from .monitor import evaluate_ema
from .outputs import MetricsLog, TensorBoardLog, sample_to_file, save_loss_curve, tensorboard_missing
from .parts import build_trainer
from .rundir import RunDir
from .signals import StopSignals
from .trainer import Trainer, TrainingError

__all__ = ["train", "RunDirError", "check_resumable"]

Callback = Callable[[dict], None]


class RunDirError(TrainingError):
    """The run directory stopped being writable mid-run; the message says where the state is."""


def train(config: TrainConfig, callback: Callback | None = None, *, network: nn.Module | None = None) -> dict[str, Any]:
    """Train a score model as ``config`` says; returns a summary dict.

    ``network``: any ``nn.Module`` ``net(h, t[, labels])`` to train instead of the one ``config``
    names (h: the state (B, k*D[0], *D[1:]); output: the data shape with `output_blocks` blocks on
    its first axis); its run resumes with the same module given again, and
    ``kinetic.load_model(run, network=...)`` loads it back.

    Writes (rank 0) into the run directory ``config.out_dir()`` (see `kinetic.training.rundir`):
    config.toml, checkpoint.pt every ``ckpt_every`` steps and at the end (atomically),
    metrics.jsonl every ``log_every`` steps, sample grids every ``sample_every`` steps and at the
    end, the metric of ``eval_every``, loss.png, TensorBoard events (``tensorboard``) and
    summary.json. The directory is locked for the run; a second run on it fails at once.
    With ``resume`` it continues bit-for-bit from checkpoint.pt (only `SAFE_ON_RESUME` fields may
    differ from the run's config). SIGINT / SIGTERM stop after the current step with a checkpoint
    (summary["interrupted"]). A non-finite loss raises TrainingError naming the step (the last
    checkpoint is kept) unless ``skip_nonfinite``.

    Summary keys: out, checkpoint, start_step, step, steps, loss, elapsed_s, examples_per_s,
    samples (paths), samples_error, loss_curve, metrics, eval, interrupted, signal, skipped_steps,
    steps_done, world_size, device, params, artefacts ({what: path}), stale_removed.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a kinetic.config.TrainConfig, got {type(config).__name__}")
    dist_info = init_distributed(config.device)
    try:
        emit = callback if (callback is not None and dist_info.is_main) else (lambda d: None)
        return _claim_and_run(config, dist_info, emit, network)
    finally:
        shutdown(dist_info)


def check_resumable(cfg: TrainConfig, ckpt: dict[str, Any], where: str) -> None:
    """CheckpointError unless ``cfg`` differs from the checkpoint's config only in `SAFE_ON_RESUME`
    (`TrainConfig.changed_on_resume`)."""
    saved = ckpt.get("config") or {}
    diff = cfg.changed_on_resume(saved)
    if diff:
        now = cfg.to_dict()
        parts = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
        raise CheckpointError(
            f"{where} was trained with other settings ({parts}); a resumed run keeps its settings "
            f"(only {', '.join(SAFE_ON_RESUME)} may change)"
        )


def _claim_and_run(cfg: TrainConfig, dist_info: DistInfo, emit: Callback, network: nn.Module | None) -> dict[str, Any]:
    if cfg.tensorboard and (why := tensorboard_missing()):
        raise ConfigError(why, "tensorboard")
    resolve_device(cfg.device, dist_info)  # an unusable device is refused before the run directory exists
    run = RunDir(cfg.out_dir())
    error: Exception | None = None
    if dist_info.is_main:  # the directory is usable and ours alone, before any work
        try:
            run.create()
            run.acquire()
        except ConfigError as err:
            error = err
    if not all_ok(dist_info, error is None):
        raise error or ConfigError(f"rank 0 could not claim the run directory {run.path}", "out")
    try:
        return _run(cfg, run, dist_info, emit, network)
    finally:
        if dist_info.is_main:
            run.release()


def _run(cfg: TrainConfig, run: RunDir, dist_info: DistInfo, emit: Callback, network: nn.Module | None) -> dict[str, Any]:
    stale = [str(p) for p in run.clean_stale_temp_files()] if dist_info.is_main else []
    _check_run_dir(cfg, run)
    trainer = build_trainer(cfg, dist_info=dist_info, network=network)
    if cfg.resume:
        _restore(trainer, cfg, run)
    barrier(dist_info)
    work = _Periodic(cfg, run, trainer, emit)
    work.begin(stale)
    with StopSignals(trainer) as sig:
        try:
            interrupted = _loop(trainer, work)
            work.finish(interrupted)
        except OSError as err:
            raise RunDirError(_write_failure(err, trainer, run, work.ckpt_step, dist_info)) from None
        finally:
            work.close()
    summary = work.summary(interrupted, sig.name, stale)
    if dist_info.is_main:
        try:
            atomic_write_text(run.summary, json_text(summary))
        except OSError as err:
            raise RunDirError(_write_failure(err, trainer, run, work.ckpt_step, dist_info)) from None
    barrier(dist_info)  # every rank returns once rank 0 has written the run's files
    emit({"event": "end", **summary})
    return summary


def _loop(trainer: Trainer, work: "_Periodic") -> bool:
    """Steps to ``steps``, with the periodic work after each; True when a signal stopped it."""
    while trainer.step_count < trainer.config.steps:
        t0 = time.perf_counter()
        try:
            info = trainer.step()
        except TrainingError as err:
            ckpt = work.run.checkpoint
            kept = f"; the last checkpoint ({ckpt}) is kept" if ckpt.is_file() else ""
            raise TrainingError(f"{err}{kept}") from None
        if info["skipped"] and skipped_steps_verdict(trainer.skipped, trainer.step_count)[1]:
            raise TrainingError(f"stopped at step {trainer.step_count}: "
                                f"{skipped_steps_verdict(trainer.skipped, trainer.step_count)[0]}")
        if work.after_step(info, time.perf_counter() - t0):
            return True
    return False


def _check_run_dir(cfg: TrainConfig, run: RunDir) -> None:
    """ConfigError / CheckpointError unless the directory holds what ``resume`` / ``overwrite`` expect."""
    if cfg.resume and not run.checkpoint.is_file():
        raise CheckpointError(f"no checkpoint to resume from at {run.checkpoint}")
    if not cfg.resume and run.checkpoint.is_file() and not cfg.overwrite:
        raise ConfigError(
            f"{run.path} already holds a checkpoint; resume it (--resume), choose another --out, or pass --overwrite",
            "out",
        )


def _restore(trainer: Trainer, cfg: TrainConfig, run: RunDir) -> None:
    """Load the run's checkpoint into ``trainer`` after checking that it is this run's and has steps to go."""
    ckpt = load_checkpoint(run.checkpoint, map_location=trainer.device)
    trainer.check_compatible(ckpt, where=str(run.checkpoint))
    check_resumable(cfg, ckpt, str(run.checkpoint))
    if cfg.steps <= int(ckpt["step"]):
        raise ConfigError(
            f"the run in {run.path} is already at step {int(ckpt['step'])}, so steps={cfg.steps} leaves nothing to "
            f"do (give steps > {int(ckpt['step'])} to train it further); its files are left as they are", "steps",
        )
    trainer.load_state_dict(ckpt)


class _Periodic:
    """What a run writes along the way: the step log, checkpoints, sample grids and the periodic
    metric at their intervals, the final ones, and the summary. Files are written by rank 0; the
    checkpoint snapshot is a collective (every rank calls `checkpoint`)."""

    def __init__(self, cfg: TrainConfig, run: RunDir, trainer: Trainer, emit: Callback):
        self.cfg, self.run, self.trainer, self.emit = cfg, run, trainer, emit
        self.main = trainer.dist.is_main
        self.start_step = trainer.step_count
        self.metrics, self.tb = MetricsLog(run.metrics), None
        self.samples: list[str] = []
        self.samples_error: str | None = None
        self.sampling = True  # False once sampling cannot work (no sampler)
        self.ckpt_step: int | None = self.start_step or None
        self.eval: dict[str, Any] | None = None
        self.params = sum(p.numel() for p in trainer.net.parameters())
        self.title = f"{trainer.sde.name} on {cfg.data}"
        self.t_start, self.step_time, self.last = time.perf_counter(), None, {}

    def begin(self, stale: list[str]) -> None:
        """Replace a previous run (overwrite: only now that the new one is built), write config.toml, say "start"."""
        cfg, tr = self.cfg, self.trainer
        if self.main:
            if cfg.overwrite:
                self.run.clear_previous_run()
            cfg.save(self.run.config, include_out=False)
            self.metrics.keep_until(self.start_step)
            self.tb = TensorBoardLog(self.run.tensorboard, self.start_step) if cfg.tensorboard else None
        self.emit({
            "event": "start", "step": self.start_step, "steps": cfg.steps, "out": str(self.run.path),
            "device": str(tr.device), "world_size": tr.dist.world_size, "params": self.params, "sde": repr(tr.sde),
            "model": tr.model_config, "batch_size": cfg.batch_size, "stale_removed": stale,
        })
        self.t_start = time.perf_counter()

    def _due(self, every: int) -> bool:
        step = self.trainer.step_count
        return bool(every) and step % every == 0 and step < self.cfg.steps

    def after_step(self, info: dict[str, Any], dt: float) -> bool:
        """Log the step, then the work due at it; True when the run must stop (a signal)."""
        cfg = self.cfg
        self.step_time = dt if self.step_time is None else 0.9 * self.step_time + 0.1 * dt
        info.update({"event": "step", "steps": cfg.steps, "examples_per_s": cfg.batch_size / self.step_time,
                     "elapsed_s": time.perf_counter() - self.t_start})
        logged, stop = info.pop("logged"), info.pop("stop")
        self.last = info
        self.emit(info)
        if self.main and logged is not None:
            self._log_row(info, logged)
        if stop:
            return True
        if self._due(cfg.ckpt_every):
            self.checkpoint()
        if self._due(cfg.sample_every):
            self.write_samples()
        if self._due(cfg.eval_every):
            self.evaluate()
        return False

    def _log_row(self, info: dict[str, Any], loss: float) -> None:
        row = {"step": info["step"], "loss": loss, "lr": info["lr"], "grad_norm": info["grad_norm"],
               "examples_per_s": info["examples_per_s"], "elapsed_s": info["elapsed_s"],
               "skipped_steps": self.trainer.skipped}
        self.metrics.append(row)
        if self.tb is not None:
            self.tb.scalars(info["step"], {f"train/{k}": v for k, v in row.items() if k != "step"})

    def finish(self, interrupted: bool) -> None:
        """The final metric, checkpoint and samples (a signal: the checkpoint only)."""
        done = self.trainer.step_count > self.start_step
        if done and not interrupted and self.cfg.eval_every:
            self.evaluate()  # the final model's value, also in the checkpoint's history
        if done or not self.run.checkpoint.is_file():
            self.checkpoint()
        if done and not interrupted:
            self.write_samples()

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def checkpoint(self) -> None:
        tr = self.trainer
        snapshot = tr.state_dict()  # collective under DDP
        if self.main:
            save_checkpoint(snapshot, self.run.checkpoint)
            self.ckpt_step = tr.step_count
            save_loss_curve(tr.history, self.run.loss_curve, title=self.title)
            self.emit({"event": "checkpoint", "step": tr.step_count, "path": str(self.run.checkpoint)})

    def write_samples(self) -> None:
        cfg, tr = self.cfg, self.trainer
        if not self.main or cfg.n_samples <= 0 or not self.sampling:
            return
        path = self.run.samples / f"step_{tr.step_count:07d}.png"
        try:
            sample_to_file(
                tr.ema_score_model(), (cfg.n_samples, *tr.data_shape), path, solver=cfg.sample_solver,
                steps=cfg.sample_steps, t_eps=cfg.sample_t_eps, seed=cfg.seed + 12345,
                reference=tr.reference if len(tr.data_shape) == 1 else None,
                title=f"{tr.sde.name}, EMA, step {tr.step_count}",
            )
        except (ImportError, ValueError, TypeError, NotImplementedError) as err:
            # no sampler (ImportError: stop trying) or a failed draw (e.g. non-finite samples early
            # in training): keep training and report it
            self.sampling = not isinstance(err, ImportError)
            self.samples_error = f"sampling at step {tr.step_count} failed: {type(err).__name__}: {err}"
            self.emit({"event": "samples_error", "step": tr.step_count, "error": self.samples_error})
            return
        self.samples.append(str(path))
        if self.tb is not None:
            self.tb.image("samples", path, tr.step_count)
        self.emit({"event": "samples", "step": tr.step_count, "path": str(path)})

    def evaluate(self) -> None:
        cfg, tr = self.cfg, self.trainer
        if not self.main or not cfg.eval_every:
            return
        try:
            name, value = evaluate_ema(tr)
        except (ValueError, TypeError) as err:
            self.emit({"event": "eval_error", "step": tr.step_count, "error": f"{type(err).__name__}: {err}"})
            return
        tr.record_eval(name, value)
        self.eval = {"metric": name, "value": value, "step": tr.step_count}
        self.metrics.append({"step": tr.step_count, "elapsed_s": time.perf_counter() - self.t_start, name: value,
                             "eval_n": cfg.eval_n})
        if self.tb is not None:
            self.tb.scalars(tr.step_count, {f"eval/{name}": value})
        self.emit({"event": "eval", "step": tr.step_count, "metric": name, "value": value})

    def summary(self, interrupted: bool, signal: str | None, stale: list[str]) -> dict[str, Any]:
        """The summary dict `train` returns and writes to summary.json."""
        cfg, tr, run = self.cfg, self.trainer, self.run
        artefacts = {
            "run directory": run.path, "checkpoint": run.checkpoint, "config": run.config, "metrics": run.metrics,
            "loss curve": run.loss_curve, "samples": Path(self.samples[-1]) if self.samples else None,
            "summary": run.summary, "tensorboard": run.tensorboard if cfg.tensorboard else None,
        }
        return {
            "out": str(run.path), "checkpoint": str(run.checkpoint), "start_step": self.start_step,
            "step": tr.step_count, "steps": cfg.steps,
            "loss": tr.history["loss"][-1] if tr.history["loss"] else self.last.get("loss"),
            "elapsed_s": time.perf_counter() - self.t_start,
            "examples_per_s": cfg.batch_size / self.step_time if self.step_time else None,
            "samples": self.samples, "samples_error": self.samples_error,
            "loss_curve": str(run.loss_curve) if run.loss_curve.is_file() else None,
            "metrics": str(run.metrics) if run.metrics.is_file() else None,
            "eval": self.eval, "interrupted": interrupted, "signal": signal, "skipped_steps": tr.skipped,
            "skipped_warning": skipped_steps_verdict(tr.skipped, tr.step_count)[0],
            "steps_done": tr.step_count - self.start_step, "world_size": tr.dist.world_size,
            "device": str(tr.device), "params": self.params,
            "artefacts": {k: str(v) for k, v in artefacts.items() if v is not None and (k == "summary" or Path(v).exists())},
            "stale_removed": stale,
        }


def _write_failure(err: OSError, trainer: Trainer, run: RunDir, ckpt_step: int | None, dist_info: DistInfo) -> str:
    """One line for a write that failed mid-run, after saving the state where it can be saved."""
    what = f"cannot write {err.filename or run.path}: {err.strerror or err} (at step {trainer.step_count})"
    kept = (f"the checkpoint of step {ckpt_step} is kept in {run.checkpoint}" if ckpt_step is not None
            else "no checkpoint had been written yet")
    if ckpt_step == trainer.step_count or dist_info.enabled:
        return f"{what}; {kept}"
    try:  # keep the newer state too, outside the unwritable directory
        rescue = Path(tempfile.mkdtemp(prefix="kinetic-rescue-")) / CHECKPOINT_NAME
        save_checkpoint(trainer.state_dict(), rescue)
    except OSError:
        return f"{what}; {kept}"
    return (f"{what}; {kept}, and the state at step {trainer.step_count} was saved to {rescue} (copy it there "
            "to resume from it)")
