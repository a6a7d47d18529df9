"""Mixing of the forward processes: how fast does the FULL state z_t forget the data?

The question behind the mixing study (docs/study.md) and HOLD's claim that third-order dynamics "reduce the mixing time by
two orders of magnitude": the distance KL(p_t || prior) between the forward marginal of the full
state z_t = (x_t, v_t, a_t, ...) (data pushed forward, auxiliaries started from ``aux_cov``) and the
prior N(0, P kron I), P = ``sde.stationary_cov``, as a function of t, and the time to reach a tolerance.
The exact KL and W2 (Gaussian data of any d, mixtures with d <= 2) are `kinetic.divergence`; this
module is the study around them: the datasets, the clocks, tolerance times, checks, figures, tables.

Every curve is computed in tau = B(t), on the SDE's unit clock (the same A, G, aux_cov with beta = 1,
`unit_clock`); each normalisation is a change of clock, so KL as a function of tau is one curve:
    time       the presets as they are (cld beta=4, hold beta=4, langevin(k) beta=8, VP linear beta);
    noise      constant beta with beta tr(D) = 1: int_0^t beta tr(D) ds = t, equal total noise injected
               (tr(D) = g2 for one noised block);
    noise_rel  beta tr(P_NN^-1 D_NN) = 1: the noise measured in units of the stationary variance of the
               noised blocks (invariant under rescaling the auxiliary variables; g2 / P[k,k] for one block);
    spectral   beta * (-max Re eig A) = 1: the same spectral abscissa (slowest exponential rate).

The mixture KL is checked against a Monte Carlo estimate with the exact mixture density
(`kinetic.analytic`) and bounded above by joint convexity, KL <= sum_j w_j KL(N_j || q).

    python benchmarks/mixing.py [--full] [--out docs]
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

import kinetic as kn
from kinetic.analytic import GaussianData, GaussianMixture
from kinetic.divergence import gaussian_kl, gaussian_w2, mixture_kl
from kinetic.schedules import ConstantSchedule

from .report import machine_info, md_table, standard_cli, write_outputs

__all__ = [
    "Dataset",
    "NORMALISATIONS",
    "digits_gaussian",
    "synthetic_gaussian",
    "cifar_like_spectrum",
    "gaussians8_mixture",
    "asymmetric_mixture",
    "DATASETS",
    "unit_clock",
    "kl",
    "mixture_kl_bound",
    "mixture_kl_mc",
    "clock_rate",
    "normalise",
    "tau_of_t",
    "t_of_tau",
    "time_to_tolerance",
    "default_sdes",
    "run",
    "main",
    "cli",
    "to_markdown",
    "headline",
]

NORMALISATIONS = ("time", "noise", "noise_rel", "spectral")
_NORM_LABEL = {
    "time": "(a) equal time scale: presets' defaults, t",
    "noise": "(b) equal noise injected: int beta g2 dt = t",
    "noise_rel": "(b') equal noise / stationary var of noised block",
    "spectral": "(c) equal spectral abscissa: -max Re eig(beta A) = 1",
}
F64 = torch.float64
TAU_MAX = 1e6  # the unit clock's horizon: far beyond every tolerance time of the study


# --------------------------------------------------------------------------- data


@dataclass
class Dataset:
    """A law of the study with its label: ``law`` is a `kinetic.analytic.GaussianData`, a spectrum
    (variances (d,) >= 0, mean (d,) in the eigenbasis: see `kinetic.divergence.gaussian_kl`) or a
    `kinetic.analytic.GaussianMixture` with one common std."""

    name: str
    law: object
    note: str = ""

    @property
    def is_mixture(self) -> bool:
        return isinstance(self.law, GaussianMixture)

    @property
    def dim(self) -> int:
        return self.law.dim if isinstance(self.law, (GaussianData, GaussianMixture)) else int(self.law[0].numel())


def _spectrum_of(mean, cov) -> tuple[Tensor, Tensor]:
    """(eigenvalues clamped at 0, mean in the eigenbasis) of a positive semi-definite cov."""
    s, V = torch.linalg.eigh(0.5 * (cov + cov.T))
    return s.clamp_min(0.0), V.T @ mean


def digits_gaussian() -> tuple[Tensor, Tensor]:
    """Spectrum of sklearn's 8x8 digits in [-1, 1] (d = 64), empirical mean and covariance. Four pixels
    are constant, so the covariance is singular: a spectrum, not a `GaussianData` (which needs S > 0)."""
    from kinetic.data import load_digits

    x = load_digits().reshape(-1, 64).to(F64)
    mean = x.mean(0)
    xc = x - mean
    return _spectrum_of(mean, xc.T @ xc / (x.shape[0] - 1))


def synthetic_gaussian() -> GaussianData:
    """d = 2: mean (1.5, -1), eigenvalues 3 and 0.01 rotated by 30 degrees (non-unit, far from the prior)."""
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    R = torch.tensor([[c, -s], [s, c]], dtype=F64)
    return GaussianData([1.5, -1.0], R @ torch.diag(torch.tensor([3.0, 0.01], dtype=F64)) @ R.T)


def cifar_like_spectrum(d: int = 3072, mean_pixel: float = -0.05, pixel_var: float = 0.25) -> tuple[Tensor, Tensor]:
    """A CIFAR-like synthetic spectrum (no CIFAR needed): s_i proportional to 1/i (natural images'
    1/f^2 power spectrum), total variance d * pixel_var, top direction the constant (DC) image,
    mean mean_pixel in every pixel (so along the DC direction only)."""
    i = torch.arange(1, d + 1, dtype=F64)
    s = 1.0 / i
    s = s * (d * pixel_var / float(s.sum()))
    m = torch.zeros(d, dtype=F64)
    m[0] = mean_pixel * math.sqrt(d)
    return s, m


def gaussians8_mixture() -> GaussianMixture:
    """kinetic.data's gaussians8 toy: 8 N(mu_j, 0.1^2 I), radius sqrt(2 (1 - 0.01)), zero mean, unit variance."""
    return GaussianMixture.ring(8, math.sqrt(2.0 * (1.0 - 0.01)), 0.1)


