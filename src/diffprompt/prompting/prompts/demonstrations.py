"""Demonstrations (Gao et al. 2021, LM-BFF §6): which training examples follow each input.

Each input is followed by one demonstration per class: a training example of that class put
through the same template with its label word in place of the mask (template.py renders them).
`Demonstrations` holds the pool (the K training examples per class) and draws the sets:

- never the input itself: pool examples with the input's text (and second text) are left out;
- `random`: per class, uniformly among the pool's examples of that class;
- `similar`: per class, only the most similar half (`SIMILAR_FRACTION`, rounded up, at least one)
  of the class's examples by cosine of sentence embeddings (sentence_encoder.py), then uniformly
  among those; embeddings are computed once per text, in batches (`prepare`);
- training: a fresh draw per example and step, from the object's seeded generator;
- test: `sets` draws per input (LM-BFF: 16) from a generator seeded by the run seed and the
  input's text, so an input gets the same sets whatever the batch; the classifier averages their
  label probabilities.
"""

from __future__ import annotations

import hashlib
import math
import random
from typing import Sequence

import torch

from ...data.text import Example, input_key
from ...errors import UserError
from .choices import DEMOS

SIMILAR_FRACTION = 0.5  # --demos similar: the share of each class's examples kept, most similar first (LM-BFF)


def _joined(text: str, text_b: str | None) -> str:
    """The text a sentence encoder sees for an input (pairs: both texts, space-separated)."""
    return f"{text} {text_b}" if text_b else text


class Demonstrations:
    """The demonstration pool of a run and the draws of demonstration sets from it."""

    def __init__(self, examples: Sequence, num_labels: int, mode: str = "random", sets: int = 16, seed: int = 0,
                 encoder=None):
        if mode not in DEMOS or mode == "none":
            raise UserError(f"demonstrations are 'random' or 'similar', got {mode!r}")
        if sets < 1:
            raise UserError(f"demonstration sets must be at least 1, got {sets}")
        self.pool = list(examples)
        self.mode, self.sets, self.seed, self.num_labels = mode, int(sets), int(seed), int(num_labels)
        self.by_class = [[i for i, ex in enumerate(self.pool) if ex.label == c] for c in range(self.num_labels)]
        small = [c for c, idx in enumerate(self.by_class) if len(idx) < 2]
        if small:
            raise UserError(f"demonstrations need at least 2 training examples per class (one is left out when it is "
                            f"the input itself); classes {small} have fewer: give --shots 2 or more")
        if mode == "similar" and encoder is None:
            raise UserError("--demos similar needs a sentence encoder (sentence_encoder.SentenceEncoder)")
        self.encoder = encoder
        self.rng = random.Random(f"demos-train-{seed}")
        self._embeddings: dict[str, torch.Tensor] = {}
        self._candidates: dict[tuple[str, str], list[list[int]]] = {}

    # ------------------------------------------------------------------ similarity
    def prepare(self, texts: Sequence[str], texts_b: Sequence[str] | None = None, batch_size: int = 64) -> None:
        """Embed (once, in batches) the inputs and pool examples not embedded yet; nothing for `random`."""
        if self.mode != "similar":
            return
        inputs = [_joined(t, texts_b[i] if texts_b else None) for i, t in enumerate(texts)]
        pool = [_joined(ex.text, getattr(ex, "text_b", None)) for ex in self.pool]
        todo = [t for t in dict.fromkeys(inputs + pool) if t not in self._embeddings]
        if todo:
            self._embeddings.update(zip(todo, self.encoder.embed(todo, batch_size)))

    def candidates(self, text: str, text_b: str | None = None) -> list[list[int]]:
        """Per class, the pool indices a demonstration of the input is drawn from (never the input itself)."""
        key = input_key(Example(text, -1, text_b))
        if key not in self._candidates:
            per_class = [[i for i in idx if input_key(self.pool[i]) != key]
                         for idx in self.by_class]
            if self.mode == "similar":
                per_class = [self._most_similar(_joined(text, text_b), idx) for idx in per_class]
            self._candidates[key] = per_class
        return self._candidates[key]

    def _most_similar(self, query: str, idx: list[int]) -> list[int]:
        """The top SIMILAR_FRACTION of `idx` by cosine similarity to `query` (ties: pool order)."""
        if query not in self._embeddings:
            self.prepare([query])
        q = self._embeddings[query]
        pool = torch.stack([self._embeddings[_joined(self.pool[i].text, getattr(self.pool[i], "text_b", None))]
                            for i in idx])
        sims = (pool @ q).tolist()  # unit vectors: the dot product is the cosine
        order = sorted(range(len(idx)), key=lambda j: (-sims[j], j))
        keep = max(1, math.ceil(SIMILAR_FRACTION * len(idx)))
        return [idx[j] for j in order[:keep]]

    # ------------------------------------------------------------------ drawing sets
    def draw(self, text: str, text_b: str | None, rng: random.Random) -> list:
        """One demonstration set: a pool example per class, in class order."""
        return [self.pool[rng.choice(idx)] for idx in self.candidates(text, text_b)]

    def training_sets(self, texts: list[str], texts_b: list[str] | None) -> list[list]:
        """A fresh set per input, from the run's generator (each call draws anew)."""
        return [self.draw(t, texts_b[i] if texts_b else None, self.rng) for i, t in enumerate(texts)]

    def test_sets(self, text: str, text_b: str | None = None) -> list[list]:
        """The `sets` demonstration sets of one input, the same for it whatever the batch."""
        digest = hashlib.sha256(f"{self.seed}\t{text}\t{text_b or ''}".encode()).hexdigest()
        rng = random.Random(digest)
        return [self.draw(text, text_b, rng) for _ in range(self.sets)]


def make_demonstrations(mode: str, examples: Sequence, num_labels: int, sets: int, seed: int,
                        encoder_name: str | None = None) -> Demonstrations | None:
    """The demonstrations of a run (None for mode "none"); `similar` loads the sentence encoder."""
    if mode == "none":
        return None
    encoder = None
    if mode == "similar":
        from ..models.sentence_encoder import SentenceEncoder

        encoder = SentenceEncoder(encoder_name)
    return Demonstrations(examples, num_labels, mode, sets, seed, encoder)
