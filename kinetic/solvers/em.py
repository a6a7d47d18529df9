"""Euler-Maruyama on the reverse SDE (Song et al. 2021, papers.md 3.3): the baseline.

In forward time t, from t_i down to t_{i+1} = t_i - h:

    z <- z - h beta (A kron I) z + h beta g^2 e_k score(z, t_i) + sqrt(h beta g^2) e_k xi

(``probability_flow=True``: the Euler step of the probability-flow ODE, score weight 1/2, no noise).
Weak order 1; one score evaluation per step.
"""

from __future__ import annotations

import torch

from . import Solver, grid_quantities, last_block_noise, register


@register
class EulerMaruyama(Solver):
    name = "em"
    order = 1
    stochastic = True
    defaults = {"probability_flow": False}

    def __init__(self, **options):
        super().__init__(**options)
        self.stochastic = not bool(self.options["probability_flow"])

    def run(self, sde, score, z, ts, *, generator=None, callback=None):
        q = grid_quantities(sde, ts)
        A = sde.drift_matrix
        k = sde.order
        hb = q["h"] * q["beta"][:-1]  # (N,)
        M = torch.eye(k, dtype=torch.float64) - hb[:, None, None] * A  # (N, k, k)
        c = 1.0 if self.stochastic else 0.5
        a = c * sde.g2 * hb
        b = torch.sqrt(sde.g2 * hb) if self.stochastic else torch.zeros_like(hb)
        dev, dt = z.device, z.dtype
        M, a, b = M.to(dev, dt), a.to(dev, dt), b.to(dev, dt)
        tt = ts.to(dev, dt)
        n = z.shape[0]
        zf = z.reshape(n, k, -1)
        for i in range(len(ts) - 1):
            s = score(z, tt[i].expand(n))
            zf = torch.einsum("ij,bjd->bid", M[i], zf)
            last = zf[:, -1] + a[i] * s.reshape(n, -1)
            if self.stochastic:
                last = last + b[i] * last_block_noise(z, generator).reshape(n, -1)
            zf = torch.cat([zf[:, :-1], last[:, None]], dim=1)
            z = zf.reshape(z.shape)
            if callback is not None:
                callback({"step": i, "t": float(ts[i + 1]), "z": z})
        return z, len(ts) - 1
