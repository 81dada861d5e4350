"""One prompting run: few-shot draw, training with model choice on the few-shot dev set, test.

`train_run(RunConfig, out)` does, for one data set, method, K and seed:

1. load the data set and draw K examples per class for training and K more for dev
   (`run_data.prepare_data`; `shots=0` uses the whole train and dev splits);
2. build the model: a `PromptClassifier` (zero-shot, prompt-ft, soft, hybrid) or a
   `FineTuneClassifier` (finetune) on a fresh copy of the backbone; with `--verbalizer auto`
   its label words are searched first (`choose_label_words`, label_search.py);
3. train with AdamW (linear warm-up then linear decay) for `steps` optimiser steps, sampling
   batches by epochs over the few-shot set; every `eval_every` steps (and before the first step)
   the dev accuracy is measured, and the best state so far is kept in memory (ties keep the
   earlier state); `patience` stops early;
4. restore the best state; with `--calibrate`, compute the calibration reference of the
   trained model (calibration.py); evaluate on the test split, and write the run folder
   (`run_folder.write_outputs`); with `log_with`, its metrics lines also go to TensorBoard or
   W&B (tracking.py).

Multi-process training goes through Accelerate (`torchrun --standalone --nproc_per_node 2 -m
diffprompt prompting train ...` on CPUs with gloo, `accelerate launch --num_processes N -m ...` on
GPUs; `accelerate launch --cpu` starts a single process): each process takes its share of every
global batch and the gradients are averaged across processes before each step
(`distributed.py`). Only the main process writes.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import torch

from ...errors import UserError
from ...progress import log, progress
from ...rundir import RunDir
from ...seeding import seed_everything
from ...tracking import end_tracking, start_tracking
from ..models.backbone import fresh_backbone
from .build import build_model
from ..prompts.calibration import FILE as CALIBRATION_FILE, fit_calibration
from ..models.classifier import TextClassifier
from .config import AUTO, RunConfig
from ..distributed import average_gradients, get_accelerator, process_share
from .scoring import dev_accuracy, mean_loss, score
from .fewshot import majority_baseline
from .label_search import search_label_words, verbalizer_spec
from ..methods.registry import get_method
from .metrics import accuracy, macro_f1
from .data import RunData, load_data, prepare_data, split_or_none, texts_of
from .folder import LABEL_WORDS_FILE, start_run_folder, write_outputs
from ..prompts.template import Template


def train_run(cfg: RunConfig, out: str | Path | None, ds=None, backbone=None, quiet: bool = False,
              extra_config: dict | None = None) -> dict:
    """Run one config and return its results dict (also written to `out/results.json`).

    `ds`: a loaded TextDataset to reuse; `backbone`: a fresh (model, tokenizer) to train (it is
    modified); both are loaded when None.
    """
    if cfg.method == "pet":  # several models and a distillation (pet.py, which imports this module)
        from .pet import train_pet

        return train_pet(cfg, out, ds, backbone, quiet, extra_config)
    t0 = time.time()
    data = prepare_data(cfg, ds)
    cfg = cfg.resolved(pair=data.pair)
    acc = get_accelerator(cfg.device)
    bb, tok = backbone if backbone is not None else fresh_backbone(cfg.backbone)
    search = choose_label_words(cfg, data, bb, tok, acc) if cfg.verbalizer == AUTO else None
    seed_everything(cfg.seed)
    model = build_model(replace(cfg, verbalizer=search["verbalizer"]) if search else cfg, bb, tok, data.label_names,
                        data.few_shot.train)
    prepare_demonstrations(model, data)
    run = start_run_folder(out, cfg, data, bb, extra_config, enabled=acc.is_main_process)
    start_tracking(run, cfg.log_with)
    model.to(acc.device)
    best, extra = fit(model, cfg, data, acc, run, quiet)
    model.eval()
    calibration = fit_calibration(model, cfg.calibrate, lambda: train_split(ds, cfg.dataset), data.pair,
                                  cfg.domain_examples, cfg.eval_batch_size)
    extra.update(train_seconds=round(time.time() - t0, 2), calibrate=cfg.calibrate)

    t1 = time.time()
    test_scores = score(model, data.test, cfg.eval_batch_size, desc=None if quiet else "test")
    extra["test_seconds"] = round(time.time() - t1, 2)
    results = run_results(cfg, data, model, test_scores, best, extra)
    if run is not None:
        for name, info in ((LABEL_WORDS_FILE, search), (CALIBRATION_FILE, calibration)):
            if info is not None:
                run.save_json(name, info)
        write_outputs(run, model, cfg, data, test_scores, results)
        end_tracking(run)
    if not quiet:
        log(f"{cfg.method} on {cfg.dataset} (K={cfg.shots}, seed {cfg.seed}): test accuracy {results['test_accuracy']:.4f} "
            f"(dev {best.accuracy:.3f} at step {best.step})")
    acc.wait_for_everyone()
    return results


def prepare_demonstrations(model: TextClassifier, data: RunData) -> None:
    """--demos similar: embed every input of the run (train, dev, test) once, in batches, up front."""
    demos = getattr(model, "demos", None)
    if demos is not None:
        for part in (data.few_shot.train, data.few_shot.dev, data.test):
            if part:
                demos.prepare(*texts_of(part))


def train_split(ds, dataset: str) -> list:
    """The whole train split (unlabeled texts for --calibrate domain)."""
    part = split_or_none(ds if ds is not None else load_data(dataset), "train")
    return list(part.examples) if part is not None else []


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
    batches = global_batches(len(train), cfg.batch_size, cfg.seed)
    extra.update(trainable_parameters=sum(p.numel() for p in params),
                 train_loss_before=train_loss(model, train, cfg.eval_batch_size, loss_fn))
    losses: list[float] = []
    model.train()
    for step in _steps(cfg, quiet):
        batch = [train[i] for i in process_share(next(batches), acc)]
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


def choose_label_words(cfg: RunConfig, data: RunData, backbone, tokenizer, acc) -> dict:
    """--verbalizer auto (label_search.py): the candidates found on the K training examples; the first
    `auto_finetune` are each trained `auto_steps` steps on a copy of the backbone (zero-shot: not
    trained) and the best few-shot dev accuracy wins (ties: the better zero-shot training accuracy).
    Returns label_words.json's dict, whose "verbalizer" is the chosen words."""
    found = search_label_words(backbone, tokenizer, Template(cfg.template), data.few_shot.train,
                               len(data.label_names), cfg.auto_words, cfg.auto_candidates, cfg.max_length,
                               cfg.eval_batch_size)
    short = replace(cfg, steps=cfg.auto_steps, patience=0)
    tried = found.candidates[:cfg.auto_finetune]
    for cand in tried:
        seed_everything(cfg.seed)
        model = build_model(replace(short, verbalizer=verbalizer_spec(cand["words"])), copy.deepcopy(backbone),
                            tokenizer, data.label_names, data.few_shot.train).to(acc.device)
        cand["dev_accuracy"] = fit(model, short, data, acc)[0].accuracy
        cand["steps"] = short.steps if get_method(cfg.method).trains else 0
    chosen = max(tried, key=lambda c: c["dev_accuracy"])  # max keeps the first of equals
    return {"chosen": dict(zip(data.label_names, chosen["words"])), "verbalizer": verbalizer_spec(chosen["words"]),
            **found.to_json(data.label_names),
            "settings": {k: getattr(cfg, k) for k in ("auto_words", "auto_candidates", "auto_finetune", "auto_steps")}}


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
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, warmup))


