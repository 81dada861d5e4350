"""The classifier a run config describes: its verbalizer, its demonstrations, and the model on a backbone."""

from __future__ import annotations

from ...errors import UserError
from ..models.classifier import TextClassifier
from ..prompts.choices import AUTO
from .config import RunConfig
from ..prompts.demonstrations import make_demonstrations
from ..models.deep_prompt_classifier import DeepPromptClassifier
from ..models.embedding_logreg import EmbeddingLogReg
from ..models.finetune_classifier import FineTuneClassifier
from ..methods.defaults import default_verbalizer_spec
from ..methods.registry import get_method
from ..models.prompt_classifier import PromptClassifier
from ..models.sentence_encoder import SentenceEncoder
from ..prompts.template import Template
from ..prompts.verbalizer import Verbalizer


def build_verbalizer(cfg: RunConfig, class_names: list[str]) -> Verbalizer:
    """The verbalizer for a run: `--verbalizer` text (labels by name or index), the data set's
    default words, or `Verbalizer.default_for(class_names)`. A data label it lacks is a UserError."""
    if cfg.verbalizer == AUTO:
        raise UserError("--verbalizer auto: the label words are chosen by a training run (training.choose_label_words); "
                        "build the model with the words it chose")
    if cfg.verbalizer:
        return Verbalizer.from_string(cfg.verbalizer, class_names=class_names)
    spec = default_verbalizer_spec(cfg.dataset, class_names)
    return Verbalizer(spec, class_names=class_names) if spec else Verbalizer.default_for(class_names)


def build_model(cfg: RunConfig, backbone, tokenizer, class_names: list[str], train_examples=None) -> TextClassifier:
    """The classifier for a resolved config on a (fresh) backbone; with `--demos`, `train_examples`
    (the few-shot training set) are its demonstration pool."""
    method = get_method(cfg.method)
    if method.kind == "embedding":  # the reference: a logistic regression on sentence embeddings, no backbone
        return EmbeddingLogReg(SentenceEncoder(cfg.demo_encoder), len(class_names))
    if method.kind == "finetune":
        return FineTuneClassifier(backbone, tokenizer, len(class_names), max_length=cfg.max_length)
    if method.deep:  # prefix-tuning, p-tuning-v2: key/value prefixes at every layer, nothing else trains
        return DeepPromptClassifier(backbone, tokenizer, Template(cfg.template), build_verbalizer(cfg, class_names),
                                    prefix_length=cfg.prefix_length, max_length=cfg.max_length,
                                    mlp_hidden_size=cfg.prefix_mlp)
    train = cfg.train if cfg.train is not None else "all"  # zero-shot: nothing is trained either way
    if cfg.demos != "none" and train_examples is None:
        raise UserError(f"--demos {cfg.demos} draws demonstrations from the training examples; none were given")
    demos = make_demonstrations(cfg.demos, train_examples or [], len(class_names), cfg.demo_sets, cfg.seed,
                                cfg.demo_encoder)
    return PromptClassifier(backbone, tokenizer, Template(cfg.template), build_verbalizer(cfg, class_names), train=train,
                            prompt_encoder=cfg.prompt_encoder, max_length=cfg.max_length, demos=demos)
