"""Conditional generation for any order: exact measurements and the digits study.

    python benchmarks/conditional.py exact --out docs/figures          # no network, ~10 min on one core
    python benchmarks/conditional.py study --out docs/figures          # 9 trainings + evaluation, ~2 h on one core
    python benchmarks/conditional.py study --quick                     # a smoke run (minutes)

``exact`` (exact scores, no network):

1. Inpainting by replacement against the exact conditional law of correlated Gaussian data
   N(m, S) in 4-D, two coordinates known: the error of the unknown coordinates' mean
   (||mean - m_c||) and covariance (||cov - S_c||_F / ||S_c||_F) per SDE (VP, CLD, HOLD, PSLD),
   NFE and replacement rule ("fresh", "bridge", and for k >= 2 the naive "data block only", which
   redraws the data block from its marginal and keeps the sampler's auxiliaries), with the
   unconditional samples as the no-conditioning baseline.
2. RePaint-style resampling (Lugmayr et al. 2022, "RePaint", Alg. 1: after a segment of ``jump``
   steps, renoise the whole state back with the exact forward transition and redo the segment,
   ``r`` times) at equal NFE.
3. Classifier-free guidance on a Gaussian mixture with exact per-class scores: class purity and
   the mean Bayes posterior of the requested class against w.

``study``: VP, CLD and HOLD trained class-conditionally on the 1500 training digits at one equal
budget (the same network, steps, batch, optimiser and label dropout 0.1; 3 seeds), then
class accuracy (the bundled digits classifier) at w = 0 and 1, fd-digits per class, and inpainting
of the 297 held-out digits with the right half masked (fd-digits of the completions, agreement of
the classifier with the true label). Trained weights are cached in ``--runs``; a second call only
evaluates what is missing. Writes ``conditional_<part>.json`` and ``.md`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import torch

import kinetic as kn
from kinetic import linalg
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.conditioning import MixtureClasses, Replacement, ReplacementPlan, check_inpainting
from kinetic.solvers import get_solver
from kinetic.solvers.base import gaussian_noise

EXACT_SDES = ("vp", "cld", "hold", "psld")
STUDY_SDES = ("vp", "cld", "hold")


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} thread(s)"


# ---------------------------------------------------------------------- exact: replacement vs the conditional law
def correlated_gaussian():
    S = torch.tensor([[1.0, 0.8, 0.5, 0.3], [0.8, 1.0, 0.6, 0.4], [0.5, 0.6, 1.0, 0.7], [0.3, 0.4, 0.7, 1.0]],
                     dtype=torch.float64) * 0.25
    m = torch.tensor([0.3, -0.2, 0.1, 0.0], dtype=torch.float64)
    known = torch.tensor([0.5, 0.4, 0.0, 0.0], dtype=torch.float64)
    mask = torch.tensor([True, True, False, False])
    K, U = [0, 1], [2, 3]
    mc = m[U] + S[U][:, K] @ torch.linalg.solve(S[K][:, K], known[K] - m[K])
    Sc = S[U][:, U] - S[U][:, K] @ torch.linalg.solve(S[K][:, K], S[K][:, U])
    return GaussianData(m, S), known, mask, U, mc, Sc


class DataBlockOnly(Replacement):
    """The naive port of replacement to k >= 2 (for comparison only): redraw the data block of the
    known pixels from its marginal N(c_0 x0, Sigma_00) and keep the sampler's auxiliaries."""

    def _draw(self, j, like):
        L = self.p["chol"][j]
        out = like.clone()
        sd = torch.sqrt((L[0] ** 2).sum())
        out[:, 0] = self.p["c"][j][0] * self._xf[:, 0] + sd * self.noise(tuple(like[:, 0].shape), like.dtype, like.device)
        return out

    def __call__(self, z, i, t):
        zf = z.reshape(z.shape[0], z.shape[1], -1)
        return self._set(z, self._draw(i + 1, zf))