def lr_factor(step: int, total: int, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def global_batches(n: int, batch_size: int, seed: int) -> Iterator[list[int]]:
    """Endless global batches of example indices: epochs over the n examples, each shuffled by a
    seeded generator, so every process draws the same batches."""
    gen = random.Random(f"batches-{seed}")
    order: list[int] = []
    while True:
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(n))
                gen.shuffle(order)
            batch.append(order.pop())
        yield batch


def run_results(cfg: RunConfig, data: RunData, model: TextClassifier, test_scores, best: BestOnDev, extra: dict) -> dict:
    """results.json: test accuracy and macro-F1, the chosen dev state, the majority class, sizes."""
    pred = test_scores.argmax(-1).tolist()
    gold = [ex.label for ex in data.test]
    return {
        "dataset": cfg.dataset, "method": cfg.method, "shots": cfg.shots, "seed": cfg.seed,
        "test_accuracy": accuracy(pred, gold), "test_macro_f1": macro_f1(pred, gold, len(data.label_names)),
        "dev_accuracy": best.accuracy, "best_step": best.step,
        "majority_accuracy": majority_baseline(data.test)["accuracy"],
        "num_train": len(data.few_shot.train), "num_dev": len(data.few_shot.dev), "num_test": len(data.test),
        "template": cfg.template, "label_words": model.label_descriptions(data.label_names), **extra,
    }


def _steps(cfg: RunConfig, quiet: bool):
    steps = range(1, cfg.steps + 1)
    return steps if quiet else progress(steps, desc=f"{cfg.method} {cfg.dataset} K={cfg.shots} s={cfg.seed}")


def _log(run: RunDir | None, step: int, **metrics) -> None:
    if run is not None:
        run.log_metrics(step, **metrics)
