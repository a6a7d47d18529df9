"""Accuracy of kinetic's exact kernels for the critically damped chain langevin(k), k = 1..MAX_ORDER.

For each order and each time t (1e-6 .. T), against two independent references:
- scipy's DOP853 integration of the moment ODEs dPhi/dt = beta A Phi, dS/dt = beta (A S + S A^T + D)
  (tolerances far below each entry's own scale): transition and covariance;
- a 260-digit Taylor-series-and-squaring computation with mpmath, then mpmath's Cholesky: the factor L_t
  (which the scores divide by; near t = 0 Sigma(t) is far too close to singular for a float64 Cholesky).
Errors are per entry relative to sqrt(S_ii S_jj) (covariance) and per row relative to sqrt(S_ii) (factor);
the table lists the worst over t, and the condition number of the correlation matrix shows why a plain
Cholesky factorisation fails.

    python benchmarks/kernel_accuracy.py [--orders 1 2 ... 16] [--out docs/figures]

`moment_ode` and `mp_reference` are also the references of tests/test_sde.py.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import mpmath as mp
import numpy as np
import scipy.integrate
import torch

import kinetic as kn

TIMES = (1e-6, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 1.0)


def moment_ode(sde, t: float):
    """(Phi(0, t), Sigma(t)) by scipy DOP853 on the moment ODEs in t, with per-entry tolerances far
    below each entry's own scale sqrt(S_ii S_jj) (taken from the code under test, times 1e-14)."""
    A, D, S0 = (m.numpy() for m in (sde.drift_matrix, sde.noise_matrix, sde.initial_cov))
    k = A.shape[0]

    def rhs(s, y):
        b = float(sde.schedule.beta(torch.tensor(s, dtype=torch.float64)))
        P, S = y[: k * k].reshape(k, k), y[k * k :].reshape(k, k)
        return np.concatenate([(b * A @ P).ravel(), (b * (A @ S + S @ A.T + D)).ravel()])

    d = np.sqrt(np.diagonal(sde.covariance(torch.tensor(t, dtype=torch.float64)).numpy()))
    atol = np.concatenate([np.full(k * k, 1e-15), 1e-14 * np.outer(d, d).ravel() + 1e-300])
    y0 = np.concatenate([np.eye(k).ravel(), S0.ravel()])
    sol = scipy.integrate.solve_ivp(rhs, (0.0, t), y0, method="DOP853", rtol=1e-12, atol=atol)
    return sol.y[: k * k, -1].reshape(k, k), sol.y[k * k :, -1].reshape(k, k)


def mp_reference(sde, t: float, dps: int = 260, terms: int = 100):
    """(Sigma(t), its Cholesky factor, the correlation condition number) in ``dps``-digit arithmetic:
    Taylor series + squaring (Q(2h) = Phi Q Phi^T + Q), then mpmath's Cholesky. Resolves covariances
    far more singular than float64 can hold."""
    with mp.workdps(dps):
        k = sde.order
        A, D, S0 = (mp.matrix(m.tolist()) for m in (sde.drift_matrix, sde.noise_matrix, sde.initial_cov))
        tau = mp.mpf(float(sde.tau(torch.tensor(t, dtype=torch.float64))))
        na = max(sum(abs(A[i, j]) for i in range(k)) for j in range(k))
        n = 0
        while tau * na / 2**n > mp.mpf("0.05"):
            n += 1
        h = tau / 2**n
        Phi, term, Q, M, coef = mp.eye(k), mp.eye(k), mp.zeros(k, k), D, h
        for j in range(1, terms):
            term = term * A * (h / j)
            Phi += term
        for j in range(terms):
            Q += coef * M
            M = A * M + M * A.T
            coef = coef * h / (j + 2)
        for _ in range(n):
            Q = Phi * Q * Phi.T + Q
            Phi = Phi * Phi
        S = Phi * S0 * Phi.T + Q
        dinv = mp.diag([1 / mp.sqrt(S[i, i]) for i in range(k)])
        ev = mp.eigsy(dinv * S * dinv, eigvals_only=True)
        cond = float(max(ev) / min(ev))
        return np.array(S.tolist(), dtype=float), np.array(mp.cholesky(S).tolist(), dtype=float), cond


def run(orders) -> list[dict]:
    rows = []
    for k in orders:
        sde = kn.langevin(k)
        t0 = time.perf_counter()
        worst = {"phi": 0.0, "sigma": 0.0, "chol": 0.0, "cond": 0.0}
        for t in TIMES:
            tt = torch.tensor([t * sde.T], dtype=torch.float64)
            co = sde.coefficients(tt)
            P_ref, S_ref = moment_ode(sde, t * sde.T)
            S_mp, L_mp, cond = mp_reference(sde, t * sde.T)
            d = np.sqrt(np.diag(S_mp))
            worst["phi"] = max(worst["phi"], float(np.max(np.abs(co.phi[0].numpy() - P_ref)) / np.abs(P_ref).max()))
            worst["sigma"] = max(worst["sigma"], float(np.max(np.abs(co.sigma[0].numpy() - S_ref) / np.outer(d, d))))
            worst["chol"] = max(worst["chol"], float(np.max(np.abs(co.chol[0].numpy() - L_mp) / d[:, None])))
            worst["cond"] = max(worst["cond"], cond)
        rows.append({"order": k, **worst, "seconds": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    return rows


def to_markdown(rows: list[dict]) -> str:
    lines = [
        f"Worst error over t in {{{', '.join(f'{t:g}' for t in TIMES)}}} x T (langevin(k) defaults: beta = 8, aux_var = 0.04).",
        "",
        "| order k | Phi vs moment ODE | Sigma vs moment ODE | L_t vs 260-digit Cholesky | correlation condition number (worst t) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['order']} | {r['phi']:.1e} | {r['sigma']:.1e} | {r['chol']:.1e} | {r['cond']:.1e} |")
    return "\n".join(lines)


def cli(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--orders", type=int, nargs="+", default=list(range(1, kn.MAX_ORDER + 1)))
    p.add_argument("--out", default=None, help="directory for kernel_accuracy.{json,md}")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    rows = run(a.orders)
    md = to_markdown(rows)
    print(md)
    if a.out:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        meta = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "rows": rows}
        (out / "kernel_accuracy.json").write_text(json.dumps(meta, indent=2))
        (out / "kernel_accuracy.md").write_text(md + "\n")