def asymmetric_mixture() -> GaussianMixture:
    """Two unequal components with a nonzero overall mean: weights (0.3, 0.7), means (-1, 1), (1.5, 0.5), std 0.2."""
    return GaussianMixture([0.3, 0.7], [[-1.0, 1.0], [1.5, 0.5]], 0.2)


def _cifar_note(d: int = 3072, pixel_var: float = 0.25, mean_pixel: float = -0.05) -> str:
    top = float(cifar_like_spectrum(d, mean_pixel, pixel_var)[0][0])
    return f"synthetic: s_i ~ 1/i, total var {d}x{pixel_var}, mean {mean_pixel}/pixel (top s_1 = {top:.1f})"


DATASETS: dict[str, tuple[Callable[[], object], Callable[[], str]]] = {
    "synthetic2": (synthetic_gaussian, lambda: "mean (1.5, -1), variances 3 and 0.01 (rotated)"),
    "digits64": (digits_gaussian, lambda: "digits (1797 x 64) empirical mean/cov; 4 pixels have zero variance"),
    "cifarlike3072": (cifar_like_spectrum, _cifar_note),
    "gaussians8": (gaussians8_mixture, lambda: "the gaussians8 toy (8 components, std 0.1)"),
    "asym2": (asymmetric_mixture, lambda: "weights (0.3, 0.7), means (-1, 1), (1.5, 0.5), std 0.2"),
}
"""name -> (law maker, note maker): the study's datasets."""


def _datasets(names) -> dict[str, Dataset]:
    return {n: Dataset(n, DATASETS[n][0](), DATASETS[n][1]()) for n in names}


# --------------------------------------------------------------------------- clocks


def _constant_beta(sde: kn.LinearSDE, beta: float, T: float, name: str, params: dict) -> kn.LinearSDE:
    return kn.LinearSDE(
        sde.drift_matrix, sde.diffusion_matrix, schedule=ConstantSchedule(beta),
        aux_cov=sde.aux_cov if sde.order > 1 else None, T=T, name=name, params={**sde.params, **params},
    )


@functools.lru_cache(maxsize=64)
def unit_clock(sde: kn.LinearSDE, T: float = TAU_MAX) -> kn.LinearSDE:
    """The same A, G and aux_cov with beta = 1 on [0, T]: its time is the original's tau = B(t) (cached)."""
    return _constant_beta(sde, 1.0, T, f"{sde.name}[tau]", {})


