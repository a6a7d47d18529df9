"""Does order pay? kinetic's orders against diffusers' DDPM recipe at equal budget, 3 training seeds.

    python benchmarks/order_study.py --estimate                       # time a few steps; print the cost
    python benchmarks/order_study.py --run hold --seed 0 --steps 600  # one run: train (or resume), sample, record
    python benchmarks/order_study.py --plan                           # the runs, in order, and which are recorded
    python benchmarks/order_study.py --report                         # tables, intervals and figure from the records

One run is (method, training seed, budget). It trains, or resumes from the cached state of a
shorter budget of the same method and seed (the 600-step model is the step-600 state of the 3000-step
run: the learning rate is constant after warm-up), samples every cell, and writes its record, results
only, to ``docs/figures/order_study/<method>-s<seed>-<steps>.json``. Weights stay in ``--runs`` (default
runs/order_study). A study can therefore stop between any two runs and go on from the records.

Methods (the small U-Net of `kinetic train`, the same data, batch, optimiser, EMA and seeds):

- ``ddpm``: the external baseline as diffusers documents it (train_unconditional example): UNet2DModel
  configured like kinetic's U-Net (`kinetic.models.diffusers_unet.unet2d_config`, the same parameter
  count), DDPMScheduler (1000 steps, linear betas, epsilon objective), AdamW, ``constant_with_warmup``,
  ``EMAModel``. Sampled with DPM-Solver++ (2M) and UniPC at every NFE and DDPMScheduler's 1000 steps on
  n = 250. The same EMA network is also saved as a diffusers folder and sampled through
  `kinetic.load_diffusers` under VP, CLD and HOLD with `kinetic.sample`'s defaults (rows ``ddpm-net@vp``...).
- ``vp``, ``cld``, ``hold``: `kinetic.TrainConfig`'s defaults for that SDE, through `kinetic.training.Trainer`.
- ``cld-den``, ``hold-den``: the same with ``parameterization="denoiser"`` (the network sees only the
  GLS estimate y_t, VP's input channels; docs/math.md, "One denoiser for every SDE").

kinetic methods sample with `kinetic.sample`'s defaults (``ei``, its default grid) at NFE 5, 10, 20, 50.
Every cell is sampled with 2 sampling seeds; sampling seed s draws the prior from seed 10_000 + s and
scores against the real split s: fd-digits of n = 1000 samples, clamped to [-1, 1], against the other
797 digits, the floor being the 1000 real digits of that split against the same 797 (for n = 250: the
other 1547). The raw out-of-range share and the unclamped fd-digits are recorded too.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from kinetic.config import TrainConfig
from kinetic.data import load_dataset
from kinetic.fileio import atomic_write, atomic_write_text
from kinetic.metrics import fd_digits, out_of_range_fraction

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the DDPM study beside this script shares its baseline pieces
from quality_vs_ddpm import _jsonable, real_split, sample_diffusers  # noqa: E402

DATA_SHAPE = (1, 8, 8)
N_DIGITS = 1797
RECORD_FORMAT = 1
ROOT = Path(__file__).resolve().parents[1]
RECORDS = ROOT / "docs" / "figures" / "order_study"


class StudyError(ValueError):
    """The study cannot run as asked (the message says why)."""


# ---------------------------------------------------------------------- protocol
@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "ddpm" or "kinetic"
    sde: str | None = None
    parameterization: str | None = None  # None: TrainConfig's default


METHODS = [
    Method("ddpm", "ddpm"),
    Method("vp", "kinetic", "vp"),
    Method("cld", "kinetic", "cld"),
    Method("hold", "kinetic", "hold"),
    Method("cld-den", "kinetic", "cld", "denoiser"),
    Method("hold-den", "kinetic", "hold", "denoiser"),
]
BY_NAME = {m.name: m for m in METHODS}
CROSS_SDES = ("vp", "cld", "hold")  # the DDPM-trained network sampled under these


@dataclass
class Protocol:
    seeds: tuple[int, ...] = (0, 1, 2)
    budgets: tuple[int, ...] = (600, 3000)
    long_methods: tuple[str, ...] = ("vp", "hold", "ddpm")  # trained to the long budget, in the cut order reversed
    nfes: tuple[int, ...] = (5, 10, 20, 50)
    sample_seeds: tuple[int, ...] = (0, 1)
    n: int = 1000
    ddpm_steps: int = 1000
    ddpm_n: int = 250
    size: str = "small"
    device: str = "cpu"

    @classmethod
    def quick(cls) -> "Protocol":
        """A few minutes: tiny networks, 4 / 8 steps, n = 100, NFE 5 and 10."""
        return cls(seeds=(0,), budgets=(4, 8), nfes=(5, 10), sample_seeds=(0,), n=100, ddpm_steps=20, ddpm_n=50,
                   size="tiny")

    def runs(self) -> list[tuple[str, int, int]]:
        """Every (method, seed, steps) in the order they are best run: the default budget for every
        method and seed first (seed by seed), then the long budget method by method, VP and HOLD before
        the baseline (the order question needs them; the baseline's long runs cost about three times
        as much, and the protocol cuts them first)."""
        out = [(m.name, s, self.budgets[0]) for s in self.seeds for m in METHODS]
        for steps in self.budgets[1:]:
            out += [(name, s, steps) for name in self.long_methods for s in self.seeds]
        return out

    def cells(self, method: Method) -> list[tuple[str, int, int]]:
        """(sampler label, NFE, n) sampled for one run of ``method`` (each with every sampling seed)."""
        if method.kind == "ddpm":
            out = [(f"diffusers/{s}", nfe, self.n) for s in ("dpmsolver++", "unipc") for nfe in self.nfes]
            out.append(("diffusers/ddpm", self.ddpm_steps, self.ddpm_n))
            out += [(f"kinetic@{sde}", nfe, self.n) for sde in CROSS_SDES for nfe in self.nfes]
            return out
        return [("kinetic", nfe, self.n) for nfe in self.nfes]


def train_config(method: Method, p: Protocol, seed: int, steps: int) -> TrainConfig:
    """The TrainConfig of a kinetic run: the defaults, the study's size and seed, nothing written."""
    kw = {} if method.parameterization is None else {"parameterization": method.parameterization}
    return TrainConfig(sde=method.sde, data="digits", model="unet", model_size=p.size, steps=max(p.budgets),
                       seed=int(seed), device=p.device, amp=False, sample_every=0, ckpt_every=0, n_samples=0, **kw)