def _errors(x, U, mc, Sc):
    xu = x[:, U]
    return float((xu.mean(0) - mc).norm()), float((torch.cov(xu.T) - Sc).norm() / Sc.norm())


def inpaint_loop(sde, score, shape, known, mask, steps, solver, options, seed, rule="fresh", r=1, jump=1,
                 replacement_cls=Replacement):
    """Replacement (optionally with RePaint resampling: segments of ``jump`` steps redone ``r`` times
    after renoising with the exact forward transition) on the library's fixed-grid loop."""
    g = torch.Generator().manual_seed(seed)
    n = shape[0]
    ts = kn.time_grid(sde, steps, 1e-3, kn.sampling.default_grid(solver))
    x0, mk = check_inpainting(known, mask, shape, torch.float64)
    noise = gaussian_noise(g)
    slv = get_solver(solver, **options)
    full = replacement_cls(ReplacementPlan(sde, ts, rule), x0, mk, noise)
    z = full.initial(sde.prior_sample(shape, generator=g, dtype=torch.float64))
    G = sde.diffusion_matrix
    F = G[:, G.abs().sum(0) > 0]
    tau = sde.tau(ts)
    if r == 1:
        jump = steps  # no resampling: one pass over the whole grid
    nfe, i = 0, 0
    while i < steps:
        e = min(i + jump, steps)
        seg = ts[i : e + 1]
        plan = slv.prepare(sde, seg)
        rep = replacement_cls(ReplacementPlan(sde, seg, rule), x0, mk, noise)
        start = z
        for k in range(r):
            out, used = slv.run(sde, score, start, seg, generator=g, plan=plan, transform=rep)
            nfe += used
            if k < r - 1:  # back to t_i with the exact forward transition, known pixels from the kernel
                phi, Lq = linalg.transition_and_noise_factor(sde.drift_matrix, F, tau[i] - tau[e])
                zf = out.reshape(n, sde.order, -1)
                eps = torch.randn(zf.shape, generator=g, dtype=zf.dtype)
                start = (torch.einsum("ij,bjd->bid", phi, zf) + torch.einsum("ij,bjd->bid", Lq, eps)).reshape(out.shape)
                start = rep._set(start, rep._draw(0, start.reshape(n, sde.order, -1)))
        z, i = out, e
    return full.finish(z[:, 0]), nfe


def exact_replacement(n: int, nfes, log) -> list[dict]:
    data, known, mask, U, mc, Sc = correlated_gaussian()
    rows = []
    for name in EXACT_SDES:
        sde = kn.preset(name)
        score = data.score_fn(sde)
        for solver, opts in (("ei", {"eta": 1.0}), ("ei", {})):
            label = "ei, eta=1" if opts else "ei, eta=0"
            base = kn.sample(sde, score, (n, 4), steps=50, solver=solver, generator=torch.Generator().manual_seed(0),
                             dtype=torch.float64, **opts)
            rows.append({"sde": name, "solver": label, "rule": "none (unconditional)", "nfe": 50,
                         **dict(zip(("mean_err", "cov_err"), _errors(base, U, mc, Sc)))})
            rules = [("fresh", Replacement), ("bridge", Replacement)]
            if sde.order > 1:
                rules.append(("data block only", DataBlockOnly))
            for rule, cls in rules:
                for nfe in nfes:
                    t0 = time.perf_counter()
                    x, used = inpaint_loop(sde, score, (n, 4), known, mask, nfe, solver, opts, seed=0,
                                           rule="fresh" if rule != "bridge" else "bridge", replacement_cls=cls)
                    me, ce = _errors(x, U, mc, Sc)
                    rows.append({"sde": name, "solver": label, "rule": rule, "nfe": used, "mean_err": me, "cov_err": ce})
                    log(f"replacement {name} {label} {rule} NFE {used}: mean {me:.3f} cov {ce:.3f} "
                        f"({time.perf_counter() - t0:.1f} s)")
    return rows


