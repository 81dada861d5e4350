"""Classification metrics on predicted and gold label indices."""

from __future__ import annotations

from typing import Sequence


def accuracy(pred: Sequence[int], gold: Sequence[int]) -> float:
    """The fraction of predictions equal to the gold label (NaN for no examples)."""
    if len(gold) == 0:
        return float("nan")
    return sum(int(p == g) for p, g in zip(pred, gold)) / len(gold)


def macro_f1(pred: Sequence[int], gold: Sequence[int], num_labels: int) -> float:
    """The mean over classes of F1 = 2 TP / (2 TP + FP + FN); a class never predicted correctly scores 0."""
    f1s = []
    for c in range(num_labels):
        tp = sum(1 for p, g in zip(pred, gold) if p == c and g == c)
        fp = sum(1 for p, g in zip(pred, gold) if p == c and g != c)
        fn = sum(1 for p, g in zip(pred, gold) if p != c and g == c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / max(1, len(f1s))
