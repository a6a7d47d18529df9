"""Preset SDEs: VP, VE (order 1), CLD and PSLD (order 2), HOLD (order 3) and the critically damped chain
of any order.

Each is a few lines that fill in a `LinearSDE`; see ``docs/math.md`` for the derivations.
"""

from __future__ import annotations

import math

import torch

from .schedules import ConstantSchedule, ExponentialVarianceSchedule, LinearSchedule
from .sde import MAX_ORDER, LinearSDE

__all__ = ["vp", "ve", "cld", "psld", "hold", "langevin", "langevin_couplings", "preset", "preset_for_order", "PRESETS"]


def _pos(name: str, v: float) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"{name} must be a finite positive number, got {v}")
    return v


def vp(beta_min: float = 0.1, beta_max: float = 20.0, T: float = 1.0) -> LinearSDE:
    """Variance preserving (Song et al. 2021): dx = -beta(t)/2 x dt + sqrt(beta(t)) dW, linear beta.

    Var(x_t | x0) = 1 - exp(-B(t)), mean exp(-B(t)/2) x0; stationary N(0, 1).
    """
    beta_min, beta_max, T = _pos("beta_min", beta_min), _pos("beta_max", beta_max), _pos("T", T)
    return LinearSDE(
        [[-0.5]], [[1.0]], schedule=LinearSchedule(beta_min, beta_max, T), T=T,
        name="vp", params={"beta_min": beta_min, "beta_max": beta_max},
    )


def ve(sigma_min: float = 0.01, sigma_max: float = 50.0, T: float = 1.0) -> LinearSDE:
    """Variance exploding (Song et al. 2021): dx = sqrt(d sigma^2/dt) dW, sigma(t) = s_min (s_max/s_min)^t.

    Follows the SDE exactly: Var(x_t | x0) = sigma(t)^2 - sigma(0)^2. score_sde instead uses
    sigma(t)^2 (it lets the SDE start from sigma(0) = 0 with a jump at 0+); the two differ by
    sigma_min^2 = 1e-4 at the defaults. The prior is N(0, sigma_max^2 - sigma_min^2) (no stationary law).
    """
    sigma_min, sigma_max, T = _pos("sigma_min", sigma_min), _pos("sigma_max", sigma_max), _pos("T", T)
    return LinearSDE(
        [[0.0]], [[1.0]], schedule=ExponentialVarianceSchedule(sigma_min, sigma_max, T), T=T,
        name="ve", params={"sigma_min": sigma_min, "sigma_max": sigma_max},
    )


def cld(beta: float = 4.0, m_inv: float = 4.0, gamma: float = 0.04, T: float = 1.0) -> LinearSDE:
    """Critically damped Langevin diffusion (Dockhorn et al. 2022), state (x, v).

    A = [[0, M^-1], [-1, -Gamma M^-1]], G G^T = diag(0, 2 Gamma), Gamma = 2 sqrt(M) (critical),
    v0 ~ N(0, gamma M); stationary N(0, diag(1, M)); beta(t) = beta constant.
    """
    beta, m_inv, gamma, T = _pos("beta", beta), _pos("m_inv", m_inv), _pos("gamma", gamma), _pos("T", T)
    M = 1.0 / m_inv
    Gamma = 2.0 * math.sqrt(M)
    A = [[0.0, m_inv], [-1.0, -Gamma * m_inv]]
    G = [[0.0, 0.0], [0.0, math.sqrt(2.0 * Gamma)]]
    return LinearSDE(
        A, G, schedule=ConstantSchedule(beta), aux_cov=[[gamma * M]], T=T,
        name="cld", params={"beta": beta, "m_inv": m_inv, "gamma": gamma},
    )


def _nonneg(name: str, v: float) -> float:
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number, got {v!r}") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


