"""Everything a short GPU session should measure, in one run: correctness on the device, host syncs, speed, memory.

GPU time is scarce (minutes), so this script is prepared and tested on the CPU and does the whole job
in one call (under 8 minutes on an H100 with the defaults):

1. correctness on ``--device`` against the CPU: `sde.marginal`, `sde.perturb` (z = c x0 + L eps with
   the CPU's float64 coefficients), `kinetic.sample` (output on the device, finite, in the asked dtype),
   the seed-to-sample match (the same float32 prior draw and noise, drawn on the CPU, through every
   fixed-grid solver on both devices, within float32 tolerance), `kinetic.log_likelihood` of an exact
   Gaussian score against the CPU and the exact density, and a training step (`kinetic.DSMLoss` + U-Net
   + AdamW) on device tensors: the network's output matches the CPU's, the loss and gradients are finite;
2. host syncs: every fixed-grid solver (em, pc, sscs, lie_trotter, ei, gls) on VP, CLD, HOLD, PSLD
   (where it runs) under ``torch.cuda.set_sync_debug_mode("error")`` from the first score evaluation's
   return to the last step's callback; the network score is paused ("loop") and then included
   ("loop + network"). Off CUDA the same runs happen without the mode (reported "not checked");
3. training images/s with bf16 autocast on the ``cifar`` U-Net, synthetic 32x32x3 data, batch 128, for
   VP, CLD and HOLD, eager and with ``torch.compile``; the loss, network and optimiser are called
   directly (x0 parameterisation, EDM weighting, log-normal times, AdamW, grad clipping); peak memory;
4. sampling images/s at 20 and 50 NFE, batch 256, for ei, gls, sscs and em on VP and HOLD (the
   cifar U-Net under bf16 autocast, float32 state); peak memory;
5. the sampler's own cost per step (the same run with a free score: a fixed tensor) as a share of
   one network evaluation at the same batch;
6. the k x k kernels (`sde.transition`, `sde.covariance`, `sde.coefficients`) for 10^6 times in
   float64 on the CPU and on the device, with the largest relative difference.

Targets: HOLD / VP time per training step <= 1.15; sampler overhead < 5% of a network evaluation.

    python benchmarks/gpu.py [--device cuda] [--out docs/figures] [--no-compile] [--budget-s 450]
        [--sections correctness,sync,training,sampling,kernels,training_compiled] [--threads 1]
    python benchmarks/gpu.py --device cpu --quick --out /tmp/gpu      # tiny sizes, end to end, < 1 min

Writes ``gpu.json`` and ``gpu.md`` into ``--out`` after every section (a session cut short keeps what it
measured). A section that fails records its error and the rest still runs; the compiled training rows
run last and are skipped when less than `COMPILE_RESERVE_S` of ``--budget-s`` is left. Downloads nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import time
import traceback
from pathlib import Path

import torch

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.bench.report import command_line, machine_info, machine_line, md_table, parse, write_outputs
from kinetic.models.unet import UNet
from kinetic.sampling import default_grid
from kinetic.solvers import SOLVERS, FixedGridSolver, get_solver

SDES = {"vp": kn.vp, "cld": kn.cld, "hold": kn.hold, "psld": kn.psld}
TRAIN_SDES = ("vp", "cld", "hold")
SAMPLE_SDES = ("vp", "hold")
SAMPLERS = ("ei", "gls", "sscs", "em")
TARGETS = {"hold_over_vp_train": 1.15, "sampler_overhead": 0.05}
COMPILE_RESERVE_S = 90.0
"""A compiled training row starts only with this much of ``--budget-s`` left (compiling the cifar U-Net
with inductor takes about a minute)."""

FULL = dict(net="cifar", res=32, train_batch=128, train_warmup=5, train_steps=20, sample_batch=256, nfes=(20, 50),
            overhead_steps=50, kernel_times=1_000_000, check_n=64, sync_steps=4, compile_backend="inductor",
            compile_sdes=TRAIN_SDES)
QUICK = dict(net="tiny", res=8, train_batch=2, train_warmup=1, train_steps=1, sample_batch=2, nfes=(2, 3),
             overhead_steps=4, kernel_times=10_000, check_n=16, sync_steps=3, compile_backend="eager",
             compile_sdes=("vp",))
"""The sizes of a run: FULL (an H100 in under 8 minutes) and QUICK (``--quick``: the CPU smoke run; the
compiled row for VP only, with the "eager" backend of torch.compile, which needs no C++ compiler)."""


# ------------------------------------------------------------------ helpers
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _timed(fn, dev: torch.device) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    fn()
    _sync(dev)
    return time.perf_counter() - t0


def _reset_peak(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def _peak_mib(dev: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None


def _autocast(dev: torch.device):
    return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)


def _error(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"


def _section(res: dict, name: str, fn, log) -> None:
    """Run one section into res[name]; an exception is recorded (with its last frames) and the run goes on."""
    t0 = time.perf_counter()
    try:
        res[name] = fn()
    except Exception as err:  # a failing section must not cost the rest of a scarce GPU session
        res[name] = {"error": _error(err), "trace": traceback.format_exc(limit=6)}
    res.setdefault("seconds", {})[name] = time.perf_counter() - t0
    log(f"{name}: {res['seconds'][name]:.1f} s" + (f" ERROR {res[name]['error']}" if "error" in res[name] else ""))


def fixed_grid_solvers() -> list[str]:
    return [name for name, cls in SOLVERS.items() if issubclass(cls, FixedGridSolver)]


def _runs(sde, solver: str, steps: int) -> bool:
    slv = get_solver(solver)
    try:
        slv.check(sde, kn.time_grid(sde, steps, 1e-3, default_grid(slv)))
    except ValueError:
        return False
    return True


def _network(sde, cfg: dict, dev: torch.device, seed: int = 0, randomise_out: bool = True) -> kn.ScoreModel:
    """The U-Net preset cfg["net"] for 3-channel images of the state's k blocks, x0 parameterisation.
    The zero-initialised output layer gets small random weights so the score depends on the input."""
    torch.manual_seed(seed)
    net = UNet.from_preset(cfg["net"], in_channels=3 * sde.order, out_channels=3, resolution=cfg["res"])
    if randomise_out:
        with torch.no_grad():
            net.conv_out.weight.normal_(0, 1e-2)
    return kn.ScoreModel(net.to(dev), sde, "x0")


@contextlib.contextmanager
def _no_tf32():
    """Full float32 matmuls and convolutions (cuDNN uses TF32 by default) for a comparison with the CPU."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| over the largest |b| (float64, on the CPU)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


