"""`LinearSDE`: dz = beta(t) (A kron I) z dt + sqrt(beta(t)) (G kron I) dW on a state of k blocks.

The state ``z`` has shape ``(B, k, *D)``: block 0 is the data (position), blocks 1..k-1 are the
auxiliary variables (velocity, acceleration, ...), each shaped like the data. Noise enters the
blocks N = ``noised_blocks`` where ``(G G^T)_ii > 0``; the reverse dynamics need only the score of
those blocks (``D grad log p = D[:, N] grad_{z_N} log p``), so a model learns ``len(N)`` blocks:
shaped like the data when one block is noised (VP, CLD, HOLD), ``(B, len(N), *D)`` otherwise (PSLD).

With the time change ``tau = B(t)`` the SDE is autonomous, and every exact quantity is a k x k
float64 matrix per time point (see ``docs/math.md``):

    Phi(s, t) = expm((B(t) - B(s)) A)
    Sigma(t)  = Phi S0 Phi^T + Q(B(t))             S0 = blockdiag(0, aux_cov)
              = S_inf + Phi (S0 - S_inf) Phi^T     (large tau, when A is Hurwitz; Lyapunov form)
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from . import linalg
from .checks import check_generator, check_real_array, check_score_tensor, parse_device
from .coefficients import Coefficients
from .schedules import ConstantSchedule, Schedule, schedule_from_spec

__all__ = ["LinearSDE", "ScoreFn", "MAX_ORDER"]

MAX_ORDER = 16
"""The largest order k for which kinetic's kernels are verified exact (transitions, covariances and
their factors to 1e-8 relative against moment-ODE integration and high-precision arithmetic for the
critically damped chain, t from 1e-6 to T; see docs/math.md). Larger k is refused."""

ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""``score_fn(z, t)``: z (B, k, *D), t (B,) -> the score of the noised blocks, (B, *D) for one
noised block or (B, len(noised_blocks), *D) for several (in the order of ``noised_blocks``)."""

# The Lyapunov form is used where its subtraction loses at most this factor (about 3 digits).
_LYAPUNOV_LOSS = 1e3
# Above this condition number of the correlation matrix, whose Cholesky factor then loses about
# log10(cond) of the digits Sigma was formed with, the square-root kernel computes the factor.
_COND_TOL = 1e4
#: On the CPU, where reading a mask costs no device synchronisation, the accurate fallbacks of
#: `LinearSDE._covariance_tau` and `LinearSDE._moments` are computed only for the times that need them;
#: on other devices for every time and selected with ``torch.where`` (no host synchronisation). Both
#: give the same values: each time's kernel is independent of its batch (`linalg.TransitionKernel`).
#: tests/test_sync_free.py turns this off to run the device path under its guard on the CPU.
HOST_SUBSETS = True


def _subsets(t: Tensor) -> bool:
    return HOST_SUBSETS and t.device.type == "cpu"


def _as_matrix(name: str, value, k: int | None = None) -> Tensor:
    check_real_array(value, name)  # complex -> real would drop the imaginary part
    try:
        m = torch.as_tensor(value, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a square matrix (array-like of floats): {err}") from None
    if m.dim() == 0 and (k is None or k == 1):
        m = m.reshape(1, 1)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"{name} must be a square k x k matrix, got shape {tuple(m.shape)}")
    if k is not None and m.shape[0] != k:
        raise ValueError(f"{name} must be {k} x {k} to match the drift, got {tuple(m.shape)}")
    if not torch.isfinite(m).all():
        raise ValueError(f"{name} must have finite entries, got {m.tolist()}")
    return m


