"""The methods, and their default templates, PET patterns and verbalizers per data set.

| method      | template          | trained parameters                     | paper                       |
| ----------- | ----------------- | -------------------------------------- | --------------------------- |
| `zero-shot` | hard              | none                                   | GPT-3 style / LM-BFF's "prompt-based zero-shot" |
| `prompt-ft` | hard              | all (backbone + MLM head)              | PET (Schick & Schütze 2021), LM-BFF (Gao et al. 2021) |
| `soft`      | soft tokens       | the soft tokens only, backbone frozen  | prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021) |
| `hybrid`    | hard words + soft | the soft tokens (or all, `--train all`) | P-tuning's anchors, PTR / OptiPrompt style |
| `finetune`  | none              | all + a new classification head        | standard fine-tuning (LM-BFF's baseline) |
| `pet`       | 4 hard patterns   | a prompt-ft model per pattern, then a fine-tuned student distilled from their ensemble | PET (Schick & Schütze 2021) |

Default templates (LM-BFF's manual prompts where it has one, adapted to an uncased BERT):

| data set | hard                  | soft                          | hybrid                          | verbalizer |
| -------- | --------------------- | ----------------------------- | ------------------------------- | ---------- |
| mr, cr   | `{x} It was {mask}.`  | `{x} {soft=It was} {mask}`    | `{x} {soft*2} It was {mask}.`   | bad / good |
| subj     | `{x} This is {mask}.` | `{x} {soft=This is} {mask}`   | `{x} {soft*2} This is {mask}.`  | subjective / objective |
| trec     | `{mask} : {x}`        | `{soft=question about} {mask} : {x}` | `{soft*2} {mask} : {x}` | expression / description / entity / human / location / number |
| other    | `{x} It was {mask}.`  | `{x} {soft*4} {mask}`         | `{x} {soft*2} It was {mask}.`   | `Verbalizer.default_for` |

Sentiment uses bad / good rather than LM-BFF's terrible / great: on this SPLADE-tuned BERT-tiny,
terrible / great scores below the majority class zero-shot on the MR dev split and bad / good
best of the pairs tried (the scan and its numbers: benchmarks/README.md). The template is LM-BFF's.

The soft templates start their tokens from the hard template's words (`{soft=...}`, Lester et
al.'s "initialise from vocabulary" variant), so soft training starts from the zero-shot prompt
and the dev-set model choice can fall back to it; the hybrid templates add randomly initialised
soft tokens (random vocabulary embeddings) to the hard words. `--template` overrides any of these.

PET's patterns (`PET_PATTERNS`) are four per data set in the style of PET's own (the input
before or after a short cloze phrase), each with the data set's label words; the first is
the data set's hard template, so PET's first pattern model is a prompt-ft run.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import UserError


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "prompt" (MLM head at the mask) or "finetune" (classification head)
    style: str | None  # template style: "hard", "soft", "hybrid"; None for finetune
    train: str | None  # "all", "prompt", or None (no training)
    lr: float  # default learning rate (AdamW)
    summary: str
    paper: str

    @property
    def trains(self) -> bool:
        return self.train is not None


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zero-shot", "prompt", "hard", None, 0.0,
               "hard template, no training: the pre-trained MLM head scores the label words at the mask",
               "LM-BFF (Gao et al. 2021) zero-shot prompting"),
        Method("prompt-ft", "prompt", "hard", "all", 1e-3,
               "hard template, every parameter trained on the label-word log-probabilities",
               "PET (Schick & Schuetze 2021), LM-BFF (Gao et al. 2021)"),
        Method("soft", "prompt", "soft", "prompt", 1e-1,
               "soft template: only the soft-token embeddings are trained, the backbone is frozen",
               "prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021)"),
        Method("hybrid", "prompt", "hybrid", "prompt", 3e-2,
               "hard words plus soft tokens; soft tokens trained, backbone frozen (--train all allowed)",
               "P-tuning (Liu et al. 2021) with anchor words"),
        Method("finetune", "finetune", None, "all", 1e-3,
               "a new classification head on the first token; every parameter trained",
               "standard fine-tuning (Devlin et al. 2019), LM-BFF's baseline"),
        # kind "finetune": PET's final model, the one its run folder keeps, is the distilled FineTuneClassifier
        Method("pet", "finetune", "hard", "all", 1e-3,
               "a prompt-ft model per pattern; their ensemble labels unlabeled train texts; a fine-tuned classifier "
               "is distilled from those soft labels (T = 2)",
               "PET (Schick & Schuetze 2021)"),
    )
}

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}") from None


# Templates per data set and style.
TEMPLATES: dict[str, dict[str, str]] = {
    "mr": {"hard": "{x} It was {mask}.", "soft": "{x} {soft=It was} {mask}", "hybrid": "{x} {soft*2} It was {mask}."},
    "cr": {"hard": "{x} It was {mask}.", "soft": "{x} {soft=It was} {mask}", "hybrid": "{x} {soft*2} It was {mask}."},
    "subj": {"hard": "{x} This is {mask}.", "soft": "{x} {soft=This is} {mask}", "hybrid": "{x} {soft*2} This is {mask}."},
    "trec": {"hard": "{mask} : {x}", "soft": "{soft=question about} {mask} : {x}", "hybrid": "{soft*2} {mask} : {x}"},
}
GENERIC_TEMPLATES = {"hard": "{x} It was {mask}.", "soft": "{x} {soft*4} {mask}", "hybrid": "{x} {soft*2} It was {mask}."}
PAIR_TEMPLATES = {"hard": "{x} ? {mask} , {x2}", "soft": "{x} {soft*2} {mask} {soft*2} {x2}", "hybrid": "{x} ? {soft*2} {mask} , {x2}"}

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
    if style not in ("hard", "soft", "hybrid"):
        raise ValueError(style)
    key = dataset_key(dataset)
    if key is not None:
        return TEMPLATES[key][style]
    return (PAIR_TEMPLATES if pair else GENERIC_TEMPLATES)[style]


def pet_patterns(dataset: str, pair: bool = False) -> list[str]:
    """PET's patterns for a data set (the first is its hard template)."""
    key = dataset_key(dataset)
    return list(PET_PATTERNS[key] if key is not None else (PAIR_PATTERNS if pair else GENERIC_PATTERNS))


def default_verbalizer_spec(dataset: str, label_names: list[str]) -> dict[str, list[str]] | None:
    """{label name: [word]} for a built-in data set whose label names we know; else None."""
    key = dataset_key(dataset)
    table = LABEL_WORDS.get(key) if key else None
    if not table:
        return None
    spec = {}
    for name in label_names:
        word = table.get(str(name).strip().lower())
        if word is None:
            return None
        spec[str(name)] = [word]
    return spec