# ------------------------------------------------------------------ 1. correctness
def correctness(dev: torch.device, cfg: dict) -> dict:
    """Each check group on ``dev`` against the CPU (see the module); a group that raises is recorded under its
    name and the others still run."""
    cpu = torch.device("cpu")
    out: dict = {}
    n = cfg["check_n"]
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 3, 4, 4, generator=g)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.99 + 1e-3

    def marginal_perturb():  # marginal and perturb for every preset
        for name in SDES:
            sde = SDES[name]()
            m_c, S_c = sde.marginal(x0, t)
            m_d, S_d = sde.marginal(x0.to(dev), t.to(dev))
            co = sde.coefficients(t)
            z_d, eps_d = sde.perturb(x0.to(dev), t.to(dev))
            recon = co.c.float()[:, :, None] * x0.reshape(n, 1, -1) + torch.bmm(co.chol.float(), eps_d.cpu().reshape(n, sde.order, -1))
            out[f"marginal_{name}"] = {"mean": _close(m_d, m_c), "cov": _close(S_d, S_c), "tol": 1e-6,
                                       "device": str(m_d.device), "cov_dtype": str(S_d.dtype)}
            out[f"perturb_{name}"] = {"identity": _close(z_d.reshape(n, sde.order, -1), recon), "tol": 1e-5,
                                      "device": str(z_d.device), "dtype": str(z_d.dtype)}

    mix = GaussianMixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [0.3, 0.3])

    def sample():  # sample: on the device, in the asked dtype, finite, near the data law's mean
        for name in ("vp", "hold"):
            sde = SDES[name]()
            gen = torch.Generator(device=dev).manual_seed(0)
            x = kn.sample(sde, mix.score_fn(sde), (4 * n, 2), steps=10, dtype=torch.float32, device=dev, generator=gen)
            out[f"sample_{name}"] = {"device": str(x.device), "dtype": str(x.dtype), "finite": bool(torch.isfinite(x).all()),
                                     "mean_error": float((x.double().mean(0).cpu() - torch.tensor([0.0, 0.25], dtype=torch.float64)).abs().max()),
                                     "tol": 6.0 / math.sqrt(4 * n)}

    def seed_match():  # seed-to-sample: the same float32 prior draw and noise on both devices, every fixed-grid solver
        for name in ("vp", "hold"):
            sde = SDES[name]()
            score = mix.score_fn(sde)
            for solver in fixed_grid_solvers():
                if not _runs(sde, solver, 8):
                    continue
                res = {}
                for key, d in (("cpu", cpu), ("dev", dev)):
                    slv = get_solver(solver)
                    z0 = sde.prior_sample((n, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float32)
                    ng = torch.Generator().manual_seed(2)
                    noise = lambda shape, dtype, device, ng=ng: torch.randn(shape, generator=ng, dtype=dtype).to(device)
                    ts = kn.time_grid(sde, 8, 1e-3, default_grid(slv))
                    res[key], _ = slv.run(sde, score, z0.to(d), ts, noise_sampler=noise)
                out[f"seed_match_{name}_{solver}"] = {"rel": _close(res["dev"], res["cpu"]), "tol": 1e-4,
                                                      "dtype": str(res["dev"].dtype)}

    def log_likelihood():  # log-likelihood of an exact Gaussian score: device against the CPU and the exact density
        data = GaussianData(torch.tensor([0.3, -0.2], dtype=torch.float64), torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64))
        x = data.sample(8, generator=torch.Generator().manual_seed(3))
        sde = kn.vp()
        ll_c = kn.log_likelihood(sde, data.score_fn(sde), x)
        ll_d = kn.log_likelihood(sde, data.score_fn(sde), x.to(dev))
        exact = data.log_prob(x)
        out["log_likelihood_vp"] = {"device_vs_cpu": float((ll_d.cpu() - ll_c).abs().max()),
                                    "vs_exact": float((ll_d.cpu() - exact).abs().max()), "tol_cpu": 1e-3, "tol_exact": 0.05,
                                    "device": str(ll_d.device)}

    def train_step():  # a training step on device tensors: network output matches the CPU's; loss and gradients finite
        for name in ("vp", "hold"):
            sde = SDES[name]()
            tiny = dict(cfg, net="tiny", res=8)
            m_cpu = _network(sde, tiny, cpu)
            m_dev = _network(sde, tiny, dev)
            z = torch.randn(4, sde.order, 3, 8, 8, generator=torch.Generator().manual_seed(4))
            tt = torch.full((4,), 0.3, dtype=torch.float64)
            with torch.no_grad(), _no_tf32():
                e_c = m_cpu(z, tt)
                e_d = m_dev(z.to(dev), tt.to(dev))
            loss_fn = kn.DSMLoss(sde, "x0", "edm", time_sampling="lognormal")
            opt = torch.optim.AdamW(m_dev.parameters(), lr=1e-3)
            before = [p.detach().clone() for p in m_dev.parameters()]
            xb = torch.randn(4, 3, 8, 8, device=dev)
            loss = loss_fn(m_dev, xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grads_finite = all(bool(torch.isfinite(p.grad).all()) for p in m_dev.parameters() if p.grad is not None)
            opt.step()
            moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, m_dev.parameters()))
            out[f"train_step_{name}"] = {"network_rel": _close(e_d, e_c), "tol": 1e-4, "loss": float(loss.detach()),
                                         "loss_finite": math.isfinite(float(loss.detach())), "grads_finite": grads_finite,
                                         "params_moved": moved, "device": str(loss.device)}

    for check in (marginal_perturb, sample, seed_match, log_likelihood, train_step):
        try:
            check()
        except Exception as err:  # one failing check must not hide the others
            out[check.__name__] = {"error": _error(err), "trace": traceback.format_exc(limit=6)}
    return out


