"""Automatic label words (LM-BFF, Gao et al. 2021, section 5.1), with the template fixed.

1. For each class c, every vocabulary word v is scored by the sum, over the class's K training
   examples x, of the pre-trained MLM's log-probability of v at the mask of the filled template:
   `score_c(v) = sum_x log P(v | T(x))`. One forward pass per example; the MLM head runs on the
   mask position only, over the whole vocabulary.
2. The top `k` words per class are kept. Only ordinary words qualify: not a special token, not a
   WordPiece continuation (`##...`), holding a letter, and tokenised back (with a leading space,
   as the verbalizer does) to exactly that one token.
3. Candidate verbalizers (one word per class, no word twice) are the `n` assignments with the
   highest summed score `sum_c score_c(v_c)` (a best-first search over the per-class rankings),
   then re-ranked by zero-shot accuracy on the K training examples (ties: the summed score).
4. `choose_label_words` fine-tunes the first few for a short budget and keeps the one with the
   best few-shot dev accuracy.

LM-BFF uses k = 100 and n = 100 and fine-tunes all n candidates for the full budget; the defaults
here (RunOptions.auto_*) are far smaller: see docs/prompting.md.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field, replace

import torch

from ...errors import UserError
from ...seeding import seed_everything
from ..methods.registry import get_method
from ..models.prompt_classifier import base_model, mlm_head
from ..prompts.template import Template
from .classifier_factory import build_model
from .config import RunConfig
from .data import RunData
from .loop import fit


@dataclass
class LabelSearch:
    """What the search found: the top words per class and the candidate verbalizers, best first."""

    top_words: list[list[tuple[str, float]]]  # per class: (word, summed log-probability), best first
    candidates: list[dict] = field(default_factory=list)  # {"words", "score", "train_accuracy"}

    def to_json(self, class_names: list[str]) -> dict:
        return {"top_words": {n: [[w, round(s, 4)] for w, s in ws] for n, ws in zip(class_names, self.top_words)},
                "candidates": self.candidates}


@torch.no_grad()
def mask_log_probs(backbone, tokenizer, template: Template, texts, texts_b=None, max_length: int = 128,
                   batch_size: int = 64) -> torch.Tensor:
    """log_softmax over the vocabulary of the MLM logits at the mask [N, V], one pass per example."""
    if template.num_soft:
        raise UserError(f"automatic label words need a template without soft tokens, got {template.text!r}; "
                        "use a hard template (e.g. '{x} It was {mask}.') or give the label words")
    encoder, head = base_model(backbone), mlm_head(backbone)
    dev = next(backbone.parameters()).device
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        for s in range(0, len(texts), batch_size):
            batch = template.encode(tokenizer, texts[s:s + batch_size],
                                    texts_b[s:s + batch_size] if texts_b is not None else None, max_length)
            hidden = encoder(input_ids=batch["input_ids"].to(dev), attention_mask=batch["attention_mask"].to(dev))[0]
            at_mask = hidden[torch.arange(hidden.shape[0], device=dev), batch["mask_positions"].to(dev)]
            out.append(torch.log_softmax(head(at_mask.unsqueeze(1)).squeeze(1).float(), dim=-1).cpu())
    finally:
        backbone.train(was_training)
    return torch.cat(out)


def class_word_scores(log_probs: torch.Tensor, labels, num_labels: int) -> torch.Tensor:
    """[C, V]: per class, the sum of the examples' log-probabilities of every word."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    out = torch.zeros(num_labels, log_probs.shape[1], dtype=torch.float64)
    return out.index_add_(0, labels, log_probs.double())


def is_label_word(tokenizer, token_id: int, specials: set[int]) -> str | None:
    """The word a vocabulary entry stands for when it can be a label word (see the module docstring), else None."""
    if token_id in specials:
        return None
    token = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(token, str) or token.startswith("##"):
        return None
    word = tokenizer.convert_tokens_to_string([token]).strip()
    if not word or any(c in word for c in ",;:") or not any(c.isalpha() for c in word):
        return None
    ids = list(tokenizer(" " + word, add_special_tokens=False)["input_ids"])
    return word if ids == [token_id] else None


def top_label_words(scores: torch.Tensor, tokenizer, k: int) -> list[list[tuple[int, str, float]]]:
    """Per class, the k best label words as (token id, word, score), walking down the ranking."""
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    checked: dict[int, str | None] = {}
    out = []
    for row in scores:
        kept = []
        for i in torch.argsort(row, descending=True, stable=True).tolist():
            if i not in checked:
                checked[i] = is_label_word(tokenizer, i, specials)
            if checked[i] is not None:
                kept.append((i, checked[i], float(row[i])))
                if len(kept) == k:
                    break
        if not kept:
            raise UserError("no vocabulary entry of this tokenizer can be a label word; give the label words")
        out.append(kept)
    return out


