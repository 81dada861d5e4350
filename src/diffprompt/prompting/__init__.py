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
    "DEFAULT_BACKBONE": ".models.backbone", "backbone_id": ".models.backbone", "default_backbone_dir": ".models.backbone",
    "load_backbone": ".models.backbone", "FineTuneClassifier": ".models.finetune_classifier", "PromptClassifier": ".models.prompt_classifier",
    "TextClassifier": ".models.classifier", "base_model": ".models.prompt_classifier", "full_vocab_label_logits": ".models.prompt_classifier", "mlm_head": ".models.prompt_classifier",
    "PromptEncoder": ".prompts.prompt_encoder", "Template": ".prompts.template", "check_texts": ".prompts.template",
    "Verbalizer": ".prompts.verbalizer", "export_peft": ".peft_io", "import_peft": ".peft_io",
    "search_label_words": ".run.label_search", "apply_calibration": ".prompts.calibration", "fit_calibration": ".prompts.calibration",
    "Demonstrations": ".prompts.demonstrations", "SentenceEncoder": ".models.sentence_encoder",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