def check_failures(corr: dict) -> list[str]:
    """The names of the correctness checks outside their tolerance."""
    bad = []
    for key, r in corr.items():
        if key in ("error", "trace"):
            continue
        if "error" in r:
            ok = False
        elif key.startswith("marginal"):
            ok = r["mean"] <= r["tol"] and r["cov"] <= 1e-10
        elif key.startswith("perturb"):
            ok = r["identity"] <= r["tol"]
        elif key.startswith("sample"):
            ok = r["finite"] and r["mean_error"] <= r["tol"] and r["dtype"] == "torch.float32"
        elif key.startswith("seed_match"):
            ok = r["rel"] <= r["tol"]
        elif key.startswith("log_likelihood"):
            ok = r["device_vs_cpu"] <= r["tol_cpu"] and r["vs_exact"] <= r["tol_exact"]
        else:
            ok = r["network_rel"] <= r["tol"] and r["loss_finite"] and r["grads_finite"] and r["params_moved"]
        if not ok:
            bad.append(key)
    return bad


# ------------------------------------------------------------------ 2. host syncs
class _SyncWindow:
    """``torch.cuda.set_sync_debug_mode("error")`` from the first score return to the last step's
    callback (a no-op off CUDA); ``pause_score``: the mode is off inside the score call."""

    def __init__(self, dev: torch.device, score, steps: int, pause_score: bool):
        self.cuda = dev.type == "cuda"
        self.fn, self.steps, self.pause = score, steps, pause_score
        self.armed = False

    def _set(self, on: bool) -> None:
        self.armed = on
        if self.cuda:
            torch.cuda.set_sync_debug_mode("error" if on else 0)

    def score(self, z, t):
        if self.pause and self.armed:
            self._set(False)
            s = self.fn(z, t)
            self._set(True)
        else:
            s = self.fn(z, t)
        if not self.armed:
            self._set(True)
        return s

    def callback(self, info):
        if info["step"] == self.steps - 1:
            self._set(False)

    def close(self):
        self._set(False)


