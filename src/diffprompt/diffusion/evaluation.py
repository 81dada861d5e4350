"""Evaluating a trained DDPM: FID, KID, precision/recall, confident share, class histogram,
bits/dim, sampling time.

    diffprompt diffusion evaluate RUN_DIR --samplers ddpm,ddim:50,dpm++2m:20 --n-samples 1000 --nll-images 1000

* Features come from a small CNN trained on the data set's train split (`feature_classifier`),
  cached; its test accuracy is reported. Samples are compared with the **full test split**.
* The real-data floor is the same scores for a stratified sample of `n_samples` train images: what
  a perfect model would get at this n. Every sampler and the floor are scored at the same n.
* FID is biased upwards at small n: below `UNBIASED_FID_N` samples it is flagged `fid_biased`, and
  KID (an unbiased estimate, reported x 10^3 with its std over subsets) is the number to read.
* Improved precision and recall (k = 3 nearest neighbours on the same features) tell "blurry but
  diverse" (low precision) from "sharp but mode-collapsed" (low recall).
* Confident share: the fraction of samples the classifier labels with probability >= 0.9;
  the class histogram shows whether every class is drawn.
* NLL: the full variational bound in bits/dim (L_T + sum of KL terms + decoder L_0) on a stratified
  sample of `nll_images` test images (T model calls per image), with its standard error; with
  `nll_timesteps` > 0, its unbiased stratified estimate from that many model calls per image.
* Sampler specs: see `generate.parse_sampler_spec` (`ddpm`, `ddim:50`, `dpm++2m:20:trailing`, ...).
* A class-conditional model is evaluated at each guidance scale w of `guidance` (default 0), every
  sampler at every w (rows labelled `DDIM-50-w2`), with the classes requested evenly (sample i asks
  for class i mod K); each row adds the conditional accuracy, the share of samples the classifier
  assigns to the class asked for. `eval-guidance.png` plots FID and conditional accuracy against w:
  Ho & Salimans' fidelity-diversity trade-off. The bound is computed with w = 0 and each test
  image's true label, so it compares with an unconditional model's.

Writes `eval.json` and `eval.md` into the run folder (or `out`).
"""

from __future__ import annotations

import math
import os
import platform
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import atomic_write_bytes
from ..data import ImageDataset, load_images
from ..data.images import stratified_subset
from ..data.splits import stratified_sample
from ..device import choose_device
from ..errors import UserError
from ..progress import log, progress
from ..rundir import RunDir
from ..seeding import make_generator
from .checkpoints import load_model, output_folder
from .feature_classifier import load_or_train
from .generate import check_sampler, generate, parse_sampler_spec, sampler_label
from .guidance import num_classes
from .metrics import fid_from_features, kid_from_features, knn_radii, precision_recall
from .pixels import images_to_tensor
from .visualize import guidance_tradeoff, save_figure, save_grid

CONFIDENCE = 0.9
UNBIASED_FID_N = 1000  # below this many samples FID's small-sample bias dominates
PR_NEIGHBOURS = 3