def psld(
    gamma: float = 0.01,
    nu: float = 4.01,
    kappa: float = 0.04,
    beta_min: float = 8.0,
    beta_max: float = 8.0,
    T: float = 1.0,
) -> LinearSDE:
    """Phase-space Langevin diffusion (Pandey & Mandt, "A Complete Recipe for Diffusion Generative
    Models", ICCV 2023), state (x, m), noise on BOTH blocks:

        dx = beta/2 (M^-1 m - Gamma x) dt + sqrt(beta Gamma) dW_x
        dm = beta/2 (-x - nu m) dt + sqrt(beta M nu) dW_m

    i.e. A = 1/2 [[-Gamma, M^-1], [-1, -nu]], G G^T = diag(Gamma, M nu), critically damped by
    M^-1 = (Gamma - nu)^2 / 4 (a double eigenvalue -(Gamma + nu) / 4); m0 ~ N(0, kappa M);
    stationary N(0, diag(1, M)); beta linear from beta_min to beta_max over [0, T].
    ``gamma = 0`` is CLD-like (noise on m only), ``nu = 0`` puts the noise on x only.
    Defaults: the CIFAR-10 configuration of the authors' code (gamma 0.01, nu 4.01, kappa 0.04,
    constant beta 8; then M^-1 = 4 as in CLD).
    """
    gamma, nu = _nonneg("gamma", gamma), _nonneg("nu", nu)
    if gamma == 0 and nu == 0:
        raise ValueError("gamma and nu cannot both be 0: no block would receive noise")
    if gamma == nu:
        raise ValueError(f"gamma and nu must differ: critical damping needs M^-1 = (gamma - nu)^2 / 4 > 0, got {gamma}")
    kappa, beta_min, beta_max, T = _pos("kappa", kappa), _pos("beta_min", beta_min), _pos("beta_max", beta_max), _pos("T", T)
    m_inv = (gamma - nu) ** 2 / 4.0
    M = 1.0 / m_inv
    A = [[-0.5 * gamma, 0.5 * m_inv], [-0.5, -0.5 * nu]]
    G = [[math.sqrt(gamma), 0.0], [0.0, math.sqrt(M * nu)]]
    return LinearSDE(
        A, G, schedule=LinearSchedule(beta_min, beta_max, T), aux_cov=[[kappa * M]], T=T,
        name="psld", params={"gamma": gamma, "nu": nu, "kappa": kappa, "beta_min": beta_min, "beta_max": beta_max},
    )


def hold(
    beta: float = 4.0,
    l_inv: float = 4.0,
    gamma: float | None = None,
    xi: float | None = None,
    aux_var: float = 0.04,
    T: float = 1.0,
) -> LinearSDE:
    """Third-order Langevin dynamics (HOLD, Shi & Liu 2024): one OU process and two Hamiltonians.

        dx = L^-1 v beta dt
        dv = (-x + gamma L^-1 a) beta dt                       (Hamiltonian x <-> v, v <-> a)
        da = (-gamma L^-1 v - xi L^-1 a) beta dt + sqrt(2 xi beta) dW   (OU on a)

    Stationary N(0, diag(1, L, L)); v0, a0 ~ N(0, aux_var L). With gamma and xi omitted they take
    the critically damped values (triple eigenvalue -r, r = sqrt(3 L^-1)): gamma = sqrt(8 L),
    xi = 3 sqrt(3 L); for L^-1 = 4, gamma = sqrt(2), xi = 1.5 sqrt(3), r = 2 sqrt(3).

    The HOLD paper's own matrices and defaults were not available to us: this form and these
    defaults are kinetic's choice (the natural third-order extension of CLD). Every value is a parameter.
    """
    beta, l_inv, aux_var, T = _pos("beta", beta), _pos("l_inv", l_inv), _pos("aux_var", aux_var), _pos("T", T)
    L = 1.0 / l_inv
    gamma = math.sqrt(8.0 * L) if gamma is None else _pos("gamma", gamma)
    xi = 3.0 * math.sqrt(3.0 * L) if xi is None else _pos("xi", xi)
    A = [[0.0, l_inv, 0.0], [-1.0, 0.0, gamma * l_inv], [0.0, -gamma * l_inv, -xi * l_inv]]
    G = [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, math.sqrt(2.0 * xi)]]
    return LinearSDE(
        A, G, schedule=ConstantSchedule(beta), aux_cov=aux_var * L * torch.eye(2, dtype=torch.float64), T=T,
        name="hold", params={"beta": beta, "l_inv": l_inv, "gamma": gamma, "xi": xi, "aux_var": aux_var},
    )


