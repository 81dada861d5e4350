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


def test_every_prefix_of_every_split_keeps_each_class_near_its_share():
    """The stored order (`interleaved_order`) puts the i-th of a class's n_c members at rank
    (i + 1/2) / n_c, so a prefix that reaches rank r holds r·n_c ± 1/2 of class c and r·N ± K/2
    examples in all: class c is within 1/2 + share_c·K/2 of its share of every prefix (within one
    example when the K classes are equally large). A shuffled split misses this by ~sqrt(prefix)."""
    seen = 0
    for what, labels in split_labels():
        labels = np.asarray(labels)
        share = np.bincount(labels) / len(labels)
        counts = np.cumsum(np.eye(len(share))[labels], axis=0)  # [prefix length - 1, class]
        deviation = np.abs(counts - np.arange(1, len(labels) + 1)[:, None] * share)
        bound = 0.5 + share * (share > 0).sum() / 2
        assert np.all(deviation <= bound + 1e-9), (what, deviation.max(0), bound)
        seen += 1
    assert seen >= 2  # mnist5k and MR are always installed


def test_a_shuffled_split_breaks_that_bound():
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(10), 500))
    counts = np.cumsum(np.eye(10)[labels], axis=0)
    assert np.abs(counts - np.arange(1, 5001)[:, None] / 10).max() > 1.0


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
