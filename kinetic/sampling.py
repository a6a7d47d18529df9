"""`sample(...)`: draw data from a `LinearSDE` model by integrating the reverse dynamics from T to t_eps.

    import kinetic as kn
    x = kn.sample(kn.cld(), score_fn, (64, 2), steps=20)                       # (64, 2), ei on its grid
    z, nfe = kn.sample(sde, score_fn, (64, 2), solver="em", steps=500, return_state=True)
    for x in kn.sample_batches(sde, score_fn, (100_000, 2), batch_size=4096): ...   # bounded memory

``score_fn(z, t)`` takes the state z (n, k, *D) and times t (n,) and returns the score of the
noised blocks (``sde.score_shape``): (n, *D) for one noised block, (n, len(noised_blocks), *D) for
several. A `kinetic.denoiser.Denoiser` (e.g. `kinetic.load_diffusers`) or a `kinetic.ScoreModel` may be
passed in its place: it becomes ``kn.as_score_fn(it, sde)``, so one denoiser samples under any SDE
(``kn.sample(kn.hold(), den, shape)``). Solvers live in `kinetic.solvers` (``SOLVERS``), grids in `kinetic.grids` (``GRIDS``).

Conditioning (`kinetic.conditioning`, docs/math.md "Conditioning"): ``labels=`` (n,) class labels
for a conditional ``score_fn(z, t, labels)`` (label C = ``score_fn.num_classes`` is the null
class), ``guidance=w`` for classifier-free guidance, ``known=`` / ``mask=`` for inpainting by
replacement (fixed-grid solvers):

    x = kn.sample(sde, model.score, (10, 1, 8, 8), labels=torch.arange(10), guidance=1.0)
    x = kn.sample(sde, model.score, (8, 1, 8, 8), known=images, mask=left_half)
"""

from __future__ import annotations

from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from . import linalg
from .conditioning import (
    DEFAULT_REPLACEMENT, REPLACEMENT_METHODS, GuidedScore, Replacement, ReplacementPlan, check_inpainting,
    check_sample_labels,
)
from .checks import check_generator, parse_device
from .grids import GRIDS, MAX_STEPS, time_grid
from .sde import LinearSDE
from .solvers import SOLVERS, CheckedScore, FixedGridSolver, NoiseSampler, Solver, get_solver
from .solvers.base import gaussian_noise

__all__ = ["sample", "sample_batches", "time_grid", "default_grid", "state_dtype", "GRIDS", "MAX_STEPS",
           "tweedie_denoise", "CheckedScore"]

DEFAULT_SOLVER = "ei"
#: `sample_batches` with ``seed``: batch i draws from a generator seeded ``seed + i * SEED_STRIDE``.
SEED_STRIDE = 1_000_003
_ALL = 2**62  # batch_size of `sample` without one: every sample in one batch


def default_grid(solver: str | Solver) -> str:
    """The grid `sample` uses for ``solver`` when ``grid`` is None: the solver's ``default_grid``
    ("band" for the default ``ei`` and for ``gls``; "quadratic" for the other fixed-grid solvers; "uniform"
    for torchsde, which needs it, and ode, which uses only the end points)."""
    cls = SOLVERS[solver] if isinstance(solver, str) else type(solver)
    return cls.default_grid


def tweedie_denoise(sde: LinearSDE, score: Callable[[Tensor, Tensor], Tensor], z: Tensor, t: float,
                    coefficients=None) -> Tensor:
    """E[z_0 | z_t] from one evaluation of the noised-block score (exact for any data law).

    With p_t(z) = int N(z; c x0, Sigma_t kron I) p(x0) dx0 (c = Phi(0,t) e_1, auxiliaries from aux_cov),
    xhat = E[x0 | z_t] is `Coefficients.data_estimate` (Tweedie), and since E[z_0 | z_t, x0] is
    e_1 x0 + S0 Phi^T Sigma^-1 (z_t - c x0), affine in x0, E[z_0 | z_t] = e_1 xhat + S0 Phi^T Sigma^-1 (z - c xhat).
    z (n, k, *D) -> (n, k, *D). ``coefficients``: ``sde.coefficients(t)`` if the caller has them (float64 CPU).
    """
    co = sde.coefficients(torch.tensor(float(t), dtype=torch.float64)) if coefficients is None else coefficients
    n, k = z.shape[0], sde.order
    s = score(z, torch.full((n,), float(t), dtype=z.dtype, device=z.device))
    xhat = co.data_estimate(z, s).reshape(n, -1)
    zf = z.reshape(n, k, -1)
    out = torch.zeros_like(zf)
    out[:, 0] = xhat
    if k > 1:
        Sinv = co.chol_inv.T @ co.chol_inv
        gain = (sde.initial_cov @ co.phi.T @ Sinv).to(z.device, z.dtype)  # (k, k)
        resid = zf - co.c.to(z.device, z.dtype)[None, :, None] * xhat[:, None]
        out = out + torch.einsum("ij,bjd->bid", gain, resid)
    return out.reshape(z.shape)


