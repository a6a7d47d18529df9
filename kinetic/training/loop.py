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

from ..checkpoint import CHECKPOINT_NAME, CheckpointError, _close, load_checkpoint, save_checkpoint
from ..config import RUN_CONTROL, SAFE_ON_RESUME, ConfigError, TrainConfig
from ..checks import skipped_steps_verdict
from ..data import resolve_data_dir
from ..fileio import atomic_write_text, json_text
from .distributed import DistInfo, all_ok, barrier, init_distributed, resolve_device, shutdown
from .monitor import evaluate_ema
from .outputs import MetricsLog, TensorBoardLog, sample_to_file, save_loss_curve, tensorboard_missing
from .rundir import RunDir
from .signals import StopSignals
from .trainer import Trainer, TrainingError

__all__ = ["train", "RunDirError", "check_resumable"]

Callback = Callable[[dict], None]


class RunDirError(TrainingError):
    """The run directory stopped being writable mid-run; the message says where the state is."""


def train(config: TrainConfig, callback: Callback | None = None) -> dict[str, Any]:
    """Train a score model as ``config`` says; returns a summary dict.

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
        return _claim_and_run(config, dist_info, emit)
    finally:
        shutdown(dist_info)


def check_resumable(cfg: TrainConfig, ckpt: dict[str, Any], where: str) -> None:
    """CheckpointError unless ``cfg`` differs from the checkpoint's config only in `SAFE_ON_RESUME`."""
    saved = dict(ckpt.get("config") or {})
    if saved.get("data_dir"):  # written relative by older versions: compare it resolved, as it is stored now
        saved["data_dir"] = resolve_data_dir(saved["data_dir"])
    now = cfg.to_dict()
    diff = [k for k in now if k in saved and k not in SAFE_ON_RESUME + RUN_CONTROL and not _close(saved[k], now[k])]
    if diff:
        parts = ", ".join(f"{k}: {saved[k]!r} -> {now[k]!r}" for k in diff)
        raise CheckpointError(
            f"{where} was trained with other settings ({parts}); a resumed run keeps its settings "
            f"(only {', '.join(SAFE_ON_RESUME)} may change)"
        )


def _claim_and_run(cfg: TrainConfig, dist_info: DistInfo, emit: Callback) -> dict[str, Any]:
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
        return _run(cfg, run, dist_info, emit)
    finally:
        if dist_info.is_main:
            run.release()


