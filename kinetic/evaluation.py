"""Evaluate a trained checkpoint: samples, NLL (bits/dim), fd-digits, FID, sliced Wasserstein.

Used by `kinetic sample`, `kinetic evaluate` and the quality study; progress goes to callbacks.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

__all__ = [
    "METRICS", "CONDITIONAL_METRICS", "resolve_labels", "DEFAULT_GRID", "MAX_STEPS", "resolve_device", "draw", "generate", "evaluate_checkpoint",
    "clamp_to_data_range", "quantisation_levels",
]

METRICS = ("nll", "fd-digits", "fid", "swd", "class-accuracy", "fd-digits-per-class", "inpaint")
#: Metrics of conditional generation (`kinetic.metrics.conditional`): class-accuracy and
#: fd-digits-per-class need a conditional digits model; inpaint completes the held-out digits from
#: their left half (fd-digits of the completions, agreement of the classifier with the true label).
CONDITIONAL_METRICS = ("class-accuracy", "fd-digits-per-class", "inpaint")
#: The time grid used when the caller chose none. kn.sample is getting its own default, chosen per
#: solver (``grid=None``); once that is on main this becomes None, the one line to change.
DEFAULT_GRID: str | None = None  # None: the solver's own default (`kinetic.sampling.default_grid`)
#: Sampler steps beyond this gain nothing (the solvers converge within a few hundred) and their
#: per-step coefficients are held in memory: ``--steps 100000000`` asked for tens of GB.
from .checks import MAX_STEPS, check_count, check_memory, check_seed, parse_device as resolve_device  # noqa: E402


def quantisation_levels(data: str) -> int:
    """Pixel levels of a dataset, for the bits/dim offset: digits have 17 (0..16), images 256."""
    return 17 if data == "digits" else 256


def _check_sizes(n: int, steps: int, batch_size: int | None, data_shape: tuple[int, ...] | None) -> None:
    """Types and bounds of the sizes; with ``data_shape``, also that the n samples fit in memory."""
    for name, v, lo, hi in (("n", n, 1, None), ("steps", steps, 1, MAX_STEPS), ("batch_size", batch_size, 1, None)):
        if v is None and name == "batch_size":
            continue
        check_count(v, name, lo, hi)
    if data_shape is None:
        return
    need = n * math.prod(data_shape) * 4  # the float32 samples that are returned
    check_memory(need, f"n={n} samples of shape {tuple(data_shape)} as float32",
                 "draw fewer (smaller n) or in several runs")


def draw(
    sde, score_fn, shape, *, solver: str = "ei", steps: int = 50, t_eps: float = 1e-3, grid=None,
    seed: int = 0, batch_size: int | None = None, denoise: bool = False, device=None,
    callback: Optional[Callable[[dict], None]] = None, labels=None, guidance: float = 0.0, known=None, mask=None,
    **solver_options,
):
    """Samples (n, *D) float32 on the CPU and the NFE per sample: `kinetic.sampling.sample_batches`
    in chunks of ``batch_size`` samples (None: one chunk), so the peak memory does not grow with n.

    Chunk i draws from a generator seeded with ``seed + i * 1000003`` (`sample_batches`' ``seed``):
    deterministic, and for n <= batch_size the same samples as one unbatched call with ``seed``.
    ``grid`` None means `DEFAULT_GRID`. ``labels`` (n,) or one label, ``guidance``, ``known``
    (n, *D) and ``mask`` (broadcastable to (n, *D)) cover all n samples; each chunk uses its rows.
    """
    from .sampling import sample_batches

    n, data_shape = int(shape[0]), tuple(int(s) for s in shape[1:])
    _check_sizes(n, steps, batch_size, data_shape)
    check_seed(seed)
    dev = resolve_device(device)
    cond: dict = {}
    if labels is not None or guidance:
        cond.update(labels=_to_rows(labels, n, (), "labels"), guidance=guidance)
    if known is not None or mask is not None:
        cond.update(known=_to_rows(known, n, data_shape, "known"), mask=_to_rows(mask, n, data_shape, "mask"))
    parts, nfe = [], 0
    with torch.no_grad():
        for z, got in sample_batches(
            sde, score_fn, (n, *data_shape), batch_size=n if batch_size is None else min(batch_size, n),
            solver=solver, steps=steps, t_eps=t_eps, seed=int(seed), callback=callback, return_state=True,
            denoise=denoise, device=dev, grid=DEFAULT_GRID if grid is None else grid, **cond, **solver_options,
        ):
            parts.append(z[:, 0].float().cpu())
            nfe = max(nfe, got)
            del z
    return torch.cat(parts), int(nfe)


def _to_rows(v, n: int, data_shape: tuple[int, ...], name: str):
    """``v`` with one row per sample, (n, *data_shape) (broadcast); None stays None."""
    if v is None:
        return None
    v = torch.as_tensor(v)
    if v.dim() == len(data_shape) + 1 and v.shape[0] == n:
        return v
    try:
        return torch.broadcast_to(v, (n, *data_shape))
    except RuntimeError:
        raise ValueError(f"{name} has shape {tuple(v.shape)}, which does not broadcast to {(n, *data_shape)}") from None


def clamp_to_data_range(x: torch.Tensor, lo: float = -1.0, hi: float = 1.0) -> tuple[torch.Tensor, float]:
    """``x`` clamped to the image data range [lo, hi], and the share of values that lay outside it."""
    outside = float(((x < lo) | (x > hi)).float().mean()) if x.numel() else 0.0
    return x.clamp(lo, hi), outside


def resolve_labels(score_model, ckpt: dict, n: int, classes=None, guidance: float = 0.0):
    """The labels (n,) of a draw from a checkpoint's model, or None (unconditional).

    ``classes``: None or "all" (a conditional model draws every class in turn, sample i of class
    i mod C; an unconditional model draws unconditionally), an int class (every sample of it),
    "null" (a conditional model's unconditional branch), or a sequence of n labels. One clear
    ValueError for classes asked of an unconditional model (naming its dataset) or out of range,
    and for guidance without classes.
    """
    C = int(getattr(score_model, "num_classes", 0) or 0)
    data = (ckpt.get("config") or {}).get("data", "its data")
    if C == 0:
        if classes not in (None, "all"):
            raise ValueError(
                f"class labels need a conditional model; this checkpoint is unconditional (trained on {data!r} without "
                "--conditional)"
            )
        if guidance:
            raise ValueError(
                f"guidance needs a conditional model trained with label dropout; this checkpoint is unconditional "
                f"(trained on {data!r} without --conditional)"
            )
        return None
    if classes in (None, "all"):
        return torch.arange(n) % C
    if classes == "null":
        if guidance:
            raise ValueError("guidance needs a class for every sample, not the null class")
        return torch.full((n,), C, dtype=torch.int64)
    if isinstance(classes, int) and not isinstance(classes, bool):
        if not 0 <= classes < C:
            raise ValueError(f"class must lie in [0, {C - 1}] for this model of {C} classes, got {classes}")
        return torch.full((n,), classes, dtype=torch.int64)
    y = torch.as_tensor(classes)
    if y.shape != (n,):
        raise ValueError(f"classes must be an int, 'all', 'null' or {n} labels, got shape {tuple(y.shape)}")
    return y


def generate(
    checkpoint, *, solver: str = "ei", steps: int = 50, n: int = 64, seed: int = 0, device="cpu",
    t_eps: float = 1e-3, denoise: bool = False, callback: Optional[Callable[[dict], None]] = None,
    model=None, grid=None, batch_size: int | None = None, classes=None, guidance: float = 0.0,
    return_labels: bool = False, sde: str | None = None, **solver_options,
):
    """Sample from a checkpoint: returns (samples (n, *D) float32 on CPU, nfe, seconds), and the
    labels (n,) (None: unconditional) last with ``return_labels``.

    ``model`` may pass an already loaded ``(score_model, ckpt)`` pair to skip loading. ``grid``
    None: the library's default (`DEFAULT_GRID`); ``batch_size``: see `draw`. ``classes`` and
    ``guidance``: see `resolve_labels` (a conditional model draws all its classes in turn by default).
    ``sde``: None (the checkpoint's SDE) or a preset name (`kinetic.presets.PRESETS`) to sample a model of
    the "denoiser" parameterisation under another SDE (`sampling_sde`).
    """
    from .checkpoint import load_model
    from .solvers import SOLVERS

    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {str(solver)[:40]!r}")
    _check_sizes(n, steps, batch_size, None)
    check_seed(seed)
    dev = resolve_device(device)
    sm, ckpt = model if model is not None else load_model(checkpoint, device=dev)
    data_shape = tuple(ckpt["model_config"]["data_shape"])
    labels = resolve_labels(sm, ckpt, n, classes, guidance)
    target, score = (sm.sde, sm.score) if sde is None else sampling_sde(sm, sde)
    t0 = time.perf_counter()
    x, nfe = draw(target, score, (n, *data_shape), solver=solver, steps=steps, t_eps=t_eps, grid=grid, seed=seed,
                  batch_size=batch_size, denoise=denoise, device=dev, callback=callback, labels=labels,
                  guidance=guidance, **solver_options)
    seconds = time.perf_counter() - t0
    return (x, nfe, seconds, labels) if return_labels else (x, nfe, seconds)


def sampling_sde(score_model, sde: str):
    """(the preset ``sde`` (a name in `kinetic.presets.PRESETS`), its score_fn from ``score_model``): a model
    of the "denoiser" parameterisation serves every SDE; ValueError (one line) for the others, whose
    networks are tied to the SDE they were trained for."""
    from .presets import PRESETS, preset
    from .score import as_score_fn

    if not isinstance(sde, str) or sde not in PRESETS:
        raise ValueError(f"sde must be one of {', '.join(PRESETS)}, got {str(sde)[:40]!r}")
    param = getattr(score_model, "parameterization", None)
    if param != "denoiser":
        trained = getattr(getattr(score_model, "sde", None), "name", None) or "its own SDE"
        raise ValueError(
            f"sde: only a model of the 'denoiser' parameterisation samples under another SDE; this one is {param!r}, "
            f"tied to the SDE it was trained for ({trained}): drop --sde, or train with --parameterization denoiser"
        )
    target = preset(sde)
    return target, as_score_fn(score_model, target)


def generate_denoiser(
    denoiser, sde: str, data_shape, *, solver: str = "ei", steps: int = 50, n: int = 64, seed: int = 0,
    device="cpu", t_eps: float = 1e-3, denoise: bool = False, callback: Optional[Callable[[dict], None]] = None,
    grid=None, batch_size: int | None = None, classes=None, guidance: float = 0.0, what: str = "a denoiser",
    **solver_options,
):
    """Sample a `kinetic.denoiser.Denoiser` (e.g. `kinetic.load_diffusers`) under the preset ``sde``:
    (samples (n, *data_shape) float32 on CPU, nfe, seconds, labels (n,) or None). ``classes`` / ``guidance``
    as in `resolve_labels` (``what`` names the model in its messages); the rest as in `generate`."""
    from .presets import PRESETS, preset
    from .solvers import SOLVERS

    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {str(solver)[:40]!r}")
    if not isinstance(sde, str) or sde not in PRESETS:
        raise ValueError(f"sde must be one of {', '.join(PRESETS)}, got {str(sde)[:40]!r}")
    _check_sizes(n, steps, batch_size, None)
    check_seed(seed)
    dev = resolve_device(device)
    denoiser.to(dev)
    labels = resolve_labels(denoiser, {"config": {"data": what}}, n, classes, guidance)
    target = preset(sde)
    t0 = time.perf_counter()
    x, nfe = draw(target, denoiser.score_fn(target), (n, *data_shape), solver=solver, steps=steps, t_eps=t_eps,
                  grid=grid, seed=seed, batch_size=batch_size, denoise=denoise, device=dev, callback=callback,
                  labels=labels, guidance=guidance, **solver_options)
    return x, nfe, time.perf_counter() - t0, labels


def evaluate_checkpoint(
    checkpoint, metrics, *, n: int = 1000, solver: str = "ei", steps: int = 50, seed: int = 0, device="cpu",
    data_dir: Optional[str] = None, inception_weights: Optional[str] = None, reference_stats: Optional[str] = None,
    t_eps: float = 1e-3, denoise: bool = False, nll_batch: int = 64, grid=None,
    callback: Optional[Callable[[dict], None]] = None, model=None, samples=None, batch_size: int | None = None,
    guidance: float = 0.0, labels=None,
) -> dict:
    """Compute ``metrics`` (names in METRICS) for a checkpoint; returns plain data.

    Sample-based metrics draw ``n`` samples with ``solver``/``steps`` (``grid`` None: the library's
    default; ``batch_size`` at a time, see `draw`); a conditional model draws its classes in turn
    (sample i of class i mod C) with ``guidance``; ``samples`` (with their ``labels``) skips the
    draw. ``nll`` uses the first ``n`` examples of the held-out test split. ``inpaint`` completes the
    held-out test digits (cycled to ``n``) from their left half (a conditional model's null class,
    no guidance: the label is what the completion is scored on). ``callback`` receives
    {"phase", ...} progress dicts.

    ``fid`` loads the Inception network with ``torch.jit.load``, which runs code from the file:
    pass only a weights file you trust (kinetic never downloads one).
    """
    from .checkpoint import load_model
    from .sampling import default_grid

    metrics = _check_metrics(metrics, n)
    check_seed(seed)
    dev = resolve_device(device)
    if model is None:
        model = load_model(checkpoint, device=dev)
    sm, ckpt = model
    cfg = ckpt.get("config", {}) or {}
    job = _Job(sm=sm, data_name=cfg.get("data", "digits"), data_dir=data_dir if data_dir is not None else cfg.get("data_dir"),
               data_shape=tuple(ckpt["model_config"]["data_shape"]), dev=dev, n=n, solver=solver, steps=steps,
               seed=seed, t_eps=t_eps, grid=grid, batch_size=batch_size, cb=callback or (lambda info: None),
               inception_weights=inception_weights, reference_stats=reference_stats, nll_batch=nll_batch,
               samples=samples, labels=labels)
    result: dict = {
        "checkpoint": str(checkpoint), "step": int(ckpt["step"]), "sde": ckpt["sde"].get("name"),
        "order": len(ckpt["sde"]["drift"]), "data": job.data_name, "n": n, "metrics": {},
    }
    _check_fits(metrics, job)
    if int(getattr(sm, "num_classes", 0) or 0) and guidance:
        result["guidance"] = float(guidance)
    if job.samples is None and any(m in SAMPLE_METRICS for m in metrics):
        job.samples, nfe, seconds, job.labels = generate(
            checkpoint, solver=solver, steps=steps, n=n, seed=seed, device=dev, t_eps=t_eps, denoise=denoise,
            callback=lambda info: job.cb({"phase": "sample", **info}), model=model, grid=grid, batch_size=batch_size,
            guidance=guidance, return_labels=True,
        )
        result.update({"solver": solver, "grid": grid if grid is not None else (DEFAULT_GRID or default_grid(solver)),
                       "steps": steps, "nfe": nfe, "sampling_seconds": round(seconds, 3), "batch_size": batch_size})
    for m in metrics:
        t0 = time.perf_counter()
        result["metrics"][m] = _METRIC_FNS[m](job)
        result["metrics"][m]["seconds"] = round(time.perf_counter() - t0, 3)
    return result


#: Metrics computed on samples drawn from the model (the others draw their own: nll, inpaint).
SAMPLE_METRICS = ("fd-digits", "fid", "swd", "class-accuracy", "fd-digits-per-class")


@dataclass
class _Job:
    """What one `evaluate_checkpoint` call's metrics read: the model, its data, the sampling settings."""

    sm: Any
    data_name: str
    data_dir: Any
    data_shape: tuple
    dev: torch.device
    n: int
    solver: str
    steps: int
    seed: int
    t_eps: float
    grid: Any
    batch_size: Optional[int]
    cb: Callable[[dict], None]
    inception_weights: Any
    reference_stats: Any
    nll_batch: int
    samples: Optional[torch.Tensor]
    labels: Any


def _check_metrics(metrics, n: int) -> list[str]:
    metrics = [metrics] if isinstance(metrics, str) else list(metrics)
    for m in metrics:
        if m not in METRICS:
            raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {str(m)[:40]!r}")
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    return metrics


def _check_fits(metrics: list[str], job: _Job) -> None:
    """ValueError before any work when a metric does not fit the checkpoint's model."""
    C = int(getattr(job.sm, "num_classes", 0) or 0)
    for m in metrics:
        if m in ("class-accuracy", "fd-digits-per-class") and C == 0:
            raise ValueError(f"metric {m} needs a conditional model; this checkpoint is unconditional (trained on "
                             f"{job.data_name!r} without --conditional)")
        if m in CONDITIONAL_METRICS and job.data_shape != (1, 8, 8):
            raise ValueError(f"metric {m} needs 8x8 digit images; this checkpoint models shape {job.data_shape}")


def _shape(job: _Job) -> dict:
    """An image folder's reference data at the run's own shape (``--resolution`` / ``--channels`` of
    training, read from the checkpoint's data shape); the other datasets have theirs fixed."""
    if job.data_name != "folder":
        return {}
    return {"channels": int(job.data_shape[0]), "resolution": int(job.data_shape[-1])}


def _swd(job: _Job) -> dict:
    from .data import load_dataset
    from .metrics import sliced_wasserstein

    x, name = job.samples, job.data_name
    ref = load_dataset(name, data_dir=job.data_dir, split="test", n=None if name == "digits" else job.n, **_shape(job))
    value = float(sliced_wasserstein(x.reshape(x.shape[0], -1), ref.reshape(ref.shape[0], -1)))
    return {"value": value, "reference": f"{name} test split ({ref.shape[0]})"}


def _fd_digits(job: _Job) -> dict:
    if job.data_shape != (1, 8, 8):
        raise ValueError(f"metric fd-digits needs 8x8 digit images; this checkpoint models shape {job.data_shape}")
    from .metrics import fd_digits

    return {"value": float(fd_digits(job.samples)), "reference": "all 1797 bundled digits"}


def _fid(job: _Job) -> dict:
    if job.inception_weights is None:
        raise ValueError(
            "metric fid needs inception weights (--inception-weights PATH): inception-2015-12-05.pt, the "
            "TorchScript Inception used by StyleGAN2-ADA/EDM; kinetic never downloads it"
        )
    from .data import load_dataset
    from .metrics import fid_from_samples

    reference = job.reference_stats
    if reference is None:
        reference = load_dataset(job.data_name, data_dir=job.data_dir, split="train", **_shape(job))
    value = float(fid_from_samples(job.samples, reference, job.inception_weights, device=str(job.dev)))
    return {"value": value, "reference": job.reference_stats or f"{job.data_name} train split"}


def _class_accuracy(job: _Job) -> dict:
    from .metrics import class_accuracy, classify_digits

    x, y = job.samples, torch.as_tensor(job.labels)
    got = classify_digits(x) if bool(torch.isfinite(x).all()) else None
    per = {int(c): (float((got[y == c] == c).double().mean()) if got is not None else float("nan")) for c in y.unique()}
    return {"value": float(class_accuracy(x, y)), "per_class": per,
            "reference": f"the bundled digits classifier (held-out accuracy {_classifier_accuracy():.3f})"}


def _fd_digits_per_class(job: _Job) -> dict:
    from .metrics import fd_digits_per_class
    from .metrics.conditional import per_class_mean

    per = fd_digits_per_class(job.samples, torch.as_tensor(job.labels))
    return {**per_class_mean(per, job.labels),
            "reference": "each class's samples vs that class's bundled digits (value: the mean over classes)"}


def _inpaint(job: _Job) -> dict:
    return inpaint_digits(job.sm, n=job.n, solver=job.solver, steps=job.steps, seed=job.seed, device=job.dev,
                          t_eps=job.t_eps, grid=job.grid, batch_size=job.batch_size,
                          callback=lambda info: job.cb({"phase": "inpaint", **info}))


def _nll(job: _Job) -> dict:
    from .data import load_dataset
    from .likelihood import bits_per_dim, log_likelihood

    sm, dev = job.sm, job.dev
    x = load_dataset(job.data_name, data_dir=job.data_dir, split="test", **_shape(job))[: job.n].to(dev, torch.float64)
    gen = torch.Generator(device=dev).manual_seed(job.seed)
    chunks = list(torch.split(x, job.nll_batch))
    logps = []
    for i, chunk in enumerate(chunks):
        logps.append(log_likelihood(sm.sde, sm.score, chunk, generator=gen).detach().cpu())
        job.cb({"phase": "nll", "step": i + 1, "total": len(chunks)})
    logp = torch.cat(logps)
    bpd = bits_per_dim(logp, job.data_shape, n_bins=quantisation_levels(job.data_name))
    return {
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_stderr": float(bpd.std() / len(bpd) ** 0.5),
        "nats_per_example": float(-logp.mean()),
        "examples": int(len(logp)),
        "reference": f"{job.data_name} test split",
        "note": "probability-flow ODE from t=1e-5; order k > 1: a lower bound on log p (auxiliaries marginalised); "
        "continuous density on [-1, 1] plus the log2(levels/2) offset, no dequantisation",
    }


#: metric name -> the function that computes its result dict from a `_Job`.
_METRIC_FNS: dict[str, Callable[[_Job], dict]] = {
    "swd": _swd, "fd-digits": _fd_digits, "fid": _fid, "class-accuracy": _class_accuracy,
    "fd-digits-per-class": _fd_digits_per_class, "inpaint": _inpaint, "nll": _nll,
}


def _classifier_accuracy() -> float:
    from .metrics import load_digits_classifier

    return load_digits_classifier().test_accuracy


def inpaint_digits(
    score_model, *, n: int = 297, solver: str = "ei", steps: int = 50, seed: int = 0, device="cpu",
    t_eps: float = 1e-3, grid=None, batch_size: int | None = None, callback=None, return_samples: bool = False,
    **solver_options,
) -> dict:
    """Complete held-out digits from their left half (the right half masked) and score the
    completions: {"value": fd-digits of the completions vs all 1797 digits, "agreement": the share
    the digits classifier assigns to the true label, "n", "test_digits", "known_accuracy": the
    classifier on the true digits, for reference}. The 297 test digits are cycled to ``n``; a
    conditional model completes with its null class (no label is given). ``return_samples``: also
    "samples" (n, 1, 8, 8) and "labels" (n,) (not plain data)."""
    from .data import load_dataset
    from .metrics import class_accuracy, fd_digits, inpainting_inputs

    x, y = load_dataset("digits", split="test", labels=True)
    reps = -(-n // x.shape[0])
    x, y = x.repeat(reps, 1, 1, 1)[:n], y.repeat(reps)[:n]
    known, mask = inpainting_inputs(x)
    C = int(getattr(score_model, "num_classes", 0) or 0)
    labels = torch.full((n,), C, dtype=torch.int64) if C else None
    out, nfe = draw(score_model.sde, score_model.score, (n, 1, 8, 8), solver=solver, steps=steps, t_eps=t_eps, grid=grid,
                    seed=seed, batch_size=batch_size, device=device, callback=callback, known=known, mask=mask,
                    labels=labels, **solver_options)
    res = {
        "value": float(fd_digits(out)), "agreement": float(class_accuracy(out, y)) if bool(torch.isfinite(out).all())
        else float("nan"),
        "known_accuracy": float(class_accuracy(x, y)), "n": int(n), "test_digits": int(min(n, 297)), "nfe": int(nfe),
        "reference": "held-out digits, right half generated; fd-digits vs all 1797 digits",
    }
    if return_samples:
        res.update(samples=out, labels=y)
    return res
