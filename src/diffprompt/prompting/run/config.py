"""The settings of a prompting run: every default lives here or in the method's registry entry.

`RunOptions` holds what one run and the comparison share (K, backbone, label words, the training
loop, the test subset, the device); `RunConfig` adds one run's data set, method and seed
(`comparison/config.py`'s `CompareConfig` adds the comparison's lists). The CLI takes its
defaults from these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ...errors import UserError
from ...tracking import NO_TRACKER, check_tracker
from ..methods.defaults import default_template
from ..methods.registry import DEMO_METHODS, get_method
from ..prompts.choices import AUTO, DEMOS, PROMPT_ENCODERS, check_calibration


@dataclass
class RunOptions:
    shots: int = 16  # K per class; 0 (one run only) = the whole train split, no few-shot draw
    verbalizer: str | None = None  # "0:terrible;1:great" style; "auto": searched (label_search.py); None: the data set's default
    auto_words: int = 10  # --verbalizer auto: label words kept per class (LM-BFF: 100)
    auto_candidates: int = 20  # candidate verbalizers, by summed log-probability (LM-BFF: 100)
    auto_finetune: int = 3  # of those, the best by zero-shot train accuracy, each trained auto_steps then judged on dev
    auto_steps: int = 20  # the short training budget per candidate (LM-BFF: the full budget)
    calibrate: str = "none"  # "none", "content-free" or "domain" (calibration.py)
    domain_examples: int = 200  # --calibrate domain: unlabeled train-split texts averaged
    pet_unlabeled: int = 500  # --method pet: unlabeled train-split texts the ensemble labels (never dev or test)
    pet_temperature: float = 2.0  # --method pet: T of the soft labels softmax(mean pattern scores / T) (PET: 2)
    pet_distill_steps: int = 160  # --method pet: optimiser steps of the distilled classifier (batch_size each)
    demos: str = "none"  # LM-BFF demonstrations after each input: "none", "random" or "similar" (demonstrations.py)
    demo_sets: int = 16  # test time: demonstration sets sampled per input, their label probabilities averaged
    demo_encoder: str | None = None  # --demos similar and embedding-logreg: sentence encoder (hub id or folder); None: the packaged all-MiniLM-L6-v2
    backbone: str | None = None  # None: the packaged BERT-tiny
    steps: int | None = None  # optimiser steps; None: the method's
    batch_size: int = 8
    eval_every: int | None = None  # steps between dev evaluations (model choice, early stopping); None: the method's
    prefix_length: int | None = None  # deep prompts (prefix-tuning, p-tuning-v2): prefix tokens per layer; None: the method's
    prefix_mlp: int | None = None  # deep prompts: train the prefixes through an MLP of this hidden size (saved folded); None: directly
    patience: int = 0  # stop after this many dev evaluations without improvement; 0 = never
    weight_decay: float = 0.0
    warmup: float = 0.0  # fraction of steps of linear warm-up (then linear decay)
    max_length: int = 128  # tokens per input; only the {x} slots are truncated
    eval_batch_size: int = 64
    limit_test: int | None = None  # evaluate on N test examples only (quick runs)
    device: str = "auto"
    log_with: str = NO_TRACKER  # also send every metrics line to "tensorboard" or "wandb"


def shared_options(options: RunOptions) -> dict:
    """The `RunOptions` fields of a config, by name."""
    return {f.name: getattr(options, f.name) for f in fields(RunOptions)}


@dataclass
class RunConfig(RunOptions):
    """Everything one prompting run needs; saved as the run's config.json ("kind": "prompting-train")."""

    dataset: str = "mr"
    method: str = "prompt-ft"
    seed: int = 42  # data seed (few-shot draw) and training seed
    template: str | None = None  # None: the method's default for the data set
    train: str | None = None  # override: "all" or "prompt" (hybrid allows both)
    prompt_encoder: str | None = None  # None, "lstm", "mlp"
    lr: float | None = None  # None: the method's default
    num_examples: int = 8  # test examples written to examples.json
    save_model: bool = True  # write the trained prompt / model into the run folder
    kind: str = "prompting-train"

    def resolved(self, pair: bool = False) -> "RunConfig":
        """A copy with the method's defaults filled in (template, budget, train), checked."""
        m = get_method(self.method)
        cfg = RunConfig(**asdict(self))
        if m.kind == "prompt" and cfg.template is None:
            cfg.template = default_template(self.dataset, m.style, pair=pair)
        cfg.lr = m.lr if cfg.lr is None else cfg.lr
        cfg.steps = m.steps if cfg.steps is None else cfg.steps
        cfg.eval_every = m.eval_every if cfg.eval_every is None else cfg.eval_every
        # only a deep method has a prefix (a comparison passes its --prefix-length to every cell)
        cfg.prefix_length = (m.prefix_length if cfg.prefix_length is None else cfg.prefix_length) if m.deep else None
        cfg.prefix_mlp = cfg.prefix_mlp if m.deep else None
        cfg.train = None if not m.trains else (m.train if cfg.train is None else cfg.train)
        if m.trains and cfg.train not in ("all", "prompt", m.train):
            raise UserError(f"--train must be 'all' or 'prompt', got {cfg.train!r}")
        check_calibration(cfg.calibrate)
        if m.check is not None:
            m.check(cfg)
        if cfg.verbalizer == AUTO:
            check_auto(cfg)
        check_demos(cfg, m.name)
        if self.prompt_encoder not in (None, *PROMPT_ENCODERS):
            raise UserError(f"--prompt-encoder must be {' or '.join(PROMPT_ENCODERS)}, got {self.prompt_encoder!r}")
        for name in ("steps", "batch_size", "eval_every", "max_length", "eval_batch_size", "domain_examples"):
            if getattr(cfg, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")
        if cfg.shots < 0:
            raise UserError(f"--shots must be >= 0, got {cfg.shots}")
        check_tracker(cfg.log_with)
        return cfg

    def default_folder(self) -> str:
        """runs/prompting/METHOD-DATASET-kK-seedS (zero-shot: runs/prompting/zero-shot-DATASET)."""
        if self.method == "zero-shot":
            return f"runs/prompting/zero-shot-{dataset_tag(self.dataset)}"
        return f"runs/prompting/{self.method}-{dataset_tag(self.dataset)}-k{self.shots}-seed{self.seed}"


def check_auto(cfg: RunConfig) -> None:
    """The settings --verbalizer auto needs: K examples per class, a template without soft tokens."""
    if cfg.shots < 1:
        raise UserError("--verbalizer auto searches label words on the K training examples per class; give --shots K >= 1")
    if "{soft" in (cfg.template or ""):
        raise UserError(f"--verbalizer auto needs a template without soft tokens, got {cfg.template!r}; use a hard "
                        "template or give the label words")
    for name in ("auto_words", "auto_candidates", "auto_finetune", "auto_steps"):
        if getattr(cfg, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(cfg, name)}")


def check_demos(options: RunOptions, method: str | None = None) -> None:
    """--demos: a known mode, a method that takes demonstrations, and settings that fit them."""
    if options.demos not in DEMOS:
        raise UserError(f"--demos must be one of {', '.join(DEMOS)}; got {options.demos!r}")
    if options.demo_sets < 1:
        raise UserError(f"--demo-sets must be at least 1, got {options.demo_sets}")
    if options.demos == "none" or method is None:
        return
    if method not in DEMO_METHODS:
        raise UserError(f"--demos {options.demos} applies to {', '.join(DEMO_METHODS)}; method {method} takes no "
                        "demonstrations")
    if options.calibrate == "content-free":
        raise UserError("--calibrate content-free scores inputs without demonstrations; with --demos use "
                        "--calibrate domain or none")


def dataset_tag(dataset: str) -> str:
    """A data set's name fit for a file name (a file's stem)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(dataset).stem)
