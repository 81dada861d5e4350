"""Drawing samples from a trained model: sampler specs, checks, batches that do not change the samples.

    model, diffusion, meta = load_model("runs/ddpm-mnist")
    spec = parse_sampler_spec("ddim:50")
    samples, seconds = generate(model, diffusion, 64, (1, 28, 28), spec["sampler"], spec["steps"], spec["eta"],
                                seed=0, batch_size=64, device="cpu")

A spec is `ddpm[:STEPS][:SPACING]` (ancestral; all T steps unless STEPS), `ddim:STEPS[:ETA][:SPACING]` or a DPM-Solver++ variant
`dpm++2m|dpm++3m|dpm++2m-sde:STEPS[:SPACING]` (see `parse_sampler_spec`). The loops themselves
are in samplers.py; this is the layer the CLI, evaluation, training and the demo share.

A class-conditional model takes `class_labels` (one per sample) and a guidance scale
(guidance.py); `class_rows(K, n)` asks for n samples of each class, a row per class.
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes
from ..device import choose_device
from ..errors import UserError
from ..progress import log
from ..seeding import make_generator, per_sample_generators
from .checkpoints import load_model
from .choices import default_steps
from .guidance import guided
from .pixels import tensor_to_images
from .samplers import SAMPLERS, SPACINGS, make_sampler
from .visualize import save_grid


def parse_sampler_spec(spec: str) -> dict[str, Any]:
    """`NAME[:STEPS][:ETA][:SPACING]` -> dict(sampler, steps, eta, spacing, spec).

    NAME is ddpm (all T steps, or STEPS of the respaced chain), ddim, dpm++2m, dpm++3m or dpm++2m-sde
    (all but ddpm need STEPS); ETA (a number) is DDIM's stochasticity; SPACING is linspace (the
    default), leading or trailing.
    Examples: `ddpm`, `ddpm:100`, `ddim:50`, `ddim:50:0.5`, `dpm++2m:20`, `dpm++3m:10:trailing`, `dpm++2m-sde:20`.
    """
    name, *rest = [p.strip() for p in spec.strip().split(":")]
    name = name.lower()
    usage = ("use ddpm[:STEPS][:SPACING], ddim:STEPS[:ETA][:SPACING] or dpm++2m|dpm++3m|dpm++2m-sde:STEPS[:SPACING] "
             "(e.g. ddpm:100, ddim:50, dpm++2m:20:trailing)")
    if name not in SAMPLERS or len(rest) > 3:
        raise UserError(f"unknown sampler spec {spec!r}; {usage}")
    out = {"sampler": name, "steps": None, "eta": 0.0, "spacing": "linspace", "spec": spec.strip()}
    for i, part in enumerate(rest):
        if part in SPACINGS:
            out["spacing"] = part
        elif i == 0 and part.isdigit():
            out["steps"] = int(part)
        elif i > 0 and name == "ddim" and _is_number(part):
            out["eta"] = float(part)
        else:
            raise UserError(f"sampler spec {spec!r}: cannot read {part!r}; {usage}")
    if name != "ddpm" and out["steps"] is None:
        raise UserError(f"sampler spec {spec!r} needs a step count, e.g. {name}:20")
    if out["eta"] < 0:
        raise UserError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {out['eta']}")
    return out


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def sampler_label(s: dict[str, Any], num_timesteps: int) -> str:
    """`DDPM-1000`, `DDPM-100`, `DDIM-50`, `DDIM-50 (eta 0.5)`, `DPM++2M-20 (trailing)` for a parsed spec."""
    label = f"{s['sampler'].upper()}-{s['steps'] or num_timesteps}"
    notes = [f"eta {s['eta']:g}"] if s["sampler"] == "ddim" and s["eta"] else []
    if s.get("spacing", "linspace") != "linspace" and (s["steps"] or num_timesteps) < num_timesteps:
        notes.append(s["spacing"])
    return label + (f" ({', '.join(notes)})" if notes else "")


def check_sampler(diffusion, sampler: str, steps: int | None, eta: float, spacing: str = "linspace") -> None:
    """A UserError now, before any sampling, for a bad sampler, steps (< 1 or > T), eta (< 0) or spacing."""
    make_sampler(sampler, steps=steps, eta=eta, spacing=spacing).timesteps(diffusion.num_timesteps)


def class_rows(num_classes: int, per_class: int) -> torch.Tensor:
    """Labels [0]*per_class + [1]*per_class + ...: a grid with per_class columns has a row per class."""
    return torch.arange(num_classes).repeat_interleave(per_class)


def requested_classes(choice: str | None, n: int, meta: dict[str, Any],
                      guidance: float = 0.0) -> tuple[torch.Tensor | None, int | None]:
    """(class labels, grid row length) for a class `choice` of a model with sidecar `meta`: (None, None)
    without one; n samples of one class (an index or a class name); or with "all", n of each, a row each."""
    k = int(meta["unet"].get("num_classes", 0) or 0)
    if choice is None:
        if guidance:
            raise UserError("--guidance needs --class: the classes to guide towards (a class, or all)")
        return None, None
    if not k:
        raise UserError(f"{meta.get('path')} is an unconditional model (not trained with --conditional): "
                        "it takes no --class; drop --class and --guidance")
    if choice == "all":
        return class_rows(k, n), n
    names = list(meta.get("class_names") or [])
    if choice in names:
        return torch.full((n,), names.index(choice)), None
    if not choice.isdigit() or int(choice) >= k:
        known = ", ".join(names) if names else f"0..{k - 1}"
        raise UserError(f"unknown class {choice!r}; choose an index 0..{k - 1}, a name ({known}) or all")
    return torch.full((n,), int(choice)), None


def sample_model(path: str | Path, n: int = 64, sampler: str = "dpm++2m", steps: int | None = None, eta: float = 0.0,
                 spacing: str = "linspace", class_choice: str | None = None, guidance: float = 0.0,
                 out: str | Path | None = None, seed: int = 0, batch_size: int = 256, device: str = "auto") -> Path:
    """Sample the model at `path` (`load_model`) and save the samples to `out` (`.png` grid or `.npz`);
    return `out`, by default RUN_DIR/samples-SAMPLER-STEPS[-classCLASS-wW].png. `class_choice`: see
    `requested_classes`."""
    out = Path(out) if out else None
    if out is not None and out.suffix.lower() not in (".png", ".npz"):
        raise UserError(f"--out must end in .png (a grid) or .npz (uint8 images), got {out}")
    dev = choose_device(device)
    model, diffusion, meta = load_model(path, dev)
    labels, nrow = requested_classes(class_choice, n, meta, guidance)
    n = n if labels is None else len(labels)
    steps = default_steps(sampler, steps)
    shape = (meta["unet"]["in_channels"], meta["unet"]["image_size"], meta["unet"]["image_size"])
    x, seconds = generate(model, diffusion, n, shape, sampler, steps, eta, seed, batch_size, dev, spacing,
                          class_labels=labels, guidance=guidance)
    steps = steps or diffusion.num_timesteps
    if out is None:
        which = "" if labels is None else f"-class{class_choice}-w{guidance:g}"
        out = (Path(path) if Path(path).is_dir() else Path(".")) / f"samples-{sampler}-{steps}{which}.png"
    info = {} if labels is None else {"class_labels": labels.numpy(), "guidance": guidance}
    save_samples(x, out, nrow=nrow, sampler=sampler, steps=steps, eta=eta, spacing=spacing, seed=seed, **info)
    log(f"{n} samples ({sampler}, {steps} steps, {seconds / n * 1000:.1f} ms/image) -> {out}")
    return out


@torch.no_grad()
def generate(model, diffusion, n: int, shape: tuple[int, int, int], sampler: str, steps: int | None, eta: float,
             seed: int, batch_size: int, device, spacing: str = "linspace", class_labels=None,
             guidance: float = 0.0) -> tuple[torch.Tensor, float]:
    """n samples (float NCHW in [-1, 1], on the CPU) in batches, and the wall time in seconds.

    The same call gives the same samples, whatever `batch_size`: x_T is drawn from one generator
    seeded with `seed`, one sample after another, and the noise a stochastic sampler adds at each step from
    the sample's own generator (`per_sample_generators`). So sample i depends on the seed and i only,
    and the first k of n samples are the k samples a call with n = k draws.
    `class_labels` (n of them) asks a conditional model for those classes with guidance scale
    `guidance` (0: the plain conditional model); without them a conditional model samples its null
    class, unconditionally.
    """
    if n < 1:
        raise UserError(f"the number of samples must be >= 1, got {n}")
    check_sampler(diffusion, sampler, steps, eta, spacing)
    if class_labels is None and guidance:
        raise UserError("a guidance scale needs classes to guide towards: pass class labels (--class)")
    labels = None if class_labels is None else guided(model, class_labels, guidance).class_labels
    if labels is not None and labels.numel() != n:
        raise UserError(f"{labels.numel()} class labels for {n} samples: give one label per sample")
    g = make_generator(seed, device)
    noise = per_sample_generators(seed, n, device)
    out = []
    t0 = time.perf_counter()
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        net = model if labels is None else guided(model, labels[start:start + b], guidance)
        loop = make_sampler(sampler, steps=steps, eta=eta, spacing=spacing)
        x_T = diffusion.randn((b, *shape), [g] * b, device)  # row by row: the same stream for any batching
        out.append(diffusion.sample(net, (b, *shape), sampler=loop, generator=noise[start:start + b], x_T=x_T,
                                    device=device, progress=True).cpu())
    return torch.cat(out), time.perf_counter() - t0


def save_samples(x: torch.Tensor, path: str | Path, nrow: int | None = None, **info: Any) -> Path:
    """Samples as a PNG grid (`.png`, `nrow` per row, default square) or as uint8 images [N, H, W, C]
    with `info` beside them (`.npz`)."""
    path = Path(path)
    if path.suffix.lower() == ".npz":
        buf = io.BytesIO()
        np.savez_compressed(buf, images=tensor_to_images(x), **info)
        atomic_write_bytes(path, buf.getvalue())
        return path
    return save_grid(x, path, nrow=nrow)
