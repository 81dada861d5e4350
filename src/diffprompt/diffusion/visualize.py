"""Pictures of a diffusion model: image grids, the forward process, the reverse chain.

* `forward.png` — rows are images, columns x_t at chosen t (x_0 first, x_T last);
* `reverse.png` — the reverse chain from x_T (left) to x_0 (right), at evenly spaced steps;
* `reverse.gif` — the same chain, animated (Pillow), one frame per kept step;
* `pred_x0.png` — the model's prediction of x_0 at the same steps;
* `loss.png` — the training loss curve (matplotlib, Agg back end);
* `eval-guidance.png` — FID and conditional accuracy against the guidance scale w (`guidance_tradeoff`).
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from PIL import Image, ImageDraw

from ..checkpoint import atomic_write_bytes
from ..data import load_images
from ..data.images import stratified_subset
from ..device import choose_device
from ..errors import UserError
from ..progress import log
from ..seeding import make_generator
from .checkpoints import load_model, output_folder
from .choices import default_steps
from .pixels import images_to_tensor, tensor_to_images
from .samplers import make_sampler


def grid_array(images, nrow: int | None = None, pad: int = 2, pad_value: int = 255) -> np.ndarray:
    """Tile images [N, H, W, C] into one uint8 array, `nrow` images per row (default: square)."""
    x = tensor_to_images(images)
    n, h, w, c = x.shape
    nrow = nrow or max(1, int(math.ceil(math.sqrt(n))))
    rows = int(math.ceil(n / nrow))
    out = np.full((rows * (h + pad) + pad, nrow * (w + pad) + pad, c), pad_value, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = x[i]
    return out


def grid_image(images, nrow: int | None = None, scale: int = 2, pad: int = 2) -> Image.Image:
    arr = grid_array(images, nrow=nrow, pad=pad)
    img = Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    return img


def _save_png(img: Image.Image, path: str | Path) -> Path:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def save_grid(images, path: str | Path, nrow: int | None = None, scale: int = 2) -> Path:
    """Save images as one PNG grid (atomically)."""
    return _save_png(grid_image(images, nrow=nrow, scale=scale), path)


def _label_columns(img: Image.Image, labels: Sequence[str], col_width: int, pad: int, scale: int) -> Image.Image:
    """Add a white band above the grid with one label per column."""
    band = 12
    out = Image.new(img.mode, (img.width, img.height + band), 255 if img.mode == "L" else (255, 255, 255))
    out.paste(img, (0, band))
    draw = ImageDraw.Draw(out)
    fill = 0 if img.mode == "L" else (0, 0, 0)
    for i, text in enumerate(labels):
        draw.text(((pad + i * (col_width + pad)) * scale, 0), text, fill=fill)
    return out


def strip_image(frames: Sequence[torch.Tensor], labels: Sequence[str] | None = None, scale: int = 2, pad: int = 2) -> Image.Image:
    """frames: K tensors [B, C, H, W]; the picture has B rows and K columns (frame k in column k)."""
    k = len(frames)
    stacked = torch.stack([f.detach().float().cpu() for f in frames], dim=1)  # [B, K, C, H, W]
    b = stacked.shape[0]
    img = grid_image(stacked.reshape(b * k, *stacked.shape[2:]), nrow=k, scale=scale, pad=pad)
    if labels:
        img = _label_columns(img, labels, frames[0].shape[-1], pad, scale)
    return img


def evenly_spaced(n_items: int, k: int) -> list[int]:
    """k indices from 0 to n_items-1 inclusive, evenly spaced, unique."""
    k = max(2, min(k, n_items))
    return sorted({round(i * (n_items - 1) / (k - 1)) for i in range(k)})


@torch.no_grad()
def forward_strip(diffusion, x0: torch.Tensor, ts: Sequence[int], generator: torch.Generator | None = None) -> tuple[Image.Image, list[int]]:
    """x_0 and q_sample(x_0, t) at each t (same noise for all t in a row, so the fade is visible)."""
    noise = diffusion.randn(x0.shape, generator, x0.device, x0.dtype)
    frames, labels = [x0], ["x0"]
    for t in ts:
        tt = torch.full((x0.shape[0],), int(t), dtype=torch.long, device=x0.device)
        frames.append(diffusion.q_sample(x0, tt, noise=noise))
        labels.append(f"t={int(t) + 1}")
    return strip_image(frames, labels), [int(t) for t in ts]


def default_forward_ts(num_timesteps: int, k: int = 8) -> list[int]:
    """k indices from early to T-1, denser early where the image still shows (0-based)."""
    fr = np.linspace(0, 1, k) ** 1.5
    return sorted({int(round(f * (num_timesteps - 1))) for f in fr})


@torch.no_grad()
def reverse_chain(diffusion, model, n: int, shape: tuple[int, int, int], sampler: str = "ddpm", steps: int | None = None,
                  eta: float = 0.0, generator: torch.Generator | None = None, device=None):
    """(final, chain [x_T .. x_0] list of tensors, pred_x0 list) from `diffusion.sample`."""
    final, chain, pred = diffusion.sample(model, (n, *shape), sampler=sampler, steps=steps, eta=eta, generator=generator,
                                          return_chain=True, return_pred_x0=True, device=device)
    return final, list(chain), list(pred)


def save_gif(frames: Sequence[torch.Tensor], path: str | Path, nrow: int | None = None, scale: int = 3,
             duration_ms: int = 80, hold_last_ms: int = 1500) -> Path:
    """An animated GIF, one grid per frame (the last one held longer)."""
    images = [grid_image(f, nrow=nrow, scale=scale).convert("P") for f in frames]
    durations = [duration_ms] * (len(images) - 1) + [hold_last_ms]
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=durations, loop=0)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def write_visualizations(model, diffusion, out_dir: str | Path, x0: torch.Tensor, n: int = 8, sampler="ddpm",
                         steps: int | None = None, eta: float = 0.0, frames: int = 10, gif_frames: int = 40,
                         seed: int = 0, device=None) -> dict[str, str]:
    """Write forward.png, reverse.png, reverse.gif and pred_x0.png into `out_dir`; return their paths.

    `sampler` is a name (with `steps`, `eta`) or a `samplers.Sampler` instance.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = device or x0.device
    num_timesteps = diffusion.num_timesteps
    fwd, _ = forward_strip(diffusion, x0[:n].to(device), default_forward_ts(num_timesteps), generator=make_generator(seed, device))
    paths = {"forward": _save_png(fwd, out / "forward.png")}
    _, chain, pred = reverse_chain(diffusion, model, n, tuple(x0.shape[1:]), sampler=sampler, steps=steps, eta=eta,
                                   generator=make_generator(seed + 1, device), device=device)
    timesteps = diffusion.sampling_timesteps(sampler, steps)  # high -> low, len(chain) - 1 entries
    keep = evenly_spaced(len(chain), frames)
    # chain[i] is the input of the step at 0-based index timesteps[i], i.e. the paper's x_{t+1};
    # labels use the paper's 1-based t, as forward.png does
    labels = [("xT" if i == 0 else f"t={timesteps[i] + 1}" if i < len(chain) - 1 else "x0") for i in keep]
    paths["reverse"] = _save_png(strip_image([chain[i] for i in keep], labels), out / "reverse.png")
    keep_pred = evenly_spaced(len(pred), frames)
    pred_labels = [f"t={timesteps[i] + 1}" for i in keep_pred] if len(pred) == len(timesteps) else None
    paths["pred_x0"] = _save_png(strip_image([pred[i] for i in keep_pred], pred_labels), out / "pred_x0.png")
    gif_keep = evenly_spaced(len(chain), gif_frames)
    paths["reverse_gif"] = save_gif([chain[i] for i in gif_keep], out / "reverse.gif", nrow=min(n, 8))
    return {k: str(v) for k, v in paths.items()}


