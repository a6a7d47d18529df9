"""Small k x k kernels in float64: exact transitions, noise covariances and their factors.

For the autonomous linear SDE ``dz = A z dtau + F dW`` (after the time change ``tau = B(t)``)
with noise covariance ``D = F F^T``, a step of length ``tau`` has

    Phi(tau) = expm(tau A),       Q(tau) = int_0^tau expm(s A) D expm(s A)^T ds.

``transition_and_noise`` evaluates both for a tensor of ``tau`` values with *relative* accuracy
for every entry, including the tiny position-block entries as ``tau -> 0`` (which are
``O(tau^(2k-1))`` and would be lost to cancellation in ``S_inf - Phi S_inf Phi^T``):

1. scale: ``h = tau / 2^n`` with ``|h| ||A|| <= 1/4``;
2. Taylor series of degree 20 for ``Phi(h) = sum_p h^p/p! A^p`` and ``Q(h) = sum_p h^(p+1)/(p+1)! M_p``,
   ``M_0 = D``, ``M_p = A M_(p-1) + M_(p-1) A^T`` (the Van Loan block exponential, expanded); the
   k x k matrices A^p and M_p are formed once, so every time point costs one small matmul;
3. square ``n`` times: ``Phi(2h) = Phi(h)^2``, ``Q(2h) = Phi(h) Q(h) Phi(h)^T + Q(h)``.

Entrywise accuracy is not enough for a *factor*: near t = 0 the covariance of a chain of order k is
graded over many orders of magnitude and close to singular (its correlation matrix reaches condition
numbers of 1e60 for k = 8 at t = 1e-6), so a Cholesky factorisation of the formed matrix loses every
digit of the conditional variances the scores divide by. `transition_and_noise_factor` therefore computes a factor
``L_Q L_Q^T = Q`` in square-root form: Gauss-Legendre quadrature of ``int f f^T`` with
``f(s) = expm(sA) F`` on the scaled step, triangularised by QR (`tria`), and the doubling
``L_Q(2h) = tria([Phi(h) L_Q(h), L_Q(h)])``. A square-root factor keeps the accuracy of the columns
it is built from, whatever the conditioning of ``Q`` itself.

Nothing here diagonalises ``A``: critically damped drifts are defective.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.linalg
import torch
from torch import Tensor

__all__ = [
    "transition_and_noise",
    "transition_and_noise_factor",
    "tria",
    "expm",
    "stationary_covariance",
    "is_hurwitz",
    "safe_cholesky",
    "correlation_cholesky",
    "apply_blocks",
]

_TAYLOR_DEGREE = 20
_TARGET_NORM = 0.25


def _squarings(tau: Tensor, norm_a: float) -> int:
    """Number of squarings so that every |tau| ||A|| / 2^n <= 1/4."""
    m = float(tau.abs().max()) * norm_a if tau.numel() else 0.0
    if not math.isfinite(m):
        raise ValueError(f"tau * ||A|| must be finite, got {m}")
    if m <= _TARGET_NORM:
        return 0
    return int(math.ceil(math.log2(m / _TARGET_NORM)))


def _powers_over_factorial(h: Tensor, degree: int) -> Tensor:
    """(..., degree + 1): h^p / p!, by the recurrence (exact signs, no logs)."""
    out = [torch.ones_like(h)]
    for p in range(1, degree + 1):
        out.append(out[-1] * h / p)
    return torch.stack(out, dim=-1)


@functools.lru_cache(maxsize=64)
def _series_matrices(key: bytes, k: int, degree: int) -> tuple[np.ndarray, np.ndarray]:
    """A^p and M_p (p = 0..degree) for the A and D packed in ``key`` (float64 bytes), cached."""
    a = np.frombuffer(key, dtype=np.float64)
    A = a[: k * k].reshape(k, k)
    D = a[k * k :].reshape(k, k) if a.size > k * k else np.zeros((k, k))
    AP, MP = [np.eye(k)], [D]
    for _ in range(degree):
        AP.append(A @ AP[-1])
        MP.append(A @ MP[-1] + MP[-1] @ A.T)
    return np.stack(AP), np.stack(MP)


def _series(A: Tensor, D: Tensor | None) -> tuple[Tensor, Tensor | None]:
    k = A.shape[-1]
    key = A.detach().cpu().numpy().astype(np.float64).tobytes()
    if D is not None:
        key += D.detach().cpu().numpy().astype(np.float64).tobytes()
    AP, MP = _series_matrices(key, k, _TAYLOR_DEGREE)
    AP = torch.as_tensor(AP, device=A.device)
    return AP, (torch.as_tensor(MP, device=A.device) if D is not None else None)


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
    h = flat / 2.0**n
    AP, MP = _series(A, None if D is None else D.to(torch.float64))
    w = _powers_over_factorial(h, _TAYLOR_DEGREE + 1)  # h^p / p!, p = 0..degree + 1
    phi = torch.einsum("np,pij->nij", w[:, :-1], AP)
    q = torch.einsum("np,pij->nij", w[:, 1:], MP) if MP is not None else None
    for _ in range(n):
        if q is not None:
            q = phi @ q @ phi.transpose(-1, -2) + q
        phi = phi @ phi
    phi = phi.reshape(*batch_shape, k, k)
    if q is not None:
        q = 0.5 * (q + q.transpose(-1, -2))
        q = q.reshape(*batch_shape, k, k)
    return phi, q


def tria(M: Tensor) -> Tensor:
    """Lower-triangular L (..., k, k) with L L^T = M M^T for M (..., k, p): Gram-Schmidt on the rows.

    Row i of M is written as sum_{j <= i} L_ij q_j with orthonormal q_j (modified Gram-Schmidt, with
    one re-orthogonalisation pass), block by block in the order of the state. Each row of L is then as
    accurate as the row of M it comes from, whatever the scales of the other rows and the order of M's
    columns (Householder QR of M^T is not: its accuracy on these graded matrices depends on the column
    order). The diagonal is nonnegative; a zero row of M (beyond what earlier rows span) gives a zero
    diagonal entry.
    """
    k = M.shape[-2]
    L = torch.zeros(*M.shape[:-2], k, k, dtype=M.dtype, device=M.device)
    basis: list[Tensor] = []
    for i in range(k):
        v = M[..., i, :]
        for _ in range(2):
            for j, q in enumerate(basis):
                r = (q * v).sum(-1)
                L[..., i, j] += r
                v = v - r.unsqueeze(-1) * q
        norm = torch.linalg.vector_norm(v, dim=-1)
        L[..., i, i] = norm
        basis.append(torch.where(norm.unsqueeze(-1) > 0, v / norm.clamp_min(1e-300).unsqueeze(-1), torch.zeros_like(v)))
    return L


@functools.lru_cache(maxsize=16)
def _gauss_legendre(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes in (0, 1) and weights summing to 1."""
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1.0) / 2.0, w / 2.0


