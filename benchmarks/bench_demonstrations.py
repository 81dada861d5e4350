"""Demonstrations on short reviews the grid has not seen (issue 19, section 4).

Builds a held-out binary sentiment set from the repository's own sets: every MR (film) and CR
(product) sentence of at most 12 words, balanced to 1500 per class (CR's 485 negatives and as
many positives, the rest from MR), written as a plain CSV the way a user would hand one in.
Then, for seeds 13, 21 and 42 at K = 16:

1. diagnostics of the demonstration draws, no training: the untrained prompt's test accuracy and
   the share of inputs it calls negative with random demonstrations in label order (LM-BFF's),
   reversed and shuffled order, and without; near-duplicates of an input in the pool
   (equal after case, punctuation and spaces are normalised), how often the pool example most
   similar to an input (packaged all-MiniLM-L6-v2, the input itself left out) has the input's
   class, for the training inputs (drawn with their own pool) and for the test inputs, and the
   longest query-plus-demonstrations input against `max_length` (truncation);
2. `prompting compare` of prompt-ft with no, random and similar demonstrations on the full test
   split; for each demonstration run, its test accuracy again with one demonstration set per
   input instead of the 16-set ensemble, and its dev accuracy before and after training.

    python benchmarks/bench_demonstrations.py   # ~15 min on 2 cores; nothing else may run beside it

Writes benchmarks/results/prompting_demos_short.{md,json}; the CSV goes to runs/short_reviews.csv.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
CSV = Path("runs/short_reviews.csv")
OUT = Path("runs/demos_short")
SEEDS = (13, 21, 42)
MAX_WORDS, PER_CLASS = 12, 1500
ROWS = ("prompt-ft", "prompt-ft+demos-random", "prompt-ft+demos-similar")


def build_set(path: Path = CSV) -> dict:
    """The CSV of short MR and CR sentences (text, label), balanced; returns its make-up."""
    from diffprompt.data import load_text

    short = {}
    for name in ("cr", "mr"):  # CR first: its negatives are the scarce ones
        ds = load_text(name)
        short[name] = [e for split in ds.splits.values() for e in split.examples if len(e.text.split()) <= MAX_WORDS]
    rng = random.Random("short-reviews")
    rows, counts = [], {}
    for label, name in enumerate(("negative", "positive")):
        cr = [e for e in short["cr"] if e.label == label]
        mr = [e for e in short["mr"] if e.label == label]
        n_cr = min(len(cr), sum(e.label == 0 for e in short["cr"]))  # as many CR positives as negatives
        take = rng.sample(cr, n_cr) + rng.sample(mr, PER_CLASS - n_cr)
        counts[name] = {"cr": n_cr, "mr": PER_CLASS - n_cr}
        rows += [(e.text, name) for e in take]
    rng.shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return {"path": str(path), "examples": len(rows), "max_words": MAX_WORDS, "by_class": counts}


def near_key(text: str) -> str:
    """A text with case, punctuation and spacing normalised away."""
    return " ".join(re.sub(r"[^\w]+", " ", text.casefold()).split())


def diagnostics(seed: int, encoder, tokenizer) -> dict:
    """The demonstration draws of one seed's few-shot set, before any training (see the module docstring)."""
    import torch

    from diffprompt.data.text import input_key
    from diffprompt.prompting.run.config import RunConfig
    from diffprompt.prompting.run.data import prepare_data

    data = prepare_data(RunConfig(dataset=str(CSV), shots=16, seed=seed))
    pool, test = data.few_shot.train, data.test
    keys = [near_key(e.text) for e in pool]
    dup_train = sum(sum(k == o for o in keys) > 1 for k in keys)
    dup_test = sum(near_key(e.text) in set(keys) for e in test)
    emb_pool = encoder.embed([e.text for e in pool])
    emb = dict(zip([e.text for e in pool + test], encoder.embed([e.text for e in pool + test])))

    def nearest_is_own_class(ex) -> bool:
        sims = emb_pool @ emb[ex.text]
        for i, e in enumerate(pool):  # never the input itself, as in the draws
            if input_key(e) == input_key(ex):
                sims[i] = -float("inf")
        return pool[int(torch.argmax(sims))].label == ex.label

    own_train = sum(map(nearest_is_own_class, pool)) / len(pool)
    own_test = sum(map(nearest_is_own_class, test)) / len(test)
    longest = max(len(tokenizer(e.text)["input_ids"]) for e in pool + test)
    return {"seed": seed, "pool": len(pool), "test": len(test), "near_duplicates_in_pool": dup_train,
            "test_inputs_with_a_near_duplicate_in_pool": dup_test, "nearest_own_class_train": own_train,
            "nearest_own_class_test": own_test, "longest_text_tokens": longest}


