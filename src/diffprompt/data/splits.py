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
    hashes = [stable_hash(f"{salt}\0".encode() + (key.encode() if isinstance(key, str) else key), seed) for key in keys]
    chosen = sorted(range(len(keys)), key=lambda i: (hashes[i], i))[:k]
    return np.array(sorted(chosen), dtype=np.int64)
