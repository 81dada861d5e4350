"""Evaluating a trained DDPM: FID, KID, precision/recall, confident share, class histogram,
bits/dim, sampling time.

    diffprompt diffusion evaluate RUN_DIR --samplers ddpm,ddim:50,dpm++2m:20 --n-samples 1000 --nll-images 1000

* Features come from a small CNN (`feature_classifier.py`): the network shipped for a named data
  set, pinned by its sha256, so every machine gets the same numbers (`feature_networks.py`); a
  network file the user passes (`feature_net`); or, for a set without one, a network trained here
  and cached, whose numbers compare only with runs on this machine. eval.json names the network,
  its source and hash. Samples are compared with the **full test split**.
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
  sampler at every w (rows labelled `DDIM-50-w2`), with the classes requested in the training split's
  proportions (`classes_in_proportion`; for a balanced set sample i asks for class i mod K), so the
  samples are scored against the same mixture of classes as the floor and the test split; each row
  adds the conditional accuracy, the share of samples the classifier
  assigns to the class asked for. `eval-guidance.png` plots FID and conditional accuracy against w:
  Ho & Salimans' fidelity-diversity trade-off. The bound is computed with w = 0 and each test
  image's true label, so it compares with an unconditional model's.

Writes `eval.json` and `eval.md` into the run folder (or `out`). The bits/dim batches are kept in its
`nll-batches/` while they run, so the same command run again after a stop resumes the bound there.
"""

from __future__ import annotations

import os
import platform
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...checkpoint import atomic_write_bytes
from ...data import ImageDataset, load_images
from ...data.images import stratified_subset
from ...data.splits import class_quotas, stratified_sample
from ...device import choose_device
from ...errors import UserError
from ...progress import log
from ...rundir import RunDir
from ..checkpoints import load_model, output_folder
from ..choices import DEFAULT_EVAL_SAMPLERS
from ..generate import check_sampler, generate, parse_sampler_spec, sampler_label
from ..guidance import num_classes
from ..pixels import images_to_tensor
from ..visualize import guidance_tradeoff, save_figure, save_grid
from .bits_per_dim import nll_on_images
from .feature_networks import feature_network
from .markdown import render_markdown
from .sample_scores import CONFIDENCE, Reference


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


def evaluate(path: str | Path, samplers: list[str] | str = DEFAULT_EVAL_SAMPLERS, n_samples: int = 1000,
             nll_images: int = 100, batch_size: int = 250, seed: int = 0, device: str = "auto",
             dataset: str | None = None, out: str | Path | None = None, classifier_epochs: int = 8,
             data: ImageDataset | None = None, nll_timesteps: int = 0,
             guidance: list[float] | str | None = None, feature_net: str | Path | None = None,
             sample_grids: bool = True, weights: str = "ema") -> dict[str, Any]:
    """Evaluate a run folder or checkpoint; write eval.json and eval.md; return the results.

    `guidance`: the scales w a conditional model is sampled at (default [0]); an unconditional one takes none.
    `feature_net`: a feature network file to score with instead of the data set's (`feature_networks.py`).
    `sample_grids`: also write a grid of each row's first samples (eval-samples-*.png).
    `weights`: "raw" scores a training checkpoint's optimised weights instead of their EMA.
    """
    specs = _parse_specs(samplers, n_samples, nll_images)
    dev = choose_device(device)
    model, diffusion, meta = load_model(path, dev, weights=weights)
    for s in specs:  # fail fast on steps > T or a bad eta, before any sampling
        check_sampler(diffusion, s["sampler"], s["steps"], s["eta"], s["spacing"])
    scales = _guidance_scales(guidance, num_classes(model), meta.get("path"))
    dataset = dataset or meta.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not name its data set; pass --dataset NAME")
    data = data if data is not None else load_images(dataset)
    shape = _image_shape(meta, data.split("test").images, dataset)
    ref = _reference(data, dataset, dev, classifier_epochs, seed, feature_net)
    requested = _requested_classes(num_classes(model), data.split("train").labels, ref.num_classes, n_samples, dataset)
    results = {**_header(meta, dataset, data, ref, n_samples, dev, seed), "weights": weights}
    if requested is not None:
        results["conditional"] = {"num_classes": num_classes(model), "guidance": scales,
                                  "requested": "in the training split's class proportions",
                                  "requested_counts": np.bincount(requested.numpy(), minlength=ref.num_classes).tolist()}
    log(f"evaluating {meta.get('path')} on {dataset}: classifier test accuracy {ref.classifier.test_accuracy:.4f}, "
        f"floor FID {results['real_floor']['fid']:.3f}")
    sampling = partial(generate, model, diffusion, n_samples, shape, seed=seed, batch_size=batch_size, device=dev,
                       class_labels=requested)
    results["samplers"], grids = _score_samplers(sampling, specs, scales, ref, requested, diffusion.num_timesteps, n_samples)
    folder = Path(out) if out else output_folder(path)
    if nll_images:
        results["nll"] = _test_bits_per_dim(model, diffusion, data.split("test"), nll_images, requested is not None,
                                            min(batch_size, 100), seed, dev, nll_timesteps, folder / "nll-batches")
    return _write(results, grids if sample_grids else {}, folder)


