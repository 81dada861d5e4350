"""The methods: one entry each, holding everything that makes the method what it is.

| method      | template          | trained parameters                     | paper                       |
| ----------- | ----------------- | -------------------------------------- | --------------------------- |
| `zero-shot` | hard              | none                                   | GPT-3 style / LM-BFF's "prompt-based zero-shot" |
| `prompt-ft` | hard              | all (backbone + MLM head)              | PET (Schick & Schütze 2021), LM-BFF (Gao et al. 2021) |
| `soft`      | soft tokens       | the soft tokens only, backbone frozen  | prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021) |
| `hybrid`    | hard words + soft | the soft tokens (or all, `--train all`) | P-tuning's anchors, PTR / OptiPrompt style |
| `finetune`  | none              | all + a new classification head        | standard fine-tuning (LM-BFF's baseline) |
| `pet`       | 4 hard patterns   | a prompt-ft model per pattern, then a fine-tuned student distilled from their ensemble | PET (Schick & Schütze 2021) |

An entry names its template style (the templates per data set: `defaults.py`), its budget
(optimiser steps and learning rate), what it trains, its runner (the function that carries out
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


@dataclass(frozen=True)
class Method:
    name: str
    kind: str  # "prompt" (MLM head at the mask) or "finetune" (classification head)
    style: str | None  # template style: "hard", "soft", "hybrid"; None for finetune
    train: str | None  # "all", "prompt", or None (no training)
    lr: float  # default learning rate (AdamW)
    summary: str
    paper: str
    steps: int = 80  # default optimiser steps
    runner: str = SINGLE_RUN  # "module:function" taking (cfg, out, ds, backbone, quiet, extra_config)
    check: Callable | None = None  # raises a UserError for settings the method refuses
    files: tuple[str, ...] = ()  # run-folder files of this method besides every run's
    metric: str = "test_accuracy"  # the results.json number its comparison row shows
    takes_demos: bool = False  # LM-BFF demonstrations after each input (--demos)

    @property
    def trains(self) -> bool:
        return self.train is not None

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
        Method("soft", "prompt", "soft", "prompt", 1e-1,
               "soft template: only the soft-token embeddings are trained, the backbone is frozen",
               "prompt tuning (Lester et al. 2021), P-tuning (Liu et al. 2021)"),
        Method("hybrid", "prompt", "hybrid", "prompt", 3e-2,
               "hard words plus soft tokens; soft tokens trained, backbone frozen (--train all allowed)",
               "P-tuning (Liu et al. 2021) with anchor words", takes_demos=True),
        Method("finetune", "finetune", None, "all", 1e-3,
               "a new classification head on the first token; every parameter trained",
               "standard fine-tuning (Devlin et al. 2019), LM-BFF's baseline", check=checks.has_no_label_words),
        # kind "finetune": the model its run folder keeps is the distilled FineTuneClassifier
        Method("pet", "finetune", "hard", "all", 1e-3,
               "a prompt-ft model per pattern; their ensemble labels unlabeled train texts; a fine-tuned classifier "
               "is distilled from those soft labels (T = 2)",
               "PET (Schick & Schuetze 2021)", runner=PET_RUN, check=checks.pet_settings, files=(PET_FILE,),
               metric="ensemble_test_accuracy"),
    )
}

METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
DEMO_METHODS: tuple[str, ...] = tuple(m.name for m in METHODS.values() if m.takes_demos)


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise UserError(f"unknown method {name!r}; choose from: {', '.join(METHODS)}") from None