def transition_and_noise_factor(A: Tensor, F: Tensor, tau: Tensor) -> tuple[Tensor, Tensor]:
    """``Phi = expm(tau A)`` and a lower factor ``L_Q`` with ``L_Q L_Q^T = Q(tau)`` for ``D = F F^T``.

    A: (k, k), F: (k, r), tau: (...) >= 0, float64. Returns Phi, L_Q, both (..., k, k). Square-root
    form throughout (see the module docstring): accurate even where Q is numerically singular.
    """
    A = A.to(torch.float64)
    F = F.to(torch.float64)
    tau = torch.as_tensor(tau, dtype=torch.float64, device=A.device)
    k, r = F.shape
    batch_shape = tau.shape
    flat = tau.reshape(-1)
    N = flat.shape[0]
    norm_a = float(torch.linalg.matrix_norm(A, ord=1)) if k else 0.0
    n = _squarings(flat, norm_a)
    h = flat / 2.0**n
    AP, _ = _series(A, None)
    phi = torch.einsum("np,pij->nij", _powers_over_factorial(h, _TAYLOR_DEGREE), AP)
    # f(s) = expm(sA) F at Gauss-Legendre nodes s_j = h x_j; exact for the polynomial part of
    # f f^T up to degree 2J - 1 >= 2k - 2 + 18 (the data block's entries start at degree 2k - 2)
    x, w = _gauss_legendre(k + 9)
    x = torch.as_tensor(x, device=A.device)
    w = torch.as_tensor(w, device=A.device)
    ws = _powers_over_factorial(h[:, None] * x[None, :], _TAYLOR_DEGREE)  # (N, J, P + 1)
    f = torch.einsum("njp,pkr->nkjr", ws, AP @ F)  # (N, k, J, r)
    f = f * torch.sqrt(w[None, None, :, None] * h.abs()[:, None, None, None])
    Lq = tria(f.reshape(N, k, -1))
    for _ in range(n):
        Lq = tria(torch.cat([phi @ Lq, Lq], dim=-1))
        phi = phi @ phi
    return phi.reshape(*batch_shape, k, k), Lq.reshape(*batch_shape, k, k)


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


