"""The solver base classes: options, the fixed-grid loop, noise drawing, score checking and NFE.

A `Solver` is built from options (``SOLVERS[name](**options)``), derives its ``order`` and
``stochastic`` from them, and integrates a state z (n, k, *D) along a decreasing float64 grid ts
(ts[0] = T, ts[-1] = t_eps) with ``run(sde, score, z, ts, ...) -> (z, nfe)``.

`FixedGridSolver` owns the loop. A subclass writes only

* ``plan(sde, ts) -> dict``: every coefficient for the whole grid, float64 on the CPU, computed
  once before the loop (the loop then does no host-device synchronisation), and
* ``step(i, z, plan, score, noise, state) -> z``: one step from ts[i] to ts[i + 1] on the
  flattened state z (n, k, d), with the plan already on z's device and in z's dtype, the score of
  the noised blocks as (n, m, d) (``score(z, t)``), standard normal noise (n, r, d) from
  ``noise(r)``, and a per-run ``state`` dict (multistep history).

The base wraps the score in `CheckedScore` (shape checks, finiteness on the first call, the NFE
count), draws noise through ``noise_sampler(shape, dtype, device)`` (default: ``torch.randn``
with ``generator``), and calls ``callback({"step", "t", "z", "nfe"})`` after every step.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["Solver", "FixedGridSolver", "CheckedScore", "NoiseSampler", "gaussian_noise", "check_finite_score", "mix"]

NoiseSampler = Callable[[tuple, torch.dtype, torch.device], Tensor]
"""``noise_sampler(shape, dtype, device) -> Tensor``: standard normal noise of that shape (tests pass
zeros to make a stochastic solver follow its mean path)."""


def gaussian_noise(generator: torch.Generator | None = None) -> NoiseSampler:
    """The default noise sampler: ``torch.randn`` drawn from ``generator``."""

    def draw(shape, dtype, device) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    return draw


class CheckedScore:
    """Wraps a user ``score_fn``: checks the output's type and shape on every call (no device sync)
    and its finiteness on the first call; casts to the state's dtype; counts calls (``nfe``)."""

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor], sde):
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(z, t), got {type(score_fn).__name__}")
        self.fn = score_fn
        self.sde = sde
        self.checked = False
        self.nfe = 0

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        s = self.fn(z, t)
        self.nfe += 1
        self.sde.check_score(s, z)
        if not self.checked:
            check_finite_score(s, z, t)
            self.checked = True
        return s.to(z.dtype)


def check_finite_score(s: Tensor, z: Tensor, t) -> None:
    """ValueError naming score_fn if s has nan/inf entries (one device sync); says so when its
    input z was already non-finite."""
    if not bool(torch.isfinite(s).all()):
        t0 = float(torch.as_tensor(t).reshape(-1)[0])
        raise ValueError(
            f"score_fn returned non-finite values (nan/inf) at t = {t0:.4g}"
            + ("" if bool(torch.isfinite(z).all()) else " (its input z was already non-finite)")
        )


def checked(score, sde) -> CheckedScore:
    """``score`` itself if it is a `CheckedScore`, else wrapped in one."""
    return score if isinstance(score, CheckedScore) else CheckedScore(score, sde)


