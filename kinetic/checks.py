"""One module of checks and limits: devices, seeds, counts and memory, shared by train, sample,
evaluate and the API, so that every entry point accepts the same values and refuses the rest with
one line that names the option.

Limits: ``MAX_STEPS`` solver steps, seeds in ``[0, MAX_SEED]``, threads in ``[1, max_threads()]``
(the number of CPUs of the machine), and a batch of samples or training examples must fit in half of
the memory available (`check_memory`).
"""

from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch

__all__ = [
    "MAX_STEPS", "MAX_SEED", "MAX_COUNT", "DEVICES_HELP", "parse_device", "check_seed", "check_count", "max_threads",
    "check_threads", "available_memory", "check_memory", "training_memory", "check_training_memory", "check_generator", "check_finite_magnitude",
    "check_real_array", "check_score_tensor", "skipped_steps_verdict",
]

#: Sampler steps beyond this gain nothing (the solvers converge within a few hundred) and their
#: per-step coefficients are held in memory: ``--steps 100000000`` asked for tens of GB.
MAX_STEPS = 100_000
#: Largest seed: torch's generators take 64-bit seeds, and the chunked samplers add multiples of
#: ~1e6 to the seed, so seeds stay below 2**63.
MAX_SEED = 2**63 - 1
DEVICES_HELP = "auto, cpu, cuda or cuda:N"
#: Upper bound of every other count (steps, intervals, sizes): 2**53, past which float64 step
#: arithmetic (learning-rate schedules, progress) loses integers; memory refuses far less first.
MAX_COUNT = 2**53


def _show(value: Any, limit: int = 40) -> str:
    r = repr(value)
    return r if len(r) <= limit else f"{r[: limit - 10]}...({len(r)} characters)"