def kl(sde: kn.LinearSDE, tau, data: Dataset) -> Tensor:
    """KL(p_tau || prior) of the full state at tau (n,) for a study dataset: (n,) float64."""
    u = unit_clock(sde)
    tau = torch.as_tensor(tau, dtype=F64).reshape(-1)
    return mixture_kl(u, tau, data.law)["kl"] if data.is_mixture else gaussian_kl(u, tau, data.law)


def mixture_kl_bound(sde: kn.LinearSDE, t, mix: GaussianMixture) -> Tensor:
    """Upper bound by joint convexity: KL(sum w_j N_j || q) <= sum_j w_j KL(N_j || q): (n,)."""
    var = torch.full((mix.dim,), float(mix.std[0]) ** 2, dtype=F64)
    return sum(float(w) * gaussian_kl(sde, t, (var, m)) for w, m in zip(mix.weights, mix.means))


def mixture_kl_mc(
    sde: kn.LinearSDE,
    t: float,
    mix: GaussianMixture,
    n: int = 20_000,
    generator: torch.Generator | None = None,
    estimator: str = "plain",
) -> tuple[float, float]:
    """Monte Carlo KL(p_t || prior) with the exact mixture density: (estimate, standard error).

    Draws x0 from the mixture and z_t with ``sde.perturb``; averages log(p/q) ("plain") or the
    control-variate form log(p/q) + q/p - 1 ("cv": >= 0 pointwise, relative error O(n^-1/2) as
    KL -> 0, but q/p is heavy-tailed when KL is large: use "plain" there).
    """
    if estimator not in ("plain", "cv"):
        raise ValueError(f"estimator must be 'plain' or 'cv', got {estimator!r}")
    x0 = mix.sample(n, generator)
    tt = torch.tensor(float(t), dtype=F64)
    z, _ = sde.perturb(x0, tt, generator=generator)
    x = sde.prior_logp(z) - mix.marginal_log_prob(sde, z, tt)  # log q - log p
    vals = -x if estimator == "plain" else torch.expm1(x) - x
    return float(vals.mean()), float(vals.std() / math.sqrt(n))


def clock_rate(sde: kn.LinearSDE, how: str) -> float | None:
    """beta' of the normalised SDE (tau = beta' t), or None for "time" (the preset's own schedule)."""
    if how == "time":
        return None
    if how == "noise":
        return 1.0 / float(torch.trace(sde.noise_block))
    if how == "noise_rel":
        N = list(sde.noised_blocks)
        P_N = sde.stationary_cov[N][:, N]
        return 1.0 / float(torch.trace(torch.linalg.solve(P_N, sde.noise_block)))
    if how == "spectral":
        return 1.0 / sde.mixing_rate()
    raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {how!r}")


def normalise(sde: kn.LinearSDE, how: str, T: float = 100.0) -> kn.LinearSDE:
    """The SDE under a normalisation: the preset itself for "time", else the same A, G, aux_cov
    with a constant beta' chosen so that beta' tr(D) = 1 ("noise"), beta' tr(P_NN^-1 D_NN) = 1
    ("noise_rel") or beta' (-max Re eig A) = 1 ("spectral")."""
    b = clock_rate(sde, how)
    if b is None:
        return sde
    return _constant_beta(sde, b, T, f"{sde.name}[{how}]", {"normalisation": how, "beta": b})


def tau_of_t(sde: kn.LinearSDE, t) -> Tensor:
    """tau = B(t) for any t >= 0 (beyond sde.T the schedule's formula is extended)."""
    return sde.schedule.integral(torch.as_tensor(t, dtype=F64))


def t_of_tau(sde: kn.LinearSDE, tau) -> Tensor:
    return sde.schedule.integral_inverse(torch.as_tensor(tau, dtype=F64), float("inf"))


def time_to_tolerance(fn: Callable[[Tensor], Tensor], tol: float, tau0: float = 1.0, iters: int = 60,
                      tau_max: float = TAU_MAX) -> float:
    """Smallest tau with fn(tau) <= tol for a nonincreasing fn (KL to a stationary law is), by bisection."""
    hi = tau0
    while float(fn(torch.tensor([hi]))[0]) > tol:
        hi *= 2.0
        if hi > tau_max:
            raise RuntimeError(f"time_to_tolerance: tolerance {tol:g} not reached by tau = {tau_max:g}")
    lo = 0.0
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if float(fn(torch.tensor([mid]))[0]) <= tol:
            hi = mid
        else:
            lo = mid
        if hi - lo <= 1e-10 * hi:
            break
    return hi