def exact_repaint(n: int, log) -> list[dict]:
    data, known, mask, U, mc, Sc = correlated_gaussian()
    rows = []
    for name in ("vp", "cld", "hold"):
        sde = kn.preset(name)
        score = data.score_fn(sde)
        for steps, r, jump in ((200, 1, 1), (100, 2, 1), (50, 4, 1), (20, 10, 1), (50, 4, 10), (20, 10, 10),
                               (1000, 1, 1), (100, 10, 1)):
            x, used = inpaint_loop(sde, score, (n, 4), known, mask, steps, "ei", {"eta": 1.0, "multistep": 1}, seed=0,
                                   r=r, jump=jump)
            me, ce = _errors(x, U, mc, Sc)
            rows.append({"sde": name, "steps": steps, "r": r, "jump": jump, "nfe": used, "mean_err": me, "cov_err": ce})
            log(f"repaint {name} steps {steps} r {r} jump {jump} NFE {used}: mean {me:.3f} cov {ce:.3f}")
    return rows


def four_modes() -> MixtureClasses:
    means = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [0.0, -1.0]]) * 0.8
    return MixtureClasses(GaussianMixture(torch.ones(4), means, 0.45), [0, 0, 1, 1])


def exact_guidance(n: int, log) -> list[dict]:
    mc = four_modes()
    exact = torch.cat([mc.sub_mixture(c).sample(50000, generator=torch.Generator().manual_seed(5 + c)) for c in (0, 1)])
    ey = torch.cat([torch.zeros(50000, dtype=torch.int64), torch.ones(50000, dtype=torch.int64)])
    bayes = float((mc.posterior(exact).argmax(1) == ey).double().mean())
    rows = [{"sde": "exact class law", "w": 0.0, "purity": bayes,
             "posterior": float(mc.posterior(exact)[torch.arange(len(ey)), ey].mean())}]
    y = torch.arange(n) % 2
    for name in EXACT_SDES:
        sde = kn.preset(name)
        for w in (0.0, 0.5, 1.0, 2.0, 4.0):
            x = kn.sample(sde, mc.score_fn(sde), (n, 2), steps=50, labels=y, guidance=w, dtype=torch.float64,
                          generator=torch.Generator().manual_seed(0))
            p = mc.posterior(x)
            rows.append({"sde": name, "w": w, "purity": float((p.argmax(1) == y).double().mean()),
                         "posterior": float(p[torch.arange(n), y].mean())})
            log(f"guidance {name} w {w}: purity {rows[-1]['purity']:.3f} posterior {rows[-1]['posterior']:.3f}")
    return rows


def exact_markdown(res: dict) -> str:
    out = [f"Machine: {res['machine']}. n = {res['n']} samples per cell; command: `{res['command']}`.", ""]
    rep = res["replacement"]
    for solver in ("ei, eta=1", "ei, eta=0"):
        nfes = sorted({r["nfe"] for r in rep if r["solver"] == solver and not r["rule"].startswith("none")})
        out += [f"#### Replacement vs the exact conditional law ({solver}): mean error / relative covariance error", "",
                "| SDE | rule | " + " | ".join(f"NFE {k}" for k in nfes) + " |",
                "|---|---|" + "---|" * len(nfes)]
        for name in EXACT_SDES:
            sub = [r for r in rep if r["sde"] == name and r["solver"] == solver]
            for rule in dict.fromkeys(r["rule"] for r in sub):
                cells = {r["nfe"]: f"{r['mean_err']:.3f} / {r['cov_err']:.3f}" for r in sub if r["rule"] == rule}
                if rule.startswith("none"):
                    row = [cells[50]] + [""] * (len(nfes) - 1)
                    out.append(f"| {name} | {rule}, NFE 50 | " + " | ".join(row) + " |")
                else:
                    out.append(f"| {name} | {rule} | " + " | ".join(cells.get(k, "") for k in nfes) + " |")
        out.append("")
    out += ["#### RePaint-style resampling at equal NFE (ei, eta=1, order 1): mean error / relative covariance error", "",
            "| SDE | steps x r (jump) | NFE | mean err | cov err |", "|---|---|---|---|---|"]
    for r in res["repaint"]:
        out.append(f"| {r['sde']} | {r['steps']} x {r['r']} (jump {r['jump']}) | {r['nfe']} | {r['mean_err']:.3f} | "
                   f"{r['cov_err']:.3f} |")
    out += ["", "#### Classifier-free guidance on a 2-class Gaussian mixture (exact scores, ei, 50 steps)", "",
            "class purity (share the Bayes classifier assigns to the requested class) / mean posterior of that class", "",
            "| SDE | w = 0 | w = 0.5 | w = 1 | w = 2 | w = 4 |", "|---|---|---|---|---|---|"]
    g = res["guidance"]
    exact = g[0]
    out.append(f"| exact class law | {exact['purity']:.3f} / {exact['posterior']:.3f} | | | | |")
    for name in EXACT_SDES:
        cells = [f"{r['purity']:.3f} / {r['posterior']:.3f}" for r in g if r["sde"] == name]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- study on digits