class _Conditioning:
    """The checked conditioning arguments of one `sample` call: labels (n,) or None, guidance w,
    the null label, and for inpainting x0 (n, *D), mask (n, *D) bool and the replacement plan."""

    def __init__(self, sde, score_fn, shape, labels, guidance, known, mask, replacement, slv, ts, dtype, device):
        dev = parse_device(device) if device is not None else torch.device("cpu")  # one line for a bad device
        self.labels, self.guidance, self.num_classes = check_sample_labels(score_fn, labels, shape[0], guidance, dev)
        self.inpaint = known is not None or mask is not None
        self.x0 = self.mask = self.plan = None
        self.prior_chol = linalg.safe_cholesky(sde.prior_cov)  # once per run: the prior's factor, float64 CPU
        self.t_end = float(ts[-1])  # read from the CPU grid before the first step
        self.end_coefficients = sde.coefficients(ts[-1])  # for the Tweedie step (denoise), float64 CPU
        if self.inpaint:
            if not isinstance(slv, FixedGridSolver):
                fixed = ", ".join(name for name, cls in SOLVERS.items() if issubclass(cls, FixedGridSolver))
                raise ValueError(
                    f"inpainting (known=, mask=) replaces the known pixels after every step of a fixed-grid solver "
                    f"({fixed}); solver {slv.name!r} integrates adaptively"
                )
            if replacement not in REPLACEMENT_METHODS:
                raise ValueError(f"replacement must be one of {', '.join(REPLACEMENT_METHODS)}, got {replacement!r}")
            self.x0, self.mask = check_inpainting(known, mask, shape, dtype, dev)
            self.plan = ReplacementPlan(sde, ts, replacement)

    def score(self, score_fn, rows: slice):
        """The ``score_fn(z, t)`` of the batch ``rows`` and its network evaluations per call."""
        if self.labels is None:
            return score_fn, 1
        g = GuidedScore(score_fn, self.labels[rows], self.guidance, self.num_classes)
        return g, g.network_calls

    def replacement(self, rows: slice, noise) -> Replacement | None:
        if not self.inpaint:
            return None
        return Replacement(self.plan, self.x0[rows], self.mask[rows], noise)


def as_sampler_score(sde, score_fn):
    """``score_fn`` as the samplers call it: a `kinetic.denoiser.Denoiser` or a `kinetic.ScoreModel` becomes
    ``kn.as_score_fn(score_fn, sde)`` (a Denoiser, or a ScoreModel of the "denoiser" parameterisation:
    the score of ANY ``sde``; another ScoreModel: its own SDE's score, which ``sde`` must match); any other
    callable is returned as it is."""
    from .denoiser import Denoiser
    from .score import ScoreModel, as_score_fn

    if isinstance(score_fn, (Denoiser, ScoreModel)) and isinstance(sde, LinearSDE):
        return as_score_fn(score_fn, sde)
    return score_fn