# --------------------------------------------------------------------------- the study


def default_sdes() -> dict[str, kn.LinearSDE]:
    """VP, CLD, HOLD and the critically damped chains langevin(1..6), presets' defaults."""
    out = {"vp": kn.vp(), "cld": kn.cld(), "hold": kn.hold()}
    for k in range(1, 7):
        out[f"langevin{k}"] = kn.langevin(k)
    return out


@dataclass
class _Config:
    tols: tuple = (1e-3, 1e-5)
    w2_tols: tuple = (1e-2,)
    n_curve: int = 120
    mc_n: int = 20_000
    mixture_curves: int = 40
    datasets: tuple = ("synthetic2", "digits64", "cifarlike3072")
    mixtures: tuple = ("gaussians8", "asym2")
    figures: bool = True
    sdes: dict = field(default_factory=dict)


def run(cfg: _Config, out_dir: str | Path | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Tolerance times (in tau and in each normalisation's clock), KL at the presets' T, curves, figures."""
    t_start = time.perf_counter()
    say = progress or (lambda s: None)
    sdes = cfg.sdes or default_sdes()
    gdata = _datasets(cfg.datasets)
    mdata = _datasets(cfg.mixtures)
    res: dict = {
        "sdes": {name: _sde_summary(name, sde) for name, sde in sdes.items()},
        "datasets": {dname: {"dim": data.dim, "note": data.note, "kind": "mixture" if data.is_mixture else "gaussian"}
                     for dname, data in {**gdata, **mdata}.items()},
        "tolerances": list(cfg.tols), "w2_tolerances": list(cfg.w2_tols),
        "normalisations": {k: _NORM_LABEL[k] for k in NORMALISATIONS}, "tau_star": {}, "t_star": {},
        "kl_at_T": {}, "w2_tau_star": {}, "mixture_checks": [],
    }
    for dname, data in {**gdata, **mdata}.items():
        say(f"tolerance times: {dname}")
        _tolerance_times(res, cfg, sdes, dname, data, dname in gdata)
    res["ratios"] = {dname: _ratios(res["t_star"][dname], sdes) for dname in res["t_star"]}
    _mixture_checks(res, cfg, sdes, mdata)
    res["headline"] = headline(res)
    res["compute_s"] = time.perf_counter() - t_start
    if cfg.figures and out_dir is not None:
        say("figures")
        res["figures"] = _figures(res, sdes, gdata, mdata, cfg, Path(out_dir))
    res["machine"] = machine_info()
    res["wall_s"] = time.perf_counter() - t_start
    return res


def _sde_summary(name: str, sde) -> dict:
    """An SDE's order, tr(G G^T), mixing rate (in tau and, but for VP, in the preset's t), P_kk and clock rates."""
    N = list(sde.noised_blocks)
    return {
        "order": sde.order, "g2": float(torch.trace(sde.noise_block)), "rate_tau": sde.mixing_rate(),
        "rate_t_preset": sde.mixing_rate() * float(sde.beta(torch.tensor(0.0))) if name != "vp" else None,
        "P_kk": float(torch.trace(sde.stationary_cov[N][:, N])),
        **{f"beta_{h}": clock_rate(sde, h) for h in NORMALISATIONS if h != "time"},
    }


def _tolerance_times(res: dict, cfg: _Config, sdes: dict, dname: str, data, gaussian: bool) -> None:
    """Into ``res``: tolerance times in tau (one bisection per SDE and tol), in each normalisation's
    clock (a change of clock), the KL at the preset's T, and for Gaussian data the W2 times."""
    res["tau_star"][dname], res["t_star"][dname], res["kl_at_T"][dname] = {}, {}, {}
    for sname, sde in sdes.items():
        f = lambda tau, s=sde: kl(s, tau, data)  # noqa: E731
        ts = {str(tol): time_to_tolerance(f, tol, tau0=1.0 / sde.mixing_rate()) for tol in cfg.tols}
        res["tau_star"][dname][sname] = ts
        res["t_star"][dname][sname] = {
            how: {tol: float(t_of_tau(normalise(sde, how), v)) for tol, v in ts.items()} for how in NORMALISATIONS
        }
        res["kl_at_T"][dname][sname] = float(f(tau_of_t(sde, sde.T).reshape(1))[0])
    if gaussian:
        res["w2_tau_star"][dname] = {
            sname: {str(tol): time_to_tolerance(lambda tau, s=unit_clock(sde): gaussian_w2(s, tau, data.law), tol,
                                                1.0 / sde.mixing_rate())
                    for tol in cfg.w2_tols}
            for sname, sde in sdes.items()
        }


def _ratios(t_star: dict, sdes: dict) -> dict:
    """Per normalisation, each SDE's tolerance times over VP's and over the OU chain langevin1's."""
    out = {}
    for how in NORMALISATIONS:
        out[how] = {
            sname: {
                tol: {
                    "vs_vp": t_star[sname][how][tol] / t_star["vp"][how][tol] if "vp" in sdes else None,
                    "vs_ou": t_star[sname][how][tol] / t_star["langevin1"][how][tol] if "langevin1" in sdes else None,
                }
                for tol in t_star[sname][how]
            }
            for sname in sdes
        }
    return out


def _mixture_checks(res: dict, cfg: _Config, sdes: dict, mdata: dict) -> None:
    """Into ``res["mixture_checks"]``: a mixture's exact KL vs its bound vs Monte Carlo at a few times."""
    gen = torch.Generator().manual_seed(0)
    for dname, mix in mdata.items():
        for sname in [s for s in ("vp", "cld", "hold", "langevin6") if s in sdes]:
            u = unit_clock(sdes[sname])
            for frac, est in ((0.5, "plain"), (1.0, "cv")):
                tau = frac * res["tau_star"][dname][sname][str(cfg.tols[0])]
                tt = torch.tensor([tau], dtype=F64)
                ex = mixture_kl(u, tt, mix.law)
                mc, se = mixture_kl_mc(u, tau, mix.law, cfg.mc_n, gen, est)
                res["mixture_checks"].append({
                    "data": dname, "sde": sname, "tau": tau, "exact": float(ex["kl"][0]),
                    "negentropy": float(ex["negentropy"][0]), "gauss": float(ex["gauss"][0]),
                    "bound": float(mixture_kl_bound(u, tt, mix.law)[0]), "mc": mc, "mc_se": se,
                    "mc_estimator": est,
                })


# --------------------------------------------------------------------------- figures and tables


def _style(sname: str):
    import matplotlib.cm as cm

    fixed = {"vp": ("black", "--", "VP"), "cld": ("tab:red", ":", "CLD"), "hold": ("tab:blue", ":", "HOLD")}
    if sname in fixed:
        c, ls, lab = fixed[sname]
        return dict(color=c, ls=ls, lw=2.2, label=lab)
    k = int(sname.replace("langevin", ""))
    return dict(color=cm.viridis((k - 1) / 5.5), ls="-", lw=1.3, label=f"langevin({k})")


def _figures(res, sdes, gdata, mdata, cfg, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_dir / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    written = []
    tol_lo = str(cfg.tols[-1])

    def curves(data, fname, title):
        fig, axes = plt.subplots(2, 2, figsize=(11.5, 8.5))
        axes = axes.reshape(-1)
        dname = data.name
        for ax, how in zip(axes, NORMALISATIONS):
            tmax = 1.15 * max(res["t_star"][dname][s][how][tol_lo] for s in sdes)
            tmin = 0.1 * min(res["t_star"][dname][s][how][str(cfg.tols[0])] for s in sdes)
            n = cfg.mixture_curves if data.is_mixture else cfg.n_curve
            t = torch.logspace(math.log10(tmin), math.log10(tmax), n, dtype=torch.float64)
            for sname, sde in sdes.items():
                nsde = normalise(sde, how)
                curve = kl(sde, tau_of_t(nsde, t), data)
                ax.loglog(t.numpy(), curve.clamp_min(1e-30).numpy(), **_style(sname))
            for tol in cfg.tols:
                ax.axhline(tol, color="grey", lw=0.7)
            if how == "time":
                ax.axvline(1.0, color="grey", ls="--", lw=0.7)
            ax.set_ylim(max(1e-9, cfg.tols[-1] * 1e-3), None)
            ax.set_title(_NORM_LABEL[how], fontsize=9)
            ax.set_xlabel("t (normalised clock)" if how != "time" else "t (presets' clock; T = 1 dashed)")
            ax.set_ylabel("KL(p_t || prior), full state")
            ax.grid(alpha=0.3, which="both")
        axes[0].legend(fontsize=7, ncol=2, loc="lower left")
        fig.suptitle(title, fontsize=10)
        fig.tight_layout()
        p = fig_dir / fname
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(str(p))

    main_data = gdata.get("digits64") or next(iter(gdata.values()))
    curves(main_data, "mixing_kl.png", f"Gaussian data {main_data.name} (d={main_data.dim}): {main_data.note}")
    for dname, mix in mdata.items():
        curves(mix, f"mixing_kl_{dname}.png", f"mixture {dname} (d={mix.dim}), exact KL: {mix.note}")

    # ratio of tolerance times to OU vs order (chains langevin(k)), per normalisation and dataset
    ks = [int(s.replace("langevin", "")) for s in sdes if s.startswith("langevin")]
    if "langevin1" in sdes and ks:
        fig, axes = plt.subplots(2, 2, figsize=(11.5, 8.0), sharey=True)
        axes = axes.reshape(-1)
        colours = ["tab:blue", "tab:orange", "tab:green", "tab:purple", "tab:brown", "tab:pink"]
        for ax, how in zip(axes, NORMALISATIONS):
            for dname, col in zip(res["t_star"], colours):
                for tol, ls in zip(cfg.tols, ("-", "--")):
                    r = [res["ratios"][dname][how][f"langevin{k}"][str(tol)]["vs_ou"] for k in ks]
                    ax.plot(ks, r, ls=ls, color=col, marker="o", ms=3, label=f"{dname}, KL tol {tol:g}")
            ax.axhline(1.0, color="k", lw=0.7)
            ax.axhline(0.01, color="tab:red", lw=1.2, ls=":", label="1/100 (the claim)")
            ax.set_yscale("log")
            ax.set_title(_NORM_LABEL[how], fontsize=9)
            ax.set_xlabel("order k of langevin(k)")
            ax.set_ylabel("t*(k) / t*(OU = langevin(1))")
            ax.grid(alpha=0.3, which="both")
        axes[1].legend(fontsize=7, loc="lower right")
        fig.suptitle("time to reach the KL tolerance, relative to order 1 (below 1: order helps)", fontsize=10)
        fig.tight_layout()
        p = fig_dir / "mixing_ratio.png"
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(str(p))
    return written


_SHOW = ("vp", "langevin1", "cld", "langevin2", "hold", "langevin3", "langevin4", "langevin5", "langevin6")


_HEADLINE = (("hold", "vp"), ("hold", "langevin1"), ("hold", "cld"), ("langevin3", "langevin2"), ("langevin6", "langevin1"))


def headline(res: dict) -> list[dict]:
    """Ratios t*(a) / t*(b) of tolerance times for the pairs in _HEADLINE, per normalisation and
    tolerance: the value on each dataset, and the range over datasets (below 1: a mixes faster)."""
    rows = []
    for how in NORMALISATIONS:
        for tol in res["tolerances"]:
            for a, b in _HEADLINE:
                if a not in res["sdes"] or b not in res["sdes"]:
                    continue
                per = {
                    d: res["t_star"][d][a][how][str(tol)] / res["t_star"][d][b][how][str(tol)] for d in res["t_star"]
                }
                rows.append({"normalisation": how, "tol": tol, "pair": f"{a}/{b}", "per_dataset": per,
                             "min": min(per.values()), "max": max(per.values())})
    return rows


def to_markdown(res: dict) -> str:
    """Tables of tolerance times and ratios, one block per dataset."""
    lines = []
    names = [s for s in _SHOW if s in res["sdes"]]
    hl = headline(res)
    if hl:
        dsets = list(res["t_star"])
        lines.append("Ratios of tolerance times t*(first) / t*(second) (below 1: the first mixes faster):")
        lines.append("")
        lines.append("| normalisation | KL tol | pair | " + " | ".join(dsets) + " | range |")
        lines.append("|---|---|---|" + "---|" * (len(dsets) + 1))
        for r in hl:
            vals = " | ".join(f"{r['per_dataset'][d]:.2f}" for d in dsets)
            lines.append(f"| {r['normalisation']} | {r['tol']:g} | {r['pair']} | {vals} | {r['min']:.2f}-{r['max']:.2f} |")
        lines.append("")
    lines.append("| SDE | k | g2 | rate/tau | beta (a) | rate/t (a) | P[k,k] | beta (b) | beta (b') | beta (c) |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for s in names:
        i = res["sdes"][s]
        rt = "linear 0.1..20" if i["rate_t_preset"] is None else f"{i['rate_t_preset']:.3g}"
        beta_a = "0.1 -> 20" if s == "vp" else f"{i['rate_t_preset'] / i['rate_tau']:.3g}"
        lines.append(
            f"| {s} | {i['order']} | {i['g2']:.4g} | {i['rate_tau']:.4g} | {beta_a} | {rt} | {i['P_kk']:.3g} | "
            f"{i['beta_noise']:.4g} | {i['beta_noise_rel']:.4g} | {i['beta_spectral']:.4g} |"
        )
    lines.append("")
    for dname, per in res["t_star"].items():
        info = res["datasets"][dname]
        lines.append(f"#### {dname} (d = {info['dim']}, {info['kind']}): {info['note']}")
        lines.append("")
        head = "| SDE | KL at t=T=1 (a) |"
        sep = "|---|---|"
        for how in NORMALISATIONS:
            for tol in res["tolerances"]:
                head += f" t* {how} {tol:g} (x OU) |"
                sep += "---|"
        lines.append(head)
        lines.append(sep)
        lines += [
            f"| {s} | {res['kl_at_T'][dname][s]:.3g} |" + "".join(
                f" {per[s][how][str(tol)]:.3g} ({res['ratios'][dname][how][s][str(tol)]['vs_ou']:.2f}) |"
                for how in NORMALISATIONS for tol in res["tolerances"])
            for s in names
        ]
        lines.append("")
    if res.get("w2_tau_star"):
        lines += ["W2 (full state) tolerance times under (c), in units of 1/rate:", ""]
        lines += md_table(["data", *names], [
            [f"{dname} W2 <= {tol:g}", *(f"{per[s][str(tol)] * res['sdes'][s]['rate_tau']:.3g}" for s in names)]
            for dname, per in res["w2_tau_star"].items() for tol in res["w2_tolerances"]
        ])
        lines.append("")
    if res.get("mixture_checks"):
        lines.append("| mixture | SDE | tau | exact KL | negentropy part | Gaussian part | convexity bound | MC (+- se) |")
        lines.append("|---|---|---|---|---|---|---|---|")
        for c in res["mixture_checks"]:
            lines.append(
                f"| {c['data']} | {c['sde']} | {c['tau']:.3g} | {c['exact']:.4g} | {c['negentropy']:.3g} | "
                f"{c['gauss']:.4g} | {c['bound']:.4g} | {c['mc']:.4g} +- {c['mc_se']:.2g} ({c['mc_estimator']}) |"
            )
        lines.append("")
    return "\n".join(lines)


def main(full: bool = False, out_dir: str | Path | None = "docs", progress: Callable[[str], None] | None = None) -> dict:
    """The mixing study. Reduced (default): 60 curve points, 10k MC samples; full: 200 points, 200k MC
    samples, 120 mixture curve points. Writes out_dir/figures/mixing_*.png, mixing_results.json, mixing_tables.md."""
    cfg = _Config(
        n_curve=200 if full else 60, mc_n=200_000 if full else 10_000, mixture_curves=120 if full else 24,
        w2_tols=(1e-2, 1e-3) if full else (1e-2,),
    )
    res = run(cfg, out_dir, progress)
    res["full"] = bool(full)
    if out_dir is not None:
        write_outputs(out_dir, {"figures/mixing_results.json": res, "figures/mixing_tables.md": to_markdown(res)})
    return res


def cli(argv: Sequence[str] | None = None) -> None:
    """``python benchmarks/mixing.py [--full] [--out DIR] [--threads N]``."""
    res = standard_cli(argv, main, to_markdown, tag="mixing",
                       description="Mixing time of VP/CLD/HOLD/langevin(k): KL of the full state to the prior.",
                       full_help="denser curves, more MC samples, two W2 tolerances",
                       out_help="writes OUT/figures/mixing_*.{png,json,md}")
    print(f"wall {res['wall_s']:.1f} s (compute {res['compute_s']:.1f} s)")


if __name__ == "__main__":
    cli()
