"""The prompt model: a masked LM scoring label words at the mask of a filled-in template.

The input embeddings are the backbone's word embeddings with the soft tokens spliced in at
their positions; the backbone's encoder runs on them and the MLM prediction head runs only on
the hidden states at the mask positions ([B, H] instead of [B, L, H]), so the vocabulary
projection costs B rows instead of B x L.

With demonstrations (LM-BFF, demonstrations.py) each input is followed by one labelled training
example per class; training draws a fresh set per example and step, evaluation averages the
label probabilities over the sets of an ensemble, all sets of a batch in one pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ...checkpoint import check_state_dict_compatible, save_checkpoint, strip_prefix
from ...errors import UserError
from .backbone import backbone_id
from ..prompts.calibration import apply_calibration
from ..prompts.demonstrations import Demonstrations
from .classifier import TextClassifier, dedupe_tied
from ..prompts.prompt_encoder import make_prompt_encoder
from ..prompts.template import Template
from ..prompts.verbalizer import Verbalizer

TRAIN_MODES = ("all", "prompt")
ENSEMBLE_ROWS = 512  # demonstration ensembles: at most this many filled-in rows per encoder pass
FORMAT = "diffprompt-prompt-v1"


# ---------------------------------------------------------------------------- backbone adapters
def base_model(model: nn.Module) -> nn.Module:
    """The encoder inside an *ForMaskedLM model (model.bert, model.roberta, ...)."""
    prefix = getattr(model, "base_model_prefix", "")
    enc = getattr(model, prefix, None) if prefix else None
    if not isinstance(enc, nn.Module):
        raise UserError(f"cannot find the encoder inside {type(model).__name__}; use a Hugging Face "
                        "AutoModelForMaskedLM (BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA generator, DeBERTa-v2/v3)")
    return enc


def mlm_head(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function mapping final hidden states [..., H] to vocabulary logits [..., V].

    It is exactly the prediction head the model's own forward applies to its sequence output.
    """
    name = type(model).__name__
    if hasattr(model, "lm_predictions") and not getattr(getattr(model, "config", None), "legacy", True):
        # DeBERTa-v2/v3 (non-legacy head): needs the word embeddings for the tied projection
        enc = base_model(model)
        return lambda h: model.lm_predictions(h, enc.embeddings.word_embeddings)
    if hasattr(model, "generator_predictions") and hasattr(model, "generator_lm_head"):  # ELECTRA generator
        return lambda h: model.generator_lm_head(model.generator_predictions(h))
    if all(hasattr(model, a) for a in ("vocab_transform", "activation", "vocab_layer_norm", "vocab_projector")):
        return lambda h: model.vocab_projector(model.vocab_layer_norm(model.activation(model.vocab_transform(h))))  # DistilBERT
    for attr in ("cls", "lm_head", "predictions"):  # BERT / DeBERTa legacy, RoBERTa family, ALBERT
        head = getattr(model, attr, None)
        if isinstance(head, nn.Module):
            return head
    raise UserError(f"{name} is not a supported masked LM (no known prediction head); use BERT, RoBERTa, "
                    "DistilBERT, ALBERT, an ELECTRA generator or DeBERTa-v2/v3")


def _word_token_pool(tokenizer, vocab_size: int, size: int = 5000) -> list[int]:
    """Ids of up to `size` ordinary word tokens (alphabetic, >= 2 letters, not special, not
    BERT's [unusedN]), in vocabulary order (roughly frequency order for WordPiece and BPE)."""
    specials = set(getattr(tokenizer, "all_special_ids", []) or [])
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    pool = []
    for i, t in enumerate(tokens):
        if i in specials or not isinstance(t, str):
            continue
        w = t.lstrip("\u0120\u2581").removeprefix("##")
        if len(w) >= 2 and w.isalpha() and w.isascii():
            pool.append(i)
            if len(pool) >= size:
                break
    return pool or [i for i in range(vocab_size) if i not in specials]


