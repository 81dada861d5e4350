"""Verbalizers: which words at the mask stand for which label.

`Verbalizer({0: ["terrible", "bad"], 1: ["great", "good"]})`, or from the string form
`"0:terrible,bad;1:great,good"` (labels by index or by name).

Scoring (implemented in `PromptClassifier.scores`):

- every label word is tokenised with a leading space (`" great"`), so byte-level BPE
  tokenizers (RoBERTa) use the word-initial form `Ġgreat`; WordPiece and SentencePiece
  ignore that space;
- a word's score is the log-probability, at the single mask, of its first sub-token
  (`aggregation="first"`, the default), or the mean of its sub-tokens' log-probabilities at
  that mask (`aggregation="mean"`); for one-token words both are exactly
  `log_softmax(MLM logits at the mask)[word id]`;
- a label's score is the log of the mean probability of its words:
  `logsumexp(word scores) - log(number of words)`; with one word per label it is the word's
  log-probability itself.

A word that tokenises to nothing, or to the tokenizer's unknown token, is a `UserError`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from ...errors import UserError

AGGREGATIONS = ("first", "mean")

# lower-cased label name -> default label word (single WordPiece tokens in bert-base-uncased,
# following LM-BFF's manual verbalizers)
_DEFAULT_WORDS = {
    "negative": "terrible", "neg": "terrible", "rotten": "terrible", "bad": "terrible",
    "positive": "great", "pos": "great", "fresh": "great", "good": "great",
    "neutral": "okay",
    "subjective": "subjective", "subj": "subjective", "review": "subjective", "opinion": "subjective",
    "objective": "objective", "obj": "objective", "plot": "objective", "fact": "objective",
    "abbr": "expression", "abbreviation": "expression",
    "desc": "description", "description": "description",
    "enty": "entity", "entity": "entity",
    "hum": "human", "human": "human",
    "loc": "location", "location": "location",
    "num": "number", "number": "number", "numeric": "number",
}


def _as_int(key) -> int | None:
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return key
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key.strip())
    return None


class Verbalizer:
    """Label -> words. Labels are indices (0..n-1) or names, resolved with `class_names`."""

    def __init__(self, mapping: Mapping, class_names: Sequence[str] | None = None, aggregation: str = "first"):
        if isinstance(mapping, Verbalizer):
            mapping = {i: w for i, w in enumerate(mapping.words)}
        if not isinstance(mapping, Mapping) or not mapping:
            raise UserError("a verbalizer needs a mapping label -> words, e.g. {0: ['terrible'], 1: ['great']} "
                            "or '0:terrible;1:great'")
        if aggregation not in AGGREGATIONS:
            raise UserError(f"unknown verbalizer aggregation {aggregation!r}; use one of {', '.join(AGGREGATIONS)}")
        self.aggregation = aggregation
        keys = list(mapping)
        self.class_names, index_of, self._names_given = self._index_labels(keys, class_names)
        resolved: dict[int, list[str]] = {}
        for k in keys:
            i = index_of[k]
            if i < 0:
                raise UserError(f"verbalizer label {k!r} is negative; labels are indices 0..n-1 or names")
            if i in resolved:
                raise UserError(f"verbalizer gives label {self.class_names[i]!r} twice; list all its words in one entry")
            resolved[i] = self._check_words(k, mapping[k])
        missing = [self.class_names[i] for i in range(len(self.class_names)) if i not in resolved]
        if missing:
            raise UserError(f"the verbalizer lacks label(s) {', '.join(missing)}; give words for every label, "
                            f"e.g. '{';'.join(f'{n}:word' for n in self.class_names)}'")
        self.words: list[list[str]] = [resolved[i] for i in range(len(self.class_names))]
        seen: dict[str, str] = {}
        for name, ws in zip(self.class_names, self.words):
            for w in ws:
                if seen.setdefault(w.lower(), name) != name:
                    raise UserError(f"label word {w!r} is given for both {seen[w.lower()]!r} and {name!r}; "
                                    "each word may stand for one label only")
        if len(self.words) < 2:
            raise UserError("a verbalizer needs at least two labels")

    @staticmethod
    def _index_labels(keys: list, class_names: Sequence[str] | None) -> tuple[list[str], dict, bool]:
        """(label names, {mapping key: label index}, whether labels were given by name).

        Without `class_names`, integer keys are the indices and name keys are numbered in
        insertion order; with them, a key is a label name (case-insensitive) or an index.
        """
        if class_names is None and all(_as_int(k) is not None for k in keys):
            index_of = {k: _as_int(k) for k in keys}
            return [str(i) for i in range(max(index_of.values()) + 1)], index_of, False
        if class_names is None:
            return [str(k) for k in keys], {k: i for i, k in enumerate(keys)}, True
        names = [str(n) for n in class_names]
        lower = {n.lower(): i for i, n in enumerate(names)}
        index_of = {}
        for k in keys:
            if str(k) in names:
                index_of[k] = names.index(str(k))
            elif str(k).lower() in lower:
                index_of[k] = lower[str(k).lower()]
            elif _as_int(k) is not None and 0 <= _as_int(k) < len(names):
                index_of[k] = _as_int(k)
            else:
                raise UserError(f"verbalizer label {k!r} is not a label of this data set "
                                f"({', '.join(names)}); use those names or indices 0..{len(names) - 1}")
        return names, index_of, True

    @staticmethod
    def _check_words(label, words) -> list[str]:
        if isinstance(words, str):
            words = [words]
        try:
            words = [w for w in words]
        except TypeError:
            raise UserError(f"words for label {label!r} must be a list of strings") from None
        out = []
        for w in words:
            if not isinstance(w, str):
                raise UserError(f"label word {w!r} for label {label!r} is not a string")
            w = w.strip()
            if not w:
                raise UserError(f"label {label!r} has an empty label word; remove it")
            if any(c in w for c in ",;:"):
                raise UserError(f"label word {w!r} contains ',', ';' or ':'; label words are plain words")
            out.append(w)
        if not out:
            raise UserError(f"label {label!r} has no words; give at least one")
        return out

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_string(cls, spec: str, class_names: Sequence[str] | None = None, aggregation: str = "first") -> "Verbalizer":
        """Parse `"0:terrible,bad;1:great,good"` (or `"negative:terrible;positive:great"`)."""
        if not isinstance(spec, str) or not spec.strip():
            raise UserError("empty verbalizer; write it as 'label:word,word;label:word', e.g. '0:terrible;1:great'")
        mapping: dict[str, list[str]] = {}
        for part in spec.split(";"):
            if not part.strip():
                continue
            if ":" not in part:
                raise UserError(f"verbalizer entry {part.strip()!r} has no ':'; write 'label:word,word', e.g. '1:great,good'")
            label, _, words = part.partition(":")
            label = label.strip()
            if not label:
                raise UserError(f"verbalizer entry {part.strip()!r} has no label before ':'")
            if label in mapping:
                raise UserError(f"verbalizer gives label {label!r} twice; list all its words in one entry")
            mapping[label] = [w for w in words.split(",") if w.strip()] or [""]
        return cls(mapping, class_names=class_names, aggregation=aggregation)

    @classmethod
    def default_for(cls, class_names: Sequence[str], aggregation: str = "first") -> "Verbalizer":
        """Sensible words for known label names (sentiment, subjectivity, TREC question types)."""
        names = [str(n) for n in class_names]
        mapping = {}
        unknown = []
        for n in names:
            key = n.strip().lower()
            word = _DEFAULT_WORDS.get(key)
            if word is None:
                unknown.append(n)
            mapping[n] = [word or ""]
        if unknown:
            raise UserError(f"no default label words for label(s) {', '.join(unknown)}; pass a verbalizer such as "
                            f"'{';'.join(f'{n}:word' for n in names)}'")
        return cls(mapping, class_names=names, aggregation=aggregation)

    @classmethod
    def parse(cls, spec, class_names: Sequence[str] | None = None, aggregation: str = "first") -> "Verbalizer":
        """A Verbalizer from a Verbalizer, a mapping, a string, or None (defaults for `class_names`)."""
        if isinstance(spec, Verbalizer):
            return spec if class_names is None else cls(dict(enumerate(spec.words)), class_names, spec.aggregation)
        if spec is None:
            if class_names is None:
                raise UserError("no verbalizer and no label names to choose default words from; pass a verbalizer")
            return cls.default_for(class_names, aggregation)
        if isinstance(spec, str):
            return cls.from_string(spec, class_names, aggregation)
        return cls(spec, class_names, aggregation)

    # ------------------------------------------------------------------ queries
    @property
    def num_labels(self) -> int:
        return len(self.words)

    def to_string(self) -> str:
        """The string form; `Verbalizer.from_string(v.to_string(), class_names)` gives `v` back."""
        keys = self.class_names if self._names_given else [str(i) for i in range(self.num_labels)]
        return ";".join(f"{k}:{','.join(ws)}" for k, ws in zip(keys, self.words))

    def to_dict(self) -> dict:
        return {"spec": self.to_string(), "class_names": list(self.class_names), "aggregation": self.aggregation}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Verbalizer":
        names = d.get("class_names", d.get("label_names"))  # "label_names": files written before the name was shared
        return cls.from_string(d["spec"], class_names=names, aggregation=d.get("aggregation", "first"))

    def label_word_ids(self, tokenizer) -> list[list[list[int]]]:
        """Per label, per word: its sub-token ids (with a leading space, see the module docstring)."""
        unk = tokenizer.unk_token_id
        specials = set(getattr(tokenizer, "all_special_ids", []) or [])
        out = []
        for name, ws in zip(self.class_names, self.words):
            per = []
            for w in ws:
                ids = list(tokenizer(" " + w, add_special_tokens=False)["input_ids"])
                if not ids:
                    raise UserError(f"label word {w!r} (label {name!r}) gives no tokens with this tokenizer; choose another word")
                if (unk is not None and unk in ids) or any(t in specials for t in ids):
                    raise UserError(f"label word {w!r} (label {name!r}) is not in the backbone's vocabulary "
                                    f"(it maps to the unknown token); choose a word the tokenizer knows")
                per.append(ids)
            out.append(per)
        return out

    def __repr__(self) -> str:
        return f"Verbalizer.from_string({self.to_string()!r}, aggregation={self.aggregation!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Verbalizer) and other.words == self.words and other.aggregation == self.aggregation
