"""The methods: one entry each, holding everything that makes the method what it is.

| method      | template          | trained parameters                     | paper                       |
| ----------- | ----------------- | -------------------------------------- | --------------------------- |
| `zero-shot` | hard              | none                                   | GPT-3 style / LM-BFF's "prompt-based zero-shot" |
| `prompt-ft` | hard              | all (backbone + MLM head)              | PET (Schick & Schütze 2021), LM-BFF (Gao et al. 2021) |
| `soft`      | soft tokens       | the soft tokens only, backbone frozen  | prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021) |
| `hybrid`    | hard words + soft | the soft tokens (or all, `--train all`) | P-tuning's anchors, PTR / OptiPrompt style |
| `finetune`  | none              | all + a new classification head        | standard fine-tuning (LM-BFF's baseline) |
| `pet`       | 4 hard patterns   | a prompt-ft model per pattern, then a fine-tuned student distilled from their ensemble | PET (Schick & Schütze 2021) |
| `prefix-tuning` | bare (input + mask) | key/value prefixes at every layer only, backbone frozen | prefix tuning (Li & Liang 2021), PEFT's PREFIX_TUNING |
| `p-tuning-v2` | hard           | key/value prefixes at every layer only, backbone frozen | P-tuning v2 (Liu et al. 2022) |
| `embedding-logreg` | none (not a prompt) | a logistic regression on frozen sentence embeddings | the reference: SBERT (Reimers & Gurevych 2019) + logistic regression |

The deep forms of `soft` and `hybrid` (models/deep_prompt.py) are named as their users know them.
`prefix-tuning` is the deep `soft`: no words of ours at all, only trained prefixes, on the bare
template (the input and the mask only): Li & Liang's Prefix-Tuning, PEFT's PREFIX_TUNING. `p-tuning-v2` is the deep
`hybrid`: the anchor words kept (the data set's hard template and label words) with the trained
prompt moved from the input into every layer: P-tuning v2 (THUDM/P-tuning-v2), the deep successor
of the P-tuning our `hybrid` follows. Both save only the prefixes and export as PEFT
PREFIX_TUNING adapters.

A few hundred or thousand trainable numbers on a frozen network learn far more slowly than a whole
model, so the four frozen-backbone methods have budgets of their own, chosen by a sweep on the dev
splits of MR, CR, SUBJ and TREC (never test; `benchmarks/sweep_prompting_budgets.py`, table in
docs/prompting.md): soft 1000 steps at 1e-2, hybrid 1000 at 3e-2, prefix-tuning 400 at 1e-1 with
16 prefix tokens, p-tuning-v2 400 at 1e-1 with 8, each with the dev set read every 50 steps. The
full-model methods keep the 80 steps and dev every 10 they were tuned with.

An entry names its template style (the templates per data set: `defaults.py`), its budget
(optimiser steps, learning rate, steps between dev evaluations), what it trains, for a deep
prompt its length (prefix tokens per layer), its runner (the function that carries out
one run, imported when a run starts, so this module stays torch-free for the CLI), the checks its
settings must pass (`checks.py`), the files its run folder holds besides every run's, and the
results.json number a comparison row of it shows.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

from ...errors import UserError
from . import checks

SINGLE_RUN = "diffprompt.prompting.run.training:train_single"  # one model trained, chosen on dev, tested
PET_RUN = "diffprompt.prompting.run.pet:train_pet"
EMBEDDING_RUN = "diffprompt.prompting.run.embedding_reference:train_embedding_logreg"


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "prompt" (MLM head at the mask), "finetune" (classification head) or "embedding" (not a prompting method)
    style: str | None  # template style: "hard", "soft", "hybrid", "bare" (input and mask only); None for finetune
    train: str | None  # "all", "prompt", "head" (a head on frozen embeddings), or None (no training)
    lr: float  # default learning rate (AdamW)
    summary: str
    paper: str
    steps: int = 80  # default optimiser steps
    eval_every: int = 10  # default steps between dev evaluations (model choice)
    prefix_length: int | None = None  # deep prompts: key/value prefix tokens per layer (None: not a deep method)
    runner: str = SINGLE_RUN  # "module:function" taking (cfg, out, ds, backbone, quiet, extra_config)
    check: Callable | None = None  # raises a UserError for settings the method refuses
    files: tuple[str, ...] = ()  # run-folder files of this method besides every run's
    metric: str = "test_accuracy"  # the results.json number its comparison row shows
    takes_demos: bool = False  # LM-BFF demonstrations after each input (--demos)

    @property
    def trains(self) -> bool:
        return self.train is not None

    @property
    def deep(self) -> bool:
        """Trains key/value prefixes at every layer (models/deep_prompt.py) instead of input tokens."""
        return self.prefix_length is not None

    def run(self, *args, **kwargs) -> dict:
        """Carry out one run with the method's runner; returns results.json's dict."""
        module, _, function = self.runner.partition(":")
        return getattr(importlib.import_module(module), function)(*args, **kwargs)


PET_FILE = "pet.json"  # each pattern's, the ensemble's and the distilled model's accuracy

METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("zero-shot", "prompt", "hard", None, 0.0,
               "hard template, no training: the pre-trained MLM head scores the label words at the mask",
               "LM-BFF (Gao et al. 2021) zero-shot prompting", takes_demos=True),
        Method("prompt-ft", "prompt", "hard", "all", 1e-3,
               "hard template, every parameter trained on the label-word log-probabilities",
               "PET (Schick & Schuetze 2021), LM-BFF (Gao et al. 2021)", check=checks.trains_everything,
               takes_demos=True),
        Method("soft", "prompt", "soft", "prompt", 1e-2,
               "soft template: only the soft-token embeddings are trained, the backbone is frozen",
               "prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021)", steps=1000, eval_every=50),
        Method("hybrid", "prompt", "hybrid", "prompt", 3e-2,
               "hard words plus soft tokens; soft tokens trained, backbone frozen (--train all allowed)",
               "P-tuning (Liu et al. 2021) with anchor words", steps=1000, eval_every=50, takes_demos=True),
        Method("finetune", "finetune", None, "all", 1e-3,
               "a new classification head on the first token; every parameter trained",
               "standard fine-tuning (Devlin et al. 2019), LM-BFF's baseline", check=checks.has_no_label_words),
        # kind "finetune": the model its run folder keeps is the distilled FineTuneClassifier
        Method("pet", "finetune", "hard", "all", 1e-3,
               "a prompt-ft model per pattern; their ensemble labels unlabeled train texts; a fine-tuned classifier "
               "is distilled from those soft labels (T = 2)",
               "PET (Schick & Schuetze 2021)", runner=PET_RUN, check=checks.pet_settings, files=(PET_FILE,),
               metric="ensemble_test_accuracy"),
        Method("prefix-tuning", "prompt", "bare", "prompt", 1e-1,
               "the input and the mask only; key/value prefixes at every layer trained, backbone frozen",
               "prefix tuning (Li & Liang 2021), PEFT PREFIX_TUNING", steps=400, eval_every=50, prefix_length=16,
               check=checks.deep_prompt_settings),
        Method("p-tuning-v2", "prompt", "hard", "prompt", 1e-1,
               "hard template and label words; key/value prefixes at every layer trained, backbone frozen",
               "P-tuning v2 (Liu et al. 2022)", steps=400, eval_every=50, prefix_length=8,
               check=checks.deep_prompt_settings),
        Method("embedding-logreg", "embedding", None, "head", 0.0,
               "not a prompting method: logistic regression (L2, C chosen on dev) on each input's sentence embedding "
               "(the packaged all-MiniLM-L6-v2), the reference a user might pick instead",
               "Sentence-BERT embeddings (Reimers & Gurevych 2019) + logistic regression",
               runner=EMBEDDING_RUN, check=checks.embedding_settings),
    )
}

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
DEMO_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS.values() if m.takes_demos)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}") from None
