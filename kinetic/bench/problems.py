"""The sampler benchmarks' test problems and error measures, all with exact answers (no network).

Problems (data laws with exact scores for every linear SDE, `kinetic.analytic`):
    mixture2d   8 Gaussians on a ring (std 0.1), the toy of the solver-accuracy benchmark;
    mixture4    4 unequal 2-D Gaussians (the few-step benchmark's 2-D problem);
    gauss64     N(m, S) in d = 64 with variances 0.05 .. 1.6 in a random basis.

Errors:
    `sliced_w1_to_mixture`  distribution error of samples against the EXACT law (no second sample);
    `eigenbasis_w2`, `gaussian_fit_w2`  W2 of the Gaussian fitted to samples against N(m, S);
    `pathwise_error`        RMS distance of a sampler's output to the exact probability-flow map of
                            the same prior draw (`flow_map`: the ODE integrated to rtol 1e-10).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from ..analytic import GaussianData, GaussianMixture
from ..flows import flow_map, gls_estimate, gls_flow_map

__all__ = [
    "PROBLEMS", "problem", "Product", "mixture4", "ring8", "gauss64",
    "w2_gaussian", "gaussian_fit_w2", "eigenbasis_w2", "SlicedW1ToMixture", "sliced_w1_to_mixture",
    "flow_map", "gls_flow_map", "gls_estimate", "pathwise_error",
]

F64 = torch.float64


# ------------------------------------------------------------------ problems
def ring8() -> GaussianMixture:
    """8 equal Gaussians of std 0.1 on a circle of radius 1.41 (the solver-accuracy ``mixture2d``)."""
    return GaussianMixture.ring(8, 1.41, 0.1)


def mixture4() -> GaussianMixture:
    """4 unequal 2-D Gaussians: weights 0.4, 0.3, 0.2, 0.1, stds 0.15, 0.1, 0.25, 0.2 (overall std ~1)."""
    return GaussianMixture([0.4, 0.3, 0.2, 0.1], [[-1.0, -0.5], [1.0, -1.0], [0.5, 1.2], [-1.2, 1.0]],
                           [0.15, 0.1, 0.25, 0.2])


def gauss64() -> GaussianData:
    """N(m, S), d = 64: S = Q diag(logspace(-1.3, 0.2)) Q^T (variances 0.05 .. 1.6), Q random
    orthogonal, m ~ N(0, 0.25 I) (seed 0; the solver-accuracy benchmark's Gaussian)."""
    g = torch.Generator().manual_seed(0)
    d = 64
    Q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=F64))
    lam = torch.logspace(-1.3, 0.2, d, dtype=F64)
    return GaussianData(0.5 * torch.randn(d, generator=g, dtype=F64), Q @ torch.diag(lam) @ Q.T)


class Product:
    """Independent laws side by side: x = (x_1, ..., x_m), x_j ~ laws[j] (each (n, d_j)), d = sum d_j.

    Every linear SDE here acts coordinate-wise ((A kron I) z), so the noised marginal of the product
    is the product of the parts' marginals and its exact score is the parts' scores side by side.
    Sampling one product state is the same as sampling each part on its own with the same grid (for
    samplers that act coordinate-wise: not pc, whose step size uses the norm of the whole score).
    """

    def __init__(self, laws: dict):
        self.laws = dict(laws)
        self.slices, lo = {}, 0
        for name, law in self.laws.items():
            self.slices[name] = slice(lo, lo + law.dim)
            lo += law.dim
        self.dim = lo

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=F64) -> Tensor:
        return torch.cat([law.sample(n, generator, dtype) for law in self.laws.values()], 1)

    def score_fn(self, sde):
        parts = [(self.slices[name], law.score_fn(sde)) for name, law in self.laws.items()]

        def score(z: Tensor, t: Tensor) -> Tensor:
            return torch.cat([fn(z[..., sl], t) for sl, fn in parts], dim=-1)

        return score


PROBLEMS: dict[str, Callable[[], GaussianData | GaussianMixture]] = {
    "mixture2d": ring8, "mixture4": mixture4, "gauss64": gauss64,
}


