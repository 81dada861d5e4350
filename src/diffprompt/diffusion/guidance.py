"""Classifier-free guidance (Ho & Salimans 2022): label dropout in training, guided predictions in sampling.

Training: a conditional U-Net (`UNetConfig.num_classes` K > 0) sees the null class K in place of the
true label with probability `cond_drop_prob` (`drop_labels`), so one network learns both eps(x, c)
and the unconditional eps(x, null).

Sampling with guidance scale w:

    eps~(x_t, c) = (1 + w) * eps(x_t, c) - w * eps(x_t, null)

w = 0 is the plain conditional model; larger w trades diversity for fidelity. `guided` wraps the
network so that the samplers and `GaussianDiffusion` need no change: the wrapped model is called as
model(x_t, t) and makes ONE network call per step, on the conditional and the null-class copies of
the batch concatenated (batch 2B).

Why one formula serves eps-, v- and x0-prediction: with alpha = sqrt(alpha-bar_t) and
sigma = sqrt(1 - alpha-bar_t), each prediction turns into eps by an affine map with the same
x_t-term, eps = a * out + b * x_t (eps: a = 1, b = 0; x0: a = -alpha / sigma, b = 1 / sigma;
v: a = alpha, b = sigma). Since (1 + w) - w = 1, combining the two outputs in the model's own
parameterisation, (1 + w) * out_c - w * out_null, and converting gives exactly the eps~ above.
A learned-variance output (2C channels) is guided on its first C (prediction) channels; the
variance channels are the conditional ones.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError


def num_classes(model: nn.Module) -> int:
    """The classes a network is conditioned on: K of a conditional U-Net, 0 for any other network."""
    config = getattr(model, "config", None)
    return int(getattr(config, "num_classes", 0) or 0)


def drop_labels(labels: torch.Tensor, p: float, null_class: int, generator: torch.Generator) -> torch.Tensor:
    """`labels` with each replaced by `null_class` with probability `p`, the draws from `generator`.

    One uniform per label, u < p drops it: the same generator state gives the same drops, so a
    resumed run repeats them bit for bit.
    """
    drop = torch.rand(labels.shape[0], generator=generator) < p
    return torch.where(drop.to(labels.device), torch.full_like(labels, null_class), labels)


class Guided(nn.Module):
    """model(x_t, t) -> the guided prediction for fixed `class_labels` [B] (see the module docstring)."""

    def __init__(self, model: nn.Module, class_labels: torch.Tensor, w: float, null_class: int):
        super().__init__()
        self.model, self.w, self.null_class = model, float(w), int(null_class)
        self.class_labels = torch.as_tensor(class_labels).long()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[0], x.shape[1]
        labels = self.class_labels.to(x.device)
        if labels.shape != (B,):
            raise UserError(f"{labels.numel()} class labels for a batch of {B}: give one label per sample")
        if self.w == 0.0:  # the plain conditional model: no unconditional half to compute
            return self.model(x, t, class_labels=labels)
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(B) if t.ndim == 0 else t
        both = self.model(torch.cat([x, x]), torch.cat([t, t]),
                          class_labels=torch.cat([labels, torch.full_like(labels, self.null_class)]))
        cond, uncond = both[:B], both[B:]
        guided = (1.0 + self.w) * cond[:, :C] - self.w * uncond[:, :C]
        return torch.cat([guided, cond[:, C:]], dim=1) if cond.shape[1] > C else guided


def guided(model: nn.Module, class_labels, w: float = 0.0, null_class: int | None = None) -> Guided:
    """`model` guided towards `class_labels` with scale `w` >= 0; `null_class` defaults to the model's."""
    k = num_classes(model)
    if not k:
        raise UserError("this model is unconditional: it was not trained with --conditional, so it takes no class")
    if not w >= 0:
        raise UserError(f"the guidance scale must be >= 0 (0: the plain conditional model), got {w}")
    labels = torch.as_tensor(class_labels).long().reshape(-1)
    bad = labels[(labels < 0) | (labels >= k)]
    if bad.numel():
        raise UserError(f"class {int(bad[0])} is out of range: the model knows classes 0..{k - 1}")
    return Guided(model, labels, w, k if null_class is None else null_class)
