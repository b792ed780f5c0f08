"""Exponential moving average of the weights (the official ExpMovingAverager).

After step ``t`` every parameter and buffer is blended as ``ema ← ema·(1−w) + θ·w`` with
``w = decay·exp(−(1+t)/2000) + (1 − decay)``: the average follows the model closely for the
first few thousand steps, then settles to a slow ``1 − decay`` update.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


class ModelEMA:
    def __init__(self, model: nn.Module, decay: float = 0.9998) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def weight(self, step: int) -> float:
        return self.decay * math.exp(-(1 + step) / 2000) + (1 - self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        """Blend every floating-point tensor (one multi-tensor op per step), copy the others."""
        w = self.weight(step)
        ema_state = self.model.state_dict()
        blend_ema, blend_model = [], []
        for name, value in model.state_dict().items():
            target = ema_state[name]
            if target.dtype.is_floating_point:
                blend_ema.append(target)
                blend_model.append(value)
            else:
                target.copy_(value)
        # the same arithmetic as target.mul_(1 - w).add_(value, alpha=w), tensor by tensor
        torch._foreach_mul_(blend_ema, 1 - w)
        torch._foreach_add_(blend_ema, blend_model, alpha=w)