def _label_word_buffers(verbalizer: Verbalizer, tokenizer) -> dict[str, torch.Tensor]:
    """The label words as padded tensors: `word_ids` [W, T] and `word_tok_mask` [W, T] (sub-tokens
    per word; only the first with aggregation "first"), `label_word_mask` [C, W] (which words
    belong to which label) and `log_words_per_label` [C]."""
    ids = verbalizer.label_word_ids(tokenizer)
    flat = [(li, w if verbalizer.aggregation == "mean" else w[:1]) for li, ws in enumerate(ids) for w in ws]
    t = max(len(w) for _, w in flat)
    word_ids = torch.zeros(len(flat), t, dtype=torch.long)
    tok_mask = torch.zeros(len(flat), t)
    for i, (_, w) in enumerate(flat):
        word_ids[i, :len(w)] = torch.tensor(w)
        tok_mask[i, :len(w)] = 1.0
    label_of = torch.tensor([li for li, _ in flat])
    label_word_mask = label_of.unsqueeze(0) == torch.arange(verbalizer.num_labels).unsqueeze(1)
    return {"word_ids": word_ids, "word_tok_mask": tok_mask, "label_word_mask": label_word_mask,
            "log_words_per_label": label_word_mask.sum(1).float().log()}


# ---------------------------------------------------------------------------- the model
class PromptClassifier(TextClassifier):
    """Classify by filling a template and scoring verbalizer words at the mask.

    train="all": every parameter is trained (backbone, soft tokens, prompt encoder).
    train="prompt": the backbone is frozen (requires_grad False) and kept in eval mode even when
    the module is in training mode, so it is deterministic (no dropout); only the soft tokens and
    the prompt encoder train.
    """

    FORMAT = FORMAT

    @property
    def score_kind(self) -> str:
        if self.calibration is None:
            return "log P(word | prompt) at the mask"
        return "calibrated: log of P(word | prompt) / P(word | reference), renormalised over the labels"

    def __init__(self, backbone: nn.Module, tokenizer, template, verbalizer, train: str = "all",
                 prompt_encoder: str | None = None, max_length: int = 128, check_head: bool = True,
                 demos: Demonstrations | None = None):
        super().__init__()
        if train not in TRAIN_MODES:
            raise UserError(f"unknown train mode {train!r}; use 'all' (whole model) or 'prompt' (frozen backbone)")
        self.template = template if isinstance(template, Template) else Template(template)
        self.verbalizer = Verbalizer.parse(verbalizer)
        if train == "prompt" and not self._has_prompt():
            raise UserError(f"train='prompt' freezes the backbone but template {self.template.text!r} has no soft tokens "
                            "to train; add {soft*N} or use train='all'")
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.train_mode = train
        self.max_length = int(max_length)
        self.prompt_encoder_kind = None if prompt_encoder in (None, "", "none") else str(prompt_encoder).lower()
        # plain attributes (not registered submodules): they are parts of self.backbone
        object.__setattr__(self, "_encoder", base_model(backbone))
        object.__setattr__(self, "_head", mlm_head(backbone))
        emb = backbone.get_input_embeddings()
        self.embed_dim = int(emb.embedding_dim)

        self.soft_embeddings = nn.Parameter(self._init_soft(emb), requires_grad=True)
        self.prompt_encoder = make_prompt_encoder(self.prompt_encoder_kind, self.embed_dim)

        for name, buf in _label_word_buffers(self.verbalizer, tokenizer).items():
            self.register_buffer(name, buf, persistent=False)
        self.register_buffer("calibration", None, persistent=False)  # log p_ref [C] (calibration.py) or None
        self._demo_words = [ws[0] for ws in self.verbalizer.label_word_ids(tokenizer)]  # each label's first word
        self.demos = None
        self.set_demonstrations(demos)

        if train == "prompt":
            for p in self.backbone.parameters():
                p.requires_grad_(False)
            self.backbone.eval()
        if check_head:
            self._check_head()
        # start in the backbone's mode (load_backbone returns it in eval mode): call .train() to train
        self.train(backbone.training)

    # ------------------------------------------------------------------ set-up helpers
    def _has_prompt(self) -> bool:
        """Whether there is a prompt to train with the backbone frozen: here, the template's soft tokens."""
        return self.template.num_soft > 0

    def _init_soft(self, emb: nn.Embedding) -> torch.Tensor:
        weight = emb.weight.detach()
        n = self.template.num_soft
        out = torch.empty(n, weight.shape[1], dtype=weight.dtype)
        pool = _word_token_pool(self.tokenizer, weight.shape[0]) if n else []
        for i, word in enumerate(self.template.soft_init_words):
            if word:
                ids = list(self.tokenizer(" " + word, add_special_tokens=False)["input_ids"])
                if not ids or self.tokenizer.unk_token_id in ids:
                    raise UserError(f"soft token init word {word!r} is not in the backbone's vocabulary; choose another word")
                out[i] = weight[ids].float().mean(0).to(weight.dtype)
            else:
                j = pool[int(torch.randint(len(pool), ()).item())]
                out[i] = weight[j]
        return out.cpu().to(weight.device)

    def _check_head(self) -> None:
        """Compare our mask-only head with the model's full forward on one short input."""
        batch = self.template.encode(self.tokenizer, ["a short example ."],
                                     ["another one ."] if self.template.uses_x2 else None, max_length=self.max_length)
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            with torch.no_grad():
                dev = self.soft_embeddings.device
                ids = batch["input_ids"].to(dev)
                att = batch["attention_mask"].to(dev)
                full = self.backbone(input_ids=ids, attention_mask=att).logits[0, batch["mask_positions"][0]]
                hidden = self._encoder(input_ids=ids, attention_mask=att)[0]
                ours = self._head(hidden[:, batch["mask_positions"][0]])[0]
        finally:
            self.backbone.train(was_training)
        if full.shape != ours.shape or not torch.allclose(full.float(), ours.float(), atol=1e-4, rtol=1e-4):
            raise UserError(f"{type(self.backbone).__name__}: the mask-only prediction head does not reproduce the "
                            "model's own MLM logits; this architecture is not supported")

    # ------------------------------------------------------------------ modes and parameters
    def train(self, mode: bool = True):
        super().train(mode)
        if self.train_mode == "prompt":
            self.backbone.eval()
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def device(self) -> torch.device:
        return self.soft_embeddings.device

    @property
    def num_labels(self) -> int:
        return self.verbalizer.num_labels

    def soft_prompt(self) -> torch.Tensor:
        """The soft token embeddings fed to the model [num_soft, D] (after the prompt encoder)."""
        if self.prompt_encoder is None or self.template.num_soft == 0:
            return self.soft_embeddings
        return self.prompt_encoder(self.soft_embeddings)

    # ------------------------------------------------------------------ computing
    def encode(self, texts, texts_b=None, demos=None) -> dict[str, torch.Tensor]:
        """`Template.encode` with this model's tokenizer and max_length (`demos`: see there)."""
        return self.template.encode(self.tokenizer, texts, texts_b, max_length=self.max_length, demos=demos)

    def input_embeds(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Token embeddings of a batch with the soft prompt spliced in at its positions [B, L, H]."""
        dev = self.device
        ids = batch["input_ids"].to(dev)
        embeds = self.backbone.get_input_embeddings()(ids)
        if self.template.num_soft:
            soft_pos = batch["soft_positions"].to(dev)
            rows = torch.arange(ids.shape[0], device=dev).unsqueeze(1).expand_as(soft_pos)
            copies = soft_pos.shape[1] // self.template.num_soft  # the query's, then each demonstration's
            values = self.soft_prompt().to(embeds.dtype).repeat(copies, 1).unsqueeze(0).expand(ids.shape[0], -1, -1)
            embeds = embeds.index_put((rows, soft_pos), values)
        return embeds

    def mask_logits(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Vocabulary logits at the mask [B, V], from a batch made by `Template.encode`."""
        dev = self.device
        ids = batch["input_ids"].to(dev)
        att = batch["attention_mask"].to(dev)
        mask_pos = batch["mask_positions"].to(dev)
        hidden = self.hidden_states(self.input_embeds(batch), att)
        at_mask = hidden[torch.arange(ids.shape[0], device=dev), mask_pos]  # [B, H]
        return self._head(at_mask.unsqueeze(1)).squeeze(1)

    def hidden_states(self, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The encoder's final hidden states [B, L, H] for input embeddings [B, L, H]."""
        return self._encoder(inputs_embeds=embeds, attention_mask=attention_mask)[0]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Label scores [B, num_labels] for a batch made by `Template.encode` (see `scores`)."""
        return self.label_scores(self.mask_logits(batch))

    def label_scores(self, mask_logits: torch.Tensor, calibrated: bool = True) -> torch.Tensor:
        """[B, num_labels] label scores from the vocabulary logits at the mask [B, V] (calibrated when a
        calibration is set, unless `calibrated` is False)."""
        logp = F.log_softmax(mask_logits.float(), dim=-1)  # [B, V]
        tok = logp[:, self.word_ids]  # [B, W, T]
        word = (tok * self.word_tok_mask).sum(-1) / self.word_tok_mask.sum(-1)  # [B, W]
        per_label = word.unsqueeze(1).masked_fill(~self.label_word_mask.unsqueeze(0), float("-inf"))  # [B, C, W]
        scores = torch.logsumexp(per_label, dim=-1) - self.log_words_per_label
        return scores if self.calibration is None or not calibrated else apply_calibration(scores, self.calibration)

    def set_calibration(self, log_reference: torch.Tensor | None) -> None:
        """Calibrate the label scores by a reference distribution (log p_ref [C]; None: off): `scores`
        then gives log q, q = (p / p_ref) renormalised over the labels (Zhao et al. 2021; calibration.py)."""
        if log_reference is not None and tuple(log_reference.shape) != (self.num_labels,):
            raise UserError(f"a calibration needs one value per label ({self.num_labels}), got shape {tuple(log_reference.shape)}")
        self.calibration = None if log_reference is None else log_reference.float().to(self.device)

    def scores(self, texts, texts_b=None) -> torch.Tensor:
        """[B, num_labels] log-scores: per label, log of the mean probability of its words at the mask.

        For one single-token word per label this is exactly log_softmax over the vocabulary of
        the MLM logits at the mask, taken at the label words' ids. With demonstrations: in training
        mode one fresh set per input; in eval mode the ensemble (`ensemble_scores`).
        """
        if self.demos is None:
            return self(self.encode(texts, texts_b))
        texts, texts_b = self.template._check_inputs(texts, texts_b)
        self.demos.prepare(texts, texts_b)  # --demos similar: the inputs' embeddings, in one batch
        if not self.training:
            return self.ensemble_scores(texts, texts_b)
        sets = self.demos.training_sets(texts, texts_b)
        return self(self.encode(texts, texts_b, demos=[self.render_demos(s) for s in sets]))

    def set_demonstrations(self, demos: Demonstrations | None) -> None:
        """Follow every input with demonstrations drawn from `demos` (None: none)."""
        if demos is not None and demos.num_labels != self.num_labels:
            raise UserError(f"the demonstrations have {demos.num_labels} classes but the verbalizer has {self.num_labels}")
        self.demos = demos

    def render_demos(self, examples: list) -> list[tuple]:
        """Demonstrations for `Template.encode`: (text, text_b, the ids of its label's first word)."""
        return [(ex.text, getattr(ex, "text_b", None), self._demo_words[ex.label]) for ex in examples]

    def ensemble_scores(self, texts: list[str], texts_b: list[str] | None = None) -> torch.Tensor:
        """[B, num_labels]: log of the label probabilities (softmax of the label scores) averaged over
        each input's `demos.sets` demonstration sets; calibration (if set) applies to the average."""
        sets = [self.demos.test_sets(t, texts_b[i] if texts_b else None) for i, t in enumerate(texts)]
        n = self.demos.sets
        rep_a = [t for t in texts for _ in range(n)]
        rep_b = [t for t in texts_b for _ in range(n)] if texts_b is not None else None
        rows = [self.render_demos(s) for per_input in sets for s in per_input]
        probs = []
        for s in range(0, len(rows), ENSEMBLE_ROWS):
            batch = self.encode(rep_a[s:s + ENSEMBLE_ROWS], rep_b[s:s + ENSEMBLE_ROWS] if rep_b else None,
                                demos=rows[s:s + ENSEMBLE_ROWS])
            probs.append(torch.softmax(self.label_scores(self.mask_logits(batch), calibrated=False), dim=-1))
        mean = torch.cat(probs).view(len(texts), n, -1).mean(1)
        scores = mean.clamp_min(torch.finfo(mean.dtype).tiny).log()
        return scores if self.calibration is None else apply_calibration(scores, self.calibration)

    def label_descriptions(self, class_names: list[str]) -> list[str]:
        return ["/".join(ws) for ws in self.verbalizer.words]

    # ------------------------------------------------------------------ saving and loading
    def _meta(self) -> dict:
        return {
            "format": FORMAT,
            "kind": "prompt-classifier",
            "train": self.train_mode,
            "template": self.template.text,
            "verbalizer": self.verbalizer.to_dict(),
            "backbone": backbone_id(self.backbone),
            "num_soft": self.template.num_soft,
            "hidden_size": self.embed_dim,
            "prompt_encoder": self.prompt_encoder_kind,
            "max_length": self.max_length,
        }

    def save(self, path) -> Path:
        """Save to `path` (.safetensors + .json sidecar).

        train="prompt": only the soft embeddings and the prompt encoder (a small file);
        train="all": the backbone too (tied weights stored once).
        """
        tensors = {"soft_embeddings": self.soft_embeddings.detach()}
        if self.prompt_encoder is not None:
            tensors.update({f"prompt_encoder.{k}": v.detach() for k, v in self.prompt_encoder.state_dict().items()})
        meta = self._meta()
        if self.train_mode == "all":
            bb, tied = dedupe_tied(self.backbone.state_dict())
            tensors.update({f"backbone.{k}": v for k, v in bb.items()})
            meta["tied"] = {f"backbone.{k}": f"backbone.{v}" for k, v in tied.items()}
        return save_checkpoint(path, tensors, meta)

    @classmethod
    def read_file(cls, path) -> tuple[dict[str, torch.Tensor], dict]:
        tensors, meta = super().read_file(path)
        if "soft_embeddings" not in tensors:
            raise UserError(f"{path} holds no soft embeddings; it is not a prompt file written by PromptClassifier.save")
        return tensors, meta

    def load(self, path) -> "PromptClassifier":
        """Load a prompt file into this model. A backbone, embedding size, number of soft tokens or
        prompt encoder other than the file's is a `UserError` naming both values."""
        tensors, meta = self.read_file(path)
        self._check_fits(path, meta, tensors["soft_embeddings"])
        with torch.no_grad():
            self.soft_embeddings.copy_(tensors["soft_embeddings"].to(self.soft_embeddings))
            if self.prompt_encoder is not None:
                enc = strip_prefix(tensors, "prompt_encoder.")
                check_state_dict_compatible(self.prompt_encoder.state_dict(), enc, what=f"prompt file {path}")
                self.prompt_encoder.load_state_dict(enc)
            bb = strip_prefix(tensors, "backbone.")
            if bb:
                tied = set(strip_prefix(meta.get("tied", {}), "backbone."))
                want = {k: v for k, v in self.backbone.state_dict().items() if k not in tied}
                check_state_dict_compatible(want, bb, what=f"prompt file {path}")
                missing, unexpected = self.backbone.load_state_dict(bb, strict=False)
                if set(missing) - tied or unexpected:
                    raise UserError(f"prompt file {path} does not fit this backbone (missing {sorted(set(missing) - tied)[:5]}, "
                                    f"unexpected {sorted(unexpected)[:5]})")
        return self

    def _check_fits(self, path, meta: dict, soft: torch.Tensor) -> None:
        mine = backbone_id(self.backbone)
        if meta.get("hidden_size") != self.embed_dim:
            raise UserError(f"prompt file {path} was trained on backbone {meta.get('backbone')!r} with embedding size "
                            f"{meta.get('hidden_size')}, but this backbone {mine!r} has {self.embed_dim}; load it with "
                            "the backbone it was trained on")
        if meta.get("backbone") != mine:
            raise UserError(f"prompt file {path} was trained on backbone {meta.get('backbone')!r}, not on {mine!r}; "
                            "load it with the backbone it was trained on")
        if meta.get("num_soft") != self.template.num_soft:
            raise UserError(f"prompt file {path} has {meta.get('num_soft')} soft tokens but template "
                            f"{self.template.text!r} has {self.template.num_soft}; use the template saved in the file "
                            f"({meta.get('template')!r})")
        if (meta.get("prompt_encoder") or None) != self.prompt_encoder_kind:
            raise UserError(f"prompt file {path} uses prompt encoder {meta.get('prompt_encoder')!r} but this model "
                            f"uses {self.prompt_encoder_kind!r}; build the model with the same prompt encoder")
        if tuple(soft.shape) != tuple(self.soft_embeddings.shape):
            raise UserError(f"prompt file {path} has soft embeddings of shape {tuple(soft.shape)}, "
                            f"this model {tuple(self.soft_embeddings.shape)}; use the matching backbone and template")

    @classmethod
    def from_meta(cls, meta: dict, backbone: nn.Module, tokenizer, **overrides) -> "PromptClassifier":
        """The model a prompt file describes; `template`, `verbalizer`, `train`, `max_length` may be overridden."""
        verbalizer = overrides.pop("verbalizer", None) or Verbalizer.from_dict(meta["verbalizer"])
        return cls(backbone, tokenizer, overrides.pop("template", meta["template"]), verbalizer,
                   train=overrides.pop("train", meta.get("train", "prompt")),
                   prompt_encoder=meta.get("prompt_encoder"),
                   max_length=overrides.pop("max_length", meta.get("max_length", 128)), **overrides)


def full_vocab_label_logits(model: PromptClassifier, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reference path (what OpenPrompt/PET do): full-vocabulary MLM logits at every position,
    then gather the mask. Same result as `model(batch)`; used for speed comparisons and tests."""
    dev = model.device
    ids = batch["input_ids"].to(dev)
    embeds = model.input_embeds(batch)
    logits = model.backbone(inputs_embeds=embeds, attention_mask=batch["attention_mask"].to(dev)).logits  # [B, L, V]
    return model.label_scores(logits[torch.arange(ids.shape[0], device=dev), batch["mask_positions"].to(dev)])
