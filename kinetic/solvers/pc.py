"""Predictor-corrector sampling (Song et al. 2021, Alg. 4/5, papers.md 3.3) for order-1 SDEs.

Per time t_i: ``n_corrector`` Langevin MCMC steps at t_i with step size 2 alpha (snr ||xi|| / ||s||)^2
(norms averaged over the batch; alpha = exp(2 A beta(t_i) h), i.e. 1 - beta_i for VP and 1 for VE),
then one Euler-Maruyama predictor step. NFE = steps (1 + n_corrector).

Order k > 1 is refused: a Langevin corrector needs the score of every block of the state, while the
model provides only the last block's; Langevin steps on the last block alone sample the auxiliary
block given the others and never correct the data block.
"""

from __future__ import annotations

import math

import torch

from . import Solver, grid_quantities, noise_like, register


@register
class PredictorCorrector(Solver):
    name = "pc"
    order = 1
    stochastic = True
    defaults = {"snr": 0.16, "n_corrector": 1}

    def __init__(self, **options):
        super().__init__(**options)
        snr, nc = self.options["snr"], self.options["n_corrector"]
        if isinstance(snr, bool) or not isinstance(snr, (int, float)) or not (snr >= 0 and math.isfinite(snr)):
            raise ValueError(f"pc: snr must be a finite number >= 0, got {snr!r}")
        if isinstance(nc, bool) or not isinstance(nc, int) or nc < 0:
            raise ValueError(f"pc: n_corrector must be an integer >= 0, got {nc!r}")

    def check(self, sde, ts):
        if sde.order != 1:
            raise ValueError(
                f"pc needs an order-1 SDE (got order {sde.order}): the Langevin corrector needs the score of "
                "every block, but the model provides only the last block's score; use sscs, ei or em instead"
            )

    def run(self, sde, score, z, ts, *, generator=None, callback=None):
        self.check(sde, ts)
        q = grid_quantities(sde, ts)
        a00 = float(sde.drift_matrix[0, 0])
        hb = q["h"] * q["beta"][:-1]
        dev, dt = z.device, z.dtype
        M = (1.0 - hb * a00).to(dev, dt)
        c = (sde.g2 * hb).to(dev, dt)
        b = torch.sqrt(sde.g2 * hb).to(dev, dt)
        alpha = torch.exp(2.0 * a00 * hb).to(dev, dt)
        tt = ts.to(dev, dt)
        snr, nc = float(self.options["snr"]), self.options["n_corrector"]
        n = z.shape[0]
        N = len(ts) - 1
        for i in range(N):
            ti = tt[i].expand(n)
            for _ in range(nc):
                g = score(z, ti)
                xi = noise_like(g, generator)
                gn = torch.linalg.vector_norm(g.reshape(n, -1), dim=-1).mean()
                nn = torch.linalg.vector_norm(xi.reshape(n, -1), dim=-1).mean()
                eps = 2.0 * alpha[i] * (snr * nn / gn) ** 2
                z = z + (eps * g + torch.sqrt(2.0 * eps) * xi).unsqueeze(1)
            s = score(z, ti)
            z = M[i] * z + (c[i] * s + b[i] * noise_like(s, generator)).unsqueeze(1)
            if callback is not None:
                callback({"step": i, "t": float(ts[i + 1]), "z": z})
        return z, N * (1 + nc)
