"""Score wrappers: the one place where a network and a `LinearSDE` meet.

A network ``net(h, t)`` sees the full state z (B, k, *D) reshaped to (B, k*D) for vectors or
(B, k*C, H, W) for images (the k blocks stacked on the first data axis) and the time t (B,).
Its output is turned into the score of the NOISED blocks N (the only score the reverse dynamics
need; m = len(N)) by one of five parameterisations. With z = c x0 + (L_t kron I) eps, the target
score is -K_t eps (K_t = (L_t^-1)[:, N]^T) and ``eps* = R_t^-1 K_t eps`` is its whitened form, a
standard normal (m, *D) with R_t = chol((Sigma^-1)_NN); for one noised block, the last, eps* is
eps_k and R_t = 1 / L_t[k, k] (see `kinetic.coefficients` and docs/math.md):

* ``"eps"``:   the net predicts eps* (m blocks); score = -R_t eps_hat (CLD paper Eq. 9, HOLD's
  block-coordinate target).
* ``"score"``: the net predicts the score directly (m blocks).
* ``"mixed"``: the net predicts a residual on top of the analytic score of the Gaussian part, the
  score z would have if the data were N(0, data_std^2 I): score = -(S_t^-1 z)_N - R_t net with
  S_t = data_std^2 c c^T + Sigma_t, c = Phi(0, t) e_1 (for CLD, CLD's mixed score).
* ``"x0"``:    an EDM-style denoiser, generalised to any order. E[x0 | z] depends on z only through
  the GLS statistic x_tilde = c^T Sigma^-1 z / (c^T Sigma^-1 c) = x0 + sigma_tilde n,
  sigma_tilde^2 = 1 / (c^T Sigma^-1 c). The net sees x_tilde * c_in in block 0 (and the other blocks
  scaled) and predicts F, shaped like the data whatever m is; x0_hat = c_skip x_tilde + c_out F
  (EDM's c_skip, c_out, c_in with sigma_data = data_std), and every score follows from it exactly:
  score = -(Sigma^-1 (z - c x0_hat))_N. The linear algebra runs in float64.
* ``"denoiser"``: the same denoiser, seeing ONLY the data-shaped c_in x_tilde and EDM's
  c_noise = ln(sigma_tilde) / 4 instead of (z, t): the network is a VE denoiser
  (`kinetic.denoiser.EDMDenoiser`), the same size for every order, and valid for every SDE
  (``model.denoiser().score_fn(other_sde)``; docs/math.md, "One denoiser for every SDE").

``input_scaling`` (default on) divides each block of z by its standard deviation under the same
Gaussian reference, sqrt(diag S_t), before the network sees it, so inputs are O(1) at every t
(this matters for VE, whose states reach sigma_max).

Class labels: a network built with ``num_classes`` = C > 0 takes ``net(h, t, labels)``; every
prediction here then takes ``labels`` (B,) int64 in [0, C], where C is the null class (the
unconditional score, which label dropout trains in the same network); ``labels=None`` means the
null class. A conditional ``score_fn`` for `kinetic.sample` is ``score_fn(z, t, labels)``
(see `kinetic.conditioning`). An unconditional network (C = 0) refuses labels.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .coefficients import Coefficients
from .denoiser import Denoiser, EDMDenoiser, denoiser_score
from .sde import LinearSDE

__all__ = [
    "ScoreModel",
    "as_score_fn",
    "preconditioning",
    "output_blocks",
    "input_blocks",
    "PARAMETERIZATIONS",
    "network_input",
    "unwrap_network",
]

PARAMETERIZATIONS = ("eps", "score", "mixed", "x0", "denoiser")

ScoreFn = Callable[[Tensor, Tensor], Tensor]


def network_input(z: Tensor) -> Tensor:
    """(B, k, *D) -> (B, k*D[0], *D[1:]): (B, k*d) for vectors, (B, k*C, H, W) for images."""
    return z.reshape(z.shape[0], z.shape[1] * z.shape[2], *z.shape[3:])


def unwrap_network(net: nn.Module) -> nn.Module:
    """Strip DDP (``.module``), torch.compile (``._orig_mod``) and kinetic's autocast wrappers."""
    while True:
        if hasattr(net, "_orig_mod") and isinstance(net._orig_mod, nn.Module):
            net = net._orig_mod
        elif isinstance(net, nn.parallel.DistributedDataParallel):
            net = net.module
        elif getattr(net, "is_kinetic_wrapper", False):
            net = net.inner
        else:
            return net


