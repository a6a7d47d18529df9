"""Peers on VP: diffusers' multistep schedulers driven by kinetic's exact score.

DPM-Solver++ (2M, 3M; Karras and lambda-uniform spacings), UniPC (bh2, orders 2 and 3) and DEIS
(orders 2 and 3) run on the same problems, prior draws and exact score (`kinetic.analytic`) as
kinetic's own samplers in `kinetic.bench.fewstep`, and are measured the same way: the distribution
error against the floor and the pathwise error against the exact probability-flow map.

The schedule. diffusers' default VP is 1000 linear betas from 1e-4 to 0.02, meant to match
``kn.vp()`` (beta(t) = 0.1 + 19.9 t) at t_i = (i + 1)/1000; `schedule_mismatch` measures how well.
The comparison itself removes the mismatch: the schedulers are built with ``trained_betas`` chosen
so that their alpha_bar_i equals kinetic's exp(-B(t_i)) exactly (up to diffusers' float32 storage),
and the score is evaluated at the time whose noise level equals the scheduler's sigma at that step
(diffusers hands the model a rounded integer timestep; a trained model sees that, the exact score
here does not need it). The "default betas" rows show what the mismatch costs a kinetic-trained
VP model called with diffusers' timesteps (the score at t = (timestep + 1)/1000).

Conversion: eps = -sigma_t score, with sigma_t^2 = Sigma(t) the exact marginal variance of VP
(`sde.coefficients`). Every scheduler is built from its config (nothing is downloaded); a wrapper
counts the score calls. Where Karras / lambda-uniform spacings end with a zero-length step (their
last two sigmas are both sigma_min), that step is not taken and the schedule gets one more node, so
N score calls make N real steps.

Solver-only rows (``Peer.grid == "kinetic"``): diffusers' update rules on kinetic's own time grid, the
one `kinetic.sample`'s default solver steps through at that NFE (`kinetic_grid`: the ``band`` grid for
VP, T = 1 down to t_eps = 1e-3). After ``set_timesteps(nfe)`` the scheduler's ``sigmas`` are replaced by
sigma/alpha = sqrt(expm1(B(t))) at the grid's nfe + 1 times (float64: the step's coefficients are
those of the exact times) and its ``timesteps`` by nfe integer labels, with ``set_begin_index(0)``, so
step i runs from grid node i to node i + 1 with diffusers' own rule (its warm-up, lower-order final
steps and, for UniPC, corrector). The score is evaluated at the grid times themselves. These rows
compare the update rules alone, on the same times as the default sampler.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field

import torch
from torch import Tensor

from . import fewstep
from . import problems as pb

__all__ = ["Peer", "PEERS", "NFES", "SIZES", "DEFAULT", "exact_betas", "default_betas", "schedule_mismatch",
           "kinetic_grid", "vp_sigma", "sample_peer", "run", "to_markdown", "docs_block", "plot", "main", "cli"]

F64 = torch.float64
NFES = (3, 5, 8, 10, 20, 50)
TRAIN_STEPS = 1000
DEFAULT = "kn.sample default"
"""The `fewstep.CONFIGS` label of `kinetic.sample` with its defaults (solver, grid, options): the baseline
of the "best peer / default" rows."""


@dataclass(frozen=True)
class Peer:
    """A diffusers scheduler class name and its options; ``betas``: "exact" (matched to kn.vp) or
    "default" (diffusers' linear 1e-4 .. 0.02, the score at t = (timestep + 1)/1000); ``grid``: "own"
    (the scheduler's own spacing) or "kinetic" (solver-only: its update rule on `kinetic_grid`)."""

    label: str
    scheduler: str
    options: dict = field(default_factory=dict)
    betas: str = "exact"
    grid: str = "own"

    @property
    def solver_only(self) -> bool:
        return self.grid == "kinetic"


_DPM = {"algorithm_type": "dpmsolver++"}
PEERS = [
    Peer("DPM-Solver++ 2M, Karras", "DPMSolverMultistepScheduler", {**_DPM, "solver_order": 2, "use_karras_sigmas": True}),
    Peer("DPM-Solver++ 2M, lambda-uniform", "DPMSolverMultistepScheduler", {**_DPM, "solver_order": 2, "use_lu_lambdas": True}),
    Peer("DPM-Solver++ 3M, Karras", "DPMSolverMultistepScheduler", {**_DPM, "solver_order": 3, "use_karras_sigmas": True}),
    Peer("DPM-Solver++ 3M, lambda-uniform", "DPMSolverMultistepScheduler", {**_DPM, "solver_order": 3, "use_lu_lambdas": True}),
    Peer("UniPC-2 (bh2)", "UniPCMultistepScheduler", {"solver_order": 2}),
    Peer("UniPC-3 (bh2)", "UniPCMultistepScheduler", {"solver_order": 3}),
    Peer("UniPC-3 (bh2), Karras", "UniPCMultistepScheduler", {"solver_order": 3, "use_karras_sigmas": True}),
    Peer("DEIS-2", "DEISMultistepScheduler", {"solver_order": 2}),
    Peer("DEIS-3", "DEISMultistepScheduler", {"solver_order": 3}),
    Peer("UniPC-3 (bh2), default betas", "UniPCMultistepScheduler", {"solver_order": 3}, betas="default"),
    Peer("DPM-Solver++ 2M, Karras, default betas", "DPMSolverMultistepScheduler",
         {**_DPM, "solver_order": 2, "use_karras_sigmas": True}, betas="default"),
    Peer("DPM-Solver++ 2M, kinetic grid", "DPMSolverMultistepScheduler", {**_DPM, "solver_order": 2}, grid="kinetic"),
    Peer("DPM-Solver++ 3M, kinetic grid", "DPMSolverMultistepScheduler", {**_DPM, "solver_order": 3}, grid="kinetic"),
    Peer("UniPC-3 (bh2), kinetic grid", "UniPCMultistepScheduler", {"solver_order": 3}, grid="kinetic"),
    Peer("DEIS-3, kinetic grid", "DEISMultistepScheduler", {"solver_order": 3}, grid="kinetic"),
]
SOLVER_ONLY = "solver-only (kinetic's grid)"
"""How the tables mark the rows of diffusers' update rules on kinetic's grid (``Peer.grid == "kinetic"``)."""


# ------------------------------------------------------------------ the schedule
def _train_times(sde) -> Tensor:
    """t_i = (i + 1) T / 1000, i = 0 .. 999."""
    return torch.arange(1, TRAIN_STEPS + 1, dtype=F64) * (sde.T / TRAIN_STEPS)


def _check_vp(sde) -> None:
    A, G = sde.drift_matrix, sde.diffusion_matrix
    if sde.order != 1 or float(A[0, 0]) != -0.5 or float(G[0, 0]) != 1.0:
        raise ValueError(f"the peers run VP only (A = -1/2, G = 1), got {sde!r}")


def _alpha_bar(sde, t: Tensor) -> Tensor:
    """exp(-B(t)) = Phi(0, t)^2 for VP, float64."""
    return sde.coefficients(t).c[..., 0] ** 2


def exact_betas(sde) -> Tensor:
    """1000 betas whose cumulative product of (1 - beta) is kinetic's alpha_bar(t_i) exactly."""
    _check_vp(sde)
    ab = _alpha_bar(sde, _train_times(sde))
    prev = torch.cat([torch.ones(1, dtype=F64), ab[:-1]])
    return 1.0 - ab / prev


def default_betas() -> Tensor:
    """diffusers' default VP: linspace(1e-4, 0.02, 1000)."""
    return torch.linspace(1e-4, 0.02, TRAIN_STEPS, dtype=F64)


def schedule_mismatch(sde) -> dict:
    """diffusers' default linear betas against kn.vp() at t_i = (i + 1)/1000.

    Returns the largest differences of log alpha_bar, of sigma = sqrt(1 - alpha_bar) (relative) and
    of lambda = log(alpha / sigma) (the log-SNR clock of DPM-Solver), with the index where each
    occurs, and sigma/alpha at both ends (what the schedulers' Karras / lambda-uniform spacings use).
    float64 (diffusers itself stores the betas in float32).
    """
    _check_vp(sde)
    ab_k = _alpha_bar(sde, _train_times(sde))
    ab_d = torch.cumprod(1.0 - default_betas(), 0)
    ab_32 = torch.cumprod(1.0 - default_betas().float(), 0).double()
    dlog = (ab_d.log() - ab_k.log()).abs()
    sig_k, sig_d = (1 - ab_k).sqrt(), (1 - ab_d).sqrt()
    drel = ((sig_d - sig_k) / sig_k).abs()
    lam_k = 0.5 * (ab_k.log() - (1 - ab_k).log())
    lam_d = 0.5 * (ab_d.log() - (1 - ab_d).log())
    dlam = (lam_d - lam_k).abs()
    snr = lambda ab: ((1 - ab) / ab).sqrt()  # noqa: E731  the schedulers' sigma
    return {
        "max_abs_log_alpha_bar": float(dlog.max()), "at_log_alpha_bar": int(dlog.argmax()),
        "max_rel_sigma": float(drel.max()), "at_rel_sigma": int(drel.argmax()),
        "max_abs_lambda": float(dlam.max()), "at_lambda": int(dlam.argmax()),
        "sigma_over_alpha_first": {"kinetic": float(snr(ab_k[0])), "diffusers": float(snr(ab_d[0]))},
        "sigma_over_alpha_last": {"kinetic": float(snr(ab_k[-1])), "diffusers": float(snr(ab_d[-1]))},
        "float32_max_abs_log_alpha_bar": float((ab_32.log() - ab_d.log()).abs().max()),
    }


# ------------------------------------------------------------------ driving a scheduler
def _build(peer: Peer, sde):
    import diffusers

    cls = getattr(diffusers, peer.scheduler)
    betas = exact_betas(sde) if peer.betas == "exact" else default_betas()
    opts = {"num_train_timesteps": TRAIN_STEPS, "trained_betas": betas.tolist(), "prediction_type": "epsilon",
            **peer.options}
    if "final_sigmas_type" in inspect.signature(cls.__init__).parameters:
        opts["final_sigmas_type"] = "sigma_min"  # end at timestep 0 = t_eps = 1e-3, like kinetic (no denoising)
    return cls(**opts)


def _zero_length(s_from: float, s_to: float) -> bool:
    """A step that does not lower the noise level (up to float32 rounding: Karras / lambda-uniform
    spacings end with sigma_min twice, computed two ways)."""
    return s_to >= s_from * (1.0 - 1e-5)


def _set_timesteps(sch, nfe: int) -> None:
    sch.set_timesteps(nfe)
    s = [float(v) for v in sch.sigmas]
    if sum(not _zero_length(a, b) for a, b in zip(s[:-1], s[1:])) < nfe:  # one step is void: one more node
        sch.set_timesteps(nfe + 1)


def _time_of_sigma(sde, sigma: float) -> float:
    """The VP time whose sigma_t / alpha_t equals the scheduler's sigma: tau = log(1 + sigma^2)."""
    tau = torch.tensor(math.log1p(sigma * sigma), dtype=F64)
    return float(sde.schedule.integral_inverse(tau, sde.T).clamp(0.0, sde.T))


def kinetic_grid(sde, nfe: int) -> Tensor:
    """The nfe + 1 times (T ... t_eps = `fewstep.T_EPS`, float64) that `kinetic.sample` steps through with
    its default solver and ``steps=nfe``: that solver's default grid (``band`` for ``ei``)."""
    from kinetic.sampling import DEFAULT_SOLVER, default_grid, time_grid

    return time_grid(sde, nfe, fewstep.T_EPS, default_grid(DEFAULT_SOLVER))


def vp_sigma(sde, t: Tensor) -> Tensor:
    """The schedulers' sigma = sigma_t / alpha_t = sqrt(exp(B(t)) - 1) of VP at times t (float64); the
    inverse of `_time_of_sigma`."""
    return torch.expm1(sde.schedule.integral(torch.as_tensor(t, dtype=F64))).sqrt()


def _set_kinetic_grid(sch, sde, nfe: int) -> Tensor:
    """Make ``sch`` step between the nodes of `kinetic_grid`: its sigmas (nfe + 1, float64, the last one
    at t_eps), nfe integer timestep labels (the nearest training step; only labels: the index starts at
    0 by ``set_begin_index`` and counts up) and the bookkeeping ``set_timesteps`` resets. Returns the times."""
    sch.set_timesteps(nfe)
    ts = kinetic_grid(sde, nfe)
    sch.sigmas = vp_sigma(sde, ts)
    sch.timesteps = (ts[:-1] * TRAIN_STEPS / sde.T - 1).round().clamp(0, TRAIN_STEPS - 1).to(torch.int64)
    sch.num_inference_steps = nfe
    sch.set_begin_index(0)
    return ts


def _run_steps(sch, sde, score_fn, z_T: Tensor, times: list[float]) -> Tensor:
    """Take ``sch``'s first len(times) steps from z_T (n, 1, *D), step i with the score at VP time
    times[i] as epsilon (eps = -sigma_t score, sigma_t the marginal std); returns the output (n, *D)."""
    x = z_T[:, 0].to(F64).clone()
    n = x.shape[0]
    for t, step_t in zip(times, sch.timesteps):
        tt = torch.tensor(t, dtype=F64)
        eps = -sde.coefficients(tt).sigma[0, 0].sqrt() * score_fn(x[:, None], tt.expand(n))
        x = sch.step(eps, step_t, x).prev_sample
    return x


def sample_peer(peer: Peer, sde, score_fn, z_T: Tensor, nfe: int) -> dict:
    """Run one scheduler from the prior draw z_T (n, 1, *D) with ``nfe`` score calls.

    Returns {"x": the output (n, *D), "nfe": the score calls made, "t_start", "t_end": the VP
    times of the first and last noise levels}.
    """
    _check_vp(sde)
    sch = _build(peer, sde)
    if peer.solver_only:
        ts = _set_kinetic_grid(sch, sde, nfe)
        times = [float(t) for t in ts[:-1]]
        t_start, t_end = float(ts[0]), float(ts[-1])
    else:
        _set_timesteps(sch, nfe)
        sig = [float(v) for v in sch.sigmas]
        # stop before the void last step of Karras / lambda-uniform spacings
        steps = next((i for i in range(len(sch.timesteps)) if _zero_length(sig[i], sig[i + 1])), len(sch.timesteps))
        if peer.betas == "exact":
            times = [_time_of_sigma(sde, sig[i]) for i in range(steps)]
        else:  # a kinetic-trained model called with diffusers' integer timestep
            times = [(int(sch.timesteps[i]) + 1) * sde.T / TRAIN_STEPS for i in range(steps)]
        t_start, t_end = _time_of_sigma(sde, sig[0]), _time_of_sigma(sde, sig[steps])
    x = _run_steps(sch, sde, score_fn, z_T, times)
    return {"x": x, "nfe": len(times), "t_start": t_start, "t_end": t_end}


# ------------------------------------------------------------------ the benchmark
def run(problems=("mixture4", "gauss64"), nfes=NFES, n: int = 20_000, n_path: int = 500, peers=None,
        kinetic_configs=None, seed: int = 0, rtol: float = 1e-10, log=None) -> dict:
    """Peers and kinetic's samplers on VP: distribution and pathwise errors at each NFE.

    The problems are sampled together as one `problems.Product` state, as in `fewstep.run`, from
    the same prior draw and against the same exact flow. Returns {"schedule": `schedule_mismatch`,
    "kinetic": the `fewstep.run` result for VP (always with `DEFAULT` among its configurations), "peers":
    {problem: {label: [rows {target, nfe, error, path_error, t_start, t_end}]}}, "solver_only": the labels
    of the peers run on `kinetic_grid`, "nfes", "seconds"}.
    """
    sde = fewstep.PRESETS["vp"]()
    peers = [p for p in PEERS if peers is None or p.label in peers]
    if kinetic_configs is not None and DEFAULT not in kinetic_configs:  # the baseline of "best peer / default"
        kinetic_configs = (DEFAULT, *kinetic_configs)
    t0 = time.perf_counter()
    refs: dict = {}
    kin = fewstep.run(problems, ["vp"], nfes, n, n_path, kinetic_configs, seed, rtol, log, references=refs)
    ref = refs["vp"]
    out = {"schedule": schedule_mismatch(sde), "kinetic": kin, "nfes": list(nfes), "peers": {p: {} for p in problems},
           "solver_only": [peer.label for peer in peers if peer.solver_only], "kinetic_seconds": time.perf_counter() - t0}
    laws = {p: pb.problem(p) for p in problems}
    joint = pb.Product(laws)
    errors = {p: (joint.slices[p], fewstep.distribution_error(law)) for p, law in laws.items()}
    sf = joint.score_fn(sde)
    for peer in peers:
        rows: dict[str, list] = {p: [] for p in problems}
        for target in nfes:
            r = sample_peer(peer, sde, sf, ref.z_T, target)
            for p, (sl, error) in errors.items():
                x = r["x"][:, sl]
                rows[p].append({"target": target, "nfe": r["nfe"], "error": error(x),
                                "path_error": pb.pathwise_error(x[: ref.x_ref.shape[0]], ref.x_ref[:, sl]),
                                "t_start": r["t_start"], "t_end": r["t_end"]})
        for p in problems:
            out["peers"][p][peer.label] = rows[p]
            if log:
                log(f"peers {p:8s} {peer.label:40s} "
                    + " ".join(f"{r['error']:.3g}/{r['path_error']:.2g}@{r['nfe']}" for r in rows[p]))
    out["seconds"] = time.perf_counter() - t0
    return out


def _kinetic_best(res: dict, problem: str, target: int, key: str) -> dict | None:
    return fewstep.best(res["kinetic"], problem, "vp", target, key)


def _kinetic_default(res: dict, problem: str, target: int, key: str) -> dict | None:
    """`kinetic.sample` with its defaults (`DEFAULT`) at NFE <= target, as `fewstep.best` gives it."""
    return fewstep.best(res["kinetic"], problem, "vp", target, key, labels=[DEFAULT])


def _solver_only(res: dict) -> set:
    """The peer labels run on kinetic's grid (a JSON from before they existed: none)."""
    return set(res.get("solver_only", ()))


def _best_peer(res: dict, problem: str, j: int, key: str) -> tuple[str, float]:
    """(label, value) of the smallest ``key`` at the j-th NFE over every peer, the solver-only rows on
    kinetic's grid included, among those within the budget."""
    t = res["nfes"][j]
    vals = {lab: rows[j][key] for lab, rows in res["peers"][problem].items() if rows[j]["nfe"] <= t}
    lab = min(vals, key=vals.get)
    return lab, vals[lab]


def _ratio_row(title: str, res: dict, p: str, key: str, base) -> str:
    cells = []
    for j, t in enumerate(res["nfes"]):
        b = base(res, p, t, key)
        lab, v = _best_peer(res, p, j, key)
        cells.append("-" if b is None else f"{v / b['value']:.2f} ({lab})")
    return f"| **{title}** | " + " | ".join(cells) + " |"


def to_markdown(res: dict) -> str:
    """The schedule check, then per problem and error: the peers on their own schedules, the
    solver-only rows (diffusers' rules on kinetic's grid), the `kn.sample` default, kinetic's best,
    the ratios of the best peer to each, and the sentences of `_wins`."""
    m = res["schedule"]
    lines = [
        "Schedule check: diffusers' default betas (linear 1e-4 .. 0.02, 1000 steps) against `kn.vp()` at "
        f"t_i = (i + 1)/1000: |log alpha_bar| differs by up to {m['max_abs_log_alpha_bar']:.3g} (step "
        f"{m['at_log_alpha_bar']}), sigma = sqrt(1 - alpha_bar) by up to {100 * m['max_rel_sigma']:.2g}% (relative, "
        f"step {m['at_rel_sigma']}), the log-SNR lambda by up to {m['max_abs_lambda']:.3g} (step {m['at_lambda']}). "
        f"sigma/alpha at step 0: {m['sigma_over_alpha_first']['diffusers']:.5g} (diffusers) against "
        f"{m['sigma_over_alpha_first']['kinetic']:.5g} (kinetic at t = 1e-3); at step 999: "
        f"{m['sigma_over_alpha_last']['diffusers']:.5g} against {m['sigma_over_alpha_last']['kinetic']:.5g}. "
        "The comparison below therefore builds every scheduler with `trained_betas` that reproduce kinetic's "
        "alpha_bar(t_i) exactly and evaluates the score at the scheduler's own noise level; the two "
        "'default betas' rows keep diffusers' schedule and feed the score at t = (timestep + 1)/1000.", ""]
    only = _solver_only(res)
    if only:
        lines += [f"Rows marked *{SOLVER_ONLY}* run diffusers' update rules on the times `kn.sample`'s default "
                  "steps through at that NFE (the `band` grid for VP) and evaluate the score there: they compare "
                  "the update rules alone. \"best peer\" is the best of every peer row, those included; "
                  "\"kinetic, `kn.sample` default\" is `kn.sample(sde, score, shape, steps=NFE, t_eps=1e-3)` with "
                  "nothing else set.", ""]
    nfe_head = "| method | " + " | ".join(f"NFE {t}" for t in res["nfes"]) + " |"
    rule = "|---|" + "---:|" * len(res["nfes"])
    for p, per_peer in res["peers"].items():
        kin = res["kinetic"]
        fl = kin["floor"][p]
        for key, title in (("error", f"{p} (n = {kin['n'][p]}; floor {fl:.4g}): distribution error (ratio to the floor)"),
                           ("path_error", f"{p}: pathwise error")):
            if key == "path_error":
                lines.append("")
            lines += [f"#### {title}", "", nfe_head, rule]
            f = fl if key == "error" else None

            def cells(rows):
                return " | ".join(fewstep.cell(r[key], f) + ("" if r["nfe"] == r["target"] else f" @{r['nfe']}")
                                  for r in rows)

            for label, rows in per_peer.items():
                if label not in only:
                    lines.append(f"| {label} | {cells(rows)} |")
            for label, rows in per_peer.items():
                if label in only:
                    lines.append(f"| {label} *({SOLVER_ONLY})* | {cells(rows)} |")
            kd = [_kinetic_default(res, p, t, key) for t in res["nfes"]]
            lines.append("| **kinetic, `kn.sample` default** | " + " | ".join(
                "-" if b is None else fewstep.cell(b["value"], f) for b in kd) + " |")
            kb = [_kinetic_best(res, p, t, key) for t in res["nfes"]]
            lines.append("| **kinetic, best** | " + " | ".join(
                "-" if b is None else f"{fewstep.cell(b['value'], f)}: {fewstep.config_name(b)}" for b in kb) + " |")
            lines.append(_ratio_row("best peer / default", res, p, key, _kinetic_default))
            lines.append(_ratio_row("best peer / best kinetic", res, p, key, _kinetic_best))
        lines += ["", _wins(res, p), ""]
    return "\n".join(lines)


def _beats(res: dict, p: str, key: str, base) -> list[str]:
    """"NFE t: label (r x smaller)" wherever the best peer is below ``base`` (ratio < 1); on the
    distribution error with ``base`` below 1.2x the floor, also "both at the Monte Carlo floor"."""
    wins = []
    for j, t in enumerate(res["nfes"]):
        b = base(res, p, t, key)
        lab, v = _best_peer(res, p, j, key)
        if b is not None and v < b["value"]:
            at_floor = key == "error" and b["value"] < 1.2 * res["kinetic"]["floor"][p]
            wins.append(f"NFE {t}: {lab} ({b['value'] / v:.2f}x smaller"
                        + ("; both at the Monte Carlo floor, so within noise)" if at_floor else ")"))
    return wins


def _wins(res: dict, p: str) -> str:
    """Per baseline (the `kn.sample` default, kinetic's best) and error: where the best peer, the
    solver-only rows included, beats it and by how much."""
    out = []
    for base, name in ((_kinetic_default, "the `kn.sample` default"), (_kinetic_best, "kinetic's best")):
        for key, what in (("error", "distribution error"), ("path_error", "pathwise error")):
            wins = _beats(res, p, key, base)
            out.append(f"Peers beat {name} on the {what} at " + "; ".join(wins) + "." if wins
                       else f"No peer beats {name} on the {what} at any NFE.")
    return f"{p}: " + " ".join(out)


def plot(res: dict, path: str) -> None:
    """Error against NFE, one line per method: kinetic's best of all its samplers and grids (black), the
    `kn.sample` default (red), kinetic's other deterministic samplers at their best grid (solid), each peer
    on its own schedule (dashed) and on kinetic's grid (solver-only, dotted); per problem, the
    distribution and the pathwise error."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probs = list(res["peers"])
    fig, axes = plt.subplots(len(probs), 2, figsize=(11, 3.8 * len(probs)), squeeze=False)
    kin = res["kinetic"]
    kin_labels = [lab for lab, det in kin["deterministic"].items() if det and lab != DEFAULT]
    only = _solver_only(res)
    peer_labels = list(next(iter(res["peers"].values())))
    cmap = plt.get_cmap("tab20")
    color = {lab: cmap(i % 20) for i, lab in enumerate(kin_labels + peer_labels)}
    for i, p in enumerate(probs):
        for j, key in enumerate(("error", "path_error")):
            ax = axes[i][j]
            b = [(t, fewstep.best(kin, p, "vp", t, key)) for t in res["nfes"]]
            ax.plot([t for t, v in b if v], [v["value"] for t, v in b if v], "-", color="k", lw=2.5, marker="o",
                    ms=4, label="kinetic, best of all samplers and grids")
            d = [(t, _kinetic_default(res, p, t, key)) for t in res["nfes"]]
            ax.plot([t for t, v in d if v], [v["value"] for t, v in d if v], "-", color="tab:red", lw=2.2,
                    marker="D", ms=4, label="kinetic, kn.sample default")
            for label in kin_labels:
                pts = [(t, fewstep.best(kin, p, "vp", t, key, labels=[label])) for t in res["nfes"]]
                pts = [(t, v["value"]) for t, v in pts if v is not None]
                ax.plot(*zip(*pts), "-", marker="o", ms=3, lw=1.2, color=color[label], label=f"kinetic {label}")
            for label, rows in res["peers"][p].items():
                ax.plot([r["nfe"] for r in rows], [r[key] for r in rows], ":" if label in only else "--",
                        marker="s", ms=3, lw=1.6 if label in only else 1.2, color=color[label],
                        label=f"{label} (solver-only)" if label in only else label)
            if key == "error":
                ax.axhline(kin["floor"][p], color="gray", lw=1, ls="-.", label="floor (exact samples)")
            fewstep.nfe_axis(ax, res["nfes"])
            ax.set_title(f"VP / {p}: {'distribution' if key == 'error' else 'pathwise'} error", fontsize=9)
    fewstep.save_figure(fig, axes, path, 0.68)


# ------------------------------------------------------------------ entry points
def docs_block(res: dict) -> str:
    """The block of docs/benchmarks.md: command, machine, the figure and `to_markdown`."""
    from .report import machine_line

    v = res.get("diffusers", "?")
    return (f"Command: `{res['command']}` ({res['seconds'] / 60:.1f} min). Machine: {machine_line(res['machine'])}, "
            f"float64 state; diffusers {v}. VP only; the same problems, prior draws (seed 0), exact score and error "
            "measures as the kinetic tables above; kinetic's side is `kn.sample` with its defaults and the best of all "
            "its samplers and grids at each NFE (pathwise: the deterministic ones). The peers' pathwise errors on "
            "their own schedules are limited by diffusers' float32 "
            "schedule (1 - alpha_bar near t = 0 has about 4 digits), far below the errors at these NFE; the "
            "solver-only rows use float64 sigmas (DPM-Solver++'s step still computes its state in float32).\n\n"
            "![peers against kinetic on VP](figures/peer_samplers.png)\n\n" + to_markdown(res))


SIZES = {
    False: {"nfes": NFES, "n": 20_000, "n_path": 500, "rtol": 1e-10},
    True: {"nfes": (*NFES, 100), "n": 20_000, "n_path": 2000, "rtol": 1e-10},
}


def main(full: bool = False, out_dir: str | None = "docs", log=None, command: str | None = None) -> dict:
    """Run the comparison; with out_dir, write out_dir/figures/peer_samplers.{json,png} and the
    "few-step-peers" block of out_dir/benchmarks.md. Reduced: NFE 3 ... 50, n = 20000, 500 samples
    for the pathwise error; full: also NFE 100 and 2000 pathwise samples."""
    import os

    import diffusers

    from .report import machine_info, replace_section, write_outputs

    res = run(log=log, **SIZES[bool(full)])
    command = command or "python benchmarks/peer_samplers.py" + (" --full" if full else "")
    res["machine"], res["command"], res["diffusers"] = machine_info(), command, diffusers.__version__
    if out_dir is not None:
        write_outputs(out_dir, {"figures/peer_samplers.json": res})
        plot(res, os.path.join(out_dir, "figures", "peer_samplers.png"))
        replace_section(os.path.join(out_dir, "benchmarks.md"), "few-step-peers", docs_block(res),
                        title="### Peers on VP: diffusers' multistep schedulers")
    return res


def cli(argv=None) -> None:
    """``python benchmarks/peer_samplers.py [--full] [--out DIR] [--threads N]``."""
    from .report import bench_parser, command_line, parse

    p = bench_parser(__doc__.splitlines()[0], full_help="also NFE 100, 2000 samples for the pathwise error",
                     out_help="writes OUT/figures/peer_samplers.{json,png} and a block of OUT/benchmarks.md")
    a = parse(p, argv)
    res = main(a.full, a.out, log=lambda line: print(line, flush=True), command=command_line("peer_samplers.py", argv))
    print(to_markdown(res))


if __name__ == "__main__":
    cli()