def _prepare(sde, score_fn, shape, solver, steps, t_eps, grid, dtype, callback, noise_sampler, batch_size, solver_options):
    """Validate the arguments of `sample` / `sample_batches`; returns (shape, solver, ts, plan, batch)."""
    if not isinstance(sde, LinearSDE):
        raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
    if not callable(score_fn):
        raise TypeError(f"score_fn must be callable as score_fn(z, t), got {type(score_fn).__name__}")
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError, OverflowError):
        raise TypeError(f"shape must be a sequence of ints (n, *data_shape), got {shape!r}") from None
    if len(shape) < 2 or any(s <= 0 for s in shape):
        raise ValueError(f"shape must be (n, *data_shape) with positive sizes, got {shape}")
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; valid solvers: {', '.join(sorted(SOLVERS))}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    if steps > MAX_STEPS:
        raise ValueError(f"steps must be at most {MAX_STEPS} (kinetic.grids.MAX_STEPS), got {steps}")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable or None")
    if noise_sampler is not None and not callable(noise_sampler):
        raise TypeError("noise_sampler must be callable as noise_sampler(shape, dtype, device) or None")
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"batch_size must be an integer >= 1 or None, got {batch_size!r}")
    slv = get_solver(solver, **solver_options)
    ts = time_grid(sde, steps, t_eps, default_grid(slv) if grid is None else grid)
    plan = slv.prepare(sde, ts)
    return shape, slv, ts, plan, min(batch_size or shape[0], shape[0])


def state_dtype(dtype: torch.dtype | None, score_fn, known=None) -> torch.dtype:
    """The dtype of the sampler's state: ``dtype`` if given; else that of the network behind ``score_fn``
    (the first floating parameter of the `torch.nn.Module` it is a method of, or its ``model``) or, without
    one, of ``known``; float32 for half-precision ones (a bf16-autocast network keeps a float32 state);
    else ``torch.get_default_dtype()`` (float32). The solver's float64 coefficients are cast to it once
    per run."""
    if dtype is not None:
        return dtype
    found = None
    for obj in (getattr(score_fn, "__self__", None), getattr(score_fn, "model", None),
                getattr(score_fn, "denoiser", None), score_fn):
        if isinstance(obj, torch.nn.Module):
            found = next((p.dtype for p in obj.parameters() if p.is_floating_point()), None)
            if found is not None:
                break
    if found is None and isinstance(known, Tensor) and known.is_floating_point():
        found = known.dtype
    if found is None:
        return torch.get_default_dtype()
    return torch.float32 if found in (torch.float16, torch.bfloat16) else found


def _raise_if_nonfinite(slv: Solver, runs: list) -> None:
    """After a batch's last step, one device read: the first non-finite score evaluation (step and t)
    or a non-finite final state (``runs``: (CheckedScore, all-finite flag tensor) per batch)."""
    for score, _ in runs:
        score.raise_if_nonfinite(f"sampling with solver {slv.name!r} produced non-finite values: ")
    if not all(bool(ok) for _, ok in runs):
        raise ValueError(
            f"sampling with solver {slv.name!r} produced non-finite values; the score_fn returned nan/inf "
            "during the run or the steps are too large for this solver"
        )


def _sample_one(sde, score_fn, cond, rows, slv, ts, plan, shape, generator, noise_sampler, callback, denoise, dtype,
                device):
    """One batch (the samples ``rows``): (z (b, k, *D), nfe). nfe counts network evaluations per
    sample: a guided score evaluation is 2 (the conditional and the null branch). The batch's
    finiteness record (the first non-finite evaluation, kept on the device) is read once, at its end."""
    fn, calls = cond.score(score_fn, rows)
    score = CheckedScore(fn, sde)
    eps = torch.randn((shape[0], sde.order, *shape[1:]), generator=generator, dtype=dtype, device=device)
    z = linalg.apply_blocks(cond.prior_chol, eps)  # the prior draw, as `LinearSDE.prior_sample`
    noise = noise_sampler if noise_sampler is not None else gaussian_noise(generator)
    repl = cond.replacement(rows, noise)
    cb = callback
    if callback is not None and calls != 1:
        def cb(info):
            callback({**info, "nfe": calls * info["nfe"]})
    if repl is not None:
        z = repl.initial(z)
    z, _ = slv.run(sde, score, z, ts, generator=generator, noise_sampler=noise_sampler, callback=cb, plan=plan,
                   transform=repl)
    if denoise:
        z = tweedie_denoise(sde, score, z, cond.t_end, cond.end_coefficients)
        if callback is not None:
            callback({"step": len(ts) - 1, "t": 0.0, "z": z, "nfe": calls * score.nfe})
    if repl is not None:
        z = z.clone()
        z[:, 0] = repl.finish(z[:, 0])
    _raise_if_nonfinite(slv, [(score, torch.isfinite(z).all())])
    return z, calls * score.nfe


