"""A small CNN classifier whose penultimate features stand in for Inception in FID and KID.

Inception weights cannot be downloaded here, so each data set gets its own feature network: a
3-stage CNN trained on the data set's train split by a `Recipe` and scored on its test split. The
named sets use the networks diffprompt ships (`feature_networks.py`); any other set gets one
trained here at first use and cached under `$DIFFPROMPT_CACHE` (default `~/.cache/diffprompt`) as
safetensors + JSON, keyed by data set, image shape, seed, epochs, torch version and device kind.
FIDs from different feature networks are not comparable with each other or with published
Inception FIDs; compare runs scored by the same network and against the real-data floor.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...cache import cache_root
from ...checkpoint import load_checkpoint, save_checkpoint
from ...data import load_images
from ...errors import UserError
from ...progress import log, progress
from ..choices import Recipe
from ..pixels import images_to_tensor

CACHE_VERSION = 3


class FeatureCNN(nn.Module):
    """Two conv stages (conv-ReLU-conv-ReLU-maxpool), a 4x4 adaptive average pool, an FC feature layer.

    The 4x4 pool keeps coarse layout (where the strokes are), which global pooling would lose, and
    lets the same network take 8x8, 28x28 and 32x32 images.
    """

    def __init__(self, in_channels: int, num_classes: int, width: int = 32, feature_dim: int = 128):
        super().__init__()
        self.config = dict(in_channels=in_channels, num_classes=num_classes, width=width, feature_dim=feature_dim)
        w1, w2 = width, 2 * width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w1, w1, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(4),
        )
        self.fc = nn.Linear(w2 * 16, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc(self.body(x).flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class FeatureClassifier:
    """A trained `FeatureCNN` with what it was trained on and where it came from.

    `source`: "shipped" (a pinned network from diffprompt's assets, the same on every machine),
    "file" (a network file the user passed) or "local" (trained on this machine and cached: its
    numbers compare only with runs on the same machine and torch version).
    """

    model: FeatureCNN
    class_names: list[str]
    test_accuracy: float
    key: str
    train_seconds: float = 0.0
    cached: bool = False
    source: str = "local"
    sha256: str = ""
    meta: dict = field(default_factory=dict)  # its sidecar, as saved

    def describe(self) -> dict:
        """What eval.json records about the network."""
        return {"test_accuracy": self.test_accuracy, "key": self.key, "cached": self.cached, "source": self.source,
                "sha256": self.sha256, "comparable": COMPARABLE[self.source]}

    @torch.no_grad()
    def run(self, images, batch_size: int = 500) -> tuple[np.ndarray, np.ndarray]:
        """Features [N, D] and class probabilities [N, K] for images (uint8 NHWC or float NCHW in [-1, 1])."""
        self.model.eval()
        x = images_to_tensor(images)
        device = next(self.model.parameters()).device
        feats, probs = [], []
        for i in range(0, x.shape[0], batch_size):
            xb = x[i:i + batch_size].to(device).clamp(-1, 1)
            f = self.model.features(xb)
            feats.append(f.double().cpu())
            probs.append(F.softmax(self.model.head(f), dim=1).double().cpu())
        return torch.cat(feats).numpy(), torch.cat(probs).numpy()


COMPARABLE = {
    "shipped": "with every run scored by this network (same name and sha256), on any machine",
    "file": "with runs scored by the same network file (same sha256)",
    "local": "only with runs on this machine and torch version: the network was trained here",
}


def dataset_key(name: str, shape: tuple[int, ...], seed: int, epochs: int = 8, device: str = "cpu") -> str:
    """A file-name-safe cache key: the data set (a path is hashed), image shape, seed, recipe, torch
    version and device kind (a network trained elsewhere is another network)."""
    if os.sep in name or Path(name).exists():
        digest = hashlib.sha1(str(Path(name).resolve()).encode()).hexdigest()[:10]
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).name) + "-" + digest
    else:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    h, w, c = shape
    machine = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"torch{torch.__version__}-{torch.device(device).type}")
    return f"{base}-{c}x{h}x{w}-seed{seed}-e{epochs}-{machine}-v{CACHE_VERSION}"


def augment(x: torch.Tensor, recipe: Recipe, g: torch.Generator) -> torch.Tensor:
    """Each image shifted by whole pixels (exact: bilinear sampling lands on pixel centres), rotated and
    mirrored at random; the border pixels fill what moves in (black for MNIST, white for emoji)."""
    n, _, h, w = x.shape
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(recipe.rotate)
    shift = torch.randint(-recipe.shift, recipe.shift + 1, (n, 2), generator=g).float()
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0] * 2 / w], 1),
                         torch.stack([sin, cos, shift[:, 1] * 2 / h], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if recipe.hflip:
        flip = torch.rand(n, generator=g) < 0.5
        out[flip] = out[flip].flip(3)
    return out


def train_classifier(train_images, train_labels, test_images, test_labels, num_classes: int, seed: int = 0,
                     recipe: Recipe = Recipe(), device: str | torch.device = "cpu") -> tuple[FeatureCNN, float]:
    """Train a `FeatureCNN` by `recipe`; return it and its test accuracy."""
    g = torch.Generator().manual_seed(seed)
    x = images_to_tensor(train_images)
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureCNN(x.shape[1], num_classes, width=recipe.width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=1e-4)
    n, bs = x.shape[0], recipe.batch_size
    total = recipe.epochs * ((n + bs - 1) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=max(total, 1), pct_start=0.15)
    model.train()
    for _ in progress(range(recipe.epochs), desc="feature network"):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            features = model.features(augment(x[idx], recipe, g).to(device))
            if recipe.dropout:  # the mask is drawn from the run's generator: training stays reproducible
                keep = (torch.rand(features.shape, generator=g) >= recipe.dropout).to(device)
                features = features * keep / (1 - recipe.dropout)
            loss = F.cross_entropy(model.head(features), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model, accuracy(model, test_images, test_labels)


def accuracy(model: FeatureCNN, images, labels) -> float:
    """The share of `images` the network labels correctly (nan for none)."""
    if not len(labels):
        return float("nan")
    _, probs = FeatureClassifier(model, [], 0.0, "").run(images)
    return float((probs.argmax(1) == np.asarray(labels)).mean())


def load_or_train(dataset: str, seed: int = 0, device: str | torch.device = "cpu", epochs: int = 8, data=None) -> FeatureClassifier:
    """The classifier trained on this machine for `dataset` (a name or path), cached; trained once if needed.

    `data` may pass an already loaded `ImageDataset` (with `.split("train")`/`.split("test")`).
    """
    if data is None:
        data = load_images(dataset)
    shape = tuple(data.split("train").images.shape[1:])
    if len(shape) == 2:
        shape = (*shape, 1)
    key = dataset_key(dataset, shape, seed, epochs, str(device))  # the recipe is in the key: a quick classifier never stands in for the full one
    path = cache_root() / "feature-classifier" / f"{key}.safetensors"
    if path.exists():
        return load_network(path, device, source="local", key=key)
    log(f"training the feature classifier for {dataset} on this machine (once; cached at {path}); "
        "its FIDs compare only with runs on this machine")
    model, meta = train_on(data, Recipe(epochs=epochs), seed, device)
    log(f"feature classifier: test accuracy {meta['test_accuracy']:.4f} ({meta['test_images']} test images, "
        f"{meta['train_seconds']:.0f} s)")
    meta["dataset"] = dataset
    save_network(path, model, meta)
    return FeatureClassifier(model, meta["class_names"], meta["test_accuracy"], key, meta["train_seconds"], meta=meta)


def train_on(data, recipe: Recipe, seed: int, device: str | torch.device) -> tuple[FeatureCNN, dict]:
    """A network trained on `data`'s train split by `recipe` and scored on its test split, with what
    its sidecar records."""
    train, test = data.split("train"), data.split("test")
    names = list(getattr(data, "class_names", None) or [])
    k = len(names) or int(max(train.labels.max(), test.labels.max())) + 1
    t0 = time.perf_counter()
    model, acc = train_classifier(train.images, train.labels, test.images, test.labels, k, seed=seed,
                                  recipe=recipe, device=device)
    return model, {"class_names": names, "test_accuracy": acc, "train_images": len(train.labels),
                   "test_images": len(test.labels), "recipe": asdict(recipe), "seed": seed, "torch": torch.__version__,
                   "train_seconds": round(time.perf_counter() - t0, 1)}


def save_network(path: str | Path, model: FeatureCNN, meta: dict) -> str:
    """Write the network (safetensors) and `meta` with its architecture (JSON sidecar); return the
    weights file's sha256."""
    save_checkpoint(path, {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                    dict(meta, arch=model.config, version=CACHE_VERSION))
    return file_sha256(path)


def load_network(path: str | Path, device: str | torch.device = "cpu", source: str = "file", key: str = "",
                 sha256: str | None = None) -> FeatureClassifier:
    """A saved feature network; with `sha256`, refused unless the weights file has exactly that hash."""
    actual = file_sha256(path) if Path(path).exists() else ""
    if sha256 is not None and actual != sha256:
        raise UserError(f"feature network {path} has sha256 {actual[:12]}..., not the pinned {sha256[:12]}...: "
                        "the file was modified; reinstall diffprompt (pip install --force-reinstall) to restore it")
    tensors, meta = load_checkpoint(path)
    if "arch" not in meta:
        raise UserError(f"{path} has no feature-network sidecar ({Path(path).with_suffix('.json').name}); "
                        "make one with `diffprompt diffusion feature-net train`")
    model = FeatureCNN(**meta["arch"])
    model.load_state_dict(tensors)
    model.to(device).eval()
    return FeatureClassifier(model, list(meta.get("class_names", [])), float(meta["test_accuracy"]),
                             key or Path(path).stem, float(meta.get("train_seconds", 0.0)), cached=True,
                             source=source, sha256=actual, meta=meta)


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
