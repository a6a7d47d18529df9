"""Denoising score matching of the noised blocks for any `LinearSDE` (CLD's HSM, HOLD's
block-coordinate score matching, PSLD's two-block objective).

Given data x0 (B, *D) and t ~ U[t_eps, T], the state is z_t = c_t x0 + (L_t kron I) eps with the
auxiliary blocks MARGINALISED (drawn from aux_cov inside `sde.perturb`, not fed as data). Only the
score of the noised blocks N is learned; its denoising target is -K_t eps = -R_t eps*, with the
whitened target eps* = R_t^-1 K_t eps ~ N(0, I) (m blocks; eps_k for one noised block, the last,
where R_t = 1 / L_t[k, k]; see `kinetic.coefficients`). With the network's prediction eps_hat of
eps* (any parameterisation, see `kinetic.score`) and e = eps_hat - eps*:

    weighting "eps":        ||e||^2                                        (lambda(t) = R_t^-T R_t^-1)
    weighting "likelihood": beta(t) (s_hat - s)^T D_NN (s_hat - s) = beta(t) e^T R^T D_NN R e
                            (Song et al. 2021 Thm 1: beta g^2 / L_kk^2 ||e||^2 for one block)
    weighting "edm":        ||e||^2 / (|v_t|^2 c_out^2),  v_t = R_t^-1 (Sigma^-1 c)_N: for the x0
                            parameterisation e = v_t (x0 - x0_hat), so this is EDM's loss on F

summed over the data dimensions, averaged over the batch (CLD paper Eq. 8-9; docs/math.md). With
the likelihood weighting, T/2 times the loss (plus a constant) bounds the negative log-likelihood.

Class labels (a conditional network): ``loss(model, x0, labels=y)`` trains grad log p_t(z | y);
with ``label_dropout`` = p each label is replaced by the null class with probability p, so the
same network also learns the unconditional score (Ho & Salimans 2022, "Classifier-Free Diffusion
Guidance", Algorithm 1). Without labels nothing is drawn for them (unconditional runs keep their
random streams).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .coefficients import Coefficients
from .grids import fine_times, interp
from .score import PARAMETERIZATIONS, ScoreModel, preconditioning, unwrap_network
from .sde import LinearSDE

__all__ = ["DSMLoss", "WEIGHTINGS", "TIME_SAMPLINGS", "sample_times", "whitened_target"]

WEIGHTINGS = ("eps", "likelihood", "edm")
TIME_SAMPLINGS = ("uniform", "stratified", "antithetic", "lognormal")


def sample_times(
    batch: int,
    t_eps: float,
    T: float,
    method: str = "uniform",
    generator: torch.Generator | None = None,
    device=None,
) -> Tensor:
    """t in [t_eps, T], float64 (batch,). "uniform": iid U[t_eps, T]; "stratified": one draw per
    stratum of width (T - t_eps) / batch; "antithetic": pairs u, 1 - u (odd batch: one extra iid)."""
    if method not in TIME_SAMPLINGS or method == "lognormal":
        raise ValueError(
            f"time_sampling must be one of uniform, stratified, antithetic here, got {method!r} "
            "(lognormal needs the SDE: use DSMLoss)"
        )
    if method == "uniform":
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
    elif method == "stratified":
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        u = (torch.arange(batch, dtype=torch.float64, device=device) + u) / batch
    else:
        half = torch.rand((batch + 1) // 2, generator=generator, dtype=torch.float64, device=device)
        u = torch.cat([half, 1.0 - half])[:batch]
    return t_eps + (T - t_eps) * u


def whitened_target(co: Coefficients, eps: Tensor) -> Tensor:
    """eps* = R_t^-1 K_t eps, the whitened score target (`LinearSDE.score_shape`), from the noise
    eps (B, k, *D) of ``z_t = c_t x0 + L_t eps``; exactly eps_k for one noised block, the last."""
    B, k = eps.shape[0], eps.shape[1]
    if co.noised == (k - 1,):
        return eps[:, -1]
    K = co.score_map.to(eps.device, eps.dtype)  # (B, m, k)
    u = torch.linalg.solve_triangular(co.score_scale.to(eps.device, eps.dtype), K @ eps.reshape(B, k, -1), upper=False)
    m = len(co.noised)
    return u.reshape(B, *([m] if m > 1 else []), *eps.shape[2:])


class DSMLoss:
    """Denoising score matching of the last block, EDM-style: ``loss(model, x0, generator) -> scalar``.

    Args:
        sde: the forward `LinearSDE`.
        parameterization: used to wrap a raw network (``ScoreModel(net, sde, parameterization)``);
            a `ScoreModel` passed as ``model`` must have this parameterization.
        weighting: "eps" (plain eps-MSE, lambda(t) = L_kk^2) or "likelihood" (beta(t) g^2 on the
            squared score error).
        t_eps: smallest training time (CLD uses 1e-5); t ~ U[t_eps, T].
        time_sampling: "uniform", "stratified", "antithetic" or "lognormal" (see `sample_t`).
        label_dropout: the probability that a given label is replaced by the null class (trains
            the unconditional score of a conditional network; classifier-free guidance needs it).
        data_std, input_scaling: passed to `ScoreModel` when wrapping a raw network.
        state_dtype: dtype in which z_t and eps are formed (default float64: for k >= 2 the data
            block's noise at small t is below float32 resolution, and the "x0" / "mixed" targets
            combine blocks with large coefficients); None keeps x0's dtype. The network still runs
            in its own dtype.

    Calling it with t given (a float or (B,) tensor) evaluates the loss at those times.
    """

    def __init__(
        self,
        sde: LinearSDE,
        parameterization: str = "eps",
        weighting: str = "eps",
        t_eps: float = 1e-5,
        time_sampling: str = "uniform",
        *,
        data_std: float = 1.0,
        input_scaling: bool = True,
        state_dtype: torch.dtype | None = torch.float64,
        p_mean: float = -1.2,
        p_std: float = 1.2,
        label_dropout: float = 0.0,
    ):
        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {parameterization!r}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        if time_sampling not in TIME_SAMPLINGS:
            raise ValueError(f"time_sampling must be one of {TIME_SAMPLINGS}, got {time_sampling!r}")
        try:
            t_eps = float(t_eps)
        except (TypeError, ValueError):
            raise TypeError(f"t_eps must be a float, got {t_eps!r}") from None
        if not (math.isfinite(t_eps) and 0.0 < t_eps < sde.T):
            raise ValueError(f"t_eps must lie in (0, T) = (0, {sde.T}), got {t_eps}")
        self.sde = sde
        self.parameterization = parameterization
        self.weighting = weighting
        self.t_eps = t_eps
        self.time_sampling = time_sampling
        if state_dtype is not None and not (isinstance(state_dtype, torch.dtype) and state_dtype.is_floating_point):
            raise TypeError(f"state_dtype must be a floating torch.dtype or None, got {state_dtype!r}")
        self.state_dtype = state_dtype
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        if not (math.isfinite(self.p_mean) and math.isfinite(self.p_std) and self.p_std > 0):
            raise ValueError(f"p_mean must be finite and p_std positive, got {p_mean}, {p_std}")
        try:
            self.label_dropout = float(label_dropout)
        except (TypeError, ValueError):
            raise TypeError(f"label_dropout must be a number in [0, 1], got {label_dropout!r}") from None
        if isinstance(label_dropout, bool) or not (0.0 <= self.label_dropout <= 1.0):
            raise ValueError(f"label_dropout must lie in [0, 1], got {label_dropout!r}")
        self._grid_cache: dict = {}
        self._wrap_kwargs = {"data_std": data_std, "input_scaling": input_scaling}

    def wrap(self, model: nn.Module) -> nn.Module:
        """The eps-predicting module for ``model`` (a ScoreModel is used as is)."""
        inner = unwrap_network(model)  # a ScoreModel may sit inside DDP / torch.compile
        if isinstance(inner, ScoreModel):
            if inner.parameterization != self.parameterization:
                raise ValueError(
                    f"model has parameterization {inner.parameterization!r} but the loss was built with "
                    f"{self.parameterization!r}"
                )
            return model
        return ScoreModel(model, self.sde, self.parameterization, **self._wrap_kwargs)

    def weight(self, t: Tensor, coefficients: Coefficients | None = None) -> Tensor:
        """The weight on e = eps_hat - eps*: (B,) float64 for "eps" and "edm" (a factor on ||e||^2),
        (B, m, m) for "likelihood" (the quadratic form e^T W e; (B, 1, 1) for one noised block)."""
        t = torch.as_tensor(t, dtype=torch.float64)
        if self.weighting == "eps":
            return torch.ones_like(t, dtype=torch.float64)
        co = coefficients if coefficients is not None else self.sde.coefficients(t.reshape(-1))
        if self.weighting == "edm":
            pre = preconditioning(co, self._wrap_kwargs["data_std"], parameterization="eps")
            return 1.0 / (pre["whitened_c"].square().sum(-1) * pre["c_out"].square())
        R = co.score_scale
        return co.beta[:, None, None] * (R.transpose(-1, -2) @ co.noise.to(R) @ R)

    def _sigma_grid(self, device) -> tuple[Tensor, Tensor]:
        """(log sigma_tilde, t) on a fine grid over [t_eps, T] (float64, cached): sigma_tilde(t) is the
        noise level of the GLS statistic of x0 (see `kinetic.score`)."""
        key = str(device)
        if key not in self._grid_cache:
            ts = fine_times(self.t_eps, self.sde.T, 1025)
            sig = self.sde.coefficients(ts).sigma_tilde
            log_sig = torch.cummax(sig.clamp_min(1e-300).log(), 0).values
            self._grid_cache[key] = (log_sig.to(device), ts.to(device))
        return self._grid_cache[key]

    def sample_t(self, batch: int, generator: torch.Generator | None = None, device=None) -> Tensor:
        """Training times (batch,) float64 in [t_eps, T] as ``time_sampling`` says. "lognormal":
        ln sigma_tilde(t) ~ N(p_mean, p_std^2) (EDM's noise distribution on the x0 statistic's noise
        level), mapped back to t by interpolation on a fine grid and clamped to [t_eps, T]."""
        if self.time_sampling != "lognormal":
            return sample_times(batch, self.t_eps, self.sde.T, self.time_sampling, generator, device)
        log_sig, ts = self._sigma_grid(device)
        target = self.p_mean + self.p_std * torch.randn(batch, generator=generator, dtype=torch.float64, device=device)
        return interp(target, log_sig, ts).clamp(self.t_eps, self.sde.T)

    def drop_labels(self, labels: Tensor, null_label: int, generator: torch.Generator | None = None) -> Tensor:
        """``labels`` (B,) with each entry replaced by ``null_label`` with probability ``label_dropout``
        (drawn from ``generator`` on the labels' device; nothing is drawn when it is 0)."""
        if self.label_dropout <= 0.0:
            return labels
        u = torch.rand(labels.shape[0], generator=generator, dtype=torch.float64, device=labels.device)
        return torch.where(u < self.label_dropout, torch.full_like(labels, null_label), labels)

    def per_example(
        self, model: nn.Module, x0: Tensor, generator: torch.Generator | None = None, t=None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """Weighted squared error summed over the data dims: (B, *D) -> (B,) in float32 (or x0's
        dtype if wider). Gradients flow through the network only. ``labels`` (B,) int64: the class
        of each example for a conditional network (label dropout applied here)."""
        if not isinstance(x0, Tensor) or x0.dim() < 2 or not x0.is_floating_point():
            raise TypeError(f"x0 must be a floating-point tensor of shape (B, *data_shape), got {getattr(x0, 'shape', x0)!r}")
        B = x0.shape[0]
        if t is None:
            t = self.sample_t(B, generator, x0.device)
        else:
            t = torch.as_tensor(t, dtype=torch.float64, device=x0.device)
            t = t.expand(B) if t.dim() == 0 else t
            if t.shape != (B,):
                raise ValueError(f"t must be a scalar or have shape ({B},), got {tuple(t.shape)}")
        out_dtype = torch.promote_types(x0.dtype, torch.float32)
        x0 = x0.detach()
        if self.state_dtype is not None:
            x0 = x0.to(self.state_dtype)
        co = self.sde.coefficients(t)  # once, for the perturbation, the model and the weight
        with torch.no_grad():
            z, eps = self.sde.perturb(x0, t, generator=generator, coefficients=co)
            target = whitened_target(co, eps)
        model = self.wrap(model)
        if labels is not None:
            inner = unwrap_network(model)
            if not isinstance(inner, ScoreModel) or not inner.conditional:
                raise ValueError("labels were given but the model is unconditional (its network was built without classes)")
            labels = inner.check_labels(labels, B)
            labels = self.drop_labels(labels, inner.null_label, generator)
        if isinstance(model, ScoreModel) and labels is None:
            eps_hat = model._predict(z, t, co)[0]
        elif isinstance(model, ScoreModel):
            eps_hat = model._predict(z, t, co, labels, checked_labels=True)[0]
        elif labels is not None:  # a ScoreModel inside DDP / torch.compile: go through its forward
            eps_hat = model(z, t, labels)
        else:
            eps_hat = model(z, t)
        e = (eps_hat.to(z.dtype) - target).reshape(B, len(co.noised), -1)
        if self.weighting == "likelihood":
            W = self.weight(t, co).to(e.dtype)
            err = torch.einsum("bid,bij,bjd->b", e, W, e)
        else:
            err = e.square().reshape(B, -1).sum(-1)
            if self.weighting == "edm":
                err = err * self.weight(t, co).to(err.dtype)
        return err.to(out_dtype)

    def __call__(
        self, model: nn.Module, x0: Tensor, generator: torch.Generator | None = None, t=None,
        labels: Tensor | None = None,
    ) -> Tensor:
        """Scalar loss: per-example losses (sum over data dims) averaged over the batch."""
        return self.per_example(model, x0, generator=generator, t=t, labels=labels).mean()

    def __repr__(self) -> str:
        return (
            f"DSMLoss(sde={self.sde!r}, parameterization={self.parameterization!r}, "
            f"weighting={self.weighting!r}, t_eps={self.t_eps:g}, time_sampling={self.time_sampling!r}"
            + (f", label_dropout={self.label_dropout:g})" if self.label_dropout else ")")
        )
