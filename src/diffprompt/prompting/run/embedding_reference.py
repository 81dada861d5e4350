"""The runner of `embedding-logreg`, the reference row that is not a prompting method.

One run, on the same few-shot draw as every method: embed the K training and K dev examples per
class with the sentence encoder (`--demo-encoder`, default the packaged all-MiniLM-L6-v2), fit a
logistic regression for each C in `C_GRID` (models/embedding_logreg.py), keep the C with the best
few-shot dev accuracy (ties keep the smaller C, the stronger regularisation), and test it. The run
folder is every run's (config.json, metrics.jsonl with one line per C, predictions.jsonl,
examples.json, results.json with the chosen C, the fitted head in `logreg.safetensors`, DONE).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from pathlib import Path

from ...errors import UserError
from ...progress import log
from ..models.embedding_logreg import C_GRID, EmbeddingLogReg, fit_logistic_regression
from ..models.sentence_encoder import SentenceEncoder
from .config import RunConfig
from .data import prepare_data, texts_of
from .folder import run_results, start_run_folder, write_outputs
from .metrics import accuracy
from .scoring import score


@dataclass
class ChosenC:
    """The model choice on dev, shaped as the loop's `BestOnDev` for results.json (`step`: C's index)."""
    accuracy: float
    step: int
    c: float


def train_embedding_logreg(cfg: RunConfig, out: str | Path | None, ds=None, backbone=None, quiet: bool = False,
                           extra_config: dict | None = None) -> dict:
    """Fit, choose C on dev, test, write the run folder; returns results.json's dict. `backbone` is
    not used: the sentence encoder is this method's only network."""
    t0 = time.time()
    data = prepare_data(cfg, ds)
    cfg = cfg.resolved(pair=data.pair)
    if data.pair:
        raise UserError(f"{cfg.dataset} is a pair task; the embedding-logreg reference embeds one text per example")
    encoder = SentenceEncoder(cfg.demo_encoder)
    model = EmbeddingLogReg(encoder, len(data.class_names))
    run = start_run_folder(out, cfg, data, encoder.model, extra_config)
    train, dev = data.few_shot.train, data.few_shot.dev
    x, y = model.embed(texts_of(train)[0]), torch.tensor([ex.label for ex in train])
    x_dev = model.embed(texts_of(dev)[0]).double() if dev else None  # each text embedded once, for every C
    best, head = None, None
    for i, c in enumerate(C_GRID):
        w, b = fit_logistic_regression(x, y, len(data.class_names), c)
        acc = accuracy((x_dev @ w.T + b).argmax(-1).tolist(), [ex.label for ex in dev]) if dev else float("nan")
        if run is not None:
            run.log_metrics(i, c=c, dev_accuracy=acc)
        if best is None or acc > best.accuracy:
            best, head = ChosenC(acc, i, c), (w, b)
    model.set_head(*head, c=best.c)
    extra = {"trainable_parameters": sum(p.numel() for p in model.trainable_parameters()), "c": best.c,
             "train_seconds": round(time.time() - t0, 2), "calibrate": cfg.calibrate}
    t1 = time.time()
    test_scores = score(model, data.test, cfg.eval_batch_size, desc=None if quiet else "test")
    extra["test_seconds"] = round(time.time() - t1, 2)
    results = run_results(cfg, data, model, test_scores, best, extra)
    if run is not None:
        write_outputs(run, model, cfg, data, test_scores, results)
    if not quiet:
        log(f"embedding-logreg on {cfg.dataset} (K={cfg.shots}, seed {cfg.seed}): test accuracy "
            f"{results['test_accuracy']:.4f} (C = {best.c:g}, dev {best.accuracy:.3f})")
    return results
