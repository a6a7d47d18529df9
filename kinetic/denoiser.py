"""One denoiser for every linear SDE: E[x0 | z_t] = D(y_t, sigma_t) (docs/math.md, "One denoiser for every SDE").

For any `LinearSDE`, z_t = c_t x0 + n with n ~ N(0, Sigma_t) given x0 (`sde.coefficients(t)`). The data enter
the likelihood only through the GLS estimate

    y_t = sigma_t^2 c_t^T Sigma_t^-1 z_t = x0 + sigma_t eps,   sigma_t^-2 = c_t^T Sigma_t^-1 c_t

(`Coefficients.gls_estimate`, `Coefficients.sigma_tilde`), and the rest of the state is independent of
(x0, y_t). So E[x0 | z_t] = D(y_t, sigma_t), the denoiser of the VE process y = x0 + sigma eps, for every
order, drift and set of noised blocks, and the noised-block score follows in closed form (Tweedie):

    grad_{z_N} log p_t(z) = -(Sigma_t^-1 (z - c_t D(y_t, sigma_t)))_N      (`Coefficients.score_from_data`).

A `Denoiser` is ``D(y, sigma, labels=None) -> x0_hat``: y (B, *D) data-shaped, sigma (B,) float64 (> 0),
labels (B,) int64 or None for a class-conditional one (``num_classes`` > 0; label ``num_classes`` or None:
the unconditional branch). ``denoiser.score_fn(sde)`` (or ``kn.as_score_fn(denoiser, sde)``) is the
``score_fn(z, t[, labels])`` of ANY SDE for the samplers. `EDMDenoiser` is a network with EDM's
preconditioning (Karras et al. 2022, "Elucidating the Design Space of Diffusion-Based Generative Models",
Table 1, VE column): the network sees only c_in(sigma) y and c_noise(sigma) = ln(sigma) / 4 and predicts
F, with x0_hat = c_skip y + c_out F. A diffusers model folder loads as one with
`kinetic.pretrained.load_diffusers`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .coefficients import Coefficients

__all__ = ["Denoiser", "FunctionDenoiser", "EDMDenoiser", "edm_preconditioning", "denoiser_score"]


def edm_preconditioning(sigma: Tensor, data_std: float) -> dict[str, Tensor]:
    """EDM's c_skip, c_out, c_in and c_noise for noise levels sigma (B,), float64, with sigma_data =
    ``data_std`` (Karras et al. 2022, Table 1): c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd /
    sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2), c_noise = ln(sigma) / 4."""
    sig = torch.as_tensor(sigma, dtype=torch.float64)
    sd2 = float(data_std) ** 2
    tot = sig.square() + sd2
    return {
        "c_skip": sd2 / tot,
        "c_out": sig * float(data_std) * tot.rsqrt(),
        "c_in": tot.rsqrt(),
        "c_noise": 0.25 * torch.log(sig),
    }


def denoiser_score(denoiser: "Denoiser", co: Coefficients, z: Tensor, labels: Tensor | None = None) -> Tensor:
    """The noised-block score -(Sigma^-1 (z - c D(y, sigma)))_N of the state z (B, k, *D) at the times of
    ``co`` (leading shape (B,)) from ``denoiser.residual`` (x0_hat - y, computed where it keeps its digits;
    `Coefficients.score_from_denoiser`); (B, m, *D) in z's dtype. y and the k x k algebra are float64; the
    denoiser sees y in z's dtype."""
    z64 = z.to(torch.float64)
    y = co.gls_estimate(z64)
    sigma = co.sigma_tilde.to(z.device)
    res = denoiser.residual(y.to(z.dtype), sigma, labels)
    if not isinstance(res, Tensor) or tuple(res.shape) != tuple(y.shape):
        got = tuple(res.shape) if isinstance(res, Tensor) else type(res).__name__
        raise ValueError(f"the denoiser must return x0_hat shaped like the data {tuple(y.shape)}, got {got}")
    return co.score_from_denoiser(z64, y, res.to(torch.float64)).to(z.dtype)


