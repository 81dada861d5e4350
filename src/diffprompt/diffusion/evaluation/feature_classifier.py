"""A small CNN classifier whose penultimate features stand in for Inception in FID and KID.

Inception weights cannot be downloaded here, so each data set gets its own feature network:
a 3-stage CNN trained on the data set's train split, scored on its test split, and cached by
data set, image shape and seed under `$DIFFPROMPT_CACHE` (default `~/.cache/diffprompt`) as
safetensors + JSON. FIDs from different feature networks are not comparable with each other
or with published Inception FIDs; compare runs against the same cached classifier and against
the real-data floor (train split vs test split).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...cache import cache_root
from ...checkpoint import load_checkpoint, save_checkpoint
from ...data import load_images
from ...progress import log
from ..pixels import images_to_tensor

CACHE_VERSION = 2


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
    """A trained `FeatureCNN` with what it was trained on."""

    model: FeatureCNN
    class_names: list[str]
    test_accuracy: float
    key: str
    train_seconds: float = 0.0
    cached: bool = False

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


def dataset_key(name: str, shape: tuple[int, ...], seed: int, epochs: int = 8) -> str:
    """A file-name-safe cache key: the data set (a path is hashed), image shape, seed and recipe."""
    if os.sep in name or Path(name).exists():
        digest = hashlib.sha1(str(Path(name).resolve()).encode()).hexdigest()[:10]
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).name) + "-" + digest
    else:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", name)
    h, w, c = shape
    return f"{base}-{c}x{h}x{w}-seed{seed}-e{epochs}-v{CACHE_VERSION}"


def train_classifier(train_images, train_labels, test_images, test_labels, num_classes: int, seed: int = 0,
                     epochs: int = 8, batch_size: int = 64, lr: float = 2e-3, width: int = 32,
                     device: str | torch.device = "cpu") -> tuple[FeatureCNN, float]:
    """Train a `FeatureCNN` with AdamW and a cosine learning rate; return it and its test accuracy."""
    g = torch.Generator().manual_seed(seed)
    x = images_to_tensor(train_images)
    y = torch.as_tensor(np.asarray(train_labels), dtype=torch.long)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = FeatureCNN(x.shape[1], num_classes, width=width).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    n = x.shape[0]
    total = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(total, 1), pct_start=0.15)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb = x[idx]
            # light augmentation: random shifts of up to 2 pixels
            dx, dy = torch.randint(-2, 3, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(xb.to(device)), y[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    clf = FeatureClassifier(model, [], 0.0, "")
    _, probs = clf.run(test_images)
    acc = float((probs.argmax(1) == np.asarray(test_labels)).mean()) if len(test_labels) else float("nan")
    return model, acc


def load_or_train(dataset: str, seed: int = 0, device: str | torch.device = "cpu", epochs: int = 8, data=None) -> FeatureClassifier:
    """The cached classifier for `dataset` (a name or path), training it once if needed.

    `data` may pass an already loaded `ImageDataset` (with `.split("train")`/`.split("test")`).
    """
    if data is None:
        data = load_images(dataset)
    train, test = data.split("train"), data.split("test")
    shape = tuple(train.images.shape[1:])
    if len(shape) == 2:
        shape = (*shape, 1)
    key = dataset_key(dataset, shape, seed, epochs)  # the recipe is in the key: a quick classifier never stands in for the full one
    path = cache_root() / "feature-classifier" / f"{key}.safetensors"
    names = list(getattr(data, "class_names", None) or [])
    num_classes = len(names) or int(np.max(train.labels)) + 1
    if path.exists():
        tensors, meta = load_checkpoint(path)
        model = FeatureCNN(**meta["arch"])
        model.load_state_dict(tensors)
        model.to(device).eval()
        return FeatureClassifier(model, meta.get("class_names", names), float(meta["test_accuracy"]), key,
                                 float(meta.get("train_seconds", 0.0)), cached=True)
    log(f"training the feature classifier for {dataset} (once; cached at {path})")
    t0 = time.perf_counter()
    model, acc = train_classifier(train.images, train.labels, test.images, test.labels, num_classes,
                                  seed=seed, epochs=epochs, device=device)
    seconds = time.perf_counter() - t0
    log(f"feature classifier: test accuracy {acc:.4f} ({len(test.labels)} test images, {seconds:.0f} s)")
    meta = dict(arch=model.config, class_names=names, test_accuracy=acc, dataset=dataset, seed=seed,
                epochs=epochs, train_images=int(len(train.labels)), test_images=int(len(test.labels)),
                train_seconds=seconds, version=CACHE_VERSION)
    save_checkpoint(path, {k: v.cpu() for k, v in model.state_dict().items()}, meta)
    return FeatureClassifier(model, names, acc, key, seconds, cached=False)
