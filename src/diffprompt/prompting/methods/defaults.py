"""Each method's defaults per data set: its template, PET's patterns, and the label words.

| data set | hard                  | soft                          | hybrid                          | verbalizer |
| -------- | --------------------- | ----------------------------- | ------------------------------- | ---------- |
| mr, cr   | `{x} It was {mask}.`  | `{x} {soft=It was} {mask}`    | `{x} {soft*2} It was {mask}.`   | bad / good |
| subj     | `{x} This is {mask}.` | `{x} {soft=This is} {mask}`   | `{x} {soft*2} This is {mask}.`  | subjective / objective |
| trec     | `{mask} : {x}`        | `{soft=question about} {mask} : {x}` | `{soft*2} {mask} : {x}` | expression / description / entity / human / location / number |
| other    | `{x} It was {mask}.`  | `{x} {soft*4} {mask}`         | `{x} {soft*2} It was {mask}.`   | `Verbalizer.default_for` |

The hard templates are LM-BFF's manual prompts, adapted to an uncased BERT. Sentiment uses
bad / good rather than LM-BFF's terrible / great: the pair chosen by a zero-shot scan on the MR
dev split (docs/prompting.md, "Choices and why").

The soft templates start their tokens from the hard template's words (`{soft=...}`, Lester et
al.'s "initialise from vocabulary" variant), so soft training starts from the zero-shot prompt
and the dev-set model choice can fall back to it; the hybrid templates add randomly initialised
soft tokens to the hard words. The bare templates hold the input and the mask only, in the soft
template's order (`{x} {mask}`; TREC `{mask} {x}`; pairs `{x} {mask} {x2}`): the `prefix-tuning`
method's, whose whole prompt is its key/value prefixes at every layer. `--template` overrides any of these.

PET's patterns are four per data set in the style of PET's own (the input before or after a
short cloze phrase), each with the data set's label words; the first is the data set's hard
template, so PET's first pattern model is a prompt-ft run.
"""

from __future__ import annotations

STYLES = ("hard", "soft", "hybrid", "bare")

# Templates per data set and style.
TEMPLATES: dict[str, dict[str, str]] = {
    "mr": {"hard": "{x} It was {mask}.", "soft": "{x} {soft=It was} {mask}", "hybrid": "{x} {soft*2} It was {mask}.",
           "bare": "{x} {mask}"},
    "cr": {"hard": "{x} It was {mask}.", "soft": "{x} {soft=It was} {mask}", "hybrid": "{x} {soft*2} It was {mask}.",
           "bare": "{x} {mask}"},
    "subj": {"hard": "{x} This is {mask}.", "soft": "{x} {soft=This is} {mask}", "hybrid": "{x} {soft*2} This is {mask}.",
             "bare": "{x} {mask}"},
    "trec": {"hard": "{mask} : {x}", "soft": "{soft=question about} {mask} : {x}", "hybrid": "{soft*2} {mask} : {x}",
             "bare": "{mask} {x}"},
}
GENERIC_TEMPLATES = {"hard": "{x} It was {mask}.", "soft": "{x} {soft*4} {mask}", "hybrid": "{x} {soft*2} It was {mask}.",
                     "bare": "{x} {mask}"}
PAIR_TEMPLATES = {"hard": "{x} ? {mask} , {x2}", "soft": "{x} {soft*2} {mask} {soft*2} {x2}",
                  "hybrid": "{x} ? {soft*2} {mask} , {x2}", "bare": "{x} {mask} {x2}"}

# PET's patterns per data set: the hard template first (so pattern 0 is prompt-ft), then three more.
PET_PATTERNS: dict[str, tuple[str, ...]] = {
    "mr": (TEMPLATES["mr"]["hard"], "It was {mask}. {x}", "Just {mask}! {x}", "{x} All in all, it was {mask}."),
    "cr": (TEMPLATES["cr"]["hard"], "It was {mask}. {x}", "Just {mask}! {x}", "{x} All in all, it was {mask}."),
    "subj": (TEMPLATES["subj"]["hard"], "This is {mask}. {x}", "{x} It is {mask}.", "{x} All in all, this is {mask}."),
    "trec": (TEMPLATES["trec"]["hard"], "{mask} question : {x}", "{x} This question is about {mask}.",
             "Question about {mask} : {x}"),
}
GENERIC_PATTERNS = (GENERIC_TEMPLATES["hard"], "It was {mask}. {x}", "{x} All in all, it was {mask}.")
PAIR_PATTERNS = (PAIR_TEMPLATES["hard"], "\"{x}\" ? {mask} , \"{x2}\"", "{x} ? {mask}. {x2}")


# Label words by label name (lower case). LM-BFF's words; TREC's coarse classes by their meaning.
_SENTIMENT = {"negative": "bad", "neg": "bad", "rotten": "bad",
              "positive": "good", "pos": "good", "fresh": "good"}
_SUBJ = {"subjective": "subjective", "subj": "subjective", "review": "subjective", "opinion": "subjective",
         "objective": "objective", "obj": "objective", "plot": "objective", "fact": "objective"}
_TREC = {"abbr": "expression", "abbreviation": "expression", "desc": "description", "description": "description",
         "enty": "entity", "entity": "entity", "hum": "human", "human": "human",
         "loc": "location", "location": "location", "num": "number", "numeric": "number", "number": "number"}
LABEL_WORDS: dict[str, dict[str, str]] = {"mr": _SENTIMENT, "cr": _SENTIMENT, "subj": _SUBJ, "trec": _TREC}


def dataset_key(dataset: str) -> str | None:
    """The built-in data set name (`mr`, `cr`, `subj`, `trec`) or None for a file."""
    key = str(dataset).strip().lower()
    return key if key in TEMPLATES else None


def default_template(dataset: str, style: str, pair: bool = False) -> str:
    if style not in STYLES:
        raise ValueError(style)
    key = dataset_key(dataset)
    if key is not None:
        return TEMPLATES[key][style]
    return (PAIR_TEMPLATES if pair else GENERIC_TEMPLATES)[style]


def pet_patterns(dataset: str, pair: bool = False) -> list[str]:
    """PET's patterns for a data set (the first is its hard template)."""
    key = dataset_key(dataset)
    return list(PET_PATTERNS[key] if key is not None else (PAIR_PATTERNS if pair else GENERIC_PATTERNS))


def default_verbalizer_spec(dataset: str, class_names: list[str]) -> dict[str, list[str]] | None:
    """{label name: [word]} for a built-in data set whose label names we know; else None."""
    key = dataset_key(dataset)
    table = LABEL_WORDS.get(key) if key else None
    if not table:
        return None
    spec = {}
    for name in class_names:
        word = table.get(str(name).strip().lower())
        if word is None:
            return None
        spec[str(name)] = [word]
    return spec
