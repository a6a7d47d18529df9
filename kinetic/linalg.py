"""Small k x k kernels in float64: exact transitions, noise covariances and their factors.

For the autonomous linear SDE ``dz = A z dtau + F dW`` (after the time change ``tau = B(t)``)
with noise covariance ``D = F F^T``, a step of length ``tau`` has

    Phi(tau) = expm(tau A),       Q(tau) = int_0^tau expm(s A) D expm(s A)^T ds.

``transition_and_noise`` evaluates both for a tensor of ``tau`` values with *relative* accuracy
for every entry, including the tiny position-block entries as ``tau -> 0`` (which are
``O(tau^(2k-1))`` and would be lost to cancellation in ``S_inf - Phi S_inf Phi^T``):

1. scale: ``h = tau / 2^n`` with ``|h| ||A|| <= 1/4``, ``n`` per element (the accuracy of one time
   does not depend on the others in its batch);
2. Taylor series of degree 20 for ``Phi(h) = sum_p h^p/p! A^p`` and ``Q(h) = sum_p h^(p+1)/(p+1)! M_p``,
   ``M_0 = D``, ``M_p = A M_(p-1) + M_(p-1) A^T`` (the Van Loan block exponential, expanded); the
   k x k matrices A^p and M_p are formed once, so every time point costs one small matmul;
3. square ``n`` times: ``Phi(2h) = Phi(h)^2``, ``Q(2h) = Phi(h) Q(h) Phi(h)^T + Q(h)``.

`TransitionKernel` holds the host constants for one A (and D, F) and a bound on |tau|, so a call makes
no host synchronisation (what `LinearSDE` uses on every call); the functions below build one per
call from max |tau|, read on the host.

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
    "TransitionKernel",
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
    """Number of squarings so that every |tau| ||A|| / 2^n <= 1/4 (reads tau's maximum on the host)."""
    m = float(tau.abs().max()) * norm_a if tau.numel() else 0.0
    return _squarings_for(m)


def _squarings_for(m: float) -> int:
    """Number of squarings n with m / 2^n <= 1/4, for the host bound m of |tau| ||A||."""
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


def _host(M) -> np.ndarray:
    if isinstance(M, Tensor):
        M = M.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(M, dtype=np.float64))