def study_settings(quick: bool) -> dict:
    if quick:
        return {"steps": 200, "batch": 64, "n": 200, "inpaint_n": 100, "seeds": [0], "model": "mlp", "size": "tiny",
                "sample_steps": [10], "warmup": 20}
    return {"steps": 4000, "batch": 128, "n": 1000, "inpaint_n": 297, "seeds": [0, 1, 2], "model": "mlp",
            "size": "small", "sample_steps": [25, 50], "warmup": 200}


def train_one(sde: str, seed: int, st: dict, runs: Path, log) -> Path:
    from kinetic.training import train

    out = runs / f"{sde}-s{seed}"
    if (out / "summary.json").is_file():
        summary = json.loads((out / "summary.json").read_text())
        if summary.get("step") == st["steps"]:
            return out
    cfg = kn.TrainConfig(
        sde=sde, data="digits", conditional=True, label_dropout=0.1, model=st["model"], model_size=st["size"],
        steps=st["steps"], batch_size=st["batch"], warmup=st["warmup"], seed=seed, out=str(out), overwrite=out.exists(),
        sample_every=0, ckpt_every=0, n_samples=100, sample_steps=50, device="cpu",
    )
    t0 = time.perf_counter()
    train(cfg)
    log(f"trained {sde} seed {seed} in {time.perf_counter() - t0:.0f} s")
    return out


