"""Do random horizontal flips suit a data set? Training with flips shows the model the mirrored
images as if they were data, so they help only where a mirrored image looks like one of the set.

For each named set this scores, through its shipped feature network and against the full test split,
n training images as they are and the same n mirrored: FID, precision/recall, the feature network's
accuracy. A set whose mirrored images score like the plain ones (FID within the seed-to-seed spread of
the plain draw) keeps its distribution under flips; one whose FID or accuracy moves does not, and a
model trained with flips would be scored down for it. Also the share of images that are their own
mirror image to within 10 grey levels per pixel on average.

    .venv/bin/python benchmarks/bench_hflip_symmetry.py --datasets twemoji,fashion-mnist,mnist5k
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SELF_MIRROR_GREY_LEVELS = 10.0


def check(name: str, n: int, seeds: list[int]) -> dict:
    """Plain and mirrored training draws scored against the test split, one row per seed."""
    from diffprompt.data.images import load_images
    from diffprompt.data.splits import stratified_sample
    from diffprompt.diffusion.evaluation.feature_networks import feature_network
    from diffprompt.diffusion.evaluation.sample_scores import Reference

    data = load_images(name)
    train, test = data.split("train"), data.split("test")
    ref = Reference.of(feature_network(name), test.images, len(data.class_names), seed=0)
    rows = []
    for seed in seeds:
        idx = stratified_sample(train.labels, min(n, len(train)), seed=seed)  # the real-data floor's draw
        images, labels = train.images[idx], train.labels[idx]
        mirrored = np.ascontiguousarray(images[:, :, ::-1])
        for kind, x in (("plain", images), ("mirrored", mirrored)):
            s = ref.score(x, requested=labels)
            rows.append({"seed": seed, "kind": kind, "fid": s["fid"], "precision": s["precision"],
                         "recall": s["recall"], "accuracy": s["conditional_accuracy"]})
    gap = np.abs(train.images.astype(np.float32) - train.images[:, :, ::-1].astype(np.float32)).mean(axis=(1, 2, 3))
    return {"dataset": name, "n": int(min(n, len(train))), "test_n": len(test), "rows": rows,
            "self_mirror_share": float((gap <= SELF_MIRROR_GREY_LEVELS).mean()),
            "mean_mirror_gap": float(gap.mean())}


def render(results: list[dict], machine: str, command: str) -> str:
    lines = ["# Horizontal flips: mirrored training images against the test split", "",
             "Each row: n training images (the stratified draw of the real-data floor) scored against the full "
             "test split through the set's shipped feature network, as they are and mirrored. Accuracy: the "
             "feature network's, on the images' own labels. Self-mirror share: images within "
             f"{SELF_MIRROR_GREY_LEVELS:g} grey levels per pixel (mean) of their mirror image.", "",
             "| set | n | seed | FID plain | FID mirrored | precision plain / mirrored | recall plain / mirrored | "
             "accuracy plain / mirrored | self-mirror share |",
             "| --- | ---: | ---: | ---: | ---: | --- | --- | --- | ---: |"]
    for r in results:
        by = {(row["seed"], row["kind"]): row for row in r["rows"]}
        for seed in sorted({row["seed"] for row in r["rows"]}):
            p, m = by[(seed, "plain")], by[(seed, "mirrored")]
            lines.append(f"| {r['dataset']} | {r['n']} | {seed} | {p['fid']:.2f} | {m['fid']:.2f} | "
                         f"{p['precision']:.3f} / {m['precision']:.3f} | {p['recall']:.3f} / {m['recall']:.3f} | "
                         f"{p['accuracy']:.3f} / {m['accuracy']:.3f} | {r['self_mirror_share']:.3f} |")
    return "\n".join(lines + ["", f"Machine: {machine}.", "", f"Command: `{command}`", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="twemoji,fashion-mnist,mnist5k", help="comma-separated named image sets")
    ap.add_argument("--n", type=int, default=1000, help="training images per draw")
    ap.add_argument("--seeds", default="0,1", help="comma-separated draws")
    ap.add_argument("--name", default="hflip_symmetry", help="results file name (benchmarks/results/NAME.md)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    seeds = [int(s) for s in args.seeds.split(",")]
    before = os.getloadavg()[0]
    results = [check(name, args.n, seeds) for name in args.datasets.split(",")]
    from diffprompt.diffusion.evaluation.evaluate_model import machine_info

    info = machine_info()
    machine = (f"{info.get('cpu_model', info['processor'])}, {info['cpu_count']} cores, torch {info['torch']} "
               f"({info['torch_threads']} threads); load {before:.2f} before, {os.getloadavg()[0]:.2f} after")
    command = ".venv/bin/python benchmarks/bench_hflip_symmetry.py " + " ".join(
        f"--{k} {v}" for k, v in (("datasets", args.datasets), ("n", args.n), ("seeds", args.seeds)))
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    (RESULTS / f"{args.name}.md").write_text(render(results, machine, command))
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