def parse_device(device: Any, *, option: str = "device", check_available: bool = True,
                 local_rank: int | None = None) -> torch.device:
    """``device`` (None / 'auto' / 'cpu' / 'cuda' / 'cuda:N' / a torch.device) -> torch.device.

    'auto' is this rank's GPU (``local_rank``, default the current one) when CUDA is available, else
    the CPU; 'cuda' without an index is that GPU too. With ``check_available`` an unavailable
    device (no CUDA, an index past the GPUs) is refused. ValueError naming ``option`` otherwise:
    'mps', 'cuda:-1' and typos get one line, never torch's own error.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device is None or device == "auto":
        if not check_available:
            return torch.device("cpu")
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        return torch.device("cpu")
    elif isinstance(device, str):
        s = device.strip().lower()
        kind, _, idx = s.partition(":")
        if kind not in ("cpu", "cuda") or (idx and not idx.lstrip("-").isdigit()) or (kind == "cpu" and idx not in ("", "0")):
            raise ValueError(f"{option} must be {DEVICES_HELP}; got {_show(device)}"
                             + (" (kinetic runs on CPUs and CUDA GPUs only)" if kind in ("mps", "xpu", "meta", "hip") else ""))
        if idx and int(idx) < 0:
            raise ValueError(f"{option}: a GPU index must be >= 0; got {_show(device)}")
        dev = torch.device("cpu") if kind == "cpu" else torch.device("cuda", int(idx) if idx else None)
    else:
        raise TypeError(f"{option} must be a string ({DEVICES_HELP}) or a torch.device; got {type(device).__name__}")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"{option} must be {DEVICES_HELP}; got {_show(str(dev))} (kinetic runs on CPUs and CUDA GPUs only)")
    if dev.type == "cuda" and check_available:
        if not torch.cuda.is_available():
            raise ValueError(f"{option}={_show(str(device))} but no CUDA GPU is available here; use cpu (or auto)")
        if dev.index is None:
            dev = torch.device("cuda", local_rank if local_rank is not None else torch.cuda.current_device())
        elif dev.index >= torch.cuda.device_count():
            raise ValueError(f"{option}={_show(str(device))} but this machine has {torch.cuda.device_count()} GPU(s) "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    return dev


def check_count(value: Any, option: str, lo: int = 1, hi: int | None = None) -> int:
    """An integer in ``[lo, hi]`` (no bool, no float); ValueError naming ``option`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        rng = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{option} must be an integer {rng}, got {_show(value)}")
    return int(value)


def check_seed(seed: Any, option: str = "seed") -> int:
    """A seed in ``[0, MAX_SEED]`` (2**63 - 1), what torch's generators take."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{option} must be an integer in [0, 2**63 - 1]; got {_show(seed)}")
    return int(seed)


def max_threads() -> int:
    """The most torch CPU threads allowed: the number of CPUs (more only oversubscribe them, and
    ~1e5 threads made torch segfault)."""
    return max(1, os.cpu_count() or 1)


def check_threads(threads: Any, option: str = "--threads") -> int:
    """Threads in ``[1, max_threads()]``."""
    return check_count(threads, option, 1, max_threads())


def meminfo(field: str) -> int | None:
    """Bytes of one /proc/meminfo field ("MemAvailable", "MemTotal"), None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def available_memory() -> int | None:
    """Bytes of memory available now (MemAvailable), None where unknown."""
    avail = meminfo("MemAvailable")
    if avail is not None:
        return avail
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(need: float, what: str, advice: str) -> None:
    """ValueError when ``need`` bytes exceed half of the memory available (the estimate comes
    before anything is allocated)."""
    avail = available_memory()
    if avail is not None and need > avail // 2:
        raise ValueError(
            f"{what} need {need / 2**30:.3g} GiB, more than half of the {avail / 2**30:.3g} GiB of memory "
            f"available; {advice}"
        )


def training_memory(batch: int, order: int, data_shape: Sequence[int], params: int, data_examples: int) -> float:
    """Bytes that one training step needs, estimated before anything is allocated: the dataset in
    float32, the network's weights with Adam's two moments, its gradient and EMA copy (5 copies), and
    per example the state (k, *D), the noise, the target and the activations (taken as 16 copies of
    the state for the network's layers: an estimate from above for kinetic's MLP and U-Net sizes)."""
    per_state = order * math.prod(int(s) for s in data_shape) * 4
    return float(data_examples * math.prod(int(s) for s in data_shape) * 4 + 5 * params * 4 + batch * per_state * 20)


def check_training_memory(batch: int, order: int, data_shape: Sequence[int], net: torch.nn.Module,
                          data: torch.Tensor, device: torch.device) -> None:
    """ConfigError("batch_size") when a training step of ``batch`` examples would need more than half
    of the memory available (the GPU's free memory on CUDA), estimated by `training_memory` before
    the first step allocates anything."""
    from .config import ConfigError

    params = sum(p.numel() for p in net.parameters())
    need = training_memory(batch, order, data_shape, params, 0 if device.type == "cuda" else int(data.shape[0]))
    avail = None
    if device.type == "cuda":
        try:
            avail = torch.cuda.mem_get_info(device)[0]
        except (RuntimeError, AssertionError):  # pragma: no cover
            avail = None
    else:
        avail = available_memory()
    if avail is not None and need > avail // 2:
        raise ConfigError(
            f"batch_size={batch} examples of shape ({order}, {', '.join(map(str, data_shape))}) need about "
            f"{need / 2**30:.3g} GiB per training step, more than half of the {avail / 2**30:.3g} GiB of memory "
            f"available on {device.type}; use a smaller batch_size", "batch_size",
        )


def check_real_array(value: Any, name: str) -> None:
    """TypeError for complex or boolean array-likes (torch would drop the imaginary part with only
    a warning); integers and floats pass."""
    dt = getattr(value, "dtype", None)
    if dt is None:
        try:
            import numpy as np

            dt = np.asarray(value).dtype
        except (ValueError, TypeError):
            return
    s = str(dt)
    if "complex" in s or s in ("bool", "torch.bool"):
        raise TypeError(f"{name} must be real numbers (floats); got dtype {s}")


def check_score_tensor(score: torch.Tensor, z: torch.Tensor, name: str = "score_fn") -> None:
    """A score output must be a real floating tensor on z's device (an int64, bool or complex
    output was cast silently; a score on another device, ``meta`` included, reached torch)."""
    if score.is_complex() or not score.is_floating_point():
        raise TypeError(f"{name} returned dtype {score.dtype}; it must return a real floating tensor (like z: {z.dtype})")
    if score.device != z.device:
        raise ValueError(f"{name} returned a tensor on {score.device}; it must be on z's device ({z.device})")


#: skip_nonfinite: past this share of skipped steps (after `SKIP_MIN_STEPS` steps) a run stops, as
#: it is not training; past `SKIP_WARN_SHARE` it goes on with a warning (console and summary.json).
SKIP_STOP_SHARE = 0.5
SKIP_WARN_SHARE = 0.05
SKIP_MIN_STEPS = 20


def skipped_steps_verdict(skipped: int, steps: int) -> tuple[str | None, bool]:
    """(message or None, stop) for ``skipped`` of ``steps`` steps skipped with ``skip_nonfinite``:
    stop past `SKIP_STOP_SHARE` (once `SKIP_MIN_STEPS` steps were made), warn past `SKIP_WARN_SHARE`."""
    if steps <= 0 or skipped <= 0:
        return None, False
    share = skipped / steps
    if share > SKIP_STOP_SHARE and steps >= SKIP_MIN_STEPS:
        return (f"{skipped} of the {steps} steps had a non-finite loss or gradient and were skipped (skip_nonfinite), "
                f"more than {SKIP_STOP_SHARE:.0%}: the model is not training (lower lr, or set grad_clip)"), True
    if share > SKIP_WARN_SHARE:
        return (f"{skipped} of the {steps} steps ({share:.1%}) were skipped for a non-finite loss or gradient "
                "(skip_nonfinite); the model may be damaged"), False
    return None, False


def check_generator(generator: Any, option: str = "generator") -> None:
    """None or a torch.Generator (``generator=5`` would otherwise reach torch's overload dump)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"{option} must be a torch.Generator or None; got {type(generator).__name__}")


def check_finite_magnitude(x: torch.Tensor, option: str = "x", limit: float = 1e15) -> None:
    """``x`` real, floating, finite and of magnitude below ``limit`` (1e15 by default; past it the
    ODE tolerances mean nothing, and past sqrt of the dtype's largest value its squares overflow):
    ValueError / TypeError naming ``option``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{option} must be a torch.Tensor; got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"{option} must be a real floating tensor; got dtype {x.dtype}")
    if x.numel() == 0:
        return
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{option} has non-finite values (nan/inf)")
    m = float(x.detach().abs().max())
    if m > limit:
        raise ValueError(f"{option} has values of magnitude up to {m:.3g}, past {limit:.3g} (for {x.dtype}): kinetic's data are "
                         "scaled to about [-1, 1] (images) or unit variance; rescale them first")