# ---------------------------------------------------------------------- data and metric
def score(samples: torch.Tensor, reference: torch.Tensor) -> dict[str, float | None]:
    """fd-digits of the clamped samples (the study's number), of the raw ones, and the raw share outside [-1, 1]."""
    x = samples.detach().float().cpu()
    if not bool(torch.isfinite(x).all()):
        return {"fd": None, "fd_raw": None, "out_of_range": None, "error": "non-finite samples"}
    return {"fd": fd_digits(x, reference), "fd_raw": fd_digits(x, reference, clamp=False),
            "out_of_range": out_of_range_fraction(x)}


# ---------------------------------------------------------------------- the baseline
class DDPMRun:
    """The diffusers recipe, resumable: data order and noise are drawn from per-epoch and per-step seeds,
    so a run resumed from its state at step s continues exactly as the uninterrupted run."""

    def __init__(self, p: Protocol, seed: int):
        from diffusers import DDPMScheduler, UNet2DModel
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        from kinetic.models.diffusers_unet import unet2d_config

        tc = TrainConfig()
        self.tc, self.seed, self.device = tc, int(seed), torch.device(p.device)
        torch.manual_seed(self.seed)
        self.unet = UNet2DModel(**unet2d_config(DATA_SHAPE, 1, p.size)).to(self.device).train()
        self.scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", prediction_type="epsilon")
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
        self.lr_sched = get_scheduler("constant_with_warmup", optimizer=self.opt, num_warmup_steps=tc.warmup)
        self.ema = EMAModel(self.unet.parameters(), decay=tc.ema_decay)
        self.data = load_dataset("digits", split="train")
        self.step_count = 0

    def step(self) -> float:
        tc, n = self.tc, self.data.shape[0]
        per_epoch = n // tc.batch_size
        epoch, pos = divmod(self.step_count, per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        clean = self.data[perm[pos * tc.batch_size:(pos + 1) * tc.batch_size]].to(self.device)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.step_count + 1)
        noise = torch.randn(clean.shape, generator=gen).to(self.device)
        timesteps = torch.randint(0, 1000, (clean.shape[0],), generator=gen).to(self.device)
        pred = self.unet(self.scheduler.add_noise(clean, noise, timesteps), timesteps).sample
        loss = F.mse_loss(pred.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.unet.parameters(), tc.grad_clip)
        self.opt.step()
        self.lr_sched.step()
        self.opt.zero_grad(set_to_none=True)
        self.ema.step(self.unet.parameters())
        self.step_count += 1
        return float(loss.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "model": self.unet.state_dict(), "optimizer": self.opt.state_dict(),
                "lr_scheduler": self.lr_sched.state_dict(), "ema": self.ema.state_dict()}

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.unet.load_state_dict(st["model"])
        self.opt.load_state_dict(st["optimizer"])
        self.lr_sched.load_state_dict(st["lr_scheduler"])
        self.ema.load_state_dict(st["ema"])
        self.step_count = int(st["step"])

    def ema_unet(self):
        net = copy.deepcopy(self.unet).eval()
        self.ema.copy_to(net.parameters())
        return net

    def save_pretrained(self, folder: Path) -> Path:
        """The EMA network and the scheduler as a diffusers folder (what `kinetic.load_diffusers` reads)."""
        self.ema_unet().save_pretrained(folder)
        self.scheduler.save_pretrained(folder)
        return folder


