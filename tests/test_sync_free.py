"""The sampler loop makes no host-device synchronisation: a guard on every tensor-to-host conversion.

On CUDA every conversion of a tensor to a Python value (``bool(t)``, ``t.item()``, ``float(t)``,
``t.tolist()``, ``t.cpu()``, ``t.numpy()``, ``nonzero``, boolean-mask indexing, ...) waits for the
device to finish its queue, so one inside the loop stalls every step. `HostSyncGuard` records each of
them on the CPU, where they cost nothing but are still visible, through a `TorchFunctionMode` (the
Python-level conversions) and a `TorchDispatchMode` (the aten ops that read device memory on the host:
``_local_scalar_dense``, ``nonzero``, ``masked_select``, boolean indexing, ``equal``, ...).

The contract tested here, for every fixed-grid solver, guidance, inpainting and batching, through the
public `kinetic.sample` / `kinetic.sample_batches` only:

* the guard arms when the user's score function first RETURNS (so a check of that first output,
  e.g. its finiteness, is inside the guarded region) and disarms in the callback of the last step of
  each batch (``info["step"] == steps - 1``): the finiteness of the run may be read once, after the
  loop;
* while the user's score function and the test's callback run, the guard is paused: what the user's
  code does is the user's business (the exact scores of `kinetic.analytic` read their times on the host);
* everything else the sampler does from the first score evaluation to the last step (the solver
  steps, the score wrapper, guidance, the inpainting replacement) makes no conversion.

Known limits: on the CPU a ``.to(device)`` cannot be told from a device-to-host copy; only ``.cpu()``,
``.numpy()`` and ``.to("cpu")`` with a literal "cpu" are caught. Conversions in a branch taken for
CPU tensors only (`CPU_ONLY`: the range check of `LinearSDE` times) are not recorded.

The last test runs `kinetic.ScoreModel.score` (a network's score) with the guard NOT paused: on a GPU
its per-call coefficients are part of every step.
"""

from __future__ import annotations

import contextlib
import traceback
from pathlib import Path

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

import kinetic as kn
from kinetic.analytic import GaussianMixture
from kinetic.conditioning import MixtureClasses
from kinetic.sampling import default_grid
from kinetic.solvers import SOLVERS, FixedGridSolver, get_solver

_PACKAGE = str(Path(kn.__file__).resolve().parent)

#: Tensor methods and torch functions that hand a tensor's value to the host.
HOST_FUNCTIONS = frozenset({
    "__bool__", "__float__", "__int__", "__index__", "__complex__", "__array__", "item", "tolist", "cpu", "numpy",
    "nonzero", "argwhere", "unique", "unique_consecutive", "masked_select", "equal", "allclose",
})
#: aten ops that read device memory on the host (or whose output size depends on the values).
HOST_OPS = frozenset({
    "_local_scalar_dense", "is_nonzero", "nonzero", "nonzero_static", "masked_select", "_unique", "_unique2",
    "unique_dim", "unique_consecutive", "equal", "repeat_interleave",
})


#: Functions whose conversions happen only for CPU tensors (a branch on ``t.device.type == "cpu"``), so
#: they cost no sync on a GPU: not recorded.
CPU_ONLY = frozenset({"_check_t"})


@pytest.fixture(autouse=True)
def device_path(monkeypatch):
    """Every test here runs the device path of `LinearSDE`'s covariances (`kinetic.sde.HOST_SUBSETS`
    off): on a GPU the accurate fallbacks are selected with torch.where, never by reading a mask."""
    import kinetic.sde

    monkeypatch.setattr(kinetic.sde, "HOST_SUBSETS", False)


def _where() -> str:
    """The innermost frame inside the kinetic package: "kinetic/solvers/base.py:69 (check_finite_score)"."""
    for fr in reversed(traceback.extract_stack()[:-3]):
        if fr.filename.startswith(_PACKAGE):
            rel = Path(fr.filename).resolve().relative_to(Path(_PACKAGE).parent)
            return f"{rel}:{fr.lineno} ({fr.name})"
    return "outside kinetic"


