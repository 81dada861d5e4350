"""The frozen-backbone methods' budgets, chosen on dev data only (issue 19, section 1).

For `soft`, `hybrid`, `prefix-tuning` and `p-tuning-v2`, every combination of learning rate,
optimiser steps and prompt size below (and, for `soft` and `hybrid`, the budget they had before:
80 steps, dev every 10) is trained on MR, CR, SUBJ and TREC (K = 16, seeds 13 and
21), with the protocol of every run (model choice on the few-shot dev set, read every 50 steps),
and the chosen model is scored on the data set's **dev split** (294 to 1000 examples, disjoint
from the few-shot draw, which comes from the train split). The test split is never read.
The configuration with the best mean dev-split accuracy over the four data sets and two seeds
becomes the method's default in `prompting/methods/registry.py`.

    python benchmarks/sweep_prompting_budgets.py                # all cells (resumes from the jsonl)
    python benchmarks/sweep_prompting_budgets.py --summary-only # the table from the cells run so far

Cells run in 2 processes of one thread each (the machine's 2 cores; nothing else may run beside
it). Writes benchmarks/results/prompting_budget_sweep.{jsonl,md}.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from multiprocessing import get_context
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CELLS_FILE = RESULTS / "prompting_budget_sweep.jsonl"
DATASETS = ("mr", "cr", "subj", "trec")
SEEDS = (13, 21)
METHODS = ("soft", "hybrid", "prefix-tuning", "p-tuning-v2")
LRS = (1e-2, 3e-2, 1e-1)
STEPS = (400, 1000)
EVAL_EVERY = 50
# prompt size: soft tokens in the input (soft, hybrid) or prefix tokens per layer (deep methods)
SIZES = {"soft": ("words", 8), "hybrid": (2, 8), "prefix-tuning": (8, 16), "p-tuning-v2": (8, 16)}


def soft_template(method: str, dataset: str, size) -> str | None:
    """The template of a soft/hybrid cell: the method's default, or with `size` soft tokens."""
    from diffprompt.prompting.methods.defaults import default_template

    base = default_template(dataset, "soft" if method == "soft" else "hybrid")
    if size in ("words", 2):
        return base
    if method == "soft":  # the word-initialised tokens, then random ones up to `size`
        words = base[base.index("{soft=") + 6:].split("}")[0].split()
        return base.replace("{soft=", f"{{soft*{size - len(words)}}} {{soft=", 1)
    return base.replace("{soft*2}", f"{{soft*{size}}}")


class DevAsTest:
    """A data set whose "test" split is its dev split: the sweep scores dev, never test."""

    def __init__(self, ds):
        self.ds, self.name, self.class_names = ds, ds.name, ds.class_names

    def split(self, name: str):
        return self.ds.split("dev" if name == "test" else name)


# the budgets soft and hybrid had before this sweep (80 steps, dev every 10), measured the same way
BEFORE = {"soft": (1e-1, 80, "words", 10), "hybrid": (3e-2, 80, 2, 10)}


def configs(method: str) -> list[tuple]:
    """(lr, steps, size, eval_every) of every configuration of a method, the grid then the old budget."""
    grid = [(lr, steps, size, EVAL_EVERY) for lr, steps, size in itertools.product(LRS, STEPS, SIZES[method])]
    return grid + ([BEFORE[method]] if method in BEFORE else [])


def cells() -> list[dict]:
    """Every training cell, then zero-shot on each dev split (the level a trained prompt starts from)."""
    return [{"method": method, "lr": lr, "steps": steps, "size": size, "eval_every": every, "dataset": dataset,
             "seed": seed}
            for method in METHODS for lr, steps, size, every in configs(method)
            for dataset, seed in itertools.product(DATASETS, SEEDS)] + \
        [{"method": "zero-shot", "lr": 0.0, "steps": 0, "size": "-", "eval_every": 0, "dataset": d, "seed": SEEDS[0]}
         for d in DATASETS]


def key(cell: dict) -> str:
    fields = {k: cell[k] for k in ("method", "lr", "steps", "size", "dataset", "seed")}
    return json.dumps({**fields, "eval_every": cell.get("eval_every", EVAL_EVERY)}, sort_keys=True)


