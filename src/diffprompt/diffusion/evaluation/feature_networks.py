"""The feature networks shipped with diffprompt, and the choice of the network that scores a data set.

Every FID, KID, precision/recall, confident share and conditional accuracy is computed in a
feature network's space, so the network is the yardstick. For the named sets below diffprompt
ships one, trained once by `benchmarks/train_feature_nets.py` and pinned by its sha256 in
`assets/feature-nets/index.json`: the same numbers on every machine. Any other set (a folder of
images) gets a network trained on the machine and cached (`feature_classifier.load_or_train`),
and a user may pass a network file of their own (`diffprompt diffusion feature-net train`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from ...data import load_images
from ...errors import UserError
from ..choices import Recipe
from .feature_classifier import COMPARABLE, FeatureClassifier, load_network, load_or_train, save_network, train_on

INDEX = "index.json"


def shipped_folder() -> Path:
    return Path(str(resources.files("diffprompt") / "assets" / "feature-nets"))


def shipped_index() -> dict[str, Any]:
    """{"datasets": {data set: network name}, "networks": {name: {"file", "sha256", ...}}} (empty if none)."""
    path = shipped_folder() / INDEX
    return json.loads(path.read_text()) if path.exists() else {"datasets": {}, "networks": {}}


def shipped_network_name(dataset: str) -> str | None:
    """The shipped network that scores `dataset`, or None."""
    return shipped_index()["datasets"].get(dataset)


def load_shipped(name: str, device: str | torch.device = "cpu") -> FeatureClassifier:
    """A shipped network by name, refused if its file's sha256 is not the pinned one."""
    entry = shipped_index()["networks"].get(name)
    if entry is None:
        raise UserError(f"no shipped feature network named {name!r}; shipped: {', '.join(shipped_index()['networks'])}")
    return load_network(shipped_folder() / entry["file"], device, source="shipped", key=name, sha256=entry["sha256"])


def feature_network(dataset: str, data=None, device: str | torch.device = "cpu", epochs: int = 8,
                    path: str | Path | None = None) -> FeatureClassifier:
    """The network that scores `dataset`: the file `path` if given, else the shipped one for a named
    set, else one trained on this machine (`epochs` epochs) and cached."""
    if path is not None:
        return load_network(path, device, source="file")
    name = shipped_network_name(dataset)
    if name is not None:
        return load_shipped(name, device)
    return load_or_train(dataset, seed=0, device=device, epochs=epochs, data=data)


def train_network(dataset: str, out: str | Path, recipe: Recipe = Recipe(), seed: int = 0,
                  device: str | torch.device = "cpu") -> dict[str, Any]:
    """`diffprompt diffusion feature-net train`: a network for `dataset` (a name or a folder with train
    and test splits) written to `out`; returns what its sidecar records, with its sha256."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise UserError(f"--out must name a .safetensors file, got {out}")
    model, meta = train_on(load_images(dataset), recipe, seed, device)
    meta["serves"] = [dataset]
    return dict(meta, sha256=save_network(out, model, meta), path=str(out))


def describe_network(dataset_or_file: str, device: str | torch.device = "cpu") -> dict[str, Any]:
    """`diffprompt diffusion feature-net show`: which network scores a data set (or what a file holds)."""
    if dataset_or_file.endswith(".safetensors"):
        clf = load_network(dataset_or_file, device, source="file")
    else:
        name = shipped_network_name(dataset_or_file)
        if name is None:
            return {"dataset": dataset_or_file, "source": "local", "comparable": COMPARABLE["local"],
                    "note": "no shipped network: evaluate trains one on this machine (cached) at first use"}
        clf = load_shipped(name)
    keep = ("serves", "train_images", "test_accuracy_by_dataset", "recipe", "command", "torch")
    return dict(name=clf.key, **clf.describe(), class_names=clf.class_names, **{k: clf.meta[k] for k in keep if k in clf.meta})
