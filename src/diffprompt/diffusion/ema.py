"""Exponential moving average of a model's weights (Ho et al. 2020 sample with EMA weights).

    ema = EMA(model, decay=0.9999, warmup=True)
    ...after every optimizer step:
    ema.update(model)
    ...sample with ema.model

With `warmup`, update number n uses min(decay, (1 + n) / (10 + n)), so an early EMA is not
dominated by the random initial weights (as in TensorFlow's ExponentialMovingAverage with
num_updates, used by the reference implementation).
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module inside DDP / torch.compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


class EMA:
    """A frozen copy of a model whose floating-point weights track an exponential moving average."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, warmup: bool = True):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.model = copy.deepcopy(unwrap(model)).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update will use."""
        if self.warmup:
            n = self.num_updates
            return min(self.decay, (1.0 + n) / (10.0 + n))
        return self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """ema <- d * ema + (1 - d) * model for floating-point tensors; other buffers are copied."""
        d = self.current_decay()
        src = unwrap(model).state_dict()
        for name, ema_t in self.model.state_dict().items():
            new = src[name].detach()
            if ema_t.dtype.is_floating_point:
                ema_t.mul_(d).add_(new.to(ema_t.dtype), alpha=1.0 - d)
            else:
                ema_t.copy_(new)
        self.num_updates += 1
        return d

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state)
        self.num_updates = int(num_updates)

    def to(self, device) -> "EMA":
        self.model.to(device)
        return self