def correlation_cholesky(S: Tensor) -> tuple[Tensor, Tensor]:
    """Lower Cholesky factor of PSD matrices (..., k, k) through their correlation matrix, and an
    estimate (..., ) of that correlation matrix's condition number (inf where it failed).

    Factoring ``R = S / sqrt(diag diag^T)`` makes the factor invariant to the scale of each block.
    ``cond = ||L_R^-1||_F^2`` (within a factor k of ||R^-1||, and ||R|| <= k) bounds how many digits
    the factor loses: about log10(cond) of those S was formed with. Blocks with zero variance get a
    zero row and column (the factor is exact and singular there).
    """
    S = S.to(torch.float64)
    k = S.shape[-1]
    d = torch.diagonal(S, dim1=-2, dim2=-1).clamp_min(0.0).sqrt()
    zero = d <= 0
    dsafe = torch.where(zero, torch.ones_like(d), d)
    R = S / (dsafe[..., :, None] * dsafe[..., None, :])
    mask = zero[..., :, None] | zero[..., None, :]
    eye = torch.eye(k, dtype=S.dtype, device=S.device).expand_as(S)
    R = torch.where(mask, eye, R)
    Lr, info = torch.linalg.cholesky_ex(R)
    ok = info == 0
    Lr = torch.where(ok[..., None, None], Lr, eye)
    cond = torch.linalg.inv(Lr).square().sum((-1, -2))  # an estimate only: inv is faster here
    cond = torch.where(ok & torch.isfinite(cond), cond, torch.full_like(cond, float("inf")))
    L = torch.where(mask, torch.zeros_like(Lr), dsafe[..., :, None] * Lr)
    return L, cond


def safe_cholesky(S: Tensor) -> Tensor:
    """Lower Cholesky factor of PSD matrices (..., k, k), float64, scale-invariant (see
    `correlation_cholesky`); a nearly singular correlation gets a relative jitter of 1e-12.
    For the covariances of a `LinearSDE` use ``sde.cholesky`` / ``sde.coefficients``: they switch
    to the square-root kernel where this factorisation would lose digits."""
    L, cond = correlation_cholesky(S)
    failed = torch.isinf(cond)
    if bool(failed.any()):
        d = torch.diagonal(S, dim1=-2, dim2=-1).clamp_min(0.0)
        L2, cond2 = correlation_cholesky(S + 1e-12 * torch.diag_embed(d))
        if bool(torch.isinf(cond2[failed]).any()):
            raise ValueError("covariance is not positive semi-definite; cannot factor it")
        L = torch.where(failed[..., None, None], L2, L)
    return L


def apply_blocks(M: Tensor, z: Tensor) -> Tensor:
    """``(M kron I) z``: M (k, k) or (B, k, k), z (B, k, *D) -> (B, k, *D), in z's dtype."""
    M = M.to(dtype=z.dtype, device=z.device)
    zf = z.reshape(z.shape[0], z.shape[1], -1)
    if M.dim() == 2:
        out = torch.einsum("ij,bjd->bid", M, zf)
    else:
        out = torch.einsum("bij,bjd->bid", M, zf)
    return out.reshape(z.shape)
