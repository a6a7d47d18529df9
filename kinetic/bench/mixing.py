"""Mixing of the forward processes: how fast does the FULL state z_t forget the data?

The question behind issue 6 and HOLD's claim that third-order dynamics "reduce the mixing time by
two orders of magnitude": the distance KL(p_t || prior) between the forward marginal of the full
state z_t = (x_t, v_t, a_t, ...) (data pushed forward, auxiliaries started from ``aux_cov``) and the
prior N(0, P kron I), P = ``sde.prior_cov``, as a function of t, and the time to reach a tolerance.

Gaussian data N(mu, S) (exact, any d). The marginal of z_t is Gaussian,

    z_t ~ N(u kron mu, Sigma(t) kron I + (u u^T) kron S),      u = Phi(0, t) e_1 = expm(tau A) e_1,

and because the SDE acts as (A kron I), rotating the data coordinates to the eigenbasis of S
(eigenvalues s_i, mean coordinates m_i) splits the KL into d independent k-dimensional problems:

    KL = sum_i 1/2 [ sum_j (e_ij - log(1 + e_ij)) + m_i^2 u^T P^-1 u ],
    e_ij = eig_j P^-1/2 (C_i - P) P^-1/2,    C_i - P = Phi (S0 - P) Phi^T + s_i u u^T,

written without cancellation (C_i - P is formed directly), so KL is accurate far below 1e-10.
When Sigma(t) is well conditioned the rank-one structure gives a closed form in three scalars per
time (no eigen-solve per direction), which makes d = 3072 as cheap as d = 2. W2 is closed form too.

Mixture data sum_j w_j N(m_j, S_c) with a common component covariance (exact, d <= 2). With q
Gaussian, KL(p || q) = KL(p || N_p) + KL(N_p || q) where N_p is the moment-matched Gaussian
(E_p log q depends on the first two moments only). The first term, the negentropy J(p), is
invariant under invertible affine maps: whitening each eigen-direction i with C_i^-1/2 and rotating
R^k so that C_i^-1/2 u points along e_1 leaves a d-dimensional mixture sum_j w_j N(a * m_j, I_d)
(a_i = sqrt(u^T C_i^-1 u)) times independent standard normals, whose negentropy is zero. So

    KL(p_t || prior) = J( sum_j w_j N(a(t) * m_j, I_d) ) + KL_Gauss(mean m_bar, cov S_c + B),

B the between-component covariance; J is a d-dimensional integral done by the trapezoid rule on a
grid (spectrally accurate for these smooth integrands). Checked against a Monte Carlo estimate
with the exact mixture density, and bounded above by joint convexity, KL <= sum_j w_j KL(N_j || q).

Normalisations (what "equal footing" means; each is a change of clock, KL as a function of
tau = B(t) is the same curve):
    time       the presets as they are (cld beta=4, hold beta=4, langevin(k) beta=8, VP linear beta);
    noise      constant beta with beta g2 = 1: int_0^t beta g2 ds = t, equal total noise injected;
    noise_rel  beta g2 / P[k,k] = 1: the noise measured in units of the stationary variance of the
               noised block (invariant under rescaling the auxiliary variables);
    spectral   beta * (-max Re eig A) = 1: the same spectral abscissa (slowest exponential rate).

    python benchmarks/mixing.py [--full] [--out docs]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor

import kinetic as kn
from kinetic import linalg
from kinetic.schedules import ConstantSchedule

__all__ = [
    "GaussianData",
    "MixtureData",
    "NORMALISATIONS",
    "gaussian_data",
    "digits_gaussian",
    "synthetic_gaussian",
    "cifar_like_gaussian",
    "gaussians8_mixture",
    "asymmetric_mixture",
    "state_moments",
    "gaussian_kl",
    "gaussian_w2",
    "mixture_kl",
    "mixture_kl_bound",
    "mixture_kl_mc",
    "normalise",
    "time_to_tolerance",
    "default_sdes",
    "run",
    "main",
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


# --------------------------------------------------------------------------- data


@dataclass
class GaussianData:
    """N(mu, S) in the eigenbasis of S: ``var`` (d,) eigenvalues s_i >= 0, ``mean`` (d,) coordinates m_i."""

    name: str
    mean: Tensor
    var: Tensor
    note: str = ""

    @property
    def dim(self) -> int:
        return int(self.var.numel())


@dataclass
class MixtureData:
    """sum_j w_j N(m_j, S_c): ``weights`` (J,), ``means`` (J, d), ``comp_cov`` (d, d) shared by all components."""

    name: str
    weights: Tensor
    means: Tensor
    comp_cov: Tensor
    note: str = ""

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def moment_matched(self) -> GaussianData:
        """The Gaussian with the mixture's mean and covariance S_c + B (B: between components)."""
        w = self.weights
        mbar = w @ self.means
        dm = self.means - mbar
        B = dm.T @ (w[:, None] * dm)
        return gaussian_data(f"{self.name}-moments", mbar, self.comp_cov + B)

    def components(self) -> list[GaussianData]:
        return [gaussian_data(f"{self.name}-{j}", m, self.comp_cov) for j, m in enumerate(self.means)]