class Solver:
    """Base class. Subclasses set ``name``, ``defaults`` (option -> default value) and
    ``default_grid`` (the grid `kinetic.sample` uses when none is given), and implement `run`
    (or, for a fixed-grid solver, `FixedGridSolver.plan` and `FixedGridSolver.step`). Unknown
    options raise ValueError; ``order`` and ``stochastic`` are read from the options."""

    name: str = ""
    defaults: dict = {}
    default_grid: str = "quadratic"

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"solver {self.name!r} got unknown option(s) {unknown}; valid options: {valid}")
        self.options = {**self.defaults, **options}

    @property
    def order(self) -> int:
        """Convergence order (weak order for the stochastic solvers) with these options."""
        return 1

    @property
    def stochastic(self) -> bool:
        """Whether these options draw noise."""
        return False

    def check(self, sde, ts: Tensor) -> None:
        """Raise ValueError if this solver cannot run this SDE / grid (default: always fine)."""

    def plan(self, sde, ts: Tensor) -> dict:
        """Float64 CPU coefficients for the whole grid (default: none)."""
        return {}

    def run(
        self,
        sde,
        score: Callable[[Tensor, Tensor], Tensor],
        z: Tensor,
        ts: Tensor,
        *,
        generator: torch.Generator | None = None,
        noise_sampler: NoiseSampler | None = None,
        callback: Callable[[dict], None] | None = None,
        plan: dict | None = None,
    ) -> tuple[Tensor, int]:  # pragma: no cover - abstract
        """Integrate z (n, k, *D) along ts; returns (z at ts[-1], NFE). ``plan`` (from `plan`)
        skips `check` and the plan when the caller has made them (e.g. once for many batches)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class FixedGridSolver(Solver):
    """A solver that takes one `step` per grid interval; the base owns the loop (see the module)."""

    def step(self, i: int, z: Tensor, plan: dict, score, noise, state: dict) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def run(self, sde, score, z, ts, *, generator=None, noise_sampler=None, callback=None, plan=None, transform=None):
        """As `Solver.run`; ``transform(z, i, t) -> z`` (z (n, k, *D) at t = ts[i + 1]) is applied
        after every step i (e.g. the inpainting replacement of `kinetic.conditioning`)."""
        ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
        if plan is None:
            self.check(sde, ts)
            plan = self.plan(sde, ts)
        score = checked(score, sde)
        nfe0 = score.nfe
        dev, dt = z.device, z.dtype
        p = {key: v.to(dev, dt) if isinstance(v, Tensor) else v for key, v in plan.items()}
        n, k, shape = z.shape[0], z.shape[1], z.shape
        data_shape = tuple(z.shape[2:])
        m = len(sde.noised_blocks)
        draw = noise_sampler if noise_sampler is not None else gaussian_noise(generator)

        def score_n(zf: Tensor, t: Tensor) -> Tensor:
            return score(zf.reshape(shape), t.expand(n)).reshape(n, m, -1)

        def noise(r: int) -> Tensor:
            return draw((n, r, *data_shape), dt, dev).reshape(n, r, -1)

        times = ts.tolist()
        zf = z.reshape(n, k, -1)
        state: dict = {}
        for i in range(len(times) - 1):
            zf = self.step(i, zf, p, score_n, noise, state)
            if transform is not None:
                zf = transform(zf.reshape(shape), i, times[i + 1]).reshape(n, k, -1)
            if callback is not None:
                callback({"step": i, "t": times[i + 1], "z": zf.reshape(shape), "nfe": score.nfe - nfe0})
        return zf.reshape(shape), score.nfe - nfe0


def mix(M: Tensor, x: Tensor) -> Tensor:
    """(M kron I) x: M (r, c), x (b, c, d) -> (b, r, d); a broadcast product when c = 1 (one noised
    block, or k = 1), which is several times cheaper than an einsum on tensors this small."""
    if M.shape[-1] == 1:
        return M.reshape(1, -1, 1) * x
    return torch.einsum("ij,bjd->bid", M, x)


def step_sizes(sde, ts: Tensor) -> dict:
    """Float64 CPU per-node quantities of a grid: t, tau = B(t), beta(t), and the step sizes
    h = t_i - t_{i+1} (N,) and dtau = tau_i - tau_{i+1} (N,)."""
    ts = ts.to(torch.float64).cpu()
    tau = sde.tau(ts)
    beta = sde.beta(ts)
    return {"t": ts, "tau": tau, "beta": beta, "h": ts[:-1] - ts[1:], "dtau": tau[:-1] - tau[1:]}


def noised_columns(sde) -> Tensor:
    """D[:, N] (k, m) float64: how the noised-block score enters the drift."""
    return sde.noise_matrix[:, list(sde.noised_blocks)]


def noised_diffusion_factor(sde) -> Tensor:
    """E (k, m) float64 with E E^T = D = G G^T and rows outside the noised blocks zero: the noise
    (G kron I) dW has the law of (E kron I) dW_N, m = len(N) channels (sqrt(D_kk) e_k for one block)."""
    from .. import linalg

    N = list(sde.noised_blocks)
    E = torch.zeros(sde.order, len(N), dtype=torch.float64)
    DN = sde.noise_block
    E[N] = DN.sqrt() if len(N) == 1 else linalg.safe_cholesky(DN)
    return E