def _run(cfg: TrainConfig, run: RunDir, dist_info: DistInfo, emit: Callback) -> dict[str, Any]:
    main = dist_info.is_main
    stale = [str(p) for p in run.clean_stale_temp_files()] if main else []
    if cfg.resume and not run.checkpoint.is_file():
        raise CheckpointError(f"no checkpoint to resume from at {run.checkpoint}")
    if not cfg.resume and run.checkpoint.is_file() and not cfg.overwrite:
        raise ConfigError(
            f"{run.path} already holds a checkpoint; resume it (--resume), choose another --out, or pass --overwrite",
            "out",
        )
    trainer = Trainer(cfg, dist_info=dist_info)
    if cfg.resume:
        ckpt = load_checkpoint(run.checkpoint, map_location=trainer.device)
        trainer.check_compatible(ckpt, where=str(run.checkpoint))
        check_resumable(cfg, ckpt, str(run.checkpoint))
        if cfg.steps <= int(ckpt["step"]):
            raise ConfigError(
                f"the run in {run.path} is already at step {int(ckpt['step'])}, so steps={cfg.steps} leaves nothing to "
                f"do (give steps > {int(ckpt['step'])} to train it further); its files are left as they are", "steps",
            )
        trainer.load_state_dict(ckpt)
        del ckpt
    barrier(dist_info)
    start_step = trainer.step_count
    metrics, tb = MetricsLog(run.metrics), None
    if main:
        if cfg.overwrite:
            run.clear_previous_run()  # only now: the new run has been built
        cfg.save(run.config, include_out=False)
        metrics.keep_until(start_step)
        tb = TensorBoardLog(run.tensorboard, start_step) if cfg.tensorboard else None

    n_params = sum(p.numel() for p in trainer.net.parameters())
    emit({
        "event": "start", "step": start_step, "steps": cfg.steps, "out": str(run.path), "device": str(trainer.device),
        "world_size": dist_info.world_size, "params": n_params, "sde": repr(trainer.sde),
        "model": trainer.model_config, "batch_size": cfg.batch_size, "stale_removed": stale,
    })
    state = {"samples": [], "samples_error": None, "sampling": True, "ckpt_step": start_step if start_step else None,
             "eval": None}
    title = f"{trainer.sde.name} on {cfg.data}"

    def write_checkpoint() -> None:
        snapshot = trainer.state_dict()  # collective under DDP
        if main:
            save_checkpoint(snapshot, run.checkpoint)
            state["ckpt_step"] = trainer.step_count
            save_loss_curve(trainer.history, run.loss_curve, title=title)
            emit({"event": "checkpoint", "step": trainer.step_count, "path": str(run.checkpoint)})

    def write_samples() -> None:
        if not main or cfg.n_samples <= 0 or not state["sampling"]:
            return
        path = run.samples / f"step_{trainer.step_count:07d}.png"
        try:
            sample_to_file(
                trainer.ema_score_model(), (cfg.n_samples, *trainer.data_shape), path, solver=cfg.sample_solver,
                steps=cfg.sample_steps, t_eps=cfg.sample_t_eps, seed=cfg.seed + 12345,
                reference=trainer.reference if len(trainer.data_shape) == 1 else None,
                title=f"{trainer.sde.name}, EMA, step {trainer.step_count}",
            )
        except (ImportError, ValueError, TypeError, NotImplementedError) as err:
            # no sampler (ImportError: stop trying) or a failed draw (e.g. non-finite samples early
            # in training): keep training and report it
            state["sampling"] = not isinstance(err, ImportError)
            state["samples_error"] = f"sampling at step {trainer.step_count} failed: {type(err).__name__}: {err}"
            emit({"event": "samples_error", "step": trainer.step_count, "error": state["samples_error"]})
            return
        state["samples"].append(str(path))
        if tb is not None:
            tb.image("samples", path, trainer.step_count)
        emit({"event": "samples", "step": trainer.step_count, "path": str(path)})

    def write_eval() -> None:
        if not main or not cfg.eval_every:
            return
        try:
            name, value = evaluate_ema(trainer)
        except (ValueError, TypeError) as err:
            emit({"event": "eval_error", "step": trainer.step_count, "error": f"{type(err).__name__}: {err}"})
            return
        trainer.record_eval(name, value)
        state["eval"] = {"metric": name, "value": value, "step": trainer.step_count}
        metrics.append({"step": trainer.step_count, "elapsed_s": time.perf_counter() - t_start, name: value,
                        "eval_n": cfg.eval_n})
        if tb is not None:
            tb.scalars(trainer.step_count, {f"eval/{name}": value})
        emit({"event": "eval", "step": trainer.step_count, "metric": name, "value": value})

    def due(every: int) -> bool:
        return bool(every) and trainer.step_count % every == 0 and trainer.step_count < cfg.steps

    t_start, step_time, interrupted, last = time.perf_counter(), None, False, {}
    with StopSignals(trainer) as sig:
        try:
            while trainer.step_count < cfg.steps:
                t0 = time.perf_counter()
                try:
                    info = trainer.step()
                except TrainingError as err:
                    kept = f"; the last checkpoint ({run.checkpoint}) is kept" if run.checkpoint.is_file() else ""
                    raise TrainingError(f"{err}{kept}") from None
                if info["skipped"] and skipped_steps_verdict(trainer.skipped, trainer.step_count)[1]:
                    raise TrainingError(f"stopped at step {trainer.step_count}: "
                                        f"{skipped_steps_verdict(trainer.skipped, trainer.step_count)[0]}")
                dt = time.perf_counter() - t0
                step_time = dt if step_time is None else 0.9 * step_time + 0.1 * dt
                info.update({"event": "step", "steps": cfg.steps, "examples_per_s": cfg.batch_size / step_time,
                             "elapsed_s": time.perf_counter() - t_start})
                logged, stop = info.pop("logged"), info.pop("stop")
                last = info
                emit(info)
                if main and logged is not None:
                    row = {"step": info["step"], "loss": logged, "lr": info["lr"], "grad_norm": info["grad_norm"],
                           "examples_per_s": info["examples_per_s"], "elapsed_s": info["elapsed_s"],
                           "skipped_steps": trainer.skipped}
                    metrics.append(row)
                    if tb is not None:
                        tb.scalars(info["step"], {f"train/{k}": v for k, v in row.items() if k != "step"})
                if stop:
                    interrupted = True
                    break
                if due(cfg.ckpt_every):
                    write_checkpoint()
                if due(cfg.sample_every):
                    write_samples()
                if due(cfg.eval_every):
                    write_eval()
            done = trainer.step_count > start_step
            if done and not interrupted and cfg.eval_every:
                write_eval()  # the final model's value, also in the checkpoint's history
            if done or not run.checkpoint.is_file():
                write_checkpoint()
            if done and not interrupted:
                write_samples()
        except OSError as err:
            raise RunDirError(_write_failure(err, trainer, run, state["ckpt_step"], dist_info)) from None
        finally:
            if tb is not None:
                tb.close()
    elapsed = time.perf_counter() - t_start
    artefacts = {
        "run directory": run.path, "checkpoint": run.checkpoint, "config": run.config, "metrics": run.metrics,
        "loss curve": run.loss_curve, "samples": Path(state["samples"][-1]) if state["samples"] else None,
        "summary": run.summary, "tensorboard": run.tensorboard if cfg.tensorboard else None,
    }
    summary = {
        "out": str(run.path),
        "checkpoint": str(run.checkpoint),
        "start_step": start_step,
        "step": trainer.step_count,
        "steps": cfg.steps,
        "loss": trainer.history["loss"][-1] if trainer.history["loss"] else last.get("loss"),
        "elapsed_s": elapsed,
        "examples_per_s": cfg.batch_size / step_time if step_time else None,
        "samples": state["samples"],
        "samples_error": state["samples_error"],
        "loss_curve": str(run.loss_curve) if run.loss_curve.is_file() else None,
        "metrics": str(run.metrics) if run.metrics.is_file() else None,
        "eval": state["eval"],
        "interrupted": interrupted,
        "signal": sig.name,
        "skipped_steps": trainer.skipped,
        "skipped_warning": skipped_steps_verdict(trainer.skipped, trainer.step_count)[0],
        "steps_done": trainer.step_count - start_step,
        "world_size": dist_info.world_size,
        "device": str(trainer.device),
        "params": n_params,
        "artefacts": {k: str(v) for k, v in artefacts.items() if v is not None and (k == "summary" or Path(v).exists())},
        "stale_removed": stale,
    }
    if main:
        try:
            atomic_write_text(run.summary, json_text(summary))
        except OSError as err:
            raise RunDirError(_write_failure(err, trainer, run, state["ckpt_step"], dist_info)) from None
    barrier(dist_info)  # every rank returns once rank 0 has written the run's files
    emit({"event": "end", **summary})
    return summary


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