def _parse_specs(samplers: list[str] | str, n_samples: int, nll_images: int) -> list[dict[str, Any]]:
    """The parsed sampler specs (a comma-separated string or a list); a UserError for bad sizes."""
    if isinstance(samplers, str):
        samplers = samplers.split(",")
    specs = [parse_sampler_spec(s) for s in samplers if s.strip()]
    if n_samples < 2:
        raise UserError(f"--n-samples must be at least 2 for FID/KID, got {n_samples}")
    if nll_images < 0:
        raise UserError(f"--nll-images must be >= 0, got {nll_images}")
    return specs


def _reference(data: ImageDataset, dataset: str, device, classifier_epochs: int, seed: int,
               feature_net: str | Path | None = None) -> Reference:
    """The feature network that scores `dataset` and the test split in its features."""
    test = data.split("test")
    clf = feature_network(dataset, data, device, classifier_epochs, feature_net)
    k = len(clf.class_names) or int(max(data.split("train").labels.max(), test.labels.max())) + 1
    return Reference.of(clf, test.images, k, seed)


def _header(meta: dict[str, Any], dataset: str, data: ImageDataset, ref: Reference, n_samples: int, device,
            seed: int) -> dict[str, Any]:
    """eval.json's entries before the samplers': what was evaluated against what, and the real-data floor."""
    clf = ref.classifier
    return {
        "kind": "diffusion-eval", "checkpoint": meta.get("path"), "dataset": dataset, "step": meta.get("step"),
        "diffusion": meta.get("diffusion"), "n_samples": n_samples,
        "reference": f"test split ({len(ref.features)} images)",
        "classifier": {**clf.describe(), "test_accuracy": _test_accuracy(ref, data.split("test")),
                       "feature_dim": int(ref.features.shape[1]), "confidence_threshold": CONFIDENCE,
                       "test_confident_share": float((ref.probs.max(1) >= CONFIDENCE).mean())},
        "class_names": list(clf.class_names), "real_floor": _real_floor(ref, data.split("train"), n_samples, seed),
        "samplers": [], "device": str(device), "machine": machine_info(), "seed": seed,
    }


def _test_accuracy(ref: Reference, test: ImageDataset) -> float:
    """The network's accuracy on this test split, computed here (a shipped network may serve several sets)."""
    return float((ref.probs.argmax(1) == np.asarray(test.labels)).mean())


