"""Exact scores and densities of every noised marginal for Gaussian and Gaussian-mixture data.

Given data x0 ~ p_data on R^d and a `LinearSDE` of order k (auxiliaries from N(0, aux_cov),
independent of the data), the state at time t is

    z_t = (c_t kron I) x0 + (L_t kron I) eps,      c_t = Phi(0, t) e_1  (k,),  L_t L_t^T = Sigma(t),

so for x0 ~ N(m, S) the state is Gaussian with mean c_t kron m and covariance
(c_t c_t^T) kron S + Sigma(t) kron I_d (a kd x kd matrix). In the eigenbasis S = U diag(lam) U^T
it splits into d independent k x k blocks C_j = lam_j c c^T + Sigma(t): nothing larger than k x k
is ever formed. A mixture of isotropic Gaussians N(m_j, s_j^2 I) gives a mixture of such laws
with C_j = s_j^2 c c^T + Sigma(t) shared by all d coordinates.

``score_fn(sde)`` returns the exact score of the noised blocks, ``score_fn(z, t) -> (B, d)`` for one
noised block or ``(B, m, d)`` for m of them (the convention of `kinetic.sample`);
``marginal_log_prob`` the exact log-density of the full state.
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import torch
from torch import Tensor

__all__ = ["GaussianData", "GaussianMixture"]

_LOG2PI = math.log(2.0 * math.pi)


def _coefficients(sde, t: Tensor, batch: int):
    """`LinearSDE.coefficients` at t (B,) (float64, CPU); a leading size of 1 when every t is equal
    (computed once and cached). Their `Coefficients.reference_chol` factors each component's
    C = var c c^T + Sigma(t) in square-root form, so C keeps its digits where Sigma is nearly singular."""
    t = torch.as_tensor(t, dtype=torch.float64).detach().cpu().reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch)
    if t.shape[0] != batch:
        raise ValueError(f"t must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    if bool((t == t[0]).all()):
        return _coefficients_at(sde, float(t[0]))
    return sde.coefficients(t)


@functools.lru_cache(maxsize=4096)
def _coefficients_at(sde, t: float):
    return sde.coefficients(torch.tensor([t], dtype=torch.float64))


def _check_state(sde, z: Tensor, d: int) -> None:
    if not isinstance(z, Tensor):
        raise TypeError(f"z must be a torch.Tensor of shape (B, {sde.order}, {d}), got {type(z).__name__}")
    if z.dim() != 3 or z.shape[1] != sde.order or z.shape[2] != d:
        raise ValueError(f"z must have shape (B, {sde.order}, {d}), got {tuple(z.shape)}")


class GaussianData:
    """Data law N(mean, cov) on R^d.

    Args:
        mean: (d,). cov: (d, d) symmetric positive semi-definite, or a scalar / (d,) for an
            isotropic / diagonal covariance (no eigendecomposition is formed then, so large d is cheap).
            Zero variances (constant coordinates, e.g. blank pixels) are allowed; `log_prob` then
            needs points on the support and reports -inf elsewhere.
    """

    def __init__(self, mean, cov):
        mean = torch.as_tensor(mean, dtype=torch.float64).detach().cpu().reshape(-1)
        d = mean.shape[0]
        cov = torch.as_tensor(cov, dtype=torch.float64).detach().cpu()
        if not bool(torch.isfinite(cov).all()) or not bool(torch.isfinite(mean).all()):
            raise ValueError("mean and cov must be finite")
        if cov.dim() <= 1:
            lam = cov.expand(d).clone() if cov.dim() == 0 or cov.numel() == 1 else cov.clone()
            if lam.shape != (d,):
                raise ValueError(f"cov must be a scalar, (d,) or (d, d) with d = {d}, got {tuple(cov.shape)}")
            U = None  # diagonal: the eigenbasis is the coordinate basis
            cov = torch.diag(lam) if d <= 4096 else None
        else:
            if cov.shape != (d, d):
                raise ValueError(f"cov must be a scalar, (d,) or (d, d) with d = {d}, got {tuple(cov.shape)}")
            if not torch.allclose(cov, cov.T, atol=1e-12):
                raise ValueError("cov must be symmetric")
            lam, U = torch.linalg.eigh(cov)
        scale = max(float(lam.abs().max()), 1e-300)
        if float(lam.min()) < -1e-12 * scale:
            raise ValueError(f"cov must be positive semi-definite, smallest eigenvalue {float(lam.min())}")
        lam = lam.clamp_min(0.0)
        self.mean, self.cov, self.dim = mean, cov, d
        self._lam, self._U = lam, U

    def _rotate(self, x: Tensor) -> Tensor:
        """Coordinates in the eigenbasis: (..., d) -> (..., d)."""
        return x if self._U is None else x @ self._U.to(x.device)

    def _unrotate(self, y: Tensor) -> Tensor:
        return y if self._U is None else y @ self._U.T.to(y.device)

    @property
    def data_shape(self) -> tuple[int]:
        return (self.dim,)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        """n draws, (n, d)."""
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.mean + self._unrotate(eps * self._lam.sqrt())).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """log N(x; mean, cov): (B, d) -> (B,) float64 (-inf off the support of a singular cov)."""
        x = torch.as_tensor(x).to(torch.float64)
        r = self._rotate(x - self.mean)
        pos = self._lam > 0
        out = -0.5 * (r[:, pos].square() / self._lam[pos]).sum(-1)
        out = out - 0.5 * int(pos.sum()) * _LOG2PI - 0.5 * torch.log(self._lam[pos]).sum()
        off = (r[:, ~pos].abs() > 1e-12 * (1.0 + x.abs().amax(-1, keepdim=True))).any(-1) if bool((~pos).any()) else None
        return out if off is None else torch.where(off, torch.full_like(out, -math.inf), out)

    def _blocks(self, sde, z: Tensor, t) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated residual r (B, d, k), C^-1 r (B, d, k) and log det C summed over d (B|1,), with
        C_j = lam_j c c^T + Sigma(t) per eigen-direction j (factored in square-root form)."""
        _check_state(sde, z, self.dim)
        B = z.shape[0]
        co = _coefficients(sde, t, B)
        c = co.c.to(z.device)
        zf = z.to(torch.float64)
        delta = zf - c[:, :, None] * self.mean.to(z.device)  # (B, k, d)
        rot = self._rotate(delta).transpose(1, 2)  # (B, d, k): coordinates in the eigenbasis
        Lc = co.reference_chol(self._lam).to(z.device)  # (B|1, d, k, k): C_j = lam_j c c^T + Sigma
        Cinv = torch.cholesky_inverse(Lc)
        logdet = 2.0 * torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum((-1, -2))
        if Cinv.shape[0] == 1:
            y = torch.einsum("jkl,bjl->bjk", Cinv[0], rot)
        else:
            y = torch.einsum("bjkl,bjl->bjk", Cinv, rot)
        return rot, y, logdet

    def marginal_log_prob(self, sde, z: Tensor, t) -> Tensor:
        """Exact log p_t(z) of the full state: (B, k, d), t (B,) or scalar -> (B,) float64."""
        r, y, logdet = self._blocks(sde, z, t)
        return -0.5 * (r * y).sum((-1, -2)) - 0.5 * logdet - 0.5 * sde.order * self.dim * _LOG2PI

    def full_score(self, sde, z: Tensor, t) -> Tensor:
        """Exact score of every block, (B, k, d) in z's dtype."""
        _, y, _ = self._blocks(sde, z, t)
        return (-self._unrotate(y.transpose(1, 2))).to(z.dtype)

    @property
    def eigenvalues(self) -> Tensor:
        """(d,) eigenvalues of cov (float64): increasing for a dense cov, in coordinate order for a
        diagonal one (given as a scalar or (d,))."""
        return self._lam.clone()

    @property
    def eigenvectors(self) -> Tensor:
        """(d, d) orthonormal eigenvectors of cov, as columns (float64); the identity for a diagonal
        cov (given as a scalar or (d,))."""
        return torch.eye(self.dim, dtype=torch.float64) if self._U is None else self._U.clone()

    def score_fn(self, sde) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact noised-block score as a `score_fn(z, t) -> (B, d)` or (B, m, d)."""
        N = list(sde.noised_blocks)

        def score(z: Tensor, t: Tensor) -> Tensor:
            _, y, _ = self._blocks(sde, z, t)
            s = -self._unrotate(y[..., N].transpose(1, 2))  # (B, m, d)
            return (s[:, 0] if len(N) == 1 else s).to(z.dtype)

        return score

    def __repr__(self) -> str:
        return f"GaussianData(d={self.dim})"


class GaussianMixture:
    """Mixture of isotropic Gaussians sum_j w_j N(means_j, std_j^2 I) on R^d.

    Args:
        weights: (M,) nonnegative (normalised here). means: (M, d). std: scalar or (M,).
    """

    def __init__(self, weights, means, std):
        means = torch.as_tensor(means, dtype=torch.float64).detach().cpu()
        if means.dim() != 2:
            raise ValueError(f"means must have shape (M, d), got {tuple(means.shape)}")
        M, d = means.shape
        w = torch.as_tensor(weights, dtype=torch.float64).detach().cpu().reshape(-1)
        if w.shape[0] != M or (w < 0).any() or float(w.sum()) <= 0:
            raise ValueError(f"weights must be {M} nonnegative numbers with a positive sum")
        std = torch.as_tensor(std, dtype=torch.float64).detach().cpu().reshape(-1)
        if std.numel() == 1:
            std = std.expand(M).clone()
        if std.shape[0] != M or (std <= 0).any():
            raise ValueError(f"std must be a positive scalar or {M} positive numbers")
        self.weights, self.means, self.std, self.dim = w / w.sum(), means, std, d

    @classmethod
    def ring(cls, n_modes: int = 8, radius: float = 1.41, std: float = 0.1, dim: int = 2) -> "GaussianMixture":
        """Equal-weight modes on a circle in the first two coordinates (like `gaussians8`)."""
        a = torch.arange(n_modes, dtype=torch.float64) * (2 * math.pi / n_modes)
        means = torch.zeros(n_modes, dim, dtype=torch.float64)
        means[:, 0], means[:, 1] = radius * torch.cos(a), radius * torch.sin(a)
        return cls(torch.ones(n_modes), means, std)

    @property
    def data_shape(self) -> tuple[int]:
        return (self.dim,)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float64) -> Tensor:
        """n draws, (n, d)."""
        idx = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return (self.means[idx] + self.std[idx, None] * eps).to(dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_data(x): (B, d) -> (B,) float64."""
        x = torch.as_tensor(x).to(torch.float64)
        d2 = ((x[:, None, :] - self.means[None]) ** 2).sum(-1)  # (B, M)
        s2 = self.std**2
        comp = -0.5 * d2 / s2 - 0.5 * self.dim * torch.log(2 * math.pi * s2)
        return torch.logsumexp(torch.log(self.weights) + comp, dim=1)

    def _parts(self, sde, z: Tensor, t):
        """Per component: C^-1 delta (B, M, k, d) and log w + log N (B, M), float64."""
        _check_state(sde, z, self.dim)
        B = z.shape[0]
        co = _coefficients(sde, t, B)  # leading size 1 when every t is equal: M factors, once
        dev = z.device
        c = co.c.to(dev)
        zf = z.to(torch.float64)
        Lc = co.reference_chol(self.std**2).to(dev)  # (B|1, M, k, k): C_j = s_j^2 c c^T + Sigma
        Cinv = torch.cholesky_inverse(Lc)
        logdet = 2.0 * torch.log(torch.diagonal(Lc, dim1=-2, dim2=-1)).sum(-1)  # (B|1, M)
        delta = zf[:, None] - c[:, None, :, None] * self.means.to(dev)[None, :, None, :]  # (B,M,k,d)
        if Cinv.shape[0] == 1:
            Cinv_delta = torch.einsum("mij,bmjd->bmid", Cinv[0], delta)
        else:
            Cinv_delta = torch.einsum("bmij,bmjd->bmid", Cinv, delta)
        quad = (delta * Cinv_delta).sum((-1, -2))
        logn = -0.5 * quad - 0.5 * self.dim * logdet - 0.5 * sde.order * self.dim * _LOG2PI
        return Cinv_delta, logn + torch.log(self.weights.to(dev))

    def marginal_log_prob(self, sde, z: Tensor, t) -> Tensor:
        """Exact log p_t(z) of the full state: (B, k, d) -> (B,) float64."""
        _, logw = self._parts(sde, z, t)
        return torch.logsumexp(logw, dim=1)

    def full_score(self, sde, z: Tensor, t) -> Tensor:
        """Exact score of every block, (B, k, d) in z's dtype."""
        Cd, logw = self._parts(sde, z, t)
        r = torch.softmax(logw, dim=1)
        return (-(r[:, :, None, None] * Cd).sum(1)).to(z.dtype)

    def score_fn(self, sde) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact noised-block score as a `score_fn(z, t) -> (B, d)` or (B, m, d)."""
        N = list(sde.noised_blocks)

        def score(z: Tensor, t: Tensor) -> Tensor:
            Cd, logw = self._parts(sde, z, t)
            r = torch.softmax(logw, dim=1)
            s = -(r[:, :, None, None] * Cd[:, :, N]).sum(1)  # (B, m, d)
            return (s[:, 0] if len(N) == 1 else s).to(z.dtype)

        return score

    def denoise(self, y: Tensor, sigma, residual: bool = False) -> Tensor:
        """The exact posterior mean E[x0 | y] under y = x0 + sigma eps (the VE denoiser of this law):
        y (B, d), sigma (B,) or a scalar -> (B, d) in y's dtype (float64 inside). Per component j,
        y ~ N(m_j, (s_j^2 + sigma^2) I) and E[x0 | y, j] = m_j + s_j^2 / (s_j^2 + sigma^2) (y - m_j),
        weighted by the posterior responsibilities. ``residual``: E[x0 | y] - y instead, computed as
        -sum_j r_j sigma^2 / (s_j^2 + sigma^2) (y - m_j) (relative accuracy at tiny sigma)."""
        yf = torch.as_tensor(y).to(torch.float64)
        B = yf.shape[0]
        sig2 = torch.as_tensor(sigma, dtype=torch.float64, device=yf.device).reshape(-1).expand(B).square()
        s2 = (self.std**2).to(yf.device)
        means = self.means.to(yf.device)
        v = s2[None, :] + sig2[:, None]  # (B, M)
        d2 = ((yf[:, None, :] - means[None]) ** 2).sum(-1)
        logr = torch.log(self.weights.to(yf.device)) - 0.5 * d2 / v - 0.5 * self.dim * torch.log(v)
        r = torch.softmax(logr, dim=1)
        if residual:
            post = -(sig2[:, None] / v)[..., None] * (yf[:, None, :] - means[None])  # (B, M, d)
        else:
            post = means[None] + (s2[None, :] / v)[..., None] * (yf[:, None, :] - means[None])
        return (r[..., None] * post).sum(1).to(torch.as_tensor(y).dtype)

    def denoiser(self):
        """`denoise` as a `kinetic.denoiser.Denoiser` (its ``score_fn(sde)`` is exact for every SDE)."""
        from .denoiser import FunctionDenoiser

        return FunctionDenoiser(lambda y, sigma: self.denoise(y, sigma, residual=True), residual=True)

    def __repr__(self) -> str:
        return f"GaussianMixture(M={self.means.shape[0]}, d={self.dim})"