def _network_classes(net: nn.Module) -> int:
    """The ``num_classes`` attribute of a network or of the network inside its DDP / compile /
    autocast wrappers (0 when none says)."""
    for _ in range(8):
        v = getattr(net, "num_classes", None)
        if isinstance(v, int) and not isinstance(v, bool):
            return v
        inner = getattr(net, "_orig_mod", None) or getattr(net, "module", None) or getattr(net, "inner", None)
        if not isinstance(inner, nn.Module):
            return 0
        net = inner
    return 0


def _param_dtype(net: nn.Module) -> torch.dtype | None:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class ScoreModel(nn.Module):
    """Wrap ``net(h, t)`` into a whitened-noise predictor and a noised-block score.

    Args:
        net: a plain network (or its DDP / compiled wrapper); its input is `network_input(z)`, its
            output has `network_output_shape` (the data shape, with m times the first axis for the
            "eps", "score" and "mixed" parameterisations of an SDE with m noised blocks).
        sde: the `LinearSDE` whose marginals define L_t (and S_t for "mixed" / input scaling).
        parameterization: "eps" (default), "score", "mixed", "x0" or "denoiser" (see the module docstring;
            "x0" is what `kinetic.training` uses by default: it trains fastest and is stable).
        data_std: the std of the Gaussian reference used by "mixed", "x0" and input scaling.
        input_scaling: divide each block by sqrt(diag S_t) before the network.
        num_classes: the classes the network is conditioned on; None (default) reads the
            network's ``num_classes`` attribute (0 when it has none: unconditional).

    ``forward(z, t, labels=None)`` (calling the module): the predicted whitened noise eps* of the
    noised blocks. ``score(z, t, labels=None)``: the predicted score of the noised blocks (a
    ``score_fn`` for the samplers).
    Both have `LinearSDE.score_shape`: (B, *D) for one noised block, (B, m, *D) for several.
    ``labels`` (B,) int64 in [0, num_classes]; ``num_classes`` (`null_label`) and None are the
    unconditional branch of a conditional model; an unconditional model refuses labels.
    The module owns no parameters beyond ``net``'s; ``state_dict`` keys are ``net.*``.
    """

    def __init__(
        self,
        net: nn.Module,
        sde: LinearSDE,
        parameterization: str = "eps",
        *,
        data_std: float = 1.0,
        input_scaling: bool = True,
        num_classes: int | None = None,
    ):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        data_std = float(data_std)
        if not data_std > 0 or data_std == float("inf"):
            raise ValueError(f"data_std must be a finite positive number, got {data_std}")
        self.net = net
        self.sde = sde
        self.parameterization = parameterization
        self.data_std = data_std
        self.input_scaling = bool(input_scaling)
        if num_classes is None:
            num_classes = _network_classes(net)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 0:
            raise ValueError(f"num_classes must be an integer >= 0 (0: unconditional), got {num_classes!r}")
        self.num_classes = int(num_classes)

    @property
    def conditional(self) -> bool:
        """True when the network takes class labels (``num_classes`` > 0)."""
        return self.num_classes > 0

    @property
    def null_label(self) -> int:
        """The label of the unconditional branch (``num_classes``); ValueError for an unconditional model."""
        if not self.num_classes:
            raise ValueError("this model is unconditional (its network was built without classes): it has no null label")
        return self.num_classes

    def check_labels(self, labels, batch: int) -> Tensor | None:
        """``labels`` as int64 (batch,) in [0, num_classes] (range checked on every device), or None;
        a clear ValueError for labels given to an unconditional model, a wrong shape or range."""
        if labels is None:
            return None
        if not self.num_classes:
            raise ValueError(
                "labels were given to an unconditional model (its network was built without classes); train with "
                "--conditional (TrainConfig(conditional=True)) for class labels"
            )
        from .models import check_labels  # kinetic.models: the repository's models/ folder

        return check_labels(labels, batch, self.num_classes, allow_null=True, check_range=True)

    @property
    def in_blocks(self) -> int:
        """Data-shaped blocks the network sees: 1 for "denoiser", the order k otherwise."""
        return input_blocks(self.sde, self.parameterization)

    @property
    def out_blocks(self) -> int:
        """Data-shaped blocks the network outputs: 1 for "x0", len(noised_blocks) otherwise."""
        return output_blocks(self.sde, self.parameterization)

    def network_output_shape(self, batch: int, data_shape) -> tuple[int, ...]:
        """(B, out_blocks * D[0], *D[1:]): the data shape for one block."""
        d = tuple(int(s) for s in data_shape)
        return (int(batch), self.out_blocks * d[0], *d[1:])

    # ------------------------------------------------------------------ coefficients
    def _batch_t(self, t, z: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=z.device)
        if not t.is_floating_point():
            t = t.to(torch.float64)
        if t.numel() == 1:
            t = t.reshape(1).expand(z.shape[0])
        if t.shape != (z.shape[0],):
            raise ValueError(f"t must be a scalar or have shape ({z.shape[0]},) to match z, got {tuple(t.shape)}")
        return t

    def preconditioning(self, co: Coefficients) -> dict[str, Tensor]:
        """float64 per-time coefficients from ``sde.coefficients(t)``: see `preconditioning`."""
        return preconditioning(co, self.data_std, parameterization=self.parameterization, input_scaling=self.input_scaling)

    def coefficients(self, t: Tensor) -> dict[str, Tensor]:
        """float64 per-time preconditioning coefficients for t (B,)."""
        return self.preconditioning(self.sde.coefficients(torch.as_tensor(t).to(torch.float64).reshape(-1)))

    # ------------------------------------------------------------------ prediction
    def _predict(
        self, z: Tensor, t, coefficients: Coefficients | None = None, labels: Tensor | None = None,
        *, checked_labels: bool = False,
    ) -> tuple[Tensor, Tensor]:
        """(eps_hat, score_hat), both `LinearSDE.score_shape` in z's dtype, from one network call.

        ``coefficients``: ``sde.coefficients(t)`` if already computed for these t (B,).
        ``labels``: (B,) int64 class labels (None: the null class of a conditional model);
        ``checked_labels``: the caller has checked them (no range check, so no device sync).
        """
        self.sde.check_state(z)
        t = self._batch_t(t, z)
        if labels is not None and not checked_labels:
            labels = self.check_labels(labels, z.shape[0])
        elif labels is not None and not self.num_classes:
            self.check_labels(labels, z.shape[0])
        co = coefficients if coefficients is not None else self.sde.coefficients(t.to(torch.float64))
        pre = self.preconditioning(co)
        B, k = z.shape[0], z.shape[1]
        score_shape = self.sde.score_shape(B, z.shape[2:])
        dtype = _param_dtype(self.net) or z.dtype
        z64 = z.to(torch.float64).reshape(B, k, -1)
        h = z64 * pre["c_in"][:, :, None]
        if self.parameterization == "denoiser":
            return self._predict_denoiser(z, co, labels)
        if self.parameterization == "x0":
            x_tilde = torch.einsum("bj,bjd->bd", pre["w"], z64)
            h[:, 0] = x_tilde * pre["c_in"][:, :1]
        inp = network_input(h.reshape(z.shape)).to(dtype)
        if self.num_classes:
            if labels is None:
                labels = torch.full((B,), self.num_classes, dtype=torch.int64, device=z.device)
            out = self.net(inp, t.to(dtype), labels.to(z.device))
        else:
            out = self.net(inp, t.to(dtype))
        expected = self.network_output_shape(B, z.shape[2:])
        if tuple(out.shape) != expected:
            what = "the data shape" if self.out_blocks == 1 else f"{self.out_blocks} data-shaped blocks on axis 1"
            raise ValueError(f"network output must have {what} {expected}, got {tuple(out.shape)}")
        if self.parameterization in ("eps", "score") and co.noised == (k - 1,):
            # one noised block, the last: R_t = 1 / L_kk (the historical, exact formulas)
            l_kk = co.chol[:, -1, -1].reshape(-1, *([1] * (z.dim() - 2))).to(z.dtype)
            if self.parameterization == "eps":
                eps = out.to(z.dtype)
                return eps, -eps / l_kk
            score = out.to(z.dtype)
            return -l_kk * score, score
        f = out.to(torch.float64).reshape(B, self.out_blocks, -1)
        R = co.score_scale.to(z.device)  # (B, m, m)
        if self.parameterization == "eps":
            eps = f
            score = -R @ eps
        elif self.parameterization == "score":
            score = f
            eps = -torch.linalg.solve_triangular(R, score, upper=False)
        elif self.parameterization == "mixed":  # eps = R^-1 (S^-1 z)_N + net
            eps = torch.linalg.solve_triangular(R, pre["gauss_rows"] @ z64, upper=False) + f
            score = -R @ eps
        else:  # x0: score = -(Sigma^-1 (z - c x0_hat))_N, from the residual x0_hat - x_tilde (no cancellation)
            sig2 = pre["sigma_tilde"].square()[:, None]
            res = -(sig2 * pre["c_in"][:, :1].square()) * x_tilde + pre["c_out"][:, None] * f[:, 0]  # c_skip - 1 = -sig2 c_in^2
            score = co.score_from_denoiser(z64, x_tilde, res)
            eps = -torch.linalg.solve_triangular(R, score, upper=False)
        return eps.reshape(score_shape).to(z.dtype), score.reshape(score_shape).to(z.dtype)

    def _predict_denoiser(self, z: Tensor, co: Coefficients, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """(eps_hat, score_hat) of the "denoiser" parameterisation: x0_hat = D(y, sigma_tilde) from the
        GLS estimate y alone, score = -(Sigma^-1 (z - c x0_hat))_N."""
        B = z.shape[0]
        score_shape = self.sde.score_shape(B, z.shape[2:])
        z64 = z.to(torch.float64)
        score = denoiser_score(self.denoiser(), co, z64, labels).reshape(B, len(co.noised), -1)
        eps = -torch.linalg.solve_triangular(co.score_scale.to(z.device), score, upper=False)
        return eps.reshape(score_shape).to(z.dtype), score.reshape(score_shape).to(z.dtype)

    def denoiser(self) -> Denoiser:
        """The network as a `kinetic.denoiser.EDMDenoiser` (``"denoiser"`` parameterisation only): a VE
        denoiser D(y, sigma) whose ``score_fn(sde)`` samples ANY SDE with this network."""
        if self.parameterization != "denoiser":
            raise ValueError(f"denoiser() needs the 'denoiser' parameterization; this model has {self.parameterization!r}")
        return EDMDenoiser(self.net, self.data_std, num_classes=self.num_classes)

    def forward(self, z: Tensor, t, labels: Tensor | None = None) -> Tensor:
        """Predicted whitened noise of the noised blocks: (B, k, *D), (B,) [, labels (B,)] -> `score_shape`."""
        return self._predict(z, t, labels=labels)[0]

    def score(self, z: Tensor, t, labels: Tensor | None = None) -> Tensor:
        """Predicted score of the noised blocks, grad_{z_N} log p_t(z) (`LinearSDE.score_shape`);
        with ``labels``, grad log p_t(z | y) (the null label: the unconditional score)."""
        return self._predict(z, t, labels=labels)[1]

    def eps_and_score(self, z: Tensor, t, labels: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Both predictions from one network call."""
        return self._predict(z, t, labels=labels)

    @property
    def network(self) -> nn.Module:
        """The plain network (DDP / compile / autocast wrappers removed)."""
        return unwrap_network(self.net)

    def extra_repr(self) -> str:
        return (
            f"sde={self.sde!r}, parameterization={self.parameterization!r}, "
            f"data_std={self.data_std:g}, input_scaling={self.input_scaling}"
            + (f", num_classes={self.num_classes}" if self.num_classes else "")
        )


def output_blocks(sde: LinearSDE, parameterization: str) -> int:
    """Data-shaped blocks a network outputs for this SDE and parameterisation: 1 for "x0" and
    "denoiser" (a denoiser), len(noised_blocks) for "eps", "score" and "mixed"."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    return 1 if parameterization in ("x0", "denoiser") else len(sde.noised_blocks)


def input_blocks(sde: LinearSDE, parameterization: str) -> int:
    """Data-shaped blocks a network sees (its input has this many times the data's first axis): 1 for
    "denoiser" (only the GLS estimate of x0), the order k for the others (the whole state)."""
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
    return 1 if parameterization == "denoiser" else sde.order


def as_score_fn(
    model: nn.Module,
    sde: LinearSDE | None = None,
    parameterization: str = "eps",
    *,
    no_grad: bool = True,
    **kwargs,
) -> ScoreFn:
    """A plain ``score_fn(z, t)`` (`LinearSDE.score_shape`) for the samplers; for a conditional
    model ``score_fn(z, t, labels=None)`` (labels None: the null class, the unconditional score).

    ``model`` is a `ScoreModel` (then ``sde`` / ``parameterization`` must be omitted or agree), a
    `kinetic.denoiser.Denoiser` (then ``sde`` is required: any SDE), or a raw network that is wrapped
    with ``ScoreModel(model, sde, parameterization, **kwargs)``. A `ScoreModel` of the "denoiser"
    parameterisation takes any ``sde``: its network serves every SDE (`ScoreModel.denoiser`).
    With ``no_grad`` (default) the network runs under ``torch.no_grad()``.
    """
    if isinstance(model, Denoiser):
        if sde is None:
            raise ValueError("as_score_fn: give the sde to sample when model is a Denoiser (any LinearSDE)")
        return model.score_fn(sde, no_grad=no_grad)
    if isinstance(model, ScoreModel) and model.parameterization == "denoiser" and sde is not None:
        if sde is not model.sde and sde.spec() != model.sde.spec():
            return model.denoiser().score_fn(sde, no_grad=no_grad)
    if isinstance(model, ScoreModel):
        if sde is not None and sde is not model.sde and sde.spec() != model.sde.spec():
            raise ValueError("sde does not match the ScoreModel's SDE; omit it for a ScoreModel")
        sm = model
    else:
        if sde is None:
            raise ValueError("as_score_fn: give sde when model is a raw network (not a ScoreModel)")
        sm = ScoreModel(model, sde, parameterization, **kwargs)

    def score_fn(z: Tensor, t, labels: Tensor | None = None) -> Tensor:
        if no_grad:
            with torch.no_grad():
                return sm.score(z, t, labels)
        return sm.score(z, t, labels)

    score_fn.model = sm  # type: ignore[attr-defined]
    score_fn.num_classes = sm.num_classes  # type: ignore[attr-defined]
    return score_fn


def preconditioning(
    co: Coefficients,
    data_std: float = 1.0,
    *,
    parameterization: str = "x0",
    input_scaling: bool = True,
) -> dict[str, Tensor]:
    """float64 per-time preconditioning for ``co = sde.coefficients(t)``, t (B,).

    Always: ``c_in`` (B, k), the per-block input scale 1 / sqrt(diag S_t) with
    S_t = data_std^2 c c^T + Sigma_t (ones without ``input_scaling``); ``sigma_tilde`` (B,), the
    noise level of the GLS statistic; ``c_skip``, ``c_out`` (B,) (EDM's, with sigma = sigma_tilde);
    ``whitened_c`` (B, m) = R_t^-1 (Sigma^-1 c)_N, the sensitivity of eps* to x0 (eps* error =
    whitened_c (x0 - x0_hat)). "mixed": ``gauss_rows`` (B, m, k), the rows N of S_t^-1. "x0": ``w``
    (B, k), the GLS row c^T Sigma^-1 / (c^T Sigma^-1 c) (x_tilde = w . z); c_in[:, 0] is then EDM's
    1 / sqrt(data_std^2 + sigma_tilde^2) (block 0 carries x_tilde).
    """
    B, k = co.c.shape
    c = co.c
    sd2 = float(data_std) ** 2
    sig2 = co.sigma_tilde.square()
    out = {
        "sigma_tilde": co.sigma_tilde,
        "c_skip": sd2 / (sd2 + sig2),
        "c_out": (sig2 * sd2 / (sd2 + sig2)).sqrt(),
        "whitened_c": torch.linalg.solve_triangular(co.score_scale, co.noised_data_column.unsqueeze(-1), upper=False)[..., 0],
    }
    if input_scaling:
        c_in = (sd2 * c.square() + torch.diagonal(co.sigma, dim1=-2, dim2=-1)).rsqrt()
    else:
        c_in = torch.ones(B, k, dtype=torch.float64, device=c.device)
    if parameterization == "mixed":
        out["gauss_rows"] = co.reference_precision(sd2)[..., list(co.noised), :]  # rows N of S_t^-1
    elif parameterization == "x0":
        out["w"] = co.gls_row
        c_in = c_in.clone()
        c_in[:, 0] = (sd2 + sig2).rsqrt()
    out["c_in"] = c_in
    return out

