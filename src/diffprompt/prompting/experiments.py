"""The comparison grid: data sets × methods × seeds at K shots, plus a learning curve over K.

`run_compare(CompareConfig, out)` runs every cell with `training.train_run` (one run folder per
cell under `out/cells/DATASET/kK/METHOD/seedS/`), then writes into `out/`:

- `config.json` ("kind": "prompting-compare"), `metrics.jsonl` (one line per finished cell);
- `compare.json`: per data set and method the test accuracies of every seed, their mean and
  standard deviation (sample std, n - 1), the majority-class row, and the MR targets;
- `compare.md`: the table, "mean (std)" in %, with the majority-class row;
- `compare.png`: grouped bars with error bars (one std), the majority class dashed;
- `learning_curve.json` and `learning_curve.png`: test accuracy against K (4, 8, 16, 32 by
  default) for the curve data sets (MR by default), mean ± std over the same seeds;
- `DONE`.

Resuming: a cell whose folder holds `DONE` and a `results.json` written with the same
settings is read back, not rerun, so an interrupted grid picks up where it stopped.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..progress import log
from ..rundir import RunDir
from .fewshot import CURVE_SHOTS, LMBFF_SEEDS, majority_baseline
from .methods import METHOD_NAMES, RunConfig, default_template, get_method

# The settings of a cell that decide its result (a finished cell is reused only when they match).
_CELL_KEYS = ("dataset", "method", "shots", "seed", "template", "verbalizer", "backbone", "train", "prompt_encoder",
              "lr", "steps", "batch_size", "eval_every", "patience", "weight_decay", "warmup", "max_length", "limit_test")


@dataclass
class CompareConfig:
    datasets: list[str] = field(default_factory=lambda: ["mr", "cr", "trec"])
    methods: list[str] = field(default_factory=lambda: list(METHOD_NAMES))
    shots: int = 16
    seeds: list[int] = field(default_factory=lambda: list(LMBFF_SEEDS))
    steps: int = 80
    batch_size: int = 8
    eval_every: int = 10
    patience: int = 0
    lr: dict[str, float] = field(default_factory=dict)  # per-method override; missing: the method's default
    train: dict[str, str] = field(default_factory=dict)  # per-method override of all/prompt (hybrid)
    templates: dict[str, str] = field(default_factory=dict)  # per-method template override
    verbalizer: str | None = None
    backbone: str | None = None
    max_length: int = 128
    limit_test: int | None = None
    device: str = "auto"
    curve: bool = True
    curve_datasets: list[str] | None = None  # None: ["mr"] if mr is in the grid, else the first data set
    curve_shots: list[int] = field(default_factory=lambda: list(CURVE_SHOTS))
    curve_methods: list[str] | None = None  # None: the grid's methods
    kind: str = "prompting-compare"

    def cell_config(self, dataset: str, method: str, shots: int, seed: int) -> RunConfig:
        return RunConfig(
            dataset=dataset, method=method, shots=shots, seed=seed,
            template=self.templates.get(method), verbalizer=self.verbalizer, backbone=self.backbone,
            train=self.train.get(method), lr=self.lr.get(method), steps=self.steps, batch_size=self.batch_size,
            eval_every=self.eval_every, patience=self.patience, max_length=self.max_length,
            limit_test=self.limit_test, device=self.device, save_model=False, num_examples=4,
        )

    def validate(self) -> None:
        if not self.datasets:
            raise UserError("no data set given; pass e.g. --datasets mr,cr,trec")
        if not self.methods:
            raise UserError("no method given; pass e.g. --methods zero-shot,prompt-ft")
        for m in list(self.methods) + list(self.curve_methods or []):
            get_method(m)
        if not self.seeds:
            raise UserError("no seed given; pass e.g. --seeds 13,21,42,87,100")
        if self.curve_datasets is None:
            self.curve_datasets = ["mr"] if "mr" in self.datasets else self.datasets[:1]
        if self.shots < 1:
            raise UserError(f"--shots must be at least 1 for the few-shot grid, got {self.shots}")
        if self.curve and any(k < 1 for k in self.curve_shots):
            raise UserError(f"--curve-shots must all be >= 1, got {self.curve_shots}")
        for name, d in (("datasets", self.datasets), ("methods", self.methods), ("seeds", self.seeds)):
            if len(set(d)) != len(d):
                raise UserError(f"--{name} lists an entry twice: {d}")


def cell_dir(out: Path, dataset: str, method: str, shots: int, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(dataset)).name)
    return out / "cells" / safe / f"k{shots}" / method / f"seed{seed}"


def _finished(path: Path, cfg: RunConfig) -> dict | None:
    """The results of a finished cell run with the same settings, else None."""
    if not (path / "DONE").exists() or not (path / "results.json").exists() or not (path / "config.json").exists():
        return None
    try:
        old = json.loads((path / "config.json").read_text())
        res = json.loads((path / "results.json").read_text())
    except json.JSONDecodeError:
        return None
    new = asdict(cfg)
    method = get_method(cfg.method)
    # the old config holds resolved values: resolve the method defaults the same way
    if new["lr"] is None:
        new["lr"] = method.lr
    if new["train"] is None:
        new["train"] = method.train
    if new["template"] is None and method.kind == "prompt":
        new["template"] = default_template(cfg.dataset, method.style, pair=bool(old.get("pair")))
    if method.name == "zero-shot":
        new["train"] = None
    for k in _CELL_KEYS:
        if old.get(k) != new[k]:
            return None
    return res


def mean_std(values: list[float]) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def run_compare(cc: CompareConfig, out: str | Path, quiet: bool = False) -> dict:
    """Run (or resume) the grid and the learning curve; write the outputs; return compare.json's dict."""
    from .training import fresh_backbone, get_accelerator, load_data, train_run

    cc.validate()
    out = Path(out)
    acc = get_accelerator(cc.device)
    run = RunDir(out, enabled=acc.is_main_process)
    if (out / "DONE").exists() and acc.is_main_process:
        (out / "DONE").unlink()
    run.save_config({**asdict(cc), "description": (
        f"{', '.join(cc.methods)} on {', '.join(cc.datasets)}, K={cc.shots} per class, seeds {cc.seeds}")})

    datasets: dict[str, Any] = {}

    def data(name):
        if name not in datasets:
            datasets[name] = load_data(name)
        return datasets[name]

    # The cells: the main grid, then the learning curve's extra K values.
    cells = [(d, m, cc.shots, s) for d in cc.datasets for s in cc.seeds for m in cc.methods]
    curve_methods = list(cc.curve_methods or cc.methods)
    if cc.curve:
        for d in cc.curve_datasets:
            for k in cc.curve_shots:
                for s in cc.seeds:
                    for m in curve_methods:
                        if (d, m, k, s) not in cells:
                            cells.append((d, m, k, s))
    results: dict[tuple, dict] = {}
    t0 = time.time()
    done_before = 0
    for i, (d, m, k, s) in enumerate(cells, 1):
        cfg = cc.cell_config(d, m, k, s)
        path = cell_dir(out, d, m, k, s)
        res = _finished(path, cfg)
        if res is not None:
            done_before += 1
        else:
            tc = time.time()
            res = train_run(cfg, path, ds=data(d), backbone=fresh_backbone(cc.backbone), quiet=True,
                            extra_config={"compare": str(out)})
            run.log_metrics(i, cell=f"{d}/{m}/k{k}/seed{s}", test_accuracy=res["test_accuracy"],
                            dev_accuracy=res["dev_accuracy"], seconds=round(time.time() - tc, 2))
            if not quiet:
                log(f"[{i}/{len(cells)}] {d} {m} K={k} seed {s}: test {res['test_accuracy']:.4f} "
                    f"(dev {res['dev_accuracy']:.3f}, {time.time() - tc:.1f} s)")
        results[(d, m, k, s)] = res
        # Keep the tables current while the grid runs (the main grid's cells come first).
        if i == len(cells) or (d, m, k, s) == (d, cc.methods[-1], cc.shots, cc.seeds[-1]):
            if acc.is_main_process:
                summary = write_compare(cc, out, results, data)
    if done_before and not quiet:
        log(f"resumed: {done_before} of {len(cells)} cells were already finished in {out}")
    if acc.is_main_process:
        summary = write_compare(cc, out, results, data)
        if cc.curve:
            write_learning_curve(cc, out, results, data, curve_methods)
        summary["seconds"] = round(time.time() - t0, 1)
        run.mark_done()
    acc.wait_for_everyone()
    return summary if acc.is_main_process else {}