def best_assignments(top: list[list[tuple[int, str, float]]], n: int) -> list[tuple[tuple[int, ...], float]]:
    """The n one-word-per-class assignments (indices into each class's list) with the highest summed
    score, no token used twice, best first: best-first search over the sorted per-class lists."""
    def total(idx):
        return sum(top[c][j][2] for c, j in enumerate(idx))

    start = (0,) * len(top)
    heap, seen, out = [(-total(start), start)], {start}, []
    while heap and len(out) < n:
        neg, idx = heapq.heappop(heap)
        if len({top[c][j][0] for c, j in enumerate(idx)}) == len(idx):
            out.append((idx, -neg))
        for c in range(len(idx)):
            nxt = idx[:c] + (idx[c] + 1,) + idx[c + 1:]
            if nxt[c] < len(top[c]) and nxt not in seen:
                seen.add(nxt)
                heapq.heappush(heap, (-total(nxt), nxt))
    return out


def zero_shot_accuracy(log_probs: torch.Tensor, labels, word_ids: list[int]) -> float:
    """Accuracy of predicting the class whose word has the highest log-probability at the mask."""
    pred = log_probs[:, word_ids].argmax(-1)
    return float((pred == torch.as_tensor(labels, dtype=torch.long)).float().mean())


def search_label_words(backbone, tokenizer, template: Template, examples, num_labels: int, k: int, n: int,
                       max_length: int = 128, batch_size: int = 64) -> LabelSearch:
    """Steps 1-3: the top k words per class and n candidate verbalizers ranked by zero-shot training accuracy."""
    texts = [ex.text for ex in examples]
    pair = any(getattr(ex, "text_b", None) is not None for ex in examples)
    texts_b = [getattr(ex, "text_b", None) or "" for ex in examples] if pair else None
    labels = [ex.label for ex in examples]
    missing = sorted(set(range(num_labels)) - set(labels))
    if missing:
        raise UserError(f"automatic label words need training examples of every class; class(es) {missing} have none")
    log_probs = mask_log_probs(backbone, tokenizer, template, texts, texts_b, max_length, batch_size)
    top = top_label_words(class_word_scores(log_probs, labels, num_labels), tokenizer, k)
    candidates = []
    for idx, total in best_assignments(top, n):
        chosen = [top[c][j] for c, j in enumerate(idx)]
        candidates.append({"words": [w for _, w, _ in chosen], "score": round(total, 4),
                           "train_accuracy": zero_shot_accuracy(log_probs, labels, [i for i, _, _ in chosen])})
    if not candidates:
        raise UserError(f"no two classes found different label words among their top {k}; raise --auto-words")
    candidates.sort(key=lambda c: (-c["train_accuracy"], -c["score"]))  # stable: equal pairs keep the score order
    return LabelSearch([[(w, s) for _, w, s in ws] for ws in top], candidates)


def verbalizer_spec(words: list[str]) -> str:
    """One word per class, labels by index: '0:bad;1:good'."""
    return ";".join(f"{i}:{w}" for i, w in enumerate(words))


def choose_label_words(cfg: RunConfig, data: RunData, backbone, tokenizer, acc) -> dict:
    """--verbalizer auto (label_search.py): the candidates found on the K training examples; the first
    `auto_finetune` are each trained `auto_steps` steps on a copy of the backbone (zero-shot: not
    trained) and the best few-shot dev accuracy wins (ties: the better zero-shot training accuracy).
    Returns label_words.json's dict, whose "verbalizer" is the chosen words."""
    found = search_label_words(backbone, tokenizer, Template(cfg.template), data.few_shot.train,
                               len(data.class_names), cfg.auto_words, cfg.auto_candidates, cfg.max_length,
                               cfg.eval_batch_size)
    short = replace(cfg, steps=cfg.auto_steps, patience=0)
    tried = found.candidates[:cfg.auto_finetune]
    for cand in tried:
        seed_everything(cfg.seed)
        model = build_model(replace(short, verbalizer=verbalizer_spec(cand["words"])), copy.deepcopy(backbone),
                            tokenizer, data.class_names, data.few_shot.train).to(acc.device)
        cand["dev_accuracy"] = fit(model, short, data, acc)[0].accuracy
        cand["steps"] = short.steps if get_method(cfg.method).trains else 0
    chosen = max(tried, key=lambda c: c["dev_accuracy"])  # max keeps the first of equals
    return {"chosen": dict(zip(data.class_names, chosen["words"])), "verbalizer": verbalizer_spec(chosen["words"]),
            **found.to_json(data.class_names),
            "settings": {k: getattr(cfg, k) for k in ("auto_words", "auto_candidates", "auto_finetune", "auto_steps")}}
