"""Adapter that lets `torchsde.sdeint` integrate a `LinearSDE` (forward, or reverse given a score).

torchsde works on flat states (B, n) with ``noise_type="diagonal"``; here n = k * prod(D).
Because G G^T = g^2 e_k e_k^T, the diagonal noise sqrt(beta) g on the last block (zero elsewhere)
gives exactly the SDE's law. The reverse SDE runs in s = T - t from s = 0 to s = T - t_eps:

    dz = [-beta A z + beta g^2 e_k score(z, T - s)] ds + sqrt(beta) g e_k dW_s.

torchsde itself is imported lazily (`kinetic.LinearSDE.to_torchsde`), never at `import kinetic`.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

__all__ = ["TorchsdeSDE"]


class TorchsdeSDE(nn.Module):
    """torchsde-compatible wrapper: ``f(s, y)``, ``g(s, y)`` on flat states (B, k*prod(data_shape)).

    With ``score_fn`` given it is the reverse-time SDE in s = T - t (integrate s from 0 to
    ``T - t_eps``); without, the forward SDE in t. Use `flatten` / `unflatten` to convert states.
    """

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, sde, data_shape: Sequence[int], score_fn=None, t_eps: float = 0.0):
        super().__init__()
        self.sde = sde
        self.data_shape = tuple(int(s) for s in data_shape)
        self.score_fn = score_fn
        self.reverse = score_fn is not None
        self.t_eps = float(t_eps)
        self.nfe = 0

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

    def g(self, s, y: Tensor) -> Tensor:
        t = self._time(s, y.shape[0], y.device)
        out = torch.zeros_like(self.unflatten(y))
        scale = self.sde.diffusion(t).to(y.dtype).reshape(-1, *([1] * len(self.data_shape)))
        out[:, -1] = scale
        return self.flatten(out)
