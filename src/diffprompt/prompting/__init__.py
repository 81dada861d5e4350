"""Prompt-based learning on a pre-trained masked LM: templates, verbalizers, prompt models.

    from diffprompt.prompting import load_backbone, Template, Verbalizer, PromptClassifier
    model, tok = load_backbone()                      # packaged BERT-tiny, offline
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great")
    clf.predict(["a gorgeous, witty film ."])         # tensor([1])

See docs/readme/prompting-core.md for the template language and the scoring rules.
Names are imported on first use, so `diffprompt --help` does not pay for importing torch.
"""


import importlib

_EXPORTS = {
    "DEFAULT_BACKBONE": ".backbone", "backbone_id": ".backbone", "default_backbone_dir": ".backbone",
    "load_backbone": ".backbone", "FineTuneClassifier": ".finetune", "PromptClassifier": ".model",
    "base_model": ".model", "full_vocab_label_logits": ".model", "mlm_head": ".model",
    "PromptEncoder": ".prompt_encoder", "Template": ".template", "check_texts": ".template",
    "Verbalizer": ".verbalizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
