"""The settings of a comparison: the shared run options plus its data sets, rows, seeds and curve."""

from __future__ import annotations

from dataclasses import dataclass, field

from ...errors import UserError
from ...tracking import check_tracker
from ..methods.registry import METHOD_NAMES, get_method
from ..prompts.choices import check_calibration
from ..run.config import RunConfig, RunOptions, check_demos, shared_options
from ..run.fewshot import CURVE_SHOTS, LMBFF_SEEDS
from .rows import parse_row


@dataclass
class CompareConfig(RunOptions):
    """The comparison: every row on every data set for every seed at K shots, plus a learning curve."""

    datasets: list[str] = field(default_factory=lambda: ["mr", "cr", "trec"])
    # rows.py; by default the five single-model methods (not pet, not the deep prompts)
    rows: list[str] = field(default_factory=lambda: [m for m in METHOD_NAMES if m != "pet" and not get_method(m).deep])
    seeds: list[int] = field(default_factory=lambda: list(LMBFF_SEEDS))
    lr: dict[str, float] = field(default_factory=dict)  # per-method override; missing: the method's default
    train: dict[str, str] = field(default_factory=dict)  # per-method override of all/prompt (hybrid)
    templates: dict[str, str] = field(default_factory=dict)  # per-method template override
    curve: bool = True
    curve_datasets: list[str] | None = None  # None: ["mr"] if mr is compared, else the first data set
    curve_shots: list[int] = field(default_factory=lambda: list(CURVE_SHOTS))
    curve_rows: list[str] | None = None  # None: the comparison's rows
    cell_examples: int = 4  # test examples each cell writes to examples.json
    kind: str = "prompting-compare"

    def cell_config(self, dataset: str, run: str, shots: int, seed: int) -> RunConfig:
        """One cell's run (a row's `run`, rows.py): the shared options, this cell's K and seed, the
        row's settings, the method's overrides."""
        method = parse_row(run).method
        label_free = {"verbalizer": None, "calibrate": "none"} if get_method(method).style is None else {}
        if not get_method(method).takes_demos:
            label_free["demos"] = "none"  # soft, finetune and pet cells run without demonstrations
        return RunConfig(**{**shared_options(self), "shots": shots, **label_free, **parse_row(run).settings()},
                         dataset=dataset, method=method, seed=seed,
                         template=self.templates.get(method), train=self.train.get(method), lr=self.lr.get(method),
                         save_model=False, num_examples=self.cell_examples)

    def validate(self) -> None:
        if not self.datasets:
            raise UserError("no data set given; pass e.g. --datasets mr,cr,trec")
        if not self.rows:
            raise UserError("no row given; pass e.g. --rows zero-shot,prompt-ft")
        for m in list(self.rows) + list(self.curve_rows or []):
            parse_row(m)
        if not self.seeds:
            raise UserError("no seed given; pass e.g. --seeds 13,21,42,87,100")
        if self.curve_datasets is None:
            self.curve_datasets = ["mr"] if "mr" in self.datasets else self.datasets[:1]
        if self.shots < 1:
            raise UserError(f"--shots must be at least 1 for the few-shot comparison, got {self.shots}")
        check_tracker(self.log_with)
        check_calibration(self.calibrate)
        check_demos(self)
        if self.curve and any(k < 1 for k in self.curve_shots):
            raise UserError(f"--curve-shots must all be >= 1, got {self.curve_shots}")
        for name, d in (("datasets", self.datasets), ("rows", self.rows), ("seeds", self.seeds)):
            if len(set(d)) != len(d):
                raise UserError(f"--{name} lists an entry twice: {d}")
