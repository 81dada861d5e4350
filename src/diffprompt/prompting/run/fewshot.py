"""The few-shot protocol of LM-BFF (Gao et al. 2021): K examples per class, five seeds.

For each seed, `sample_few_shot` draws from the *train* split, per class:

- K examples for the few-shot training set, and
- K further examples (disjoint from the first K) for the few-shot dev set, used for early
  stopping and model choice (LM-BFF's "|D_dev| = |D_train|").

Evaluation is always on the full test split, which the sampler never touches. Results are
reported as mean (std) over the seeds `LMBFF_SEEDS`.

The draw is deterministic: it depends only on the seed, K and the examples of each class in
the order the data layer gives them (its splits are fixed and stable), not on Python's hash
seed or on global random state. Texts that occur twice in train are counted once, so the
train and dev draws can never share a text.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Hashable, Sequence

from ...errors import UserError

LMBFF_SEEDS: tuple[int, ...] = (13, 21, 42, 87, 100)
"""The five data seeds of LM-BFF's few-shot protocol."""

CURVE_SHOTS: tuple[int, ...] = (4, 8, 16, 32)
"""The K values of the learning curve."""


@dataclass
class FewShotSplit:
    """A few-shot draw: `train` and `dev` (lists of examples), with how they were drawn."""

    k: int
    seed: int
    train: list = field(default_factory=list)
    dev: list = field(default_factory=list)
    label_counts: dict = field(default_factory=dict)  # label -> number available in the source


def group_by_label(examples: Sequence[Any]) -> "OrderedDict[Hashable, list]":
    """Examples per label, labels in first-seen order sorted for stability, duplicates dropped."""
    from ...data.text import input_key  # here: the CLI imports this module and must not load the data layer

    groups: dict[Hashable, list] = {}
    seen: set = set()
    for ex in examples:
        key = input_key(ex)
        if key in seen:
            continue
        seen.add(key)
        groups.setdefault(ex.label, []).append(ex)
    return OrderedDict(sorted(groups.items(), key=lambda kv: str(kv[0])))


def check_training_set(examples: Sequence[Any], what: str = "training set") -> None:
    """A `UserError` for an empty or single-class set: nothing to learn from."""
    if len(examples) == 0:
        raise UserError(f"the {what} is empty; give a data set with examples of at least two classes")
    labels = {ex.label for ex in examples}
    if len(labels) < 2:
        (only,) = labels
        raise UserError(
            f"the {what} has a single class ({only!r}, {len(examples)} examples); "
            "a classifier needs examples of at least two classes"
        )


def _label_name(label: Hashable, class_names: Sequence[str] | None) -> str:
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        return f"{class_names[label]!r} (label {label})"
    return repr(label)


def sample_few_shot(
    examples: Sequence[Any],
    k: int,
    seed: int,
    dev_k: int | None = None,
    class_names: Sequence[str] | None = None,
) -> FewShotSplit:
    """Draw K examples per class for training and `dev_k` (default K) more per class for dev.

    `examples` is the train split (objects with `.text`, `.label`, optional `.text_b`).
    Raises a `UserError` when the set is empty or single-class, or when a class has fewer
    than K + dev_k distinct examples (naming the class and its count).
    """
    k = int(k)
    if k < 1:
        raise UserError(f"K (--shots) must be at least 1, got {k}")
    dev_k = k if dev_k is None else int(dev_k)
    if dev_k < 0:
        raise UserError(f"the dev size per class must be >= 0, got {dev_k}")
    check_training_set(examples, "training split")
    groups = group_by_label(examples)
    need = k + dev_k
    for label, items in groups.items():
        if len(items) < need:
            raise UserError(
                f"K={k} is larger than class {_label_name(label, class_names)} allows: it has "
                f"{len(items)} distinct training examples and the protocol needs {need} "
                f"({k} train + {dev_k} dev); use --shots {max(1, len(items) // 2)} or fewer"
            )
    train, dev = [], []
    for i, (label, items) in enumerate(groups.items()):
        # One independent stream per (seed, class index): adding a class does not move the others.
        rng = random.Random(f"lmbff-{seed}-{i}-{label}")
        order = list(range(len(items)))
        rng.shuffle(order)
        train.extend(items[j] for j in order[:k])
        dev.extend(items[j] for j in order[k:need])
    # Interleave classes in a seeded order, so that a batch is not all one class.
    mix = random.Random(f"lmbff-order-{seed}")
    mix.shuffle(train)
    mix.shuffle(dev)
    return FewShotSplit(
        k=k, seed=int(seed), train=train, dev=dev, label_counts={lab: len(v) for lab, v in groups.items()}
    )


def majority_baseline(test_examples: Sequence[Any]) -> dict:
    """LM-BFF's "majority" row: the accuracy of always predicting the test set's most frequent class."""
    counts: dict = {}
    for ex in test_examples:
        counts[ex.label] = counts.get(ex.label, 0) + 1
    if not counts:
        return {"label": None, "accuracy": float("nan"), "n": 0}
    label = max(sorted(counts, key=str), key=lambda lab: counts[lab])
    return {"label": label, "accuracy": counts[label] / len(test_examples), "n": len(test_examples)}