def sync_checks(dev: torch.device, cfg: dict) -> dict:
    rows = []
    steps = cfg["sync_steps"]
    small = dict(cfg, net="tiny", res=8)
    for name, make in SDES.items():
        sde = make()
        model = _network(sde, small, dev)
        for solver in fixed_grid_solvers():
            if not _runs(sde, solver, steps):
                continue
            row = {"sde": name, "solver": solver}
            for label, pause in (("loop", True), ("loop + network", False)):
                w = _SyncWindow(dev, model.score, steps, pause)
                try:
                    with torch.no_grad():
                        kn.sample(sde, w.score, (2, 3, 8, 8), solver=solver, steps=steps, callback=w.callback,
                                  dtype=torch.float32, device=dev)
                    row[label] = "sync-free" if dev.type == "cuda" else "not checked (no CUDA)"
                except Exception as err:  # the sync debug mode raises a RuntimeError naming the synchronising call
                    frames = [f for f in traceback.extract_tb(err.__traceback__) if "/kinetic/" in f.filename
                              or "/models/" in f.filename]
                    where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else "?"
                    kind = "SYNC" if "synchroniz" in str(err).lower() else "ERROR"
                    row[label] = f"{kind} at {where}: {_error(err)}"
                finally:
                    w.close()
            rows.append(row)
    return {"rows": rows, "steps": steps}


