"""Quality at equal budget against the DDPM practitioners use: one command, the whole study.

    python benchmarks/quality_vs_ddpm.py                      # full: 3 seeds, 600 and 3000 steps, n = 500
    python benchmarks/quality_vs_ddpm.py --quick              # a few minutes: 1 seed, tiny nets, 10 / 50 steps
    python benchmarks/quality_vs_ddpm.py --estimate           # time a few steps; print the full run's cost

Methods, all trained on the 1500 training digits (`load_dataset("digits", split="train")`) with the
batch, steps, learning rate, warm-up, gradient clipping and EMA of `kinetic.TrainConfig`'s defaults:

- ``ddpm``: the external baseline, written here as diffusers documents it (its train_unconditional
  example and the "models and schedulers" tutorial): ``UNet2DModel`` built from its config
  (`kinetic.models.diffusers_unet.unet2d_config`, the same parameter count as kinetic's U-Net),
  ``DDPMScheduler`` (1000 train steps, linear betas, epsilon objective), AdamW, diffusers'
  ``constant_with_warmup`` schedule and ``EMAModel`` (min(decay, (1 + s) / (10 + s)), kinetic's
  EMA too). Sampled with DDPMScheduler (1000 steps), DPMSolverMultistepScheduler (dpmsolver++, 10
  and 20 steps) and UniPCMultistepScheduler (10 steps).
- ``vp``, ``cld``, ``hold``, ``langevin4`` and ``psld``: kinetic's U-Net trained
  by `kinetic.training.Trainer` (the loop of ``kn.train``) with the default objective, each sampled
  with every sampler of its list (`DEFAULT_SAMPLERS`, ``--samplers``) at every NFE; the table shows
  the best of the list per NFE (best mean fd-digits over seeds).
- ``vp+dunet``, ``hold+dunet``: the same diffusers UNet2DModel wrapped as kinetic's score network
  (`kinetic.models.diffusers_unet.DiffusersUNet`), trained with kinetic's objective by the same
  `kinetic.training.Trainer` (``Trainer.from_config(config, network=...)``).

Protocol: seeds 0, 1, 2 (mean ± sd); every sample set is clamped to [-1, 1] before fd-digits and the
share of raw values outside [-1, 1] is reported; fd-digits of n samples against M = 1797 - n real
digits, the floor being n other real digits against the same M (a fresh random split per seed);
two budgets, the default run (600 steps) and 5x longer (the 600-step model is the step-600 state of
the long run: the learning rate is constant after warm-up and the EMA does not depend on the horizon);
the wall-clock of every run is recorded, and each model is also evaluated at the wall-clock that the
diffusers baseline of the same seed needed for 600 and for 3000 steps.

Runs are cached in ``--runs`` (EMA weights, timings, every evaluation): a second call reuses them, so
a changed sampler list re-samples without retraining. The full run is long (``--estimate`` times it:
about 30-40 hours of one CPU thread on a quiet machine, two thirds of it sampling). To share it
between processes, train and evaluate the baseline first (``--methods ddpm``: every other run needs
its wall-clock), then run disjoint ``--methods`` lists side by side on the same ``--runs``, and
finish with one plain call that only reads the cache and writes the outputs. Processes running side
by side slow each other down, which the wall-clock columns then show. Outputs go to ``--out`` (default docs/):
``figures/quality_vs_ddpm.json``, ``figures/quality_vs_ddpm_tables.md``, ``figures/quality_vs_ddpm.png``
(fd-digits against NFE), ``figures/quality_vs_ddpm_samples.png`` (sample grids) and
``quality_vs_ddpm_study.md``, a fragment for docs/study.md.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from kinetic.config import TrainConfig
from kinetic.presets import PRESETS
from kinetic.data import load_dataset
from kinetic.metrics import fd_digits, out_of_range_fraction
from kinetic.solvers import SOLVERS

DATA_SHAPE = (1, 8, 8)
N_DIGITS = 1797
RUN_FORMAT = 1


class StudyError(ValueError):
    """The study cannot run as asked (the message says why and what to do)."""


# ---------------------------------------------------------------------- settings
@dataclass
class Settings:
    """Sizes of one study. `full` is the recorded protocol; `quick` checks the pipeline end to end."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    steps: int = TrainConfig.steps  # the default run
    long_factor: int = 5
    n: int = 500  # samples per set; the reference holds the other 1797 - n digits
    nfes: list[int] = field(default_factory=lambda: [10, 20, 50, 100])
    size: str = "small"  # kinetic U-Net preset (and the matched UNet2DModel)
    ddpm_steps: int = 1000  # DDPMScheduler sampling steps
    fast_schedulers: list[list] = field(default_factory=lambda: [["dpmsolver++", 10], ["dpmsolver++", 20],
                                                                    ["unipc", 10]])
    device: str = "cpu"
    ddpm_lr: float | None = None  # None: TrainConfig's lr, as for kinetic

    @classmethod
    def full(cls) -> "Settings":
        return cls()

    @classmethod
    def quick(cls) -> "Settings":
        return cls(seeds=[0], steps=10, n=100, nfes=[10, 20], size="tiny", ddpm_steps=100)

    @property
    def long_steps(self) -> int:
        return self.steps * self.long_factor

    def budgets(self) -> dict[str, int]:
        """Snapshot tag -> training steps of the equal-steps budgets (one when long_factor is 1)."""
        return {"steps": self.steps, "long": self.long_steps} if self.long_factor > 1 else {"steps": self.steps}

    def budget_words(self) -> str:
        return f"{self.steps} and {self.long_steps}" if self.long_factor > 1 else f"{self.steps}"

    def validate(self) -> "Settings":
        if not self.seeds or any(int(s) != s or s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be non-negative integers, got {self.seeds}")
        for name in ("steps", "long_factor", "ddpm_steps"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (2 <= self.n <= N_DIGITS - 2):
            raise ValueError(f"n must lie in [2, {N_DIGITS - 2}] (the reference holds the other digits), got {self.n}")
        if not self.nfes or any(int(v) != v or v < 1 for v in self.nfes):
            raise ValueError(f"nfes must be positive integers, got {self.nfes}")
        return self


# ---------------------------------------------------------------------- methods
@dataclass(frozen=True)
class Method:
    """One row of the study. kind: "ddpm" (diffusers baseline), "kinetic" (kinetic's U-Net through
    the Trainer) or "adapter" (diffusers' UNet2DModel as kinetic's network)."""

    name: str
    kind: str
    sde: str | None = None
    order: int | None = None

    @property
    def network(self) -> str:
        return "kinetic U-Net" if self.kind == "kinetic" else "diffusers UNet2DModel"


METHODS: list[Method] = [
    Method("ddpm", "ddpm"),
    Method("vp", "kinetic", "vp"),
    Method("cld", "kinetic", "cld"),
    Method("hold", "kinetic", "hold"),
    Method("langevin4", "kinetic", "langevin", 4),
    Method("psld", "kinetic", "psld"),
    Method("vp+dunet", "adapter", "vp"),
    Method("hold+dunet", "adapter", "hold"),
]
METHOD_NAMES = [m.name for m in METHODS]

# sampler configs per SDE name ("*": every other SDE). Keys: solver, grid, t_eps, denoise, options,
# nfe_per_step (default 2 for pc, else 1). The study reports the best of the list at each NFE.
DEFAULT_SAMPLERS: dict[str, list[dict[str, Any]]] = {
    "vp": [{"solver": "ei", "grid": "quadratic"}, {"solver": "ei", "grid": "uniform"},
           {"solver": "em", "grid": "quadratic"}],
    "*": [{"solver": "ei", "grid": "quadratic"}, {"solver": "ei", "grid": "uniform"},
          {"solver": "sscs", "grid": "quadratic"}],
}
SAMPLER_KEYS = ("solver", "grid", "t_eps", "denoise", "options", "nfe_per_step")


def normalise_sampler(cfg: dict[str, Any]) -> dict[str, Any]:
    """A checked sampler config with every key set; ValueError naming a bad key or value."""
    if not isinstance(cfg, dict):
        raise ValueError(f"a sampler config must be a JSON object, got {cfg!r}")
    unknown = sorted(set(cfg) - set(SAMPLER_KEYS))
    if unknown:
        raise ValueError(f"sampler config {cfg}: unknown key(s) {unknown}; valid keys: {', '.join(SAMPLER_KEYS)}")
    solver = cfg.get("solver")
    if solver not in SOLVERS:
        raise ValueError(f"sampler config {cfg}: solver must be one of {', '.join(sorted(SOLVERS))}")
    out = {
        "solver": solver,
        "grid": cfg.get("grid", "quadratic"),
        "t_eps": float(cfg.get("t_eps", TrainConfig.sample_t_eps)),
        "denoise": bool(cfg.get("denoise", False)),
        "options": dict(cfg.get("options", {})),
        "nfe_per_step": int(cfg.get("nfe_per_step", 2 if solver == "pc" else 1)),
    }
    if out["nfe_per_step"] < 1:
        raise ValueError(f"sampler config {cfg}: nfe_per_step must be >= 1")
    return out


def sampler_label(cfg: dict[str, Any]) -> str:
    """Short name: ``ei/quadratic``, ``sscs/uniform+denoise``, ``ei/quadratic(multistep=2)``."""
    s = f"{cfg['solver']}/{cfg['grid']}"
    if cfg["t_eps"] != TrainConfig.sample_t_eps:
        s += f"@{cfg['t_eps']:g}"
    if cfg["denoise"]:
        s += "+denoise"
    if cfg["options"]:
        s += "(" + ",".join(f"{k}={v}" for k, v in sorted(cfg["options"].items())) + ")"
    return s


def samplers_for(sde: str, table: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return [normalise_sampler(c) for c in table.get(sde, table["*"])]


def parse_samplers(text: str | None) -> dict[str, list[dict[str, Any]]]:
    """DEFAULT_SAMPLERS updated by a JSON object (or a path to a .json file): {"hold": [{...}, ...]}."""
    table = copy.deepcopy(DEFAULT_SAMPLERS)
    if not text:
        return table
    raw = Path(text).read_text() if text.endswith(".json") and Path(text).is_file() else text
    try:
        extra = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"--samplers must be a JSON object (or a .json file) mapping SDE names to lists: {err}") from None
    if not isinstance(extra, dict) or not all(isinstance(v, list) and v for v in extra.values()):
        raise ValueError("--samplers must map SDE names to non-empty lists of sampler configs")
    valid = set(PRESETS) | {"*"}
    for key, cfgs in extra.items():
        if key not in valid:
            raise ValueError(f"--samplers: unknown SDE {key!r}; valid: {', '.join(sorted(valid))}")
        for c in cfgs:
            normalise_sampler(c)
    table.update(extra)
    return table


# ---------------------------------------------------------------------- data and metric
def real_split(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(floor set (n, 1, 8, 8), reference (1797 - n, 1, 8, 8)): a random disjoint split of all digits."""
    x = load_dataset("digits", split="all")
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(20_000 + int(seed)))
    return x[perm[:n]], x[perm[n:]]


def score_samples(samples: torch.Tensor, reference: torch.Tensor) -> dict[str, float]:
    """fd-digits of the clamped samples (the study's number), of the raw ones, and the share of raw
    values outside [-1, 1]."""
    x = samples.detach().float().cpu()
    finite = bool(torch.isfinite(x).all())
    return {
        "fd": fd_digits(x, reference) if finite else float("nan"),
        "fd_raw": fd_digits(x, reference, clamp=False) if finite else float("nan"),
        "out_of_range": out_of_range_fraction(x),
        "min": float(x.min()) if finite else float("nan"),
        "max": float(x.max()) if finite else float("nan"),
    }


# ---------------------------------------------------------------------- networks
def base_config(method: Method, settings: Settings, seed: int) -> TrainConfig:
    """The TrainConfig of a kinetic / adapter run (default objective and optimiser)."""
    return TrainConfig(
        sde=method.sde or "vp", order=method.order, data="digits", model="unet", model_size=settings.size,
        steps=settings.long_steps, seed=int(seed), device=settings.device, amp=False, sample_every=0,
        ckpt_every=0, n_samples=0,
    )


def build_network(method: Method, settings: Settings, sde=None) -> torch.nn.Module:
    """A fresh network of ``method`` (weights from torch's global RNG)."""
    from kinetic.models import build_model
    from kinetic.models.diffusers_unet import build_diffusers_unet, unet2d_config

    if method.kind == "ddpm":
        from diffusers import UNet2DModel

        return UNet2DModel(**unet2d_config(DATA_SHAPE, 1, settings.size))
    if method.kind == "kinetic":
        return build_model("unet", settings.size, DATA_SHAPE, sde.order)
    return build_diffusers_unet(DATA_SHAPE, sde.order, settings.size, T=sde.T)


def n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# ---------------------------------------------------------------------- training
class _Snapshots:
    """Keeps the EMA weights at the equal-steps budgets and at the last step within each wall budget."""

    def __init__(self, budgets: dict[str, int], walls: dict[str, float]):
        self.budgets, self.walls = budgets, walls
        self.states: dict[str, dict[str, torch.Tensor]] = {}
        self.steps: dict[str, int] = {}
        self.elapsed: list[float] = []  # training seconds after each step (copies not counted)

    def after_step(self, step: int, dt: float, ema_state: Callable[[], dict[str, torch.Tensor]]) -> None:
        t = (self.elapsed[-1] if self.elapsed else 0.0) + dt
        self.elapsed.append(t)
        for tag, s in self.budgets.items():
            if step == s:
                self._keep(tag, step, ema_state)
        for tag, w in self.walls.items():
            # every step within the budget (a copy costs ~1/300 of a step); step 1 in any case
            if t <= w or tag not in self.states:
                self._keep(tag, step, ema_state)

    def _keep(self, tag, step, ema_state) -> None:
        self.states[tag] = {k: v.detach().clone().cpu() for k, v in ema_state().items()}
        self.steps[tag] = step


def train_ddpm(settings: Settings, seed: int, log: Callable[[str], None]) -> tuple[_Snapshots, dict]:
    """The diffusers baseline, as diffusers' train_unconditional example: eps-MSE at integer timesteps."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    tc = TrainConfig()
    device = torch.device(settings.device)
    torch.manual_seed(seed)
    unet = build_network(METHODS[0], settings).to(device).train()
    noise_scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    lr = settings.ddpm_lr if settings.ddpm_lr is not None else tc.lr
    optimizer = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=tc.weight_decay)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer=optimizer, num_warmup_steps=tc.warmup)
    ema = EMAModel(unet.parameters(), decay=tc.ema_decay)
    ema_net = copy.deepcopy(unet).eval()

    def ema_state():
        ema.copy_to(ema_net.parameters())
        return ema_net.state_dict()

    data = load_dataset("digits", split="train")
    gen = torch.Generator().manual_seed(seed)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(data), batch_size=tc.batch_size,
                                         shuffle=True, drop_last=True, generator=gen)
    snaps = _Snapshots(settings.budgets(), {})
    losses: list[float] = []
    batches = iter(loader)
    for step in range(1, settings.long_steps + 1):
        t0 = time.perf_counter()
        try:
            (clean,) = next(batches)
        except StopIteration:
            batches = iter(loader)
            (clean,) = next(batches)
        clean = clean.to(device)
        noise = torch.randn(clean.shape, generator=gen).to(device)
        timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (clean.shape[0],), generator=gen)
        timesteps = timesteps.to(device)
        noisy = noise_scheduler.add_noise(clean, noise, timesteps)
        pred = unet(noisy, timesteps).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), tc.grad_clip)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        losses.append(loss.item())
        snaps.after_step(step, time.perf_counter() - t0, ema_state)
        _log_progress(log, "ddpm", seed, step, settings.long_steps, snaps.elapsed[-1], losses)
    return snaps, {"params": n_params(unet), "loss": _loss_curve(losses), "lr": lr}


def train_kinetic(method: Method, settings: Settings, seed: int, walls: dict[str, float],
                  log: Callable[[str], None]) -> tuple[_Snapshots, dict]:
    """kinetic's U-Net, or for an adapter method diffusers' UNet2DModel as kinetic's network
    (`build_network`), trained by `kinetic.training.Trainer`: the step that ``kn.train`` runs."""
    from kinetic.training import Trainer
    from kinetic.training.parts import build_sde

    cfg = base_config(method, settings, seed)
    network = None
    if method.kind != "kinetic":
        torch.manual_seed(cfg.seed)  # as the Trainer seeds its own network
        network = build_network(method, settings, build_sde(cfg)).train()
    trainer = Trainer.from_config(cfg, network=network)
    snaps = _Snapshots(settings.budgets(), walls)
    losses: list[float] = []
    for step in range(1, settings.long_steps + 1):
        t0 = time.perf_counter()
        info = trainer.step()
        losses.append(float(info["loss"]))
        snaps.after_step(step, time.perf_counter() - t0, trainer.ema.shadow.state_dict)
        _log_progress(log, method.name, seed, step, settings.long_steps, snaps.elapsed[-1], losses)
    return snaps, {"params": n_params(trainer.net), "loss": _loss_curve(losses)}


def _loss_curve(losses: list[float], every: int = 10) -> list[float]:
    return [sum(losses[i : i + every]) / len(losses[i : i + every]) for i in range(0, len(losses), every)]


def _log_progress(log, name, seed, step, total, elapsed, losses) -> None:
    if step == total or step % max(1, total // 10) == 0:
        recent = losses[-10:]
        log(f"  train {name} seed {seed}: step {step}/{total}, {elapsed:.0f} s, loss {sum(recent) / len(recent):.4g}")


# ---------------------------------------------------------------------- sampling
def diffusers_scheduler(name: str):
    """DDPMScheduler of training, or a fast scheduler built from its config (diffusers' usage)."""
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    ddpm = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
    if name == "ddpm":
        return ddpm
    if name == "dpmsolver++":
        return DPMSolverMultistepScheduler.from_config(ddpm.config, algorithm_type="dpmsolver++")
    if name == "unipc":
        return UniPCMultistepScheduler.from_config(ddpm.config)
    raise ValueError(f"unknown diffusers scheduler {name!r}; valid: ddpm, dpmsolver++, unipc")


@torch.no_grad()
def sample_diffusers(unet, name: str, steps: int, n: int, seed: int, device) -> tuple[torch.Tensor, int]:
    """n raw samples (no clamping) by the scheduler loop of diffusers' docs; returns (x, NFE)."""
    import inspect

    scheduler = diffusers_scheduler(name)
    scheduler.set_timesteps(steps)
    gen = torch.Generator().manual_seed(seed)
    x = (torch.randn((n, *DATA_SHAPE), generator=gen) * scheduler.init_noise_sigma).to(device)
    takes_gen = "generator" in inspect.signature(scheduler.step).parameters
    nfe = 0
    for t in scheduler.timesteps:
        eps = unet(scheduler.scale_model_input(x, t), t).sample
        nfe += 1
        kw = {"generator": gen} if takes_gen and device.type == "cpu" else {}
        x = scheduler.step(eps, t, x, **kw).prev_sample
    return x.float().cpu(), nfe


@torch.no_grad()
def sample_kinetic(score_model, sampler: dict[str, Any], nfe: int, n: int, seed: int, device) -> tuple[torch.Tensor, int]:
    """n raw samples of the data block with a kinetic sampler config at ``nfe``; returns (x, NFE)."""
    from kinetic.sampling import sample

    steps = (nfe - int(sampler["denoise"])) // sampler["nfe_per_step"]
    gen = torch.Generator(device=device).manual_seed(seed)
    z, used = sample(score_model.sde, score_model.score, (n, *DATA_SHAPE), solver=sampler["solver"], steps=steps,
                     grid=sampler["grid"], t_eps=sampler["t_eps"], denoise=sampler["denoise"], generator=gen,
                     return_state=True, device=device, **sampler["options"])
    return z[:, 0].float().cpu(), int(used)


def reachable(sampler: dict[str, Any], nfe: int) -> bool:
    """Whether a sampler config spends exactly ``nfe`` evaluations with a whole number of steps."""
    rest = nfe - int(sampler["denoise"])
    return rest >= sampler["nfe_per_step"] and rest % sampler["nfe_per_step"] == 0


# ---------------------------------------------------------------------- the run cache
class RunDir:
    """``<runs>/<method>-s<seed>/``: train.json, <tag>.pt (EMA weights), evals.json, samples.pt."""

    def __init__(self, root: Path, method: Method, seed: int):
        self.path = root / f"{method.name}-s{seed}"
        self.method, self.seed = method, seed

    def _read(self, name: str) -> Any:
        p = self.path / name
        return json.loads(p.read_text()) if p.is_file() else None

    def _write(self, name: str, obj: Any) -> None:
        from kinetic.fileio import atomic_write_text

        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path / name, json.dumps(_jsonable(obj), indent=1))

    def train_record(self, key: dict, overwrite: bool) -> dict | None:
        rec = self._read("train.json")
        if rec is None:
            return None
        if rec.get("key") != _jsonable(key):
            if overwrite:
                return None
            raise StudyError(f"{self.path} holds a run with other settings ({rec.get('key')}); "
                             f"use another --runs folder or pass --overwrite")
        if not all((self.path / f"{tag}.pt").is_file() for tag in rec["snapshots"]):
            return None
        return rec

    def save_training(self, key: dict, snaps: _Snapshots, extra: dict, walls: dict[str, float]) -> dict:
        from kinetic.fileio import atomic_write

        self.path.mkdir(parents=True, exist_ok=True)
        for tag, state in snaps.states.items():
            atomic_write(self.path / f"{tag}.pt", lambda tmp, s=state: torch.save(s, tmp))
        el = snaps.elapsed
        dts = [b - a for a, b in zip([0.0] + el[:-1], el)]
        rec = {
            "format": RUN_FORMAT, "key": key, "method": self.method.name, "seed": self.seed,
            "snapshots": dict(snaps.steps),
            "elapsed_at": {str(s): el[s - 1] for s in sorted(set(snaps.steps.values()))},
            "train_seconds": el[-1], "seconds_per_step": statistics.median(dts),
            "wall_budget_s": walls, "capped": {tag: snaps.steps[tag] == len(el) for tag in walls},
            "over_budget": {tag: el[snaps.steps[tag] - 1] > w for tag, w in walls.items()},
            **extra,
        }
        self._write("train.json", rec)
        for old in ("evals.json", "samples.pt"):  # new weights: old evaluations no longer apply
            if (self.path / old).is_file():
                (self.path / old).unlink()
        return rec

    def load_state(self, tag: str) -> dict[str, torch.Tensor]:
        return torch.load(self.path / f"{tag}.pt", map_location="cpu", weights_only=True)

    def evals(self) -> dict:
        return self._read("evals.json") or {}

    def save_evals(self, evals: dict) -> None:
        self._write("evals.json", evals)

    def samples(self) -> dict[str, torch.Tensor]:
        p = self.path / "samples.pt"
        return torch.load(p, weights_only=True) if p.is_file() else {}

    def save_samples(self, samples: dict[str, torch.Tensor]) -> None:
        from kinetic.fileio import atomic_write

        atomic_write(self.path / "samples.pt", lambda tmp: torch.save(samples, tmp))


def _jsonable(obj: Any) -> Any:
    """Plain JSON data: NaN / inf -> None, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# ---------------------------------------------------------------------- the study
def _train_key(method: Method, settings: Settings, seed: int, walls: dict[str, float]) -> dict:
    tc = TrainConfig()
    return {"method": method.name, "seed": seed, "steps": settings.steps, "long_steps": settings.long_steps,
            "size": settings.size, "batch": tc.batch_size, "lr": settings.ddpm_lr if method.kind == "ddpm" else tc.lr,
            "device": settings.device, "walls": {k: round(v, 6) for k, v in walls.items()}}


def _model_for_eval(method: Method, settings: Settings, seed: int, state: dict):
    """(callable that samples (sampler, nfe) -> (x, nfe), sampler list) for one snapshot."""
    device = torch.device(settings.device)
    if method.kind == "ddpm":
        net = build_network(method, settings).to(device)
        net.load_state_dict(state)
        net.eval()
        return lambda s, nfe: sample_diffusers(net, s["solver"], nfe, settings.n, 10_000 + seed, device)
    from kinetic.training.parts import build_sde, score_model

    cfg = base_config(method, settings, seed)
    sde = build_sde(cfg)
    net = build_network(method, settings, sde).to(device)
    net.load_state_dict(state)
    net.eval()
    sm = score_model(net, sde, {"parameterization": cfg.parameterization, "data_std": cfg.data_std,
                                "input_scaling": cfg.input_scaling}).eval()
    return lambda s, nfe: sample_kinetic(sm, s, nfe, settings.n, 10_000 + seed, device)


def ddpm_samplers(settings: Settings) -> list[tuple[dict, int]]:
    """(config, NFE) pairs of the baseline: DDPMScheduler at ddpm_steps, then the fast schedulers."""
    pairs = [({"solver": "ddpm"}, settings.ddpm_steps)]
    pairs += [({"solver": name}, int(nfe)) for name, nfe in settings.fast_schedulers]
    return pairs


def eval_plan(method: Method, settings: Settings, table: dict, tags: list[str],
              best: dict | None = None) -> list[tuple[str, str, dict, int]]:
    """(tag, sampler label, sampler config, NFE) to evaluate. Equal-steps tags get every sampler at
    every NFE; wall tags (``best`` given: tag -> {nfe: label}) only the best sampler of that NFE."""
    if method.kind == "ddpm":
        return [(tag, s["solver"], s, nfe) for tag in tags for s, nfe in ddpm_samplers(settings)]
    samplers = {sampler_label(s): s for s in samplers_for(method.sde, table)}
    plan = []
    for tag in tags:
        for nfe in settings.nfes:
            labels = [best[tag][nfe]] if best is not None else list(samplers)
            for label in labels:
                if label is not None and label in samplers and reachable(samplers[label], nfe):
                    plan.append((tag, label, samplers[label], nfe))
    return plan


def evaluate_run(run: RunDir, method: Method, settings: Settings, plan, reference, log) -> dict:
    """Evaluate the missing (tag, sampler, NFE) entries of ``plan``; returns all of the run's evals."""
    evals, samples = run.evals(), run.samples()
    todo = [p for p in plan if f"{p[0]}|{p[1]}|{p[3]}" not in evals]
    by_tag: dict[str, list] = {}
    for p in todo:
        by_tag.setdefault(p[0], []).append(p)
    for tag, items in by_tag.items():
        draw = _model_for_eval(method, settings, run.seed, run.load_state(tag))
        for _, label, cfg, nfe in items:
            t0 = time.perf_counter()
            try:
                x, used = draw(cfg, nfe)
                res = score_samples(x, reference)
                samples[f"{tag}|{label}|{nfe}"] = x[:64].clone()
            except (ValueError, RuntimeError) as err:  # e.g. a sampler that diverges: record it
                res, used = {"fd": float("nan"), "error": f"{type(err).__name__}: {err}"}, nfe
            res.update({"nfe": used, "sample_seconds": time.perf_counter() - t0})
            evals[f"{tag}|{label}|{nfe}"] = res
            log(f"  eval {method.name} seed {run.seed} {tag} {label} NFE {used}: fd-digits {res['fd']:.4g} "
                f"(raw {res.get('fd_raw', float('nan')):.4g}, out of range {100 * res.get('out_of_range', 0):.2f}%)")
            run.save_evals(evals)
        run.save_samples(samples)
    return evals


def run_study(settings: Settings, methods: list[Method], runs_root: Path, table: dict, *, overwrite: bool = False,
              log: Callable[[str], None] = print, train_only: bool = False) -> dict:
    """Train (or reuse) every (method, seed), evaluate, and return the results (plain data).
    ``train_only``: stop after training (the cache then serves a later evaluation)."""
    settings.validate()
    if "ddpm" not in [m.name for m in methods]:
        methods = [METHODS[0], *methods]  # the wall-clock budgets come from the baseline
    methods = sorted(methods, key=lambda m: METHOD_NAMES.index(m.name))
    torch.manual_seed(0)
    results: dict = {"settings": dataclasses.asdict(settings), "machine": machine(), "floor": {}, "runs": {},
                     "samplers": {m.name: [sampler_label(s) for s in samplers_for(m.sde, table)]
                                  for m in methods if m.kind != "ddpm"}}
    refs = {}
    for seed in settings.seeds:
        floor_set, reference = real_split(settings.n, seed)
        refs[seed] = reference
        results["floor"][str(seed)] = {"fd": fd_digits(floor_set, reference), "n": settings.n,
                                       "reference": int(reference.shape[0])}
        log(f"floor seed {seed}: fd-digits {results['floor'][str(seed)]['fd']:.4g} "
            f"({settings.n} real digits against {reference.shape[0]} others)")
    # 1. training (the baseline first: its wall-clock defines the equal-wall budgets)
    records: dict[tuple[str, int], dict] = {}
    for method in methods:
        for seed in settings.seeds:
            run = RunDir(runs_root, method, seed)
            walls: dict[str, float] = {}
            if method.kind != "ddpm":
                base = records[("ddpm", seed)]
                walls = {f"wall_{tag}": base["elapsed_at"][str(base["snapshots"][tag])] for tag in settings.budgets()}
            key = _train_key(method, settings, seed, walls)
            rec = run.train_record(key, overwrite)
            if rec is None:
                log(f"training {method.name} seed {seed} ({settings.long_steps} steps)")
                if method.kind == "ddpm":
                    snaps, extra = train_ddpm(settings, seed, log)
                else:
                    snaps, extra = train_kinetic(method, settings, seed, walls, log)
                rec = run.save_training(key, snaps, extra, walls)
            records[(method.name, seed)] = rec
    if train_only:
        return results
    # 2. equal-steps evaluations, 3. the best sampler per NFE, 4. equal-wall evaluations
    step_tags = list(settings.budgets())
    for method in methods:
        for seed in settings.seeds:
            run = RunDir(runs_root, method, seed)
            evaluate_run(run, method, settings, eval_plan(method, settings, table, step_tags), refs[seed], log)
    for method in methods:
        if method.kind == "ddpm":
            continue
        evs = {seed: RunDir(runs_root, method, seed).evals() for seed in settings.seeds}
        best = {f"wall_{tag}": {nfe: best_label(evs, tag, nfe)[0] for nfe in settings.nfes} for tag in step_tags}
        for seed in settings.seeds:
            plan = eval_plan(method, settings, table, list(best), best)
            evaluate_run(RunDir(runs_root, method, seed), method, settings, plan, refs[seed], log)
    for method in methods:
        results["runs"][method.name] = {
            str(seed): {"train": records[(method.name, seed)], "evals": RunDir(runs_root, method, seed).evals()}
            for seed in settings.seeds}
    results["summary"] = summarise(results, methods, settings)
    return results


# ---------------------------------------------------------------------- summaries
def _values(evs: dict, key_of: Callable[[str], str]) -> list[float]:
    return [evs[s][key_of(s)]["fd"] if key_of(s) in evs[s] and evs[s][key_of(s)]["fd"] is not None else float("nan")
            for s in evs]


def mean_sd(v: list[float]) -> tuple[float, float]:
    """Mean and sample sd (0 for one value); nan if any value is nan or missing."""
    if not v or any(x is None or not math.isfinite(x) for x in v):
        return float("nan"), float("nan")
    return statistics.fmean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def best_label(evs: dict, tag: str, nfe: int, labels: list[str] | None = None) -> tuple[str | None, float, float]:
    """(label, mean, sd) of the sampler with the lowest mean fd-digits over seeds at (tag, NFE).
    ``evs``: seed -> evals of one method. Labels with a nan / missing seed lose."""
    if labels is None:
        labels = sorted({k.split("|")[1] for e in evs.values() for k in e if k.startswith(f"{tag}|") and
                         k.endswith(f"|{nfe}")})
    best = (None, float("nan"), float("nan"))
    for label in labels:
        m, s = mean_sd(_values(evs, lambda seed, lab=label: f"{tag}|{lab}|{nfe}"))
        if math.isfinite(m) and (best[0] is None or m < best[1]):
            best = (label, m, s)
    return best


def ddpm_best_at(settings: Settings) -> dict[int, list[str]]:
    """NFE -> the baseline's schedulers at that NFE (the best of them is its point at that NFE)."""
    out: dict[int, list[str]] = {}
    for s, nfe in ddpm_samplers(settings):
        out.setdefault(nfe, []).append(s["solver"])
    return out


def summarise(results: dict, methods: list[Method], settings: Settings) -> dict:
    """Per method, per tag (steps, long, wall_steps, wall_long), per NFE: best sampler, fd mean / sd,
    out-of-range mean; plus timing and the floor."""
    floors = [results["floor"][str(s)]["fd"] for s in settings.seeds]
    summary: dict = {"floor": mean_sd(floors), "methods": {}}
    tags = list(settings.budgets()) + [f"wall_{t}" for t in settings.budgets()]
    nb = len(settings.budgets())
    for method in methods:
        runs = results["runs"][method.name]
        evs = {seed: runs[seed]["evals"] for seed in runs}
        row: dict = {"kind": method.kind, "network": method.network,
                     "params": runs[str(settings.seeds[0])]["train"]["params"], "cells": {}}
        sec = [runs[s]["train"]["seconds_per_step"] for s in runs]
        row["seconds_per_step"] = mean_sd(sec)
        row["train_seconds"] = {tag: mean_sd([runs[s]["train"]["elapsed_at"][str(runs[s]["train"]["snapshots"][tag])]
                                              for s in runs]) for tag in settings.budgets()}
        if method.kind != "ddpm":
            row["wall_steps"] = {tag: [runs[s]["train"]["snapshots"][tag] for s in runs] for tag in tags[nb:]}
            row["wall_capped"] = {tag: any(runs[s]["train"]["capped"][tag] for s in runs) for tag in tags[nb:]}
        nfe_map = ddpm_best_at(settings) if method.kind == "ddpm" else {nfe: None for nfe in settings.nfes}
        for tag in tags:
            src = tag[5:] if (method.kind == "ddpm" and tag.startswith("wall_")) else tag
            for nfe, labels in nfe_map.items():
                label, m, s = best_label(evs, src, nfe, labels)
                oor = [evs[sd].get(f"{src}|{label}|{nfe}", {}).get("out_of_range") for sd in evs] if label else []
                raw = [evs[sd].get(f"{src}|{label}|{nfe}", {}).get("fd_raw") for sd in evs] if label else []
                row["cells"][f"{tag}|{nfe}"] = {
                    "sampler": label, "fd": m, "sd": s,
                    "out_of_range": statistics.fmean(oor) if oor and None not in oor else None,
                    "fd_raw": mean_sd([float("nan") if r is None else r for r in raw])[0] if raw else None,
                }
        if method.kind == "ddpm":
            row["schedulers"] = {f"{tag}|{s['solver']}|{nfe}": dict(zip(("fd", "sd"), mean_sd(
                _values(evs, lambda seed, k=f"{tag}|{s['solver']}|{nfe}": k)))) for tag in settings.budgets()
                for s, nfe in ddpm_samplers(settings)}
        summary["methods"][method.name] = row
    return summary


def machine() -> dict:
    try:
        import diffusers

        dv = diffusers.__version__
    except ImportError:  # pragma: no cover
        dv = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "diffusers": dv, "python": platform.python_version()}


# ---------------------------------------------------------------------- tables and figures
def _fmt(m: float | None, s: float | None = None) -> str:
    if m is None or not math.isfinite(m):
        return "—"
    txt = f"{m:.3g}"
    return f"{txt} ± {s:.2g}" if s is not None and math.isfinite(s) and s > 0 else txt


def _budget_name(settings: Settings, tag: str) -> str:
    steps = settings.budgets()[tag.removeprefix("wall_")]
    return f"wall-clock of the baseline's {steps} steps" if tag.startswith("wall_") else f"{steps} steps"


def all_nfes(settings: Settings) -> list[int]:
    return sorted(set(settings.nfes) | set(ddpm_best_at(settings)))


def to_markdown(results: dict) -> str:
    st = Settings(**results["settings"])
    summ = results["summary"]
    fm, fs = summ["floor"]
    nfes = all_nfes(st)
    n, ref = st.n, N_DIGITS - st.n
    seeds = st.seeds
    lines = [
        f"fd-digits of n = {n} samples against a reference of M = {ref} real digits (lower is better), "
        f"mean ± sd over seeds {seeds}; every sample set clamped to [-1, 1] first. The floor, "
        f"{n} other real digits against the same {ref}, is **{_fmt(fm, fs)}**. In brackets: the best sampler "
        "of the method's list at that NFE (kinetic: solver/time grid; baseline: diffusers scheduler).", ""]
    for tag in list(st.budgets()) + [f"wall_{t}" for t in st.budgets()]:
        lines += [f"#### {_budget_name(st, tag)}" + (" (equal wall-clock)" if tag.startswith("wall_") else
                                                     " (equal steps)"), ""]
        head = "| method | network (params) | " + ("steps in budget | " if tag.startswith("wall_") else "")
        head += " | ".join(f"NFE {v}" for v in nfes) + " |"
        lines += [head, "|" + "---|" * (head.count("|") - 1)]
        for name, row in summ["methods"].items():
            cells = []
            for v in nfes:
                c = row["cells"].get(f"{tag}|{v}")
                cells.append("—" if c is None or c["sampler"] is None else f"{_fmt(c['fd'], c['sd'])} ({c['sampler']})")
            extra = ""
            if tag.startswith("wall_"):
                steps = row.get("wall_steps", {}).get(tag) or [st.budgets()[tag[5:]]] * len(seeds)
                extra = "–".join(str(s) for s in sorted({min(steps), max(steps)})) + (
                    " (capped)" if row.get("wall_capped", {}).get(tag) else "") + " | "
            lines.append(f"| {name} | {row['network']} ({row['params'] / 1e6:.2f}M) | {extra}" + " | ".join(cells) + " |")
        lines.append(f"| real digits (floor) | — | {'— | ' if tag.startswith('wall_') else ''}"
                     + " | ".join(_fmt(fm, fs) for _ in nfes) + " |")
        lines.append("")
    lines += ["#### Share of raw sample values outside [-1, 1] (%), and fd-digits without clamping", "",
              "For the best sampler of each cell above, equal steps. Each cell: out-of-range % / raw fd-digits.", ""]
    head = "| method | budget | " + " | ".join(f"NFE {v}" for v in nfes) + " |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in summ["methods"].items():
        for tag in st.budgets():
            cells = []
            for v in nfes:
                c = row["cells"].get(f"{tag}|{v}")
                if c is None or c["sampler"] is None or c["out_of_range"] is None:
                    cells.append("—")
                else:
                    cells.append(f"{100 * c['out_of_range']:.2f} / {_fmt(c['fd_raw'])}")
            lines.append(f"| {name} | {_budget_name(st, tag)} | " + " | ".join(cells) + " |")
    lines.append("")
    base = summ["methods"].get("ddpm")
    if base:
        lines += ["#### The diffusers baseline, every scheduler", "",
                  "| scheduler | NFE | " + " | ".join(_budget_name(st, t) for t in st.budgets()) + " |",
                  "|---|---|" + "---|" * len(st.budgets())]
        for s, nfe in ddpm_samplers(st):
            cells = [_fmt(base["schedulers"][f"{t}|{s['solver']}|{nfe}"]["fd"],
                          base["schedulers"][f"{t}|{s['solver']}|{nfe}"]["sd"]) for t in st.budgets()]
            lines.append(f"| {s['solver']} | {nfe} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["#### Training time", "",
              "| method | s / step | " + " | ".join(f"train s for {v} steps" for v in st.budgets().values()) + " |",
              "|---|---|" + "---|" * len(st.budgets())]
    for name, row in summ["methods"].items():
        lines.append(f"| {name} | {_fmt(*row['seconds_per_step'])} | "
                     + " | ".join(_fmt(*row["train_seconds"][t]) for t in st.budgets()) + " |")
    lines.append("")
    return "\n".join(lines)


SCHEDULER_NAMES = {"ddpm": "DDPM", "dpmsolver++": "DPM-Solver++", "unipc": "UniPC"}


def first_look_markdown(results: dict, method: str = "vp", sampler: str = "ei/quadratic") -> str:
    """docs/study.md's first look (one kinetic method against the baseline at equal steps), per seed then mean ±
    sd: the floor, ``method`` with ``sampler`` at each NFE below 1000, the baseline's best scheduler at the
    smallest NFE (the one with the lowest mean, `summarise`), DPM-Solver++ at the others, DDPM's own sampler."""
    st = results["settings"]
    nfes = sorted(n for n in st["nfes"] if n < 1000)
    base = results["summary"]["methods"]["ddpm"]
    best = base["cells"][f"steps|{nfes[0]}"]["sampler"]
    cols = ([(method, f"{sampler}|{n}") for n in nfes] + [("ddpm", f"{best}|{nfes[0]}")]
            + [("ddpm", f"dpmsolver++|{n}") for n in nfes[1:]] + [("ddpm", f"ddpm|{st['ddpm_steps']}")])
    head = ([f"kinetic {method.upper()}, {sampler.split('/')[0]}, NFE {nfes[0]}"] + [f"NFE {n}" for n in nfes[1:]]
            + [f"DDPM baseline, NFE {nfes[0]} (the best mean of "
               f"{' / '.join(SCHEDULER_NAMES[s] for s, n in st['fast_schedulers'] if n == nfes[0])})"]
            + [f"DPM-Solver++ at NFE {n}" for n in nfes[1:]] + [f"DDPM, {st['ddpm_steps']} steps"])
    lines = ["| seed | floor | " + " | ".join(head) + " |", "|---|---|" + "---|" * len(head)]
    for seed in st["seeds"]:
        cells = [f"{results['floor'][str(seed)]['fd']:.3g}"]
        for m, key in cols:
            fd = results["runs"][m][str(seed)]["evals"][f"steps|{key}"]["fd"]
            cells.append(f"{fd:.3g}" + (f" ({SCHEDULER_NAMES[best]})" if key == f"{best}|{nfes[0]}" else ""))
        lines.append(f"| {seed} | " + " | ".join(cells) + " |")
    means = [results["summary"]["floor"]]
    for m, key in cols:
        c = (results["summary"]["methods"][m]["cells"][f"steps|{key.split('|')[1]}"] if m == method
             else base["schedulers"][f"steps|{key}"])
        means.append((c["fd"], c["sd"]))
    lines.append("| mean ± sd | " + " | ".join(f"{m:.1f} ± {s:.1f}" for m, s in means) + " |")
    return "\n".join(lines)


def plot_fd_vs_nfe(results: dict, path: Path) -> Path:
    """fd-digits against NFE, one line per method (best sampler per NFE, error bars = sd over seeds),
    one panel per equal-steps budget, the real-data floor as a band."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    st = Settings(**results["settings"])
    summ = results["summary"]
    tags = list(st.budgets())
    fig = Figure(figsize=(6 * len(tags), 4.5), dpi=110)
    FigureCanvasAgg(fig)
    fm, fs = summ["floor"]
    for i, tag in enumerate(tags):
        ax = fig.add_subplot(1, len(tags), i + 1)
        for j, (name, row) in enumerate(summ["methods"].items()):
            pts = sorted((int(k.split("|")[1]), c) for k, c in row["cells"].items()
                         if k.startswith(f"{tag}|") and c["sampler"] is not None and math.isfinite(c["fd"]))
            if not pts:
                continue
            style = dict(marker="s", ls="--", color="black") if row["kind"] == "ddpm" else dict(
                marker="o", ls="-" if row["kind"] == "kinetic" else ":", color=f"C{j % 10}")
            ax.errorbar([p[0] for p in pts], [p[1]["fd"] for p in pts], yerr=[p[1]["sd"] for p in pts], capsize=3,
                        label=name, **style)
        if math.isfinite(fm):
            ax.axhspan(fm - fs, fm + fs, color="grey", alpha=0.25, lw=0)
            ax.axhline(fm, color="grey", lw=1, label=f"real digits (floor {fm:.2g})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel(f"fd-digits (n = {st.n}, clamped)")
        ax.set_title(f"{st.budgets()[tag]} training steps")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    from kinetic.fileio import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_sample_grids(results: dict, runs_root: Path, path: Path, nfe: int | None = None) -> Path:
    """64 clamped samples per method (seed of the first run, best sampler at ``nfe``; the baseline's best
    scheduler at its nearest NFE), one row per equal-steps budget, real digits in the first column."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    st = Settings(**results["settings"])
    summ = results["summary"]
    nfe = nfe or (20 if 20 in st.nfes else max(st.nfes))
    seed = st.seeds[0]
    tags = list(st.budgets())
    names = list(summ["methods"])
    fig = Figure(figsize=(1.6 * (len(names) + 1), 1.9 * len(tags)), dpi=110)
    FigureCanvasAgg(fig)
    real = real_split(64, seed)[0]

    def grid(x: torch.Tensor) -> torch.Tensor:
        """Up to 64 digits (B, 1, 8, 8) clamped to [-1, 1] -> one 8 x 8 tiling in [0, 1], 1 px apart."""
        x = x[:64].clamp(-1, 1)
        k = int(math.ceil(math.sqrt(x.shape[0])))
        x = torch.cat([x, torch.full((k * k - x.shape[0], *x.shape[1:]), -1.0)])
        x = F.pad(x[:, 0], (0, 1, 0, 1), value=-1.0)  # (k*k, 9, 9): a blank row and column
        x = x.reshape(k, k, 9, 9).permute(0, 2, 1, 3).reshape(9 * k, 9 * k)
        return (x + 1) / 2

    for i, tag in enumerate(tags):
        ax = fig.add_subplot(len(tags), len(names) + 1, i * (len(names) + 1) + 1)
        ax.imshow(grid(real).numpy(), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title("real", fontsize=7)
        ax.axis("off")
        for j, name in enumerate(names):
            row = summ["methods"][name]
            ax = fig.add_subplot(len(tags), len(names) + 1, i * (len(names) + 1) + j + 2)
            ax.axis("off")
            near = min((int(k.split("|")[1]) for k in row["cells"] if k.startswith(f"{tag}|")),
                       key=lambda v: abs(math.log(v / nfe)))
            c = row["cells"][f"{tag}|{near}"]
            x = RunDir(runs_root, next(m for m in METHODS if m.name == name), seed).samples().get(
                f"{tag}|{c['sampler']}|{near}")
            if x is None:
                continue
            ax.imshow(grid(x).numpy(), cmap="gray_r", vmin=0, vmax=1)
            ax.set_title(f"{name}\n{c['sampler']} NFE {near}", fontsize=6)
        fig.text(0.002, 1 - (i + 0.5) / len(tags), f"{st.budgets()[tag]} steps", rotation=90, va="center", fontsize=7)
    fig.tight_layout()
    from kinetic.fileio import atomic_write

    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def study_fragment(results: dict, tables: str, command: str) -> str:
    st = Settings(**results["settings"])
    mach = results["machine"]
    tc = TrainConfig()
    return "\n".join([
        "## Quality at equal budget against diffusers' DDPM", "",
        "### Setup", "",
        f"- Data: the 1500 training digits (8x8, [-1, 1]). Budgets: {st.budget_words()} steps of batch "
        f"{tc.batch_size}; AdamW lr {tc.lr:g} (baseline: {st.ddpm_lr or tc.lr:g}), weight decay {tc.weight_decay:g}, "
        f"{tc.warmup} warm-up steps then constant, gradient clipping {tc.grad_clip:g}, EMA "
        f"min({tc.ema_decay:g}, (1 + s) / (10 + s)); seeds {st.seeds}.",
        f"- Networks: kinetic's `{st.size}` U-Net and diffusers' `UNet2DModel` configured level by level like it "
        "(`kinetic.models.diffusers_unet.unet2d_config`; the same parameter count).",
        "- Baseline (diffusers' documented recipe): `DDPMScheduler` (1000 train steps, linear betas 1e-4 to 0.02, "
        "epsilon objective, default `clip_sample=True`), `get_scheduler(\"constant_with_warmup\")`, `EMAModel`; "
        f"sampled with DDPM ({st.ddpm_steps} steps), DPM-Solver++ (2M) and UniPC.",
        "- kinetic: `kinetic.training.Trainer` (the loop of `kn.train`) with the default objective (x0 "
        "parameterisation, EDM weighting, log-normal times); `+dunet` rows put diffusers' UNet2DModel into the "
        "same objective through `kinetic.models.diffusers_unet.DiffusersUNet`.",
        f"- Metric: fd-digits of n = {st.n} samples (clamped to [-1, 1]) against M = {N_DIGITS - st.n} real digits; "
        f"the floor is {st.n} other real digits against the same M (a fresh random split per seed). "
        "The best sampler of each list is chosen on the same numbers it is reported with (a small optimistic bias "
        "for the rows with several samplers).",
        f"- Equal wall-clock: every model is also evaluated at the last training step within the seconds the diffusers "
        f"baseline of the same seed needed for {st.budget_words().replace(' and ', ' and for ')} steps (training steps only, "
        "measured in the same process; 'capped' marks a run that ended inside the budget), with the sampler that was "
        "best at equal steps for that NFE. Everything runs in float32; timings on a shared machine carry its load.",
        f"- Machine: {mach['processor']}, {mach['cpus']} cores, {mach['threads']} torch thread(s), torch "
        f"{mach['torch']}, diffusers {mach['diffusers']}.", "",
        "### Results", "", tables, "",
        "![fd-digits against NFE](figures/quality_vs_ddpm.png)", "",
        "![samples](figures/quality_vs_ddpm_samples.png)", "",
        "### Reproduce", "", "```bash", command, "```", ""])


# ---------------------------------------------------------------------- estimate
def estimate(settings: Settings, methods: list[Method], table: dict, log=print, steps: int = 3) -> dict:
    """Time a few training steps and one NFE of every method at ``settings``; the full run's cost."""
    settings.validate()
    total = 0.0
    out = {}
    for method in methods:
        if method.kind == "ddpm":
            s1 = dataclasses.replace(settings, steps=steps + 1, long_factor=1)
            snaps, _ = train_ddpm(s1, 0, lambda *_: None)
        elif method.kind == "kinetic":
            s1 = dataclasses.replace(settings, steps=steps + 1, long_factor=1)
            snaps, _ = train_kinetic(method, s1, 0, {}, lambda *_: None)
        else:
            s1 = dataclasses.replace(settings, steps=steps + 1, long_factor=1)
            snaps, _ = train_kinetic(method, s1, 0, {}, lambda *_: None)
        step_s = (snaps.elapsed[-1] - snaps.elapsed[0]) / steps
        draw = _model_for_eval(method, s1, 0, snaps.states["steps"])
        if method.kind == "ddpm":
            t0 = time.perf_counter()
            draw({"solver": "dpmsolver++"}, 2)
            nfe_s = (time.perf_counter() - t0) / 2
        else:
            s = samplers_for(method.sde, table)[0]
            t0 = time.perf_counter()
            draw(s, 2 * s["nfe_per_step"])
            nfe_s = (time.perf_counter() - t0) / (2 * s["nfe_per_step"])
        n_step_evals = sum(nfe for *_, nfe in eval_plan(method, settings, table, list(settings.budgets())))
        n_wall_evals = 0 if method.kind == "ddpm" else 2 * sum(settings.nfes)
        secs = len(settings.seeds) * (settings.long_steps * step_s + (n_step_evals + n_wall_evals) * nfe_s)
        out[method.name] = {"seconds_per_step": step_s, "seconds_per_nfe": nfe_s, "seconds": secs}
        total += secs
        log(f"{method.name}: {step_s:.3f} s/step, {nfe_s:.3f} s/NFE (n = {settings.n}) -> {secs / 3600:.2f} h")
    log(f"total: {total / 3600:.1f} h of one thread (plus a few minutes of fd-digits and figures)")
    out["total_seconds"] = total
    return out


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--quick", action="store_true",
                   help="1 seed, tiny networks, 10 / 50 steps, n = 100, NFE 10 and 20, DDPMScheduler 100 steps")
    p.add_argument("--estimate", action="store_true", help="time a few steps and print the run's cost; no study")
    p.add_argument("--out", default=None, help="output folder (default docs; runs/quality_vs_ddpm-quick with --quick)")
    p.add_argument("--runs", default=None, help="cache of trained weights and evaluations (default runs/quality_vs_ddpm[-quick])")
    p.add_argument("--methods", nargs="+", choices=METHOD_NAMES, default=None, help="subset of methods (ddpm always runs)")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="the default budget (the long one is --long-factor x)")
    p.add_argument("--long-factor", type=int, default=None,
                   help="the long budget in multiples of --steps (default 5; 1: the default budget only)")
    p.add_argument("--n", type=int, default=None, help="samples per set (reference: the other 1797 - n digits)")
    p.add_argument("--nfes", nargs="+", type=int, default=None)
    p.add_argument("--ddpm-steps", type=int, default=None, help="DDPMScheduler sampling steps (default 1000)")
    p.add_argument("--ddpm-lr", type=float, default=None, help="baseline learning rate (default: TrainConfig's)")
    p.add_argument("--samplers", default=None,
                   help='JSON (or a .json file) of sampler lists per SDE, e.g. \'{"hold": [{"solver": "ei", "grid": '
                        '"quadratic"}]}\'; keys: ' + ", ".join(SAMPLER_KEYS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--overwrite", action="store_true", help="retrain runs cached with other settings")
    p.add_argument("--train-only", action="store_true", help="only train (and cache) the runs; evaluate later")
    a = p.parse_args(argv)
    try:
        settings = Settings.quick() if a.quick else Settings.full()
        for name in ("seeds", "steps", "long_factor", "n", "nfes", "ddpm_steps", "ddpm_lr"):
            if getattr(a, name) is not None:
                setattr(settings, name, getattr(a, name))
        settings.device = a.device
        settings.validate()
        table = parse_samplers(a.samplers)
        if a.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {a.threads}")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    methods = [m for m in METHODS if a.methods is None or m.name in a.methods]
    if a.estimate:
        estimate(settings, methods, table)
        return 0
    suffix = "-quick" if a.quick else ""
    out = Path(a.out if a.out is not None else ("runs/quality_vs_ddpm-quick" if a.quick else "docs"))
    runs = Path(a.runs if a.runs is not None else f"runs/quality_vs_ddpm{suffix}")
    figs = out / "figures"
    try:  # check the output paths before hours of work
        figs.mkdir(parents=True, exist_ok=True)
        runs.mkdir(parents=True, exist_ok=True)
        for d in (figs, runs):
            probe = d / ".write-test"
            probe.write_text("")
            probe.unlink()
    except OSError as err:
        print(f"error: cannot write to the output folders ({err})", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    log = lambda s: print(s, flush=True)  # noqa: E731
    try:
        results = run_study(settings, methods, runs, table, overwrite=a.overwrite, log=log, train_only=a.train_only)
    except StudyError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if a.train_only:
        print(f"trained and cached every run in {runs} in {time.perf_counter() - t0:.0f} s")
        return 0
    results["seconds"] = time.perf_counter() - t0
    command = "python benchmarks/quality_vs_ddpm.py " + " ".join(argv if argv is not None else sys.argv[1:])
    results["command"] = command.strip()
    from kinetic.fileio import atomic_write_text

    tables = to_markdown(results)
    atomic_write_text(figs / "quality_vs_ddpm.json", json.dumps(_jsonable(results), indent=1))
    atomic_write_text(figs / "quality_vs_ddpm_tables.md", tables)
    plot_fd_vs_nfe(results, figs / "quality_vs_ddpm.png")
    plot_sample_grids(results, runs, figs / "quality_vs_ddpm_samples.png")
    atomic_write_text(out / "quality_vs_ddpm_study.md", study_fragment(results, tables, command.strip()))
    print(tables)
    print(f"wrote {figs}/quality_vs_ddpm.{{json,png}}, quality_vs_ddpm_tables.md, quality_vs_ddpm_samples.png and "
          f"{out}/quality_vs_ddpm_study.md in {results['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
