"""Calibration of label-word probabilities (Zhao et al. 2021, "Calibrate before use").

A prompt model's label-word probabilities carry a bias towards some labels whatever the input.
Contextual calibration estimates that bias as the label distribution `p_ref` of a reference
input and divides it out:

    q = (p / p_ref) / sum(p / p_ref)

which is Zhao et al.'s `softmax`-free form `W p + b` with `W = diag(p_ref)^-1`, `b = 0`,
renormalised. `p` is the label-word probabilities renormalised over the labels (`softmax` of the
label scores); dividing the unnormalised probabilities gives the same `q`. Two references:

- `content-free`: the mean of `p` over the template filled with "N/A", with "" and with the
  tokenizer's mask token (each in `{x}`, and in `{x2}` for pair tasks), Zhao et al.'s three
  content-free inputs;
- `domain`: the mean of `p` over unlabeled in-domain inputs: a fixed subset of the train split's
  texts (`domain_examples`: the smallest salted hashes of their text, `data.splits.hash_order`; never dev or test).

A calibrated input equal to the reference (a content-free input whose `p` is `p_ref`) gets the
uniform distribution. The reference is computed once per model (after training, for trained
prompts), stored in the run folder as `calibration.json` and applied by `evaluate` and `predict`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

import torch

from ...data.splits import hash_order
from ...data.text import input_key
from ...errors import UserError
from .choices import check_calibration

CONTENT_FREE = ("N/A", "", None)  # None: the tokenizer's mask token
FILE = "calibration.json"


def reference_log_probs(scores: torch.Tensor) -> torch.Tensor:
    """log p_ref [C]: the log of the mean over rows of softmax(scores) [N, C]."""
    probs = torch.softmax(scores.double(), dim=-1).mean(0)
    return (probs / probs.sum()).log().float()


def apply_calibration(scores: torch.Tensor, log_ref: torch.Tensor) -> torch.Tensor:
    """log q [B, C] with q = (p / p_ref) renormalised, p = softmax(scores)."""
    return torch.log_softmax(scores - log_ref.to(scores.device, scores.dtype), dim=-1)


def domain_examples(examples, n: int) -> list:
    """A fixed subset of n examples, whatever their order: those whose inputs have the smallest
    salted hashes, smallest first (`data.splits.hash_order`, salt "domain")."""
    keys = ["\t".join(input_key(ex)) for ex in examples]
    return [examples[i] for i in hash_order(keys, salt="domain")[:max(1, int(n))]]


def content_free_batches(model, pair: bool) -> list[dict[str, torch.Tensor]]:
    """One batch per content-free input: the model's template with "N/A", "" or the mask token as input."""
    batches = []
    for text in CONTENT_FREE:
        if text is not None:
            batches.append(model.encode([text], [text] if pair else None))
        else:
            batches.append(_with_mask_inputs(model, pair))
    return batches


def _with_mask_inputs(model, pair: bool) -> dict[str, torch.Tensor]:
    """The template with the mask token as each input. `encode` turns a mask spelled inside an input
    into ordinary tokens, so the mask id is inserted where the inputs go, found as the first token
    at which the template filled with a probe text differs from the template filled with "". Two
    probes with different first tokens, so text after the slot that starts like one cannot hide it."""
    empty = model.encode([""], [""] if pair else None)
    ids = empty["input_ids"][0].tolist()
    mask_pos = int(empty["mask_positions"][0])
    soft = empty["soft_positions"][0].tolist()
    slots = []
    for which in ((0, 1) if pair else (0,)):
        first_differences = []
        for text in ("N/A", "#"):
            a, b = (text, "") if which == 0 else ("", text)
            probe = model.encode([a], [b] if pair else None)["input_ids"][0].tolist()
            first_differences.append(next(i for i, (p, e) in enumerate(zip(probe, ids + [None])) if p != e))
        slots.append(min(first_differences))
    for s in sorted(slots, reverse=True):  # from the right, so earlier slots keep their index
        ids.insert(s, model.tokenizer.mask_token_id)
        mask_pos += s <= mask_pos
        soft = [p + (s <= p) for p in soft]
    return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "soft_positions": torch.tensor([soft], dtype=torch.long).reshape(1, -1),
            "mask_positions": torch.tensor([mask_pos])}


@torch.no_grad()
def fit_calibration(model, kind: str, train_examples: Callable[[], list], pair: bool, n_domain: int,
                    batch_size: int = 64) -> dict | None:
    """Compute the reference of a prompt model (uncalibrated, in eval mode) and set it on the model.

    `train_examples` gives the train split (called for kind "domain" only). Returns what
    calibration.json holds: the kind, the reference probabilities, log p_ref and the inputs
    used; None for kind "none" (the model is left as it is).
    """
    if check_calibration(kind) == "none":
        return None
    model.set_calibration(None)
    model.eval()
    if kind == "content-free":
        scores = torch.cat([model(b).float().cpu() for b in content_free_batches(model, pair)])
        inputs = ["N/A", "", model.tokenizer.mask_token]
    else:
        examples = train_examples()
        if not examples:
            raise UserError("--calibrate domain needs unlabeled training texts, and the train split is empty")
        chosen = domain_examples(examples, n_domain)
        texts = [ex.text for ex in chosen]
        texts_b = [getattr(ex, "text_b", None) or "" for ex in chosen] if pair else None
        scores = model.scores_in_batches(texts, texts_b, batch_size)
        inputs = [f"{len(chosen)} train-split texts with the smallest salted hashes"]
    log_ref = reference_log_probs(scores)
    model.set_calibration(log_ref)
    return {"kind": kind, "reference_probabilities": [math.exp(v) for v in log_ref.tolist()],
            "log_reference": log_ref.tolist(), "inputs": inputs, "num_inputs": int(scores.shape[0]),
            "formula": "q = (p / p_ref) / sum(p / p_ref), p = softmax(label scores)"}


def load_calibration(run_dir: str | Path, model) -> dict | None:
    """Set the calibration stored in a run folder on its model (nothing when the run has none)."""
    path = Path(run_dir) / FILE
    if not path.exists():
        return None
    info = json.loads(path.read_text())
    model.set_calibration(torch.tensor(info["log_reference"], dtype=torch.float32))
    return info