def _score_samplers(sampling, specs: list[dict[str, Any]], scales: list[float | None], ref: Reference,
                    requested: torch.Tensor | None, num_timesteps: int,
                    n_samples: int) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    """A table row per sampler and guidance scale, and the first samples of each for its grid."""
    rows, grids = [], {}
    for s in specs:
        for w in scales:
            samples, seconds = sampling(s["sampler"], s["steps"], s["eta"], spacing=s["spacing"], guidance=w or 0.0)
            q = ref.score(samples, requested=None if requested is None else requested.numpy())
            row = _sampler_row(s, num_timesteps, q, seconds / n_samples, w)
            rows.append(row)
            grids[row["sampler"]] = samples[:64] if requested is None else samples[:6 * len(q["class_histogram"])]
    return rows, grids


def _test_bits_per_dim(model, diffusion, test: ImageDataset, n: int, conditional: bool, batch_size: int, seed: int,
                       device, nll_timesteps: int, resume_dir: Path) -> dict[str, Any]:
    """Bits/dim on a stratified sample of n test images (a conditional model is given their true labels);
    finished batches are kept in `resume_dir` until the end, so a stopped evaluation resumes there."""
    idx = stratified_sample(test.labels, n, seed=seed)  # the images stratified_subset gives
    labels = torch.as_tensor(test.labels[idx], dtype=torch.long) if conditional else None
    nll = nll_on_images(model, diffusion, images_to_tensor(test.images[idx]), batch_size=batch_size, seed=seed,
                        device=device, num_t=nll_timesteps, class_labels=labels, resume_dir=resume_dir)
    if conditional:
        nll["given"] = "each image's true label, w = 0"
    log(f"NLL: {nll['bpd']:.3f} bits/dim on {nll['images']} test images")
    return nll


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


def _requested_classes(k_model: int, train_labels: np.ndarray, k_data: int, n: int, dataset: str) -> torch.Tensor | None:
    """The class each of n samples asks for, in the training split's proportions; None for an unconditional model."""
    if not k_model:
        return None
    if k_model != k_data:
        raise UserError(f"the model was trained on {k_model} classes but {dataset} has {k_data}; "
                        "pass the data set it was trained on with --dataset")
    return classes_in_proportion(np.bincount(train_labels, minlength=k_model), n)


def classes_in_proportion(counts: np.ndarray, n: int) -> torch.Tensor:
    """n class labels, each class's share of `counts` (`class_quotas`: the floor draws the same shares),
    dealt round-robin: class 0, 1, ..., K-1, 0, 1, ... while each has quota left. Equal counts give
    sample i the class i mod K."""
    quota = class_quotas(counts, n)
    rounds = np.arange(quota.max())[:, None] < quota[None, :]  # [round, class]: whether class still deals
    return torch.from_numpy(np.nonzero(rounds)[1].astype(np.int64))


def _image_shape(meta: dict[str, Any], images: np.ndarray, dataset: str) -> tuple[int, int, int]:
    """(C, H, W) the model makes; a UserError if the data set's images differ."""
    u = meta["unet"]
    shape = (int(u["in_channels"]), int(u["image_size"]), int(u["image_size"]))
    if tuple(images.shape[1:3]) != shape[1:] or (images.shape[3] if images.ndim == 4 else 1) != shape[0]:
        raise UserError(f"the model makes {shape[0]}x{shape[1]}x{shape[2]} images but {dataset} has "
                        f"{tuple(images.shape[1:])}; pass the data set it was trained on with --dataset")
    return shape


def _real_floor(ref: Reference, train: ImageDataset, n_samples: int, seed: int) -> dict[str, Any]:
    """The scores of a stratified sample of `n_samples` train images: what a perfect model gets at that n."""
    n = min(n_samples, len(train.images))
    return dict(ref.score(stratified_subset(train, n, seed)), what=f"{n} train images vs the test split")


def _sampler_row(spec: dict[str, Any], num_timesteps: int, q: dict[str, Any], seconds_per_image: float,
                 w: float | None = None) -> dict[str, Any]:
    """One row of the table; a conditional model's row (`w` not None) is labelled e.g. `DDIM-50-w2`.
    Guidance (w > 0) keeps one network call per step, on a batch twice as large."""
    steps = spec["steps"] or num_timesteps
    label = sampler_label(spec, num_timesteps)
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
