"""Exponential integrators (gDDIM / DEIS / DPM-Solver++ family) for linear SDEs of any order.

papers.md 4.1, 4.2, 6.4. The model gives only the last-block score s_k, but that determines the
full score: with c_u = Phi(0, u) e_1 and auxiliaries independent of the data (Tweedie),

    grad log p_u(z) = -Sigma_u^-1 (z - c_u xhat),      xhat = E[x0 | z_u] = (s_k + (Sigma_u^-1 z)_k) / (Sigma_u^-1 c_u)_k.

Generalising gDDIM's R_t (whose R_0 R_0^T is the initial covariance of the state), we use a
reference covariance C_u = Sigma_u + sigma_d^2 c_u c_u^T (option ``data_var`` = sigma_d^2; 0 is a
point mass, gDDIM's choice; the default 0.25 is EDM's sigma_data^2) and the data prediction
mu = (s_k + (C^-1 z)_k) / (C^-1 c)_k. Only the last block of D grad log p enters the dynamics and
(C^-1 (z - c mu))_k = -s_k by construction, so the vector field at every evaluation is the exact
one for any data_var; data_var only chooses WHICH quantity is held constant (or polynomial) over a
step: mu, exactly constant for data N(m, sigma_d^2 I). With grad log p = -C^-1 (z - c mu) the
lambda-family of reverse dynamics (gDDIM Eq. 6; lambda = ``eta``)

    dz = [A z - (1 + lambda^2)/2 D grad log p] dtau + lambda sqrt(D) dW
       = M(u) z dtau - b(u) mu dtau + lambda sqrt(D) dW,   M = A + h D C^-1, b = h D C^-1 c, h = (1 + lambda^2)/2

is linear in z with the data prediction mu as the only input. Over a step tau -> tau' (tau' < tau)

    z' = F z + sum_j W_j mu_j + N(0, P),   F = Psi(tau', tau),  W_j = int_tau'^tau Psi(tau', u) b(u) l_j(t(u)) du,
    P = lambda^2 int_tau'^tau Psi(tau', u) D Psi(tau', u)^T du,

with mu(u) a polynomial in t through the last ``order`` data predictions (Adams-Bashforth, gDDIM
Eq. 19; lower orders to start). sum_j W_j = c_tau' - F c_tau exactly (d/du[Psi(tau',u) c_u] = -Psi b),
so for data N(m, sigma_d^2 I) with the exact score (mu = m, constant) every step is exact at any
step count: gDDIM's property (Prop. 4/6). Psi is integrated once per grid, all steps at once (grouped
by substep count), with RK4 in v = log tau + alpha tau (alpha = the spectral radius of A; substeps
set from the rate of the linear part, which is scale-free in v) and the W_j, P integrals by
Simpson's rule on the same nodes.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import linalg
from . import Solver, grid_quantities, noise_like, register


def _rows_cinv_ek(C: Tensor) -> tuple[Tensor, Tensor]:
    """C^-1 e_k (..., k) for PSD C (..., k, k), via the scale-invariant Cholesky factor; and that factor."""
    L = linalg.safe_cholesky(C)
    k = C.shape[-1]
    rhs = torch.zeros(*C.shape[:-1], 1, dtype=C.dtype, device=C.device)
    rhs[..., -1, 0] = 1.0 / L[..., -1, -1]
    r = torch.linalg.solve_triangular(L.transpose(-1, -2), rhs, upper=True).squeeze(-1)
    return r, L


def _rate(K: Tensor) -> Tensor:
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


def _integrate(sde, coeffs, t, log_u, dv, alpha, gx, hstep, xv, idx, m, hh, g2, eta, k):
    """For the steps idx (n,), each split into m RK4 substeps uniform in v = log tau + alpha tau
    (logarithmic near 0, linear where the drift's own rate dominates): integrate H(u) = Psi(tau', u)
    (dH/dv = -H M du/dv, H(tau') = I) and, by Simpson's rule on the same nodes, I_p = int H b x^p du
    (p = 1, 2) and P = eta^2 int H D H^T du. Returns F = H(tau), I1, I2, P."""
    n = idx.shape[0]
    J = 4 * m + 1  # RK4 nodes at even indices, midpoints at odd ones
    frac = torch.arange(J, dtype=torch.float64)[None, :] / (4 * m)
    v_lo = log_u[idx + 1] + alpha * torch.exp(log_u[idx + 1])
    v_nodes = v_lo[:, None] + frac * dv[idx, None]  # (n, J)
    u_nodes = _u_of_v(v_nodes, alpha, log_u[idx + 1, None], log_u[idx, None])
    u_nodes[:, 0], u_nodes[:, -1] = torch.exp(log_u[idx + 1]), torch.exp(log_u[idx])
    t_nodes = sde.schedule.integral_inverse(u_nodes, sde.T).clamp(0.0, sde.T)
    t_nodes[:, 0], t_nodes[:, -1] = t[idx + 1], t[idx]
    _, c, _, r, K = coeffs(t_nodes.reshape(-1))
    dudv = u_nodes / (1.0 + alpha * u_nodes)  # (n, J)
    K = K.reshape(n, J, k, k) / (1.0 + alpha * u_nodes)[..., None, None]  # u M du/ds -> M du/dv
    dh = (dv[idx] / (2 * m))[:, None, None]  # RK4 step in v (between even nodes)
    H = torch.eye(k, dtype=torch.float64).expand(n, k, k).clone()
    Hs = [H]
    for a in range(0, J - 1, 2):
        Ka, Kb, Kc = K[:, a], K[:, a + 1], K[:, a + 2]
        k1 = -H @ Ka
        k2 = -(H + 0.5 * dh * k1) @ Kb
        k3 = -(H + 0.5 * dh * k2) @ Kb
        k4 = -(H + dh * k3) @ Kc
        H = H + dh / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        Hs.append(H)
    Hk = torch.stack(Hs, dim=1)[..., -1]  # (n, 2m + 1, k): Psi(tau', u) e_k at the even nodes
    E = 2 * m + 1
    w = torch.full((E,), 2.0, dtype=torch.float64)
    w[1::2] = 4.0
    w[0] = w[-1] = 1.0
    w = w[None, :] * dh[:, :, 0] / 3.0  # (n, E) Simpson weights in s
    ue = dudv[:, ::2]
    dens = hh * g2 * (r.reshape(n, J, k)[:, ::2] * c.reshape(n, J, k)[:, ::2]).sum(-1) * ue  # b_k du/dv
    xs = (xv(t_nodes[:, ::2]) - gx[idx, None]) / hstep[idx, None]  # (x(u) - x_i) / h_i in [-1, 0]
    I1 = (w[..., None] * Hk * (dens * xs)[..., None]).sum(1)
    I2 = (w[..., None] * Hk * (dens * xs**2)[..., None]).sum(1)
    P = torch.zeros(n, k, k, dtype=torch.float64)
    if eta > 0:
        P = eta**2 * g2 * ((w * ue)[..., None, None] * Hk[..., :, None] * Hk[..., None, :]).sum(1)
    return H, I1, I2, P


def _poly_variable(sde, poly: str):
    if poly == "t":
        return lambda tt: tt
    if poly == "logtau":
        return lambda tt: torch.log(sde.tau(tt))
    if poly == "lambda":
        def lam(tt):
            c = sde.transition(torch.zeros_like(tt), tt)[..., 0, 0]
            return 0.5 * torch.log(sde.covariance(tt)[..., 0, 0]) - torch.log(c.abs())
        return lam
    raise ValueError(f"ei: poly must be 't', 'logtau' or 'lambda', got {poly!r}")


def plan(sde, ts: Tensor, *, order: int = 2, eta: float = 0.0, data_var: float = 0.0, ds: float = 0.02, poly: str = "t") -> dict:
    """Per-step float64 CPU coefficients for the exponential integrator on the grid ``ts``.

    Returns F (N, k, k), W (N, order, k) (zero-padded; W[i, j] multiplies the data prediction of
    step i - j), P_chol (N, k, k) or None, and the data-prediction map mu = a_i s_k + v_i . z
    (a (N,), v (N, k)).
    """
    q = grid_quantities(sde, ts)
    t, tau = q["t"], q["tau"]
    N = t.shape[0] - 1
    k = sde.order
    A = sde.drift_matrix
    g2 = sde.g2
    hh = 0.5 * (1.0 + eta**2)
    ek = torch.zeros(k, dtype=torch.float64)
    ek[-1] = 1.0

    def coeffs(tt: Tensor):
        """c_u (.., k), C_u (.., k, k), r = C^-1 e_k, K = u (A + h g2 e_k r^T) (.., k, k), u = tau."""
        u = sde.tau(tt)
        c = sde.transition(torch.zeros_like(tt), tt)[..., :, 0]
        C = sde.covariance(tt)
        if data_var:
            C = C + data_var * c[..., :, None] * c[..., None, :]
        r, _ = _rows_cinv_ek(C)
        K = A + hh * g2 * ek[:, None] * r[..., None, :]
        return u, c, C, r, u[..., None, None] * K

    # step sizes: substeps per step from the scale-free rate at both ends
    u_n, c_n, C_n, r_n, K_n = coeffs(t)
    w_n = (r_n * c_n).sum(-1)  # (C^-1 c)_k at the nodes
    if bool((w_n[:-1].abs() < 1e-300).any()) or not bool(torch.isfinite(w_n).all()):
        raise ValueError("ei: (C^-1 c)_k vanishes on the grid: the last-block score carries no information on the data there")
    alpha = float(torch.linalg.eigvals(A).abs().max())  # the drift's own rate per unit tau
    rate = _rate(K_n) / (1.0 + alpha * u_n)  # rate per unit v = log tau + alpha tau
    log_u = torch.log(tau)
    v = log_u + alpha * tau
    dv = v[:-1] - v[1:]  # (N,) > 0
    rho = torch.maximum(rate[:-1], rate[1:]).clamp_min(1.0)
    m = torch.ceil(dv * rho / ds).clamp(2, 16384).to(torch.int64)  # RK4 steps per step
    # the polynomial variable x(t): t (gDDIM, DEIS tAB), log tau, or lambda (log noise-to-signal, DPM-Solver++)
    xv = _poly_variable(sde, poly)
    gx = xv(t)  # (N+1,)
    hstep = gx[:-1] - gx[1:]  # (N,), > 0

    # steps are grouped in buckets of similar substep counts (m rounded up to a power of two) so
    # that work stays ~ sum_i m_i; inside a bucket every step uses the same number of nodes
    F = torch.empty(N, k, k, dtype=torch.float64)
    I1 = torch.empty(N, k, dtype=torch.float64)
    I2 = torch.empty(N, k, dtype=torch.float64)
    P = torch.zeros(N, k, k, dtype=torch.float64)
    bucket = torch.ceil(torch.log2(m.to(torch.float64))).to(torch.int64)
    for b in bucket.unique().tolist():
        idx = (bucket == b).nonzero().squeeze(-1)
        Fi, I1i, I2i, Pi = _integrate(sde, coeffs, t, log_u, dv, alpha, gx, hstep, xv, idx, 2**b, hh, g2, eta, k)
        F[idx], I1[idx], I2[idx], P[idx] = Fi, I1i, I2i, Pi
    c_lo, c_hi = c_n[1:], c_n[:-1]
    I0 = c_lo - (F @ c_hi.unsqueeze(-1)).squeeze(-1)  # exact: int Psi b du = c_tau' - F c_tau
    Ip = torch.stack([I0, I1, I2], dim=1)  # (N, 3, k)

    # Lagrange weights through t_i, t_{i-1}, ..., t_{i-q+1} (q = min(order, i + 1)), in x = (t - t_i)/h_i
    W = torch.zeros(N, order, k, dtype=torch.float64)
    for i in range(N):
        qn = min(order, i + 1)
        x_nodes = (gx[i - torch.arange(qn)] - gx[i]) / hstep[i]  # (qn,)
        V = x_nodes[:, None] ** torch.arange(qn, dtype=torch.float64)[None, :]  # V[l, p]
        a = torch.linalg.inv(V).T  # a[j, p]: l_j(x) = sum_p a[j, p] x^p
        W[i, :qn] = a @ Ip[i, :qn]

    P_chol = linalg.safe_cholesky(0.5 * (P + P.transpose(-1, -2))) if eta > 0 else None
    a_map = 1.0 / w_n[:-1]
    v_map = r_n[:-1] / w_n[:-1, None]
    return {"F": F, "W": W, "P_chol": P_chol, "a": a_map, "v": v_map, "substeps": m}


@register
class ExponentialIntegrator(Solver):
    """gDDIM-style exponential integrator. Options: ``order`` (1, 2, 3: multistep in ``poly``, default 3),
    ``eta`` (lambda: 0 probability flow, 1 reverse SDE; ``stochastic=True`` means eta = 1), ``data_var``
    (sigma_d^2 of the reference Gaussian for which every step is exact; default 0.25 = EDM's
    sigma_data^2 for data in [-1, 1]; 0 = gDDIM's R_t, exact for a point mass), ``poly`` (the
    polynomial variable: "t" (gDDIM/DEIS), "logtau", "lambda"), ``ds`` (RK4 step in log tau times the
    rate, for the coefficients)."""

    name = "ei"
    order = 3
    stochastic = False
    defaults = {"order": 3, "eta": 0.0, "stochastic": False, "data_var": 0.25, "ds": 0.02, "poly": "t"}

    def __init__(self, **options):
        super().__init__(**options)
        o = self.options
        if isinstance(o["order"], bool) or o["order"] not in (1, 2, 3):
            raise ValueError(f"ei: order must be 1, 2 or 3, got {o['order']!r}")
        eta = float(o["eta"])
        if o["stochastic"] and eta == 0.0:
            eta = 1.0
        if not math.isfinite(eta) or eta < 0:
            raise ValueError(f"ei: eta must be a finite number >= 0, got {o['eta']!r}")
        dv = float(o["data_var"])
        if not math.isfinite(dv) or dv < 0:
            raise ValueError(f"ei: data_var must be a finite number >= 0, got {o['data_var']!r}")
        ds = float(o["ds"])
        if not (0 < ds <= 1):
            raise ValueError(f"ei: ds must lie in (0, 1], got {o['ds']!r}")
        self.eta, self.data_var, self.ds = eta, dv, ds
        self.order = int(o["order"])
        self.stochastic = eta > 0

    def plan(self, sde, ts):
        return plan(sde, ts, order=self.order, eta=self.eta, data_var=self.data_var, ds=self.ds, poly=self.options["poly"])

    def run(self, sde, score, z, ts, *, generator=None, callback=None):
        p = self.plan(sde, ts)
        dev, dt = z.device, z.dtype
        F, W, a, v = (p[key].to(dev, dt) for key in ("F", "W", "a", "v"))
        Pc = p["P_chol"].to(dev, dt) if p["P_chol"] is not None else None
        tt = ts.to(dev, dt)
        n, k = z.shape[0], sde.order
        zf = z.reshape(n, k, -1)
        hist: list[Tensor] = []
        N = len(ts) - 1
        for i in range(N):
            s = score(zf.reshape(z.shape), tt[i].expand(n)).reshape(n, -1)
            mu = a[i] * s + torch.einsum("j,bjd->bd", v[i], zf)
            hist.insert(0, mu)
            del hist[self.order :]
            new = torch.einsum("ij,bjd->bid", F[i], zf)
            for j, m_j in enumerate(hist):
                new = new + W[i, j][None, :, None] * m_j[:, None, :]
            if Pc is not None:
                new = new + torch.einsum("ij,bjd->bid", Pc[i], noise_like(zf, generator))
            zf = new
            if callback is not None:
                callback({"step": i, "t": float(ts[i + 1]), "z": zf.reshape(z.shape)})
        return zf.reshape(z.shape), N
