"""Splits are stored class-interleaved, and evaluation subsets are stratified: no "first n" of a
split is class-biased."""

import numpy as np
import pytest

from diffprompt.data import IMAGE_SETS, TEXT_SETS, load_images, load_text
from diffprompt.data.splits import interleaved_order, stratified_sample


def installed(catalog):
    return [name for name, entry in catalog.items() if entry.installed()]


def split_labels():
    for name in installed(IMAGE_SETS):
        ds = load_images(name)
        for split in ds.splits:
            yield f"{name}/{split}", ds.split(split).labels
    for name in installed(TEXT_SETS):
        ds = load_text(name)
        for split in ds.splits:
            yield f"{name}/{split}", ds.split(split).labels


def test_the_first_tenth_of_every_split_holds_every_class_in_its_share():
    seen = 0
    for what, labels in split_labels():
        labels = np.asarray(labels)
        k = len(labels) // 10
        share = np.bincount(labels) / len(labels)
        first = np.bincount(labels[:k], minlength=len(share))
        assert np.all(np.abs(first - k * share) <= 0.5 * k * share), (what, first, k * share)
        seen += 1
    assert seen >= 2  # mnist5k and MR are always installed


@pytest.mark.parametrize("seed", [0, 1])
def test_interleaved_order_keeps_every_prefix_within_one_of_its_share(seed):
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.integers(0, 5, size=500) ** 2 % 7)  # class-sorted, unequal classes
    order = interleaved_order(labels, [str(i) for i in range(len(labels))], seed=seed)
    assert sorted(order.tolist()) == list(range(500))
    share = np.bincount(labels) / len(labels)
    counts = np.zeros(len(share))
    for k, i in enumerate(order, start=1):
        counts[labels[i]] += 1
        assert np.all(np.abs(counts - k * share) <= 1.0 + 1e-9), k
    # without keys, each class keeps its order
    plain = interleaved_order(labels)
    for c in np.unique(labels):
        members = plain[labels[plain] == c]
        assert np.all(np.diff(members) > 0)


def test_stratified_sample_gives_each_class_its_share_and_is_stable():
    labels = np.repeat(np.arange(4), [100, 200, 300, 400])
    idx = stratified_sample(labels, 100, seed=3)
    assert len(set(idx.tolist())) == 100 and np.bincount(labels[idx]).tolist() == [10, 20, 30, 40]
    assert np.array_equal(idx, stratified_sample(labels, 100, seed=3))
    assert not np.array_equal(np.sort(idx), np.sort(stratified_sample(labels, 100, seed=4)))
    # largest remainder: 7 of (1, 1, 1) shares -> 3, 2, 2 in some order; 0 and all work
    three = np.repeat(np.arange(3), 5)
    assert sorted(np.bincount(three[stratified_sample(three, 7)]).tolist()) == [2, 2, 3]
    assert len(stratified_sample(labels, 0)) == 0 and len(stratified_sample(labels, 1000)) == 1000
    with pytest.raises(ValueError):
        stratified_sample(labels, 1001)
