"""The deep-prompt classifier: a `PromptClassifier` whose only trained prompt is a key/value prefix
at every attention layer of its frozen masked LM (prefix tuning, P-tuning v2; deep_prompt.py).

Everything else is the prompt classifier's: the template is filled in (hard words or none, never
soft tokens), the encoder runs with the prefixes in front of every layer's keys and values, and the
MLM head runs at the mask only and scores the label words. Its file holds the prefixes alone
(`prefixes` [layers, 2, heads, N, head_dim], an MLP if any folded in, the tensor `DeepPrompt.load`
reads) beside the prompt classifier's JSON sidecar (template, label words, backbone).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ...checkpoint import save_checkpoint
from ...errors import UserError
from .backbone import backbone_id
from .deep_prompt import WEIGHTS_KEY, DeepPrompt, DeepPromptConfig
from .prompt_classifier import PromptClassifier
from ..prompts.verbalizer import Verbalizer

FORMAT = "diffprompt-deep-prompt-classifier-v1"


class DeepPromptClassifier(PromptClassifier):
    """Label words at the mask of a template, the backbone frozen (and in eval mode), `prefix_length`
    trainable key/value prefix tokens at every layer; `trainable_parameters` are the prefixes only (with
    `mlp_hidden_size`, the token vectors and the MLP that make them: DeepPromptConfig)."""

    FORMAT = FORMAT

    def __init__(self, backbone: nn.Module, tokenizer, template, verbalizer,
                 prefix_length: int = DeepPromptConfig.num_virtual_tokens, max_length: int = 128,
                 check_head: bool = True, mlp_hidden_size: int | None = None):
        super().__init__(backbone, tokenizer, template, verbalizer, train="prompt", max_length=max_length,
                         check_head=check_head)
        if self.template.num_soft:
            raise UserError(f"a deep prompt trains its key/value prefixes only, but template {self.template.text!r} has "
                            "soft tokens; drop the {soft} tokens (or use a soft or hybrid prompt)")
        self.deep_prompt = DeepPrompt(backbone, DeepPromptConfig(int(prefix_length), mlp_hidden_size))

    def _has_prompt(self) -> bool:
        return True  # the prefixes, made after the prompt classifier's own set-up

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.deep_prompt.parameters())

    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's final hidden states with the prefixes at every layer (input positions after them)."""
        return self.deep_prompt.run(attention_mask, model=self._encoder, inputs_embeds=embeds)[0]

    # ------------------------------------------------------------------ saving and loading
    def save(self, path) -> Path:
        """The folded prefixes alone, with the prompt classifier's sidecar and the prefix length."""
        meta = {**self._meta(), "format": FORMAT, "kind": "deep-prompt-classifier",
                "prefix_length": self.deep_prompt.num_virtual_tokens}
        return save_checkpoint(path, {WEIGHTS_KEY: self.deep_prompt.prefixes().detach()}, meta)

    @classmethod
    def read_file(cls, path) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = super(PromptClassifier, cls).read_file(path)
        if set(tensors) != {WEIGHTS_KEY}:
            raise UserError(f"{path} holds {sorted(tensors)}, not the {WEIGHTS_KEY!r} of a file written by "
                            "DeepPromptClassifier.save")
        return tensors, meta

    def load(self, path) -> "DeepPromptClassifier":
        """Load a deep-prompt file into this model; another backbone or prefix shape is a `UserError`."""
        tensors, meta = self.read_file(path)
        mine, theirs = backbone_id(self.backbone), meta.get("backbone")
        if theirs != mine:
            raise UserError(f"deep prompt {path} was trained on backbone {theirs!r}, not on {mine!r}; load it with the "
                            "backbone it was trained on")
        if self.deep_prompt.config.mlp_hidden_size is not None:
            raise UserError(f"deep prompt {path} holds its prefixes folded (no MLP); build the model without "
                            "mlp_hidden_size to load it")
        prefixes, want = tensors[WEIGHTS_KEY], tuple(self.deep_prompt.prefix.shape)
        if tuple(prefixes.shape) != want:
            raise UserError(f"deep prompt {path} has prefixes of shape {tuple(prefixes.shape)}, this model {want}; build "
                            f"it with prefix_length {meta.get('prefix_length')}")
        with torch.no_grad():
            self.deep_prompt.prefix.copy_(prefixes.to(self.deep_prompt.prefix))
        return self

    @classmethod
    def from_meta(cls, meta: dict, backbone: nn.Module, tokenizer, **overrides) -> "DeepPromptClassifier":
        """The model a deep-prompt file describes; `template`, `verbalizer`, `max_length` may be overridden."""
        return cls(backbone, tokenizer, overrides.pop("template", meta["template"]),
                   overrides.pop("verbalizer", None) or Verbalizer.from_dict(meta["verbalizer"]),
                   prefix_length=meta["prefix_length"], max_length=overrides.pop("max_length", meta.get("max_length", 128)),
                   **overrides)