class LinearSDE:
    """A linear SDE of order k with exact Gaussian transitions.

    Args:
        drift: A, (k, k).
        diffusion: G, (k, k), any real matrix with ``G G^T != 0``; the noised blocks are the i with
            ``(G G^T)_ii > 0``.
        schedule: beta(t) and B(t) (`kinetic.schedules`); constant 1 when omitted.
        aux_cov: (k-1, k-1) covariance of the auxiliary blocks at t = 0 (zero when omitted);
            a scalar means that multiple of the identity.
        T: the end time.
        name: a label used in reprs, tables and checkpoints.
    """

    def __init__(
        self,
        drift,
        diffusion,
        *,
        schedule: Schedule | None = None,
        aux_cov=None,
        T: float = 1.0,
        name: str = "linear",
        params: dict | None = None,
    ):
        A = _as_matrix("drift", drift)
        k = A.shape[0]
        if k < 1:
            raise ValueError("drift must be a k x k matrix with k >= 1 (the order), got a 0 x 0 matrix")
        if k > MAX_ORDER:
            raise ValueError(
                f"drift is {k} x {k}: order {k} exceeds the largest order kinetic computes exactly "
                f"(MAX_ORDER = {MAX_ORDER}; beyond it the covariance factors lose their digits in float64)"
            )
        G = _as_matrix("diffusion", diffusion, k)
        D = G @ G.T
        diag = torch.diagonal(D)
        if not bool((diag > 0).any()):
            raise ValueError(f"diffusion: G G^T must not be zero (no block would receive noise); got G = {G.tolist()}")
        noised = tuple(int(i) for i in (diag > 0).nonzero().reshape(-1).tolist())
        ev = torch.linalg.eigvals(A)
        if bool((ev.real > 1e-12 * max(1.0, float(ev.abs().max()))).any()):
            raise ValueError(
                "drift: A has eigenvalues with positive real part "
                f"({', '.join(f'{complex(e):.4g}' for e in ev if e.real > 0)}); the SDE would explode and has no "
                "prior; kinetic supports stable drifts (all Re < 0: stationary prior) and marginally stable ones "
                "(Re <= 0, e.g. VE: prior N(0, Sigma(T)))"
            )
        try:
            T = float(T)
        except (TypeError, ValueError):
            raise TypeError(f"T must be a positive float, got {T!r}") from None
        if not math.isfinite(T) or T <= 0:
            raise ValueError(f"T must be a finite positive float, got {T}")
        if schedule is None:
            schedule = ConstantSchedule(1.0)
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a kinetic.schedules.Schedule, got {type(schedule).__name__}")
        schedule.check(T)  # beta > 0, B(0) = 0, B increasing and the integral of beta (kinetic.schedules)
        S0 = torch.zeros(k, k, dtype=torch.float64)
        if aux_cov is not None and k > 1:
            C = torch.as_tensor(aux_cov, dtype=torch.float64)
            if C.dim() == 0:
                C = C * torch.eye(k - 1, dtype=torch.float64)
            C = _as_matrix("aux_cov", C, k - 1)
            if not torch.allclose(C, C.T, atol=1e-12) or torch.linalg.eigvalsh(C).min() < -1e-12:
                raise ValueError(f"aux_cov must be symmetric positive semi-definite, got {C.tolist()}")
            S0[1:, 1:] = C
        elif aux_cov is not None and k == 1 and float(torch.as_tensor(aux_cov).abs().sum()) != 0:
            raise ValueError("aux_cov: an order-1 SDE has no auxiliary blocks; leave aux_cov unset")

        self._A, self._G, self._D, self._S0 = A, G, D, S0
        self._noised = noised
        self._D_N = D[list(noised)][:, list(noised)].clone()
        self.order = k
        self.T = T
        self.schedule = schedule
        self.name = name
        self.params = dict(params or {})
        self._norm_a = float(torch.linalg.matrix_norm(A, ord=1))
        F = G[:, G.abs().sum(0) > 0]  # D = F F^T
        # C0 C0^T = S0, lower triangular and block-aligned: the square-root kernel keeps its accuracy
        # only if the columns follow the blocks (a rotated factor mixes the graded rows)
        C0 = linalg.safe_cholesky(S0)
        self._factors = (F, C0)
        self._S_inf = linalg.stationary_covariance(A, D)
        self._tau_T = float(schedule.integral(torch.tensor(T, dtype=torch.float64)))
        if not (math.isfinite(self._tau_T) and math.isfinite(self._tau_T * max(self._norm_a, 1.0))):
            raise ValueError(
                f"schedule: B(T) = {self._tau_T:.4g} times ||A|| = {self._norm_a:.4g} overflows float64; "
                "the transitions over [0, T] cannot be computed (use a smaller beta, drift or T)"
            )
        self._cache: dict = {}
        self._kernel()  # the host constants of the transition kernels, once (no conversion in later calls)

    # ------------------------------------------------------------------ attributes
    @property
    def drift_matrix(self) -> Tensor:
        """A, (k, k) float64."""
        return self._A.clone()

    @property
    def diffusion_matrix(self) -> Tensor:
        """G, (k, k) float64."""
        return self._G.clone()

    @property
    def noise_matrix(self) -> Tensor:
        """D = G G^T, (k, k) float64."""
        return self._D.clone()

    @property
    def noised_blocks(self) -> tuple[int, ...]:
        """N: the indices i with (G G^T)_ii > 0, increasing. The score of these blocks drives the
        reverse dynamics; ``score_fn`` returns it."""
        return self._noised

    @property
    def noise_block(self) -> Tensor:
        """D_NN = (G G^T)[N][:, N], (m, m) float64 with m = len(noised_blocks)."""
        return self._D_N.clone()

    def score_shape(self, batch: int, data_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of ``score_fn``'s output: (B, *D) for one noised block, (B, m, *D) for m > 1."""
        m = len(self._noised)
        return (int(batch), *([m] if m > 1 else []), *(int(s) for s in data_shape))

    def check_score(self, score, z: Tensor, name: str = "score_fn") -> None:
        """ValueError unless ``score`` has `score_shape` for the state z (B, k, *D)."""
        expected = self.score_shape(z.shape[0], z.shape[2:])
        if not isinstance(score, Tensor):
            raise ValueError(f"{name} must return a torch.Tensor of shape {expected}, got {type(score).__name__}")
        check_score_tensor(score, z, name)
        if tuple(score.shape) != expected:
            m = len(self._noised)
            what = (
                f"the score of the noised block {self._noised[0]}, shaped like the data"
                if m == 1
                else f"the scores of the {m} noised blocks {self._noised}, stacked on axis 1"
            )
            raise ValueError(
                f"{name} returned shape {tuple(score.shape)}; it must return {what}: {expected} "
                f"(z has shape {tuple(z.shape)})"
            )

    @property
    def initial_cov(self) -> Tensor:
        """S0 = blockdiag(0, aux_cov), (k, k) float64: the covariance of z_0 given the data."""
        return self._S0.clone()

    @property
    def aux_cov(self) -> Tensor:
        return self._S0[1:, 1:].clone()

    @property
    def stationary_cov(self) -> Tensor | None:
        """S_inf with A S + S A^T + D = 0, or None when A is not Hurwitz (e.g. VE)."""
        return None if self._S_inf is None else self._S_inf.clone()

    @property
    def prior_cov(self) -> Tensor:
        """Covariance of the prior at t = T: S_inf if it exists, else Sigma(T) (zero data)."""
        if self._S_inf is not None:
            return self._S_inf.clone()
        return self.covariance(torch.tensor(self.T, dtype=torch.float64))

    def _mats(self, device) -> tuple[Tensor, Tensor, Tensor]:
        key = ("mats", str(device))
        if key not in self._cache:
            self._cache[key] = tuple(m.to(device) for m in (self._A, self._D, self._S0))
        return self._cache[key]

    def _kernel(self) -> linalg.TransitionKernel:
        """The transition kernels of A, D and F for |tau| <= B(T) (times lie in [0, T]), built once: a
        call makes no host synchronisation. tau beyond the bound (never from checked times) gives NaN."""
        if "kernel" not in self._cache:
            F, _ = self._factors
            # the margin covers B(T) evaluated on another device (a few ulps); it costs at most one squaring
            self._cache["kernel"] = linalg.TransitionKernel(self._A, self._D, F, tau_max=self._tau_T * (1 + 1e-6))
        return self._cache["kernel"]

    # ------------------------------------------------------------------ time
    def _check_t(self, t, name: str = "t") -> Tensor:
        if not isinstance(t, Tensor):
            try:
                t = torch.as_tensor(t, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise TypeError(f"{name} must be a float or a tensor of times, got {type(t).__name__}") from None
        if t.is_floating_point() is False:
            t = t.to(torch.float64)
        if t.device.type == "cpu":
            if not torch.isfinite(t).all():
                raise ValueError(f"{name} must be finite, got non-finite times")
            lo, hi = float(t.min()) if t.numel() else 0.0, float(t.max()) if t.numel() else 0.0
            tol = 1e-9 * max(1.0, self.T)
            if lo < -tol or hi > self.T + tol:
                raise ValueError(f"{name} must lie in [0, T] = [0, {self.T}], got values in [{lo}, {hi}]")
        return t.to(torch.float64).clamp(0.0, self.T)

    def beta(self, t) -> Tensor:
        """beta(t), float64, shaped like t."""
        return self.schedule.beta(self._check_t(t)).to(torch.as_tensor(t).device)

    def tau(self, t) -> Tensor:
        """The time change tau = B(t), float64, shaped like t."""
        return self.schedule.integral(self._check_t(t))

    # ------------------------------------------------------------------ exact kernels
    def transition(self, s, t) -> Tensor:
        """Phi(s, t) = expm((B(t) - B(s)) A): (...) x (...) -> (..., k, k) float64.

        E[z_t | z_s] = (Phi kron I) z_s for s <= t. For s > t it is the backward map Phi(t, s)^-1
        (the mean of z_s mapped back to time t; no noise is undone): Phi(s, t) Phi(t, s) = I.
        """
        dtau = self.tau(t) - self.tau(s)
        A, _, _ = self._mats(dtau.device)
        return linalg.expm(A, dtau)

    def covariance(self, t) -> Tensor:
        """Sigma(t), the covariance of z_t given x_0 (auxiliaries from aux_cov): (...) -> (..., k, k)."""
        tau = self.tau(t)
        return self._covariance_tau(tau)[1]

    def _covariance_tau(self, tau: Tensor) -> tuple[Tensor, Tensor]:
        """(Phi(0, t), Sigma(t)) for tau = B(t) (..., k, k), entrywise accurate at every scale.

        With a stationary law, the Lyapunov form Sigma = S_inf + Phi (S0 - S_inf) Phi^T needs only
        Phi; it is used where its rounding error, bounded by eps (S_inf + |Phi| |S0 - S_inf| |Phi|^T),
        is at most _LYAPUNOV_LOSS times each entry's scale sqrt(Sigma_ii Sigma_jj). Elsewhere (small t,
        and graded covariances whose tiny blocks that subtraction would cancel) the scaled Taylor /
        Van Loan series of `linalg.transition_and_noise` gives every entry to relative accuracy.
        """
        _, _, S0 = self._mats(tau.device)
        shape, k = tau.shape, self.order
        flat = tau.reshape(-1)
        kernel = self._kernel()
        if self._S_inf is None:
            phi, q = kernel.transition_and_noise(flat)
            sigma = phi @ S0 @ phi.transpose(-1, -2) + q
        else:
            subsets = _subsets(flat)
            phi, q = kernel.transition_and_noise(flat, noise=not subsets)
            S_inf = self._S_inf.to(tau.device)
            C = S0 - S_inf
            lyapunov = S_inf + phi @ C @ phi.transpose(-1, -2)
            # |x^T C y| <= sqrt(x^T R x y^T R y) with R = diag(row sums of |C|): a bound on the size
            # of the terms Phi C Phi^T is made of, per diagonal entry
            size = torch.diagonal(S_inf) + phi.square() @ C.abs().sum(-1)
            diag = torch.diagonal(lyapunov, dim1=-2, dim2=-1)
            loss = torch.where(diag > 0, size / diag.clamp_min(1e-300), torch.full_like(diag, float("inf"))).amax(-1)
            ok = loss <= _LYAPUNOV_LOSS
            if subsets:  # the series only where the Lyapunov form loses digits
                sigma = lyapunov
                bad = (~ok).nonzero().reshape(-1)
                if bad.numel():
                    p, q = kernel.transition_and_noise(flat[bad])
                    phi[bad] = p
                    sigma[bad] = p @ S0 @ p.transpose(-1, -2) + q
            else:  # both forms for every time, selected on the device (no host synchronisation)
                sigma = torch.where(ok[:, None, None], lyapunov, phi @ S0 @ phi.transpose(-1, -2) + q)
        sigma = 0.5 * (sigma + sigma.transpose(-1, -2))
        return phi.reshape(*shape, k, k), sigma.reshape(*shape, k, k)

    def _moments(self, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(Phi(0, t), Sigma(t), L_t) for tau = B(t), (..., k, k) each.

        L_t is the Cholesky factor of the formed Sigma where that factorisation is well conditioned
        (correlation condition number <= _COND_TOL: at most ~4 digits lost), and otherwise the
        square-root factor tria([Phi C0, L_Q]) of `linalg.transition_and_noise_factor` (C0 C0^T = S0), which stays
        accurate however close to singular Sigma is (e.g. small t, high order; see docs/math.md).
        Off the CPU both are computed for every time and selected with ``torch.where`` (`HOST_SUBSETS`).
        """
        shape, k = tau.shape, self.order
        flat = tau.reshape(-1)
        phi, sigma = self._covariance_tau(flat)
        chol, cond = linalg.correlation_cholesky(sigma)
        if k > 1:  # a 1 x 1 correlation is 1 (cond = 1): order 1 never needs the square-root factor
            # the square-root factor for every time, selected on the device (no host synchronisation)
            key = ("C0", str(tau.device))
            if key not in self._cache:
                self._cache[key] = self._factors[1].to(tau.device)
            C0 = self._cache[key]
            bad = cond > _COND_TOL
            if _subsets(flat):  # the factor only where the Cholesky factor of the formed Sigma loses digits
                idx = bad.nonzero().reshape(-1)
                if idx.numel():
                    p, Lq = self._kernel().transition_and_noise_factor(flat[idx])
                    chol[idx] = linalg.tria(torch.cat([p @ C0, Lq], dim=-1))
            else:
                p, Lq = self._kernel().transition_and_noise_factor(flat)
                root = linalg.tria(torch.cat([p @ C0, Lq], dim=-1))
                chol = torch.where(bad[:, None, None], root, chol)
        return phi.reshape(*shape, k, k), sigma.reshape(*shape, k, k), chol.reshape(*shape, k, k)

    def coefficients(self, t) -> Coefficients:
        """Every exact per-time quantity for times t (...,) in one pass (see `kinetic.coefficients`):
        tau, beta, Phi(0, t), Sigma(t), its factor L_t and what derives from them, float64."""
        t = self._check_t(t)
        tau = self.schedule.integral(t)
        phi, sigma, chol = self._moments(tau)
        beta = self.schedule.beta(t)
        return Coefficients(t, tau, beta, phi, sigma, chol, self._noised, self._D_N.to(t.device))

    def cholesky(self, t) -> Tensor:
        """Lower Cholesky factor L_t of Sigma(t), (...) -> (..., k, k) float64.

        Exact and scale-invariant down to tiny t; at t = 0 with zero aux_cov the data block's
        variance is zero and so is its row (and L_t[k, k] = 0: losses and samplers use t >= t_eps).
        """
        return self._moments(self.tau(t))[2]

    # ------------------------------------------------------------------ data path
    def _batch_t(self, t, batch: int, device) -> Tensor:
        t = self._check_t(t).to(device)
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must be a scalar or have shape ({batch},) to match the batch, got {tuple(t.shape)}")
        return t

    def _check_data(self, x0: Tensor, name: str = "x0") -> None:
        if not isinstance(x0, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, *data_shape), got {type(x0).__name__}")
        if x0.dim() < 2:
            raise ValueError(f"{name} must have shape (B, *data_shape) with at least 2 dims, got {tuple(x0.shape)}")
        if not x0.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {x0.dtype}")
        if x0.numel() == 0:
            raise ValueError(f"{name} must hold at least one example with a nonempty data shape, got shape {tuple(x0.shape)}")

    def check_state(self, z: Tensor, name: str = "z") -> None:
        """Raise a clear error unless z has shape (B, k, *D) and a float dtype."""
        if not isinstance(z, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape (B, {self.order}, *data_shape)")
        if z.dim() < 3 or z.shape[1] != self.order:
            raise ValueError(
                f"{name} must have shape (B, {self.order}, *data_shape) for an order-{self.order} SDE, "
                f"got {tuple(z.shape)}"
            )
        if not z.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got {z.dtype}")

    def marginal(self, x0: Tensor, t) -> tuple[Tensor, Tensor]:
        """Law of z_t given data x0: mean (B, k, *D) in x0's dtype, covariance (B, k, k) float64."""
        self._check_data(x0)
        t = self._batch_t(t, x0.shape[0], x0.device)
        phi, sigma = self._covariance_tau(self.tau(t))
        col = phi[:, :, 0].to(x0.dtype)  # (B, k): auxiliaries have zero mean
        mean = col.reshape(*col.shape, *([1] * (x0.dim() - 1))) * x0.unsqueeze(1)
        return mean, sigma

    def perturb(
        self,
        x0: Tensor,
        t,
        generator: torch.Generator | None = None,
        coefficients: Coefficients | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Sample z_t ~ N(mean, Sigma(t) kron I) given x0 (B, *D).

        Returns (z_t, eps), both (B, k, *D) in x0's dtype, with z_t = c_t x0 + (L_t kron I) eps.
        ``coefficients``: `coefficients(t)` already computed for these t (B,), reused as is.
        """
        self._check_data(x0)
        B = x0.shape[0]
        if coefficients is None:
            coefficients = self.coefficients(self._batch_t(t, B, x0.device))
        elif coefficients.phi.shape != (B, self.order, self.order):
            raise ValueError(f"coefficients must be for {B} times (one per example), got {tuple(coefficients.phi.shape[:-2])}")
        L = coefficients.chol.to(x0.device, x0.dtype)
        eps = torch.randn((B, self.order, *x0.shape[1:]), generator=generator, dtype=x0.dtype, device=x0.device)
        col = coefficients.c.to(x0.device, x0.dtype)
        z = torch.baddbmm(
            col.unsqueeze(-1) * x0.reshape(B, 1, -1), L, eps.reshape(B, self.order, -1)
        ).reshape(eps.shape)
        return z, eps

    def prior_sample(
        self,
        shape: Sequence[int],
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> Tensor:
        """z_T ~ N(0, prior_cov kron I): shape (n, *D) -> (n, k, *D)."""
        check_generator(generator)
        device = parse_device(device) if device is not None else None
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2 or any(s <= 0 for s in shape):
            raise ValueError(f"shape must be (n, *data_shape) with positive sizes, got {shape}")
        eps = torch.randn((shape[0], self.order, *shape[1:]), generator=generator, dtype=dtype, device=device)
        L = linalg.safe_cholesky(self.prior_cov)
        return linalg.apply_blocks(L, eps)

    def prior_logp(self, z: Tensor) -> Tensor:
        """log N(z; 0, prior_cov kron I) summed over all k * d entries: (B, k, *D) -> (B,)."""
        self.check_state(z)
        S = self.prior_cov.to(z.device)
        zf = z.to(torch.float64).reshape(z.shape[0], self.order, -1)
        d = zf.shape[-1]
        Sinv = torch.linalg.inv(S)
        quad = torch.einsum("bid,ij,bjd->b", zf, Sinv, zf)
        logdet = torch.logdet(S)
        return (-0.5 * quad - 0.5 * d * (self.order * math.log(2 * math.pi) + logdet)).to(z.dtype)

    # ------------------------------------------------------------------ drifts
    def _bcast(self, v: Tensor, z: Tensor) -> Tensor:
        return v.to(z.dtype).reshape(-1, *([1] * (z.dim() - 1)))

    def drift(self, z: Tensor, t) -> Tensor:
        """Forward drift beta(t) (A kron I) z: (B, k, *D) -> (B, k, *D)."""
        self.check_state(z)
        t = self._batch_t(t, z.shape[0], z.device)
        A, _, _ = self._mats(z.device)
        return self._bcast(self.beta(t), z) * linalg.apply_blocks(A, z)

    def noise_scale(self, t) -> Tensor:
        """sqrt(beta(t)), shaped like t: the noise is sqrt(beta(t)) (G kron I) dW."""
        return torch.sqrt(self.beta(t))

    def reverse_score_columns(self, eta: float = 1.0) -> Tensor:
        """(1 + eta^2)/2 D[:, N], (k, m) float64: how the noised-block score enters the drift of the
        reverse dynamics dz = beta [(A kron I) z - (W kron I) s_N] dt (forward time; gDDIM's
        lambda-family, Zhang, Tao & Chen 2023, Eq. 6): the factor is 1 for the reverse SDE (eta = 1,
        Song et al. 2021, Eq. 6) and 1/2 for the probability-flow ODE (eta = 0, their Eq. 13)."""
        eta = float(eta)
        return 0.5 * (1.0 + eta * eta) * self._D[:, list(self._noised)]

    def reverse_drift(self, z: Tensor, t, score: Tensor, probability_flow: bool = False) -> Tensor:
        """Drift of the reverse-time SDE (or the probability-flow ODE) in forward time t:

            beta (A kron I) z - beta (W kron I) score,   W = `reverse_score_columns` (c D[:, N],
            c = 1 for the SDE, 1/2 for the ODE),

        where ``score`` is the noised-block score (`score_shape`). Integrate it from T down to 0.
        """
        self.check_state(z)
        self.check_score(score, z, "score")
        t = self._batch_t(t, z.shape[0], z.device)
        B, k = z.shape[0], self.order
        b = self.beta(t).to(z.dtype).reshape(B, 1, 1)
        W = self.reverse_score_columns(0.0 if probability_flow else 1.0).to(z.device, z.dtype)  # (k, m)
        s = score.reshape(B, len(self._noised), -1)
        out = self.drift(z, t).reshape(B, k, -1) - b * torch.einsum("im,bmd->bid", W, s)
        return out.reshape(z.shape)

    # ------------------------------------------------------------------ introspection
    def eigenvalues(self) -> Tensor:
        """Eigenvalues of A (complex128, (k,)); multiply by beta for rates in t."""
        return torch.linalg.eigvals(self._A)

    def mixing_rate(self) -> float:
        """-max Re(eig A): the exponential rate (per unit tau) at which the mean forgets the data.

        Eigenvalues of a defective (critically damped) A are perturbed by O(eps^(1/k)) in floating
        point; eigenvalues that close together are replaced by their mean, which is well conditioned.
        """
        ev = self.eigenvalues().numpy()
        k = len(ev)
        tol = 10.0 * (2.2e-16) ** (1.0 / k) * max(1.0, self._norm_a)
        used = [False] * k
        best = -float("inf")
        for i in range(k):
            if used[i]:
                continue
            group = [j for j in range(k) if not used[j] and abs(ev[j] - ev[i]) < tol]
            for j in group:
                used[j] = True
            best = max(best, float(sum(ev[j].real for j in group) / len(group)))
        return -best

    def info(self, times: Sequence[float] | None = None) -> dict:
        """Plain-data summary: matrices, eigenvalues, stationary covariance, covariances at times."""
        if times is None:
            times = [0.0, 0.01 * self.T, 0.1 * self.T, 0.5 * self.T, self.T]
        ev = self.eigenvalues()
        tt = torch.tensor(list(times), dtype=torch.float64)
        return {
            "name": self.name,
            "order": self.order,
            "T": self.T,
            "params": self.params,
            "schedule": self.schedule.spec() if hasattr(self.schedule, "spec") else repr(self.schedule),
            "drift": self._A.tolist(),
            "diffusion": self._G.tolist(),
            "noised_blocks": list(self._noised),
            "aux_cov": self.aux_cov.tolist(),
            "eigenvalues": [[float(e.real), float(e.imag)] for e in ev],
            "mixing_rate_tau": self.mixing_rate(),
            "tau_T": self._tau_T,
            "stationary_cov": None if self._S_inf is None else self._S_inf.tolist(),
            "covariance": {f"{float(t):g}": s.tolist() for t, s in zip(tt, self.covariance(tt))},
        }

    # ------------------------------------------------------------------ (de)serialisation
    def spec(self) -> dict:
        """Plain data (lists, floats, strings) that rebuilds this SDE with `LinearSDE.from_spec`."""
        return {
            "name": self.name,
            "params": self.params,
            "drift": self._A.tolist(),
            "diffusion": self._G.tolist(),
            "aux_cov": self.aux_cov.tolist(),
            "schedule": self.schedule.spec(),
            "T": self.T,
        }

    @classmethod
    def from_spec(cls, spec: dict) -> "LinearSDE":
        try:
            return cls(
                spec["drift"],
                spec["diffusion"],
                schedule=schedule_from_spec(spec["schedule"]),
                aux_cov=spec["aux_cov"] if len(spec["drift"]) > 1 else None,
                T=spec["T"],
                name=spec.get("name", "linear"),
                params=spec.get("params", {}),
            )
        except KeyError as err:
            raise ValueError(f"SDE spec is missing the field {err}") from None

    def to_torchsde(self, data_shape: Sequence[int], score_fn: ScoreFn | None = None, t_eps: float = 0.0):
        """A `torchsde` SDE object on flattened states (B, k*prod(D)); see `kinetic.torchsde_adapter`."""
        from .torchsde_adapter import make_torchsde_sde

        return make_torchsde_sde(self, data_shape, score_fn=score_fn, t_eps=t_eps)

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in self.params.items())
        return f"LinearSDE<{self.name}>(order={self.order}, T={self.T:g}{', ' + p if p else ''})"
