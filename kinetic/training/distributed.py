"""Distributed set-up for `kinetic.training`: ranks from ``torchrun``'s environment, devices, seeds.

Under ``torchrun`` (WORLD_SIZE > 1) `init_distributed` starts the process group itself: NCCL on
CUDA, gloo on CPU. Every helper here is a no-op for a single process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..checks import parse_device
from ..config import ConfigError

__all__ = ["DistInfo", "init_distributed", "resolve_device", "derive_seed", "barrier", "all_ok", "shutdown"]


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
        raise ConfigError(f"environment variable {name} must be an integer, got {v[:40]!r}") from None


def init_distributed(device_pref: str) -> DistInfo:
    """This process's rank, joining (or starting) the process group when WORLD_SIZE > 1."""
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


def shutdown(info: DistInfo) -> None:
    """Destroy the process group if `init_distributed` created it."""
    if info.owns_group:
        import torch.distributed as dist

        dist.destroy_process_group()


def resolve_device(pref: str, info: DistInfo) -> torch.device:
    """`kinetic.checks.parse_device` for this rank (``auto``/``cuda``: its local GPU); ConfigError("device")."""
    try:
        return parse_device(pref, local_rank=info.local_rank)
    except (ValueError, TypeError) as err:
        raise ConfigError(str(err), "device") from None


def derive_seed(seed: int, rank: int, stream: int) -> int:
    """A distinct, deterministic seed per (seed, rank, stream)."""
    return (int(seed) * 1_000_003 + int(rank) * 8191 + int(stream) * 131) % (2**63 - 1)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def all_ok(info: DistInfo, ok: bool) -> bool:
    """True when ``ok`` holds on every rank (a collective under DDP), so that a check done on rank 0
    alone (the run directory's lock, its files) stops every rank rather than leaving them waiting."""
    if not info.enabled:
        return ok
    import torch.distributed as dist

    flag = torch.tensor([0.0 if ok else 1.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag)
    return float(flag) == 0.0
