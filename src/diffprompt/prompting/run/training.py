"""One prompting run: `train_run(cfg, out)` hands the config to its method's runner (the registry's
`runner`); `train_single` is the runner of every method that trains one model. It does, for one
data set, method, K and seed:

1. load the data set and draw K examples per class for training and K more for dev
   (`data.prepare_data`; `shots=0` uses the whole train and dev splits);
2. build the model: a `PromptClassifier` (zero-shot, prompt-ft, soft, hybrid) or a
   `FineTuneClassifier` (finetune) on a fresh copy of the backbone; with `--verbalizer auto`
   its label words are searched first (`label_search.choose_label_words`);
3. train it with model choice on the few-shot dev set (`loop.fit`);
4. with `--calibrate`, compute the calibration reference of the
   trained model (calibration.py); evaluate on the test split, and write the run folder
   (`folder.write_outputs`); with `log_with`, its metrics lines also go to TensorBoard or
   W&B (tracking.py).

Multi-process training goes through Accelerate (`torchrun --standalone --nproc_per_node 2 -m
diffprompt prompting train ...` on CPUs with gloo, `accelerate launch --num_processes N -m ...` on
GPUs; `accelerate launch --cpu` starts a single process): each process takes its share of every
global batch and the gradients are averaged across processes before each step
(`loop.py`). Only the main process writes.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from ...progress import log
from ...seeding import seed_everything
from ...tracking import end_tracking, start_tracking
from ...training_setup import get_accelerator
from ..methods.registry import get_method
from ..models.backbone import fresh_backbone
from ..models.classifier import TextClassifier
from ..prompts.calibration import FILE as CALIBRATION_FILE, fit_calibration
from ..prompts.choices import AUTO
from .classifier_factory import build_model
from .config import RunConfig
from .data import RunData, load_data, prepare_data, split_or_none, texts_of
from .folder import LABEL_WORDS_FILE, run_results, start_run_folder, write_outputs
from .label_search import choose_label_words
from .loop import fit
from .scoring import score


def train_run(cfg: RunConfig, out: str | Path | None, ds=None, backbone=None, quiet: bool = False,
              extra_config: dict | None = None) -> dict:
    """Run one config with its method's runner and return its results dict (also written to
    `out/results.json`).

    `ds`: a loaded TextDataset to reuse; `backbone`: a fresh (model, tokenizer) to train (it is
    modified); both are loaded when None.
    """
    return get_method(cfg.method).run(cfg, out, ds, backbone, quiet, extra_config)


def train_single(cfg: RunConfig, out: str | Path | None, ds=None, backbone=None, quiet: bool = False,
                 extra_config: dict | None = None) -> dict:
    """The runner of the methods that train one model (all but PET): see the module's docstring."""
    t0 = time.time()
    data = prepare_data(cfg, ds)
    cfg = cfg.resolved(pair=data.pair)
    acc = get_accelerator(cfg.device)
    bb, tok = backbone if backbone is not None else fresh_backbone(cfg.backbone)
    search = choose_label_words(cfg, data, bb, tok, acc) if cfg.verbalizer == AUTO else None
    seed_everything(cfg.seed)
    model = build_model(replace(cfg, verbalizer=search["verbalizer"]) if search else cfg, bb, tok, data.class_names,
                        data.few_shot.train)
    prepare_demonstrations(model, data)
    run = start_run_folder(out, cfg, data, bb, extra_config, enabled=acc.is_main_process)
    start_tracking(run, cfg.log_with)
    model.to(acc.device)
    best, extra = fit(model, cfg, data, acc, run, quiet)
    model.eval()
    calibration = fit_calibration(model, cfg.calibrate, lambda: train_split(ds, cfg.dataset), data.pair,
                                  cfg.domain_examples, cfg.eval_batch_size)
    extra.update(train_seconds=round(time.time() - t0, 2), calibrate=cfg.calibrate)

    t1 = time.time()
    test_scores = score(model, data.test, cfg.eval_batch_size, desc=None if quiet else "test")
    extra["test_seconds"] = round(time.time() - t1, 2)
    results = run_results(cfg, data, model, test_scores, best, extra)
    if run is not None:
        for name, info in ((LABEL_WORDS_FILE, search), (CALIBRATION_FILE, calibration)):
            if info is not None:
                run.save_json(name, info)
        write_outputs(run, model, cfg, data, test_scores, results)
        end_tracking(run)
    if not quiet:
        log(f"{cfg.method} on {cfg.dataset} (K={cfg.shots}, seed {cfg.seed}): test accuracy {results['test_accuracy']:.4f} "
            f"(dev {best.accuracy:.3f} at step {best.step})")
    acc.wait_for_everyone()
    return results


def prepare_demonstrations(model: TextClassifier, data: RunData) -> None:
    """--demos similar: embed every input of the run (train, dev, test) once, in batches, up front."""
    demos = getattr(model, "demos", None)
    if demos is not None:
        for part in (data.few_shot.train, data.few_shot.dev, data.test):
            if part:
                demos.prepare(*texts_of(part))


def train_split(ds, dataset: str) -> list:
    """The whole train split (unlabeled texts for --calibrate domain)."""
    part = split_or_none(ds if ds is not None else load_data(dataset), "train")
    return list(part.examples) if part is not None else []
