"""Loading a data set of either kind: a named set, a folder of images or a text file, by `dataset_kind`."""

from __future__ import annotations

import os

from ..errors import UserError
from .catalog import dataset_kind
from .images import ImageDataset, load_images
from .text import TextDataset, load_text


def load_dataset(name_or_path: str | os.PathLike, split: str | None = None,
                 size: int | None = None) -> ImageDataset | TextDataset:
    """`load_images` or `load_text`, as the name's kind says; `split` gives one split, `size` resizes
    the images of a folder."""
    if dataset_kind(name_or_path) == "image":
        if split == "dev":
            raise UserError("image sets have train and test splits only; use --split train or --split test")
        return load_images(name_or_path, split, **({"size": size} if size else {}))
    if size:
        raise UserError("--size applies to image folders only")
    return load_text(name_or_path, split)