def problem(name: str):
    """The data law of a problem by name (built once per call)."""
    if name not in PROBLEMS:
        raise ValueError(f"unknown problem {name!r}; valid: {', '.join(PROBLEMS)}")
    return PROBLEMS[name]()


# ------------------------------------------------------------------ distribution errors
def _sqrtm_psd(S: Tensor) -> Tensor:
    lam, U = torch.linalg.eigh(0.5 * (S + S.T))
    return (U * lam.clamp_min(0).sqrt()) @ U.T


def w2_gaussian(m1: Tensor, S1: Tensor, m2: Tensor, S2: Tensor) -> float:
    """2-Wasserstein distance between N(m1, S1) and N(m2, S2) (float64)."""
    m1, S1, m2, S2 = (v.to(F64) for v in (m1, S1, m2, S2))
    r = _sqrtm_psd(S2)
    cross = _sqrtm_psd(r @ S1 @ r)
    val = float(((m1 - m2) ** 2).sum() + torch.trace(S1 + S2 - 2 * cross))
    return max(val, 0.0) ** 0.5


def gaussian_fit_w2(x: Tensor, mean: Tensor, cov: Tensor) -> float:
    """W2 between the Gaussian fitted to samples x (n, d) and N(mean, cov)."""
    x = x.to(F64)
    return w2_gaussian(x.mean(0), torch.cov(x.T).reshape(x.shape[1], x.shape[1]), mean, cov)


def eigenbasis_w2(x: Tensor, mean: Tensor, cov: Tensor) -> float:
    """W2 between the Gaussian fitted to x DIAGONALLY in the eigenbasis of ``cov`` and N(mean, cov).

    For Gaussian data with the exact score every sampler here acts identically and independently
    on each coordinate of an orthonormal data basis, so its output law is exactly Gaussian and
    diagonal in the eigenbasis of cov; fitting only the d means and d variances there removes the
    d^2 covariance-estimation noise of `gaussian_fit_w2` (noise floor ~sqrt(d) times lower).
    """
    lam, U = torch.linalg.eigh(cov.to(F64))
    y = (x.to(F64) - mean) @ U
    m, sd = y.mean(0), y.std(0)
    return float((m.pow(2) + (sd - lam.clamp_min(0).sqrt()).pow(2)).sum()) ** 0.5


def _mixture_cdf_and_integral(x: Tensor, w: Tensor, mu: Tensor, sd: Tensor) -> tuple[Tensor, Tensor]:
    """F(x) and G(x) = int_-inf^x F for the 1-D mixture sum_j w_j N(mu_j, sd_j^2): x (P, n), mu/sd (P, J)."""
    z = (x[..., None] - mu[:, None, :]) / sd[:, None, :]
    Phi = 0.5 * torch.erfc(-z / math.sqrt(2.0))
    phi = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    F = (w * Phi).sum(-1)
    G = (w * (z * Phi + phi) * sd[:, None, :]).sum(-1)  # int Phi((x - mu)/sd) dx = (x - mu) Phi + sd phi
    return F, G