def gaussian_data(name: str, mean, cov, note: str = "") -> GaussianData:
    """Rotate N(mean, cov) to the eigenbasis of cov (KL and W2 to N(0, P kron I) are invariant)."""
    mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
    cov = torch.as_tensor(cov, dtype=torch.float64)
    d = mean.numel()
    if cov.shape != (d, d):
        raise ValueError(f"cov must be ({d}, {d}) to match mean, got {tuple(cov.shape)}")
    s, V = torch.linalg.eigh(0.5 * (cov + cov.T))
    if float(s.min()) < -1e-9 * max(1.0, float(s.max())):
        raise ValueError("cov must be positive semi-definite")
    return GaussianData(name, V.T @ mean, s.clamp_min(0.0), note)


def digits_gaussian() -> GaussianData:
    """Empirical mean and covariance of sklearn's 8x8 digits in [-1, 1], flattened to d = 64."""
    from kinetic.data import load_digits

    x = load_digits().reshape(-1, 64).to(torch.float64)
    mean = x.mean(0)
    xc = x - mean
    cov = xc.T @ xc / (x.shape[0] - 1)
    return gaussian_data("digits64", mean, cov, "digits (1797 x 64) empirical mean/cov; 4 pixels have zero variance")


def synthetic_gaussian() -> GaussianData:
    """d = 2: mean (1.5, -1), eigenvalues 3 and 0.01 rotated by 30 degrees (non-unit, far from the prior)."""
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    R = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = R @ torch.diag(torch.tensor([3.0, 0.01], dtype=torch.float64)) @ R.T
    return gaussian_data("synthetic2", [1.5, -1.0], cov, "mean (1.5, -1), variances 3 and 0.01 (rotated)")


def cifar_like_gaussian(d: int = 3072, mean_pixel: float = -0.05, pixel_var: float = 0.25) -> GaussianData:
    """A CIFAR-like synthetic spectrum (no CIFAR needed): s_i proportional to 1/i (natural images'
    1/f^2 power spectrum), total variance d * pixel_var, top direction the constant (DC) image,
    mean mean_pixel in every pixel (so along the DC direction only)."""
    i = torch.arange(1, d + 1, dtype=torch.float64)
    s = 1.0 / i
    s = s * (d * pixel_var / float(s.sum()))
    m = torch.zeros(d, dtype=torch.float64)
    m[0] = mean_pixel * math.sqrt(d)
    return GaussianData(
        f"cifarlike{d}", m, s,
        f"synthetic: s_i ~ 1/i, total var {d}x{pixel_var}, mean {mean_pixel}/pixel (top s_1 = {float(s[0]):.1f})",
    )


def gaussians8_mixture() -> MixtureData:
    """kinetic.data's gaussians8 toy: 8 N(mu_j, 0.1^2 I), radius sqrt(2 (1 - 0.01)), zero mean, unit variance."""
    r = math.sqrt(2.0 * (1.0 - 0.01))
    ang = torch.arange(8, dtype=torch.float64) * (math.pi / 4)
    means = r * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
    return MixtureData(
        "gaussians8", torch.full((8,), 1 / 8, dtype=torch.float64), means,
        0.01 * torch.eye(2, dtype=torch.float64), "the gaussians8 toy (8 components, std 0.1)",
    )


