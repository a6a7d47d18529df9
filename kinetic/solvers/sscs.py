"""Symmetric splitting sampler (SSCS, Dockhorn et al. 2022, papers.md 2.7) for any order k.

In reverse time the SDE's drift -beta A z + beta g^2 e_k s_k splits into a linear part solved
exactly (a proper, stable OU process with the SDE's noise D) and a score part taken by Euler:

    A_rev = -A - D S_inf^-1          (the drift of the time-reversed STATIONARY process: Hurwitz, with
                                      stationary law N(0, S_inf); when S_inf is diagonal this flips the
                                      sign of the last diagonal entry of -A: the reversed friction)
    score part:  dz_k = beta g^2 [s_k(z) + (S_inf^-1 z)_k] ds  (the score minus the prior's score)

For CLD, S_inf = diag(1, M) gives A_rev = [[0, -1/M], [1, -Gamma/M]] and the score part
2 Gamma beta [s + v / M]: exactly Dockhorn et al.'s H + O and S. Without a stationary law (VE)
A_rev = -A + 2 A_kk e_k e_k^T (for VE: 0, pure Brownian noise) and the score part beta g^2 s_k.

SSCS step (t_i -> t_{i+1}, h = t_i - t_{i+1}): exact linear half step over [t_i - h/2, t_i], Euler
score step over the whole step (score at t_i as in the paper's code, or at the midpoint with
``score_time="mid"``), exact linear half step over [t_{i+1}, t_i - h/2]. The Euler score step makes
it first order overall (a Strang splitting is second order only with a second-order middle step).
"""

from __future__ import annotations

import torch

from .. import linalg
from . import Solver, grid_quantities, noise_like, register


def reversed_linear_part(sde) -> tuple[torch.Tensor, torch.Tensor]:
    """(A_rev (k, k), kappa (k,)): reverse drift = beta A_rev z + beta g^2 e_k (s_k + kappa . z)."""
    A = sde.drift_matrix
    k = sde.order
    S_inf = sde.stationary_cov
    if S_inf is not None:
        kappa = torch.linalg.inv(S_inf)[-1]
    else:
        kappa = torch.zeros(k, dtype=torch.float64)
        kappa[-1] = -2.0 * float(A[-1, -1]) / sde.g2
    A_rev = -A.clone()
    A_rev[-1] -= sde.g2 * kappa
    return A_rev, kappa


def linear_steps(sde, dtau: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact reverse linear sub-steps over reverse-time tau increments dtau (M,): (Phi, chol Q), (M, k, k)."""
    A_rev, _ = reversed_linear_part(sde)
    phi, Q = linalg.transition_and_noise(A_rev, sde.noise_matrix, dtau)
    return phi, linalg.safe_cholesky(Q)


class _Splitting(Solver):
    stochastic = True

    def _coefficients(self, sde, ts, dev, dt, halves: bool):
        q = grid_quantities(sde, ts)
        _, kappa = reversed_linear_part(sde)
        t = q["t"]
        if halves:
            tm = 0.5 * (t[:-1] + t[1:])
            taum = sde.tau(tm)
            d1, d2 = q["tau"][:-1] - taum, taum - q["tau"][1:]
            phi, L = linear_steps(sde, torch.cat([d1, d2]))
            N = len(d1)
            lin = (phi[:N], L[:N], phi[N:], L[N:])
        else:
            phi, L = linear_steps(sde, q["dtau"])
            lin = (phi, L)
        lin = tuple(x.to(dev, dt) for x in lin)
        return q, lin, kappa.to(dev, dt)


def _apply(M: torch.Tensor, zf: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,bjd->bid", M, zf)


def _score_step(zf: torch.Tensor, s: torch.Tensor, coef: torch.Tensor, kappa: torch.Tensor) -> torch.Tensor:
    """Euler step of the score part on the last block: a_k += coef (s_k + kappa . z); zf (n, k, d)."""
    last = zf[:, -1] + coef * (s + torch.einsum("j,bjd->bd", kappa, zf))
    return torch.cat([zf[:, :-1], last[:, None]], dim=1)


@register
class SSCS(_Splitting):
    name = "sscs"
    order = 1
    defaults = {"score_time": "start"}

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["score_time"] not in ("start", "mid"):
            raise ValueError(f"sscs: score_time must be 'start' or 'mid', got {self.options['score_time']!r}")

    def run(self, sde, score, z, ts, *, generator=None, callback=None):
        dev, dt = z.device, z.dtype
        q, (P1, L1, P2, L2), kappa = self._coefficients(sde, ts, dev, dt, halves=True)
        t = q["t"]
        t_eval = t[:-1] if self.options["score_time"] == "start" else 0.5 * (t[:-1] + t[1:])
        coef = (q["dtau"] * sde.g2).to(dev, dt)  # Euler in tau: dtau = int beta dt over the step
        t_eval = t_eval.to(dev, dt)
        n, k = z.shape[0], sde.order
        zf = z.reshape(n, k, -1)
        N = len(ts) - 1
        for i in range(N):
            zf = _apply(P1[i], zf) + _apply(L1[i], noise_like(zf, generator))
            s = score(zf.reshape(z.shape), t_eval[i].expand(n)).reshape(n, -1)
            zf = _score_step(zf, s, coef[i], kappa)
            zf = _apply(P2[i], zf) + _apply(L2[i], noise_like(zf, generator))
            if callback is not None:
                callback({"step": i, "t": float(ts[i + 1]), "z": zf.reshape(z.shape)})
        return zf.reshape(z.shape), N