class KineticRun:
    """kinetic's Trainer for one method and seed, with the same state interface as `DDPMRun`."""

    def __init__(self, method: Method, p: Protocol, seed: int):
        from kinetic.training import Trainer

        self.trainer = Trainer.from_config(train_config(method, p, seed, max(p.budgets)))

    @property
    def step_count(self) -> int:
        return self.trainer.step_count

    def step(self) -> float:
        return float(self.trainer.step()["loss"])

    def state_dict(self) -> dict[str, Any]:
        return self.trainer.state_dict()

    def load_state_dict(self, st: dict[str, Any]) -> None:
        self.trainer.load_state_dict(st)

    def params(self) -> int:
        return sum(q.numel() for q in self.trainer.net.parameters())


# ---------------------------------------------------------------------- sampling
@torch.no_grad()
def sample_kinetic(sde, model, nfe: int, n: int, seed: int, device, **solver_options) -> tuple[torch.Tensor, int]:
    """n raw samples with `kinetic.sample`'s defaults (but ``solver_options``) at ``nfe`` steps; (x, NFE)."""
    import kinetic as kn

    gen = torch.Generator(device=device).manual_seed(seed)
    z, used = kn.sample(sde, model, (n, *DATA_SHAPE), steps=nfe, generator=gen, return_state=True, device=device,
                        **solver_options)
    return z[:, 0].float().cpu(), int(used)


def samplers_of(method: Method, run, p: Protocol, folder: Path) -> dict[str, Callable[[int, int, int], tuple]]:
    """label -> draw(nfe, n, seed) for one trained run."""
    import kinetic as kn

    device = torch.device(p.device)
    if method.kind == "ddpm":
        unet = run.ema_unet()
        out = {f"diffusers/{s}": (lambda nfe, n, seed, s=s: sample_diffusers(unet, s, nfe, n, seed, device))
               for s in ("dpmsolver++", "unipc", "ddpm")}
        den = kn.load_diffusers(run.save_pretrained(folder), device=device)
        for name in CROSS_SDES:
            sde = kn.preset(name)
            out[f"kinetic@{name}"] = lambda nfe, n, seed, sde=sde: sample_kinetic(sde, den, nfe, n, seed, device)
        return out
    model = run.trainer.ema_score_model()
    return {"kinetic": lambda nfe, n, seed: sample_kinetic(model.sde, model, nfe, n, seed, device)}


# ---------------------------------------------------------------------- one run
def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def machine() -> dict[str, Any]:
    import diffusers

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "diffusers": diffusers.__version__, "python": platform.python_version()}


def record_path(records: Path, name: str, seed: int, steps: int) -> Path:
    return records / f"{name}-s{seed}-{steps}.json"


