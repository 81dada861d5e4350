"""Drawing samples from a trained model: sampler specs, checks, batches from one seeded generator.

    model, diffusion, meta = load_model("runs/ddpm-mnist")
    spec = parse_sampler_spec("ddim:50")
    samples, seconds = generate(model, diffusion, 64, (1, 28, 28), spec["sampler"], spec["steps"], spec["eta"],
                                seed=0, batch_size=64, device="cpu")

A spec is `ddpm` (ancestral, all T steps), `ddim:STEPS` or `ddim:STEPS:ETA`. The loops themselves
are in samplers.py; this is the layer the CLI, evaluation, training and the demo share.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes
from ..errors import UserError
from ..seeding import make_generator
from .pixels import tensor_to_images
from .samplers import make_sampler
from .visualize import save_grid


def parse_sampler_spec(spec: str) -> dict[str, Any]:
    """`ddpm`, `ddpm:STEPS`, `ddim:STEPS`, `ddim:STEPS:ETA` -> dict(sampler, steps, eta, spec)."""
    parts = [p.strip() for p in spec.strip().split(":")]
    name = parts[0].lower()
    if name not in ("ddpm", "ddim") or len(parts) > 3:
        raise UserError(f"unknown sampler spec {spec!r}; use ddpm, ddim:STEPS or ddim:STEPS:ETA (e.g. ddim:50)")
    steps = eta = None
    try:
        if len(parts) > 1 and parts[1]:
            steps = int(parts[1])
        if len(parts) > 2:
            eta = float(parts[2])
    except ValueError:
        raise UserError(f"sampler spec {spec!r}: steps must be an integer and eta a number (e.g. ddim:50:0.0)") from None
    if name == "ddim" and steps is None:
        raise UserError(f"sampler spec {spec!r} needs a step count, e.g. ddim:50")
    if eta is not None and eta < 0:
        raise UserError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
    return {"sampler": name, "steps": steps, "eta": 0.0 if eta is None else eta, "spec": spec.strip()}


def sampler_label(s: dict[str, Any], T: int) -> str:
    """`DDPM-1000`, `DDIM-50`, `DDIM-50 (eta 0.5)` for a parsed spec."""
    steps = s["steps"] or T
    label = f"{s['sampler'].upper()}-{steps}"
    if s["sampler"] == "ddim" and s["eta"]:
        label += f" (eta {s['eta']:g})"
    return label


def check_sampler(diffusion, sampler: str, steps: int | None, eta: float) -> None:
    """A UserError now, before any sampling, for a bad sampler, steps (< 1 or > T) or eta (< 0)."""
    make_sampler(sampler, steps=steps, eta=eta).timesteps(diffusion.T)


@torch.no_grad()
def generate(model, diffusion, n: int, shape: tuple[int, int, int], sampler: str, steps: int | None, eta: float,
             seed: int, batch_size: int, device) -> tuple[torch.Tensor, float]:
    """n samples (float NCHW in [-1, 1], on the CPU) in batches, and the wall time in seconds.

    All noise comes from one generator seeded with `seed`: the same call gives the same samples.
    """
    if n < 1:
        raise UserError(f"the number of samples must be >= 1, got {n}")
    check_sampler(diffusion, sampler, steps, eta)
    g = make_generator(seed, device)
    out = []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        out.append(diffusion.sample(model, (b, *shape), sampler=sampler, steps=steps, eta=eta, generator=g,
                                    device=device, progress=True).cpu())
    return torch.cat(out), time.perf_counter() - t0


def save_samples(x: torch.Tensor, path: str | Path, **info: Any) -> Path:
    """Samples as a PNG grid (`.png`) or as uint8 images [N, H, W, C] with `info` beside them (`.npz`)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, images=tensor_to_images(x), **info)
        atomic_write_bytes(path, buf.getvalue())
        return path
    return save_grid(x, path)