def evaluate_one(run: Path, st: dict, log) -> dict:
    from kinetic.evaluation import evaluate_checkpoint, inpaint_digits

    sm, ckpt = kn.load_model(run)
    model = (sm, ckpt)
    res = {"train_seconds": json.loads((run / "summary.json").read_text())["elapsed_s"]}
    for steps in st["sample_steps"]:
        for w in (0.0, 1.0):
            t0 = time.perf_counter()
            r = evaluate_checkpoint(run, ["class-accuracy", "fd-digits-per-class", "fd-digits"], n=st["n"], steps=steps,
                                    seed=1, model=model, guidance=w)
            m = r["metrics"]
            res[f"steps{steps}_w{w:g}"] = {
                "class_accuracy": m["class-accuracy"]["value"], "per_class_accuracy": m["class-accuracy"]["per_class"],
                "fd_per_class": m["fd-digits-per-class"]["per_class"], "fd_per_class_mean": m["fd-digits-per-class"]["value"],
                "fd_digits": m["fd-digits"]["value"], "nfe": r["nfe"], "seconds": time.perf_counter() - t0,
            }
            log(f"  {run.name} steps {steps} w {w:g}: class accuracy {m['class-accuracy']['value']:.3f}, fd per class "
                f"{m['fd-digits-per-class']['value']:.2f}, fd-digits {m['fd-digits']['value']:.2f} (NFE {r['nfe']})")
    steps = max(st["sample_steps"])
    for rule in ("fresh", "bridge"):
        t0 = time.perf_counter()
        inp = inpaint_digits(sm, n=st["inpaint_n"], steps=steps, seed=2, replacement=rule)
        res["inpaint" if rule == "fresh" else f"inpaint_{rule}"] = {**inp, "steps": steps,
                                                                   "seconds": time.perf_counter() - t0}
        log(f"  {run.name} inpaint ({rule}): fd-digits {inp['value']:.2f}, agreement {inp['agreement']:.3f}")
    # stochastic sampling, and RePaint-style resampling at the same NFE
    from kinetic.data import load_dataset
    from kinetic.metrics import class_accuracy, fd_digits, inpainting_inputs

    x, y = load_dataset("digits", split="test", labels=True)
    x, y = x[: st["inpaint_n"]], y[: st["inpaint_n"]]
    known, mask = inpainting_inputs(x)

    def score(z, t):
        with torch.no_grad():
            return sm.score(z, t)

    for key, st_, r in (("inpaint_eta1", steps, 1), ("inpaint_repaint", steps // 5, 5)):
        t0 = time.perf_counter()
        out, nfe = inpaint_loop(sm.sde, score, tuple(x.shape), known.double(), mask, st_, "ei", {"eta": 1.0}, seed=2, r=r)
        out = out.float()
        res[key] = {"value": float(fd_digits(out)), "agreement": float(class_accuracy(out, y)), "nfe": nfe,
                    "steps": st_, "r": r, "seconds": time.perf_counter() - t0}
        log(f"  {run.name} {key}: fd-digits {res[key]['value']:.2f}, agreement {res[key]['agreement']:.3f} (NFE {nfe})")
    return res


def nearest_neighbour_inpainting() -> dict:
    """A data baseline for the inpainting task: complete each held-out digit with the right half of
    the training digit whose left half is nearest (L2)."""
    from kinetic.data import load_dataset
    from kinetic.metrics import class_accuracy, fd_digits, right_half_mask

    xtr = load_dataset("digits", split="train")
    x, y = load_dataset("digits", split="test", labels=True)
    m = right_half_mask()
    d = torch.cdist(x[:, m].reshape(len(x), -1), xtr[:, m].reshape(len(xtr), -1))
    out = torch.where(m, x, xtr[d.argmin(1)])
    return {"value": float(fd_digits(out)), "agreement": float(class_accuracy(out, y)),
            "known_accuracy": float(class_accuracy(x, y))}


def default_cli_run(runs: Path, n: int, log) -> dict:
    """``kinetic train --conditional`` as it is (HOLD, the small U-Net, 600 steps of batch 64), seed 0,
    then class accuracy at 50 steps with w = 0 and 1 and inpainting."""
    from kinetic.evaluation import evaluate_checkpoint, inpaint_digits
    from kinetic.training import train

    out = runs / "cli-default-hold-unet-s0"
    cfg = kn.TrainConfig(conditional=True, out=str(out), overwrite=out.exists(), sample_every=0, device="cpu")
    t0 = time.perf_counter()
    if not (out / "summary.json").is_file() or json.loads((out / "summary.json").read_text()).get("step") != cfg.steps:
        train(cfg)
    res = {"train_seconds": json.loads((out / "summary.json").read_text())["elapsed_s"], "config": cfg.to_dict()}
    sm, ckpt = kn.load_model(out)
    for w in (0.0, 1.0):
        r = evaluate_checkpoint(out, ["class-accuracy", "fd-digits"], n=n, steps=50, seed=1, model=(sm, ckpt), guidance=w,
                                batch_size=250)
        res[f"steps50_w{w:g}"] = {"class_accuracy": r["metrics"]["class-accuracy"]["value"],
                                  "fd_digits": r["metrics"]["fd-digits"]["value"], "nfe": r["nfe"]}
        log(f"  CLI default run w {w:g}: class accuracy {r['metrics']['class-accuracy']['value']:.3f} (NFE {r['nfe']})")
    inp = inpaint_digits(sm, n=297, steps=50, seed=2, batch_size=297)
    res["inpaint"] = inp
    res["seconds"] = time.perf_counter() - t0
    log(f"  CLI default run inpaint: fd-digits {inp['value']:.2f}, agreement {inp['agreement']:.3f}")
    return res


def _ms(v: list[float], digits: int = 3) -> str:
    v = [x for x in v if x == x]
    if not v:
        return "nan"
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else 0.0
    return f"{m:.{digits}f} ± {s:.{digits}f}"


def study_markdown(res: dict) -> str:
    st = res["settings"]
    seeds = st["seeds"]
    out = [f"Machine: {res['machine']}; command: `{res['command']}`; total {res['seconds'] / 60:.0f} min.", "",
           f"#### Class accuracy (mean ± std over seeds {seeds}; n = {st['n']}, {st['n'] // 10} per class)", "",
           "| SDE | " + " | ".join(f"{s} steps, w = {w:g} (NFE {s * (2 if w else 1)})" for s in st["sample_steps"]
                                    for w in (0.0, 1.0)) + " |",
           "|---|" + "---|" * (2 * len(st["sample_steps"]))]
    for name in STUDY_SDES:
        runs = [res["runs"][f"{name}-s{s}"] for s in seeds]
        cells = [_ms([r[f"steps{s}_w{w:g}"]["class_accuracy"] for r in runs]) for s in st["sample_steps"] for w in (0.0, 1.0)]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    steps = max(st["sample_steps"])
    out += ["", f"#### fd-digits per class ({steps} steps; mean over seeds; lower is better)", "",
            "| SDE | w | " + " | ".join(str(c) for c in range(10)) + " | mean | fd-digits (all) |",
            "|---|---|" + "---|" * 12]
    for name in STUDY_SDES:
        runs = [res["runs"][f"{name}-s{s}"] for s in seeds]
        for w in (0.0, 1.0):
            key = f"steps{steps}_w{w:g}"
            per = [sum(float(r[key]["fd_per_class"][str(c)] if str(c) in r[key]["fd_per_class"] else r[key]["fd_per_class"][c])
                       for r in runs) / len(runs) for c in range(10)]
            out.append(f"| {name} | {w:g} | " + " | ".join(f"{v:.1f}" for v in per)
                       + f" | {_ms([r[key]['fd_per_class_mean'] for r in runs], 1)} | {_ms([r[key]['fd_digits'] for r in runs], 1)} |")
    out += ["", f"#### Inpainting the {res['runs'][f'vp-s{seeds[0]}']['inpaint']['test_digits']} held-out digits, "
            f"right half masked (NFE {steps}, no label)", "",
            "| SDE | replacement | fd-digits of the completions | agreement with the true label |", "|---|---|---|---|"]
    for name in STUDY_SDES:
        runs = [res["runs"][f"{name}-s{s}"] for s in seeds]
        for key, rule in (("inpaint", "fresh (ei)"), ("inpaint_bridge", "bridge (ei)"),
                          ("inpaint_eta1", "fresh (ei, eta = 1)"),
                          ("inpaint_repaint", f"fresh + RePaint r = 5, {steps // 5} steps (ei, eta = 1)")):
            out.append(f"| {name} | {rule} | {_ms([r[key]['value'] for r in runs], 2)} | "
                       f"{_ms([r[key]['agreement'] for r in runs])} |")
    nn_ = res.get("nearest_neighbour")
    if nn_:
        out.append(f"| nearest training digit by its left half | - | {nn_['value']:.2f} | {nn_['agreement']:.3f} |")
    known = res["runs"][f"vp-s{seeds[0]}"]["inpaint"]["known_accuracy"]
    out += ["", f"The classifier on the true held-out digits: {known:.3f}."]
    cli = res.get("cli_default")
    if cli:
        c = cli["config"]
        out += ["", f"#### `kinetic train --conditional` as it is ({c['sde']}, {c['model']} {c['model_size']} U-Net, "
                f"{c['steps']} steps of batch {c['batch_size']}, seed 0; {cli['train_seconds']:.0f} s of training)", "",
                "| 50 steps, w = 0 (NFE 50) | 50 steps, w = 1 (NFE 100) | fd-digits w = 0 / 1 | inpaint fd-digits | "
                "inpaint agreement |", "|---|---|---|---|---|",
                f"| {cli['steps50_w0']['class_accuracy']:.3f} | {cli['steps50_w1']['class_accuracy']:.3f} | "
                f"{cli['steps50_w0']['fd_digits']:.1f} / {cli['steps50_w1']['fd_digits']:.1f} | "
                f"{cli['inpaint']['value']:.2f} | {cli['inpaint']['agreement']:.3f} |"]
    return "\n".join(out) + "\n"


def study_summary_markdown(res: dict, steps: int = 50) -> str:
    """docs/study.md's summary of the study: per SDE (mean ± std over seeds) the class accuracy at ``steps``
    steps with w = 0 and 1, fd-digits of all samples, inpainting (``fresh``) and its label agreement, the
    data baseline, then one sentence on the run of ``kinetic train --conditional``."""
    seeds = res["settings"]["seeds"]
    out = [f"| SDE | class accuracy, {steps} steps, w = 0 | {steps} steps, w = 1 (NFE {2 * steps}) | "
           "fd-digits (all), w = 0 | w = 1 | inpainting fd-digits (fresh) | agreement |", "|---|---|---|---|---|---|---|"]
    for name in STUDY_SDES:
        runs = [res["runs"][f"{name}-s{s}"] for s in seeds]
        w0, w1 = (f"steps{steps}_w{w}" for w in (0, 1))
        out.append(f"| {name} | {_ms([r[w0]['class_accuracy'] for r in runs])} | {_ms([r[w1]['class_accuracy'] for r in runs])} | "
                   f"{_ms([r[w0]['fd_digits'] for r in runs], 1)} | {_ms([r[w1]['fd_digits'] for r in runs], 1)} | "
                   f"{_ms([r['inpaint']['value'] for r in runs], 1)} | {_ms([r['inpaint']['agreement'] for r in runs])} |")
    nn_ = res["nearest_neighbour"]
    out.append(f"| nearest training digit (data baseline) | | | | | {nn_['value']:.2f} | {nn_['agreement']:.3f} |")
    cli = res.get("cli_default")
    if cli:
        c = cli["config"]
        out += ["", f"`kinetic train --conditional` ({c['sde'].upper()}, {c['model_size']} U-Net, {c['steps']} steps of batch "
                f"{c['batch_size']}, seed {c['seed']}, {cli['train_seconds']:.0f} s of training): class accuracy "
                f"{cli['steps50_w0']['class_accuracy']:.3f} at 50 steps with w = 0 and {cli['steps50_w1']['class_accuracy']:.3f} "
                f"with w = 1; fd-digits {cli['steps50_w0']['fd_digits']:.1f} (w = 0) and {cli['steps50_w1']['fd_digits']:.1f} "
                f"(w = 1); inpainting fd-digits {cli['inpaint']['value']:.1f}, agreement {cli['inpaint']['agreement']:.3f}."]
    return "\n".join(out)


EXACT_RULES = (("fresh", "fresh"), ("bridge", "bridge"), ("data block only", "data block only (naive)"))
EXACT_NFES = (10, 50, 200)
REPAINT_COLUMNS = (((200, 1, 1), "plain (200 x 1)"), ((50, 4, 1), "50 x 4"), ((20, 10, 1), "20 x 10"),
                   ((50, 4, 10), "50 x 4, jump 10"))


def exact_replacement_summary(res: dict, solver: str = "ei, eta=1") -> str:
    """docs/math.md's table of replacement against the exact conditional law: mean error / relative covariance
    error per SDE and rule at EXACT_NFES (the full table: exact_markdown)."""
    rows = {(r["sde"], r["rule"], r["nfe"]): r for r in res["replacement"] if r["solver"] == solver}
    out = ["| SDE | rule (" + solver.replace("=", " = ") + ") | " + " | ".join(f"NFE {k}" for k in EXACT_NFES) + " |",
           "|---|---|" + "---|" * len(EXACT_NFES)]
    for name in EXACT_SDES:
        for rule, label in EXACT_RULES:
            if (name, rule, EXACT_NFES[0]) in rows:
                out.append(f"| {name} | {label} | " + " | ".join(
                    f"{rows[name, rule, k]['mean_err']:.3f} / {rows[name, rule, k]['cov_err']:.3f}" for k in EXACT_NFES) + " |")
    return "\n".join(out)


def exact_repaint_summary(res: dict) -> str:
    """docs/math.md's RePaint table: mean / covariance error at 200 NFE for REPAINT_COLUMNS (steps, r, jump)."""
    rows = {(r["sde"], r["steps"], r["r"], r["jump"]): r for r in res["repaint"]}
    out = ["| RePaint, ei eta = 1, NFE 200 | " + " | ".join(label for _, label in REPAINT_COLUMNS) + " |",
           "|---|" + "---|" * len(REPAINT_COLUMNS)]
    for name in dict.fromkeys(r["sde"] for r in res["repaint"]):
        out.append(f"| {name} | " + " | ".join(
            f"{rows[(name, *k)]['mean_err']:.3f} / {rows[(name, *k)]['cov_err']:.3f}" for k, _ in REPAINT_COLUMNS) + " |")
    return "\n".join(out)


def exact_guidance_summary(res: dict) -> str:
    """docs/math.md's guidance table: class purity / mean posterior per SDE and guidance weight, the exact class
    law first."""
    g = res["guidance"]
    ws = list(dict.fromkeys(r["w"] for r in g if r["sde"] != "exact class law"))
    out = ["| SDE | " + " | ".join(f"w = {w:g}" for w in ws) + " |", "|---|" + "---|" * len(ws)]
    for name in ("exact class law", *EXACT_SDES):
        cells = [f"{r['purity']:.3f} / {r['posterior']:.3f}" for r in g if r["sde"] == name]
        out.append(f"| {name} | " + " | ".join(cells + [""] * (len(ws) - len(cells))) + " |")
    return "\n".join(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=("exact", "study"))
    p.add_argument("--out", default="docs/figures")
    p.add_argument("--runs", default="runs/conditional")
    p.add_argument("--quick", action="store_true", help="a smoke run: small n, few steps, one seed")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--skip-cli-default", action="store_true", help="study: skip the run of kinetic train --conditional")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = "python benchmarks/conditional.py " + a.part + (" --quick" if a.quick else "")

    def log(*x):
        print(*x, flush=True)

    t0 = time.perf_counter()
    suffix = "_quick" if a.quick else ""
    if a.part == "exact":
        n = 2000 if a.quick else 20000
        nfes = [10, 50] if a.quick else [10, 20, 50, 100, 200]
        res = {"machine": machine(), "command": cmd, "n": n,
               "replacement": exact_replacement(n, nfes, log),
               "repaint": exact_repaint(n, log) if not a.quick else [],
               "guidance": exact_guidance(n // 5, log)}
        md = exact_markdown(res)
    else:
        st = study_settings(a.quick)
        runs = Path(a.runs + suffix)
        res = {"machine": machine(), "command": cmd, "settings": st, "runs": {}}
        for name in STUDY_SDES:
            for seed in st["seeds"]:
                run = train_one(name, seed, st, runs, log)
                res["runs"][run.name] = evaluate_one(run, st, log)
        res["nearest_neighbour"] = nearest_neighbour_inpainting()
        if not a.quick and not a.skip_cli_default:
            res["cli_default"] = default_cli_run(runs, 500, log)
        res["seconds"] = time.perf_counter() - t0
        md = study_markdown(json.loads(json.dumps(res)))
    res["seconds"] = time.perf_counter() - t0
    (out / f"conditional_{a.part}{suffix}.json").write_text(json.dumps(res, indent=1))
    (out / f"conditional_{a.part}{suffix}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
