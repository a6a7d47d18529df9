"""Lie-Trotter splitting (HOLD's sampler, papers.md 1.6): the first-order, unsymmetrised splitting.

Same two parts as `kinetic.solvers.sscs` (exact reverse linear OU part, Euler score part), composed
as e^{h L_A} e^{h L_S}: an Euler score step at (z_i, t_i), then the exact linear step over the
whole interval. Weak order 1, one score evaluation per step.
"""

from __future__ import annotations


from . import noise_like, register
from .sscs import _apply, _score_step, _Splitting

__all__ = ["LieTrotter"]


@register
class LieTrotter(_Splitting):
    """Euler score step at (z_i, t_i), then the exact reverse linear step over [t_{i+1}, t_i]."""

    name = "lie_trotter"
    order = 1
    defaults = {}

    def run(self, sde, score, z, ts, *, generator=None, callback=None):
        dev, dt = z.device, z.dtype
        q, (P, L), kappa = self._coefficients(sde, ts, dev, dt, halves=False)
        coef = (q["dtau"] * sde.g2).to(dev, dt)
        tt = ts.to(dev, dt)
        n, k = z.shape[0], sde.order
        zf = z.reshape(n, k, -1)
        N = len(ts) - 1
        for i in range(N):
            s = score(zf.reshape(z.shape), tt[i].expand(n)).reshape(n, -1)
            zf = _score_step(zf, s, coef[i], kappa)
            zf = _apply(P[i], zf) + _apply(L[i], noise_like(zf, generator))
            if callback is not None:
                callback({"step": i, "t": float(ts[i + 1]), "z": zf.reshape(z.shape)})
        return zf.reshape(z.shape), N