# ------------------------------------------------------------------ 3. training throughput
def _train_config(name: str, cfg: dict, dev: torch.device, compiled: bool) -> dict:
    sde = SDES[name]()
    torch.manual_seed(0)
    net = UNet.from_preset(cfg["net"], in_channels=3 * sde.order, out_channels=3, resolution=cfg["res"]).to(dev)
    fwd = torch.compile(net, backend=cfg["compile_backend"]) if compiled else net
    model = kn.ScoreModel(fwd, sde, "x0")
    loss_fn = kn.DSMLoss(sde, "x0", "edm", time_sampling="lognormal")
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4)
    x = torch.randn(cfg["train_batch"], 3, cfg["res"], cfg["res"], device=dev)
    losses = []

    def step():
        with _autocast(dev):
            loss = loss_fn(model, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.detach())

    first = _timed(step, dev)  # includes compilation
    for _ in range(cfg["train_warmup"] - 1):
        step()
    _reset_peak(dev)
    sec = _timed(lambda: [step() for _ in range(cfg["train_steps"])], dev) / cfg["train_steps"]
    return {"sde": name, "order": sde.order, "compiled": compiled, "ms_per_step": 1e3 * sec,
            "images_per_s": cfg["train_batch"] / sec, "first_step_s": first, "peak_mib": _peak_mib(dev),
            "loss_finite": bool(torch.isfinite(torch.stack(losses)).all()),
            "params": sum(p.numel() for p in net.parameters())}


def training(dev: torch.device, cfg: dict, compiled: bool) -> dict:
    """One row per SDE (eager: VP, CLD, HOLD; compiled: cfg["compile_sdes"]) and the time per step over VP's."""
    rows = []
    for name in cfg["compile_sdes"] if compiled else TRAIN_SDES:
        left = cfg.get("deadline", math.inf) - time.perf_counter()
        if compiled and left < COMPILE_RESERVE_S:
            rows.append({"sde": name, "compiled": compiled, "error": f"skipped: {left:.0f} s left of --budget-s"})
            continue
        try:
            rows.append(_train_config(name, cfg, dev, compiled))
        except Exception as err:
            rows.append({"sde": name, "compiled": compiled, "error": _error(err)})
    by = {r["sde"]: r for r in rows if "ms_per_step" in r}
    ratios = {s: by[s]["ms_per_step"] / by["vp"]["ms_per_step"] for s in by} if "vp" in by else {}
    return {"rows": rows, "time_over_vp": ratios, "batch": cfg["train_batch"], "net": cfg["net"], "res": cfg["res"],
            "compile_backend": cfg["compile_backend"] if compiled else None}


# ------------------------------------------------------------------ 4. sampling throughput, 5. overhead
def _score_under_autocast(model, dev):
    def score(z, t):
        with _autocast(dev):
            return model.score(z, t).float()

    return score


