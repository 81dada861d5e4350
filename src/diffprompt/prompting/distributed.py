"""Data-parallel training through Accelerate: one accelerator per process, each process's share
of a global batch, and gradients averaged across processes before each optimiser step.

The all-reduce is explicit (rather than a DDP `forward`), so the classifiers' own methods
(`loss`, `scores`) can be called directly.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

from ..device import choose_device

_ACCELERATOR = None


def get_accelerator(device: str = "auto") -> Accelerator:
    """One Accelerator per process (Accelerate keeps a process-wide state anyway)."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        _ACCELERATOR = Accelerator(cpu=choose_device(device).type == "cpu")
    return _ACCELERATOR


def process_share(indices: list[int], acc: Accelerator) -> list[int]:
    """This process's part of a global batch (at least one example)."""
    return indices[acc.process_index::acc.num_processes] or indices[:1]


def average_gradients(acc: Accelerator, params) -> None:
    """Replace every gradient by its mean over the processes (a missing gradient counts as zero)."""
    if acc.num_processes == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad = acc.reduce(p.grad, reduction="mean")
