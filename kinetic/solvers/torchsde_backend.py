"""The reverse SDE handed to `torchsde.sdeint` (the peer to compare against).

Uses `LinearSDE.to_torchsde` (see `kinetic.torchsde_adapter`): flat states, reverse time s = T - t
from 0 to T - t_eps, fixed step dt = (T - t_eps) / steps on a uniform grid. Option ``method``: any
torchsde method (euler, milstein, srk for Ito; midpoint, heun, euler_heun, reversible_heun, log_ode
for Stratonovich: the noise is additive, so both readings give the same SDE). The Brownian motion
is a `torchsde.BrownianInterval` seeded from ``generator`` (a ``noise_sampler`` cannot drive it).
NFE counts score evaluations. The noised blocks may be any set: the adapter picks torchsde's
diagonal or additive noise type (`kinetic.torchsde_adapter`). Takes no ``transform``: torchsde owns the
loop.
"""

from __future__ import annotations

import torch

from .base import Solver, one_of
from .registry import register

_ITO = {"euler": 1, "milstein": 1, "srk": 2}
_STRAT = {"midpoint": 1, "heun": 1, "euler_heun": 1, "reversible_heun": 1, "log_ode": 1}
_LEVY = {"srk": "space-time", "log_ode": "foster"}


@register
class TorchsdeSolver(Solver):
    name = "torchsde"
    schema = {"method": (one_of(*_ITO, *_STRAT), "euler")}
    default_grid = "uniform"  # torchsde steps with a fixed dt

    @property
    def convergence_order(self) -> int:
        return {**_ITO, **_STRAT}[self.options["method"]]

    @property
    def stochastic(self) -> bool:
        return True

    def check(self, sde, ts):
        uni = torch.linspace(float(ts[0]), float(ts[-1]), len(ts), dtype=torch.float64)
        if not torch.allclose(ts, uni, rtol=0, atol=1e-9 * sde.T):
            raise ValueError("torchsde steps with a fixed dt: use grid='uniform' with the torchsde solver")

    def integrate(self, sde, score, z, ts, plan, *, generator, noise_sampler, emit, transform):
        import torchsde

        if noise_sampler is not None:
            raise ValueError("torchsde draws its own Brownian motion: seed it with generator, not noise_sampler")
        method = self.options["method"]
        T, t_eps = plan.times[0], plan.times[-1]
        data_shape = tuple(z.shape[2:])
        obj = sde.to_torchsde(data_shape, score, t_eps)
        if method in _STRAT:
            obj.sde_type = "stratonovich"  # additive noise: Ito and Stratonovich coincide
        y0 = obj.flatten(z)
        span = torch.tensor([0.0, T - t_eps], dtype=y0.dtype)  # the end in the state's dtype
        s1 = float(span[1])
        gdev = generator.device if generator is not None else "cpu"
        entropy = int(torch.randint(0, 2**62, (1,), generator=generator, device=gdev))
        bm = torchsde.BrownianInterval(
            t0=0.0, t1=s1, size=(y0.shape[0], obj.noise_channels), dtype=y0.dtype, device=y0.device, entropy=entropy,
            levy_area_approximation=_LEVY.get(method, "none"),
        )
        steps = len(ts) - 1
        options = {"grad_free": True} if method == "milstein" else None
        ys = torchsde.sdeint(obj, y0, span.to(y0.device), bm=bm,
                             method=method, dt=s1 / steps, options=options)
        out = obj.unflatten(ys[-1])
        emit(steps - 1, t_eps, out)
        return out
