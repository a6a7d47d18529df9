"""Score wrappers: the one place where a network and a `LinearSDE` meet.

A network ``net(h, t)`` sees the full state z (B, k, *D) reshaped to (B, k*D) for vectors or
(B, k*C, H, W) for images (the k blocks stacked on the first data axis) and the time t (B,).
Its output, shaped like the data, is turned into the score of the LAST block (the only score the
reverse SDE needs, since noise enters the last block only) by one of four parameterisations:

* ``"eps"``:   the net predicts eps_k, the last block's noise in z = mean + (L_t kron I) eps;
  score = -eps_hat / L_t[k-1, k-1] (CLD paper Eq. 9, HOLD's block-coordinate target).
* ``"score"``: the net predicts the score directly.
* ``"mixed"``: the net predicts a residual on top of the analytic score of the Gaussian part,
  the score z would have if the data were N(0, data_std^2 I):
  score = -(S_t^{-1} z)_k - net / L_t[k-1, k-1],  S_t = data_std^2 c c^T + Sigma_t,
  c = Phi(0, t)[:, 0] (for CLD this generalises -v / Sigma_vv - l_t alpha', CLD's mixed score).
* ``"x0"``:    an EDM-style denoiser, generalised to any order. z = c x0 + L eps gives
  eps = L^-1 z - q x0 with q = L^-1 c, so eps_k = (L^-1 z)_k - q_k x0 and E[x0 | z] depends on z
  only through the GLS statistic x_tilde = c^T Sigma^-1 z / (c^T Sigma^-1 c) = x0 + sigma_tilde n,
  sigma_tilde^2 = 1 / (c^T Sigma^-1 c). The net sees x_tilde * c_in in block 0 (and the other blocks
  scaled) and predicts F; x0_hat = c_skip x_tilde + c_out F (EDM's c_skip, c_out, c_in with
  sigma_data = data_std); eps_hat = (L^-1 z)_k - q_k x0_hat. At every t the network is a plain
  denoiser with O(1) inputs and outputs; the linear algebra runs in float64.

``input_scaling`` (default on) divides each block of z by its standard deviation under the same
Gaussian reference, sqrt(diag S_t), before the network sees it, so inputs are O(1) at every t
(this matters for VE, whose states reach sigma_max).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .linalg import safe_cholesky
from .sde import LinearSDE

__all__ = [
    "ScoreModel",
    "as_score_fn",
    "marginal_coefficients",
    "PARAMETERIZATIONS",
    "network_input",
    "unwrap_network",
]

PARAMETERIZATIONS = ("eps", "score", "mixed", "x0")

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


def _param_dtype(net: nn.Module) -> torch.dtype | None:
    for p in net.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


class ScoreModel(nn.Module):
    """Wrap ``net(h, t) -> (B, *D)`` into an eps-predictor and a last-block score.

    Args:
        net: a plain network (or its DDP / compiled wrapper); its input is `network_input(z)`.
        sde: the `LinearSDE` whose marginals define L_t (and S_t for "mixed" / input scaling).
        parameterization: "eps" (default), "score", "mixed" or "x0" (see the module docstring;
            "x0" is what `kinetic.training` uses by default: it trains fastest and is stable).
        data_std: the std of the Gaussian reference used by "mixed", "x0" and input scaling.
        input_scaling: divide each block by sqrt(diag S_t) before the network.

    ``forward(z, t)`` is ``eps(z, t)``: the predicted eps of the last block, (B, *D).
    ``score(z, t)``: the predicted score of the last block, (B, *D).
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

    def coefficients(self, t: Tensor) -> dict[str, Tensor]:
        """float64 per-time coefficients for t (B,): `marginal_coefficients` for this model."""
        return marginal_coefficients(
            self.sde, t, self.data_std, parameterization=self.parameterization, input_scaling=self.input_scaling
        )

    # ------------------------------------------------------------------ prediction
    def _predict(self, z: Tensor, t) -> tuple[Tensor, Tensor]:
        """(eps_hat, score_hat), both (B, *D) in z's dtype."""
        self.sde.check_state(z)
        t = self._batch_t(t, z)
        co = self.coefficients(t)
        B, k = z.shape[0], z.shape[1]
        shape = (B, *z.shape[2:])
        dtype = _param_dtype(self.net) or z.dtype
        z64 = z.to(torch.float64).reshape(B, k, -1)
        h = z64 * co["c_in"][:, :, None]
        if self.parameterization == "x0":
            x_tilde = torch.einsum("bj,bjd->bd", co["w"], z64)
            h[:, 0] = x_tilde * co["c_in"][:, :1]
        out = self.net(network_input(h.reshape(z.shape)).to(dtype), t.to(dtype))
        if tuple(out.shape) != shape:
            raise ValueError(f"network output must have the data shape {shape}, got {tuple(out.shape)}")
        l_kk = co["l_kk"].reshape(-1, *([1] * (z.dim() - 2)))
        if self.parameterization == "eps":
            eps = out.to(z.dtype)
            return eps, -eps / l_kk.to(z.dtype)
        if self.parameterization == "score":
            score = out.to(z.dtype)
            return -l_kk.to(z.dtype) * score, score
        f = out.to(torch.float64).reshape(B, -1)
        if self.parameterization == "mixed":
            eps = torch.einsum("bk,bkd->bd", co["l_kk"][:, None] * co["gauss_row"], z64) + f
        else:  # x0: eps_k = (L^-1 z)_k - q_k x0_hat, x0_hat = c_skip x_tilde + c_out F
            r = torch.einsum("bj,bjd->bd", co["linv_k"], z64) - co["q_k"][:, None] * x_tilde  # noise part
            eps = r + co["q_k"][:, None] * ((1.0 - co["c_skip"])[:, None] * x_tilde - co["c_out"][:, None] * f)
        eps = eps.reshape(shape)
        return eps.to(z.dtype), (-eps / l_kk).to(z.dtype)

    def forward(self, z: Tensor, t) -> Tensor:
        """Predicted eps of the last block: (B, k, *D), (B,) -> (B, *D)."""
        return self._predict(z, t)[0]

    def eps(self, z: Tensor, t) -> Tensor:
        """Predicted eps of the last block, (B, *D)."""
        return self._predict(z, t)[0]

    def score(self, z: Tensor, t) -> Tensor:
        """Predicted score of the last block, grad_{z_k} log p_t(z): (B, k, *D), (B,) -> (B, *D)."""
        return self._predict(z, t)[1]

    def eps_and_score(self, z: Tensor, t) -> tuple[Tensor, Tensor]:
        """Both predictions, (B, *D) each, from one network call."""
        return self._predict(z, t)

    def score_fn(self, z: Tensor, t) -> Tensor:
        """Alias of `score`, matching the ``score_fn(z, t)`` convention of the samplers."""
        return self._predict(z, t)[1]

    @property
    def network(self) -> nn.Module:
        """The plain network (DDP / compile / autocast wrappers removed)."""
        return unwrap_network(self.net)

    def extra_repr(self) -> str:
        return (
            f"sde={self.sde!r}, parameterization={self.parameterization!r}, "
            f"data_std={self.data_std:g}, input_scaling={self.input_scaling}"
        )