ORDERS = ("label", "reversed", "shuffled")  # the class order of each demonstration set (LM-BFF: label)


def zero_shot_with_demonstrations(seed: int, order: str) -> dict:
    """The untrained prompt with random demonstrations in the given class order: its test accuracy and
    the share of inputs it calls negative (without demonstrations for order "none")."""
    import random as _random

    from diffprompt.prompting.models.backbone import fresh_backbone
    from diffprompt.prompting.models.prompt_classifier import PromptClassifier
    from diffprompt.prompting.prompts.demonstrations import Demonstrations
    from diffprompt.prompting.run.classifier_factory import build_verbalizer
    from diffprompt.prompting.run.config import RunConfig
    from diffprompt.prompting.run.data import prepare_data
    from diffprompt.prompting.run.scoring import score

    class Ordered(Demonstrations):
        def draw(self, text, text_b, rng: _random.Random) -> list:
            demos = super().draw(text, text_b, rng)
            if order == "reversed":
                return demos[::-1]
            if order == "shuffled":
                rng.shuffle(demos)
            return demos

    cfg = RunConfig(dataset=str(CSV), method="zero-shot", shots=16, seed=seed).resolved()
    data = prepare_data(cfg)
    demos = None if order == "none" else Ordered(data.few_shot.train, len(data.class_names), "random", 16, seed)
    bb, tok = fresh_backbone(None)
    model = PromptClassifier(bb, tok, cfg.template, build_verbalizer(cfg, data.class_names), demos=demos).eval()
    pred = score(model, data.test).argmax(-1).tolist()
    return {"seed": seed, "order": order, "accuracy": sum(p == e.label for p, e in zip(pred, data.test)) / len(pred),
            "negative_share": pred.count(0) / len(pred)}


def compare() -> dict:
    from diffprompt.cli import main

    code = main(["prompting", "compare", "--datasets", str(CSV), "--rows", ",".join(ROWS), "--shots", "16",
                 "--seeds", ",".join(map(str, SEEDS)), "--no-curve", "--threads", "2", "--out", str(OUT)])
    if code:
        raise SystemExit(code)
    return json.loads((OUT / "compare.json").read_text())


def one_set_accuracy(cell_dir: Path, test_accuracy: float) -> float:
    """A comparison cell's test accuracy with one demonstration set per input instead of its
    ensemble: the cell is trained again with its model saved (the same seeded run: the test
    accuracy must come out the same), then rescored."""
    from dataclasses import fields

    from diffprompt.prompting.run.config import RunConfig
    from diffprompt.prompting.run.data import prepare_data
    from diffprompt.prompting.run.folder import load_run_model
    from diffprompt.prompting.run.scoring import score
    from diffprompt.prompting.run.training import train_run

    conf = json.loads((cell_dir / "config.json").read_text())
    cfg = RunConfig(**{f.name: conf[f.name] for f in fields(RunConfig) if f.name in conf})
    cfg.save_model = True
    again = train_run(cfg, cell_dir.parent / f"{cell_dir.name}-saved", quiet=True)
    if again["test_accuracy"] != test_accuracy:
        raise SystemExit(f"{cell_dir}: retrained to {again['test_accuracy']}, not {test_accuracy}")
    model, _ = load_run_model(cell_dir.parent / f"{cell_dir.name}-saved")
    model.demos.sets = 1
    test = prepare_data(cfg).test
    pred = score(model, test).argmax(-1).tolist()
    return sum(p == e.label for p, e in zip(pred, test)) / len(test)


def dev_curve(run_dir: Path) -> tuple[float, float, int]:
    """(dev accuracy at step 0, best dev accuracy, its step) from the run's metrics."""
    lines = [json.loads(m) for m in (run_dir / "metrics.jsonl").read_text().splitlines() if "dev_accuracy" in m]
    best = max(lines, key=lambda m: (m["dev_accuracy"], -m["step"]))
    return lines[0]["dev_accuracy"], best["dev_accuracy"], best["step"]


