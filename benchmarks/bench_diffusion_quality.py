"""Sample quality of the CPU preset: train the tiny U-Net on MNIST 5k for a fixed wall-clock budget,
then evaluate DDPM-1000 and DDIM 10/20/50/100.

Reported per sampler: FID and KID against the test split (features of the cached small CNN trained
on the train split; not Inception, so not comparable with published FIDs), the share of samples
classified with confidence >= 0.9, the class histogram, and sampling time per image; plus the
real-data floor (train images vs the test split), bits/dim on a subset of test images, and the machine.

FID is biased upwards at small sample counts, so besides each sampler's own n the table gives FID
at a common n (the DDPM-1000 count) for every sampler and for the floor.

The evaluation runs in two worker processes (DDPM-1000 in one; DDIM and bits/dim in the other),
each with one intra-op thread: on a shared 2-core machine that is much faster than one process
with two threads.

Usage (the figures in benchmarks/results/diffusion_quality_mnist5k.md came from):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_diffusion_quality.py --minutes 35 \\
        --ddpm-samples 100 --ddim-samples 300 --nll-images 50

Writes benchmarks/results/diffusion_quality_mnist5k.{json,md}, diffusion_quality_mnist5k_samples.png
(DDIM-50 and DDPM-1000 grids) and, with --ship, the EMA checkpoint to
src/diffprompt/assets/ddpm-tiny-mnist5k.safetensors (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_part(args) -> None:
    """A worker: evaluate some samplers (and maybe bits/dim) into args.part_out."""
    import torch

    torch.set_num_threads(1)
    from diffprompt.diffusion.evaluation import evaluate

    evaluate(args.run, samplers=args.samplers, n_samples=args.n, nll_images=args.nll_images, batch_size=100,
             seed=args.seed, device="cpu", out=args.part_out, fid_at=tuple(args.fid_at))


def markdown(r: dict) -> str:
    ddpm = next((s for s in r["samplers"] if s["sampler"].startswith("DDPM")), None)
    common = str(r["common_n"])
    lines = [
        "# DDPM quality on MNIST 5k (tiny preset, CPU)",
        "",
        f"Training: tiny U-Net ({r['train']['parameters'] / 1e6:.2f} M parameters), {r['train']['steps']} steps of batch "
        f"{r['batch_size']} in {r['train']['train_seconds'] / 60:.1f} min wall clock (budget {r['minutes']} min), "
        f"{r['train']['images_per_s']:.1f} images/s, linear schedule, T = 1000, eps-prediction, L_simple, EMA {r['ema_decay']}.",
        f"Feature classifier (small CNN on the train split): test accuracy {r['classifier']['test_accuracy']:.4f}. "
        f"Reference: {r['reference']}.",
        "",
        f"| sampler | samples n | FID (n) | FID (n = {common}) | KID x1e3 (n) | confident share | s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in r["samplers"]:
        lines.append(f"| {s['sampler']} | {s['n']} | {s['fid']:.2f} | {s['fid_at'].get(common, float('nan')):.2f} | "
                     f"{s['kid'] * 1e3:.2f} ± {s['kid_std'] * 1e3:.2f} | {s['confident_share']:.3f} | {s['seconds_per_image']:.3f} |")
    f = r["real_floor"]
    lines.append(f"| real-data floor ({f['what']}) | {f['n']} | {f['fid']:.2f} | {f['fid_at'].get(common, float('nan')):.2f} | "
                 f"{f['kid'] * 1e3:.2f} ± {f['kid_std'] * 1e3:.2f} | {f['confident_share']:.3f} | — |")
    if "nll" in r:
        n = r["nll"]
        lines += ["", f"Bits/dim (full variational bound, T = 1000 terms) on the first {n['images']} test images: "
                  f"**{n['bpd']:.3f} ± {n['bpd_stderr']:.3f}** (prior L_T {n['prior_bpd']:.1e}, decoder L_0 {n['decoder_bpd']:.3f})."]
    d50 = next((s for s in r["samplers"] if s["sampler"] == "DDIM-50"), None)
    if ddpm and d50:
        ratio = d50["fid_at"][common] / ddpm["fid_at"][common]
        speed = ddpm["seconds_per_image"] / d50["seconds_per_image"]
        lines += ["", f"Target check: DDIM-50 FID / DDPM-1000 FID at n = {common}: **{ratio:.2f}** (target <= 1.25); "
                  f"DDIM-50 samples **{speed:.1f}x** faster (target >= 15x)."]
    hist_names = r.get("class_names") or []
    lines += ["", "Class histograms (classifier argmax):", "",
              "| sampler | " + " | ".join(hist_names) + " |", "| --- |" + " ---: |" * len(hist_names)]
    for s in r["samplers"]:
        lines.append(f"| {s['sampler']} | " + " | ".join(map(str, s["class_histogram"])) + " |")
    m = r["machine"]
    lines += ["", f"Machine: {m.get('cpu_model', m.get('processor'))}, {m.get('cpu_count')} cores shared with other "
              f"jobs (1-minute load average at the end {m.get('load_average_1m', float('nan')):.1f}), torch {m.get('torch')}, "
              "one intra-op thread per process; times are noisy under this contention.",
              "", "Command:", "", "```", r["command"], "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=35.0, help="training wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=200000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema-decay", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ddpm-samples", type=int, default=100)
    ap.add_argument("--ddim-samples", type=int, default=300)
    ap.add_argument("--nll-images", type=int, default=50)
    ap.add_argument("--run", default=str(ROOT / "runs" / "bench-ddpm-mnist5k"))
    ap.add_argument("--ship", action="store_true", help="copy the EMA checkpoint into src/diffprompt/assets/")
    # worker mode
    ap.add_argument("--part-out")
    ap.add_argument("--samplers")
    ap.add_argument("--n", type=int)
    ap.add_argument("--fid-at", type=int, nargs="*", default=[])
    args = ap.parse_args()
    if args.part_out:
        run_part(args)
        return

    import torch

    torch.set_num_threads(1)
    t0 = time.time()
    run = run_train(args)
    print(f"training done in {(time.time() - t0) / 60:.1f} min", flush=True)
    # make sure the feature classifier is cached before the workers start (one trains it, not two)
    from diffprompt.data import load_images
    from diffprompt.diffusion.feature_classifier import load_or_train

    load_or_train("mnist5k", seed=0, device="cpu", data=load_images("mnist5k"))
    common = min(args.ddpm_samples, args.ddim_samples)
    parts = {
        "ddpm": (["ddpm"], args.ddpm_samples, 0),
        "ddim": (["ddim:10", "ddim:20", "ddim:50", "ddim:100"], args.ddim_samples, args.nll_images),
    }
    procs = {}
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFPROMPT_QUIET="1")
    for name, (samplers, n, nll) in parts.items():
        cmd = [sys.executable, __file__, "--run", str(run), "--part-out", str(run / f"eval-{name}"), "--samplers",
               ",".join(samplers), "--n", str(n), "--nll-images", str(nll), "--seed", str(args.seed),
               "--fid-at", str(common)]
        log = open(run / f"eval-{name}.log", "w")
        procs[name] = (subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT), log)
    for name, (p, log) in procs.items():
        if p.wait() != 0:
            raise SystemExit(f"worker {name} failed; see {run / f'eval-{name}.log'}")
        log.close()
    a = json.loads((run / "eval-ddpm" / "eval.json").read_text())
    b = json.loads((run / "eval-ddim" / "eval.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    from diffprompt.diffusion.evaluation import machine_info

    result = {
        "kind": "diffusion-quality-benchmark", "dataset": "mnist5k", "minutes": args.minutes,
        "batch_size": args.batch_size, "lr": args.lr, "ema_decay": args.ema_decay, "seed": args.seed,
        "train": summary, "classifier": b["classifier"], "class_names": b.get("class_names"),
        "reference": b["reference"], "real_floor": b["real_floor"], "common_n": common,
        "samplers": a["samplers"] + b["samplers"], "nll": b.get("nll"), "machine": machine_info(),
        "command": "OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_diffusion_quality.py "
                   f"--minutes {args.minutes:g} --ddpm-samples {args.ddpm_samples} --ddim-samples {args.ddim_samples} "
                   f"--nll-images {args.nll_images}" + (" --ship" if args.ship else ""),
        "wall_minutes_total": (time.time() - t0) / 60,
    }
    if result["nll"] is None:
        result.pop("nll")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "diffusion_quality_mnist5k.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "diffusion_quality_mnist5k.md").write_text(markdown(result))
    # sample grids: DDIM-50 (64 from the evaluation) and the end-of-training samples
    from PIL import Image

    grid = run / "eval-ddim" / "eval-samples-ddim-50.png"
    if grid.exists():
        shutil.copy(grid, RESULTS / "diffusion_quality_mnist5k_samples_ddim50.png")
    grid = run / "eval-ddpm" / "eval-samples-ddpm-1000.png"
    if grid.exists():
        shutil.copy(grid, RESULTS / "diffusion_quality_mnist5k_samples_ddpm1000.png")
    Image.open(run / "loss.png").save(RESULTS / "diffusion_quality_mnist5k_loss.png")
    if args.ship:
        assets = ROOT / "src" / "diffprompt" / "assets"
        assets.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "model.safetensors", assets / "ddpm-tiny-mnist5k.safetensors")
        meta = json.loads((run / "model.json").read_text())
        meta["reproduce"] = result["command"]
        meta["benchmark"] = "benchmarks/results/diffusion_quality_mnist5k.md"
        (assets / "ddpm-tiny-mnist5k.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    print((RESULTS / "diffusion_quality_mnist5k.md").read_text())


if __name__ == "__main__":
    main()
