"""Seeding every random number generator we use, explicit generators, and saving their states.

`get_rng_state` returns the global states of Python, numpy and torch as (tensors, JSON): torch's
states are byte tensors for a safetensors file, Python's and numpy's are lists for its JSON
sidecar. `set_rng_state` takes them back, after such a round trip too, and every stream continues
exactly where it was.
"""

from __future__ import annotations

import os
import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's `random`, numpy's global RNG and torch (CPU and all CUDA devices)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ["PYTHONHASHSEED"] = str(seed)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A fresh `torch.Generator` on `device`, seeded with `seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def per_sample_generators(seed: int, n: int, device: str | torch.device = "cpu") -> list[torch.Generator]:
    """n generators on `device`, the i-th seeded from (seed, i) through numpy's `SeedSequence`:
    independent streams, so what sample i draws depends on the seed and i only, not on n or on how
    the samples are split into batches."""
    entropy = int(seed) % 2**64
    return [make_generator(int(np.random.SeedSequence([entropy, i]).generate_state(1, np.uint64)[0]), device)
            for i in range(n)]


def get_rng_state(cuda: bool = False) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The global RNG states as (tensors, JSON-able dict).

    tensors: "torch" (the CPU generator) and, with `cuda`, "cuda" (the current CUDA device's);
    JSON: "python" and "numpy", their states as lists.
    """
    tensors = {"torch": torch.get_rng_state()}
    if cuda:
        tensors["cuda"] = torch.cuda.get_rng_state()
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {"python": [version, list(internal), gauss],
            "numpy": [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]}
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any], cuda: bool = False) -> None:
    """Restore the states `get_rng_state` returned; with `cuda`, the CUDA one too when it was saved."""
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"].to(torch.uint8).cpu())
    if cuda and "cuda" in tensors:
        torch.cuda.set_rng_state(tensors["cuda"].to(torch.uint8).cpu())
