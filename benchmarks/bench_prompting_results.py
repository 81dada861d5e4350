"""The prompting results: the K = 16 table on MR, CR, SUBJ, TREC (5 seeds; the seven methods that
train one model and the embedding-logreg reference), the MR learning curve, and the zero-shot
label-word scan that chose the sentiment verbalizer.

    python benchmarks/bench_prompting_results.py            # everything (hours on a busy 2-core CPU)
    python benchmarks/bench_prompting_results.py --words    # only the label-word scan (a minute)
    python benchmarks/bench_prompting_results.py --methods  # the new rows' comparison (2 processes, one thread each)

`--methods` runs the rows of the full methods (demonstrations, automatic label words, PET's
ensemble and distilled model, calibrated zero-shot) on MR, CR, SUBJ, TREC, K = 16, the five
seeds, into runs/prompting_methods: `--processes` shards (`compare --shard I/N`) fill the cells
in parallel, a last pass reuses them and writes the table; then the learning curve on MR
(K = 4, 8, 16, 32) of the row with the best mean over the four data sets, sharded the same way.
It writes benchmarks/results/prompting_methods.{md,json,png} and
prompting_methods_curve.{json,png}.

The comparison is `diffprompt prompting compare` with every method's own budget (the registry's,
batch 8, dev-best model choice, full test splits) into runs/prompting_results, in `--processes`
shards like `--methods`; finished cells there are reused, so the same command resumes an
interrupted run.

Writes benchmarks/results/prompting_results.{md,json,png}, prompting_learning_curve.{json,png}
and prompting_zero_shot_words.{md,json}.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
ROWS = ["zero-shot", "prompt-ft", "soft", "hybrid", "prefix-tuning", "p-tuning-v2", "finetune", "embedding-logreg"]
COMPARE_ARGS = ["prompting", "compare", "--datasets", "mr,cr,subj,trec", "--rows", ",".join(ROWS), "--shots", "16",
                "--seeds", "13,21,42,87,100", "--curve-datasets", "mr", "--curve-shots", "4,8,16,32",
                "--curve-rows", "zero-shot,prompt-ft,soft,hybrid,finetune", "--threads", "1"]

NEW_ROWS = ["prompt-ft+demos-random", "prompt-ft+demos-similar", "prompt-ft+auto", "pet", "pet-distilled",
            "zero-shot+cal-content-free", "zero-shot+cal-domain"]
METHODS_ARGS = ["prompting", "compare", "--datasets", "mr,cr,subj,trec", "--rows", ",".join(NEW_ROWS),
                "--shots", "16", "--seeds", "13,21,42,87,100", "--threads", "1"]

TEMPLATES = ["{x} It was {mask}.", "{x} This movie is {mask}.", "{mask} : {x}"]
WORDS = [("terrible", "great"), ("bad", "good"), ("awful", "great"), ("terrible", "good"), ("bad", "great"),
         ("boring", "great"), ("poor", "excellent"), ("horrible", "wonderful"), ("worst", "best"), ("dull", "fun")]


def word_scan() -> dict:
    """Zero-shot accuracy of label-word pairs and templates on the MR *dev* split (never test)."""
    import torch
    import torch.nn.functional as F

    from diffprompt.data import load_text
    from diffprompt.prompting import PromptClassifier, load_backbone

    torch.set_num_threads(1)
    bb, tok = load_backbone()
    dev = load_text("mr").split("dev").examples
    y = torch.tensor([e.label for e in dev])
    majority = max(y.bincount().tolist()) / len(y)
    rows = []
    for t in TEMPLATES:
        m = PromptClassifier(bb, tok, t, {0: ["bad"], 1: ["good"]}).eval()
        with torch.no_grad():
            logp = torch.cat([F.log_softmax(m.mask_logits(m.encode([e.text for e in dev[i:i + 100]])).float(), -1)
                              for i in range(0, len(dev), 100)])
        for neg, pos in WORDS:
            ids = tok.convert_tokens_to_ids([neg, pos])
            acc = (logp[:, ids].argmax(-1) == y).float().mean().item()
            rows.append({"template": t, "negative": neg, "positive": pos, "dev_accuracy": acc})
    out = {"split": "mr dev", "n": len(dev), "majority": majority, "rows": rows}
    (RESULTS / "prompting_zero_shot_words.json").write_text(json.dumps(out, indent=2))
    lines = [f"Zero-shot accuracy (%) on the MR dev split ({len(dev)} examples, majority class {100 * majority:.1f} %), "
             "packaged BERT-tiny, by template and label words (negative / positive).", "",
             "| label words | " + " | ".join(f"`{t}`" for t in TEMPLATES) + " |",
             "| --- | " + " | ".join("---:" for _ in TEMPLATES) + " |"]
    for neg, pos in WORDS:
        accs = [next(r["dev_accuracy"] for r in rows if r["template"] == t and r["negative"] == neg and r["positive"] == pos)
                for t in TEMPLATES]
        lines.append(f"| {neg} / {pos} | " + " | ".join(f"{100 * a:.1f}" for a in accs) + " |")
    (RESULTS / "prompting_zero_shot_words.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return out


def compare(out: str, processes: int) -> None:
    t0 = time.time()
    sharded(COMPARE_ARGS + ["--out", out], processes)
    src = Path(out)
    shutil.copy(src / "compare.md", RESULTS / "prompting_results.md")
    shutil.copy(src / "compare.json", RESULTS / "prompting_results.json")
    shutil.copy(src / "compare.png", RESULTS / "prompting_results.png")
    shutil.copy(src / "learning_curve.json", RESULTS / "prompting_learning_curve.json")
    shutil.copy(src / "learning_curve.png", RESULTS / "prompting_learning_curve.png")
    print(f"copied to {RESULTS} ({time.time() - t0:.0f} s)")


def sharded(args: list[str], processes: int) -> None:
    """`diffprompt ARGS --shard I/N` in `processes` processes of one thread each, then ARGS alone
    (every cell reused: it writes the tables)."""
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "diffprompt", *args, "--shard", f"{i}/{processes}"], env=env)
             for i in range(processes)]
    if any(p.wait() for p in procs):
        raise SystemExit("a shard failed; rerun the same command to resume")
    code = subprocess.call([sys.executable, "-m", "diffprompt", *args], env=env)
    if code:
        raise SystemExit(code)


def methods_comparison(out: str, processes: int) -> None:
    """The new rows' comparison, then the MR learning curve of the row with the best mean over the data sets."""
    t0 = time.time()
    sharded(METHODS_ARGS + ["--no-curve", "--out", out], processes)
    summary = json.loads((Path(out) / "compare.json").read_text())
    best = max(summary["averages"], key=lambda r: r["mean"])["method"]
    print(f"best new row over the four data sets: {best} ({100 * max(r['mean'] for r in summary['averages']):.1f} %)")
    sharded(METHODS_ARGS + ["--curve-datasets", "mr", "--curve-shots", "4,8,16,32", "--curve-rows", best,
                            "--out", out], processes)
    src = Path(out)
    for name, target in (("compare.md", "prompting_methods.md"), ("compare.json", "prompting_methods.json"),
                         ("compare.png", "prompting_methods.png"), ("learning_curve.json", "prompting_methods_curve.json"),
                         ("learning_curve.png", "prompting_methods_curve.png")):
        shutil.copy(src / name, RESULTS / target)
    print(f"copied to {RESULTS} ({time.time() - t0:.0f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--words", action="store_true", help="only the zero-shot label-word scan")
    ap.add_argument("--methods", action="store_true", help="only the new rows' comparison and its learning curve")
    ap.add_argument("--processes", type=int, default=2, help="processes of one thread each")
    ap.add_argument("--out", default=None, help="default: runs/prompting_results (--methods: runs/prompting_methods)")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.methods:
        methods_comparison(args.out or "runs/prompting_methods", args.processes)
        return
    word_scan()
    if not args.words:
        compare(args.out or "runs/prompting_results", args.processes)


if __name__ == "__main__":
    main()