class HostSyncGuard:
    """Records every tensor-to-host conversion made while armed and not paused.

    ``with guard: ...`` installs the modes (nothing is recorded until `arm`); ``caught`` is the
    list of "<what> at <file:line (function)>" strings."""

    def __init__(self):
        self.armed = False
        self.paused = 0
        self.arms = 0
        self.caught: list[str] = []
        self._stack = contextlib.ExitStack()

    def record(self, what: str) -> None:
        if self.armed and not self.paused:
            where = _where()
            if not where.endswith(tuple(f"({name})" for name in CPU_ONLY)):
                self.caught.append(f"{what} at {where}")

    def arm(self) -> None:
        if not self.armed:
            self.arms += 1
        self.armed = True

    def disarm(self) -> None:
        self.armed = False

    @contextlib.contextmanager
    def pause(self):
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1

    def __enter__(self):
        self._stack.enter_context(_FunctionGuard(self))
        self._stack.enter_context(_DispatchGuard(self))
        return self

    def __exit__(self, *exc):
        self.disarm()
        return self._stack.__exit__(*exc)


class _FunctionGuard(TorchFunctionMode):
    def __init__(self, guard: HostSyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in HOST_FUNCTIONS:
            self.guard.record(f"Tensor.{name}")
        elif name == "to" and any(isinstance(a, str) and a.startswith("cpu") for a in (*args[1:], kwargs.get("device"))):
            self.guard.record("Tensor.to('cpu')")
        return func(*args, **kwargs)


class _DispatchGuard(TorchDispatchMode):
    def __init__(self, guard: HostSyncGuard):
        super().__init__()
        self.guard = guard

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        op = func.overloadpacket.__name__
        if op in HOST_OPS:
            self.guard.record(f"aten.{op}")
        elif op in ("index", "index_put", "index_put_", "_index_put_impl_"):
            idx = args[1] if len(args) > 1 else kwargs.get("indices", ())
            if any(isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in idx or ()):
                self.guard.record(f"aten.{op} with a boolean mask")
        return func(*args, **kwargs)


class GuardedScore:
    """The user's score (conditional or not) with the guard paused inside it; its first return arms
    the guard. Carries ``num_classes`` for a conditional score."""

    def __init__(self, fn, guard: HostSyncGuard):
        self.fn, self.guard = fn, guard
        self.calls = 0
        if hasattr(fn, "num_classes"):
            self.num_classes = fn.num_classes

    def __call__(self, *args):
        with self.guard.pause():
            s = self.fn(*args)
        self.calls += 1
        self.guard.arm()
        return s


def guarded_run(sample, sde, score_fn, shape, steps, **kwargs):
    """``sample(sde, score, shape, steps=steps, callback=..., **kwargs)`` under a `HostSyncGuard`
    armed from the first score evaluation to the last step's callback of every batch; returns
    (output, guard, batches disarmed)."""
    guard = HostSyncGuard()
    score = GuardedScore(score_fn, guard)
    ends = []

    def callback(info):
        with guard.pause():
            if info["step"] == steps - 1:
                ends.append(info["z"].shape[0])
        if info["step"] == steps - 1:
            guard.disarm()

    with guard:
        out = sample(sde, score, shape, steps=steps, callback=callback, **kwargs)
        if not isinstance(out, torch.Tensor):  # sample_batches: a generator
            out = torch.cat(list(out))
    assert score.calls > 0 and guard.arms == len(ends) > 0, (score.calls, guard.arms, ends)
    return out, guard, ends


def assert_sync_free(guard: HostSyncGuard) -> None:
    assert not guard.caught, "host synchronisation inside the sampler loop:\n  " + "\n  ".join(
        dict.fromkeys(guard.caught))  # each site once, in order


# ---------------------------------------------------------------------- the guard itself
def _conversions(x: torch.Tensor) -> dict:
    m = x > 0
    return {
        "__bool__": lambda: bool(x.sum() > 0), "if": lambda: 1 if (x > 0).all() else 0, "item": lambda: x[0].item(),
        "float": lambda: float(x[0]), "int": lambda: int(x[0]), "index": lambda: [1, 2, 3][torch.tensor(1)],
        "format": lambda: f"{x[0]:.3f}", "tolist": lambda: x.tolist(), "cpu": lambda: x.cpu(),
        "numpy": lambda: x.numpy(), "to cpu": lambda: x.to("cpu"), "nonzero": lambda: x.nonzero(),
        "where(cond)": lambda: torch.where(m), "mask index": lambda: x[m],
        "mask assign": lambda: x.clone().__setitem__(m, 0.0), "masked_select": lambda: x.masked_select(m),
        "unique": lambda: torch.unique(x), "equal": lambda: torch.equal(x, x), "allclose": lambda: torch.allclose(x, x),
        "repeat_interleave": lambda: torch.repeat_interleave(x, torch.ones(3, dtype=torch.int64)),
    }


def test_guard_catches_every_conversion_when_armed_and_none_when_paused_or_disarmed():
    x = torch.randn(3)
    for name, fn in _conversions(x).items():
        guard = HostSyncGuard()
        with guard:
            fn()  # installed, not armed
            guard.arm()
            with guard.pause():
                fn()
            assert not guard.caught, (name, guard.caught)
            fn()
            n = len(guard.caught)
            guard.disarm()
            fn()
        assert n >= 1 and len(guard.caught) == n, (name, guard.caught)
    # device-side work is not a conversion
    guard = HostSyncGuard()
    with guard:
        guard.arm()
        y = torch.where(x > 0, x, -x).exp().cumsum(0) @ x
        ok = torch.isfinite(y).all() & torch.isfinite(x).all()  # accumulated on the device
        x.to(torch.float64)
        _ = x.shape[0], x.dtype, x.device
    assert not guard.caught, guard.caught
    assert bool(ok)  # read once, after the guard


def test_guard_names_the_kinetic_line_that_converts():
    """sde.transition on the CPU converts in kinetic.linalg (the squarings of the matrix exponential) and in the
    range check of its times, which runs for CPU times only and so is not recorded."""
    import re

    sde = kn.hold()
    guard = HostSyncGuard()
    with guard:
        guard.arm()
        sde.transition(torch.tensor([0.1]), torch.tensor([0.5]))
    assert guard.caught and all(re.search(r" at kinetic/linalg\.py:\d+ \(\w+\)$", c) for c in guard.caught), guard.caught
    assert not any("_check_t" in c for c in guard.caught)


# ---------------------------------------------------------------------- every fixed-grid solver
SDES = {"vp": kn.vp, "cld": kn.cld, "hold": kn.hold, "psld": kn.psld}
CONFIGS = {
    "em": ("em", {}), "em-pf": ("em", {"probability_flow": True}), "pc": ("pc", {}), "sscs": ("sscs", {}),
    "lie_trotter": ("lie_trotter", {}), "ei": ("ei", {}), "ei-kblock": ("ei", {"gls_steps": 0}),
    "ei-eta1": ("ei", {"eta": 1.0}), "gls": ("gls", {}),
}
STEPS = 4  # ei runs the k-block flow on VP (more than 3 steps) and the gls plan on CLD, HOLD, PSLD
MIXTURE = GaussianMixture([0.5, 0.3, 0.2], [[-1.0, 0.0], [1.0, 0.5], [0.0, -1.0]], [0.3, 0.2, 0.4])


def _supported(solver: str, options: dict, sde_name: str) -> bool:
    sde = SDES[sde_name]()
    slv = get_solver(solver, **options)
    try:
        slv.check(sde, kn.time_grid(sde, STEPS, 1e-3, default_grid(slv)))
    except ValueError:
        return False
    return True


CASES = [(c, s) for c in CONFIGS for s in SDES if _supported(*CONFIGS[c], s)]


def test_the_cases_cover_every_fixed_grid_solver_and_sde():
    fixed = {name for name, cls in SOLVERS.items() if issubclass(cls, FixedGridSolver)}
    assert fixed == {CONFIGS[c][0] for c, _ in CASES}, fixed
    assert set(SDES) == {s for _, s in CASES}
    assert len(CASES) >= 30


@pytest.mark.parametrize("config,sde_name", CASES)
def test_sampler_loop_makes_no_host_sync(config, sde_name):
    solver, options = CONFIGS[config]
    sde = SDES[sde_name]()
    x, guard, _ = guarded_run(kn.sample, sde, MIXTURE.score_fn(sde), (6, 2), STEPS, solver=solver,
                              generator=torch.Generator().manual_seed(0), **options)
    assert x.shape == (6, 2) and torch.isfinite(x).all()
    assert_sync_free(guard)


# ---------------------------------------------------------------------- guidance, inpainting, batching
def _classes() -> MixtureClasses:
    return MixtureClasses(MIXTURE, [0, 1, 1])


@pytest.mark.parametrize("solver,options,sde_name", [
    ("ei", {}, "hold"), ("ei", {"gls_steps": 0}, "cld"), ("em", {}, "psld"), ("sscs", {}, "cld"),
    ("pc", {}, "vp"), ("gls", {}, "vp"), ("lie_trotter", {}, "hold"),
])
@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_guided_sampling_makes_no_host_sync(solver, options, sde_name, guidance):
    sde = SDES[sde_name]()
    labels = torch.tensor([0, 1, 0, 1, 1, 0])
    x, guard, _ = guarded_run(kn.sample, sde, _classes().score_fn(sde), (6, 2), STEPS, solver=solver, labels=labels,
                              guidance=guidance, generator=torch.Generator().manual_seed(1), **options)
    assert x.shape == (6, 2) and torch.isfinite(x).all()
    assert_sync_free(guard)


@pytest.mark.parametrize("solver,options,sde_name", [
    ("ei", {}, "hold"), ("ei", {"eta": 1.0}, "cld"), ("em", {}, "psld"), ("sscs", {}, "cld"),
    ("pc", {}, "vp"), ("gls", {}, "hold"), ("lie_trotter", {}, "vp"),
])
@pytest.mark.parametrize("replacement", ["fresh", "bridge"])
def test_inpainting_makes_no_host_sync(solver, options, sde_name, replacement):
    sde = SDES[sde_name]()
    known = torch.tensor([[0.5, -1.0]]).expand(6, 2)
    mask = torch.tensor([True, False])
    x, guard, _ = guarded_run(kn.sample, sde, MIXTURE.score_fn(sde), (6, 2), STEPS, solver=solver, known=known,
                              mask=mask, replacement=replacement, generator=torch.Generator().manual_seed(2), **options)
    assert torch.equal(x[:, 0], known[:, 0].to(x.dtype)) and torch.isfinite(x).all()
    assert_sync_free(guard)


@pytest.mark.parametrize("sample", [kn.sample, kn.sample_batches], ids=["sample", "sample_batches"])
@pytest.mark.parametrize("solver,options,sde_name", [("ei", {}, "hold"), ("em", {}, "cld"), ("gls", {}, "psld")])
def test_batched_sampling_makes_no_host_sync(sample, solver, options, sde_name):
    sde = SDES[sde_name]()
    labels = torch.arange(7) % 2
    x, guard, ends = guarded_run(sample, sde, _classes().score_fn(sde), (7, 2), STEPS, solver=solver, batch_size=3,
                                 labels=labels, guidance=1.0, known=torch.zeros(7, 2), mask=torch.tensor([False, True]),
                                 generator=torch.Generator().manual_seed(3), **options)
    assert ends == [3, 3, 1] and x.shape == (7, 2) and torch.isfinite(x).all() and (x[:, 1] == 0).all()
    assert_sync_free(guard)


# ---------------------------------------------------------------------- a network's score inside the loop
class ModelScore:
    """`kinetic.ScoreModel.score` of a tiny U-Net with the guard NOT paused inside it: the library's own
    score wrapper (preconditioning, coefficients per call) is part of the loop on a GPU."""

    def __init__(self, sde, guard: HostSyncGuard):
        from kinetic.models.unet import UNet

        torch.manual_seed(0)
        net = UNet.from_preset("tiny", in_channels=sde.order, out_channels=1, resolution=8)
        self.model = kn.ScoreModel(net, sde, "x0")
        self.guard = guard

    def __call__(self, z, t):
        with torch.no_grad():
            s = self.model.score(z, t)
        self.guard.arm()
        return s


@pytest.mark.parametrize("solver,sde_name", [("ei", "hold"), ("em", "vp"), ("gls", "psld")])
def test_sampling_with_a_score_model_makes_no_host_sync(solver, sde_name):
    sde = SDES[sde_name]()
    guard = HostSyncGuard()
    score = ModelScore(sde, guard)
    steps = 3

    def callback(info):
        if info["step"] == steps - 1:
            guard.disarm()

    with guard:
        x = kn.sample(sde, score, (2, 1, 8, 8), solver=solver, steps=steps, callback=callback,
                      generator=torch.Generator().manual_seed(0))
    assert guard.arms == 1 and x.shape == (2, 1, 8, 8) and torch.isfinite(x).all()
    assert_sync_free(guard)
