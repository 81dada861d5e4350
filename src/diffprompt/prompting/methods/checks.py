"""The settings each method refuses, as one-line errors that name the fix (torch-free)."""

from __future__ import annotations

from ...errors import UserError
from ..prompts.choices import AUTO


def trains_everything(cfg) -> None:
    """prompt-ft and finetune train every parameter."""
    if cfg.train != "all":
        hint = ("for a frozen backbone use --method soft or hybrid" if cfg.method == "prompt-ft"
                else "--train prompt applies to soft and hybrid only")
        raise UserError(f"{cfg.method} trains every parameter; {hint}")


def has_no_label_words(cfg) -> None:
    """finetune: a classification head, so nothing to calibrate and no label words to search."""
    trains_everything(cfg)
    if cfg.calibrate != "none" or cfg.verbalizer == AUTO:
        raise UserError("finetune has a classification head, no label words: --calibrate and --verbalizer auto "
                        "apply to the prompt methods")


def pet_settings(cfg) -> None:
    """PET: its own patterns (methods.defaults.PET_PATTERNS), label words given or the data set's,
    every parameter trained, K >= 1, and positive PET numbers."""
    if cfg.template is not None:
        raise UserError(f"--method pet trains one model per pattern of the data set (methods.defaults.PET_PATTERNS); "
                        f"--template {cfg.template!r} does not apply")
    if cfg.calibrate != "none" or cfg.verbalizer == AUTO:
        raise UserError("--method pet takes label words as given or the data set's; --calibrate and --verbalizer auto "
                        "do not apply to it")
    if cfg.train != "all":
        raise UserError("--method pet trains every parameter of each pattern model; --train prompt does not apply")
    if cfg.shots < 1:
        raise UserError("--method pet needs K labeled examples per class and the rest of the train split as unlabeled "
                        "texts; give --shots K >= 1")
    for name in ("pet_unlabeled", "pet_distill_steps", "pet_temperature"):
        if not getattr(cfg, name) > 0:
            raise UserError(f"--{name.replace('_', '-')} must be positive, got {getattr(cfg, name)}")


def deep_prompt_settings(cfg) -> None:
    """prefix-tuning and p-tuning-v2 train the key/value prefixes of every layer and nothing else: a
    frozen backbone, no soft tokens in the template, no prompt encoder, a positive prefix length."""
    if cfg.train != "prompt":
        raise UserError(f"{cfg.method} trains only its prefixes on a frozen backbone; --train all does not apply "
                        "(use --method prompt-ft to train every parameter)")
    if "{soft" in (cfg.template or ""):
        raise UserError(f"{cfg.method} trains key/value prefixes, not input soft tokens; drop the {{soft}} tokens from "
                        f"--template {cfg.template!r} (or use --method soft or hybrid)")
    if cfg.prompt_encoder is not None:
        raise UserError(f"--prompt-encoder reparameterises input soft tokens; {cfg.method} has none (its prefixes "
                        "train directly)")
    if cfg.prefix_length is None or cfg.prefix_length < 1:
        raise UserError(f"--prefix-length must be at least 1, got {cfg.prefix_length}")
    if cfg.prefix_mlp is not None and cfg.prefix_mlp < 1:
        raise UserError(f"--prefix-mlp must be a positive hidden size, got {cfg.prefix_mlp}; leave it out to train the "
                        "prefixes directly")


def embedding_settings(cfg) -> None:
    """embedding-logreg: a logistic regression on sentence embeddings; no template, label words,
    calibration or soft prompt apply, and it fits on the K examples per class."""
    if cfg.template is not None or cfg.verbalizer is not None or cfg.calibrate != "none":
        raise UserError("embedding-logreg fits a logistic regression on sentence embeddings: --template, --verbalizer "
                        "and --calibrate apply to the prompt methods")
    if cfg.prompt_encoder is not None or cfg.train != "head":
        raise UserError("embedding-logreg trains only its logistic-regression head; --prompt-encoder and --train do not "
                        "apply")
    if cfg.shots < 1:
        raise UserError("embedding-logreg fits on K examples per class and chooses C on K more; give --shots K >= 1")