def visualize_model(path: str | Path, out: str | Path | None = None, n: int = 8, sampler: str = "ddpm",
                    steps: int | None = None, eta: float = 0.0, spacing: str = "linspace", frames: int = 10,
                    dataset: str | None = None, seed: int = 0, device: str = "auto") -> dict[str, str]:
    """`write_visualizations` for the model at `path` (`load_model`), the forward process on a stratified
    sample of `dataset`'s (default: the model's) real images; into `out`, by default the run folder."""
    if n < 1:
        raise UserError(f"--n must be >= 1, got {n}")
    dev = choose_device(device)
    model, diffusion, meta = load_model(path, dev)
    loop = make_sampler(sampler, default_steps(sampler, steps), eta, spacing)
    loop.timesteps(diffusion.num_timesteps)  # a bad step count fails now, before any work
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not name its data set; pass --dataset NAME")
    x0 = images_to_tensor(stratified_subset(load_images(dataset).reference_split(), n, seed))
    out = Path(out) if out else output_folder(path)
    paths = write_visualizations(model, diffusion, out, x0.to(dev), n=n, sampler=loop, frames=frames, seed=seed, device=dev)
    log(f"wrote {', '.join(Path(p).name for p in paths.values())} to {out}")
    return paths


def plot_loss(metrics: list[dict], path: str | Path, key: str = "loss") -> Path | None:
    """The loss curve from metrics.jsonl records (step on x, log-scale loss on y).

    A bare `Figure` (no pyplot) renders with Agg and leaves matplotlib's global state alone.
    """
    pts = [(m["step"], m[key]) for m in metrics if "step" in m and key in m and m[key] is not None]
    if not pts:
        return None
    steps, values = zip(*pts)
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    ax.plot(steps, values, lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    if min(values) > 0:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.set_title("training loss")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def fid_against_calls(samplers: Sequence[dict], floor: dict | None = None) -> Figure | None:
    """FID against network calls per image (log x), one line per sampler family, the real-data
    floor dashed: the picture of what fewer network calls cost. None for fewer than two samplers."""
    if len(samplers) < 2:
        return None
    fig = Figure(figsize=(6, 3.8), dpi=110)
    ax = fig.add_subplot()
    families: dict[str, list[dict]] = {}
    for s in samplers:  # a conditional model's rows: a line per sampler family and guidance scale
        w = f" w={s['guidance']:g}" if "guidance" in s else ""
        families.setdefault(s["sampler"].split("-")[0] + w, []).append(s)
    for (family, rows), marker in zip(families.items(), "os*^vD", strict=False):
        rows = sorted(rows, key=lambda r: r["model_calls_per_image"])
        ax.plot([r["model_calls_per_image"] for r in rows], [r["fid"] for r in rows], marker=marker, label=family)
    if floor:
        ax.axhline(floor["fid"], color="grey", linestyle="--", label="real-data floor")
    ns = {s.get("n") for s in samplers}
    ax.set_xscale("log")
    ax.set_xlabel("network calls per image")
    ax.set_ylabel(f"FID (n = {ns.pop()})" if len(ns) == 1 else "FID")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def guidance_tradeoff(samplers: Sequence[dict], real_accuracy: float | None = None) -> Figure | None:
    """FID (left) and conditional accuracy (right) against the guidance scale w, a line per sampler:
    Ho & Salimans' fidelity-diversity trade-off. None unless some sampler has two or more scales."""
    lines: dict[str, list[dict]] = {}
    for s in samplers:
        if "guidance" in s:
            head, _, tail = s["sampler"].partition(" ")
            lines.setdefault(head.rsplit("-w", 1)[0] + (f" {tail}" if tail else ""), []).append(s)
    if not any(len(rows) > 1 for rows in lines.values()):
        return None
    fig = Figure(figsize=(9, 3.6), dpi=110)
    ax_fid, ax_acc = fig.subplots(1, 2)
    for (name, rows), marker in zip(lines.items(), "os*^vD", strict=False):
        rows = sorted(rows, key=lambda r: r["guidance"])
        ws = [r["guidance"] for r in rows]
        ax_fid.plot(ws, [r["fid"] for r in rows], marker=marker, label=name)
        ax_acc.plot(ws, [r["conditional_accuracy"] for r in rows], marker=marker, label=name)
    if real_accuracy is not None:
        ax_acc.axhline(real_accuracy, color="grey", linestyle="--", label="real test images")
    for ax, label in ((ax_fid, "FID"), (ax_acc, "conditional accuracy")):
        ax.set_xlabel("guidance scale w")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    ax_acc.legend()
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | Path, dpi: int | None = None) -> Path:
    """A matplotlib figure as a PNG (at the figure's dpi unless given), written atomically."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)