class SlicedW1ToMixture:
    """Sliced W1 between samples x (n, d) and the exact law of a `GaussianMixture`: ``metric(x) -> float``.

    The mean over directions theta of W1(theta^T x, theta^T X), the second law exact: a 1-D mixture
    with CDF F. W1 = int |F_n - F| dx is integrated exactly between the sorted samples (F_n is
    constant there; the antiderivative G of F is closed form), the crossing of F_n and F inside an
    interval located by linear interpolation (an O(h^2) error on intervals of width h ~ 1/n).
    F and G are tabulated once per direction on ``table`` points over the law's range +-12 std and
    interpolated linearly at the samples (|F error| ~1e-8 for the default 2^16 points); outside
    the table they are evaluated directly. Directions: ``n_proj`` equally spaced angles on [0, pi)
    for d = 2, seeded random unit vectors otherwise.
    """

    def __init__(self, mixture: GaussianMixture, n_proj: int = 32, table: int = 1 << 16):
        d = mixture.dim
        if d == 2:
            ang = torch.arange(n_proj, dtype=F64) * (math.pi / n_proj)
            theta = torch.stack([torch.cos(ang), torch.sin(ang)], 0)
        else:
            theta = torch.randn(d, n_proj, generator=torch.Generator().manual_seed(0), dtype=F64)
            theta = theta / theta.norm(dim=0, keepdim=True)
        self.mixture, self.theta, self.dim = mixture, theta, d
        self.w, self.mu = mixture.weights, (mixture.means @ theta).T  # (P, J)
        self.sd = mixture.std[None, :].expand_as(self.mu)
        self.mbar = (self.w * self.mu).sum(-1)
        lo = (self.mu - 12 * self.sd).min(-1).values
        hi = (self.mu + 12 * self.sd).max(-1).values
        frac = torch.linspace(0, 1, table, dtype=F64)
        self.grid = lo[:, None] + (hi - lo)[:, None] * frac  # (P, table)
        self.F, self.G = _mixture_cdf_and_integral(self.grid, self.w, self.mu, self.sd)

    def _lookup(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """F and G at sorted y (P, n): table interpolation inside, direct evaluation outside."""
        g = self.grid
        idx = torch.searchsorted(g, y).clamp(1, g.shape[1] - 1)
        g0, g1 = g.gather(1, idx - 1), g.gather(1, idx)
        u = ((y - g0) / (g1 - g0)).clamp(0, 1)
        F = self.F.gather(1, idx - 1) * (1 - u) + self.F.gather(1, idx) * u
        G = self.G.gather(1, idx - 1) * (1 - u) + self.G.gather(1, idx) * u
        out = (y < g[:, :1]) | (y > g[:, -1:])
        if bool(out.any()):
            rows = out.any(1).nonzero().squeeze(-1)
            Fo, Go = _mixture_cdf_and_integral(y[rows], self.w, self.mu[rows], self.sd[rows])
            F[rows] = torch.where(out[rows], Fo, F[rows])
            G[rows] = torch.where(out[rows], Go, G[rows])
        return F, G

    def __call__(self, x: Tensor) -> float:
        x = torch.as_tensor(x).detach().to("cpu", F64).reshape(x.shape[0], -1)
        n, d = x.shape
        if d != self.dim:
            raise ValueError(f"x must have {self.dim} features to match the mixture, got {d}")
        if not bool(torch.isfinite(x).all()):
            return float("nan")
        y = torch.sort((x @ self.theta).T.contiguous(), dim=-1).values  # (P, n)
        F, G = self._lookup(y)
        # tails: int_-inf^y1 F = G(y1); int_yn^inf (1 - F) = mbar - yn + G(yn)
        total = G[:, 0] + (self.mbar - y[:, -1] + G[:, -1])
        a, b = y[:, :-1], y[:, 1:]
        Fa, Fb, Ga, Gb = F[:, :-1], F[:, 1:], G[:, :-1], G[:, 1:]
        c = torch.arange(1, n, dtype=F64) / n  # F_n on [y_i, y_i+1)
        below = (Fb <= c) * (c * (b - a) - (Gb - Ga))  # F <= c on the interval
        above = (Fa >= c) * ((Gb - Ga) - c * (b - a))  # F >= c on the interval
        cross = (Fa < c) & (Fb > c)
        xs = a + (c - Fa) / (Fb - Fa).clamp_min(1e-300) * (b - a)  # F(xs) = c, F linear on the interval
        Gx = Ga + 0.5 * (Fa + c) * (xs - a)
        both = cross * ((c * (xs - a) - (Gx - Ga)) + ((Gb - Gx) - c * (b - xs)))
        total = total + (below + above + both).sum(-1)
        return float(total.mean())


def sliced_w1_to_mixture(x: Tensor, mixture: GaussianMixture, n_proj: int = 32) -> float:
    """`SlicedW1ToMixture` in one call (build the metric once to evaluate many sample sets)."""
    return SlicedW1ToMixture(mixture, n_proj)(x)


# ------------------------------------------------------------------ pathwise error
def pathwise_error(x: Tensor, x_ref: Tensor) -> float:
    """RMS over samples of the Euclidean distance |x_i - x_ref_i|: (n, *D), (n, *D) -> float."""
    diff = (x.to(F64) - x_ref.to(F64)).reshape(x.shape[0], -1)
    return float(diff.pow(2).sum(-1).mean().sqrt())
