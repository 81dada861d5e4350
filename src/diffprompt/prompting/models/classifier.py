"""The one interface of the text classifiers (`PromptClassifier`, `FineTuneClassifier`).

Training, evaluation and the CLI use only these names:

- `scores(texts, texts_b=None)` -> [B, num_labels] (label-word log-scores, or head logits);
- `loss(texts, labels, texts_b=None)`: cross-entropy of the labels under softmax(scores);
- `predict(texts, texts_b=None)` and `scores_in_batches(...)`: eval mode, no gradients;
- `trainable_parameters()`;
- `save(path)`, `load(path)` (into this model) and `Class.from_file(path, backbone=None,
  tokenizer=None)` (a new model, loading the backbone the file names when none is given);
- `score_kind` (what a score is, for people) and `label_descriptions(class_names)`.
"""

from __future__ import annotations

import abc
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import load_checkpoint
from ...errors import UserError
from ...progress import progress
from .backbone import DEFAULT_BACKBONE, load_backbone
from ..prompts.template import check_texts


class TextClassifier(nn.Module, metaclass=abc.ABCMeta):
    FORMAT: str  # the "format" field of a saved file's JSON sidecar
    score_kind: str  # what one entry of `scores` is

    @abc.abstractmethod
    def scores(self, texts, texts_b=None) -> torch.Tensor:
        """[B, num_labels] scores of a batch of texts (pairs: `texts_b` holds the second inputs)."""

    @abc.abstractmethod
    def encode(self, texts, texts_b=None) -> dict[str, torch.Tensor]:
        """The model's input batch: at least `input_ids` and `attention_mask` [B, L]."""

    @abc.abstractmethod
    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters an optimiser should update."""

    @abc.abstractmethod
    def label_descriptions(self, class_names: list[str]) -> list[str]:
        """How each label is shown to the model (its verbalizer words, or its name)."""

    @abc.abstractmethod
    def save(self, path) -> Path:
        """Write the trained state to `path` (.safetensors plus a .json sidecar)."""

    @abc.abstractmethod
    def load(self, path) -> "TextClassifier":
        """Load a file written by `save` into this model; a mismatch is a `UserError`."""

    @classmethod
    @abc.abstractmethod
    def from_meta(cls, meta: dict, backbone: nn.Module, tokenizer, **overrides) -> "TextClassifier":
        """An untrained model shaped like the one whose sidecar is `meta`."""

    # ------------------------------------------------------------------ shared behaviour
    def loss(self, texts, labels, texts_b=None) -> torch.Tensor:
        """Cross-entropy of the labels under softmax(scores)."""
        logits = self.scores(texts, texts_b)
        return F.cross_entropy(logits, torch.as_tensor(labels, dtype=torch.long, device=logits.device))

    @torch.no_grad()
    def scores_in_batches(self, texts, texts_b=None, batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
        """[N, num_labels] float scores on the CPU, computed in eval mode (the mode is restored after)."""
        texts = check_texts(texts, "texts")
        if texts_b is not None:
            texts_b = check_texts(texts_b, "texts_b")
        size = max(1, int(batch_size))
        starts = range(0, len(texts), size)
        was_training = self.training
        self.eval()
        try:
            out = [self.scores(texts[s:s + size], texts_b[s:s + size] if texts_b is not None else None).float().cpu()
                   for s in (progress(starts, desc=desc, total=len(starts)) if desc else starts)]
        finally:
            self.train(was_training)
        return torch.cat(out) if out else torch.zeros(0, 0)

    def predict(self, texts, texts_b=None, batch_size: int = 32) -> torch.Tensor:
        """Predicted label indices (LongTensor on the CPU), computed in eval mode."""
        return self.scores_in_batches(texts, texts_b, batch_size).argmax(-1)

    @classmethod
    def read_file(cls, path) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors, sidecar) of a file this class wrote; another file is a `UserError`."""
        tensors, meta = load_checkpoint(path)
        if meta.get("format") != cls.FORMAT:
            raise UserError(f"{path} is not a file written by {cls.__name__}.save "
                            "(its .json sidecar must sit beside it)")
        return tensors, meta

    @classmethod
    def from_file(cls, path, backbone=None, tokenizer=None, **overrides) -> "TextClassifier":
        """A model rebuilt from a saved file; with no backbone given, the one the file names is loaded."""
        _, meta = cls.read_file(path)
        if backbone is None:
            name = meta.get("backbone")
            backbone, tok = load_backbone(None if name == DEFAULT_BACKBONE else name)
            tokenizer = tokenizer or tok
        elif tokenizer is None:
            raise UserError(f"{cls.__name__}.from_file got a backbone but no tokenizer; pass both, "
                            "or neither to load the saved backbone")
        return cls.from_meta(meta, backbone, tokenizer, **overrides).load(path)


def dedupe_tied(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Drop tensors that share storage with an earlier key (tied weights); return {dropped: kept}."""
    seen: dict[tuple, str] = {}
    out, tied = {}, {}
    for k, v in state.items():
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride())) if v.numel() else None
        if key is not None and key in seen:
            tied[k] = seen[key]
            continue
        if key is not None:
            seen[key] = k
        out[k] = v
    return out, tied
