"""The solver contract: declared options, the step plan, the fixed-grid loop, noise, score checks and NFE.

A `Solver` is built from options (``SOLVERS[name](**options)``), each validated by the class's
``schema`` (option -> (validator, default)), derives its ``convergence_order`` and ``stochastic``
from them, and integrates a state z (n, k, *D) along a decreasing float64 grid ts (ts[0] = T,
ts[-1] = t_eps) with ``run(sde, score, z, ts, ...) -> (z, nfe)``.

`Solver.run` owns what every solver shares: the checked score (`CheckedScore`: shapes on every
call, finiteness accumulated on the device and read once when the run ends), the NFE count, the
callback ``callback({"step", "t", "z", "nfe"})`` and the after-step hook ``transform(z, i, t)``
(refused, in one line, by the adaptive solvers, which have no steps to hook). A subclass writes

* ``build_plan(sde, ts) -> StepPlan``: every coefficient for the whole grid, float64 on the CPU,
  computed once before the loop (`Solver.prepare` adds the checks and the host-side times) and cast
  once per run (`StepPlan.to`), and
* for a `FixedGridSolver`, ``step(i, z, plan, score, noise, state) -> z``: one step from ts[i]
  to ts[i + 1] on the flattened state z (n, k, d), with the plan on z's device and dtype, the score
  of the noised blocks as (n, m, d) (``score(z, t)``), standard normal noise (n, r, d) from
  ``noise(r)``, and a per-run ``state`` dict (multistep history); the loop does no host-device
  synchronisation; or, for an adaptive solver, ``integrate(...)``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor

__all__ = ["Solver", "FixedGridSolver", "CheckedScore", "NoiseSampler", "StepPlan", "gaussian_noise",
           "check_finite_score", "mix", "one_of", "number", "integer", "optional"]

NoiseSampler = Callable[[tuple, torch.dtype, torch.device], Tensor]
"""``noise_sampler(shape, dtype, device) -> Tensor``: standard normal noise of that shape (tests pass
zeros to make a stochastic solver follow its mean path)."""


def gaussian_noise(generator: torch.Generator | None = None) -> NoiseSampler:
    """The default noise sampler: ``torch.randn`` drawn from ``generator``."""

    def draw(shape, dtype, device) -> Tensor:
        return torch.randn(shape, generator=generator, dtype=dtype, device=device)

    return draw


# ---------------------------------------------------------------------- the step plan
@dataclasses.dataclass
class StepPlan:
    """Per-step coefficients of a whole grid (float64 CPU tensors, leading axis the step).
    Subclasses declare their fields; ``None`` marks a coefficient a run does not use."""

    t_score: Tensor  # (N,) the time of the score evaluation of each step
    times: tuple = dataclasses.field(default=(), kw_only=True)  # the grid ts as Python floats (host side)

    def to(self, device, dtype: torch.dtype) -> "StepPlan":
        """A copy with every floating tensor on ``device`` in ``dtype`` (once per run)."""
        def cast(v):
            return v.to(device=device, dtype=dtype) if isinstance(v, Tensor) and v.is_floating_point() else v

        return dataclasses.replace(self, **{f.name: cast(getattr(self, f.name)) for f in dataclasses.fields(self)})


# ---------------------------------------------------------------------- option validators
Validator = Callable[[Any], Any]
"""``validator(value) -> value`` (normalised) or ValueError("must be ...") saying what was expected."""


def one_of(*choices, text: str | None = None) -> Validator:
    """A value equal to (and of the same type as) one of ``choices``; True is not 1."""
    def check(v):
        if not any(v is c or (type(v) is type(c) and v == c) for c in choices):
            raise ValueError(f"must be {text or ', '.join(map(repr, choices))}")
        return v

    return check


def number(minimum: float = 0.0, *, positive: bool = False, maximum: float | None = None) -> Validator:
    """A finite real number >= ``minimum`` (> with ``positive``; <= ``maximum`` if given), as a float."""
    def check(v):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v))
        if ok:
            x = float(v)
            ok = (x > minimum if positive else x >= minimum) and (maximum is None or x <= maximum)
        if not ok:
            rng = f"in ({minimum:g}, {maximum:g}]" if positive and maximum is not None else (
                f"> {minimum:g}" if positive else f">= {minimum:g}")
            raise ValueError(f"must be a finite number {rng}")
        return float(v)

    return check


def integer(minimum: int = 0) -> Validator:
    """An int (not a bool) >= ``minimum``."""
    def check(v):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            raise ValueError(f"must be an integer >= {minimum}")
        return v

    return check


def optional(validator: Validator, meaning: str) -> Validator:
    """None (which means ``meaning``) or a value ``validator`` accepts."""
    def check(v):
        if v is None:
            return None
        try:
            return validator(v)
        except ValueError as err:
            raise ValueError(f"{err} or None ({meaning})") from None

    return check


# ---------------------------------------------------------------------- the checked score
class CheckedScore:
    """Wraps a user ``score_fn``: checks the output's type and shape on every call (no device sync),
    records on the device the first call whose output is not finite (`raise_if_nonfinite` reads it
    once, at the end of the run), casts to the state's dtype, and counts calls (``nfe``).
    ``step`` (set by the solver loop before each step) labels the calls in the error."""

    def __init__(self, score_fn: Callable[[Tensor, Tensor], Tensor], sde):
        if not callable(score_fn):
            raise TypeError(f"score_fn must be callable as score_fn(z, t), got {type(score_fn).__name__}")
        self.fn = score_fn
        self.sde = sde
        self.nfe = 0
        self.step: int | None = None
        self._steps: list[int | None] = []  # the step of every call (host side)
        self._bad: Tensor | None = None  # (3,) float32 on the device: first bad call (-1: none), its t, z finite

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        s = self.fn(z, t)
        self.sde.check_score(s, z)
        call = self.nfe
        self.nfe += 1
        self._steps.append(self.step)
        fresh = torch.stack([torch.isfinite(s).all().logical_not(), torch.isfinite(z).all()]).to(torch.float32)
        t0 = torch.as_tensor(t).reshape(-1)[:1].to(device=fresh.device, dtype=torch.float32).reshape(())
        if self._bad is None:
            self._bad = torch.full((3,), -1.0, dtype=torch.float32, device=fresh.device)
        new = fresh[0].bool() & (self._bad[0] < 0)
        self._bad = torch.where(new, torch.stack([fresh.new_full((), float(call)), t0, fresh[1]]), self._bad)
        return s.to(z.dtype)

    def raise_if_nonfinite(self, what: str = "") -> None:
        """ValueError naming the step and t of the first score evaluation with nan/inf (one device
        read); ``what`` prefixes the message (e.g. the solver)."""
        if self._bad is None:
            return
        call, t0, z_ok = self._bad.tolist()
        if call < 0:
            return
        step = self._steps[int(call)]
        where = f" in step {step}" if step is not None else ""
        raise ValueError(
            f"{what}score_fn returned non-finite values (nan/inf) at t = {t0:.4g}{where} (evaluation {int(call) + 1})"
            + ("" if z_ok else "; its input z was already non-finite")
        )


def check_finite_score(s: Tensor, z: Tensor, t) -> None:
    """ValueError naming score_fn if s has nan/inf entries (one device sync: for the adaptive
    integrators, which synchronise on every step anyway); says so when its input z was non-finite."""
    if not bool(torch.isfinite(s).all()):
        t0 = float(torch.as_tensor(t).reshape(-1)[0])
        raise ValueError(
            f"score_fn returned non-finite values (nan/inf) at t = {t0:.4g}"
            + ("" if bool(torch.isfinite(z).all()) else " (its input z was already non-finite)")
        )


def checked(score, sde) -> CheckedScore:
    """``score`` itself if it is a `CheckedScore`, else wrapped in one."""
    return score if isinstance(score, CheckedScore) else CheckedScore(score, sde)


# ---------------------------------------------------------------------- solvers
class Solver:
    """Base class. Subclasses set ``name``, ``schema`` (option -> (validator, default)) and
    ``default_grid`` (the grid `kinetic.sample` uses when none is given), and implement `build_plan`
    and `integrate` (or, for a fixed-grid solver, `FixedGridSolver.step`). Unknown or invalid options
    raise ValueError naming the solver and the option; ``convergence_order`` and ``stochastic`` are
    read from the options."""

    name: ClassVar[str] = ""
    schema: ClassVar[dict[str, tuple[Validator, Any]]] = {}
    default_grid: ClassVar[str] = "quadratic"
    takes_transform: ClassVar[bool] = False  # whether `run` can apply an after-step transform

    def __init__(self, **options):
        unknown = sorted(set(options) - set(self.schema))
        if unknown:
            valid = ", ".join(sorted(self.schema)) or "none"
            raise ValueError(f"solver {self.name!r} got unknown option(s) {unknown}; valid options: {valid}")
        self.options: dict[str, Any] = {}
        for key, (validate, default) in self.schema.items():
            value = options.get(key, default)
            try:
                self.options[key] = validate(value)
            except ValueError as err:
                raise ValueError(f"{self.name}: {key} {err}, got {value!r}") from None

    @property
    def convergence_order(self) -> int:
        """Convergence order (weak order for the stochastic solvers) with these options."""
        return 1

    @property
    def stochastic(self) -> bool:
        """Whether these options draw noise."""
        return False

    def check(self, sde, ts: Tensor) -> None:
        """Raise ValueError if this solver cannot run this SDE / grid (default: always fine)."""

    def prepare(self, sde, ts: Tensor) -> StepPlan:
        """`check`, then the float64 CPU `StepPlan` of the whole grid (`build_plan`) with the grid's
        times as Python floats: everything a run reads from the host, made once before its first step."""
        ts = _cpu_grid(ts)
        self.check(sde, ts)
        plan = self.build_plan(sde, ts)
        plan.times = tuple(ts.tolist())
        return plan

    def build_plan(self, sde, ts: Tensor) -> StepPlan:
        """The solver's float64 CPU coefficients for the grid ts (default: only the score times)."""
        return StepPlan(t_score=ts[:-1])

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
        plan: StepPlan | None = None,
        transform: Callable[[Tensor, int, float], Tensor] | None = None,
    ) -> tuple[Tensor, int]:
        """Integrate z (n, k, *D) along ts; returns (z at ts[-1], NFE).

        ``plan`` (from `prepare`) skips `prepare` when the caller has made it (e.g. once for many
        batches). ``transform(z, i, t) -> z`` (z (n, k, *D) at t = ts[i + 1]) is
        applied after every step i (the inpainting replacement of `kinetic.conditioning`); solvers
        without fixed steps refuse it. When ``score`` is already a `CheckedScore` its caller reads
        its finiteness record (`CheckedScore.raise_if_nonfinite`); otherwise the run does, once, at
        its end."""
        if transform is not None and not self.takes_transform:
            raise ValueError(
                f"solver {self.name!r} integrates adaptively and cannot apply a transform after every step "
                "(e.g. inpainting); use a fixed-grid solver"
            )
        ts = _cpu_grid(ts)
        if plan is None:
            plan = self.prepare(sde, ts)
        own = not isinstance(score, CheckedScore)
        score = checked(score, sde)
        nfe0 = score.nfe

        def emit(step: int, t: float, z_now: Tensor) -> None:
            if callback is not None:
                callback({"step": step, "t": t, "z": z_now, "nfe": score.nfe - nfe0})

        z = self.integrate(sde, score, z, ts, plan, generator=generator, noise_sampler=noise_sampler, emit=emit,
                           transform=transform)
        if own:
            score.raise_if_nonfinite(f"{self.name}: ")
        return z, score.nfe - nfe0

    def integrate(self, sde, score: CheckedScore, z: Tensor, ts: Tensor, plan, *, generator, noise_sampler,
                  emit: Callable[[int, float, Tensor], None], transform) -> Tensor:  # pragma: no cover - abstract
        """The solver's own integration (see `run`); calls ``emit(step, t, z)`` after each step it takes
        (the adaptive ones: once, at the end)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({opts})"


class FixedGridSolver(Solver):
    """A solver that takes one `step` per grid interval; the base owns the loop (see the module)."""

    takes_transform = True

    def step(self, i: int, z: Tensor, plan: StepPlan, score, noise, state: dict) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def integrate(self, sde, score, z, ts, plan, *, generator, noise_sampler, emit, transform):
        dev, dt = z.device, z.dtype
        p = plan.to(dev, dt)
        n, k, shape = z.shape[0], z.shape[1], z.shape
        data_shape = tuple(z.shape[2:])
        m = len(sde.noised_blocks)
        draw = noise_sampler if noise_sampler is not None else gaussian_noise(generator)

        def score_n(zf: Tensor, t: Tensor) -> Tensor:
            return score(zf.reshape(shape), t.expand(n)).reshape(n, m, -1)

        def noise(r: int) -> Tensor:
            return draw((n, r, *data_shape), dt, dev).reshape(n, r, -1)

        times = plan.times  # the grid as Python floats, made by `prepare`
        zf = z.reshape(n, k, -1)
        state: dict = {}
        for i in range(len(times) - 1):
            score.step = i
            zf = self.step(i, zf, p, score_n, noise, state)
            if transform is not None:
                zf = transform(zf.reshape(shape), i, times[i + 1]).reshape(n, k, -1)
            emit(i, times[i + 1], zf.reshape(shape))
        score.step = None
        return zf.reshape(shape)


def _cpu_grid(ts) -> Tensor:
    """ts as a float64 CPU tensor (itself when it is one)."""
    if isinstance(ts, Tensor) and ts.dtype == torch.float64 and ts.device.type == "cpu":
        return ts
    return torch.as_tensor(ts, dtype=torch.float64).cpu()


def mix(M: Tensor, x: Tensor) -> Tensor:
    """(M kron I) x: M (r, c), x (b, c, d) -> (b, r, d); a broadcast product when c = 1 (one noised
    block, or k = 1), which is several times cheaper than an einsum on tensors this small."""
    if M.shape[-1] == 1:
        return M.reshape(1, -1, 1) * x
    return torch.einsum("ij,bjd->bid", M, x)


@dataclasses.dataclass
class GridSteps:
    """Float64 CPU per-node quantities of a grid: t, tau = B(t), beta(t) (N + 1,), and the step
    sizes h = t_i - t_{i+1} (N,) and dtau = tau_i - tau_{i+1} (N,)."""

    t: Tensor
    tau: Tensor
    beta: Tensor
    h: Tensor
    dtau: Tensor


def step_sizes(sde, ts: Tensor) -> GridSteps:
    """The `GridSteps` of the grid ts."""
    ts = ts.to(torch.float64).cpu()
    tau = sde.tau(ts)
    return GridSteps(t=ts, tau=tau, beta=sde.beta(ts), h=ts[:-1] - ts[1:], dtau=tau[:-1] - tau[1:])


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