def _fmt(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.1f} ({100 * std:.1f})"


def summarise(cc: CompareConfig, results: dict, data) -> dict:
    rows, majority = [], {}
    for d in cc.datasets:
        test = data(d).split("test").examples
        if cc.limit_test is not None:
            from .training import limit_examples

            test = limit_examples(test, cc.limit_test)
        majority[d] = majority_baseline(test)["accuracy"]
        for m in cc.methods:
            accs = [results[(d, m, cc.shots, s)]["test_accuracy"] for s in cc.seeds if (d, m, cc.shots, s) in results]
            if not accs:
                continue
            mean, std = mean_std(accs)
            secs = [results[(d, m, cc.shots, s)].get("train_seconds", float("nan")) for s in cc.seeds
                    if (d, m, cc.shots, s) in results]
            rows.append({"dataset": d, "method": m, "mean": mean, "std": std, "n": len(accs),
                         "accuracies": accs, "train_seconds": statistics.fmean(secs)})
    summary: dict[str, Any] = {"kind": "prompting-compare-results", "shots": cc.shots, "seeds": list(cc.seeds),
                               "metric": "test accuracy", "table": rows,
                               "majority": [{"dataset": d, "accuracy": a} for d, a in majority.items()]}
    by = {(r["dataset"], r["method"]): r for r in rows}
    targets = {}
    for d in cc.datasets:
        if ("zero-shot" in cc.methods) and (d, "zero-shot") in by:
            targets[f"{d}: zero-shot minus majority (points)"] = 100 * (by[(d, "zero-shot")]["mean"] - majority[d])
        if (d, "prompt-ft") in by and (d, "finetune") in by:
            targets[f"{d}: prompt-ft minus finetune (points)"] = 100 * (by[(d, "prompt-ft")]["mean"] - by[(d, "finetune")]["mean"])
    summary["margins"] = [{"comparison": k, "points": v} for k, v in targets.items()]
    return summary