def sampling(dev: torch.device, cfg: dict) -> dict:
    rows, over = [], []
    b, res = cfg["sample_batch"], cfg["res"]
    shape = (b, 3, res, res)
    for name in SAMPLE_SDES:
        sde = SDES[name]()
        model = _network(sde, cfg, dev)
        score = _score_under_autocast(model, dev)
        with torch.no_grad():
            z = sde.prior_sample(shape, dtype=torch.float32, device=dev)
            t = torch.full((b,), 0.5, dtype=torch.float32, device=dev)
            score(z, t)  # warm-up
            reps = max(3, cfg["overhead_steps"] // 5)
            net_s = _timed(lambda: [score(z, t) for _ in range(reps)], dev) / reps
            fixed = score(z, t).detach()
            for solver in SAMPLERS:
                for nfe in cfg["nfes"]:
                    kn.sample(sde, score, shape, solver=solver, steps=2, dtype=torch.float32, device=dev)  # warm-up
                    _reset_peak(dev)
                    box = {}
                    sec = _timed(lambda: box.update(out=kn.sample(sde, score, shape, solver=solver, steps=nfe,
                                                                    dtype=torch.float32, device=dev,
                                                                    return_state=True)), dev)
                    z_out, used = box["out"]
                    rows.append({"sde": name, "solver": solver, "steps": nfe, "nfe": used, "seconds": sec,
                                 "images_per_s": b / sec, "peak_mib": _peak_mib(dev),
                                 "finite": bool(torch.isfinite(z_out).all())})
                free = lambda z_, t_: fixed
                n = cfg["overhead_steps"]
                kn.sample(sde, free, shape, solver=solver, steps=n, dtype=torch.float32, device=dev)  # warm-up
                call_s = _timed(lambda: kn.sample(sde, free, shape, solver=solver, steps=n, dtype=torch.float32,
                                                  device=dev), dev)
                slv = get_solver(solver)
                plan_s = _timed(lambda: slv.prepare(sde, kn.time_grid(sde, n, 1e-3, default_grid(slv))), torch.device("cpu"))
                loop_s = max(call_s - plan_s, 0.0) / n
                over.append({"sde": name, "solver": solver, "steps": n, "sampler_ms_per_step": 1e3 * loop_s,
                             "plan_ms": 1e3 * plan_s, "call_ms": 1e3 * call_s, "network_ms": 1e3 * net_s,
                             "share": loop_s / net_s, "plan_share": plan_s / (plan_s + n * (loop_s + net_s))})
    return {"rows": rows, "overhead": over, "batch": b, "net": cfg["net"], "res": res}


# ------------------------------------------------------------------ 6. k x k kernels
def kernels(dev: torch.device, cfg: dict) -> dict:
    n = cfg["kernel_times"]
    g = torch.Generator().manual_seed(0)
    t = torch.rand(n, generator=g, dtype=torch.float64) * 0.999 + 1e-3
    s = t * torch.rand(n, generator=g, dtype=torch.float64)
    rows = []
    for name in ("cld", "hold", "psld"):
        sde = SDES[name]()
        ops = {"transition": lambda sde, s, t: sde.transition(s, t),
               "covariance": lambda sde, s, t: sde.covariance(t),
               "coefficients": lambda sde, s, t: sde.coefficients(t).chol}
        for op, fn in ops.items():
            box = {}
            sec_cpu = _timed(lambda: box.update(out=fn(sde, s, t)), torch.device("cpu"))  # one call: 10^6 is long
            cpu_out = box["out"]
            sd, td = s.to(dev), t.to(dev)
            fn(sde, sd, td)  # warm-up
            box = {}
            sec_dev = _timed(lambda: box.update(out=fn(sde, sd, td)), dev)
            diff = (box["out"].cpu() - cpu_out).abs() / cpu_out.abs().amax((-1, -2), keepdim=True).clamp_min(1e-300)
            rows.append({"sde": name, "kernel": op, "times": n, "cpu_s": sec_cpu, "device_s": sec_dev,
                         "speedup": sec_cpu / sec_dev, "max_rel_diff": float(diff.max()),
                         "dtype": str(box["out"].dtype)})
    return {"rows": rows, "times": n}


# ------------------------------------------------------------------ report
def environment(dev: torch.device) -> dict:
    env = {"device": str(dev), "machine": machine_line(), "machine_info": machine_info(), "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None}
    if dev.type == "cuda":
        p = torch.cuda.get_device_properties(dev)
        env.update(gpu=p.name, gpu_memory_gib=p.total_memory / 2**30, capability=f"{p.major}.{p.minor}")
    return env


SECTIONS = ("correctness", "sync", "training", "sampling", "kernels", "training_compiled")
"""In the order they run: compilation, the longest and least certain part, last."""


def run(dev: torch.device, quick: bool, compile_too: bool = True, only=None, log=print, save=None,
        budget_s: float = math.inf) -> dict:
    """Every section in `SECTIONS` (or ``only``); ``save(res)`` after each, so a run cut short keeps its figures.
    A compiled training row is skipped when less than `COMPILE_RESERVE_S` of ``budget_s`` is left."""
    cfg = dict(QUICK if quick else FULL)
    cfg["deadline"] = time.perf_counter() + budget_s
    res: dict = {"environment": environment(dev), "quick": quick, "budget_s": budget_s,
                 "config": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.items() if k != "deadline"}}
    sections = {"correctness": lambda: correctness(dev, cfg), "sync": lambda: sync_checks(dev, cfg),
                "training": lambda: training(dev, cfg, False), "sampling": lambda: sampling(dev, cfg),
                "kernels": lambda: kernels(dev, cfg), "training_compiled": lambda: training(dev, cfg, True)}
    for name in only or SECTIONS:
        if name == "training_compiled" and not compile_too:
            continue
        _section(res, name, sections[name], log)
        corr = res.get("correctness", {})
        res["failed_checks"] = ["correctness"] if "error" in corr else check_failures(corr)
        res["targets"] = targets(res)
        if save is not None:
            save(res)
    return res


def targets(res: dict) -> dict:
    out = {}
    for mode, key in (("eager", "training"), ("compiled", "training_compiled")):
        r = res.get(key, {}).get("time_over_vp", {})
        if "hold" in r:
            out[f"hold_over_vp_train_{mode}"] = {"value": r["hold"], "target": TARGETS["hold_over_vp_train"],
                                                 "met": r["hold"] <= TARGETS["hold_over_vp_train"]}
    ov = res.get("sampling", {}).get("overhead", [])
    if ov:
        worst = max(ov, key=lambda r: r["share"])
        out["sampler_overhead_worst"] = {"value": worst["share"], "target": TARGETS["sampler_overhead"],
                                         "met": worst["share"] < TARGETS["sampler_overhead"],
                                         "where": f"{worst['solver']} on {worst['sde']}"}
    return out


def _fmt(v, spec=".3g") -> str:
    return "-" if v is None else format(v, spec)


def to_markdown(res: dict) -> str:
    res = {**res, **{name: {"error": "not run"} for name in SECTIONS if name not in res}}
    env = res["environment"]
    lines = [f"Command: `{res['command']}` ({res['wall_s']:.0f} s). Device: {env['device']}"
             + (f" ({env['gpu']}, {env['gpu_memory_gib']:.0f} GiB, sm {env['capability']})" if "gpu" in env else "")
             + f"; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; host {env['machine']}."
             + (" **Quick sizes** (a smoke run, not a measurement)." if res["quick"] else ""), ""]
    lines += ["Section times: " + ", ".join(f"{k} {v:.0f} s" for k, v in res["seconds"].items()) + ".", ""]
    if res["targets"]:
        lines += ["**Targets**", ""] + md_table(["target", "value", "goal", "met"], [
            [k, f"{v['value']:.3f}" + (f" ({v['where']})" if "where" in v else ""), f"{v['target']}",
             "yes" if v["met"] else "**no**"] for k, v in res["targets"].items()]) + [""]
    corr = res["correctness"]
    lines += ["**Correctness on the device against the CPU**: "
              + ("all checks within tolerance." if not res["failed_checks"] else f"**failed: {', '.join(res['failed_checks'])}**"), ""]
    if "error" in corr:
        lines += [f"error: `{corr['error']}`", ""]
    else:
        rows = []
        for k, r in corr.items():
            vals = {kk: vv for kk, vv in r.items() if isinstance(vv, (int, float)) and not isinstance(vv, bool)}
            rows.append([k, ", ".join(f"{kk} {_fmt(vv)}" for kk, vv in vals.items())])
        lines += md_table(["check", "values (relative differences; tol: tolerance)"], rows) + [""]
    for name, title in (("sync", "Host syncs (set_sync_debug_mode error, first score return to the last step)"),):
        sec = res[name]
        lines += [f"**{title}**", ""]
        if "error" in sec:
            lines += [f"error: `{sec['error']}`", ""]
        else:
            lines += md_table(["SDE", "solver", "loop", "loop + network"],
                              [[r["sde"], r["solver"], r["loop"], r["loop + network"]] for r in sec["rows"]]) + [""]
    lines += ["**Training** (bf16 autocast, x0 / EDM / log-normal, AdamW, grad clipping)", ""]
    rows = []
    for key, mode in (("training", "eager"), ("training_compiled", "compiled")):
        tr = res[key]
        if "error" in tr:
            rows.append(["-", mode, f"error: {tr['error']}", "-", "-", "-", "-"])
            continue
        head = (f"U-Net `{tr['net']}`, synthetic {tr['res']}x{tr['res']}x3, batch {tr['batch']}"
                + (f"; torch.compile backend {tr['compile_backend']}" if tr["compile_backend"] else "") + ".")
        if head not in lines:
            lines += [head, ""]
        for r in tr["rows"]:
            if "error" in r:
                rows.append([r["sde"], mode, f"error: {r['error']}", "-", "-", "-", "-"])
                continue
            rows.append([r["sde"], mode, f"{r['ms_per_step']:.1f}", f"{r['images_per_s']:.0f}",
                         _fmt(tr["time_over_vp"].get(r["sde"]), ".3f"), _fmt(r["peak_mib"], ".0f"), f"{r['first_step_s']:.1f}"])
    lines += md_table(["SDE", "mode", "ms / step", "images / s", "time / VP", "peak MiB", "first step s"], rows) + [""]
    sm = res["sampling"]
    lines += ["**Sampling** (bf16 autocast network, float32 state)", ""]
    if "error" in sm:
        lines += [f"error: `{sm['error']}`", ""]
    else:
        lines += [f"U-Net `{sm['net']}`, {sm['res']}x{sm['res']}x3, batch {sm['batch']}.", ""]
        lines += md_table(["SDE", "solver", "steps", "NFE", "s", "images / s", "peak MiB"], [
            [r["sde"], r["solver"], str(r["steps"]), str(r["nfe"]), f"{r['seconds']:.2f}", f"{r['images_per_s']:.1f}",
             _fmt(r["peak_mib"], ".0f")] for r in sm["rows"]]) + [""]
        lines += ["Sampler overhead: a run with a free score (a fixed tensor); the plan (float64, on the CPU, once per "
                  "call: `Solver.plan`) timed alone; per step: (call - plan) / steps, as a share of one network "
                  "evaluation (the target); plan share: of a whole run with the network.", ""]
        lines += md_table(["SDE", "solver", "steps", "sampler ms / step", "plan ms", "network ms", "share", "plan share"], [
            [r["sde"], r["solver"], str(r["steps"]), f"{r['sampler_ms_per_step']:.3f}", f"{r['plan_ms']:.1f}",
             f"{r['network_ms']:.2f}", f"{100 * r['share']:.2f}%", f"{100 * r['plan_share']:.1f}%"]
            for r in sm["overhead"]]) + [""]
    kr = res["kernels"]
    lines += ["**k x k kernels, float64**", ""]
    if "error" in kr:
        lines += [f"error: `{kr['error']}`", ""]
    else:
        lines += md_table(["SDE", "kernel", "times", "CPU s", "device s", "CPU / device", "max rel diff"], [
            [r["sde"], r["kernel"], str(r["times"]), f"{r['cpu_s']:.3f}", f"{r['device_s']:.4f}", f"{r['speedup']:.1f}",
             f"{r['max_rel_diff']:.1e}"] for r in kr["rows"]]) + [""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cuda (default when present) or cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes: the whole script end to end in well under a minute")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile training rows")
    p.add_argument("--out", type=Path, default=Path("docs/figures"), help="folder for gpu.json and gpu.md (created)")
    p.add_argument("--budget-s", type=float, default=450.0,
                   help="wall-clock seconds for the whole run: compiled training rows are skipped near the end (default 450)")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    p.add_argument("--threads", type=int, default=1)
    a = parse(p, argv)
    only = [x for x in a.sections.split(",") if x]
    if not only or any(x not in SECTIONS for x in only):
        p.error(f"--sections: comma-separated names of {', '.join(SECTIONS)}, got {a.sections!r}")
    try:
        dev = torch.device(a.device)
    except RuntimeError:
        p.error(f"--device: not a torch device: {a.device!r}")
    if dev.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available (use --device cpu --quick for a smoke run)")
    if dev.type not in ("cpu", "cuda"):
        p.error(f"--device must be cpu or cuda, got {a.device!r}")
    t0 = time.perf_counter()
    a.out.mkdir(parents=True, exist_ok=True)
    command = command_line("gpu.py", argv)

    def save(res: dict) -> str:
        res.update(wall_s=time.perf_counter() - t0, command=command)
        md = to_markdown(res)
        write_outputs(a.out, {"gpu.json": res, "gpu.md": md + "\n"})
        return md

    res = run(dev, a.quick, compile_too=not a.no_compile, only=only, log=lambda s: print(f"[gpu] {s}", flush=True),
              save=save, budget_s=a.budget_s)
    print(save(res))
    return res


if __name__ == "__main__":
    main()
