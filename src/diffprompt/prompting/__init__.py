"""Prompt-based learning on a pre-trained masked LM: templates, verbalizers, prompt models.

    from diffprompt.prompting import load_backbone, Template, Verbalizer, PromptClassifier
    model, tok = load_backbone()                      # packaged BERT-tiny, offline
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great")
    clf.predict(["a gorgeous, witty film ."])         # tensor([1])

See docs/prompting.md for the template language and the scoring rules.
Names are imported on first use, so `diffprompt --help` does not pay for importing torch.
"""


from ..lazy import lazy_exports

_EXPORTS = {
    "DEFAULT_BACKBONE": ".backbone", "backbone_id": ".backbone", "default_backbone_dir": ".backbone",
    "load_backbone": ".backbone", "FineTuneClassifier": ".finetune", "PromptClassifier": ".model",
    "TextClassifier": ".classifier", "base_model": ".model", "full_vocab_label_logits": ".model", "mlm_head": ".model",
    "PromptEncoder": ".prompt_encoder", "Template": ".template", "check_texts": ".template",
    "Verbalizer": ".verbalizer", "export_peft": ".peft_io", "import_peft": ".peft_io",
    "search_label_words": ".label_search", "apply_calibration": ".calibration", "fit_calibration": ".calibration",
    "Demonstrations": ".demonstrations", "SentenceEncoder": ".sentence_encoder",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
