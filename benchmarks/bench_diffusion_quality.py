"""The shipped CPU checkpoint: train the tiny U-Net on MNIST 5k for a fixed wall-clock budget, then
evaluate it with `bench_diffusion_samplers.py` (every sampler at n = 1000, bits/dim, speed).

Usage (the shipped checkpoint was made by the first two commands, see benchmarks/README.md):
    .venv/bin/python benchmarks/bench_diffusion_quality.py --minutes 35 --ship
    .venv/bin/diffprompt diffusion train --resume runs/bench-ddpm-mnist5k --time-budget 2700
    .venv/bin/python benchmarks/bench_diffusion_quality.py --ship          # reuses the finished run

Writes the training loss curve to benchmarks/results/diffusion_quality_mnist5k_loss.png, the
evaluation to benchmarks/results/diffusion_quality_mnist5k.{json,md,png}, and with --ship the EMA
checkpoint to src/diffprompt/assets/ddpm-tiny-mnist5k.safetensors (+ .json).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def run_train(args) -> Path:
    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train

    out = Path(args.run)
    if (out / "DONE").exists():
        print(f"reusing finished training run {out}", flush=True)
        return out
    if out.exists():
        shutil.rmtree(out)
    cfg = resolve_config("ddpm-tiny-mnist", [f"ema_decay={args.ema_decay}", "log_every=25", "warmup_steps=100",
                                             "sample_n=64", "sample_steps=50"],
                         steps=args.max_steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device="cpu", time_budget_s=args.minutes * 60.0)
    return train(cfg, out=out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=35.0, help="training wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=200000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench-ddpm-mnist5k"))
    ap.add_argument("--ship", action="store_true", help="copy the EMA checkpoint into src/diffprompt/assets/")
    args = ap.parse_args()

    t0 = time.time()
    run = run_train(args)
    print(f"training done in {(time.time() - t0) / 60:.1f} min", flush=True)
    shutil.copy(run / "loss.png", RESULTS / "diffusion_quality_mnist5k_loss.png")
    if args.ship:
        assets = ROOT / "src" / "diffprompt" / "assets"
        shutil.copy(run / "model.safetensors", assets / "ddpm-tiny-mnist5k.safetensors")
        meta = json.loads((run / "model.json").read_text())
        meta["reproduce"] = f".venv/bin/python benchmarks/bench_diffusion_quality.py --minutes {args.minutes:g} --ship"
        meta["benchmark"] = "benchmarks/results/diffusion_quality_mnist5k.md"
        (assets / "ddpm-tiny-mnist5k.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_samplers.py"), "--checkpoint", str(run),
                    "--work", str(run / "bench-samplers"), "--name", "diffusion_quality_mnist5k"], check=True)


if __name__ == "__main__":
    main()