def asymmetric_mixture() -> MixtureData:
    """Two unequal components with a nonzero overall mean: weights (0.3, 0.7), means (-1, 1), (1.5, 0.5), std 0.2."""
    return MixtureData(
        "asym2", torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-1.0, 1.0], [1.5, 0.5]], dtype=torch.float64),
        0.04 * torch.eye(2, dtype=torch.float64), "weights (0.3, 0.7), means (-1, 1), (1.5, 0.5), std 0.2",
    )


# --------------------------------------------------------------------------- k x k kernels


def _tau(tau) -> Tensor:
    tau = torch.as_tensor(tau, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(tau).all() or (tau < 0).any():
        raise ValueError("tau must be finite and >= 0")
    return tau


def state_moments(sde: kn.LinearSDE, tau) -> tuple[Tensor, Tensor, Tensor]:
    """u = expm(tau A) e_1 (n, k), Sigma(tau) (n, k, k) and Delta = Sigma - P (n, k, k), float64.

    Sigma is the covariance of z given x0 (auxiliaries from aux_cov). Delta is formed without
    cancellation: Phi (S0 - P) Phi^T for tau ||A|| > 2 (Lyapunov form), Sigma - P below.
    Requires a stationary prior (P = S_inf), i.e. not VE.
    """
    if sde.stationary_cov is None:
        raise ValueError("mixing: the SDE needs a stationary law (VE has none)")
    tau = _tau(tau)
    A, D, S0, P = sde.drift_matrix, sde.noise_matrix, sde.initial_cov, sde.stationary_cov
    k = A.shape[0]
    n = tau.numel()
    norm = float(torch.linalg.matrix_norm(A, ord=1))
    large = tau * norm > 2.0
    phi = torch.empty(n, k, k, dtype=torch.float64)
    sig = torch.empty(n, k, k, dtype=torch.float64)
    delta = torch.empty(n, k, k, dtype=torch.float64)
    if large.any():
        p = linalg.expm(A, tau[large])
        dl = p @ (S0 - P) @ p.transpose(-1, -2)
        phi[large], delta[large], sig[large] = p, dl, P + dl
    if (~large).any():
        p, q = linalg.transition_and_noise(A, D, tau[~large])
        s = p @ S0 @ p.transpose(-1, -2) + q
        phi[~large], sig[~large], delta[~large] = p, s, s - P
    sym = lambda m: 0.5 * (m + m.transpose(-1, -2))  # noqa: E731
    return phi[:, :, 0].clone(), sym(sig), sym(delta)


def _inv_sqrt(P: Tensor) -> Tensor:
    p, W = torch.linalg.eigh(P)
    return W @ torch.diag(p.rsqrt()) @ W.T


def _x_minus_log1p(x: Tensor) -> Tensor:
    """x - log(1 + x) >= 0, accurate for small |x| (series below 1e-4)."""
    small = x.abs() < 1e-4
    xs = torch.where(small, x, torch.zeros_like(x))
    series = xs * xs * (0.5 - xs / 3 + xs * xs / 4)
    return torch.where(small, series, x - torch.log1p(torch.where(small, torch.zeros_like(x), x)))


def gaussian_kl(sde: kn.LinearSDE, tau, data: GaussianData, method: str = "auto", chunk: int = 2_000_000) -> Tensor:
    """KL(p_tau || N(0, P kron I)) of the full state for Gaussian data: (n,) float64 (module docstring).

    method: "eig" (a k x k eigen-solve per direction), "rank1" (closed form in three scalars per
    time, needs Sigma(tau) well conditioned) or "auto" (rank1 where min eig P^-1/2 Sigma P^-1/2
    > 1e-3, eig elsewhere).
    """
    tau = _tau(tau)
    u, sig, delta = state_moments(sde, tau)
    P = sde.stationary_cov
    Ph = _inv_sqrt(P)
    k = P.shape[0]
    v = u @ Ph  # P^-1/2 u (Ph symmetric)
    a = (v * v).sum(-1)  # u^T P^-1 u
    s, m2 = data.var, data.mean**2
    out = torch.empty_like(tau)
    E = Ph @ delta @ Ph  # P^-1/2 Delta P^-1/2
    eD = torch.linalg.eigvalsh(E)  # eigenvalues of P^-1/2 Sigma P^-1/2 minus 1
    if method == "auto":
        use_rank1 = (1.0 + eD.min(-1).values) > 1e-3
    elif method in ("rank1", "eig"):
        use_rank1 = torch.full_like(tau, method == "rank1", dtype=torch.bool)
    else:
        raise ValueError(f"method must be 'auto', 'rank1' or 'eig', got {method!r}")
    mean_term = a * float(m2.sum())
    if use_rank1.any():
        idx = use_rank1.nonzero().squeeze(-1)
        c0 = _x_minus_log1p(eD[idx]).sum(-1)
        Mi = torch.eye(k, dtype=torch.float64) + E[idx]  # P^-1/2 Sigma P^-1/2
        w = torch.linalg.solve(Mi, v[idx].unsqueeze(-1)).squeeze(-1)
        b = (v[idx] * w).sum(-1)  # u^T Sigma^-1 u
        amb = (w * (E[idx] @ v[idx].unsqueeze(-1)).squeeze(-1)).sum(-1)  # a - b = v^T E M^-1 v
        sb = s[None, :] * b[:, None]
        per = s[None, :] * amb[:, None] + _x_minus_log1p(sb)
        out[idx] = 0.5 * (data.dim * c0 + per.sum(-1) + mean_term[idx])
    if (~use_rank1).any():
        idx = (~use_rank1).nonzero().squeeze(-1)
        step = max(1, chunk // max(1, data.dim))
        for lo in range(0, idx.numel(), step):
            ii = idx[lo : lo + step]
            Ei = E[ii].unsqueeze(1) + s[None, :, None, None] * (v[ii, None, :, None] * v[ii, None, None, :])
            e = torch.linalg.eigvalsh(Ei)
            out[ii] = 0.5 * (_x_minus_log1p(e).sum((-1, -2)) + mean_term[ii])
    return out


def gaussian_w2(sde: kn.LinearSDE, tau, data: GaussianData, chunk: int = 2_000_000) -> Tensor:
    """W2(p_tau, N(0, P kron I)) of the full state for Gaussian data: (n,) float64.

    W2^2 = sum_i m_i^2 |u|^2 + tr C_i + tr P - 2 tr (P^1/2 C_i P^1/2)^1/2, C_i = Sigma + s_i u u^T.
    Not invariant under rescaling the auxiliary blocks (unlike KL); absolute floor ~1e-8 sqrt(d).
    """
    tau = _tau(tau)
    u, sig, _ = state_moments(sde, tau)
    P = sde.stationary_cov
    p, W = torch.linalg.eigh(P)
    Psq = W @ torch.diag(p.sqrt()) @ W.T
    s = data.var
    out = torch.empty_like(tau)
    step = max(1, chunk // max(1, data.dim))
    for lo in range(0, tau.numel(), step):
        sl = slice(lo, lo + step)
        C = sig[sl].unsqueeze(1) + s[None, :, None, None] * (u[sl, None, :, None] * u[sl, None, None, :])
        M = Psq @ C @ Psq
        ev = torch.linalg.eigvalsh(0.5 * (M + M.transpose(-1, -2))).clamp_min(0.0)
        tr = torch.diagonal(C, dim1=-2, dim2=-1).sum(-1) + float(torch.trace(P)) - 2 * ev.sqrt().sum(-1)
        w2 = tr.sum(-1) + (u[sl] ** 2).sum(-1) * float((data.mean**2).sum())
        out[sl] = w2.clamp_min(0.0).sqrt()
    return out


# --------------------------------------------------------------------------- mixtures


def _negentropy_unit_mixture(w: Tensor, Y: Tensor, h: float | None = None, pad: float = 9.0) -> float:
    """J = KL(m || N_m) for m = sum_j w_j N(Y_j, I_d), d in {1, 2}, by the trapezoid rule.

    J = int m log(m / N_m) over a box of +-pad around the component means (m is negligible
    outside; N_m, which can be much wider, is not needed there). The trapezoid rule is spectrally
    accurate here: step h = 0.2 agrees with h = 0.02 to ~1e-12 relative for separations 0.1..30
    (tests), leaving a round-off floor of ~1e-16 absolute.
    """
    d = Y.shape[1]
    if d > 2:
        raise ValueError(f"exact mixture KL needs d <= 2 (a d-dimensional quadrature), got d = {d}")
    h = 0.2 if h is None else float(h)
    mbar = w @ Y
    dY = Y - mbar
    covN = torch.eye(d, dtype=torch.float64) + dY.T @ (w[:, None] * dY)
    axes = [torch.arange(float(Y[:, i].min()) - pad, float(Y[:, i].max()) + pad + h, h, dtype=torch.float64) for i in range(d)]
    grid = torch.cartesian_prod(*axes).reshape(-1, d)
    Linv = torch.linalg.inv(torch.linalg.cholesky(covN))
    logdetN = float(torch.logdet(covN))
    logw = torch.log(w)
    c = 0.5 * d * math.log(2 * math.pi)
    total = 0.0
    for lo in range(0, grid.shape[0], 200_000):
        g = grid[lo : lo + 200_000]
        logm = torch.logsumexp(logw[None, :] - 0.5 * ((g[:, None, :] - Y[None]) ** 2).sum(-1), dim=1) - c
        r = (g - mbar) @ Linv.T
        logN = -0.5 * (r * r).sum(-1) - c - 0.5 * logdetN
        total += float((torch.exp(logm) * (logm - logN)).sum())
    return total * h**d


def _mixture_whitened_means(sde: kn.LinearSDE, tau: Tensor, mix: MixtureData) -> tuple[Tensor, Tensor]:
    """For each tau: the means a * (V^T m_j) (n, J, d) of the whitened d-dim mixture, and a (n, d)."""
    u, sig, _ = state_moments(sde, tau)
    s, V = torch.linalg.eigh(mix.comp_cov)
    C = sig.unsqueeze(1) + s[None, :, None, None] * (u[:, None, :, None] * u[:, None, None, :])  # (n, d, k, k)
    uu = u.unsqueeze(1).expand(-1, s.numel(), -1).unsqueeze(-1)
    a = (uu * torch.linalg.solve(C, uu)).sum((-1, -2)).clamp_min(0.0).sqrt()  # (n, d)
    mr = mix.means @ V  # (J, d) coordinates in the eigenbasis of S_c
    return a[:, None, :] * mr[None], a


def mixture_kl(sde: kn.LinearSDE, tau, mix: MixtureData, h: float | None = None) -> dict[str, Tensor]:
    """Exact KL(p_tau || prior) of the full state for mixture data (d <= 2): (n,) tensors.

    Returns {"kl": J + gauss, "negentropy": J, "gauss": KL of the moment-matched Gaussian}.
    """
    tau = _tau(tau)
    Ym, _ = _mixture_whitened_means(sde, tau, mix)
    J = torch.tensor([_negentropy_unit_mixture(mix.weights, Ym[i], h) for i in range(tau.numel())], dtype=torch.float64)
    g = gaussian_kl(sde, tau, mix.moment_matched())
    return {"kl": J + g, "negentropy": J, "gauss": g}


def mixture_kl_bound(sde: kn.LinearSDE, tau, mix: MixtureData) -> Tensor:
    """Upper bound by joint convexity: KL(sum w_j N_j || q) <= sum_j w_j KL(N_j || q): (n,)."""
    tau = _tau(tau)
    return sum(float(w) * gaussian_kl(sde, tau, c) for w, c in zip(mix.weights, mix.components()))


def _mixture_logpdf(z: Tensor, sde: kn.LinearSDE, tau: float, mix: MixtureData) -> tuple[Tensor, Tensor]:
    """log p_tau(z) (exact mixture density) and log prior(z) for z (n, k, d) in the original coordinates."""
    u, sig, _ = state_moments(sde, torch.tensor([float(tau)]))
    u, sig = u[0], sig[0]
    k, d = u.numel(), mix.dim
    cov = torch.kron(sig, torch.eye(d, dtype=torch.float64)) + torch.kron(torch.outer(u, u), mix.comp_cov)
    zf = z.reshape(z.shape[0], k * d)
    comps = [
        torch.distributions.MultivariateNormal(torch.kron(u, m), covariance_matrix=cov).log_prob(zf) for m in mix.means
    ]
    logp = torch.logsumexp(torch.stack(comps, 1) + torch.log(mix.weights)[None], dim=1)
    Pk = torch.kron(sde.stationary_cov, torch.eye(d, dtype=torch.float64))
    logq = torch.distributions.MultivariateNormal(torch.zeros(k * d, dtype=torch.float64), covariance_matrix=Pk).log_prob(zf)
    return logp, logq


def mixture_kl_mc(
    sde: kn.LinearSDE,
    tau: float,
    mix: MixtureData,
    n: int = 20_000,
    generator: torch.Generator | None = None,
    estimator: str = "plain",
) -> tuple[float, float]:
    """Monte Carlo KL with the exact mixture density: (estimate, standard error).

    Samples z_tau = u x0 + (noise of Sigma) with x0 from the mixture and averages log(p/q)
    ("plain") or the control-variate form log(p/q) + q/p - 1 ("cv": >= 0 pointwise, relative
    error O(n^-1/2) as KL -> 0, but q/p is heavy-tailed when KL is large: use "plain" there).
    """
    if estimator not in ("plain", "cv"):
        raise ValueError(f"estimator must be 'plain' or 'cv', got {estimator!r}")
    u, sig, _ = state_moments(sde, torch.tensor([float(tau)]))
    u, sig = u[0], sig[0]
    k, d = u.numel(), mix.dim
    j = torch.multinomial(mix.weights, n, replacement=True, generator=generator)
    Lc = torch.linalg.cholesky(mix.comp_cov)
    x0 = mix.means[j] + torch.randn(n, d, generator=generator, dtype=torch.float64) @ Lc.T
    Ls = linalg.safe_cholesky(sig)
    z = u[None, :, None] * x0[:, None, :] + Ls @ torch.randn(n, k, d, generator=generator, dtype=torch.float64)
    logp, logq = _mixture_logpdf(z, sde, tau, mix)
    x = logq - logp
    vals = -x if estimator == "plain" else torch.expm1(x) - x
    return float(vals.mean()), float(vals.std() / math.sqrt(n))


# --------------------------------------------------------------------------- normalisations


def clock_rate(sde: kn.LinearSDE, how: str) -> float | None:
    """beta' of the normalised SDE (tau = beta' t), or None for "time" (the preset's own schedule)."""
    if how == "time":
        return None
    if how == "noise":
        return 1.0 / sde.g2
    if how == "noise_rel":
        return float(sde.stationary_cov[-1, -1]) / sde.g2
    if how == "spectral":
        return 1.0 / sde.mixing_rate()
    raise ValueError(f"normalisation must be one of {NORMALISATIONS}, got {how!r}")


def normalise(sde: kn.LinearSDE, how: str, T: float = 100.0) -> kn.LinearSDE:
    """The SDE under a normalisation: the preset itself for "time", else the same A, G, aux_cov
    with a constant beta' chosen so that beta' g2 = 1 ("noise"), beta' g2 / P[k,k] = 1
    ("noise_rel") or beta' (-max Re eig A) = 1 ("spectral")."""
    b = clock_rate(sde, how)
    if b is None:
        return sde
    return kn.LinearSDE(
        sde.drift_matrix, sde.diffusion_matrix, schedule=ConstantSchedule(b),
        aux_cov=sde.aux_cov if sde.order > 1 else None, T=T,
        name=f"{sde.name}[{how}]", params={**sde.params, "normalisation": how, "beta": b},
    )


def tau_of_t(sde: kn.LinearSDE, t) -> Tensor:
    """tau = B(t) for any t >= 0 (beyond sde.T the schedule's formula is extended)."""
    return sde.schedule.integral(torch.as_tensor(t, dtype=torch.float64))


def t_of_tau(sde: kn.LinearSDE, tau) -> Tensor:
    return sde.schedule.integral_inverse(torch.as_tensor(tau, dtype=torch.float64), float("inf"))


def time_to_tolerance(fn: Callable[[Tensor], Tensor], tol: float, tau0: float = 1.0, iters: int = 60) -> float:
    """Smallest tau with fn(tau) <= tol for a nonincreasing fn (KL to a stationary law is), by bisection."""
    hi = tau0
    for _ in range(200):
        if float(fn(torch.tensor([hi]))[0]) <= tol:
            break
        hi *= 2.0
    else:  # pragma: no cover
        raise RuntimeError("time_to_tolerance: tolerance not reached")
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


def _datasets(names) -> dict:
    makers = {
        "synthetic2": synthetic_gaussian, "digits64": digits_gaussian, "cifarlike3072": cifar_like_gaussian,
        "gaussians8": gaussians8_mixture, "asym2": asymmetric_mixture,
    }
    return {n: makers[n]() for n in names}


def run(cfg: _Config, out_dir: str | Path | None = None, progress: Callable[[str], None] | None = None) -> dict:
    """Tolerance times (in tau and in each normalisation's clock), KL at the presets' T, curves, figures."""
    t_start = time.perf_counter()
    say = progress or (lambda s: None)
    sdes = cfg.sdes or default_sdes()
    gdata = _datasets(cfg.datasets)
    mdata = _datasets(cfg.mixtures)
    res: dict = {
        "sdes": {}, "datasets": {}, "tolerances": list(cfg.tols), "w2_tolerances": list(cfg.w2_tols),
        "normalisations": {k: _NORM_LABEL[k] for k in NORMALISATIONS}, "tau_star": {}, "t_star": {},
        "kl_at_T": {}, "w2_tau_star": {}, "mixture_checks": [],
    }
    for name, sde in sdes.items():
        res["sdes"][name] = {
            "order": sde.order, "g2": sde.g2, "rate_tau": sde.mixing_rate(),
            "rate_t_preset": sde.mixing_rate() * float(sde.beta(torch.tensor(0.0))) if name != "vp" else None,
            "P_kk": float(sde.stationary_cov[-1, -1]),
            **{f"beta_{h}": clock_rate(sde, h) for h in NORMALISATIONS if h != "time"},
        }
    for dname, data in {**gdata, **mdata}.items():
        res["datasets"][dname] = {"dim": data.dim, "note": data.note, "kind": "mixture" if dname in mdata else "gaussian"}

    def kl_fn(sde, data):
        if isinstance(data, MixtureData):
            return lambda tau: mixture_kl(sde, tau, data)["kl"]
        return lambda tau: gaussian_kl(sde, tau, data)

    # tolerance times in tau (one bisection per SDE/data/tol); each normalisation is a change of clock
    for dname, data in {**gdata, **mdata}.items():
        say(f"tolerance times: {dname}")
        res["tau_star"][dname], res["t_star"][dname], res["kl_at_T"][dname] = {}, {}, {}
        for sname, sde in sdes.items():
            f = kl_fn(sde, data)
            ts = {str(tol): time_to_tolerance(f, tol, tau0=1.0 / sde.mixing_rate()) for tol in cfg.tols}
            res["tau_star"][dname][sname] = ts
            res["t_star"][dname][sname] = {
                how: {tol: float(t_of_tau(normalise(sde, how), v)) for tol, v in ts.items()} for how in NORMALISATIONS
            }
            res["kl_at_T"][dname][sname] = float(f(tau_of_t(sde, sde.T).reshape(1))[0])
        if dname in gdata:
            res["w2_tau_star"][dname] = {
                sname: {str(tol): time_to_tolerance(lambda tau, s=sde: gaussian_w2(s, tau, data), tol, 1.0 / sde.mixing_rate())
                        for tol in cfg.w2_tols}
                for sname, sde in sdes.items()
            }
    # ratios to VP and to the OU chain langevin1, per normalisation
    res["ratios"] = {}
    for dname in res["t_star"]:
        res["ratios"][dname] = {}
        for how in NORMALISATIONS:
            r = {}
            for sname in sdes:
                r[sname] = {
                    tol: {
                        "vs_vp": res["t_star"][dname][sname][how][tol] / res["t_star"][dname]["vp"][how][tol]
                        if "vp" in sdes else None,
                        "vs_ou": res["t_star"][dname][sname][how][tol] / res["t_star"][dname]["langevin1"][how][tol]
                        if "langevin1" in sdes else None,
                    }
                    for tol in res["t_star"][dname][sname][how]
                }
            res["ratios"][dname][how] = r
    # mixture: exact vs bound vs Monte Carlo at a few times
    gen = torch.Generator().manual_seed(0)
    for dname, mix in mdata.items():
        for sname in [s for s in ("vp", "cld", "hold", "langevin6") if s in sdes]:
            sde = sdes[sname]
            for frac, est in ((0.5, "plain"), (1.0, "cv")):
                tau = frac * res["tau_star"][dname][sname][str(cfg.tols[0])]
                ex = mixture_kl(sde, torch.tensor([tau]), mix)
                mc, se = mixture_kl_mc(sde, tau, mix, cfg.mc_n, gen, est)
                res["mixture_checks"].append({
                    "data": dname, "sde": sname, "tau": tau, "exact": float(ex["kl"][0]),
                    "negentropy": float(ex["negentropy"][0]), "gauss": float(ex["gauss"][0]),
                    "bound": float(mixture_kl_bound(sde, torch.tensor([tau]), mix)[0]), "mc": mc, "mc_se": se,
                    "mc_estimator": est,
                })
    res["headline"] = headline(res)
    res["compute_s"] = time.perf_counter() - t_start
    if cfg.figures and out_dir is not None:
        say("figures")
        res["figures"] = _figures(res, sdes, gdata, mdata, cfg, Path(out_dir))
    res["machine"] = {
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    res["wall_s"] = time.perf_counter() - t_start
    return res


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
            n = cfg.n_curve if isinstance(data, GaussianData) else cfg.mixture_curves
            t = torch.logspace(math.log10(tmin), math.log10(tmax), n, dtype=torch.float64)
            for sname, sde in sdes.items():
                nsde = normalise(sde, how)
                tau = tau_of_t(nsde, t)
                kl = gaussian_kl(sde, tau, data) if isinstance(data, GaussianData) else mixture_kl(sde, tau, data)["kl"]
                ax.loglog(t.numpy(), kl.clamp_min(1e-30).numpy(), **_style(sname))
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
        for s in names:
            row = f"| {s} | {res['kl_at_T'][dname][s]:.3g} |"
            for how in NORMALISATIONS:
                for tol in res["tolerances"]:
                    t = per[s][how][str(tol)]
                    r = res["ratios"][dname][how][s][str(tol)]["vs_ou"]
                    row += f" {t:.3g} ({r:.2f}) |"
            lines.append(row)
        lines.append("")
    if res.get("w2_tau_star"):
        lines.append("W2 (full state) tolerance times under (c), in units of 1/rate:")
        lines.append("")
        lines.append("| data | " + " | ".join(names) + " |")
        lines.append("|---|" + "---|" * len(names))
        for dname, per in res["w2_tau_star"].items():
            for tol in res["w2_tolerances"]:
                row = f"| {dname} W2 <= {tol:g} |"
                for s in names:
                    row += f" {per[s][str(tol)] * res['sdes'][s]['rate_tau']:.3g} |"
                lines.append(row)
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
        fig_dir = Path(out_dir) / "figures"
        fig_dir.mkdir(parents=True, exist_ok=True)
        (fig_dir / "mixing_results.json").write_text(json.dumps(res, indent=1))
        (fig_dir / "mixing_tables.md").write_text(to_markdown(res))
    return res


def _cli(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Mixing time of VP/CLD/HOLD/langevin(k): KL of the full state to the prior.")
    p.add_argument("--full", action="store_true", help="denser curves, more MC samples, two W2 tolerances")
    p.add_argument("--out", default="docs", help="writes OUT/figures/mixing_*.{png,json,md}")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    res = main(a.full, a.out, progress=lambda s: print(f"[mixing] {s}", flush=True))
    print(to_markdown(res))
    print(f"wall {res['wall_s']:.1f} s (compute {res['compute_s']:.1f} s)")


if __name__ == "__main__":
    _cli()
