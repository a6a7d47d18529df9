"""Exponential integrators (the gDDIM / DEIS / DPM-Solver++ family) for linear SDEs of any order.

Zhang, Tao & Chen 2023, "gDDIM: Generalized Denoising Diffusion Implicit Models" (Eq. 6, the
lambda-family of reverse dynamics; Eq. 17, R_t; Eq. 19, the multistep predictor; Props. 4 and 6,
exactness for Gaussian data); Zhang & Chen 2023, "Fast Sampling of Diffusion Models with Exponential
Integrator" (DEIS, tAB); Lu et al. 2022, "DPM-Solver++" (data prediction, polynomial in lambda).

The model gives the score s_N of the noised blocks N. Every score of the noised marginal has the
form grad log p_u(z) = -Sigma_u^-1 (z - c_u xhat), xhat = E[x0 | z_u] (Tweedie; c_u = Phi(0, u) e_1,
auxiliaries independent of the data). Generalising gDDIM's R_t (whose R_0 R_0^T is the initial
covariance of the state) we use a reference covariance C_u = Sigma_u + sigma_d^2 c_u c_u^T
(sigma_d = option ``data_std``, the std of the Gaussian reference, the same meaning as
`kinetic.TrainConfig`'s data_std; 0 is a point mass, gDDIM's choice; the default 0.5 is EDM's
sigma_data) and the data prediction mu, the least-squares solution in the metric D_NN of
s_N = -(C^-1 (z - c mu))_N:

    mu = w^T D_NN (s_N + (C^-1 z)_N) / (w^T D_NN w),     w = (C^-1 c)_N,

exact whenever the score has the form above (always for one noised block, where mu = (s_N +
(C^-1 z)_N) / w; for data_std = 0 it is `kinetic.coefficients.Coefficients.data_estimate`). Only
D[:, N] s_N enters the dynamics, so the vector field at every evaluation is the exact one for any
data_std; data_std only chooses WHICH quantity is held constant (or polynomial) over a step: mu,
exactly constant for data N(m, sigma_d^2 I). With s_N = w mu - (C^-1 z)_N the lambda-family
(lambda = ``eta``) is linear in z with mu as the only input:

    dz = [A z - (1 + eta^2)/2 D[:, N] s_N] dtau + eta (G kron I) dW
       = M(u) z dtau - b(u) mu dtau + eta (G kron I) dW,
    M = A + h D[:, N] (C^-1)[N, :],   b = h D[:, N] w,   h = (1 + eta^2)/2.

Over a step tau -> tau' (tau' < tau)

    z' = F z + sum_j W_j mu_j + N(0, P),   F = Psi(tau', tau),  W_j = int_tau'^tau Psi(tau', u) b(u) l_j(x(u)) du,
    P = eta^2 int_tau'^tau Psi(tau', u) D Psi(tau', u)^T du,

with mu(u) a polynomial in x(t) through the last ``multistep`` data predictions (Adams-Bashforth,
gDDIM Eq. 19; lower orders to start). sum_j W_j = c_tau' - F c_tau exactly (d/du[Psi(tau',u) c_u] =
-Psi b), so for data N(m, sigma_d^2 I) with the exact score (mu = m, constant) every step is exact at
any step count: gDDIM's Props. 4 and 6. Psi is integrated once per grid, all steps at once (grouped
by substep count), with RK4 in v = log tau + alpha tau (alpha = the spectral radius of A; substeps
set from the rate of the linear part, which is scale-free in v) and the W_j, P integrals by
Simpson's rule on the same nodes.

Corrector (``corrector``; UniPC's, Zhao et al. 2023, "UniPC", generalised to k blocks): the
evaluation at the start of step i + 1 gives mu_{i+1}; step i is then redone from its start with
the polynomial through x_{i+1}, x_i, ..., x_{i-multistep+1} (Adams-Moulton weights from the same
moments), and step i + 1 starts from the corrected state. No extra NFE; one order more; the last
step is not corrected. Both weight sets sum to c_tau' - F c_tau, so exactness is kept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import linalg
from .base import integer, number, one_of, optional, step_sizes
from .gls import gls_plan
from .multistep import (
    DATA_STD_CHECK, MAX_MOMENT, MULTISTEP_CHECK, MultistepPlan, MultistepSolver, multistep_plan, reference_terms,
)
from .registry import register

__all__ = ["ExponentialIntegrator", "kblock_plan", "default_gls_steps", "POLY_VARIABLES"]

POLY_VARIABLES = ("t", "logtau", "lambda", "logsigma")
_CHUNK_NODES = 1 << 16  # time nodes per batch of k x k work in the plan (bounds its memory)


def _poly_value(poly: str, t: Tensor, ref: dict) -> Tensor:
    """The polynomial variable x(t) from `reference_terms`' output at t: t (gDDIM, DEIS tAB), log tau,
    lambda (the data block's half log noise-to-signal ratio; DPM-Solver++'s variable for VP) or
    log sigma_tilde (the noise level of the GLS estimate of x0 from the whole state: lambda for k = 1)."""
    if poly == "t":
        return t
    if poly == "logtau":
        return torch.log(ref["tau"])
    return ref["lam"] if poly == "lambda" else ref["logsig"]


def _spectral_radius(K: Tensor) -> Tensor:
    """Spectral radius of K (..., k, k): the scale-free rate of dY/ds = -Y K (K is far from normal
    in the raw coordinates, but only up to a diagonal similarity, to which RK4 is invariant)."""
    return torch.linalg.eigvals(K).abs().amax(-1)


def _u_of_v(v: Tensor, alpha: float, lo: Tensor, hi: Tensor) -> Tensor:
    """Invert v = log u + alpha u by bisection in log u on [lo, hi] (log u bounds, broadcastable)."""
    lo, hi = lo.expand_as(v).clone(), hi.expand_as(v).clone()
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = mid + alpha * torch.exp(mid) < v
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return torch.exp(0.5 * (lo + hi))


def _integrate(sde, ref_at, poly, t, log_u, dv, alpha, x_grid, x_step, idx, m, eta):
    """For the steps idx (n,), each split into m RK4 substeps uniform in v = log tau + alpha tau
    (logarithmic near 0, linear where the drift's own rate dominates): integrate H(u) = Psi(tau', u)
    (dH/dv = -H M du/dv, H(tau') = I) and, by Simpson's rule on the same nodes, I_p = int H b x^p du
    (p = 1 .. MAX_MOMENT; x the polynomial variable scaled to [-1, 0] over the step) and
    P = eta^2 int H D H^T du. Returns F = H(tau), I (n, MAX_MOMENT, k), P."""
    n, k = idx.shape[0], sde.order
    nodes = 4 * m + 1  # RK4 nodes at even indices, midpoints at odd ones
    frac = torch.arange(nodes, dtype=torch.float64)[None, :] / (4 * m)
    v_lo = log_u[idx + 1] + alpha * torch.exp(log_u[idx + 1])
    v_nodes = v_lo[:, None] + frac * dv[idx, None]  # (n, nodes)
    u_nodes = _u_of_v(v_nodes, alpha, log_u[idx + 1, None], log_u[idx, None])
    u_nodes[:, 0], u_nodes[:, -1] = torch.exp(log_u[idx + 1]), torch.exp(log_u[idx])
    t_nodes = sde.schedule.integral_inverse(u_nodes, sde.T).clamp(0.0, sde.T)
    t_nodes[:, 0], t_nodes[:, -1] = t[idx + 1], t[idx]
    ref = ref_at(t_nodes.reshape(-1))
    dudv = u_nodes / (1.0 + alpha * u_nodes)  # (n, nodes)
    Mv = ref["M"].reshape(n, nodes, k, k) * dudv[..., None, None]  # M du/dv
    dh = (dv[idx] / (2 * m))[:, None, None]  # RK4 step in v (between even nodes)
    H = torch.eye(k, dtype=torch.float64).expand(n, k, k).clone()
    Hs = [H]
    for a in range(0, nodes - 1, 2):
        Ka, Kb, Kc = Mv[:, a], Mv[:, a + 1], Mv[:, a + 2]
        k1 = -H @ Ka
        k2 = -(H + 0.5 * dh * k1) @ Kb
        k3 = -(H + 0.5 * dh * k2) @ Kb
        k4 = -(H + dh * k3) @ Kc
        H = H + dh / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        Hs.append(H)
    He = torch.stack(Hs, dim=1)  # (n, 2m + 1, k, k): Psi(tau', u) at the even nodes
    even = 2 * m + 1
    simpson = torch.full((even,), 2.0, dtype=torch.float64)
    simpson[1::2] = 4.0
    simpson[0] = simpson[-1] = 1.0
    simpson = simpson[None, :] * dh[:, :, 0] / 3.0  # (n, even) Simpson weights in v
    due = dudv[:, ::2]
    b = ref["b"].reshape(n, nodes, k)[:, ::2]  # (n, even, k)
    Hb = (He @ b.unsqueeze(-1)).squeeze(-1) * due[..., None]  # Psi(tau', u) b(u) du/dv
    sub = {key: ref[key].reshape(n, nodes)[:, ::2] for key in ("tau", "lam", "logsig")}
    x_even = _poly_value(poly, t_nodes[:, ::2], sub)
    xs = (x_even - x_grid[idx, None]) / x_step[idx, None]  # in [-1, 0] over the step
    I = torch.stack([(simpson[..., None] * Hb * (xs**p)[..., None]).sum(1) for p in range(1, MAX_MOMENT + 1)], 1)
    P = torch.zeros(n, k, k, dtype=torch.float64)
    if eta > 0:
        HG = He @ sde.diffusion_matrix  # Psi D Psi^T = (Psi G)(Psi G)^T
        P = eta**2 * ((simpson * due)[..., None, None] * (HG @ HG.transpose(-1, -2))).sum(1)
    return H, I, P


def kblock_plan(sde, ts: Tensor, *, multistep: int = 3, eta: float = 0.0, data_std: float = 0.5, ds: float = 0.02,
                poly: str = "t", corrector: bool = False) -> MultistepPlan:
    """The float64 CPU `MultistepPlan` of the exponential integrator on the k-block flow on the grid
    ``ts`` (N steps), with ``noise_chol`` when eta > 0 and ``substeps`` (RK4 substeps per step)."""
    if poly not in POLY_VARIABLES:
        raise ValueError(f"ei: poly must be one of {', '.join(map(repr, POLY_VARIABLES))}, got {poly!r}")
    if multistep + int(corrector) > MAX_MOMENT + 1:
        raise ValueError(f"ei: multistep {multistep} with the corrector needs more than {MAX_MOMENT + 1} nodes")
    q = step_sizes(sde, ts)
    t, tau = q.t, q.tau
    N = t.shape[0] - 1
    k = sde.order
    score_weight = 0.5 * (1.0 + eta**2)

    def ref_at(tt: Tensor) -> dict:
        parts = [reference_terms(sde, tt[j : j + _CHUNK_NODES], data_std, score_weight) for j in range(0, tt.numel(), _CHUNK_NODES)]
        return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}

    grid = ref_at(t)
    den = grid["den"]
    if bool((den[:-1].abs() < 1e-300).any()) or not bool(torch.isfinite(den).all()):
        raise ValueError(
            "ei: the noised-block score carries no information on the data on this grid ((C^-1 c)_N vanishes)"
        )
    alpha = float(torch.linalg.eigvals(sde.drift_matrix).abs().max())  # the drift's own rate per unit tau
    rate = _spectral_radius(grid["tau"][:, None, None] * grid["M"]) / (1.0 + alpha * tau)  # per unit v
    log_u = torch.log(tau)
    v = log_u + alpha * tau
    dv = v[:-1] - v[1:]  # (N,) > 0
    rho = torch.maximum(rate[:-1], rate[1:]).clamp_min(1.0)
    substeps = torch.ceil(dv * rho / ds).clamp(2, 16384).to(torch.int64)  # RK4 steps per step
    x_grid = _poly_value(poly, t, grid)  # (N+1,)
    x_step = x_grid[:-1] - x_grid[1:]  # (N,)
    if not bool((x_step > 0).all()):
        raise ValueError(f"ei: the polynomial variable {poly!r} is not strictly monotone on this grid")

    # steps are grouped in buckets of similar substep counts (rounded up to a power of two) so that
    # work stays ~ sum_i substeps_i; inside a bucket every step uses the same number of nodes, and
    # a bucket is processed in chunks of at most _CHUNK_NODES time nodes
    F = torch.empty(N, k, k, dtype=torch.float64)
    I = torch.empty(N, MAX_MOMENT, k, dtype=torch.float64)
    P = torch.zeros(N, k, k, dtype=torch.float64)
    bucket = torch.ceil(torch.log2(substeps.to(torch.float64))).to(torch.int64)
    for b in bucket.unique().tolist():
        idx_all = (bucket == b).nonzero().squeeze(-1)
        per = max(1, _CHUNK_NODES // (4 * 2**b + 1))
        for j in range(0, idx_all.numel(), per):
            idx = idx_all[j : j + per]
            F[idx], I[idx], P[idx] = _integrate(sde, ref_at, poly, t, log_u, dv, alpha, x_grid, x_step, idx, 2**b, eta)
    c = grid["c"]
    I0 = c[1:] - (F @ c[:-1].unsqueeze(-1)).squeeze(-1)  # exact: int Psi b du = c_tau' - F c_tau
    moments = torch.cat([I0[:, None], I], dim=1)  # (N, MAX_MOMENT + 1, k)

    out = multistep_plan(F, moments, x_grid, grid, t, multistep, corrector)
    out.substeps = substeps
    if eta > 0:
        out.noise_chol = linalg.safe_cholesky(0.5 * (P + P.transpose(-1, -2)))
    return out


def default_gls_steps(sde_order: int) -> int:
    """max(3, 4k - 3): the most steps for which ``ei`` (eta = 0) runs the GLS plan (`kinetic.solvers.gls`)
    on an SDE of order k: 3 for VP, 5 for CLD and PSLD, 9 for HOLD, 13 for langevin(4). The measurements
    behind the rule are in docs/study.md, "Few-step sampling of trained networks"."""
    return max(3, 4 * int(sde_order) - 3)


@register
class ExponentialIntegrator(MultistepSolver):
    """gDDIM-style exponential integrator (see the module). Options:

    ``multistep`` (1 to 4: past data predictions in the polynomial in ``poly``; None, the default: 3, and 2
    for a GLS run); ``eta`` (lambda: 0 probability flow, 1 reverse SDE); ``data_std`` (sigma_d, the std of
    the Gaussian reference for which every step is exact; default 0.5 = EDM's sigma_data for data in
    [-1, 1]; 0 = gDDIM's R_t, exact for a point mass); ``poly`` (the polynomial variable: "t"
    (gDDIM/DEIS), "logtau", "lambda", "logsigma"); ``corrector`` (True: after each evaluation the step
    just taken is redone with the polynomial through its new end point, UniPC's corrector generalised to
    k blocks, no extra NFE, one order more; None, the default: on for eta = 0, off for eta > 0);
    ``ds`` (RK4 step in log tau times the rate, for the coefficients); ``gls_steps`` (deterministic runs
    of at most this many steps integrate the VE flow of the GLS estimate instead of the k-block flow:
    the plan of `kinetic.solvers.gls`; None, the default: `default_gls_steps`; 0: never). Default grid
    ``band`` (`kinetic.grids`); docs/benchmarks.md, "Few-step sampling with exact scores", compares the
    choices."""

    name = "ei"
    schema = {
        "multistep": (optional(MULTISTEP_CHECK, "3, and 2 for a GLS run"), None),
        "eta": (number(0.0), 0.0),
        "data_std": (DATA_STD_CHECK, 0.5),
        "ds": (number(0.0, positive=True, maximum=1.0), 0.02),
        "poly": (one_of(*POLY_VARIABLES), "t"),
        "corrector": (one_of(True, False, None, text="True, False or None (on when eta = 0)"), None),
        "gls_steps": (optional(integer(0), "default_gls_steps"), None),
    }
    default_grid = "band"

    @property
    def eta(self) -> float:  # type: ignore[override]
        return self.options["eta"]

    def multistep_for(self, gls: bool) -> int:
        return int(self.options["multistep"] or (2 if gls else 3))

    @property
    def convergence_order(self) -> int:
        """The convergence order on grids of more than ``gls_steps`` steps (the k-block flow)."""
        return super().convergence_order

    def uses_gls(self, steps: int, sde_order: int) -> bool:
        """Whether a run of ``steps`` steps on an SDE of order k = ``sde_order`` uses the GLS plan."""
        g = self.options["gls_steps"]
        return self.eta == 0 and steps <= (default_gls_steps(sde_order) if g is None else g)

    def build_plan(self, sde, ts):
        if self.uses_gls(ts.numel() - 1, sde.order):
            return gls_plan(sde, ts, multistep=self.multistep_for(True), data_std=self.data_std,
                            corrector=self.corrector)
        return kblock_plan(sde, ts, multistep=self.multistep_for(False), eta=self.eta, data_std=self.data_std,
                           ds=self.options["ds"], poly=self.options["poly"], corrector=self.corrector)
