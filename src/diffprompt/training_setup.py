"""What the diffusion and the prompting training loops share: the data order, each process's share
of a global batch, the Accelerator, and the learning-rate schedule.

    order = BatchOrder(n=len(train), batch_size=32, seed=0)
    accelerator = get_accelerator("auto")
    for step in range(steps):
        batch = process_share(order.next(), accelerator)   # this process's part of the global batch
        lr = peak_lr * lr_factor(step, steps, warmup)      # linear warm-up, then constant

Data parallelism: every process draws the same global batches from one seeded generator and keeps
its own share of each, so the processes see disjoint data and no sampler has to be distributed;
the generator's state goes into the checkpoint, so a resumed run draws what an unbroken one would.
"""

from __future__ import annotations

import math
from typing import Any, Sequence, TypeVar

import torch
from accelerate import Accelerator

from .device import choose_device
from .errors import UserError

DECAYS = ("constant", "linear", "cosine")  # what the learning rate does after the warm-up

_ACCELERATORS: dict[tuple[bool, str], Accelerator] = {}

Batch = TypeVar("Batch", Sequence[Any], torch.Tensor)


class BatchOrder:
    """Epochs of random permutations of n indices, drawn from a seeded CPU generator.

    Each epoch is a fresh permutation. With `drop_last` (as in torch's DataLoader) a batch never
    spans two epochs: the tail of an epoch that does not fill a batch is skipped, and n must be at
    least the batch size. Without it, a batch that reaches the end of an epoch goes on into the
    next one, so every example is drawn equally often and a batch may be larger than n (few-shot
    training: K examples per class, batches of 8). `generator` is public: a loop may draw more from
    it (image flips, label dropout), and those draws are then part of the saved state too.
    """

    def __init__(self, n: int, batch_size: int, seed: int, drop_last: bool = True):
        if n < 1 or (drop_last and n < batch_size):
            raise UserError(f"the training set has {n} examples, fewer than the batch size {batch_size}; "
                            "lower the batch size (--batch-size)")
        self.n, self.batch_size, self.drop_last = n, batch_size, drop_last
        self.generator = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(n, generator=self.generator)
        self.pos = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        """The indices of the next global batch."""
        if self.drop_last:
            if self.pos + self.batch_size > self.n:
                self._new_epoch()
            return self._take(self.batch_size)
        parts, wanted = [], self.batch_size
        while wanted:
            if self.pos == self.n:
                self._new_epoch()
            parts.append(self._take(min(wanted, self.n - self.pos)))
            wanted -= len(parts[-1])
        return torch.cat(parts)

    def _new_epoch(self) -> None:
        self.perm = torch.randperm(self.n, generator=self.generator)
        self.pos = 0
        self.epoch += 1

    def _take(self, k: int) -> torch.Tensor:
        idx = self.perm[self.pos:self.pos + k]
        self.pos += k
        return idx

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        """(tensors, JSON-able numbers) for a checkpoint: the generator, the permutation, the position."""
        return {"gen": self.generator.get_state(), "perm": self.perm.clone()}, {"pos": self.pos, "epoch": self.epoch}

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, int]) -> None:
        """Continue from a `state()`: the next batch is the one the saved order would have drawn."""
        self.generator.set_state(tensors["gen"].to(torch.uint8).cpu())
        self.perm = tensors["perm"].long().cpu()
        self.pos, self.epoch = int(meta["pos"]), int(meta["epoch"])


def process_share(batch: Batch, accelerator: Accelerator, at_least_one: bool = False) -> Batch:
    """This process's part of a global batch: every `num_processes`-th item from its `process_index`
    on, so the shares of all processes partition the batch. With `at_least_one`, a process whose
    share would be empty (a batch smaller than the number of processes) gets the batch's first item."""
    share = batch[accelerator.process_index::accelerator.num_processes]
    return batch[:1] if at_least_one and len(share) == 0 else share


def get_accelerator(device: str = "auto", mixed_precision: str = "no") -> Accelerator:
    """The process's Accelerator for `device` ("auto", "cpu", "cuda", "mps") and `mixed_precision`
    ("no", "fp16", "bf16"), made on first use (Accelerate keeps one process-wide state anyway)."""
    cpu = choose_device(device).type == "cpu"
    if cpu and mixed_precision == "fp16":
        raise UserError("mixed precision fp16 needs a GPU; on a CPU use --mixed-precision bf16 or no")
    key = (cpu, mixed_precision)
    if key not in _ACCELERATORS:
        _ACCELERATORS[key] = Accelerator(cpu=cpu, mixed_precision=mixed_precision)
    return _ACCELERATORS[key]


def lr_factor(step: int, total: int, warmup: int, decay: str = "constant") -> float:
    """The learning rate of step `step` (0-based) of `total`, as a share of the peak: linear warm-up
    over `warmup` steps ((step + 1) / warmup), then `decay`: "constant" (1), "linear" (down to 0
    at `total`) or "cosine" (half a cosine from 1 down to 0 at `total`, Loshchilov & Hutter 2017)."""
    if decay not in DECAYS:
        raise ValueError(f"decay must be one of {DECAYS}, got {decay!r}")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if decay == "constant":
        return 1.0
    left = max(0.0, (total - step) / max(1, total - warmup))  # the share of the decay still to go
    return left if decay == "linear" else 0.5 * (1.0 - math.cos(math.pi * left))