def langevin_couplings(order: int) -> tuple[list[float], float, float]:
    """(couplings c_1..c_{k-1}, friction xi, rate r) of the critically damped chain of order k.

    r = sqrt(2k - 3), c_i = r sqrt((k^2 - j^2) / (4 j^2 - 1)) with j = k - i, xi = k r  (k >= 2);
    k = 1: the OU process with r = xi = 1. All k eigenvalues of A equal -r.
    """
    k = order
    if k == 1:
        return [], 1.0, 1.0
    r = math.sqrt(2 * k - 3)
    c = [r * math.sqrt((k * k - j * j) / (4 * j * j - 1)) for j in range(k - 1, 0, -1)]
    return c, k * r, r


def langevin(order: int, beta: float = 8.0, aux_var: float = 0.04, T: float = 1.0) -> LinearSDE:
    """Critically damped Langevin chain of any order k >= 1 with stationary N(0, I).

    A = sum_i c_i (E_{i,i+1} - E_{i+1,i}) - xi E_{k,k}, G = sqrt(2 xi) E_{k,k}, all eigenvalues -r
    (see `langevin_couplings`); beta(t) = beta constant sets the speed, auxiliaries start from
    N(0, aux_var I). Order 1 is the OU process, 2 is CLD-like, 3 HOLD-like (HOLD++'s chain).
    The slowest rate is beta r = 8 sqrt(2k - 3) per unit t at the default beta = 8 (it grows with
    k); orders 2 and 3 then coincide with `cld()` and `hold()` up to the units of the auxiliaries.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"order must be an integer >= 1, got {order!r}")
    if order > MAX_ORDER:
        raise ValueError(
            f"order must be at most {MAX_ORDER} (the largest order kinetic computes exactly; see docs/math.md), got {order}"
        )
    beta, aux_var, T = _pos("beta", beta), _pos("aux_var", aux_var), _pos("T", T)
    c, xi, r = langevin_couplings(order)
    k = order
    A = torch.zeros(k, k, dtype=torch.float64)
    for i, ci in enumerate(c):
        A[i, i + 1] = ci
        A[i + 1, i] = -ci
    A[-1, -1] = -xi
    G = torch.zeros(k, k, dtype=torch.float64)
    G[-1, -1] = math.sqrt(2.0 * xi)
    aux = aux_var * torch.eye(k - 1, dtype=torch.float64) if k > 1 else None
    return LinearSDE(
        A, G, schedule=ConstantSchedule(beta), aux_cov=aux, T=T,
        name="langevin", params={"order": k, "beta": beta, "aux_var": aux_var, "rate": r},
    )


PRESETS = {"vp": vp, "ve": ve, "cld": cld, "psld": psld, "hold": hold, "langevin": langevin}


def preset_for_order(order: int) -> str:
    """The preset an order alone names: 1 vp, 2 cld, 3 hold, any other k langevin(k)."""
    return {1: "vp", 2: "cld", 3: "hold"}.get(order, "langevin")


def preset(name: str, order: int | None = None, **kwargs) -> LinearSDE:
    """Build a preset by name; ``preset("langevin", order=4)``; ``preset(None, order=K)`` picks
    VP for K = 1, CLD for 2, HOLD for 3 and the critically damped chain otherwise."""
    if name is None:
        if order is None:
            raise ValueError("preset: give a name or an order")
        name = preset_for_order(order)
    if name not in PRESETS:
        raise ValueError(f"sde must be one of {sorted(PRESETS)}, got {name!r}")
    if name == "langevin":
        return langevin(order if order is not None else 3, **kwargs)
    sde = PRESETS[name](**kwargs)
    if order is not None and order != sde.order:
        raise ValueError(f"order={order} does not match sde={name!r}, which has order {sde.order}")
    return sde
