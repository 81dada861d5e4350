"""PET (Schick & Schütze 2021): an ensemble of pattern models, distilled into one classifier.

`train_pet(cfg, out)`, PET's runner in the method registry, does for one data set, K and seed:

1. the few-shot draw of every run;
2. one prompt-ft model per pattern (`methods.defaults.pet_patterns`; the first is the data set's
   hard template), each trained exactly as a `prompt-ft` run with that template;
3. the unlabeled set U: `pet_unlabeled` train-split texts without their labels (a fixed subset),
   none of them a few-shot example and none whose text occurs in the dev or test split;
4. the ensemble: the patterns' mean label scores, and soft labels q = softmax(mean / T) on U;
5. the distilled model: a `FineTuneClassifier` trained on U against q with PET's loss
   (`distillation_loss`), with the model choice on the few-shot dev set of every run.

The formulas, and why averaging log-probabilities gives PET's logit ensemble exactly, are in
docs/prompting.md ("PET"). The run folder is the distilled model's; `pet.json` (the registry's
file of this method) holds each pattern's, the ensemble's and the distilled model's accuracy.
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from ...data.text import input_key
from ...errors import UserError
from ...progress import log
from ...seeding import seed_everything
from ..models.backbone import fresh_backbone
from .classifier_factory import build_model
from ..prompts.calibration import domain_examples
from .config import RunConfig
from ...training_setup import get_accelerator
from .scoring import score
from .fewshot import FewShotSplit
from ..methods.defaults import pet_patterns
from ..methods.registry import PET_FILE
from .metrics import accuracy
from .data import RunData, load_data, prepare_data, split_or_none, texts_of
from .folder import run_results, start_run_folder, write_outputs
from .loop import fit

FORMULAS = {"ensemble": "s(x, y) = mean over patterns p of s_p(x, y) (label-word log-probabilities)",
            "soft_labels": "q(y|x) = softmax_y(s(x, .) / T)",
            "loss": "T^2 * mean_x sum_y -q(y|x) log softmax_y(z(x) / T)"}


@dataclass(frozen=True)
class SoftExample:
    """An unlabeled text with the ensemble's soft label (`label` is its argmax, for code that reads one)."""

    text: str
    text_b: str | None
    target: torch.Tensor  # q(. | x), [num_labels]

    @property
    def label(self) -> int:
        return int(self.target.argmax())


def ensemble_scores(pattern_scores: Sequence[torch.Tensor]) -> torch.Tensor:
    """s = the mean of the patterns' [N, C] label scores (float64)."""
    return torch.stack([s.double() for s in pattern_scores]).mean(0)


def soft_labels(pattern_scores: Sequence[torch.Tensor], temperature: float) -> torch.Tensor:
    """q = softmax(s / T) [N, C] of the ensemble's mean scores s."""
    return torch.softmax(ensemble_scores(pattern_scores) / temperature, dim=-1).float()


