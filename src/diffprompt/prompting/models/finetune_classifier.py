"""The fine-tuning baseline: the backbone's encoder plus a linear head on the first token.

The first token is the tokenizer's sequence-start special token ([CLS] for BERT, <s> for
RoBERTa). Head: Dropout(p) -> Linear(hidden, num_labels), freshly initialised (std 0.02, zero
bias). Inputs are encoded by the tokenizer itself (pairs as its sentence pairs, truncated
longest-first to `max_length`). The backbone's MLM head is not used and not trained.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import torch
from torch import nn

from ...checkpoint import check_state_dict_compatible, save_checkpoint, strip_prefix
from ...errors import UserError
from .backbone import backbone_id
from .classifier import TextClassifier, dedupe_tied
from .prompt_classifier import base_model
from ..prompts.template import check_texts

FORMAT = "diffprompt-finetune-v1"


class FineTuneClassifier(TextClassifier):
    FORMAT = FORMAT
    score_kind = "head logit"

    def __init__(self, backbone: nn.Module, tokenizer, num_labels: int, dropout: float = 0.1, max_length: int = 128):
        super().__init__()
        if int(num_labels) < 2:
            raise UserError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.num_labels = int(num_labels)
        self.max_length = int(max_length)
        self.dropout_p = float(dropout)
        object.__setattr__(self, "encoder", base_model(backbone))
        hidden = int(getattr(backbone.config, "hidden_size", 0) or getattr(backbone.config, "dim"))
        self.hidden_size = hidden
        self.dropout = nn.Dropout(self.dropout_p)
        self.head = nn.Linear(hidden, self.num_labels)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        # start in the backbone's mode (load_backbone returns it in eval mode): call .train() to train
        self.train(backbone.training)

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Encoder and head (the unused MLM head is left out)."""
        params = {id(p): p for p in self.encoder.parameters() if p.requires_grad}
        params.update({id(p): p for p in self.head.parameters()})
        return list(params.values())

    def encode(self, texts, texts_b=None) -> dict[str, torch.Tensor]:
        texts = check_texts(texts, "texts")
        if texts_b is not None:
            texts_b = check_texts(texts_b, "texts_b")
            if len(texts_b) != len(texts):
                raise UserError(f"got {len(texts)} first inputs but {len(texts_b)} second inputs; pass one of each per example")
        if not texts:
            raise UserError("no texts to encode; pass at least one example")
        limit = getattr(self.tokenizer, "model_max_length", None)
        max_len = min(self.max_length, limit) if isinstance(limit, int) and 0 < limit < 1_000_000 else self.max_length
        enc = self.tokenizer(texts, texts_b, truncation=True, max_length=max_len, padding=True, return_tensors="pt")
        return {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits [B, num_labels] for a batch made by `encode`."""
        kw = {k: v.to(self.device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        if "token_type_ids" in kw and "token_type_ids" not in inspect.signature(self.encoder.forward).parameters:
            kw.pop("token_type_ids")
        hidden = self.encoder(**kw)[0]
        return self.head(self.dropout(hidden[:, 0]))

    def scores(self, texts, texts_b=None) -> torch.Tensor:
        """[B, num_labels] head logits."""
        return self(self.encode(texts, texts_b))

    def label_descriptions(self, class_names: list[str]) -> list[str]:
        return list(class_names)

    # ------------------------------------------------------------------ saving and loading
    def save(self, path, extra_meta: dict | None = None) -> Path:
        """Encoder + head in safetensors, with backbone id, num_labels, dropout and max_length in the sidecar."""
        enc, tied = dedupe_tied(self.encoder.state_dict())
        tensors = {f"encoder.{k}": v for k, v in enc.items()}
        tensors.update({f"head.{k}": v for k, v in self.head.state_dict().items()})
        meta = {"format": FORMAT, "kind": "finetune-classifier", "backbone": backbone_id(self.backbone),
                "num_labels": self.num_labels, "dropout": self.dropout_p, "max_length": self.max_length,
                "hidden_size": self.hidden_size, "tied": {f"encoder.{k}": f"encoder.{v}" for k, v in tied.items()}}
        meta.update(extra_meta or {})
        return save_checkpoint(path, tensors, meta)

    def load(self, path) -> "FineTuneClassifier":
        """Load a file written by `save` into this model (same backbone and number of labels)."""
        tensors, meta = self.read_file(path)
        mine = backbone_id(self.backbone)
        if meta.get("backbone") != mine:
            raise UserError(f"{path} was trained on backbone {meta.get('backbone')!r}, not on {mine!r}; "
                            "load it with the backbone it was trained on")
        tied = set(strip_prefix(meta.get("tied", {}), "encoder."))
        enc, head = strip_prefix(tensors, "encoder."), strip_prefix(tensors, "head.")
        want = {k: v for k, v in self.encoder.state_dict().items() if k not in tied}
        check_state_dict_compatible(want, enc, what=f"checkpoint {path}")
        check_state_dict_compatible(self.head.state_dict(), head, what=f"checkpoint {path}")
        self.encoder.load_state_dict(enc, strict=False)
        self.head.load_state_dict(head)
        return self

    @classmethod
    def from_meta(cls, meta: dict, backbone: nn.Module, tokenizer, **overrides) -> "FineTuneClassifier":
        """The model a saved file describes (its number of labels, dropout and max_length)."""
        kw = {"dropout": meta.get("dropout", 0.1), "max_length": meta.get("max_length", 128), **overrides}
        return cls(backbone, tokenizer, meta["num_labels"], **kw)