def resample(name: str, seed: int, steps: int, p: Protocol, runs: Path, records: Path, prefix: str,
             log: Callable[[str], None] = print) -> dict[str, Any]:
    """Sample again the cells whose label starts with ``prefix`` of a recorded run, from its saved state
    (no training), after a fix in the code they run; the record keeps its other cells and notes the commit."""
    path = record_path(records, name, seed, steps)
    state_file = runs / f"{name}-s{seed}" / f"state-{steps}.pt"
    if not path.is_file() or not state_file.is_file():
        raise StudyError(f"--resample needs the record {path} and the saved state {state_file}")
    rec = json.loads(path.read_text())
    method = BY_NAME[name]
    run = DDPMRun(p, seed) if method.kind == "ddpm" else KineticRun(method, p, seed)
    run.load_state_dict(torch.load(state_file, map_location="cpu", weights_only=False)["state"])
    draws = samplers_of(method, run, p, runs / f"{name}-s{seed}" / f"diffusers-{steps}")
    cells = [c for c in p.cells(method) if c[0].startswith(prefix)]
    if not cells:
        raise StudyError(f"--resample {prefix!r}: no cell of {name} has a label starting so; labels: "
                         f"{', '.join(sorted({c[0] for c in p.cells(method)}))}")
    rec["evals"].update(sample_cells(draws, cells, p, {}, name, seed, steps, log))
    rec.setdefault("resampled", []).append({"prefix": prefix, "commit": _git_commit()})
    atomic_write_text(path, json.dumps(_jsonable(rec), indent=1))
    return rec


def sample_cells(draws: dict, cells: list, p: Protocol, floors: dict, name: str, seed: int, steps: int,
                 log: Callable[[str], None], splits: dict | None = None) -> dict[str, Any]:
    """Sample (label, NFE, n) cells with every sampling seed and score them; fills ``floors`` and the
    ``splits`` cache ((n, sampling seed) -> reference), so a caller looping over cells splits once."""
    evals: dict[str, Any] = {}
    splits = {} if splits is None else splits
    for label, nfe, n in cells:
        for s in p.sample_seeds:
            if (n, s) not in splits:
                floor_set, splits[(n, s)] = real_split(n, s)
                floors[f"{n}|{s}"] = fd_digits(floor_set, splits[(n, s)])
            t1 = time.perf_counter()
            try:
                x, used = draws[label](nfe, n, 10_000 + s)
                res = score(x, splits[(n, s)])
            except (ValueError, RuntimeError) as err:  # a sampler that fails is a result, recorded
                res, used = {"fd": None, "error": f"{type(err).__name__}: {err}"}, nfe
            res.update({"nfe": used, "n": n, "seconds": time.perf_counter() - t1})
            evals[f"{label}|{nfe}|{s}"] = res
            fd = res.get("fd")
            log(f"  {name} seed {seed} {steps} steps, {label} NFE {used} sampling seed {s}: fd-digits "
                + (f"{fd:.4g}" if fd is not None else "failed") + f" ({res['seconds']:.0f} s)")
    return evals