def write_compare(cc: CompareConfig, out: Path, results: dict, data) -> dict:
    summary = summarise(cc, results, data)
    run = RunDir(out)
    run.save_json("compare.json", summary)
    (out / "compare.md").write_text(markdown_table(cc, summary), encoding="utf-8")
    draw_compare(cc, summary, out / "compare.png")
    return summary


def markdown_table(cc: CompareConfig, summary: dict) -> str:
    by = {(r["dataset"], r["method"]): r for r in summary["table"]}
    maj = {r["dataset"]: r["accuracy"] for r in summary["majority"]}
    head = "| method | " + " | ".join(cc.datasets) + " |\n"
    head += "| --- | " + " | ".join("---:" for _ in cc.datasets) + " |\n"
    lines = ["| majority class | " + " | ".join(f"{100 * maj[d]:.1f}" for d in cc.datasets) + " |"]
    for m in cc.methods:
        cells = []
        for d in cc.datasets:
            r = by.get((d, m))
            cells.append(_fmt(r["mean"], r["std"]) if r else "–")
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    n = max((r["n"] for r in summary["table"]), default=0)
    text = (f"Test accuracy (%), K = {cc.shots} examples per class, mean (std) over {n} seed(s) "
            f"{', '.join(map(str, cc.seeds))}" + (f", first {cc.limit_test} test examples" if cc.limit_test else
                                                 ", full test split") + ".\n\n")
    text += head + "\n".join(lines) + "\n"
    if summary.get("margins"):
        text += "\n" + "\n".join(f"- {m['comparison']}: {m['points']:+.1f}" for m in summary["margins"]) + "\n"
    return text


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


