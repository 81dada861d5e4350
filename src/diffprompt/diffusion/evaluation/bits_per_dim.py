"""Bits/dim of test images under a trained model: the variational bound (Ho et al. eq. 5), exact or estimated.

The exact bound costs T model calls per image (about an hour for 1000 MNIST images on 2 CPU cores),
so with a `resume_dir` each finished batch is kept on disk with the noise generator's state after
it: a run stopped part-way resumes at the first missing batch and gives the numbers an
uninterrupted run gives.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load, save

from ...checkpoint import atomic_write_bytes, weights_sha256
from ...progress import progress
from ...seeding import make_generator


@torch.no_grad()
def nll_on_images(model, diffusion, x0: torch.Tensor, batch_size: int, seed: int, device,
                  num_t: int = 0, class_labels: torch.Tensor | None = None,
                  resume_dir: str | Path | None = None, split: str = "test") -> dict[str, Any]:
    """Bits/dim on images x0 [N, C, H, W] in [-1, 1]: the full bound (all T terms) when `num_t` is 0,
    else its unbiased stratified estimate from `num_t` + 1 model calls per image. A conditional
    model is given each image's label `class_labels` (no guidance: the bound of p(x | class)).
    `resume_dir` keeps finished batches (removed once all are done; an `nn.Module` model only); `split`
    names where x0 came from in the result."""
    g = make_generator(seed, device)
    store = _BatchStore.open(resume_dir, _job_key(model, diffusion, x0, batch_size, seed, num_t, class_labels))
    parts, t0 = [], time.perf_counter()
    for k, start in enumerate(progress(range(0, x0.shape[0], batch_size), desc="bits/dim")):
        part = store.load(k, g) if store else None
        if part is None:
            xb = x0[start:start + batch_size].to(device)
            kw = {} if class_labels is None else {"class_labels": class_labels[start:start + batch_size].to(device)}
            part = _batch_bound(model, diffusion, xb, kw, num_t, g)
            if store:
                store.save(k, part, g)
        parts.append(part)
    total = torch.cat([p["total"] for p in parts])
    n = total.numel()
    out = {"bpd": float(total.mean()), "bpd_stderr": float(total.std() / math.sqrt(n)) if n > 1 else float("nan"),
           "images": n, "split": split, "timesteps": num_t or diffusion.num_timesteps, "exact": not num_t,
           "seconds": time.perf_counter() - t0, "image_bpd": [round(v, 6) for v in total.tolist()]}
    if store:
        out["resumed_batches"] = store.resumed
        store.remove()
    if not num_t:
        mean_terms = sum(p["terms_sum"] for p in parts) / n
        out.update(prior_bpd=float(torch.cat([p["prior"] for p in parts]).mean()), decoder_bpd=float(mean_terms[0]),
                   band_bpd=term_bands(mean_terms))
    return out


def _batch_bound(model, diffusion, xb: torch.Tensor, kw: dict, num_t: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """One batch: each image's total (float64, CPU); for the exact bound also its prior and the batch's
    sum of each of the T terms."""
    if num_t:
        return {"total": diffusion.nll_estimate(model, xb, num_t=num_t, generator=g, model_kwargs=kw).double().cpu()}
    terms = diffusion.nll_terms(model, xb, generator=g, t_batch=max(1, 256 // xb.shape[0]), model_kwargs=kw)
    return {"total": terms["total_bpd"].double().cpu(), "prior": terms["prior_bpd"].double().cpu(),
            "terms_sum": terms["vb_bpd"].double().cpu().sum(0)}


def term_bands(mean_terms: torch.Tensor) -> list[dict[str, Any]]:
    """The bound's KL terms (index t >= 1 of `mean_terms` [T]; index 0 is the decoder) summed over decades
    of t: [1, 9], [10, 99], [100, 999], ...: where in the chain a model spends its bits."""
    edges = [1]
    while edges[-1] < mean_terms.numel():
        edges.append(min(10 * edges[-1], mean_terms.numel()))
    return [{"t_from": lo, "t_to": hi - 1, "bpd": float(mean_terms[lo:hi].sum())} for lo, hi in zip(edges, edges[1:])]


def _job_key(model, diffusion, x0, batch_size, seed, num_t, class_labels) -> dict[str, Any] | None:
    """What a kept batch must have been computed from: the weights, the process, the images, the settings.
    None (nothing kept) for a model whose weights cannot be read (a plain function)."""
    if not isinstance(model, torch.nn.Module):
        return None
    images = hashlib.sha256(x0.detach().cpu().float().contiguous().numpy().tobytes())
    if class_labels is not None:
        images.update(class_labels.cpu().long().numpy().tobytes())
    return {"weights_sha256": weights_sha256(model), "images_sha256": images.hexdigest(), "diffusion": diffusion.to_dict(),
            "batch_size": batch_size, "seed": seed, "num_t": num_t}


class _BatchStore:
    """Finished batches of one job in a folder: batch-K.safetensors holds its results and the generator
    state after it; job.json names the job, and a folder left by another job is emptied first."""

    def __init__(self, folder: Path):
        self.folder, self.resumed = folder, 0

    @classmethod
    def open(cls, folder: str | Path | None, key: dict[str, Any] | None) -> _BatchStore | None:
        if folder is None or key is None:
            return None
        folder = Path(folder)
        job = folder / "job.json"
        if folder.exists() and (not job.exists() or json.loads(job.read_text()) != json.loads(json.dumps(key))):
            shutil.rmtree(folder)
        atomic_write_bytes(job, json.dumps(key, indent=2).encode())
        return cls(folder)

    def load(self, k: int, g: torch.Generator) -> dict[str, torch.Tensor] | None:
        """Batch k when it was kept and every batch before it was too (so g is where it was), else None."""
        path = self.folder / f"batch-{k:05d}.safetensors"
        if self.resumed < k or not path.exists():
            return None
        tensors = load(path.read_bytes())
        g.set_state(tensors.pop("generator_state"))
        self.resumed += 1
        return tensors

    def save(self, k: int, part: dict[str, torch.Tensor], g: torch.Generator) -> None:
        data = save({**part, "generator_state": g.get_state()})
        atomic_write_bytes(self.folder / f"batch-{k:05d}.safetensors", data)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