def run_one(name: str, seed: int, steps: int, p: Protocol, runs: Path, records: Path,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or resume) one run to ``steps``, sample its cells, write and return its record."""
    method = BY_NAME[name]
    folder = runs / f"{name}-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    run = DDPMRun(p, seed) if method.kind == "ddpm" else KineticRun(method, p, seed)
    earlier = sorted(b for b in p.budgets if b < steps and (folder / f"state-{b}.pt").is_file())
    resumed_from, train_s_before = 0, 0.0
    if (folder / f"state-{steps}.pt").is_file():  # trained by a call that stopped while sampling
        st = torch.load(folder / f"state-{steps}.pt", map_location="cpu", weights_only=False)
        if st.get("losses") is not None:
            return _sample_and_record(run, st, method, name, seed, steps, p, folder, records, t_start, log)
    if earlier:
        st = torch.load(folder / f"state-{earlier[-1]}.pt", map_location="cpu", weights_only=False)
        run.load_state_dict(st["state"])
        resumed_from, train_s_before = earlier[-1], float(st["train_seconds"])
        log(f"{name} seed {seed}: resumed from step {resumed_from}")
    losses: list[float] = []
    t0 = time.perf_counter()
    while run.step_count < steps:
        losses.append(run.step())
        if run.step_count % max(1, steps // 10) == 0 or run.step_count == steps:
            recent = losses[-20:]
            log(f"  train {name} seed {seed}: step {run.step_count}/{steps}, {time.perf_counter() - t0:.0f} s, "
                f"loss {sum(recent) / len(recent):.4g}")
    train_s = time.perf_counter() - t0
    state = {"state": run.state_dict(), "train_seconds": train_s_before + train_s, "this_call": train_s,
             "resumed_from": resumed_from, "losses": losses}
    atomic_write(folder / f"state-{steps}.pt", lambda tmp: torch.save(state, tmp))
    return _sample_and_record(run, state, method, name, seed, steps, p, folder, records, t_start, log)


def _sample_and_record(run, state: dict, method: Method, name: str, seed: int, steps: int, p: Protocol, folder: Path,
                       records: Path, t_start: float, log: Callable[[str], None]) -> dict[str, Any]:
    """Sample a trained run's cells (those already sampled by a call that stopped are kept, in
    ``partial-<steps>.json``) and write its record."""
    if run.step_count != steps:
        run.load_state_dict(state["state"])
    draws = samplers_of(method, run, p, folder / f"diffusers-{steps}")
    partial = folder / f"partial-{steps}.json"
    done = json.loads(partial.read_text()) if partial.is_file() else {"evals": {}, "floor": {}}
    floors: dict[str, float] = done["floor"]
    evals: dict[str, Any] = done["evals"]
    splits: dict[tuple[int, int], torch.Tensor] = {}
    for cell in p.cells(method):
        if all(f"{cell[0]}|{cell[1]}|{s}" in evals for s in p.sample_seeds):
            continue
        evals.update(sample_cells(draws, [cell], p, floors, name, seed, steps, log, splits))
        atomic_write_text(partial, json.dumps(_jsonable({"evals": evals, "floor": floors})))
    params = sum(q.numel() for q in (run.unet if method.kind == "ddpm" else run.trainer.net).parameters())
    losses, train_s, resumed_from = state["losses"], state["this_call"], state["resumed_from"]
    rec = {"format": RECORD_FORMAT, "method": name, "seed": seed, "steps": steps,
           "protocol": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(p).items()},
           "train": {"seconds": state["train_seconds"], "seconds_this_call": train_s, "resumed_from": resumed_from,
                     "seconds_per_step": train_s / max(1, steps - resumed_from), "params": params,
                     "loss": [sum(losses[i:i + 20]) / len(losses[i:i + 20]) for i in range(0, len(losses), 20)]},
           "floor": floors, "evals": evals, "seconds": time.perf_counter() - t_start, "machine": machine(),
           "kinetic_commit": _git_commit(),
           "command": f"python benchmarks/order_study.py --run {name} --seed {seed} --steps {steps}"}
    records.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record_path(records, name, seed, steps), json.dumps(_jsonable(rec), indent=1))
    partial.unlink(missing_ok=True)
    return rec


# ---------------------------------------------------------------------- estimate
def estimate(p: Protocol, log: Callable[[str], None] = print, steps: int = 3) -> dict[str, Any]:
    """Time ``steps`` training steps and a 2-step sample of every method; the whole protocol's cost."""
    out: dict[str, Any] = {}
    total = 0.0
    for method in METHODS:
        run = DDPMRun(p, 0) if method.kind == "ddpm" else KineticRun(method, p, 0)
        run.step()
        t0 = time.perf_counter()
        for _ in range(steps):
            run.step()
        step_s = (time.perf_counter() - t0) / steps
        draws = samplers_of(method, run, p, Path(os.environ.get("TMPDIR", "/tmp")) / f"order-study-est-{os.getpid()}")
        nfe_s = {}
        for label in draws:
            t0 = time.perf_counter()
            draws[label](2, p.n, 0)
            nfe_s[label] = (time.perf_counter() - t0) / 2
        max_steps = max(p.budgets) if (method.name in p.long_methods) else p.budgets[0]
        sample_s = sum(len(p.sample_seeds) * nfe * n / p.n * nfe_s[label] for label, nfe, n in p.cells(method))
        budgets = [b for b in p.budgets if b == p.budgets[0] or method.name in p.long_methods]
        secs = len(p.seeds) * (max_steps * step_s + len(budgets) * sample_s)
        total += secs
        out[method.name] = {"seconds_per_step": step_s, "seconds_per_nfe": nfe_s, "seconds": secs}
        log(f"{method.name}: {step_s:.3f} s/step, " + ", ".join(f"{k} {v:.3f}" for k, v in nfe_s.items())
            + f" s/NFE at n = {p.n} -> {secs / 3600:.2f} h")
    out["total_seconds"] = total
    log(f"total: {total / 3600:.1f} h of one thread, {total / 7200:.1f} h of wall time on two processes")
    return out


