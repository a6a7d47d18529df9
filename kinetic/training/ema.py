"""Exponential moving average of a network's weights."""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Exponential moving average of a network's weights (a separate copy in eval mode).

    decay at step s: min(decay, (1 + s) / (10 + s)) so short runs are not dominated by the init.
    """

    def __init__(self, net: nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = copy.deepcopy(net).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, net: nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema_p = [p for p in self.shadow.parameters()]
        cur_p = [p.detach() for p in net.parameters()]
        torch._foreach_lerp_(ema_p, cur_p, 1.0 - d)
        for b_ema, b in zip(self.shadow.buffers(), net.buffers()):
            b_ema.copy_(b)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, sd: dict) -> None:
        self.shadow.load_state_dict(sd)
