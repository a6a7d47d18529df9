"""Small k x k kernels in float64: exact transitions, noise covariances, Cholesky factors.

For the autonomous linear SDE ``dz = A z dtau + L dW`` (after the time change ``tau = B(t)``)
with noise covariance ``D = L L^T``, a step of length ``tau`` has

    Phi(tau) = expm(tau A),       Q(tau) = int_0^tau expm(s A) D expm(s A)^T ds.

``transition_and_noise`` evaluates both for a tensor of ``tau`` values with *relative* accuracy
for every entry, including the tiny position-block entries as ``tau -> 0`` (which are
``O(tau^(2k-1))`` and would be lost to cancellation in ``S_inf - Phi S_inf Phi^T``):

1. scale: ``h = tau / 2^n`` with ``|h| ||A|| <= 1/4``;
2. Taylor series of degree 20 for ``Phi(h)`` and ``Q(h) = sum_n h^(n+1)/(n+1)! M_n``,
   ``M_0 = D``, ``M_n = A M_{n-1} + M_{n-1} A^T`` (the Van Loan block exponential, expanded);
3. square ``n`` times: ``Phi(2h) = Phi(h)^2``, ``Q(2h) = Phi(h) Q(h) Phi(h)^T + Q(h)``.

Nothing here diagonalises ``A``: critically damped drifts are defective.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

__all__ = [
    "transition_and_noise",
    "expm",
    "stationary_covariance",
    "is_hurwitz",
    "safe_cholesky",
    "apply_blocks",
]

_TAYLOR_DEGREE = 20
_TARGET_NORM = 0.25


def _squarings(tau: Tensor, norm_a: float) -> int:
    """Number of squarings so that every |tau| ||A|| / 2^n <= 1/4."""
    m = float(tau.abs().max()) * norm_a if tau.numel() else 0.0
    if m <= _TARGET_NORM:
        return 0
    return int(math.ceil(math.log2(m / _TARGET_NORM)))


def transition_and_noise(
    A: Tensor, D: Tensor | None, tau: Tensor
) -> tuple[Tensor, Tensor | None]:
    """``Phi = expm(tau A)`` and ``Q = int_0^tau expm(sA) D expm(sA)^T ds``.

    A: (k, k) float64; D: (k, k) float64 or None (then only Phi is computed); tau: (...) float64.
    Returns Phi (..., k, k) and Q (..., k, k) (None when D is None). ``tau`` may be negative
    for Phi (a backward map); Q is only meaningful for ``tau >= 0``.
    """
    A = A.to(torch.float64)
    tau = torch.as_tensor(tau, dtype=torch.float64, device=A.device)
    k = A.shape[-1]
    batch_shape = tau.shape
    flat = tau.reshape(-1)
    norm_a = float(torch.linalg.matrix_norm(A, ord=1)) if k else 0.0
    n = _squarings(flat, norm_a)
    h = (flat / 2.0**n)[:, None, None]  # (N, 1, 1)
    eye = torch.eye(k, dtype=torch.float64, device=A.device)

    # Taylor: Phi(h) = sum_j (hA)^j / j!,   Q(h) = sum_j h^(j+1)/(j+1)! M_j
    phi = eye.expand(flat.shape[0], k, k).clone()
    term = eye.expand(flat.shape[0], k, k)
    for j in range(1, _TAYLOR_DEGREE + 1):
        term = term @ A * (h / j)
        phi = phi + term
    q = None
    if D is not None:
        D = D.to(torch.float64)
        q = torch.zeros(flat.shape[0], k, k, dtype=torch.float64, device=A.device)
        M = D
        coef = h.clone()  # h^(j+1)/(j+1)!
        for j in range(_TAYLOR_DEGREE + 1):
            q = q + coef * M
            M = A @ M + M @ A.T
            coef = coef * h / (j + 2)
    for _ in range(n):
        if q is not None:
            q = phi @ q @ phi.transpose(-1, -2) + q
        phi = phi @ phi
    phi = phi.reshape(*batch_shape, k, k)
    if q is not None:
        q = 0.5 * (q + q.transpose(-1, -2))
        q = q.reshape(*batch_shape, k, k)
    return phi, q


def expm(A: Tensor, tau: Tensor) -> Tensor:
    """``expm(tau A)`` for a tensor of ``tau``: (...) -> (..., k, k), float64."""
    return transition_and_noise(A, None, tau)[0]


def is_hurwitz(A: Tensor) -> bool:
    """True if every eigenvalue of A has a strictly negative real part."""
    ev = np.linalg.eigvals(A.detach().cpu().numpy().astype(np.float64))
    return bool(np.all(ev.real < -1e-12))


def stationary_covariance(A: Tensor, D: Tensor) -> Tensor | None:
    """S with ``A S + S A^T + D = 0`` (the stationary covariance), or None if A is not Hurwitz."""
    if not is_hurwitz(A):
        return None
    a = A.detach().cpu().numpy().astype(np.float64)
    d = D.detach().cpu().numpy().astype(np.float64)
    s = scipy.linalg.solve_continuous_lyapunov(a, -d)
    s = 0.5 * (s + s.T)
    return torch.as_tensor(s, dtype=torch.float64, device=A.device)


def safe_cholesky(S: Tensor) -> Tensor:
    """Lower Cholesky factor of PSD matrices (..., k, k), float64, scale-invariant.

    Factors the correlation matrix ``S / sqrt(diag diag^T)`` and scales back, so a covariance
    whose blocks differ by many orders of magnitude (tiny ``t``) keeps full relative accuracy.
    Blocks with zero variance (e.g. the data block at ``t = 0`` with no auxiliary noise) get a
    zero row and column: the factor is exact and singular there.
    """
    S = S.to(torch.float64)
    d = torch.diagonal(S, dim1=-2, dim2=-1).clamp_min(0.0).sqrt()
    zero = d <= 0
    dsafe = torch.where(zero, torch.ones_like(d), d)
    R = S / (dsafe[..., :, None] * dsafe[..., None, :])
    mask = zero[..., :, None] | zero[..., None, :]
    eye = torch.eye(S.shape[-1], dtype=S.dtype, device=S.device).expand_as(S)
    R = torch.where(mask, eye, R)
    Lr, info = torch.linalg.cholesky_ex(R)
    if bool((info != 0).any()):
        # nearly singular correlation (a perfectly correlated pair): add a tiny relative jitter
        Lr, info = torch.linalg.cholesky_ex(R + 1e-12 * eye)
        if bool((info != 0).any()):
            raise ValueError("covariance is not positive semi-definite; cannot factor it")
    L = dsafe[..., :, None] * Lr
    return torch.where(zero[..., :, None] | zero[..., None, :], torch.zeros_like(L), L)


def apply_blocks(M: Tensor, z: Tensor) -> Tensor:
    """``(M kron I) z``: M (k, k) or (B, k, k), z (B, k, *D) -> (B, k, *D), in z's dtype."""
    M = M.to(dtype=z.dtype, device=z.device)
    zf = z.reshape(z.shape[0], z.shape[1], -1)
    if M.dim() == 2:
        out = torch.einsum("ij,bjd->bid", M, zf)
    else:
        out = torch.einsum("bij,bjd->bid", M, zf)
    return out.reshape(z.shape)
