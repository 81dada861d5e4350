"""The comparison: data sets × rows × seeds at K shots, plus a learning curve over K.

A row is a method plus options (`prompt-ft+demos-similar`, `pet-distilled`: rows.py); rows
that differ only in the number they read share a run (`pet` and `pet-distilled`).
`run_compare(CompareConfig, out)` runs every cell with `training.train_run` (one run folder per
cell under `out/cells/DATASET/kK/RUN/seedS/`, RUN the row's run name), then writes into `out/`:

- `config.json` ("kind": "prompting-compare"), `metrics.jsonl` (one line per finished cell; with
  `log_with`, these lines and every cell's own also go to TensorBoard or W&B: tracking.py);
- `compare.json`: per data set and row the test accuracies of every seed, their mean and
  standard deviation (sample std, n - 1), each row's mean over the data sets, the
  majority-class row, and the MR targets;
- `compare.md` and `compare.png`: its table and bar chart (`render.py`);
- `learning_curve.json` and `learning_curve.png`: test accuracy against K (4, 8, 16, 32 by
  default) for the curve data sets (MR by default), mean ± std over the same seeds;
- `DONE`.

Resuming: a cell whose folder holds `DONE` and a `results.json` written with the same
settings is read back, not rerun, so an interrupted comparison picks up where it stopped.
`shard=(i, n)` runs only the i-th of n shares of the cells (whole groups of one data set, K
and seed, dealt round-robin) and writes no summary: n such processes run a comparison in parallel
into one folder, and a last run without a shard, which reuses every cell, writes the tables.
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

from ...progress import log
from ...rundir import CONFIG_FILE, DONE_FILE, RunDir
from ...tracking import end_tracking, start_tracking
from ..models.backbone import fresh_backbone
from ..run.config import RunConfig
from .config import CompareConfig
from ...training_setup import get_accelerator
from ..run.fewshot import majority_baseline
from .render import draw_compare, draw_learning_curve, markdown_table
from .rows import parse_row
from ..run.data import limit_examples, load_data
from ..run.training import train_run

Cell = tuple[str, str, int, int]  # (data set, run, K, seed); run: a row's run (rows.py)

# Config fields that do not change a cell's result: a finished cell is reused whatever they are.
_NOT_RESULT_KEYS = ("device", "eval_batch_size", "num_examples", "save_model", "kind", "log_with")


def run_compare(cc: CompareConfig, out: str | Path, quiet: bool = False, shard: tuple[int, int] | None = None) -> dict:
    """Run (or resume) the comparison and the learning curve; write the outputs; return compare.json's dict.
    With `shard=(i, n)`: run this process's share of the cells only, and write no summary."""
    cc.validate()
    out = Path(out)
    main = get_accelerator(cc.device).is_main_process and shard is None
    run = RunDir(out, enabled=main)
    if main:
        (out / DONE_FILE).unlink(missing_ok=True)
    run.save_config({**asdict(cc), "description": (
        f"{', '.join(cc.rows)} on {', '.join(cc.datasets)}, K={cc.shots} per class, seeds {cc.seeds}")})
    start_tracking(run, cc.log_with)  # the comparison's lines; every cell run tracks its own
    data = functools.lru_cache(maxsize=None)(load_data)
    cells = comparison_cells(cc) if shard is None else shard_cells(comparison_cells(cc), *shard)
    last = (parse_row(cc.rows[-1]).run, cc.shots, cc.seeds[-1])
    results: dict[Cell, dict] = {}
    t0, reused = time.time(), 0
    for i, cell in enumerate(cells, 1):
        res = finished_results(cell_dir(out, *cell), cc.cell_config(*cell))
        reused += res is not None
        results[cell] = res if res is not None else run_cell(cc, cell, out, data, run, (i, len(cells)), quiet)
        if main and cell[1:] == last:  # a data set's main comparison is complete
            write_compare(cc, out, results, data)
    if reused and not quiet:
        log(f"resumed: {reused} of {len(cells)} cells were already finished in {out}")
    summary: dict = {}
    if main:
        summary = write_compare(cc, out, results, data)
        if cc.curve:
            write_learning_curve(cc, out, results, data)
        summary["seconds"] = round(time.time() - t0, 1)
        run.mark_done()
        end_tracking(run)
    get_accelerator(cc.device).wait_for_everyone()
    return summary


def comparison_cells(cc: CompareConfig) -> list[Cell]:
    """The main comparison's cells, then the learning curve's further K values; one cell per run
    (rows that share a run share its cell)."""
    cells = [(d, parse_row(m).run, cc.shots, s) for d in cc.datasets for s in cc.seeds for m in cc.rows]
    if cc.curve:
        cells += [(d, parse_row(m).run, k, s) for d in cc.curve_datasets for k in cc.curve_shots for s in cc.seeds
                  for m in curve_rows(cc)]
    return list(dict.fromkeys(cells))


def shard_cells(cells: list[Cell], index: int, count: int) -> list[Cell]:
    """The `index`-th of `count` shares: the groups of cells with one data set, K and seed, dealt
    round-robin in comparison order (a group's runs stay together)."""
    groups = list(dict.fromkeys((d, k, s) for d, _, k, s in cells))
    mine = {g for i, g in enumerate(groups) if i % count == index}
    return [c for c in cells if (c[0], c[2], c[3]) in mine]


def curve_rows(cc: CompareConfig) -> list[str]:
    return list(cc.curve_rows or cc.rows)


def cell_dir(out: Path, dataset: str, method: str, shots: int, seed: int) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(str(dataset)).name)
    return out / "cells" / safe / f"k{shots}" / method / f"seed{seed}"


