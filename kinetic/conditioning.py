"""Conditional generation for any order: class labels, classifier-free guidance, and inpainting.

    x = kn.sample(sde, model.score, (64, 1, 8, 8), labels=torch.arange(64) % 10, guidance=1.0)
    x = kn.sample(sde, model.score, (16, 1, 8, 8), known=digits, mask=left_half)    # inpainting

Conventions (see docs/math.md, "Conditioning"):

* A conditional ``score_fn(z, t, labels)`` takes class labels (n,) int64 in [0, C] and returns the
  score of the noised blocks of p_t(z | y) (`LinearSDE.score_shape`); label C, the **null class**,
  gives the unconditional score grad log p_t(z). ``score_fn.num_classes`` says C (`ScoreModel.score`
  and `as_score_fn` carry it); `num_classes_of` reads it.
* Guidance w (Ho & Salimans 2022, "Classifier-Free Diffusion Guidance", Eq. 6, in score form):
  ``score = (1 + w) score(z, t, y) - w score(z, t, null)``; one batched network call on 2n rows per
  score evaluation, counted as 2 network evaluations. w = 0 is the conditional model itself (one
  call); w > 0 samples no exact law (the guided score is not the score of any diffusion's marginals).
* Inpainting by replacement (Song et al. 2021, "Score-Based Generative Modeling through SDEs",
  App. I.2), generalised to k blocks: ``known`` (n, *D) and ``mask`` (1 where a value is known,
  broadcastable to (n, *D)). After every solver step the known pixels' whole state (all k blocks)
  is redrawn from the forward kernel given their data (`Replacement`); the output's known values
  are exactly ``known``. An approximation, not exact conditional sampling (docs/math.md).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from . import linalg
from .sde import LinearSDE

__all__ = [
    "REPLACEMENT_METHODS",
    "num_classes_of",
    "check_sample_labels",
    "guided_score",
    "GuidedScore",
    "check_inpainting",
    "ReplacementPlan",
    "Replacement",
    "MixtureClasses",
]

#: How the known pixels' state is drawn at each node (docs/math.md, "Conditioning"):
#: "fresh" (default): an independent draw from the kernel N(c_t x0, Sigma_t) at every node (score_sde's
#: rule, all k blocks jointly); "bridge": from the forward kernel given x0 AND their state at the
#: previous node, so the known pixels follow one path of the forward process given x0 (the exact
#: conditional law of their path). Measured on Gaussian data (docs/math.md), "fresh" is closer to the
#: exact conditional law at every order and NFE, hence the default.
REPLACEMENT_METHODS = ("fresh", "bridge")
DEFAULT_REPLACEMENT = "fresh"


# ---------------------------------------------------------------------- labels and guidance
def num_classes_of(score_fn) -> int | None:
    """The classes C of a conditional ``score_fn`` (its null label is C): its ``num_classes``
    attribute, or that of the `ScoreModel` a bound ``score`` method belongs to; 0 for an
    unconditional model; None when the function does not say."""
    for obj in (score_fn, getattr(score_fn, "__self__", None), getattr(score_fn, "model", None)):
        v = getattr(obj, "num_classes", None) if obj is not None else None
        if v is not None and not isinstance(v, bool) and int(v) == v and v >= 0:
            return int(v)
    return None


def check_sample_labels(score_fn, labels, n: int, guidance, device=None) -> tuple[Tensor | None, float, int]:
    """Check the conditioning arguments of `kinetic.sample`: returns (labels (n,) int64 or None,
    guidance w as a float, num_classes C). One clear ValueError for labels given to an
    unconditional score, labels out of [0, C] or of the wrong shape, and guidance without labels or
    with an unconditional model."""
    try:
        w = float(guidance)
    except (TypeError, ValueError):
        raise TypeError(f"guidance must be a number >= 0, got {guidance!r}") from None
    if isinstance(guidance, bool) or not math.isfinite(w) or w < 0:
        raise ValueError(f"guidance must be a finite number >= 0 (0: the conditional model), got {guidance!r}")
    C = num_classes_of(score_fn)
    if labels is None:
        if w != 0:
            if C == 0:
                raise ValueError(
                    "guidance needs a conditional model (trained with class labels and label dropout); this score_fn "
                    "is unconditional"
                )
            raise ValueError("guidance needs labels: give labels= (the class of each sample)")
        return None, w, C or 0
    if C is None:
        raise ValueError(
            "labels were given but score_fn does not say how many classes it has: give it a num_classes attribute "
            "(its null label; ScoreModel.score and kinetic.as_score_fn carry it)"
        )
    if C == 0:
        raise ValueError(
            "labels were given but the model is unconditional (its network was built without classes); train with "
            "--conditional (TrainConfig(conditional=True)) for class labels"
        )
    from .models import check_labels  # kinetic.models: the repository's models/ folder

    y = check_labels(labels, n, C, allow_null=True, check_range=True)
    if w != 0 and bool((y == C).any()):
        raise ValueError(f"guidance needs a class label for every sample; labels hold the null class {C}")
    return y.to(device) if device is not None else y, w, C


class GuidedScore:
    """``score_fn(z, t)`` for `kinetic.sample` from a conditional ``score_fn(z, t, labels)``:

    w = 0: ``score_fn(z, t, labels)`` (1 network evaluation per call);
    w > 0: ``(1 + w) score_fn(z, t, labels) - w score_fn(z, t, null)``, the two branches in ONE call
    on the 2n rows ``cat([z, z])`` with labels ``cat([labels, null])`` (2 network evaluations per
    call: ``network_calls``). ``labels`` (n,) int64 on z's device.
    """

    def __init__(self, score_fn: Callable, labels: Tensor, guidance: float, null_label: int):
        self.fn = score_fn
        self.labels = labels
        self.guidance = float(guidance)
        self.null_label = int(null_label)
        self.network_calls = 1 if self.guidance == 0 else 2
        self._both = None

    def __call__(self, z: Tensor, t: Tensor) -> Tensor:
        y = self.labels.to(z.device)
        if self.guidance == 0:
            return self.fn(z, t, y)
        n = z.shape[0]
        if self._both is None or self._both.shape[0] != 2 * n or self._both.device != z.device:
            self._both = torch.cat([y, torch.full_like(y, self.null_label)])
        t = torch.as_tensor(t, device=z.device)
        tt = torch.cat([t, t]) if t.dim() == 1 and t.shape[0] == n else t
        s = self.fn(torch.cat([z, z]), tt, self._both)
        if not isinstance(s, Tensor) or s.shape[:1] != (2 * n,):
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"score_fn returned {got} for the 2 x {n} rows of a guided call; expected {2 * n} rows")
        cond, uncond = s[:n], s[n:]
        return (1.0 + self.guidance) * cond - self.guidance * uncond


def guided_score(score_fn: Callable, labels, guidance: float = 0.0, num_classes: int | None = None) -> GuidedScore:
    """`GuidedScore` for ``labels`` (n,) and guidance ``guidance``; ``num_classes`` defaults to
    `num_classes_of(score_fn)`."""
    C = num_classes if num_classes is not None else num_classes_of(score_fn)
    probe = score_fn if num_classes is None else _WithClasses(score_fn, C)
    y, w, C = check_sample_labels(probe, labels, int(torch.as_tensor(labels).reshape(-1).shape[0]), guidance)
    if y is None:
        raise ValueError("guided_score needs labels")
    return GuidedScore(score_fn, y, w, C)


class _WithClasses:
    def __init__(self, fn, C):
        self.fn, self.num_classes = fn, C

    def __call__(self, *a):
        return self.fn(*a)


# ---------------------------------------------------------------------- inpainting by replacement
def check_inpainting(known, mask, shape: tuple[int, ...], dtype: torch.dtype, device=None) -> tuple[Tensor, Tensor]:
    """Check ``known`` / ``mask`` against the output ``shape`` (n, *D): returns (x0 (n, *D) in
    ``dtype`` with zeros where unknown, mask (n, *D) bool). ``mask`` is 1 / True where a value is
    known and may have any shape that broadcasts to (n, *D) (e.g. (*D,) for one mask for all);
    ``known`` is shaped like the output (or broadcasts to it) and must be finite where known.
    One clear ValueError otherwise."""
    shape = tuple(int(s) for s in shape)
    if known is None or mask is None:
        raise ValueError("inpainting needs both known= (values shaped like the output) and mask= (1 where known)")
    if not isinstance(known, Tensor):
        try:
            known = torch.as_tensor(known)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"known must be a tensor shaped like the output {shape}, got {type(known).__name__}") from None
    if not isinstance(mask, Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"mask must be a tensor broadcastable to the output {shape}, got {type(mask).__name__}") from None
    try:
        m = torch.broadcast_to(mask, shape)
    except RuntimeError:
        raise ValueError(
            f"mask has shape {tuple(mask.shape)}, which does not broadcast to the output shape {shape} (n, *data_shape)"
        ) from None
    try:
        x = torch.broadcast_to(known, shape)
    except RuntimeError:
        raise ValueError(f"known has shape {tuple(known.shape)}; it must be shaped like the output {shape}") from None
    if m.dtype != torch.bool:
        if m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("mask must hold only 0 and 1 (or False / True): 1 where a value is known")
        m = m != 0
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)):
        raise ValueError(f"known must hold real numbers, got dtype {x.dtype}")
    x = x.to(device=device, dtype=dtype)
    m = m.to(device)
    if not bool(torch.isfinite(x[m]).all()):
        raise ValueError("known has non-finite values (nan/inf) where mask is 1")
    return torch.where(m, x, torch.zeros((), dtype=dtype, device=x.device)), m.contiguous()


class ReplacementPlan:
    """Float64 coefficients of the replacement kernel on a grid ts (N + 1 nodes, decreasing), for
    any `LinearSDE`; computed once and shared by every batch.

    "fresh": at node j, z_K ~ N(c_j x0, Sigma_j) per known pixel: ``c`` (N+1, k), ``chol`` L_j.
    "bridge": from node i to i + 1 (t' = t_{i+1} < t = t_i), the forward kernel given x0 and the
    known state z at t_i: z' | z, x0 ~ N(c' x0 + K_i (z - c x0), R_i R_i^T), with the joint factor
    of (z_t, z_t') = (c x0, c' x0) + [[Phi L', L_Q], [L', 0]] (e', e) (z_t = Phi(t', t) z_t' + L_Q e,
    L' L'^T = Sigma_t') reduced by `linalg.tria` to [[R22, 0], [R12, R11]]: K = R12 R22^-1 and
    R = R11 (square-root form: exact where Sigma is nearly singular). ``gain`` (N, k, k), ``step_chol``
    (N, k, k).
    """

    def __init__(self, sde: LinearSDE, ts: Tensor, method: str = DEFAULT_REPLACEMENT):
        if method not in REPLACEMENT_METHODS:
            raise ValueError(f"replacement must be one of {', '.join(REPLACEMENT_METHODS)}, got {method!r}")
        ts = torch.as_tensor(ts, dtype=torch.float64).cpu()
        self.method = method
        self.order = sde.order
        co = sde.coefficients(ts)
        self.c = co.c.clone()  # (N+1, k)
        self.chol = co.chol.clone()  # (N+1, k, k)
        self.t = ts
        if method == "bridge":
            G = sde.diffusion_matrix
            F = G[:, G.abs().sum(0) > 0]
            dtau = (co.tau[:-1] - co.tau[1:]).clamp_min(0.0)  # tau_t - tau_t' >= 0
            phi, Lq = linalg.transition_and_noise_factor(sde.drift_matrix, F, dtau)  # z_t = phi z_t' + Lq e
            Lp = co.chol[1:]  # L_t'
            k = sde.order
            top = torch.cat([phi @ Lp, Lq], dim=-1)  # rows of z_t
            bottom = torch.cat([Lp, torch.zeros_like(Lp)], dim=-1)  # rows of z_t'
            R = linalg.tria(torch.cat([top, bottom], dim=-2))  # (N, 2k, 2k) lower
            R22, R12, R11 = R[:, :k, :k], R[:, k:, :k], R[:, k:, k:]
            # K = R12 R22^-1; R22 can be singular only where z_t carries no noise (never for t > 0)
            self.gain = torch.linalg.solve_triangular(R22.transpose(-1, -2), R12.transpose(-1, -2), upper=True).transpose(-1, -2)
            self.step_chol = R11

    def to(self, device, dtype) -> dict:
        out = {"c": self.c, "chol": self.chol}
        if self.method == "bridge":
            out.update(gain=self.gain, step_chol=self.step_chol)
        return {key: v.to(device=device, dtype=dtype) for key, v in out.items()}


class Replacement:
    """The replacement transform of one batch: `initial` at T, then ``transform(z, i, t)`` after
    step i (z at ts[i + 1]), then `finish` on the data block. z (n, k, *D); x0 (n, *D) (zeros where
    unknown) and mask (n, *D) bool from `check_inpainting`; ``noise(shape, dtype, device)`` draws
    the standard normal noise (the sampler's generator)."""

    def __init__(self, plan: ReplacementPlan, x0: Tensor, mask: Tensor, noise: Callable):
        self.plan = plan
        self.x0 = x0
        self.mask = mask
        self.noise = noise
        self.p = plan.to(x0.device, x0.dtype)
        self.prev: Tensor | None = None  # the known pixels' state at the last node (bridge)
        n = x0.shape[0]
        self._xf = x0.reshape(n, 1, -1)
        self._mf = mask.reshape(n, 1, -1)

    def _draw(self, j: int, like: Tensor) -> Tensor:
        """z_K ~ N(c_j x0, Sigma_j), (n, k, d)."""
        eps = self.noise(tuple(like.shape), like.dtype, like.device)
        return self.p["c"][j][None, :, None] * self._xf + torch.einsum("ij,bjd->bid", self.p["chol"][j], eps)

    def _set(self, z: Tensor, zk: Tensor) -> Tensor:
        zf = z.reshape(z.shape[0], z.shape[1], -1)
        return torch.where(self._mf, zk, zf).reshape(z.shape)

    def initial(self, z: Tensor) -> Tensor:
        """The prior draw at T with the known pixels' state from N(c_T x0, Sigma_T)."""
        zk = self._draw(0, z.reshape(z.shape[0], z.shape[1], -1))
        self.prev = zk
        return self._set(z, zk)

    def __call__(self, z: Tensor, i: int, t: float) -> Tensor:
        zf = z.reshape(z.shape[0], z.shape[1], -1)
        if self.plan.method == "fresh" or self.prev is None:
            zk = self._draw(i + 1, zf)
        else:
            c = self.p["c"]
            eps = self.noise(tuple(zf.shape), zf.dtype, zf.device)
            resid = self.prev - c[i][None, :, None] * self._xf
            zk = (c[i + 1][None, :, None] * self._xf + torch.einsum("ij,bjd->bid", self.p["gain"][i], resid)
                  + torch.einsum("ij,bjd->bid", self.p["step_chol"][i], eps))
        self.prev = zk
        return self._set(z, zk)

    def finish(self, x: Tensor) -> Tensor:
        """The data block (n, *D) with the known values put back exactly (the kernel at t = 0)."""
        return torch.where(self.mask, self.x0.to(x.dtype), x)


# ---------------------------------------------------------------------- exact class scores
class MixtureClasses:
    """Exact class-conditional scores of a Gaussian mixture whose classes are sets of components.

    ``mixture`` a `kinetic.analytic.GaussianMixture` (its weights give the class priors);
    ``classes`` (M,) the class of each component, in [0, C). ``score_fn(sde)`` returns the exact
    conditional ``score_fn(z, t, labels)`` with label C the null class (the whole mixture), for
    `kinetic.sample` with ``labels=`` and ``guidance=``. `posterior(x)` is p(y | x) under the data
    law, (n, C); `sub_mixture(y)` the law of class y.
    """

    def __init__(self, mixture, classes):
        from .analytic import GaussianMixture

        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a kinetic.analytic.GaussianMixture, got {type(mixture).__name__}")
        cls = torch.as_tensor(classes, dtype=torch.int64).reshape(-1)
        M = mixture.means.shape[0]
        if cls.shape[0] != M or int(cls.min()) < 0:
            raise ValueError(f"classes must give a class >= 0 for each of the {M} components")
        self.mixture = mixture
        self.classes = cls
        self.num_classes = int(cls.max()) + 1
        if any(int((cls == y).sum()) == 0 for y in range(self.num_classes)):
            raise ValueError("every class in 0..C-1 needs at least one component")
        self._subs = [self.sub_mixture(y) for y in range(self.num_classes)]

    def sub_mixture(self, y: int):
        from .analytic import GaussianMixture

        idx = (self.classes == int(y)).nonzero().reshape(-1)
        m = self.mixture
        return GaussianMixture(m.weights[idx], m.means[idx], m.std[idx])

    @property
    def class_weights(self) -> Tensor:
        """(C,) prior class probabilities."""
        return torch.stack([self.mixture.weights[self.classes == y].sum() for y in range(self.num_classes)])

    def posterior(self, x: Tensor) -> Tensor:
        """p(y | x) under the data law: (n, d) -> (n, C) float64."""
        logs = torch.stack([s.log_prob(x) for s in self._subs], dim=1) + torch.log(self.class_weights)
        return torch.softmax(logs, dim=1)

    def score_fn(self, sde: LinearSDE) -> Callable:
        full = self.mixture.score_fn(sde)
        subs = [s.score_fn(sde) for s in self._subs]
        C = self.num_classes

        def score(z: Tensor, t: Tensor, labels: Tensor | None = None) -> Tensor:
            if labels is None:
                return full(z, t)
            labels = torch.as_tensor(labels, device=z.device).reshape(-1)
            t = torch.as_tensor(t, device=z.device)
            tt = t.expand(z.shape[0]) if t.dim() == 0 or t.numel() == 1 else t
            out = None
            for y in range(C + 1):
                rows = (labels == y).nonzero().reshape(-1)
                if rows.numel() == 0:
                    continue
                s = (full if y == C else subs[y])(z[rows], tt[rows])
                if out is None:
                    out = torch.empty((z.shape[0], *s.shape[1:]), dtype=s.dtype, device=s.device)
                out[rows] = s
            return out

        score.num_classes = C  # type: ignore[attr-defined]
        return score
