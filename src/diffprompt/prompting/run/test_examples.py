"""A few test examples for people: the input as the model saw it, the scores, the prediction."""

from __future__ import annotations

import torch

from ..models.classifier import TextClassifier
from .data import limit_examples, texts_of


def render_prompts(model: TextClassifier, examples) -> list[str]:
    """The input as the model saw it: filled in (prompt methods) and truncated, decoded with the
    tokenizer's own special tokens; soft tokens are shown as [SOFT]."""
    texts, texts_b = texts_of(examples)
    enc = model.encode(texts, texts_b)
    soft = enc.get("soft_positions", torch.zeros(len(texts), 0, dtype=torch.long))
    out = []
    for i in range(len(texts)):
        n = int(enc["attention_mask"][i].sum())
        toks = model.tokenizer.convert_ids_to_tokens(enc["input_ids"][i, :n].tolist())
        for j in soft[i].tolist():
            toks[j] = "[SOFT]"
        out.append(model.tokenizer.convert_tokens_to_string(toks))
    return out


def make_examples(model: TextClassifier, test, test_scores, class_names: list[str], n: int) -> list[dict]:
    """n test examples (classes mixed) with their rendered prompt, scores per label and prediction."""
    if n <= 0 or not test:
        return []
    chosen = limit_examples(list(range(len(test))), n, salt="examples")
    prompts = render_prompts(model, [test[i] for i in chosen])
    words = model.label_descriptions(class_names)
    rows = []
    for i, prompt in zip(chosen, prompts):
        p = int(test_scores[i].argmax())
        rows.append({
            "prompt": prompt,
            "scores": {f"{class_names[j]} ({words[j]})": round(float(s), 4) for j, s in enumerate(test_scores[i].tolist())},
            "score_kind": model.score_kind,
            "prediction": class_names[p],
            "label": class_names[test[i].label],
            "correct": p == test[i].label,
        })
    return rows