class TransitionKernel:
    """The kernels of this module for one drift A (and noise D = F F^T), built once on the host.

    A: (k, k); D: (k, k) or None (no ``Q``); F: (k, r) or None (no factor); ``tau_max``: a host bound
    on |tau|. Every host constant (||A||_1, the series matrices A^p, M_p and A^p F, the quadrature
    nodes, the largest squaring count ``max_squarings``) is formed here; the tensors go to each
    device once. A call then makes no host synchronisation: each element of ``tau`` gets its own
    squaring count ``n_i`` (the one it would get alone, so its accuracy does not depend on the
    batch), and the squarings run to ``max_squarings`` with ``torch.where`` keeping each element once
    its own ``n_i`` is reached. Elements beyond the bound (``|tau| ||A|| > 2^max_squarings / 4``)
    and non-finite ones come out NaN, never silently wrong.
    """

    def __init__(self, A, D=None, F=None, *, tau_max: float):
        a = _host(A)
        k = a.shape[-1]
        self.order = k
        self.norm_a = float(np.abs(a).sum(0).max()) if k else 0.0
        self.max_squarings = _squarings_for(float(tau_max) * self.norm_a)
        key = a.tobytes() + (b"" if D is None else _host(D).tobytes())
        AP, MP = _series_matrices(key, k, _TAYLOR_DEGREE)
        host = {"AP": torch.as_tensor(AP), "scales": torch.tensor([2.0**-j for j in range(self.max_squarings + 1)],
                                                                   dtype=torch.float64)}
        if D is not None:
            host["MP"] = torch.as_tensor(MP)
        if F is not None:
            # f(s) = expm(sA) F at Gauss-Legendre nodes s_j = h x_j; exact for the polynomial part of
            # f f^T up to degree 2J - 1 >= 2k - 2 + 18 (the data block's entries start at degree 2k - 2)
            x, w = _gauss_legendre(k + 9)
            host["APF"] = host["AP"] @ torch.as_tensor(_host(F))
            host["x"], host["w"] = torch.as_tensor(x), torch.as_tensor(w)
        self._host_tensors = host
        self._devices: dict = {}

    def _on(self, device) -> dict:
        key = str(device)
        if key not in self._devices:
            self._devices[key] = {name: v.to(device) for name, v in self._host_tensors.items()}
        return self._devices[key]

    def _scaled(self, tau: Tensor, c: dict) -> tuple[Tensor, Tensor]:
        """(h, n): h = tau / 2^n with |h| ||A|| <= 1/4 per element, n (N,) int64; NaN h beyond the bound."""
        m = tau.abs() * self.norm_a
        n = torch.where(m > _TARGET_NORM, torch.ceil(torch.log2(m / _TARGET_NORM)), torch.zeros_like(m))
        ok = torch.isfinite(m) & (n <= self.max_squarings)
        n = torch.where(ok, n, torch.zeros_like(n)).to(torch.int64)
        h = torch.where(ok, tau * c["scales"][n], torch.full_like(tau, float("nan")))
        return h, n

    def _flat(self, tau) -> tuple[Tensor, torch.Size, dict]:
        device = tau.device if isinstance(tau, Tensor) else None
        tau = torch.as_tensor(tau, dtype=torch.float64, device=device)
        return tau.reshape(-1), tau.shape, self._on(tau.device)

    def expm(self, tau) -> Tensor:
        """``expm(tau A)``: (...) -> (..., k, k) float64."""
        return self.transition_and_noise(tau, noise=False)[0]

    def transition_and_noise(self, tau, noise: bool = True) -> tuple[Tensor, Tensor | None]:
        """Phi (..., k, k) and Q (..., k, k) (None without D or with ``noise=False``); see the module docstring."""
        flat, shape, c = self._flat(tau)
        k = self.order
        h, n = self._scaled(flat, c)
        w = _powers_over_factorial(h, _TAYLOR_DEGREE + 1)  # h^p / p!, p = 0..degree + 1
        phi = torch.einsum("np,pij->nij", w[:, :-1], c["AP"])
        q = torch.einsum("np,pij->nij", w[:, 1:], c["MP"]) if noise and "MP" in c else None
        for j in range(self.max_squarings):
            more = (n > j)[:, None, None]
            if q is not None:
                q = torch.where(more, phi @ q @ phi.transpose(-1, -2) + q, q)
            phi = torch.where(more, phi @ phi, phi)
        phi = phi.reshape(*shape, k, k)
        if q is not None:
            q = 0.5 * (q + q.transpose(-1, -2))
            q = q.reshape(*shape, k, k)
        return phi, q

    def transition_and_noise_factor(self, tau) -> tuple[Tensor, Tensor]:
        """Phi and a lower factor L_Q (L_Q L_Q^T = Q), both (..., k, k), for tau >= 0 (needs F)."""
        flat, shape, c = self._flat(tau)
        if "APF" not in c:
            raise ValueError("this TransitionKernel was built without F; it has no noise factor")
        k = self.order
        N = flat.shape[0]
        h, n = self._scaled(flat, c)
        phi = torch.einsum("np,pij->nij", _powers_over_factorial(h, _TAYLOR_DEGREE), c["AP"])
        x, w = c["x"], c["w"]
        ws = _powers_over_factorial(h[:, None] * x[None, :], _TAYLOR_DEGREE)  # (N, J, P + 1)
        f = torch.einsum("njp,pkr->nkjr", ws, c["APF"])  # (N, k, J, r)
        f = f * torch.sqrt(w[None, None, :, None] * h.abs()[:, None, None, None])
        Lq = tria(f.reshape(N, k, -1))
        for j in range(self.max_squarings):
            more = (n > j)[:, None, None]
            Lq = torch.where(more, tria(torch.cat([phi @ Lq, Lq], dim=-1)), Lq)
            phi = torch.where(more, phi @ phi, phi)
        return phi.reshape(*shape, k, k), Lq.reshape(*shape, k, k)


def _data_kernel(A: Tensor, D: Tensor | None, F: Tensor | None, tau: Tensor) -> TransitionKernel:
    """A kernel whose bound is tau's own maximum (read on the host): any finite tau is accepted."""
    norm_a = float(torch.linalg.matrix_norm(A.to(torch.float64), ord=1)) if A.shape[-1] else 0.0
    m = float(tau.abs().max()) if tau.numel() else 0.0
    _squarings_for(m * norm_a)  # ValueError where tau ||A|| is not finite
    return TransitionKernel(A, D, F, tau_max=m)


def transition_and_noise(
    A: Tensor, D: Tensor | None, tau: Tensor
) -> tuple[Tensor, Tensor | None]:
    """``Phi = expm(tau A)`` and ``Q = int_0^tau expm(sA) D expm(sA)^T ds``.

    A: (k, k) float64; D: (k, k) float64 or None (then only Phi is computed); tau: (...) float64.
    Returns Phi (..., k, k) and Q (..., k, k) (None when D is None). ``tau`` may be negative
    for Phi (a backward map); Q is only meaningful for ``tau >= 0``. Reads max |tau| on the host;
    a `TransitionKernel` built once with a bound on tau does not.
    """
    tau = torch.as_tensor(tau, dtype=torch.float64, device=A.device)
    return _data_kernel(A, D, None, tau).transition_and_noise(tau)


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
    Reads max |tau| on the host; a `TransitionKernel` built once with a bound on tau does not.
    """
    tau = torch.as_tensor(tau, dtype=torch.float64, device=A.device)
    return _data_kernel(A, None, F, tau).transition_and_noise_factor(tau)


def expm(A: Tensor, tau: Tensor) -> Tensor:
    """``expm(tau A)`` for a tensor of ``tau``: (...) -> (..., k, k), float64."""
    tau = torch.as_tensor(tau, dtype=torch.float64, device=A.device)
    return _data_kernel(A, None, None, tau).expm(tau)


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