def machine_info() -> dict[str, Any]:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        info["load_average_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _class_histogram(probs: np.ndarray, k: int) -> list[int]:
    return np.bincount(probs.argmax(1), minlength=k).tolist()


def score_images(clf, images, ref_feats: np.ndarray, ref_radii: np.ndarray, k: int, seed: int,
                 requested: np.ndarray | None = None) -> dict[str, Any]:
    """The scores of `images` against the reference features (and their k-NN radii, computed once);
    with `requested` (the class each was asked for) also the conditional accuracy."""
    feats, probs = clf.run(images)
    kid, kid_std = kid_from_features(feats, ref_feats, num_subsets=100, subset_size=1000, seed=seed)
    precision, recall = precision_recall(ref_feats, feats, k=PR_NEIGHBOURS, real_radii=ref_radii)
    q = {"fid": fid_from_features(feats, ref_feats), "fid_biased": len(feats) < UNBIASED_FID_N,
         "kid": kid, "kid_std": kid_std, "precision": precision, "recall": recall,
         "confident_share": float((probs.max(1) >= CONFIDENCE).mean()),
         "class_histogram": _class_histogram(probs, k), "n": int(len(feats))}
    if requested is not None:
        q["conditional_accuracy"] = float((probs.argmax(1) == requested).mean())
    return q


@torch.no_grad()
def nll_on_images(model, diffusion, x0: torch.Tensor, batch_size: int, seed: int, device,
                  num_t: int = 0, class_labels: torch.Tensor | None = None) -> dict[str, Any]:
    """Bits/dim on images x0 [N, C, H, W] in [-1, 1]: the full bound (all T terms) when `num_t` is 0,
    else its unbiased stratified estimate from `num_t` + 1 model calls per image. A conditional
    model is given each image's label `class_labels` (no guidance: the bound of p(x | class))."""
    g = make_generator(seed, device)
    totals, priors, decoders = [], [], []
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
        decoders.append(terms["vb_bpd"][:, 0].double().cpu())
    total = torch.cat(totals)
    n = total.numel()
    out = {"bpd": float(total.mean()), "bpd_stderr": float(total.std() / math.sqrt(n)) if n > 1 else float("nan"),
           "images": n, "split": "test", "timesteps": num_t or diffusion.T, "exact": not num_t,
           "seconds": time.perf_counter() - t0}
    if not num_t:
        out.update(prior_bpd=float(torch.cat(priors).mean()), decoder_bpd=float(torch.cat(decoders).mean()))
    return out


def evaluate(path: str | Path, samplers: list[str] | str = ("ddpm", "ddim:10", "ddim:20", "ddim:50", "ddim:100"),
             n_samples: int = 1000, nll_images: int = 100, batch_size: int = 250, seed: int = 0, device: str = "auto",
             dataset: str | None = None, out: str | Path | None = None, classifier_epochs: int = 8,
             data: ImageDataset | None = None, nll_timesteps: int = 0,
             guidance: list[float] | str | None = None) -> dict[str, Any]:
    """Evaluate a run folder or checkpoint; write eval.json and eval.md; return the results.

    `guidance`: the scales w a conditional model is sampled at (default [0]); an unconditional one takes none.
    """
    if isinstance(samplers, str):
        samplers = samplers.split(",")
    specs = [parse_sampler_spec(s) for s in samplers if s.strip()]
    if n_samples < 2:
        raise UserError(f"--n-samples must be at least 2 for FID/KID, got {n_samples}")
    if nll_images < 0:
        raise UserError(f"--nll-images must be >= 0, got {nll_images}")
    dev = choose_device(device)
    model, diffusion, meta = load_model(path, dev)
    for s in specs:  # fail fast on steps > T or a bad eta, before any sampling
        check_sampler(diffusion, s["sampler"], s["steps"], s["eta"], s["spacing"])
    scales = _guidance_scales(guidance, num_classes(model), meta.get("path"))
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not name its data set; pass --dataset NAME")
    data = data if data is not None else load_images(dataset)
    test = data.split("test")
    shape = _image_shape(meta, test.images, dataset)
    clf = load_or_train(dataset, seed=0, device=dev, epochs=classifier_epochs, data=data)
    test_feats, test_probs = clf.run(test.images)
    k = len(clf.class_names) or int(max(data.split("train").labels.max(), test.labels.max())) + 1
    requested = _requested_classes(num_classes(model), k, n_samples, dataset)
    quality = partial(score_images, clf, ref_feats=test_feats, ref_radii=knn_radii(test_feats, PR_NEIGHBOURS), k=k,
                      seed=seed)
    results: dict[str, Any] = {
        "kind": "diffusion-eval", "checkpoint": meta.get("path"), "dataset": dataset, "step": meta.get("step"),
        "diffusion": meta.get("diffusion"), "n_samples": n_samples, "reference": f"test split ({len(test.images)} images)",
        "classifier": {"test_accuracy": clf.test_accuracy, "key": clf.key, "cached": clf.cached,
                       "feature_dim": int(test_feats.shape[1]), "confidence_threshold": CONFIDENCE,
                       "test_confident_share": float((test_probs.max(1) >= CONFIDENCE).mean())},
        "class_names": list(clf.class_names), "real_floor": _real_floor(quality, data.split("train"), n_samples, seed),
        "samplers": [], "device": str(dev), "machine": machine_info(), "seed": seed,
    }
    if requested is not None:
        results["conditional"] = {"num_classes": num_classes(model), "guidance": scales,
                                  "requested": "evenly: sample i asks for class i mod K"}
    log(f"evaluating {meta.get('path')} on {dataset}: classifier test accuracy {clf.test_accuracy:.4f}, "
        f"floor FID {results['real_floor']['fid']:.3f}")
    grids = {}
    for s in specs:
        for w in scales:
            samples, seconds = generate(model, diffusion, n_samples, shape, s["sampler"], s["steps"], s["eta"], seed,
                                        batch_size, dev, s["spacing"], class_labels=requested, guidance=w or 0.0)
            q = quality(samples, requested=None if requested is None else requested.numpy())
            row = _sampler_row(s, diffusion.T, q, seconds / n_samples, w)
            results["samplers"].append(row)
            grids[row["sampler"]] = samples[:64] if requested is None else samples[:6 * len(q["class_histogram"])]
    if nll_images:
        idx = stratified_sample(test.labels, nll_images, seed=seed)  # the images stratified_subset gives
        labels = None if requested is None else torch.as_tensor(test.labels[idx], dtype=torch.long)
        results["nll"] = nll_on_images(model, diffusion, images_to_tensor(test.images[idx]), batch_size=min(batch_size, 100),
                                       seed=seed, device=dev, num_t=nll_timesteps, class_labels=labels)
        if labels is not None:
            results["nll"]["given"] = "each image's true label, w = 0"
        log(f"NLL: {results['nll']['bpd']:.3f} bits/dim on {results['nll']['images']} test images")
    target = Path(out) if out else output_folder(path)
    return _write(results, grids, target)


def _guidance_scales(guidance: list[float] | str | None, k: int, path) -> list[float | None]:
    """The scales w to sample a model with (>= 0): [0.0] by default for a conditional model, [None] (no
    classes) for an unconditional one, which takes no --guidance."""
    if guidance is None or guidance == "":
        return [0.0] if k else [None]
    if not k:
        raise UserError(f"{path} is an unconditional model (not trained with --conditional): it takes no --guidance")
    try:
        scales = [float(w) for w in (guidance.split(",") if isinstance(guidance, str) else guidance) if str(w).strip()]
    except ValueError:
        raise UserError(f"--guidance takes comma-separated numbers such as 0,0.5,1,2,4, got {guidance!r}") from None
    if not scales or min(scales) < 0:
        raise UserError(f"guidance scales must be >= 0 (0: the plain conditional model), got {guidance!r}")
    return scales


def _requested_classes(k_model: int, k_data: int, n: int, dataset: str) -> torch.Tensor | None:
    """Sample i asks for class i mod K (every class equally often); None for an unconditional model."""
    if not k_model:
        return None
    if k_model != k_data:
        raise UserError(f"the model was trained on {k_model} classes but {dataset} has {k_data}; "
                        "pass the data set it was trained on with --dataset")
    return torch.arange(n) % k_model


def _image_shape(meta: dict[str, Any], images: np.ndarray, dataset: str) -> tuple[int, int, int]:
    """(C, H, W) the model makes; a UserError if the data set's images differ."""
    u = meta["unet"]
    shape = (int(u["in_channels"]), int(u["image_size"]), int(u["image_size"]))
    if tuple(images.shape[1:3]) != shape[1:] or (images.shape[3] if images.ndim == 4 else 1) != shape[0]:
        raise UserError(f"the model makes {shape[0]}x{shape[1]}x{shape[2]} images but {dataset} has "
                        f"{tuple(images.shape[1:])}; pass the data set it was trained on with --dataset")
    return shape


def _real_floor(quality, train: ImageDataset, n_samples: int, seed: int) -> dict[str, Any]:
    """The scores of a stratified sample of `n_samples` train images: what a perfect model gets at that n."""
    n = min(n_samples, len(train.images))
    return dict(quality(stratified_subset(train, n, seed)), what=f"{n} train images vs the test split")


def _sampler_row(spec: dict[str, Any], T: int, q: dict[str, Any], seconds_per_image: float,
                 w: float | None = None) -> dict[str, Any]:
    """One row of the table; a conditional model's row (`w` not None) is labelled e.g. `DDIM-50-w2`.
    Guidance (w > 0) keeps one network call per step, on a batch twice as large."""
    steps = spec["steps"] or T
    label = sampler_label(spec, T)
    if w is not None:
        head, sep, tail = label.partition(" ")
        label = f"{head}-w{w:g}{sep}{tail}"
    row = {"sampler": label, "spec": spec["spec"], "steps": steps, "eta": spec["eta"],
           "spacing": spec["spacing"], **q, "seconds_per_image": seconds_per_image,
           "model_calls_per_image": steps, **({} if w is None else {"guidance": w})}
    cond = f", conditional accuracy {q['conditional_accuracy']:.3f}" if "conditional_accuracy" in q else ""
    log(f"{row['sampler']}: FID {q['fid']:.3f}, KID x1e3 {q['kid'] * 1e3:.2f}, precision {q['precision']:.3f}, "
        f"recall {q['recall']:.3f}, confident {q['confident_share']:.3f}{cond}, "
        f"{seconds_per_image * 1000:.1f} ms/image")
    return row


def _write(results: dict[str, Any], grids: dict[str, torch.Tensor], target: Path) -> dict[str, Any]:
    """eval.json, eval.md and a sample grid per sampler into `target`."""
    RunDir(target).save_json("eval.json", results)
    atomic_write_bytes(target / "eval.md", render_markdown(results).encode())
    k = results.get("conditional", {}).get("num_classes")
    for label, imgs in grids.items():  # conditional: a column per class
        save_grid(imgs, target / f"eval-samples-{label.lower().split(' ')[0]}.png", nrow=k or 8)
    figure = guidance_tradeoff(results["samplers"], results["classifier"]["test_accuracy"]) if k else None
    if figure is not None:
        save_figure(figure, target / "eval-guidance.png")
    results["written"] = [str(target / "eval.json"), str(target / "eval.md")]
    return results


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "—"
    return f"{v:.{digits}f}"


def _quality_cells(q: dict[str, Any]) -> str:
    fid = _fmt(q["fid"], 2) + (" (biased)" if q.get("fid_biased") else "")
    return (f"{fid} | {_fmt(q['kid'] * 1e3, 2)} ± {_fmt(q['kid_std'] * 1e3, 2)} | {_fmt(q['precision'])} | "
            f"{_fmt(q['recall'])} | {_fmt(q['confident_share'])}")


def _conditional_note(r: dict[str, Any]) -> list[str]:
    """The paragraph that says how a conditional model was sampled and scored."""
    c = r.get("conditional")
    if not c:
        return []
    return ["", f"Class-conditional model ({c['num_classes']} classes), classes requested evenly, classifier-free "
            f"guidance scales w = {', '.join(f'{w:g}' for w in c['guidance'])} (0: the plain conditional model; "
            "eps = (1 + w) eps(x, class) - w eps(x, no class), one network call per step on a doubled batch). "
            "Conditional accuracy: the share of samples the classifier assigns to the class asked for; "
            f"on real test images it is the classifier's test accuracy, {r['classifier']['test_accuracy']:.4f}."]


def render_markdown(r: dict[str, Any]) -> str:
    """The results as a Markdown table with the reference, floor and classifier stated."""
    n = r["n_samples"]
    lines = [
        f"# Evaluation of {r.get('checkpoint')}" + (f" (step {r['step']})" if r.get("step") is not None else ""),
        "",
        f"Data set `{r['dataset']}`; {n} samples per sampler and {r['real_floor']['n']} real images for the floor, "
        f"compared with the {r['reference']}. Features: a small CNN trained on the train split (test accuracy "
        f"{r['classifier']['test_accuracy']:.4f}); FID/KID values are comparable only with this classifier, not with "
        f"Inception FIDs. Precision/recall: k = {PR_NEIGHBOURS} nearest neighbours. Confident share: classifier "
        f"probability >= {CONFIDENCE}."
        + (f" FID below n = {UNBIASED_FID_N} is biased upwards: read KID." if n < UNBIASED_FID_N else ""),
        *_conditional_note(r),
        "",
        f"| sampler | network calls | FID (n = {n}) | KID × 10³ | precision | recall | confident share |"
        + (" w | conditional accuracy |" if "conditional" in r else "") + " s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if "conditional" in r else "") + " ---: |",
    ]
    for s in r["samplers"]:
        cond = f" {s['guidance']:g} | {_fmt(s['conditional_accuracy'])} |" if "conditional" in r else ""
        lines.append(f"| {s['sampler']} | {s['model_calls_per_image']} | {_quality_cells(s)} |{cond} "
                     f"{_fmt(s['seconds_per_image'], 4)} |")
    f = r["real_floor"]
    lines.append(f"| real-data floor ({f['what']}) | — | {_quality_cells(f)} |" + (" — | — |" if "conditional" in r else "")
                 + " — |")
    names = r.get("class_names") or [str(i) for i in range(len(f["class_histogram"]))]
    lines += ["", "Class histograms of the samples (classifier's argmax):", "",
              "| sampler | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(f["class_histogram"])]
    for s in r["samplers"]:
        lines.append(f"| {s['sampler']} | " + " | ".join(str(c) for c in s["class_histogram"]) + " |")
    lines.append("| real floor | " + " | ".join(str(c) for c in f["class_histogram"]) + " |")
    if "nll" in r:
        b = r["nll"]
        how = ("all T terms" if b.get("exact", True) else
               f"unbiased estimate from {b['timesteps']} stratified timesteps per image")
        terms = f"; prior L_T {b['prior_bpd']:.2e}, decoder L_0 {b['decoder_bpd']:.3f}" if "prior_bpd" in b else ""
        how += f", given {b['given']}" if "given" in b else ""
        lines += ["", f"NLL (variational bound, {how}) on a stratified sample of {b['images']} test images: "
                  f"**{b['bpd']:.3f} ± {b['bpd_stderr']:.3f} bits/dim** (± one standard error{terms})."]
    m = r.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} CPUs, "
              f"torch {m.get('torch')} ({m.get('torch_threads')} threads), device {r.get('device')}."]
    return "\n".join(lines) + "\n"
