"""The paper-size DDPM on a lent GPU: Ho et al.'s 35.7 M-parameter CIFAR-10 U-Net (the `ddpm-cifar10`
preset) trained for a wall-clock budget in bf16, then its throughput and its FID.

    python benchmarks/gpu_paper_preset.py --dataset twemoji --minutes 7          # one GPU: ~10 min in all
    python benchmarks/gpu_paper_preset.py --dataset fashion-mnist --minutes 7
    python benchmarks/gpu_paper_preset.py --toy --dataset PATH --out runs/toy    # the same path on a CPU, seconds

A few minutes are a sliver of the paper's 800 000 steps, so three settings of the preset follow the
budget rather than the paper: 500 warm-up steps (the preset's 5 000 would take the whole run), EMA
decay 0.999 with warm-up (0.9999 averages over more steps than the run has) and DPM-Solver++(2M) with
20 steps for the samples (the preset samples with DDPM-1000). The evaluation is the project's
(`diffprompt.diffusion.evaluate`): n samples against the full test split, the real-data floor at the
same n. `--toy` swaps in a 2-level, 8-channel U-Net, 2 steps and 8 samples on the CPU: it checks the
whole path, not the numbers.

Writes `OUT/gpu_paper_preset.json` (steps, images/s, minutes, FID, floor, precision, recall, confident
share, device) and prints it; without `--toy` also `benchmarks/results/gpu_paper_preset_DATASET.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESET = "ddpm-cifar10"
SHORT_BUDGET = ["warmup_steps=500", "ema_decay=0.999", "ema_warmup=true", "sample_sampler=dpm++2m", "sample_steps=20",
                "log_every=50"]
TOY = ["model.base_channels=8", "model.channel_mults=[1, 2]", "model.num_res_blocks=1", "model.attention_resolutions=[]",
       "model.norm_groups=4", "num_timesteps=100", "sample_n=4", "sample_steps=3", "warmup_steps=1", "log_every=1"]


def train_and_evaluate(args) -> dict:
    """Train the preset for the budget, evaluate the EMA weights; the figures as one dict."""
    from diffprompt.diffusion import evaluate
    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train

    sets = SHORT_BUDGET + (TOY if args.toy else [])
    cfg = resolve_config(PRESET, sets, dataset=args.dataset, steps=args.max_steps, batch_size=args.batch_size,
                         device=args.device, mixed_precision=args.mixed_precision,
                         time_budget_s=args.minutes * 60.0, seed=args.seed)
    load, t0 = os.getloadavg()[0], time.perf_counter()
    run = train(cfg, out=Path(args.out))
    minutes = (time.perf_counter() - t0) / 60
    summary = json.loads((run / "train_summary.json").read_text())
    ev = evaluate(run, samplers=["dpm++2m:20"], n_samples=args.n, nll_images=0, batch_size=args.eval_batch_size,
                  device=args.device)
    row, floor = ev["samplers"][0], ev["real_floor"]
    return {"preset": PRESET, "dataset": args.dataset, "toy": args.toy, "mixed_precision": args.mixed_precision,
            "parameters": summary["parameters"],
            "steps": summary["steps"], "batch_size": cfg.batch_size, "images_per_s": summary["images_per_s"],
            "train_minutes_incl_startup": minutes, "fid": row["fid"], "floor_fid": floor["fid"],
            "fid_over_floor": row["fid"] / floor["fid"], "precision": row["precision"], "recall": row["recall"],
            "confident_share": row["confident_share"], "n_samples": args.n, "sampler": row["sampler"],
            "device": ev["device"], "machine": ev["machine"], "load_average_before": load,
            "load_average_after": os.getloadavg()[0], "run": str(run)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="twemoji", help="twemoji (32x32x3, the preset's) or fashion-mnist, or a folder")
    ap.add_argument("--minutes", type=float, default=7.0, help="training wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=100_000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--n", type=int, default=1000, help="samples for FID (and real images for the floor)")
    ap.add_argument("--eval-batch-size", type=int, default=500)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--mixed-precision", default="bf16", choices=("no", "fp16", "bf16"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--toy", action="store_true", help="a tiny U-Net, 2 steps, 8 samples on the CPU (tests)")
    ap.add_argument("--out", default=None, help="run folder (default runs/gpu-paper-preset-DATASET)")
    args = ap.parse_args()
    if args.toy:
        args.device, args.mixed_precision, args.max_steps, args.batch_size, args.n = "cpu", "no", 2, 8, 8
    args.out = args.out or f"runs/gpu-paper-preset-{Path(args.dataset).name}"
    results = train_and_evaluate(args)
    text = json.dumps(results, indent=2)
    (Path(args.out) / "gpu_paper_preset.json").write_text(text)
    if not args.toy:
        (RESULTS / f"gpu_paper_preset_{Path(args.dataset).name}.json").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
