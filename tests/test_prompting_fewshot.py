"""The LM-BFF few-shot sampler: deterministic, balanced, disjoint from dev and test."""

from __future__ import annotations

from collections import Counter

import pytest

from diffprompt.data import Example, load_text
from diffprompt.errors import UserError
from diffprompt.prompting.run.fewshot import LMBFF_SEEDS, majority_baseline, sample_few_shot


def _toy(counts: dict[int, int]) -> list[Example]:
    return [Example(f"class {c} example {i}", c) for c, n in counts.items() for i in range(n)]


@pytest.fixture(scope="module")
def mr():
    return load_text("mr")


def test_deterministic_across_calls_and_input_copies(mr):
    train = mr.split("train").examples
    a = sample_few_shot(train, 16, 42)
    b = sample_few_shot(list(train), 16, 42)
    assert [e.text for e in a.train] == [e.text for e in b.train]
    assert [e.text for e in a.dev] == [e.text for e in b.dev]
    # different seeds give different draws
    c = sample_few_shot(train, 16, 13)
    assert {e.text for e in c.train} != {e.text for e in a.train}


def test_balanced_and_disjoint_from_dev_and_test(mr):
    train = mr.split("train").examples
    test_texts = {e.text for e in mr.split("test").examples}
    dev_split_texts = {e.text for e in mr.split("dev").examples}
    for seed in LMBFF_SEEDS:
        for k in (4, 16):
            fs = sample_few_shot(train, k, seed)
            assert Counter(e.label for e in fs.train) == {0: k, 1: k}
            assert Counter(e.label for e in fs.dev) == {0: k, 1: k}
            tr, dv = {e.text for e in fs.train}, {e.text for e in fs.dev}
            assert len(tr) == 2 * k and len(dv) == 2 * k  # no duplicates inside a draw
            assert not tr & dv
            assert not (tr | dv) & test_texts
            assert not (tr | dv) & dev_split_texts


def test_multiclass_balanced_and_classes_mixed_in_order():
    ex = _toy({0: 50, 1: 40, 2: 30, 3: 20})
    fs = sample_few_shot(ex, 8, 21)
    assert Counter(e.label for e in fs.train) == {c: 8 for c in range(4)}
    assert Counter(e.label for e in fs.dev) == {c: 8 for c in range(4)}
    # the training order is shuffled, not grouped by class
    labels = [e.label for e in fs.train]
    assert labels != sorted(labels)


def test_duplicates_are_counted_once():
    ex = _toy({0: 5, 1: 5}) + _toy({0: 5, 1: 5})  # every text twice
    fs = sample_few_shot(ex, 2, 13)
    texts = [e.text for e in fs.train + fs.dev]
    assert len(texts) == len(set(texts)) == 8
    with pytest.raises(UserError, match="has 5 distinct training examples"):
        sample_few_shot(ex, 3, 13)


def test_k_larger_than_a_class_names_it():
    ex = _toy({0: 100, 1: 7})
    with pytest.raises(UserError, match=r"class 'positive' \(label 1\) .*has 7 distinct.*needs 10"):
        sample_few_shot(ex, 5, 13, class_names=["negative", "positive"])


def test_empty_and_single_class_training_sets():
    with pytest.raises(UserError, match="empty"):
        sample_few_shot([], 4, 13)
    with pytest.raises(UserError, match="single class"):
        sample_few_shot(_toy({1: 30}), 4, 13)
    with pytest.raises(UserError, match="at least 1"):
        sample_few_shot(_toy({0: 30, 1: 30}), 0, 13)


def test_majority_baseline():
    ex = _toy({0: 3, 1: 7})
    m = majority_baseline(ex)
    assert m["label"] == 1 and m["accuracy"] == pytest.approx(0.7)
