"""The reference a user would pick instead of prompting: logistic regression on sentence embeddings.

Not a prompting method. Each input becomes one vector from a frozen sentence encoder (the packaged
all-MiniLM-L6-v2 by default: mean-pooled, unit length, sentence_encoder.py), and a multinomial
logistic regression is fitted on the K examples per class the other methods train on. The fit
minimises scikit-learn's `LogisticRegression` objective, C · Σ_i CE(W x_i + b, y_i) + ½‖W‖²
(the bias is not penalised), to its optimum by full-batch L-BFGS: the objective is strictly convex
in W and convex in b, so the answer does not depend on a learning rate or a step count. The
inverse regularisation strength C is chosen on the few-shot dev set from `C_GRID`
(run/embedding_reference.py), as every other method chooses its model on dev.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import check_state_dict_compatible, save_checkpoint
from ...errors import UserError
from ..prompts.template import check_texts
from .classifier import TextClassifier
from .sentence_encoder import MAX_TOKENS, PIP_NAME, SentenceEncoder

FORMAT = "diffprompt-embedding-logreg-v1"
C_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths tried on dev (scikit-learn's default C is 1.0)


def logreg_objective(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor, c: float) -> torch.Tensor:
    """C · Σ_i cross-entropy(x_i W^T + b, y_i) + ½ ‖W‖²: scikit-learn's multinomial objective."""
    return c * F.cross_entropy(x @ w.T + b, y, reduction="sum") + 0.5 * (w * w).sum()


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_labels: int, c: float,
                            max_iter: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(W [num_labels, D], b [num_labels]) minimising `logreg_objective`, by L-BFGS in float64 from zero."""
    x, y = x.double(), torch.as_tensor(y, dtype=torch.long)
    w = torch.zeros(num_labels, x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(num_labels, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=1e-10, tolerance_change=1e-14,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = logreg_objective(w, b, x, y, c)
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def refuse_pairs(texts_b) -> None:
    if texts_b is not None:
        raise UserError("the embedding-logreg reference embeds one text per example; pair tasks need a prompt method")


class EmbeddingLogReg(TextClassifier):
    FORMAT = FORMAT
    score_kind = "logistic-regression logit on the sentence embedding"

    def __init__(self, encoder: SentenceEncoder, num_labels: int, c: float = 1.0):
        super().__init__()
        if int(num_labels) < 2:
            raise UserError(f"a classifier needs at least 2 labels, got {num_labels}")
        self.sentence_encoder, self.tokenizer = encoder, encoder.tokenizer
        self.num_labels, self.c = int(num_labels), float(c)
        dim = int(encoder.model.config.hidden_size)
        self.head = nn.Linear(dim, self.num_labels)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def set_head(self, w: torch.Tensor, b: torch.Tensor, c: float) -> "EmbeddingLogReg":
        """Take a fit of `fit_logistic_regression` (made with inverse regularisation strength c) as the head."""
        with torch.no_grad():
            self.head.weight.copy_(w)
            self.head.bias.copy_(b)
        self.c = float(c)
        return self

    def embed(self, texts) -> torch.Tensor:
        return self.sentence_encoder.embed(check_texts(texts, "texts"))

    def encode(self, texts, texts_b=None) -> dict[str, torch.Tensor]:
        """The sentence encoder's tokens of each input (what it embeds; pairs are not supported)."""
        refuse_pairs(texts_b)
        enc = self.tokenizer(check_texts(texts, "texts"), padding=True, truncation=True, max_length=MAX_TOKENS,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

    def scores(self, texts, texts_b=None) -> torch.Tensor:
        """[B, num_labels] logits W e(x) + b of the inputs' embeddings e(x)."""
        refuse_pairs(texts_b)
        return self.head(self.embed(texts).to(self.head.weight.device))

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.head.parameters())

    def label_descriptions(self, class_names: list[str]) -> list[str]:
        return list(class_names)

    def save(self, path, extra_meta: dict | None = None) -> Path:
        meta = {"format": FORMAT, "kind": "embedding-logreg", "encoder": self.sentence_encoder.name,
                "num_labels": self.num_labels, "c": self.c, **(extra_meta or {})}
        return save_checkpoint(path, {f"head.{k}": v for k, v in self.head.state_dict().items()}, meta)

    def load(self, path) -> "EmbeddingLogReg":
        tensors, meta = self.read_file(path)
        if meta.get("encoder") != self.sentence_encoder.name:
            raise UserError(f"{path} was fitted on sentence encoder {meta.get('encoder')!r}, not {self.sentence_encoder.name!r}; "
                            "load it with the encoder it was fitted on")
        head = {k.removeprefix("head."): v for k, v in tensors.items()}
        check_state_dict_compatible(self.head.state_dict(), head, what=f"checkpoint {path}")
        self.head.load_state_dict(head)
        self.c = float(meta.get("c", self.c))
        return self

    @classmethod
    def from_meta(cls, meta: dict, backbone=None, tokenizer=None, **overrides) -> "EmbeddingLogReg":
        """The model a saved file describes; the backbone and tokenizer are not used (it has its own encoder)."""
        encoder = overrides.pop("encoder", None) or SentenceEncoder(None if meta.get("encoder") == PIP_NAME else meta.get("encoder"))
        return cls(encoder, meta["num_labels"], c=meta.get("c", 1.0))

    @classmethod
    def from_file(cls, path, backbone=None, tokenizer=None, **overrides) -> "EmbeddingLogReg":
        _, meta = cls.read_file(path)
        return cls.from_meta(meta, **overrides).load(path)

