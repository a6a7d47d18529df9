"""`Coefficients`: every exact per-time quantity of a `LinearSDE`, computed in one pass.

``sde.coefficients(t)`` returns one of these for a tensor of times t (...,). Everything is float64
on t's device; the data path casts what it needs. With the marginal of the state given the data

    z_t = (c_t kron I) x0 + (L_t kron I) eps,     c_t = Phi(0, t) e_1,   L_t L_t^T = Sigma(t),

and N = ``noised`` the blocks that receive noise (``(G G^T)_ii > 0``), the conditional score of
the noised blocks is ``-(L_t^-T eps)_N = -K_t eps`` with ``K_t = (L_t^-1)[:, N]^T`` (m x k), and
its covariance is ``P_t = K_t K_t^T = (Sigma^-1)_NN``. With ``R_t = chol(P_t)`` the whitened
target ``eps_N* = R_t^-1 K_t eps`` is standard normal; for one noised block (the last) it is
``eps_k`` and ``R_t = 1 / L_t[k, k]`` (see ``docs/math.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

from .linalg import tria

__all__ = ["Coefficients"]


def _rows(M: Tensor, z: Tensor) -> Tensor:
    """Apply per-example (B, r, k) or shared (r, k) float64 matrices to z (B, k, d) -> (B, r, d)."""
    M = M.to(device=z.device, dtype=z.dtype)
    if M.dim() == 2:
        return torch.einsum("ij,bjd->bid", M, z)
    return torch.einsum("bij,bjd->bid", M, z)


@dataclass(frozen=True, eq=False)
class Coefficients:
    """Per-time coefficients of a `LinearSDE` (float64, leading shape ``t.shape``).

    Attributes:
        t, tau, beta: (...,) the times, tau = B(t) and beta(t).
        phi: (..., k, k) the transition Phi(0, t) = expm(B(t) A).
        sigma: (..., k, k) Sigma(t), the covariance of z_t given x0 (auxiliaries from aux_cov).
        chol: (..., k, k) its lower factor L_t (exact and scale-invariant at tiny t).
        noised: the noised blocks N (increasing indices).
        noise: (m, m) D_NN = (G G^T)[N][:, N].
    """

    t: Tensor
    tau: Tensor
    beta: Tensor
    phi: Tensor
    sigma: Tensor
    chol: Tensor
    noised: tuple[int, ...]
    noise: Tensor

    # ------------------------------------------------------------------ basic
    @property
    def order(self) -> int:
        return self.phi.shape[-1]

    @property
    def c(self) -> Tensor:
        """(..., k): the data column Phi(0, t) e_1 (the mean of z_t is c x0)."""
        return self.phi[..., :, 0]

    @cached_property
    def chol_inv(self) -> Tensor:
        """(..., k, k): L_t^-1 (lower triangular)."""
        eye = torch.eye(self.order, dtype=self.chol.dtype, device=self.chol.device).expand_as(self.chol)
        return torch.linalg.solve_triangular(self.chol, eye, upper=False)

    @cached_property
    def q(self) -> Tensor:
        """(..., k): L_t^-1 c, the whitened data column."""
        return (self.chol_inv @ self.c.unsqueeze(-1)).squeeze(-1)

    @cached_property
    def sigma_tilde(self) -> Tensor:
        """(...,): 1 / sqrt(c^T Sigma^-1 c), the noise level of the GLS estimate of x0 from z_t."""
        return (self.q * self.q).sum(-1).rsqrt()

    @cached_property
    def gls_row(self) -> Tensor:
        """(..., k): c^T Sigma^-1 / (c^T Sigma^-1 c), the row that gives the GLS estimate of x0 from the
        state, y = gls_row . z = x0 + sigma_tilde n (docs/math.md, "The GLS sampler")."""
        return (self.q.unsqueeze(-2) @ self.chol_inv).squeeze(-2) / (self.q * self.q).sum(-1, keepdim=True)

    @cached_property
    def lam(self) -> Tensor:
        """(...,): 1/2 log(Sigma_00 / c_0^2), the log noise-to-signal ratio of the data block."""
        return 0.5 * torch.log(self.sigma[..., 0, 0]) - torch.log(self.c[..., 0].abs())

    # ------------------------------------------------------------------ Gaussian reference
    def reference_chol(self, variance) -> Tensor:
        """Lower factor of the Gaussian-reference covariance C = Sigma_t + variance c c^T: the law of
        z_t given nothing when x0 ~ N(0, variance I) (gDDIM's R_t for variance 0; the "mixed" score's S_t).

        ``variance``: a float >= 0 -> (..., k, k), or a tensor (n,) of variances -> (..., n, k, k).
        Square-root form, tria([sqrt(variance) c, L_t]), so C keeps its digits where Sigma_t is
        nearly singular (tiny t, high order); variance 0 returns L_t itself.
        """
        if not isinstance(variance, Tensor):
            v = float(variance)
            if not v >= 0:
                raise ValueError(f"variance must be >= 0, got {variance!r}")
            if v == 0.0:
                return self.chol
            return tria(torch.cat([v**0.5 * self.c.unsqueeze(-1), self.chol], dim=-1))
        v = variance.to(self.chol).clamp_min(0.0).sqrt()  # (n,)
        col = v[:, None, None] * self.c[..., None, :, None]  # (..., n, k, 1)
        L = self.chol[..., None, :, :].expand(*col.shape[:-1], self.order)
        return tria(torch.cat([col, L], dim=-1))

    def reference_precision(self, variance) -> Tensor:
        """(Sigma_t + variance c c^T)^-1 from `reference_chol`: (..., k, k) (or (..., n, k, k))."""
        return torch.cholesky_inverse(self.reference_chol(variance))

    # ------------------------------------------------------------------ noised-block score
    @cached_property
    def score_map(self) -> Tensor:
        """(..., m, k): K_t with score_N = -K_t eps for z_t = c x0 + L_t eps."""
        return self.chol_inv[..., :, list(self.noised)].transpose(-1, -2)

    @cached_property
    def score_precision(self) -> Tensor:
        """(..., m, m): P_t = K_t K_t^T = (Sigma^-1)_NN, the covariance of the conditional score."""
        K = self.score_map
        return K @ K.transpose(-1, -2)

    @cached_property
    def score_scale(self) -> Tensor:
        """(..., m, m): R_t = chol(P_t): score_N = -R_t eps_N* with eps_N* standard normal."""
        if self.noised == (self.order - 1,):
            return 1.0 / self.chol[..., -1:, -1:]  # exactly: the last column of L^-1 is e_k / L_kk
        return torch.linalg.cholesky(self.score_precision)

    @cached_property
    def noised_data_column(self) -> Tensor:
        """(..., m): (Sigma^-1 c)_N = K_t q_t."""
        return (self.score_map @ self.q.unsqueeze(-1)).squeeze(-1)

    def whiten(self, z: Tensor) -> Tensor:
        """L_t^-1 z: (B, k, *D) -> (B, k, *D) in z's dtype (coefficients of leading shape (B,) or ())."""
        B, k = z.shape[0], z.shape[1]
        return _rows(self.chol_inv, z.reshape(B, k, -1)).reshape(z.shape)

    def data_estimate(self, z: Tensor, score: Tensor) -> Tensor:
        """E[x0 | z_t] from the noised-block score: (B, k, *D), (B, m, *D) -> (B, *D).

        Every score of the marginal has the form grad log p_t = -Sigma^-1 (z - c xhat) with
        xhat = E[x0 | z_t] (Tweedie). With one noised block this determines xhat; with several it
        is the least-squares fit in the metric D_NN (exact whenever the score is consistent, e.g.
        the exact score or an x0-parameterised network).
        """
        B, k = z.shape[0], z.shape[1]
        m = len(self.noised)
        zf = z.reshape(B, k, -1)
        sf = score.reshape(B, m, -1)
        u = _rows(self.score_map, _rows(self.chol_inv, zf))  # (Sigma^-1 z)_N, (B, m, d)
        w = self.noised_data_column.expand(B, m)  # (Sigma^-1 c)_N
        Ww = w @ self.noise.to(w)  # (B, m): w^T D_NN
        num = torch.einsum("bj,bjd->bd", Ww.to(z.device, z.dtype), sf + u)
        den = (Ww * w).sum(-1).to(z.device, z.dtype)
        return (num / den[:, None]).reshape(B, *z.shape[2:])

    def gls_estimate(self, z: Tensor) -> Tensor:
        """y = gls_row . z = x0 + sigma_tilde n: (B, k, *D) -> (B, *D) in z's dtype, the sufficient
        statistic of z_t for x0 (docs/math.md, "One denoiser for every SDE")."""
        B, k = z.shape[0], z.shape[1]
        return _rows(self.gls_row.unsqueeze(-2), z.reshape(B, k, -1)).reshape(B, *z.shape[2:])

    def score_from_denoiser(self, z: Tensor, y: Tensor, residual: Tensor, variance: float = 1.0) -> Tensor:
        """The noised-block score -(Sigma^-1 (z - c x0_hat))_N (Tweedie) of the marginal whose posterior
        mean is x0_hat = y + residual, y = `gls_estimate` (z): (B, k, *D), (B, *D), (B, *D) -> (B, m, *D)
        in z's dtype. Written through the Gaussian reference C = Sigma + v c c^T (`reference_chol`,
        v = ``variance`` > 0; exact for any v) as (C^-1 c)_N mu - (C^-1 z)_N with the reference's data
        prediction mu = y + (1 + v / sigma_tilde^2) residual: at small t, where Sigma^-1 is huge along c,
        nothing then cancels, as long as the residual x0_hat - y is given to relative accuracy."""
        B, k = z.shape[0], z.shape[1]
        m = len(self.noised)
        rows = self.reference_precision(float(variance))[..., list(self.noised), :]  # (B|., m, k)
        w = (rows @ self.c.unsqueeze(-1)).squeeze(-1).to(z.device, z.dtype)  # (C^-1 c)_N
        w = w.expand(B, m) if w.dim() == 1 else w
        gain = (1.0 + float(variance) / self.sigma_tilde.square()).to(z.device, z.dtype).reshape(-1, 1)
        mu = y.reshape(B, -1).to(z.dtype) + gain * residual.reshape(B, -1).to(z.dtype)
        s = w[:, :, None] * mu[:, None, :] - _rows(rows, z.reshape(B, k, -1))
        return s.reshape(B, m, *z.shape[2:])

    def select(self, i) -> "Coefficients":
        """The coefficients at index i of the leading axis (e.g. one grid node)."""
        return Coefficients(
            self.t[i], self.tau[i], self.beta[i], self.phi[i], self.sigma[i], self.chol[i], self.noised, self.noise
        )
