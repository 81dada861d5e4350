"""Fixed, seeded, stratified splits that do not depend on any random number generator.

Every example gets a key (for text: the text normalised for whitespace and case; for images:
a file name or the pixel bytes). The key is hashed with sha256 together with the seed, and within
each class the examples are ranked by that hash: the first ones go to `test`, the next to `dev`,
the rest to `train`. So a split depends only on the data and the seed, never on the order of the
rows, on numpy's or Python's RNG, or on the library version; an example keeps its split when
unrelated rows are added (except the few near a class's boundary, because the counts grow).

Text is deduplicated on the same normalised key BEFORE splitting, so no text is in two splits.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence

import numpy as np

SEED = 0
_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """The dedup/split key of a text: whitespace collapsed, stripped, lower-cased (casefold)."""
    return _WS.sub(" ", text).strip().casefold()


def stable_hash(key: str | bytes, seed: int = SEED) -> bytes:
    """sha256 of the seed and the key: the same on every machine and every Python version."""
    if isinstance(key, str):
        key = key.encode("utf-8")
    return hashlib.sha256(str(int(seed)).encode() + b"\0" + key).digest()


def capped_fraction(n: int, fraction: float, cap: int | None = None) -> float:
    """The effective fraction for a split: `fraction`, lowered so that about `cap` examples go there."""
    if cap is not None and n > 0 and n * fraction > cap:
        return cap / n
    return fraction


def stratified_split(
    keys: Sequence[str | bytes],
    labels: Sequence[int] | np.ndarray,
    fractions: dict[str, float],
    seed: int = SEED,
    rest: str = "train",
) -> dict[str, np.ndarray]:
    """Indices per split, e.g. fractions={"test": 0.2, "dev": 0.1} -> {"train", "dev", "test"}.

    Within each class, examples are ranked by `stable_hash(key, seed)` (ties broken by index);
    the first floor(n_c * f + 0.5) go to the first split named in `fractions`, the next to the second,
    and what is left to `rest`. Every returned index array is sorted (source order).
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(keys) != len(labels):
        raise ValueError(f"{len(keys)} keys but {len(labels)} labels")
    hashes = [stable_hash(k, seed) for k in keys]
    out: dict[str, list[int]] = {name: [] for name in fractions}
    out[rest] = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c).tolist()
        members.sort(key=lambda i: (hashes[i], i))
        start = 0
        for name, frac in fractions.items():
            k = int(math.floor(len(members) * frac + 0.5))  # round half up
            out[name].extend(members[start : start + k])
            start += k
        out[rest].extend(members[start:])
    order = [rest] + [n for n in fractions]
    return {name: np.array(sorted(out[name]), dtype=np.int64) for name in order}


def select_by_hash(keys: Sequence[str | bytes], k: int, seed: int = SEED, salt: str = "select") -> np.ndarray:
    """The indices of the `k` keys with the smallest salted hash (a stable subsample), sorted."""
    return np.sort(hash_order(keys, seed, salt)[:k])


def hash_order(keys: Sequence[str | bytes], seed: int = SEED, salt: str = "order") -> np.ndarray:
    """A stable shuffle: the positions 0..N-1 ranked by the salted hash of their keys."""
    hashes = [stable_hash(f"{salt}\0".encode() + (key.encode() if isinstance(key, str) else key), seed) for key in keys]
    return np.array(sorted(range(len(keys)), key=lambda i: (hashes[i], i)), dtype=np.int64)


def interleaved_order(labels: Sequence[int] | np.ndarray, keys: Sequence[str | bytes] | None = None,
                      seed: int = SEED) -> np.ndarray:
    """The positions 0..N-1 in the order a split is stored in: classes interleaved so that every
    prefix holds each class near its share (within 1/2 + share·K/2 examples for K classes: within
    one when the classes are equally large), never class by class.

    The i-th of a class's n_c members goes to (i + 1/2) / n_c. Within a class the members are
    ranked by the salted hash of their `keys` (a seeded, stable shuffle), or keep their order when
    no keys are given (text sets: their few-shot draws depend on it).
    """
    labels = np.asarray(labels, dtype=np.int64)
    rank = np.empty(len(labels))
    within = hash_order(keys, seed) if keys is not None else np.arange(len(labels))
    for c in np.unique(labels):
        members = within[labels[within] == c]
        rank[members] = (np.arange(len(members)) + 0.5) / len(members)
    return np.lexsort((labels, rank)).astype(np.int64)


def class_quotas(counts: Sequence[int] | np.ndarray, n: int) -> np.ndarray:
    """How many of `n` each class gets, in proportion to `counts`: the floors of the shares, then
    one more for the largest remainders (ties to the lower class). Sums to n."""
    counts = np.asarray(counts, dtype=np.int64)
    share = counts * n / counts.sum() if counts.sum() else counts.astype(np.float64)
    take = np.floor(share).astype(np.int64)
    for c in np.argsort(-(share - take), kind="stable")[: n - int(take.sum())]:
        take[c] += 1
    return take


def stratified_sample(labels: Sequence[int] | np.ndarray, n: int, seed: int = SEED, salt: str = "sample") -> np.ndarray:
    """`n` positions drawn without replacement so that each class gets its share (largest remainder).

    Within a class the positions are ranked by a salted hash of (seed, position), so the draw is
    the same on every machine; the result is interleaved (`interleaved_order`), not grouped by class.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if not 0 <= n <= len(labels):
        raise ValueError(f"cannot draw {n} of {len(labels)} examples")
    classes, counts = np.unique(labels, return_counts=True)
    take = class_quotas(counts, n)
    rank = hash_order([str(i) for i in range(len(labels))], seed, salt)
    chosen = np.array([i for c, k in zip(classes, take, strict=True) for i in rank[labels[rank] == c][:k]], dtype=np.int64)
    return chosen[interleaved_order(labels[chosen])]
