"""The examples of one prompting run: the few-shot train/dev draw, the test split, the label names."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from ...data import load_text
from ...errors import UserError
from .config import RunConfig
from .fewshot import FewShotSplit, check_training_set, sample_few_shot


@dataclass
class RunData:
    few_shot: FewShotSplit  # train and dev (K per class each, or the whole splits with shots=0)
    test: list
    class_names: list[str]
    pair: bool  # a pair task: some example has a second text


def load_data(dataset: str):
    return load_text(dataset)


def split_or_none(ds, name: str):
    """The named split of a data set, or None for a file without that split."""
    try:
        return ds.split(name)
    except (KeyError, ValueError) as e:
        if isinstance(e, UserError):
            raise
        return None


def class_names_of(ds) -> list[str]:
    return [str(n) for n in ds.class_names]


def saved_class_names(record: dict) -> list[str] | None:
    """The class names a run's config.json or an adapter's diffprompt.json holds (files written
    before images and text shared the name call them "label_names")."""
    return record.get("class_names", record.get("label_names"))


def limit_examples(examples: Sequence[Any], n: int | None, salt: str = "limit-test") -> list:
    """A deterministic, class-mixed subsample of n examples (all of them when n is None)."""
    examples = list(examples)
    if n is None or n >= len(examples):
        return examples
    if n < 1:
        raise UserError(f"--limit-test must be at least 1, got {n}")
    order = list(range(len(examples)))
    random.Random(salt).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


def texts_of(examples) -> tuple[list[str], list[str] | None]:
    """(first texts, second texts or None): the model inputs of a list of examples."""
    texts = [ex.text for ex in examples]
    pair = any(getattr(ex, "text_b", None) is not None for ex in examples)
    return texts, ([getattr(ex, "text_b", None) or "" for ex in examples] if pair else None)


def check_labels(examples, class_names: list[str], what: str) -> None:
    bad = sorted({ex.label for ex in examples if not (isinstance(ex.label, int) and 0 <= ex.label < len(class_names))}, key=str)
    if bad:
        raise UserError(f"the {what} has labels {bad[:5]} outside the data set's {len(class_names)} classes {class_names}")


def prepare_data(cfg: RunConfig, ds=None) -> RunData:
    """The examples a config asks for (`ds`: a loaded data set to reuse, else `cfg.dataset` is loaded)."""
    ds = ds if ds is not None else load_data(cfg.dataset)
    class_names = class_names_of(ds)
    train_split, test_split = split_or_none(ds, "train"), split_or_none(ds, "test")
    train = list(train_split.examples) if train_split is not None else []
    if test_split is None or len(test_split.examples) == 0:
        raise UserError(f"data set {cfg.dataset!r} has no test examples; give a file with enough rows for a test split")
    test = limit_examples(test_split.examples, cfg.limit_test)
    check_labels(train, class_names, "training split")
    if cfg.shots > 0:
        few_shot = sample_few_shot(train, cfg.shots, cfg.seed, class_names=class_names)
    else:
        check_training_set(train, "training split")
        dev_split = split_or_none(ds, "dev")
        few_shot = FewShotSplit(k=0, seed=cfg.seed, train=train, dev=list(dev_split.examples) if dev_split else [])
    pair = any(getattr(ex, "text_b", None) is not None for ex in train + test)
    return RunData(few_shot, test, class_names, pair)