def render(made: dict, diag: list[dict], zero: list[dict], summary: dict, runs: list[dict], machine: str) -> str:
    lines = [f"Short reviews built from MR and CR (`python benchmarks/bench_demonstrations.py`): {made['examples']} "
             f"sentences of at most {MAX_WORDS} words, {made['by_class']}. K = 16, packaged BERT-tiny, prompt-ft's "
             f"budget. {machine}.", "",
             "**The draws, before training** (pool: the 2K training examples; nearest: the most similar pool "
             "example by all-MiniLM-L6-v2, the input itself left out):", "",
             "| seed | near-duplicates in the pool | test inputs with one in the pool | nearest has the input's class: "
             "training inputs | test inputs | longest text (tokens) |", "| ---: | ---: | ---: | ---: | ---: | ---: |"]
    for d in diag:
        lines.append(f"| {d['seed']} | {d['near_duplicates_in_pool']} of {d['pool']} | "
                     f"{d['test_inputs_with_a_near_duplicate_in_pool']} of {d['test']} | "
                     f"{100 * d['nearest_own_class_train']:.1f} % | {100 * d['nearest_own_class_test']:.1f} % | "
                     f"{d['longest_text_tokens']} |")
    lines += ["", "**Test accuracy (%)** (16-set ensemble as run; one set: the same model with one demonstration "
              "set per input; dev: the few-shot dev accuracy before training → the best, at its step):", "",
              "| row | seed | test | one set | dev |", "| --- | ---: | ---: | ---: | --- |"]
    for r in runs:
        one = f"{100 * r['one_set']:.1f}" if r.get("one_set") is not None else "–"
        lines.append(f"| {r['row']} | {r['seed']} | {100 * r['test']:.1f} | {one} | "
                     f"{r['dev_start']:.3f} → {r['dev_best']:.3f} (step {r['best_step']}) |")
    lines += ["", "**The untrained prompt with random demonstrations** (zero-shot; test accuracy % / share of test "
              "inputs called negative), by the class order of each demonstration set:", "",
              "| seed | " + " | ".join(("no demonstrations", *ORDERS)) + " |", "| ---: |" + " ---: |" * (len(ORDERS) + 1)]
    for s in SEEDS:
        cells = [next(z for z in zero if z["seed"] == s and z["order"] == o) for o in ("none", *ORDERS)]
        lines.append(f"| {s} | " + " | ".join(f"{100 * z['accuracy']:.1f} / {100 * z['negative_share']:.0f} %"
                                              for z in cells) + " |")
    lines += ["", "| row | mean test accuracy (%) | std |", "| --- | ---: | ---: |"]
    for row in summary["table"]:
        lines.append(f"| {row['method']} | {100 * row['mean']:.1f} | {100 * row['std']:.1f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    import torch

    from diffprompt.prompting.comparison.compare import cell_dir
    from diffprompt.prompting.comparison.rows import parse_row
    from diffprompt.prompting.models.backbone import load_backbone
    from diffprompt.prompting.models.sentence_encoder import SentenceEncoder

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)
    t0 = time.time()
    made = build_set()
    encoder, (_, tokenizer) = SentenceEncoder(), load_backbone(None)
    diag = [diagnostics(s, encoder, tokenizer) for s in SEEDS]
    zero = [zero_shot_with_demonstrations(s, o) for s in SEEDS for o in ("none", *ORDERS)]
    summary = compare()
    runs = []
    for row in ROWS:
        for s in SEEDS:
            folder = cell_dir(OUT, str(CSV), parse_row(row).run, 16, s)
            res = json.loads((folder / "results.json").read_text())
            start, best, step = dev_curve(folder)
            runs.append({"row": row, "seed": s, "test": res["test_accuracy"], "dev_start": start, "dev_best": best,
                         "best_step": step, "one_set": one_set_accuracy(folder, res["test_accuracy"]) if "demos" in row else None})
    from sweep_prompting_budgets import machine

    machine = f"Machine: {machine()}"
    out = {"set": made, "diagnostics": diag, "zero_shot_orders": zero, "runs": runs, "compare": summary["table"], "machine": machine,
           "seconds": round(time.time() - t0, 1)}
    (RESULTS / "prompting_demos_short.json").write_text(json.dumps(out, indent=2))
    text = render(made, diag, zero, summary, runs, machine)
    (RESULTS / "prompting_demos_short.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
