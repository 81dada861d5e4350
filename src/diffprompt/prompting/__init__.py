"""Prompt-based learning on a pre-trained masked LM: templates, verbalizers, prompt models.

    from diffprompt.prompting import load_backbone, Template, Verbalizer, PromptClassifier
    model, tok = load_backbone()                      # packaged BERT-tiny, offline
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great")
    clf.predict(["a gorgeous, witty film ."])         # tensor([1])

See docs/readme/prompting-core.md for the template language and the scoring rules.
"""

from .backbone import DEFAULT_BACKBONE, backbone_id, default_backbone_dir, load_backbone
from .finetune import FineTuneClassifier
from .model import PromptClassifier, base_model, full_vocab_label_logits, mlm_head
from .prompt_encoder import PromptEncoder
from .template import Template, check_texts
from .verbalizer import Verbalizer

__all__ = [
    "DEFAULT_BACKBONE", "backbone_id", "default_backbone_dir", "load_backbone",
    "Template", "Verbalizer", "PromptClassifier", "PromptEncoder", "FineTuneClassifier",
    "base_model", "mlm_head", "full_vocab_label_logits", "check_texts",
]
