"""The training loop of every prompting run, LM-BFF's protocol: AdamW on the few-shot set, the
dev accuracy measured every `eval_every` steps (and before the first), the best state kept.

`fit(model, cfg, data, acc)` trains for `steps` optimiser steps (linear warm-up then linear
decay), drawing global batches by epochs over the few-shot set (batches may run on into the next
epoch: K examples per class can be fewer than a batch); each process takes its share of every
batch (the order, the shares and the schedule are the ones diffusion trains with,
`diffprompt.training_setup`) and the gradients are averaged across processes before each step (the all-reduce
is explicit rather than a DDP `forward`, so the classifiers' own `loss` and `scores` can be
called directly). The state with the best dev accuracy so far is kept in memory (ties keep the
earlier state), `patience` stops early, and the best state is restored at the end.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from ...errors import UserError
from ...progress import progress
from ...rundir import RunDir
from ...training_setup import BatchOrder, lr_factor, process_share
from ..models.classifier import TextClassifier
from ..methods.registry import get_method
from .config import RunConfig
from .data import RunData, texts_of
from .scoring import dev_accuracy, mean_loss


def fit(model: TextClassifier, cfg: RunConfig, data: RunData, acc, run: RunDir | None = None,
        quiet: bool = True, loss_fn: Callable | None = None) -> tuple["BestOnDev", dict]:
    """Train `model` on the few-shot set with model choice on the few-shot dev set (nothing for
    zero-shot); the best state is restored. Returns the model choice and the training numbers.
    `loss_fn(model, examples)`: the batch loss (default: cross-entropy to the labels, `label_loss`;
    PET's distillation passes its soft-label loss)."""
    train, dev = data.few_shot.train, data.few_shot.dev
    trains = get_method(cfg.method).trains
    best = BestOnDev(model, dev_accuracy(model, dev, cfg.eval_batch_size), cfg.patience, keep_states=trains)
    _log(run, 0, dev_accuracy=best.accuracy)
    extra: dict = {"trainable_parameters": 0}
    if not trains:
        return best, extra
    params = trainable_parameters(model, cfg)
    opt, sched = make_optimizer(params, cfg)
    order = BatchOrder(len(train), cfg.batch_size, cfg.seed, drop_last=False)
    extra.update(trainable_parameters=sum(p.numel() for p in params),
                 train_loss_before=train_loss(model, train, cfg.eval_batch_size, loss_fn))
    losses: list[float] = []
    model.train()
    for step in _steps(cfg, quiet):
        batch = [train[i] for i in process_share(order.next().tolist(), acc, at_least_one=True)]
        loss = (loss_fn or label_loss)(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        average_gradients(acc, params)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
        if step % cfg.eval_every == 0 or step == cfg.steps:
            dev_acc = dev_accuracy(model, dev, cfg.eval_batch_size)
            _log(run, step, loss=sum(losses) / len(losses), dev_accuracy=dev_acc, lr=sched.get_last_lr()[0])
            losses = []
            if best.update(step, dev_acc):  # patience ran out
                break
    # loss on the whole few-shot training set, eval mode, after the last step
    extra["train_loss_after"] = train_loss(model, train, cfg.eval_batch_size, loss_fn)
    best.restore()
    return best, extra


def label_loss(model: TextClassifier, examples) -> torch.Tensor:
    """Cross-entropy of the examples' labels under softmax(scores): the batch loss of every run but PET's distillation."""
    texts, texts_b = texts_of(examples)
    return model.loss(texts, [ex.label for ex in examples], texts_b)


@torch.no_grad()
def train_loss(model: TextClassifier, examples, batch_size: int, loss_fn: Callable | None = None) -> float:
    """The loss on the whole training set in eval mode: `mean_loss`, or `loss_fn`'s batch losses weighted by size."""
    if loss_fn is None:
        return mean_loss(model, examples, batch_size)
    was_training = model.training
    model.eval()
    chunks = [examples[i:i + batch_size] for i in range(0, len(examples), batch_size)]
    total = sum(float(loss_fn(model, chunk)) * len(chunk) for chunk in chunks)
    model.train(was_training)
    return total / len(examples)


class BestOnDev:
    """Model choice on the dev set: the state with the highest dev accuracy so far (ties keep the
    earlier one), and early stopping after `patience` evaluations without improvement (0: never)."""

    def __init__(self, model: TextClassifier, accuracy_at_start: float, patience: int, keep_states: bool = True):
        self.model, self.patience, self.keep_states = model, patience, keep_states
        self.step, self.accuracy, self.bad_evals = 0, accuracy_at_start, 0
        self.state = self._snapshot()

    def _snapshot(self) -> dict | None:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()} if self.keep_states else None

    def update(self, step: int, dev_acc: float) -> bool:
        """Record a dev evaluation; True when training should stop."""
        if dev_acc > self.accuracy or (math.isnan(self.accuracy) and not math.isnan(dev_acc)):
            self.step, self.accuracy, self.bad_evals = step, dev_acc, 0
            self.state = self._snapshot()
            return False
        self.bad_evals += 1
        return bool(self.patience) and self.bad_evals >= self.patience

    def restore(self) -> None:
        """Load the best state back into the model and free the copy."""
        self.model.load_state_dict(self.state)
        self.state = None


def trainable_parameters(model: TextClassifier, cfg: RunConfig) -> list:
    params = [p for p in model.trainable_parameters() if p.requires_grad]
    if not params:
        raise UserError(f"method {cfg.method} has no trainable parameters with template {cfg.template!r}; "
                        "add {soft} tokens or use --train all")
    return params


def make_optimizer(params: list, cfg: RunConfig):
    """AdamW with a linear warm-up over `warmup * steps` steps, then linear decay to zero."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    warmup = int(round(cfg.warmup * cfg.steps))
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, warmup, decay="linear"))


def _steps(cfg: RunConfig, quiet: bool):
    steps = range(1, cfg.steps + 1)
    return steps if quiet else progress(steps, desc=f"{cfg.method} {cfg.dataset} K={cfg.shots} s={cfg.seed}")


def _log(run: RunDir | None, step: int, **metrics) -> None:
    if run is not None:
        run.log_metrics(step, **metrics)


def average_gradients(acc, params) -> None:
    """Replace every gradient by its mean over the processes (a missing gradient counts as zero)."""
    if acc.num_processes == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        p.grad = acc.reduce(p.grad, reduction="mean")
