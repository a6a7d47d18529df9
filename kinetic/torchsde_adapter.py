"""Adapter that lets `torchsde.sdeint` integrate a `LinearSDE` (forward, or reverse given a score).

torchsde works on flat states (B, n); here n = k * prod(D). The noise sqrt(beta) (G kron I) dW has
the law of sqrt(beta) (C kron I) dW_N on the noised blocks N, with C = chol(D_NN): when D = G G^T
is diagonal (VP, CLD, HOLD, PSLD) that is torchsde's ``noise_type="diagonal"`` (zero on the other
blocks, Brownian motion of size n); otherwise ``"additive"`` with ``g_prod`` and a Brownian motion
of size m * prod(D) (`noise_channels`). The reverse SDE runs in s = T - t from 0 to T - t_eps:

    dz = [-beta A z + beta (D[:, N] kron I) score(z, T - s)] ds + sqrt(beta) (G kron I) dW_s.

torchsde itself is imported lazily (`kinetic.LinearSDE.to_torchsde`), never at `import kinetic`.
"""

from __future__ import annotations

from typing import Sequence

import math

import torch
from torch import Tensor, nn

__all__ = ["TorchsdeSDE", "make_torchsde_sde"]


class TorchsdeSDE(nn.Module):
    """torchsde-compatible wrapper: ``f(s, y)`` and ``g(s, y)`` (diagonal noise) or ``g_prod(s, y, v)``
    (additive noise) on flat states (B, k*prod(data_shape)); build it with `make_torchsde_sde`.

    With ``score_fn`` given it is the reverse-time SDE in s = T - t (integrate s from 0 to
    ``T - t_eps``); without, the forward SDE in t. Use `flatten` / `unflatten` to convert states.
    """

    sde_type = "ito"

    def __init__(self, sde, data_shape: Sequence[int], score_fn=None, t_eps: float = 0.0):
        super().__init__()
        self.sde = sde
        self.data_shape = tuple(int(s) for s in data_shape)
        self.score_fn = score_fn
        self.reverse = score_fn is not None
        self.t_eps = float(t_eps)
        self.nfe = 0
        self._noised = list(sde.noised_blocks)

    def flatten(self, z: Tensor) -> Tensor:
        return z.reshape(z.shape[0], -1)

    def unflatten(self, y: Tensor) -> Tensor:
        return y.reshape(y.shape[0], self.sde.order, *self.data_shape)

    def _time(self, s: Tensor, batch: int, device) -> Tensor:
        s = torch.as_tensor(s, dtype=torch.float64, device=device).reshape(())
        t = self.sde.T - s if self.reverse else s
        return t.clamp(0.0, self.sde.T).expand(batch)

    def f(self, s, y: Tensor) -> Tensor:
        z = self.unflatten(y)
        t = self._time(s, y.shape[0], y.device)
        if not self.reverse:
            return self.flatten(self.sde.drift(z, t))
        score = self.score_fn(z, t.to(y.dtype))
        self.nfe += 1
        return self.flatten(-self.sde.reverse_drift(z, t, score))

    def _scale(self, s, y: Tensor) -> Tensor:
        t = self._time(s, y.shape[0], y.device)
        return self.sde.noise_scale(t).to(y.dtype).reshape(-1, *([1] * (len(self.data_shape) + 1)))


class _DiagonalNoise(TorchsdeSDE):
    noise_type = "diagonal"

    @property
    def noise_channels(self) -> int:
        return self.sde.order * math.prod(self.data_shape)

    def g(self, s, y: Tensor) -> Tensor:
        out = torch.zeros_like(self.unflatten(y))
        g = torch.diagonal(self.sde.noise_matrix).sqrt().to(y.device, y.dtype)
        out[:, self._noised] = g[self._noised].reshape(-1, *([1] * len(self.data_shape))).expand_as(out[:, self._noised])
        return self.flatten(out * self._scale(s, y))


class _AdditiveNoise(TorchsdeSDE):
    noise_type = "additive"

    @property
    def noise_channels(self) -> int:
        return len(self._noised) * math.prod(self.data_shape)

    def g_prod(self, s, y: Tensor, v: Tensor) -> Tensor:
        B, m = y.shape[0], len(self._noised)
        C = torch.linalg.cholesky(self.sde.noise_block).to(y.device, y.dtype)
        out = torch.zeros_like(self.unflatten(y))
        out[:, self._noised] = torch.einsum("ij,bjd->bid", C, v.reshape(B, m, -1)).reshape(B, m, *self.data_shape)
        return self.flatten(out * self._scale(s, y))


def make_torchsde_sde(sde, data_shape: Sequence[int], score_fn=None, t_eps: float = 0.0) -> TorchsdeSDE:
    """The torchsde object for ``sde``: diagonal noise when G G^T is diagonal, additive otherwise."""
    D = sde.noise_matrix
    cls = _DiagonalNoise if bool((D == torch.diag(torch.diagonal(D))).all()) else _AdditiveNoise
    return cls(sde, data_shape, score_fn=score_fn, t_eps=t_eps)