class Denoiser(nn.Module):
    """Base class: ``forward(y, sigma, labels=None) -> x0_hat``, y (B, *D), sigma (B,) float64 -> (B, *D).

    ``num_classes`` (0: unconditional) says whether it takes labels; `score_fn` turns it into the
    noised-block score of any `LinearSDE`.
    """

    num_classes: int = 0

    def forward(self, y: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        """x0_hat = y + `residual` (y, sigma, labels)."""
        return y + self.residual(y, sigma, labels)

    def residual(self, y: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:  # pragma: no cover
        """x0_hat - y (B, *D): the scores need it to relative accuracy where sigma is tiny (subclasses
        compute it directly, e.g. -sigma eps_hat, rather than as a difference)."""
        raise NotImplementedError

    def score_fn(self, sde, *, no_grad: bool = True) -> Callable:
        """``score_fn(z, t, labels=None)`` of ``sde`` (`LinearSDE.score_shape`) for `kinetic.sample`, with
        ``score_fn.num_classes``; under ``torch.no_grad()`` unless ``no_grad`` is False."""
        from .sde import LinearSDE

        if not isinstance(sde, LinearSDE):
            raise TypeError(f"sde must be a kinetic.LinearSDE, got {type(sde).__name__}")
        den = self

        def score_fn(z: Tensor, t, labels: Tensor | None = None) -> Tensor:
            sde.check_state(z)
            if labels is not None and not den.num_classes:
                raise ValueError("labels were given to an unconditional denoiser (num_classes = 0)")
            t = torch.as_tensor(t, device=z.device).to(torch.float64).reshape(-1)
            t = t.expand(z.shape[0]) if t.numel() == 1 else t
            if t.shape != (z.shape[0],):
                raise ValueError(f"t must be a scalar or have shape ({z.shape[0]},) to match z, got {tuple(t.shape)}")
            with torch.set_grad_enabled(not no_grad and torch.is_grad_enabled()):
                s = denoiser_score(den, sde.coefficients(t), z, labels)
            return s.reshape(sde.score_shape(z.shape[0], z.shape[2:]))

        score_fn.num_classes = self.num_classes  # type: ignore[attr-defined]
        score_fn.denoiser = self  # type: ignore[attr-defined]
        return score_fn


class FunctionDenoiser(Denoiser):
    """A `Denoiser` from a plain function ``fn(y, sigma[, labels])``: x0_hat, or with ``residual=True``
    x0_hat - y (the accurate form at tiny sigma; e.g. the exact posterior mean of a mixture,
    `kinetic.analytic.GaussianMixture.denoiser`)."""

    def __init__(self, fn: Callable, *, residual: bool = False, num_classes: int = 0):
        super().__init__()
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(y, sigma), got {type(fn).__name__}")
        self.fn = fn
        self.returns_residual = bool(residual)
        self.num_classes = int(num_classes)

    def residual(self, y: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        out = self.fn(y, sigma) if labels is None else self.fn(y, sigma, labels)
        return out if self.returns_residual else out - y


class EDMDenoiser(Denoiser):
    """``net(c_in y, c_noise[, labels]) -> F`` (data-shaped in and out) with x0_hat = c_skip y + c_out F
    (`edm_preconditioning`, sigma_data = ``data_std``). The network runs in its own dtype; the
    preconditioning is float64. ``num_classes``: None reads the network's attribute."""

    def __init__(self, net: nn.Module, data_std: float = 1.0, *, num_classes: int | None = None):
        super().__init__()
        if not isinstance(net, nn.Module):
            raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
        data_std = float(data_std)
        if not (data_std > 0 and data_std != float("inf")):
            raise ValueError(f"data_std must be a finite positive number, got {data_std}")
        self.net = net
        self.data_std = data_std
        if num_classes is None:
            num_classes = getattr(net, "num_classes", 0)
            num_classes = num_classes if isinstance(num_classes, int) and not isinstance(num_classes, bool) else 0
        self.num_classes = int(num_classes)

    def residual(self, y: Tensor, sigma: Tensor, labels: Tensor | None = None) -> Tensor:
        """x0_hat - y = (c_skip - 1) y + c_out F = -sigma^2 / (sigma^2 + sd^2) y + c_out F."""
        B = y.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float64, device=y.device).reshape(-1).expand(B)
        pre = edm_preconditioning(sigma, self.data_std)
        shape = (B, *([1] * (y.dim() - 1)))
        dtype = next((p.dtype for p in self.net.parameters() if p.is_floating_point()), y.dtype)
        y64 = y.to(torch.float64)
        inp = (pre["c_in"].reshape(shape) * y64).to(dtype)
        noise = pre["c_noise"].to(dtype)
        if self.num_classes:
            if labels is None:
                labels = torch.full((B,), self.num_classes, dtype=torch.int64, device=y.device)
            out = self.net(inp, noise, labels)
        else:
            if labels is not None:
                raise ValueError("labels were given to an unconditional denoiser (num_classes = 0)")
            out = self.net(inp, noise)
        if tuple(out.shape) != tuple(y.shape):
            raise ValueError(f"network output must have the data shape {tuple(y.shape)} (F of the denoiser), got {tuple(out.shape)}")
        skip = -(sigma.square() * pre["c_in"].square())  # c_skip - 1, without the cancellation
        res = skip.reshape(shape) * y64 + pre["c_out"].reshape(shape) * out.to(torch.float64)
        return res.to(y.dtype)

    def extra_repr(self) -> str:
        return f"data_std={self.data_std:g}" + (f", num_classes={self.num_classes}" if self.num_classes else "")