def run_cell(cell: dict) -> dict:
    import torch

    from diffprompt.data import load_text
    from diffprompt.prompting.methods.registry import get_method
    from diffprompt.prompting.run.config import RunConfig
    from diffprompt.prompting.run.training import train_run

    torch.set_num_threads(1)
    deep = get_method(cell["method"]).deep
    if cell["method"] == "zero-shot":
        cfg = RunConfig(dataset=cell["dataset"], method="zero-shot", seed=cell["seed"], shots=16, save_model=False)
    else:
        cfg = RunConfig(dataset=cell["dataset"], method=cell["method"], seed=cell["seed"], shots=16, lr=cell["lr"],
                        steps=cell["steps"], eval_every=cell.get("eval_every", EVAL_EVERY), save_model=False,
                        prefix_length=cell["size"] if deep else None,
                        template=None if deep else soft_template(cell["method"], cell["dataset"], cell["size"]))
    t0 = time.time()
    res = train_run(cfg, None, ds=DevAsTest(load_text(cell["dataset"])), quiet=True)
    return {**cell, "dev_split_accuracy": res["test_accuracy"], "fewshot_dev_accuracy": res["dev_accuracy"],
            "chosen_step": res["best_step"], "seconds": round(time.time() - t0, 1)}


def run_all(processes: int) -> None:
    done = {key(json.loads(line)) for line in CELLS_FILE.read_text().splitlines()} if CELLS_FILE.exists() else set()
    todo = [c for c in cells() if key(c) not in done]
    print(f"{len(todo)} cells to run ({len(done)} done)", flush=True)
    t0 = time.time()
    with get_context("spawn").Pool(processes) as pool, CELLS_FILE.open("a") as f:
        for i, row in enumerate(pool.imap_unordered(run_cell, todo), 1):
            f.write(json.dumps(row) + "\n")
            f.flush()
            if i % 10 == 0 or i == len(todo):
                print(f"{i}/{len(todo)} cells, {time.time() - t0:.0f} s", flush=True)


def machine() -> str:
    from diffprompt.diffusion.evaluation.evaluate_model import machine_info

    info = machine_info()
    return f"{info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores, torch {info['torch']}"


def summary() -> str:
    rows = [json.loads(line) for line in CELLS_FILE.read_text().splitlines()]
    lines = ["Frozen-backbone budgets chosen on dev data (`python benchmarks/sweep_prompting_budgets.py`): K = 16, "
             f"seeds {', '.join(map(str, SEEDS))}, model choice on the few-shot dev set every {EVAL_EVERY} steps, the "
             "chosen model scored on each data set's dev split (never test). Accuracy in %, mean over seeds. "
             f"Machine: {machine()}.", ""]
    zero = {r["dataset"]: r["dev_split_accuracy"] for r in rows if r["method"] == "zero-shot"}
    if len(zero) == len(DATASETS):
        lines += ["Zero-shot on the same dev splits (the hard template; where a prompt's training starts): "
                  + ", ".join(f"{d} {100 * zero[d]:.1f}" for d in DATASETS) + ".", ""]
    for method in METHODS:
        lines += [f"### {method}", "", "| lr | steps | dev every | size | " + " | ".join(DATASETS) + " | mean |",
                  "| ---: | ---: | ---: | --- | " + " | ".join("---:" for _ in DATASETS) + " | ---: |"]
        table = []
        for config in configs(method):
            mine = [r for r in rows if r["method"] == method
                    and (r["lr"], r["steps"], r["size"], r.get("eval_every", EVAL_EVERY)) == config]
            per = [[r["dev_split_accuracy"] for r in mine if r["dataset"] == d] for d in DATASETS]
            if any(not p for p in per):
                continue
            means = [sum(p) / len(p) for p in per]
            table.append((sum(means) / len(means), config, means))
        best = max(table, key=lambda t: t[0])[1] if table else None
        for mean, config, means in table:
            lr, steps, size, every = config
            mark = " **best**" if config == best else (" (before)" if config == BEFORE.get(method) else "")
            lines.append(f"| {lr:g} | {steps} | {every} | {size} | " + " | ".join(f"{100 * m:.1f}" for m in means)
                         + f" | {100 * mean:.1f}{mark} |")
        lines.append("")
    text = "\n".join(lines)
    (RESULTS / "prompting_budget_sweep.md").write_text(text + "\n")
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--processes", type=int, default=2)
    ap.add_argument("--summary-only", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if not args.summary_only:
        run_all(args.processes)
    print(summary())


if __name__ == "__main__":
    main()