COLORS = {"zero-shot": "#9e9e9e", "prompt-ft": "#1f77b4", "soft": "#2ca02c", "hybrid": "#9467bd", "finetune": "#d62728"}


def draw_compare(cc: CompareConfig, summary: dict, path: Path) -> None:
    plt = _plt()
    by = {(r["dataset"], r["method"]): r for r in summary["table"]}
    maj = {r["dataset"]: r["accuracy"] for r in summary["majority"]}
    n_m = len(cc.methods)
    width = 0.8 / n_m
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(cc.datasets) + 2), 3.6))
    for j, m in enumerate(cc.methods):
        xs, ys, es = [], [], []
        for i, d in enumerate(cc.datasets):
            r = by.get((d, m))
            if r:
                xs.append(i - 0.4 + width * (j + 0.5))
                ys.append(100 * r["mean"])
                es.append(100 * r["std"])
        ax.bar(xs, ys, width, yerr=es, capsize=2, label=m, color=COLORS.get(m), edgecolor="black", linewidth=0.4)
    for i, d in enumerate(cc.datasets):
        ax.hlines(100 * maj[d], i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1,
                  label="majority class" if i == 0 else None)
    ax.set_xticks(range(len(cc.datasets)))
    ax.set_xticklabels([d.upper() if len(d) <= 5 else d for d in cc.datasets])
    ax.set_ylabel("test accuracy (%)")
    n = max((r["n"] for r in summary["table"]), default=0)
    ax.set_title(f"K = {cc.shots} per class, mean ± std over {n} seed(s)", fontsize=10)
    lo = min([100 * v for v in maj.values()] + [100 * r["mean"] - 100 * r["std"] for r in summary["table"]] + [100])
    ax.set_ylim(max(0, math.floor(lo / 10) * 10 - 10), 100)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_learning_curve(cc: CompareConfig, out: Path, results: dict, data, methods: list[str]) -> dict:
    shots = sorted(set(cc.curve_shots))
    curves = []
    maj = {}
    for d in cc.curve_datasets:
        test = data(d).split("test").examples
        if cc.limit_test is not None:
            from .training import limit_examples

            test = limit_examples(test, cc.limit_test)
        maj[d] = majority_baseline(test)["accuracy"]
        for m in methods:
            means, stds, ns = [], [], []
            for k in shots:
                accs = [results[(d, m, k, s)]["test_accuracy"] for s in cc.seeds if (d, m, k, s) in results]
                mean, std = mean_std(accs)
                means.append(mean)
                stds.append(std)
                ns.append(len(accs))
            curves.append({"dataset": d, "method": m, "shots": shots, "mean": means, "std": stds, "n": ns})
    obj = {"kind": "prompting-learning-curve", "metric": "test accuracy", "seeds": list(cc.seeds),
           "curves": curves, "majority": [{"dataset": d, "accuracy": a} for d, a in maj.items()]}
    RunDir(out).save_json("learning_curve.json", obj)
    plt = _plt()
    fig, axes = plt.subplots(1, len(cc.curve_datasets), figsize=(4.6 * len(cc.curve_datasets), 3.4), squeeze=False)
    for ax, d in zip(axes[0], cc.curve_datasets):
        for c in (c for c in curves if c["dataset"] == d):
            ys = [100 * v for v in c["mean"]]
            es = [100 * v for v in c["std"]]
            ax.errorbar(shots, ys, yerr=es, marker="o", capsize=3, label=c["method"], color=COLORS.get(c["method"]))
        ax.axhline(100 * maj[d], color="black", linestyle="--", linewidth=1, label="majority class")
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_xlabel("K (training examples per class)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{d.upper()}: accuracy vs K ({len(cc.seeds)} seed(s))", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "learning_curve.png", dpi=110)
    plt.close(fig)
    return obj