def distillation_loss(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """T² · mean over the batch of Σ_y −q(y) log softmax(z / T)_y: PET's loss of the distilled model."""
    log_p = F.log_softmax(logits / temperature, dim=-1)
    return temperature ** 2 * -(targets.to(log_p.device, log_p.dtype) * log_p).sum(-1).mean()


def soft_label_loss(model, examples: Sequence[SoftExample], temperature: float) -> torch.Tensor:
    """`training.fit`'s batch loss for the distilled model: its logits against the examples' soft labels."""
    texts, texts_b = texts_of(examples)
    return distillation_loss(model.scores(texts, texts_b), torch.stack([ex.target for ex in examples]), temperature)


def unlabeled_examples(ds, data: RunData, n: int) -> list:
    """U: n train-split examples (labels are not used), none of them a few-shot train or dev example
    and none whose text occurs in the dev or test split; a fixed subset (`calibration.domain_examples`)."""
    taken = {input_key(ex) for ex in data.few_shot.train + data.few_shot.dev}
    for name in ("dev", "test"):
        part = split_or_none(ds, name)
        taken |= {input_key(ex) for ex in (part.examples if part is not None else [])}
    train = split_or_none(ds, "train")
    pool = [ex for ex in (train.examples if train is not None else []) if input_key(ex) not in taken]
    return domain_examples(pool, n) if pool else []


def train_pattern(cfg: RunConfig, data: RunData, template: str, backbone, tokenizer, acc, unlabeled: list) -> dict:
    """One pattern model, trained as a prompt-ft run with `template`; its scores on test and on U."""
    t0 = time.time()
    pcfg = replace(cfg, method="prompt-ft", template=template)
    seed_everything(cfg.seed)
    model = build_model(pcfg, backbone, tokenizer, data.class_names, data.few_shot.train).to(acc.device)
    best, _ = fit(model, pcfg, data, acc)
    model.eval()
    test = score(model, data.test, cfg.eval_batch_size)
    return {"template": template, "label_words": model.label_descriptions(data.class_names),
            "dev_accuracy": best.accuracy, "best_step": best.step,
            "test_accuracy": accuracy(test.argmax(-1).tolist(), [ex.label for ex in data.test]),
            "seconds": round(time.time() - t0, 2), "test_scores": test,
            "unlabeled_scores": score(model, unlabeled, cfg.eval_batch_size)}


def train_pet(cfg: RunConfig, out: str | Path | None, ds=None, backbone=None, quiet: bool = False,
              extra_config: dict | None = None) -> dict:
    """Run PET for one config (method "pet"); return results.json's dict (the distilled model's)."""
    t0 = time.time()
    ds = ds if ds is not None else load_data(cfg.dataset)
    data = prepare_data(cfg, ds)
    cfg = cfg.resolved(pair=data.pair)
    acc = get_accelerator(cfg.device)
    bb, tok = backbone if backbone is not None else fresh_backbone(cfg.backbone)
    unlabeled = unlabeled_examples(ds, data, cfg.pet_unlabeled)
    if not unlabeled:
        raise UserError(f"--method pet needs unlabeled train-split texts beyond the few-shot examples; {cfg.dataset!r} has none")
    patterns = [train_pattern(cfg, data, t, copy.deepcopy(bb), tok, acc, unlabeled)
                for t in pet_patterns(cfg.dataset, data.pair)]
    q = soft_labels([p.pop("unlabeled_scores") for p in patterns], cfg.pet_temperature)
    soft = [SoftExample(ex.text, getattr(ex, "text_b", None), target) for ex, target in zip(unlabeled, q)]
    student_data = RunData(FewShotSplit(cfg.shots, cfg.seed, soft, data.few_shot.dev), data.test, data.class_names, data.pair)
    scfg = replace(cfg, steps=cfg.pet_distill_steps)
    run = start_run_folder(out, cfg, data, bb, extra_config, enabled=acc.is_main_process)
    seed_everything(cfg.seed)
    student = build_model(scfg, bb, tok, data.class_names).to(acc.device)
    loss = functools.partial(soft_label_loss, temperature=cfg.pet_temperature)
    best, extra = fit(student, scfg, student_data, acc, run, quiet, loss_fn=loss)
    student.eval()
    test_scores = score(student, data.test, cfg.eval_batch_size)
    gold = [ex.label for ex in data.test]
    ensemble = ensemble_scores([p.pop("test_scores") for p in patterns]).argmax(-1).tolist()
    extra.update(train_seconds=round(time.time() - t0, 2), ensemble_test_accuracy=accuracy(ensemble, gold),
                 pattern_test_accuracy=[p["test_accuracy"] for p in patterns], num_unlabeled=len(unlabeled))
    results = run_results(cfg, data, student, test_scores, best, extra)
    if run is not None:
        run.save_json(PET_FILE, {"patterns": patterns, "ensemble": {"test_accuracy": results["ensemble_test_accuracy"]},
                                 "distilled": {"test_accuracy": results["test_accuracy"], "dev_accuracy": best.accuracy,
                                               "best_step": best.step, "steps": scfg.steps},
                                 "unlabeled": {"n": len(unlabeled), "from": "train split, without labels"},
                                 "temperature": cfg.pet_temperature, "formulas": FORMULAS})
        write_outputs(run, student, cfg, data, test_scores, results)
    if not quiet:
        log(f"pet on {cfg.dataset} (K={cfg.shots}, seed {cfg.seed}): patterns "
            + ", ".join(f"{100 * a:.1f}" for a in results["pattern_test_accuracy"])
            + f" %, ensemble {100 * results['ensemble_test_accuracy']:.1f} %, distilled {100 * results['test_accuracy']:.1f} %")
    acc.wait_for_everyone()
    return results