def as_score_fn(
    model: nn.Module,
    sde: LinearSDE | None = None,
    parameterization: str = "eps",
    *,
    no_grad: bool = True,
    **kwargs,
) -> ScoreFn:
    """A plain ``score_fn(z, t) -> (B, *D)`` for the samplers.

    ``model`` is a `ScoreModel` (then ``sde`` / ``parameterization`` must be omitted or agree), or a
    raw network that is wrapped with ``ScoreModel(model, sde, parameterization, **kwargs)``.
    With ``no_grad`` (default) the network runs under ``torch.no_grad()``.
    """
    if isinstance(model, ScoreModel):
        if sde is not None and sde is not model.sde and sde.spec() != model.sde.spec():
            raise ValueError("sde does not match the ScoreModel's SDE; omit it for a ScoreModel")
        sm = model
    else:
        if sde is None:
            raise ValueError("as_score_fn: give sde when model is a raw network (not a ScoreModel)")
        sm = ScoreModel(model, sde, parameterization, **kwargs)

    def score_fn(z: Tensor, t) -> Tensor:
        if no_grad:
            with torch.no_grad():
                return sm.score(z, t)
        return sm.score(z, t)

    score_fn.model = sm  # type: ignore[attr-defined]
    return score_fn


def marginal_coefficients(
    sde: LinearSDE,
    t: Tensor,
    data_std: float = 1.0,
    *,
    parameterization: str = "x0",
    input_scaling: bool = True,
) -> dict[str, Tensor]:
    """float64 per-time coefficients for times t (B,) (exact, from `LinearSDE.marginal`).

    Always: ``l_kk`` (B,) = L_t[k-1, k-1]; ``c_in`` (B, k), the per-block input scale
    1 / sqrt(diag S_t) with S_t = data_std^2 c c^T + Sigma_t (ones without ``input_scaling``);
    ``sigma_tilde`` (B,), the noise level of the GLS statistic (1 / sqrt(c^T Sigma^-1 c));
    ``q_k`` (B,) = (L_t^-1 c)_k; ``c_skip``, ``c_out`` (B,) (EDM's, with sigma = sigma_tilde).
    "mixed": ``gauss_row`` (B, k), the last row of S_t^-1. "x0": ``w`` (B, k), the GLS row
    c^T Sigma^-1 / (c^T Sigma^-1 c) (x_tilde = w . z) and ``linv_k`` (B, k), the last row of L_t^-1;
    c_in[:, 0] is then EDM's 1 / sqrt(data_std^2 + sigma_tilde^2) (block 0 carries x_tilde).
    """
    t64 = torch.as_tensor(t).to(torch.float64).reshape(-1)
    B, k = t64.shape[0], sde.order
    # marginal() gives c = Phi(0, t)[:, 0] (the mean of unit data) and Sigma_t in one exact call
    col, sigma = sde.marginal(torch.ones(B, 1, dtype=torch.float64, device=t64.device), t64)
    col = col[..., 0]  # (B, k)
    L = safe_cholesky(sigma)  # as in sde.perturb (scale-invariant, exact at tiny t)
    sd2 = float(data_std) ** 2
    S = sd2 * col[:, :, None] * col[:, None, :] + sigma
    eye = torch.eye(k, dtype=torch.float64, device=t64.device).expand(B, k, k)
    Linv = torch.linalg.solve_triangular(L, eye, upper=False)
    q = (Linv @ col[..., None])[..., 0]  # L^-1 c
    prec = (q * q).sum(-1)  # c^T Sigma^-1 c = 1 / sigma_tilde^2
    sig2 = 1.0 / prec
    out = {
        "l_kk": L[:, -1, -1],
        "sigma_tilde": sig2.sqrt(),
        "q_k": q[:, -1],
        "c_skip": sd2 / (sd2 + sig2),
        "c_out": (sig2 * sd2 / (sd2 + sig2)).sqrt(),
    }
    c_in = torch.diagonal(S, dim1=-2, dim2=-1).rsqrt() if input_scaling else torch.ones(B, k, dtype=torch.float64, device=t64.device)
    if parameterization == "mixed":
        e_k = torch.zeros(B, k, 1, dtype=S.dtype, device=S.device)
        e_k[:, -1] = 1.0
        out["gauss_row"] = torch.linalg.solve(S, e_k)[..., 0]  # S symmetric: row = column
    elif parameterization == "x0":
        out["w"] = (q[:, None, :] @ Linv)[:, 0, :] / prec[:, None]
        out["linv_k"] = Linv[:, -1, :]
        c_in = c_in.clone()
        c_in[:, 0] = (sd2 + sig2).rsqrt()
    out["c_in"] = c_in
    return out
