"""Prompt templates: a small language that turns inputs into a masked-LM input.

Placeholders (inside braces, surrounding spaces allowed):

- `{x}` the input text, `{x2}` the second input of a pair task;
- `{mask}` the tokenizer's mask token (exactly one per template);
- `{soft}` one trainable soft token, `{soft*N}` N of them;
- `{soft=It was}` one soft token per whitespace-separated word, each initialised from the
  mean of that word's sub-token embeddings.

Everything else is literal text (a brace that is not part of `{...}` is literal too).

Encoding tokenises each piece on its own. A piece preceded by whitespace in the template is
tokenised with one leading space, so byte-level BPE tokenizers (RoBERTa's `Ġ`) see word-initial
spaces where the filled-in text has them; WordPiece and SentencePiece ignore that space.
Truncation cuts only the `{x}`/`{x2}` slots (longest first, from their ends); template words,
soft tokens, the mask and the tokenizer's special tokens are never cut.

Demonstrations (LM-BFF, demonstrations.py) follow the filled-in query: each is the same template
rendered with a training example in `{x}` (and `{x2}`) and its label word's tokens in place of the
mask, closed by the tokenizer's end-of-sequence tokens, as the query is (`[CLS] query [SEP] demo_1
[SEP] demo_2 [SEP]`, `<s> query </s> demo_1 </s> ...`). The query and its demonstrations share
`max_length`; their text slots are truncated together, longest first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from ...errors import UserError

_BRACED = re.compile(r"\{([^{}]*)\}")
_SOFT_N = re.compile(r"^soft\s*\*\s*(\d+)$")
_SOFT_INIT = re.compile(r"^soft\s*=(.*)$", re.S)


@dataclass(frozen=True)
class Piece:
    kind: str  # "text", "x", "x2", "mask", "soft"
    text: str = ""  # literal text (kind "text") or the soft token's init word (kind "soft", may be "")
    space_before: bool = False  # whitespace right before this piece in the template


def check_texts(texts, what: str = "texts") -> list[str]:
    """Accept a string or a sequence of strings; bytes or other types are a `UserError`."""
    if isinstance(texts, (bytes, bytearray)):
        raise UserError(f"{what} is bytes, not text; decode it as UTF-8 first (the data loaders do this for files)")
    if isinstance(texts, str):
        return [texts]
    try:
        out = list(texts)
    except TypeError:
        raise UserError(f"{what} must be a string or a list of strings, not {type(texts).__name__}") from None
    for i, t in enumerate(out):
        if isinstance(t, (bytes, bytearray)):
            raise UserError(f"{what}[{i}] is bytes, not text; decode it as UTF-8 first "
                            "(the data loaders do this for files)")
        if not isinstance(t, str):
            raise UserError(f"{what}[{i}] is {type(t).__name__}, not a string; pass text")
    return out


class Template:
    """A parsed prompt template; see the module docstring for the language."""

    def __init__(self, text: str):
        if isinstance(text, Template):
            text = text.text
        if not isinstance(text, str):
            raise UserError(f"a template must be a string such as '{{x}} It was {{mask}}.', not {type(text).__name__}")
        self._text = text
        self.pieces: list[Piece] = self._parse(text)
        kinds = [p.kind for p in self.pieces]
        if "mask" not in kinds:
            raise UserError(f"template {text!r} has no {{mask}}; add one where the label word goes, e.g. '{{x}} It was {{mask}}.'")
        if kinds.count("mask") > 1:
            raise UserError(f"template {text!r} has {kinds.count('mask')} {{mask}} placeholders; use exactly one")
        if "x" not in kinds:
            raise UserError(f"template {text!r} has no {{x}}; add {{x}} where the input text goes")
        for k in ("x", "x2"):
            if kinds.count(k) > 1:
                raise UserError(f"template {text!r} uses {{{k}}} {kinds.count(k)} times; use it once")
        self._cache: dict[int, dict] = {}

    @staticmethod
    def _parse(text: str) -> list[Piece]:
        pieces: list[Piece] = []

        def literal(s: str, space: bool) -> bool:
            """Add literal text; return whether the next piece follows whitespace."""
            body = s.strip()
            if body:
                pieces.append(Piece("text", body, space or s[0].isspace()))
                return s[-1].isspace()
            return space or bool(s)

        pos, space = 0, False
        for m in _BRACED.finditer(text):
            space = literal(text[pos:m.start()], space)
            inner = m.group(1).strip()
            low = inner.lower()
            if low in ("x", "x2", "mask", "soft"):
                pieces.append(Piece(low, "", space))
            elif _SOFT_N.match(low):
                n = int(_SOFT_N.match(low).group(1))
                if not 1 <= n <= 1000:
                    raise UserError(f"{{{inner}}} asks for {n} soft tokens; use {{soft*N}} with 1 <= N <= 1000")
                pieces.extend(Piece("soft", "", space) for _ in range(n))
            elif _SOFT_INIT.match(inner):
                words = _SOFT_INIT.match(inner).group(1).split()
                if not words:
                    raise UserError(f"{{{inner}}} names no words; write e.g. {{soft=It was}}")
                pieces.extend(Piece("soft", w, space) for w in words)
            else:
                raise UserError(f"unknown template placeholder {{{inner}}}; use {{x}}, {{x2}}, {{mask}}, {{soft}}, "
                                "{soft*N} or {soft=words}")
            pos, space = m.end(), False
        literal(text[pos:], space)
        return pieces

    # ------------------------------------------------------------------ properties
    @property
    def text(self) -> str:
        return self._text

    @property
    def num_soft(self) -> int:
        return sum(p.kind == "soft" for p in self.pieces)

    @property
    def uses_x2(self) -> bool:
        return any(p.kind == "x2" for p in self.pieces)

    @property
    def soft_init_words(self) -> list[str | None]:
        """For each soft token in order: the word it is initialised from, or None (random vocab token)."""
        return [p.text or None for p in self.pieces if p.kind == "soft"]

    def __repr__(self) -> str:
        return f"Template({self._text!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Template) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    # ------------------------------------------------------------------ encoding
    def _prepare(self, tokenizer) -> dict:
        key = id(tokenizer)
        if key in self._cache and self._cache[key]["tok"] is tokenizer:
            return self._cache[key]
        mask_id = tokenizer.mask_token_id
        if mask_id is None:
            raise UserError("the tokenizer has no mask token; prompting needs a masked LM tokenizer")
        lit_ids: list[list[int] | None] = []
        for k, p in enumerate(self.pieces):
            if p.kind == "text":
                ids = _literal_ids(tokenizer, p.text, p.space_before, first=(k == 0))
                if mask_id in ids:
                    raise UserError(f"template {self._text!r} spells the mask token as text; write {{mask}} instead")
                lit_ids.append(ids)
            else:
                lit_ids.append(None)
        prefix, suffix = special_wrap(tokenizer)
        soft_id = tokenizer.unk_token_id
        if soft_id is None:
            soft_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        unk = tokenizer.unk_token_id if tokenizer.unk_token_id is not None else soft_id
        fixed = len(prefix) + len(suffix) + sum(len(i) for i in lit_ids if i is not None) + self.num_soft + 1
        prep = {"tok": tokenizer, "lit": lit_ids, "prefix": prefix, "suffix": suffix, "soft_id": soft_id,
                "pad_id": pad_id, "mask_id": mask_id, "unk_id": unk, "fixed": fixed}
        self._cache[key] = prep
        return prep

    def encode(self, tokenizer, texts, texts_b=None, max_length: int = 128, demos=None) -> dict[str, torch.Tensor]:
        """Fill the template for a batch.

        Returns a dict of tensors: `input_ids` and `attention_mask` [B, L] (right-padded),
        `soft_positions` [B, num_soft * (1 + demonstrations)] (positions of the soft tokens, in
        order, query first; the ids there are a placeholder that the model replaces with the soft
        embeddings) and `mask_positions` [B] (the one mask token per example, in the query).

        `demos`: per example, the same number of demonstrations, each `(text, text_b or None,
        label word token ids)`; rendered after the query (module docstring).
        """
        texts, texts_b = self._check_inputs(texts, texts_b)
        demos = [[] for _ in texts] if demos is None else [list(d) for d in demos]
        if len(demos) != len(texts) or len({len(d) for d in demos}) != 1:
            raise UserError("demos: give one list of demonstrations per example, all of the same length")
        prep = self._prepare(tokenizer)
        budget = self._input_budget(tokenizer, prep, max_length)
        a_ids = self._tokenize_inputs(tokenizer, texts, "x", prep)
        b_ids = self._tokenize_inputs(tokenizer, texts_b, "x2", prep) if texts_b is not None else [[] for _ in texts]
        demo_ids = self._tokenize_demos(tokenizer, demos, prep)
        rows = [self._fill(prep, [a, b] + [s for d in ds for s in d[:2]], [d[2] for d in ds], budget)
                for a, b, ds in zip(a_ids, b_ids, demo_ids)]
        width = max(len(ids) for ids, _, _ in rows)
        input_ids = torch.full((len(rows), width), prep["pad_id"], dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, _, _) in enumerate(rows):
            input_ids[i, :len(ids)] = torch.tensor(ids, dtype=torch.long)
            attention[i, :len(ids)] = 1
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "soft_positions": torch.tensor([soft for _, soft, _ in rows], dtype=torch.long).reshape(len(rows), -1),
            "mask_positions": torch.tensor([mask for _, _, mask in rows], dtype=torch.long),
        }

    def _check_inputs(self, texts, texts_b) -> tuple[list[str], list[str] | None]:
        """The inputs as lists of strings; a `UserError` when they do not fit this template."""
        texts = check_texts(texts, "texts")
        if texts_b is not None:
            texts_b = check_texts(texts_b, "texts_b")
            if len(texts_b) != len(texts):
                raise UserError(f"got {len(texts)} first inputs but {len(texts_b)} second inputs; pass one of each per example")
            if not self.uses_x2:
                raise UserError(f"the task has two inputs but template {self._text!r} has no {{x2}}; "
                                "add {x2} where the second input goes")
        elif self.uses_x2:
            raise UserError(f"template {self._text!r} uses {{x2}} but this is a single-input task; remove {{x2}}")
        if not texts:
            raise UserError("no texts to encode; pass at least one example")
        return texts, texts_b

    def _input_budget(self, tokenizer, prep: dict, max_length: int) -> int:
        """Tokens left for the {x}/{x2} slots once the template's own tokens are placed."""
        limit = getattr(tokenizer, "model_max_length", None)
        if isinstance(limit, int) and 0 < limit < 1_000_000:
            max_length = min(int(max_length), limit)
        budget = max_length - prep["fixed"]
        if budget < (2 if self.uses_x2 else 1):
            raise UserError(f"template {self._text!r} takes {prep['fixed']} tokens with this tokenizer, leaving "
                            f"{max(budget, 0)} of max_length {max_length} for the input; raise max_length or shorten the template")
        return budget

    def _fill(self, prep: dict, slots: list[list[int]], words: list[list[int]], budget: int
              ) -> tuple[list[int], list[int], int]:
        """One example's token ids, its soft-token positions and its mask position.

        `slots`: the token ids of the query's {x} and {x2}, then of each demonstration's; `words`:
        each demonstration's label word ids. The slots share what the template, the mask and the
        label words leave of the budget (`fair_lengths`)."""
        room = budget - sum(self._demo_fixed(prep, w) for w in words)
        if room < (2 if self.uses_x2 else 1):
            raise UserError(f"template {self._text!r} with {len(words)} demonstrations leaves {max(room, 0)} tokens for "
                            "the input texts; raise max_length or use fewer or shorter label words")
        kept = [s[:n] for s, n in zip(slots, fair_lengths([len(s) for s in slots], room))]
        ids, soft_pos = list(prep["prefix"]), []
        mask_pos = self._render(prep, ids, soft_pos, kept[0], kept[1], [prep["mask_id"]])
        for j, word in enumerate(words):
            ids.extend(prep["suffix"])
            self._render(prep, ids, soft_pos, kept[2 + 2 * j], kept[3 + 2 * j], word)
        return ids + list(prep["suffix"]), soft_pos, mask_pos

    def _render(self, prep: dict, ids: list[int], soft_pos: list[int], a: list[int], b: list[int],
                at_mask: list[int]) -> int:
        """Append the template with slots `a`, `b` and `at_mask` (the mask, or a label word) to `ids`;
        soft positions go to `soft_pos`. Returns where `at_mask` starts."""
        where = -1
        for p, lit in zip(self.pieces, prep["lit"]):
            if p.kind == "text":
                ids.extend(lit)
            elif p.kind in ("x", "x2"):
                ids.extend(a if p.kind == "x" else b)
            elif p.kind == "soft":
                soft_pos.append(len(ids))
                ids.append(prep["soft_id"])
            else:
                where = len(ids)
                ids.extend(at_mask)
        return where

    def _demo_fixed(self, prep: dict, word: list[int]) -> int:
        """Tokens of one demonstration that are never cut: template words, soft tokens, its label word
        and the end-of-sequence tokens before it."""
        return prep["fixed"] - len(prep["prefix"]) - 1 + len(word)

    def _tokenize_demos(self, tokenizer, demos: list[list], prep: dict) -> list[list[tuple]]:
        """Per example, per demonstration: (text ids, text_b ids, label word ids); each distinct text once."""
        def ids_of(kind: str, values: list[str]) -> dict[str, list[int]]:
            uniq = list(dict.fromkeys(values))
            return dict(zip(uniq, self._tokenize_inputs(tokenizer, uniq, kind, prep))) if uniq else {}

        flat = [d for ds in demos for d in ds]
        a = ids_of("x", [check_texts(t, "demonstration text")[0] for t, _, _ in flat])
        b = ids_of("x2", [tb or "" for _, tb, _ in flat]) if self.uses_x2 else {}
        return [[(a[t], b.get(tb or "", []), list(w)) for t, tb, w in ds] for ds in demos]

    def _tokenize_inputs(self, tokenizer, texts: list[str], kind: str, prep: dict) -> list[list[int]]:
        piece = next(p for p in self.pieces if p.kind == kind)
        lead = " " if piece.space_before else ""
        batch = [lead + " ".join(t.split()) for t in texts]
        try:
            enc = tokenizer(batch, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        except TypeError:
            enc = tokenizer(batch, add_special_tokens=False)["input_ids"]
        special = {prep["mask_id"]} | set(getattr(tokenizer, "all_special_ids", []) or [])
        special.discard(prep["unk_id"])
        # input text may spell special tokens ("[MASK]"); never let them act as such
        return [[prep["unk_id"] if t in special else t for t in ids] for ids in enc]


def _literal_ids(tokenizer, text: str, space_before: bool, first: bool) -> list[int]:
    """Token ids of literal template text.

    After whitespace (or at the start) the text is tokenised as is, with one leading space
    when whitespace precedes it. Glued to the previous piece (`{mask}.`), it is tokenised as
    the continuation of a word: tokenise "a" + text and drop the tokens of "a", so that
    SentencePiece does not add its word-start mark (`▁.`); when that split is not clean
    (the probe merges with the text), the text is tokenised on its own.
    """
    def enc(s: str) -> list[int]:
        return list(tokenizer(s, add_special_tokens=False)["input_ids"])

    if space_before or first:
        return enc((" " if space_before else "") + text)
    probe = enc("a")
    joined = enc("a" + text)
    if len(joined) > len(probe) and joined[:len(probe)] == probe:
        return joined[len(probe):]
    return enc(text)


def truncated_lengths(la: int, lb: int, budget: int) -> tuple[int, int]:
    """Longest-first truncation of two slots to `budget` tokens in all (from their ends).

    The longer slot is cut until both are equal, then both alternately; when the budget is odd
    the first slot keeps the extra token.
    """
    fa, fb = fair_lengths([la, lb], budget)
    return fa, fb


def fair_lengths(lengths: list[int], budget: int) -> list[int]:
    """Longest-first truncation of any number of slots to `budget` tokens in all.

    Every slot is cut to a common cap (the largest that fits), and the tokens left over go one
    each to the earliest slots longer than the cap; slots shorter than the cap are kept whole.
    For two slots this is `truncated_lengths`.
    """
    if sum(lengths) <= budget:
        return list(lengths)
    lo, hi = 0, max(lengths)
    while lo < hi:  # the largest cap c with sum(min(l, c)) <= budget
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if sum(min(n, mid) for n in lengths) <= budget else (lo, mid - 1)
    out = [min(n, lo) for n in lengths]
    left = budget - sum(out)
    for i, n in enumerate(lengths):
        if left and n > lo:
            out[i], left = out[i] + 1, left - 1
    return out


def special_wrap(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence ([CLS] .. [SEP], <s> .. </s>)."""
    probe = "a"
    plain = list(tokenizer(probe, add_special_tokens=False)["input_ids"])
    full = list(tokenizer(probe, add_special_tokens=True)["input_ids"])
    n = len(plain)
    if n:
        for i in range(len(full) - n + 1):
            if full[i:i + n] == plain:
                return full[:i], full[i + n:]
    pre = tokenizer.cls_token_id if tokenizer.cls_token_id is not None else tokenizer.bos_token_id
    post = tokenizer.sep_token_id if tokenizer.sep_token_id is not None else tokenizer.eos_token_id
    return ([pre] if pre is not None else []), ([post] if post is not None else [])
