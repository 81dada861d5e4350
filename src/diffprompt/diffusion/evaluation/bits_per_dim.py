"""Bits/dim of test images under a trained model: the variational bound (Ho et al. eq. 5), exact or estimated."""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ...progress import progress
from ...seeding import make_generator


@torch.no_grad()
def nll_on_images(model, diffusion, x0: torch.Tensor, batch_size: int, seed: int, device,
                  num_t: int = 0, class_labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Bits/dim on images x0 [N, C, H, W] in [-1, 1]: the full bound (all T terms) when `num_t` is 0,
    else its unbiased stratified estimate from `num_t` + 1 model calls per image. A conditional
    model is given each image's label `class_labels` (no guidance: the bound of p(x | class))."""
    g = make_generator(seed, device)
    totals, priors, terms_sum = [], [], None
    t0 = time.perf_counter()
    for start in progress(range(0, x0.shape[0], batch_size), desc="bits/dim"):
        xb = x0[start:start + batch_size].to(device)
        kw = {} if class_labels is None else {"class_labels": class_labels[start:start + batch_size].to(device)}
        if num_t:
            totals.append(diffusion.nll_estimate(model, xb, num_t=num_t, generator=g, model_kwargs=kw).cpu())
            continue
        terms = diffusion.nll_terms(model, xb, generator=g, t_batch=max(1, 256 // xb.shape[0]), model_kwargs=kw)
        totals.append(terms["total_bpd"].double().cpu())
        priors.append(terms["prior_bpd"].double().cpu())
        batch_sum = terms["vb_bpd"].double().cpu().sum(0)
        terms_sum = batch_sum if terms_sum is None else terms_sum + batch_sum
    total = torch.cat(totals)
    n = total.numel()
    out = {"bpd": float(total.mean()), "bpd_stderr": float(total.std() / math.sqrt(n)) if n > 1 else float("nan"),
           "images": n, "split": "test", "timesteps": num_t or diffusion.num_timesteps, "exact": not num_t,
           "seconds": time.perf_counter() - t0}
    if not num_t:
        mean_terms = terms_sum / n
        out.update(prior_bpd=float(torch.cat(priors).mean()), decoder_bpd=float(mean_terms[0]),
                   band_bpd=term_bands(mean_terms), image_bpd=[round(v, 6) for v in total.tolist()])
    return out


def term_bands(mean_terms: torch.Tensor) -> list[dict[str, Any]]:
    """The bound's KL terms (index t >= 1 of `mean_terms` [T]; index 0 is the decoder) summed over decades
    of t: [1, 9], [10, 99], [100, 999], ...: where in the chain a model spends its bits."""
    edges = [1]
    while edges[-1] < mean_terms.numel():
        edges.append(min(10 * edges[-1], mean_terms.numel()))
    return [{"t_from": lo, "t_to": hi - 1, "bpd": float(mean_terms[lo:hi].sum())} for lo, hi in zip(edges, edges[1:])]