def run_cell(cc: CompareConfig, cell: Cell, out: Path, data: Callable, run: RunDir, position: tuple[int, int],
             quiet: bool) -> dict:
    """Train and test one cell in its folder; log it as line `position[0]` of the comparison's metrics."""
    d, m, k, s = cell
    t = time.time()
    res = train_run(cc.cell_config(*cell), cell_dir(out, *cell), ds=data(d), backbone=fresh_backbone(cc.backbone),
                    quiet=True, extra_config={"compare": str(out)})
    seconds = time.time() - t
    run.log_metrics(position[0], cell=f"{d}/{m}/k{k}/seed{s}", test_accuracy=res["test_accuracy"],
                    dev_accuracy=res["dev_accuracy"], seconds=round(seconds, 2))
    if not quiet:
        log(f"[{position[0]}/{position[1]}] {d} {m} K={k} seed {s}: test {res['test_accuracy']:.4f} "
            f"(dev {res['dev_accuracy']:.3f}, {seconds:.1f} s)")
    return res


def finished_results(path: Path, cfg: RunConfig) -> dict | None:
    """The results of a finished cell run with the same settings, else None."""
    if not all((path / name).exists() for name in (DONE_FILE, "results.json", CONFIG_FILE)):
        return None
    try:
        old = json.loads((path / CONFIG_FILE).read_text())
        res = json.loads((path / "results.json").read_text())
    except json.JSONDecodeError:
        return None
    # the old config holds resolved values: resolve the method defaults the same way
    new = asdict(cfg.resolved(pair=bool(old.get("pair"))))
    if any(old.get(k) != v for k, v in new.items() if k not in _NOT_RESULT_KEYS):
        return None
    return res


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1; 0 for one value) of the non-NaN values."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return float("nan"), float("nan")
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def majority_accuracy(cc: CompareConfig, dataset: str, data: Callable) -> float:
    """The majority-class accuracy on the test examples the cells use."""
    return majority_baseline(limit_examples(data(dataset).split("test").examples, cc.limit_test))["accuracy"]


def row_results(results: dict[Cell, dict], row_name: str, dataset: str, shots: int, seeds) -> tuple[list, list]:
    """(the finished cells' results, the row's number in each) for one row, data set and K."""
    row = parse_row(row_name)
    done = [results[(dataset, row.run, shots, s)] for s in seeds if (dataset, row.run, shots, s) in results]
    return done, [r.get(row.metric, math.nan) for r in done]


def summarise(cc: CompareConfig, results: dict[Cell, dict], data: Callable) -> dict:
    """compare.json: per data set and row, the seeds' accuracies, mean and std; per row the mean
    over the data sets (when it has all of them); the majority class; and the margins the MR
    targets are stated in."""
    rows, majority = [], {d: majority_accuracy(cc, d, data) for d in cc.datasets}
    for d in cc.datasets:
        for m in cc.rows:
            done, accs = row_results(results, m, d, cc.shots, cc.seeds)
            if not done:
                continue
            mean, std = mean_std(accs)
            rows.append({"dataset": d, "method": m, "mean": mean, "std": std, "n": len(accs), "accuracies": accs,
                         "train_seconds": statistics.fmean(r.get("train_seconds", float("nan")) for r in done)})
    by = {(r["dataset"], r["method"]): r for r in rows}
    averages = [{"method": m, "mean": statistics.fmean(by[(d, m)]["mean"] for d in cc.datasets)}
                for m in cc.rows if all((d, m) in by for d in cc.datasets)]
    margins = []
    for d in cc.datasets:
        if (d, "zero-shot") in by:
            margins.append((f"{d}: zero-shot minus majority (points)", by[(d, "zero-shot")]["mean"] - majority[d]))
        if (d, "prompt-ft") in by and (d, "finetune") in by:
            margins.append((f"{d}: prompt-ft minus finetune (points)", by[(d, "prompt-ft")]["mean"] - by[(d, "finetune")]["mean"]))
    return {"kind": "prompting-compare-results", "shots": cc.shots, "seeds": list(cc.seeds), "metric": "test accuracy",
            "table": rows, "averages": averages,
            "majority": [{"dataset": d, "accuracy": a} for d, a in majority.items()],
            "margins": [{"comparison": c, "points": 100 * v} for c, v in margins]}


def write_compare(cc: CompareConfig, out: Path, results: dict[Cell, dict], data: Callable) -> dict:
    summary = summarise(cc, results, data)
    RunDir(out).save_json("compare.json", summary)
    (out / "compare.md").write_text(markdown_table(cc, summary), encoding="utf-8")
    draw_compare(cc, summary, out / "compare.png")
    return summary


def learning_curve(cc: CompareConfig, results: dict[Cell, dict], data: Callable) -> dict:
    """learning_curve.json: per curve data set and method, mean and std of the test accuracy at each K."""
    shots = sorted(set(cc.curve_shots))
    curves = []
    for d in cc.curve_datasets:
        for m in curve_rows(cc):
            per_k = [row_results(results, m, d, k, cc.seeds)[1] for k in shots]
            stats = [mean_std(accs) for accs in per_k]
            ns = [len(accs) for accs in per_k]
            curves.append({"dataset": d, "method": m, "shots": shots, "mean": [a for a, _ in stats],
                           "std": [b for _, b in stats], "n": ns})
    return {"kind": "prompting-learning-curve", "metric": "test accuracy", "seeds": list(cc.seeds), "curves": curves,
            "majority": [{"dataset": d, "accuracy": majority_accuracy(cc, d, data)} for d in cc.curve_datasets]}


def write_learning_curve(cc: CompareConfig, out: Path, results: dict[Cell, dict], data: Callable) -> dict:
    curve = learning_curve(cc, results, data)
    RunDir(out).save_json("learning_curve.json", curve)
    draw_learning_curve(curve, out / "learning_curve.png")
    return curve