def _marker(runs: Path, name: str, seed: int, steps: int) -> Path:
    return runs / f"{name}-s{seed}" / f"running-{steps}"


def _claim(runs: Path, name: str, seed: int, steps: int) -> bool:
    """Claim a run for this process (an exclusive marker file holding its pid); a marker left by a
    process that no longer lives is taken over. False when another live process holds it."""
    marker = _marker(runs, name, seed, steps)
    marker.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            try:
                os.kill(int(marker.read_text() or "0"), 0)
                return False
            except (ValueError, ProcessLookupError, FileNotFoundError):
                marker.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except PermissionError:
                return False
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        return True
    return False


# ---------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--run", choices=list(BY_NAME), help="train and sample this method (with --seed and --steps)")
    ap.add_argument("--seed", type=int, default=None, help="training seed of --run")
    ap.add_argument("--steps", type=int, default=None, help="training steps of --run (one of the budgets)")
    ap.add_argument("--next", action="store_true", help="run the first run of the plan with no record (and no lock)")
    ap.add_argument("--plan", action="store_true", help="print the runs in order and whether each is recorded")
    ap.add_argument("--estimate", action="store_true", help="time a few steps and samples; print the cost")
    ap.add_argument("--report", action="store_true", help="tables, intervals and figure from the records")
    ap.add_argument("--quick", action="store_true", help="tiny networks and budgets: the pipeline in minutes")
    ap.add_argument("--records", default=None, help=f"record folder (default {RECORDS.relative_to(ROOT)})")
    ap.add_argument("--runs", default=None, help="weights cache (default runs/order_study)")
    ap.add_argument("--resample", default=None, metavar="PREFIX",
                    help="with --run/--seed/--steps: sample again the recorded cells whose label starts with PREFIX "
                         "(e.g. kinetic@) from the saved state, after a fix")
    ap.add_argument("--out", default=None, help="--report's output folder (default docs; it writes under figures/)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    p = Protocol.quick() if a.quick else Protocol()
    records = Path(a.records) if a.records else RECORDS
    runs = Path(a.runs) if a.runs else ROOT / "runs" / ("order_study-quick" if a.quick else "order_study")
    if a.threads < 1 or a.threads > (os.cpu_count() or 1):
        print(f"error: --threads must lie in [1, {os.cpu_count()}], got {a.threads}", file=sys.stderr)
        return 2
    torch.set_num_threads(a.threads)
    log = lambda s: print(s, flush=True)  # noqa: E731
    if a.estimate:
        estimate(p, log)
        return 0
    if a.plan:
        for name, seed, steps in p.runs():
            done = record_path(records, name, seed, steps).is_file()
            print(f"{'done' if done else 'todo'}  --run {name} --seed {seed} --steps {steps}")
        return 0
    if a.report:
        from order_study_report import report  # benchmarks/order_study_report.py

        print(report(records, p, Path(a.out) if a.out else ROOT / "docs"))
        return 0
    if a.next:
        claimed = next((r for r in p.runs() if not record_path(records, *r).is_file() and _claim(runs, *r)), None)
        if claimed is None:
            print("every run of the plan is recorded or running")
            return 0
        name, seed, steps = claimed
    elif a.run:
        if a.seed is None or a.steps is None:
            print("error: --run needs --seed and --steps", file=sys.stderr)
            return 2
        name, seed, steps = a.run, a.seed, a.steps
    else:
        ap.print_help()
        return 2
    if steps not in p.budgets or (steps != p.budgets[0] and name not in p.long_methods):
        print(f"error: --steps {steps} is not a budget of {name} (budgets {list(p.budgets)}; the long one only for "
              f"{', '.join(p.long_methods)})", file=sys.stderr)
        return 2
    if a.resample is not None:
        try:
            resample(name, seed, steps, p, runs, records, a.resample, log)
        except StudyError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        print(f"resampled {a.resample}* of {record_path(records, name, seed, steps)}")
        return 0
    if not a.next and not _claim(runs, name, seed, steps):
        print(f"error: {name} seed {seed} at {steps} steps is running in another process", file=sys.stderr)
        return 2
    marker = _marker(runs, name, seed, steps)
    try:
        rec = run_one(name, seed, steps, p, runs, records, log)
    finally:
        marker.unlink(missing_ok=True)
    print(f"wrote {record_path(records, name, seed, steps)} ({rec['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
