"""The settings of a prompting run and of the comparison grid: every default lives here.

`RunOptions` holds what one run and the grid share (K, backbone, label words, the training
loop, the test subset, the device); `RunConfig` adds one run's data set, method and seed,
`CompareConfig` the grid's lists. The CLI takes its defaults from these classes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ...errors import UserError
from ...tracking import NO_TRACKER, check_tracker
from .fewshot import CURVE_SHOTS, LMBFF_SEEDS
from ..methods.registry import METHOD_NAMES, default_template, get_method
from ..comparison.rows import parse_row

AUTO = "auto"  # --verbalizer auto
CALIBRATIONS = ("none", "content-free", "domain")  # --calibrate (calibration.py)
DEMOS = ("none", "random", "similar")  # --demos (demonstrations.py)
DEMO_METHODS = ("zero-shot", "prompt-ft", "hybrid")  # the methods that take demonstrations


def check_calibration(kind: str) -> str:
    if kind not in CALIBRATIONS:
        raise UserError(f"--calibrate must be one of {', '.join(CALIBRATIONS)}; got {kind!r}")
    return kind


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
    demo_encoder: str | None = None  # --demos similar: sentence encoder (hub id or folder); None: the packaged all-MiniLM-L6-v2
    backbone: str | None = None  # None: the packaged BERT-tiny
    steps: int = 80  # optimiser steps
    batch_size: int = 8
    eval_every: int = 10  # steps between dev evaluations (model choice, early stopping)
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
        """A copy with the method's defaults filled in (template, lr, train), checked."""
        m = get_method(self.method)
        cfg = RunConfig(**asdict(self))
        if m.kind == "prompt" and cfg.template is None:
            cfg.template = default_template(self.dataset, m.style, pair=pair)
        if cfg.lr is None:
            cfg.lr = m.lr
        if cfg.train is None:
            cfg.train = m.train
        if m.name == "zero-shot":
            cfg.train = None
        elif cfg.train not in ("all", "prompt"):
            raise UserError(f"--train must be 'all' or 'prompt', got {cfg.train!r}")
        if m.name == "finetune" and cfg.train != "all":
            raise UserError("finetune trains every parameter; --train prompt applies to soft and hybrid only")
        if m.name == "prompt-ft" and cfg.train != "all":
            raise UserError("prompt-ft trains every parameter; for a frozen backbone use --method soft or hybrid")
        check_calibration(cfg.calibrate)
        if m.name == "pet":
            check_pet(cfg)
        elif m.kind == "finetune" and (cfg.calibrate != "none" or cfg.verbalizer == AUTO):
            raise UserError("finetune has a classification head, no label words: --calibrate and --verbalizer auto "
                            "apply to the prompt methods")
        if cfg.verbalizer == AUTO:
            check_auto(cfg)
        check_demos(cfg, m.name)
        if self.prompt_encoder not in (None, "lstm", "mlp"):
            raise UserError(f"--prompt-encoder must be lstm or mlp, got {self.prompt_encoder!r}")
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


def check_pet(cfg: RunConfig) -> None:
    """The settings --method pet takes: its own patterns (methods.PET_PATTERNS), label words given or
    the data set's, every parameter trained, K >= 1, and positive PET numbers."""
    if cfg.template is not None:
        raise UserError(f"--method pet trains one model per pattern of the data set (methods.PET_PATTERNS); "
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


def dataset_tag(dataset: str) -> str:
    """A data set's name fit for a file name (a file's stem)."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(dataset).stem)


@dataclass
class CompareConfig(RunOptions):
    """The grid: every method on every data set for every seed at K shots, plus a learning curve."""

    datasets: list[str] = field(default_factory=lambda: ["mr", "cr", "trec"])
    methods: list[str] = field(default_factory=lambda: [m for m in METHOD_NAMES if m != "pet"])  # rows (rows.py)
    seeds: list[int] = field(default_factory=lambda: list(LMBFF_SEEDS))
    lr: dict[str, float] = field(default_factory=dict)  # per-method override; missing: the method's default
    train: dict[str, str] = field(default_factory=dict)  # per-method override of all/prompt (hybrid)
    templates: dict[str, str] = field(default_factory=dict)  # per-method template override
    curve: bool = True
    curve_datasets: list[str] | None = None  # None: ["mr"] if mr is in the grid, else the first data set
    curve_shots: list[int] = field(default_factory=lambda: list(CURVE_SHOTS))
    curve_methods: list[str] | None = None  # None: the grid's methods
    cell_examples: int = 4  # test examples each cell writes to examples.json
    kind: str = "prompting-compare"

    def cell_config(self, dataset: str, run: str, shots: int, seed: int) -> RunConfig:
        """One cell's run (a row's `run`, rows.py): the shared options, this cell's K and seed, the
        row's settings, the method's overrides."""
        method = parse_row(run).method
        label_free = {"verbalizer": None, "calibrate": "none"} if get_method(method).style is None else {}
        if method not in DEMO_METHODS:
            label_free["demos"] = "none"  # soft, finetune and pet cells run without demonstrations
        return RunConfig(**{**shared_options(self), "shots": shots, **label_free, **parse_row(run).settings()},
                         dataset=dataset, method=method, seed=seed,
                         template=self.templates.get(method), train=self.train.get(method), lr=self.lr.get(method),
                         save_model=False, num_examples=self.cell_examples)

    def validate(self) -> None:
        if not self.datasets:
            raise UserError("no data set given; pass e.g. --datasets mr,cr,trec")
        if not self.methods:
            raise UserError("no method given; pass e.g. --methods zero-shot,prompt-ft")
        for m in list(self.methods) + list(self.curve_methods or []):
            parse_row(m)
        if not self.seeds:
            raise UserError("no seed given; pass e.g. --seeds 13,21,42,87,100")
        if self.curve_datasets is None:
            self.curve_datasets = ["mr"] if "mr" in self.datasets else self.datasets[:1]
        if self.shots < 1:
            raise UserError(f"--shots must be at least 1 for the few-shot grid, got {self.shots}")
        check_tracker(self.log_with)
        check_calibration(self.calibrate)
        check_demos(self)
        if self.curve and any(k < 1 for k in self.curve_shots):
            raise UserError(f"--curve-shots must all be >= 1, got {self.curve_shots}")
        for name, d in (("datasets", self.datasets), ("methods", self.methods), ("seeds", self.seeds)):
            if len(set(d)) != len(d):
                raise UserError(f"--{name} lists an entry twice: {d}")
