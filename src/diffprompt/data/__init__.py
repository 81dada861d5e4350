"""The offline data sets: images for the diffusion part, text classification for prompting.

    from diffprompt.data import load_images, load_text
    mnist = load_images("mnist5k")            # ImageDataset: .images uint8 [N, H, W, C], .labels, .class_names
    train = load_images("mnist5k", split="train")
    mr = load_text("mr")                      # TextDataset: .examples [Example(text, label, text_b)], .class_names
    test = mr.split("test")

Named sets are listed in IMAGE_SETS / TEXT_SETS (`diffprompt data list`); a folder of images or a
CSV/TSV/JSONL file works the same way. See docs/data.md for sizes, splits and formats.
"""

from .catalog import IMAGE_SETS, TEXT_SETS, DataWarning, DatasetInfo
from .images import ImageDataset, load_images
from .sources import MissingSourceError
from .text import Example, TextDataset, load_text

__all__ = [
    "IMAGE_SETS",
    "TEXT_SETS",
    "DataWarning",
    "DatasetInfo",
    "Example",
    "ImageDataset",
    "MissingSourceError",
    "TextDataset",
    "load_images",
    "load_text",
]
