"""Scoring examples with a classifier: scores, loss and dev accuracy during a run, and the
evaluation and predictions of a finished run folder."""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from ...errors import UserError
from ...rundir import RunDir
from ..models.classifier import TextClassifier
from .config import dataset_tag
from .metrics import accuracy, macro_f1
from .data import class_names_of, limit_examples, load_data, split_or_none, texts_of
from .folder import load_run_model


def score(model: TextClassifier, examples, batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
    """[N, num_labels] scores of examples, in eval mode (a progress bar when `desc` is given)."""
    texts, texts_b = texts_of(examples)
    return model.scores_in_batches(texts, texts_b, batch_size, desc)


def mean_loss(model: TextClassifier, examples, batch_size: int = 64) -> float:
    """Mean cross-entropy over `examples`, in eval mode, without gradients."""
    labels = torch.tensor([ex.label for ex in examples], dtype=torch.long)
    return float(F.cross_entropy(score(model, examples, batch_size), labels))


def dev_accuracy(model: TextClassifier, examples, batch_size: int = 64) -> float:
    """Accuracy on the dev examples (NaN when there are none)."""
    if not examples:
        return math.nan
    return accuracy(score(model, examples, batch_size).argmax(-1).tolist(), [ex.label for ex in examples])


def evaluate_run(run_dir: str | Path, dataset: str | None = None, split: str = "test", limit: int | None = None,
                 device: str = "cpu") -> dict:
    """Accuracy and macro-F1 of a trained run folder on a split (default: its own data set's test
    split); also written to `evaluate-DATASET-SPLIT.json` in the folder."""
    model, conf = load_run_model(run_dir, device)
    dataset = dataset or conf["dataset"]
    ds = load_data(dataset)
    names = class_names_of(ds)
    if names != list(conf["class_names"]):
        raise UserError(f"data set {dataset!r} has labels {names} but the run was trained on {conf['class_names']}; "
                        "evaluate on a data set with the same labels")
    part = split_or_none(ds, split)
    if part is None or not part.examples:
        raise UserError(f"data set {dataset!r} has no {split} examples")
    examples = limit_examples(part.examples, limit, salt="limit-test")
    pred = score(model, examples, desc=f"evaluate {split}").argmax(-1).tolist()
    gold = [ex.label for ex in examples]
    res = {"dataset": dataset, "split": split, "n": len(examples), "accuracy": accuracy(pred, gold),
           "macro_f1": macro_f1(pred, gold, len(names)), "run": str(run_dir), "method": conf["method"]}
    RunDir(run_dir).save_json(f"evaluate-{dataset_tag(dataset)}-{split}.json", res)
    return res


def predict_texts(model: TextClassifier, texts: list[str], class_names: list[str], batch_size: int = 64) -> list[dict]:
    """One row per text: the predicted label, its score, and every label's score. A tab in a text
    separates the second input of a pair task."""
    pair = any("\t" in t for t in texts)
    first = [t.split("\t", 1)[0] for t in texts]
    second = [t.split("\t", 1)[1] if "\t" in t else "" for t in texts] if pair else None
    rows = []
    for text, row in zip(texts, model.scores_in_batches(first, second, batch_size)):
        j = int(row.argmax())
        rows.append({"text": text, "label": class_names[j], "score": round(float(row[j]), 4),
                     "scores": {n: round(float(v), 4) for n, v in zip(class_names, row.tolist())}})
    return rows