def sample_batches(
    sde: LinearSDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    *,
    batch_size: int = 1024,
    solver: str = DEFAULT_SOLVER,
    steps: int = 50,
    t_eps: float = 1e-3,
    grid: str | Tensor | None = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callable[[dict], None] | None = None,
    return_state: bool = False,
    denoise: bool = False,
    dtype: torch.dtype | None = None,
    device=None,
    labels=None,
    guidance: float = 0.0,
    known=None,
    mask=None,
    replacement: str = DEFAULT_REPLACEMENT,
    seed: int | None = None,
    **solver_options,
) -> Iterator:
    """Yield ``shape[0]`` samples in batches of ``batch_size`` (the last may be smaller): peak memory
    is that of one batch, whatever n. The sampling engine: `sample` and `kinetic.evaluation.draw`
    run it. Arguments as in `sample`; the grid and the solver's coefficients are computed once, and
    every batch draws its prior and noise from ``generator`` in turn, so the sequence is
    deterministic given the generator (but not equal to one unbatched run). ``seed`` (instead of
    ``generator``): batch i draws from its own generator seeded ``seed + i * SEED_STRIDE`` on
    ``device``, so a batch's samples do not depend on how many came before it.
    ``labels``, ``known`` and ``mask`` cover all n samples; batch i uses its rows. Each batch's record of
    non-finite values is read (once) when the batch is yielded.
    Yields the data block (b, *data_shape), or ``(z (b, k, *data_shape), nfe)`` with ``return_state``.
    """
    if seed is not None and (generator is not None or isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be an integer >= 0, and not given with generator; got seed={seed!r}")
    check_generator(generator)
    score_fn = as_sampler_score(sde, score_fn)  # a Denoiser / ScoreModel: the score of this sde
    shape, slv, ts, plan, b = _prepare(sde, score_fn, shape, solver, steps, t_eps, grid, dtype, callback,
                                       noise_sampler, batch_size, solver_options)
    dtype = state_dtype(dtype, score_fn, known)
    cond = _Conditioning(sde, score_fn, shape, labels, guidance, known, mask, replacement, slv, ts, dtype, device)
    for i, start in enumerate(range(0, shape[0], b)):
        rows = min(b, shape[0] - start)
        if seed is not None:
            generator = torch.Generator(device=device if device is not None else "cpu").manual_seed(
                seed + i * SEED_STRIDE)
        z, nfe = _sample_one(sde, score_fn, cond, slice(start, start + rows), slv, ts, plan, (rows, *shape[1:]),
                             generator, noise_sampler, callback, denoise, dtype, device)
        yield (z, nfe) if return_state else z[:, 0]


def sample(
    sde: LinearSDE,
    score_fn: Callable[[Tensor, Tensor], Tensor],
    shape: Sequence[int],
    *,
    solver: str = DEFAULT_SOLVER,
    steps: int = 50,
    t_eps: float = 1e-3,
    grid: str | Tensor | None = None,
    generator: torch.Generator | None = None,
    noise_sampler: NoiseSampler | None = None,
    callback: Callable[[dict], None] | None = None,
    return_state: bool = False,
    denoise: bool = False,
    dtype: torch.dtype | None = None,
    device=None,
    batch_size: int | None = None,
    labels=None,
    guidance: float = 0.0,
    known=None,
    mask=None,
    replacement: str = DEFAULT_REPLACEMENT,
    **solver_options,
):
    """Sample from the model defined by ``sde`` and the noised-block ``score_fn``.

    Args:
        shape: (n, *data_shape) of the output.
        solver: a name in `kinetic.solvers.SOLVERS` (em, pc, sscs, lie_trotter, ei, gls, ode, torchsde); the
            default ``ei`` with eta = 0 runs grids of at most `kinetic.solvers.ei.default_gls_steps` steps with the
            ``gls`` plan (``gls_steps=0`` turns it off) and longer ones on the k-block flow.
        steps: number of solver steps (NFE for one-evaluation-per-step solvers), at most
            `kinetic.grids.MAX_STEPS`; ignored by ``ode`` (adaptive) and when ``grid`` is a tensor.
        grid: None (the solver's `default_grid`: "band" for gls and ei, "quadratic" for em, pc, sscs and
            lie_trotter, "uniform" for torchsde and ode), a name in `kinetic.grids.GRIDS` ("uniform",
            "quadratic", "logsnr", "band", "optimal"; see `time_grid`) or decreasing times from T to t_eps. The grids
            are compared in docs/benchmarks.md, "Grids optimised in closed form" (uniform, quadratic and logsnr,
            before `band`: its History).
        generator: draws the prior and every noise increment.
        noise_sampler: ``noise_sampler(shape, dtype, device)`` replaces ``torch.randn`` for the
            noise increments of the fixed-grid solvers (e.g. zeros: the mean path of a stochastic
            solver); the deterministic ones draw none, and torchsde refuses it.
        callback: called after every step with {"step", "t", "z", "nfe"}.
        denoise: finish with the Tweedie step E[z_0 | z_{t_eps}] (one more NFE; see `tweedie_denoise`).
        batch_size: None (all n at once) or the most samples integrated at a time (see `sample_batches`).
        labels: (n,) int64 class labels (or one label for all) for a conditional ``score_fn(z, t, labels)``
            whose ``num_classes`` attribute is C (label C: the null class, the unconditional score).
        guidance: classifier-free guidance w >= 0: the score (1 + w) s(z, t, y) - w s(z, t, null), one
            batched call on 2n rows per evaluation (2 network evaluations); 0: the conditional model.
        known, mask: inpainting by replacement (fixed-grid solvers): ``known`` shaped like the output,
            ``mask`` broadcastable to it, 1 where a value is known. The known pixels' state (all k
            blocks) is redrawn from the forward kernel given ``known`` after every step; the output
            holds ``known`` exactly where ``mask`` is 1 (see `kinetic.conditioning`).
        replacement: how the known pixels are redrawn: "fresh" (default; an independent draw from the
            kernel given the data at every node) or "bridge" (the forward kernel given the data and
            their previous state); see `kinetic.conditioning.REPLACEMENT_METHODS`.
        dtype: the state's dtype; None (default): that of the network behind ``score_fn`` (float32 for
            half-precision and bf16-autocast networks), else float32 (`state_dtype`). The solver's float64
            coefficients are cast to it once per run; exactness checks ask for ``torch.float64``.
        solver_options: passed to the solver, validated by its ``schema`` (e.g. ``multistep=2``, ``eta=1.0``
            for ``ei``; ``rtol`` for ``ode``).
    Returns:
        the data block (n, *data_shape), or ``(z (n, k, *data_shape), nfe)`` with ``return_state=True``
        (nfe: network evaluations along one batch's path, the largest over the batches: the score
        evaluations, twice that with guidance w > 0).
    """
    batches = sample_batches(
        sde, score_fn, shape, batch_size=_ALL if batch_size is None else batch_size, solver=solver, steps=steps, t_eps=t_eps, grid=grid,
        generator=generator, noise_sampler=noise_sampler, callback=callback, return_state=True, denoise=denoise,
        dtype=dtype, device=device, labels=labels, guidance=guidance, known=known, mask=mask, replacement=replacement,
        **solver_options,
    )
    out, nfe = _collect(batches, shape, lambda z: z if return_state else z[:, 0])
    return (out, nfe) if return_state else out


def _collect(batches: Iterator, shape: Sequence[int], keep: Callable[[Tensor], Tensor]) -> tuple[Tensor, int]:
    """The ``(z, nfe)`` batches of `sample_batches` as one (n, ...) tensor of ``keep(z)`` and the
    largest nfe (one batch: its own tensor; several: filled into one allocation)."""
    out, nfe, start = None, 0, 0
    for z, got in batches:  # the first batch has checked the arguments, shape included
        part, n = keep(z), int(shape[0])
        nfe = max(nfe, got)
        if out is None and part.shape[0] == n:
            return part, nfe
        if out is None:
            out = torch.empty((n, *part.shape[1:]), dtype=part.dtype, device=part.device)
        out[start : start + part.shape[0]] = part
        start += part.shape[0]
    return out, nfe
