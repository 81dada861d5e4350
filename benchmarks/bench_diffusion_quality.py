"""The shipped CPU checkpoints: train the tiny U-Net on a named image set (MNIST 5k by default) for a
wall-clock budget with the `ddpm-tiny-mnist` preset (changed by --set), then evaluate it at n = 1000
against the full test split.

    .venv/bin/python benchmarks/bench_diffusion_quality.py --conditional --minutes 40 --ship
    .venv/bin/python benchmarks/bench_diffusion_quality.py --dataset fashion-mnist --conditional --minutes 55 \
        --guidance 0,1,2 --sampler dpm++2m-sde:20 --ship

With --conditional (the demo's checkpoint): a class embedding trained with label dropout 0.1, then
--sampler (DPM-Solver++(2M) 20 steps by default) at classifier-free guidance scales w in --guidance
(FID, KID, precision, recall, confident share, conditional accuracy), bits/dim given the true label
(w = 0), and the fp16 check: the weights stored in fp16 are scored at w = 0 with the same seed as
fp32, beside fp32 with another seed; fp16 is shipped when its FID moves less than the seed does.
Without --conditional: the unconditional run, evaluated by `bench_diffusion_samplers.py` (every sampler).

A finished run in --run is reused; an interrupted one resumes (`--resume`, bitwise). Writes
benchmarks/results/diffusion_quality_<set>[_cond].{json,md,png} and the training loss curve; with
--ship the EMA checkpoint to src/diffprompt/assets/ddpm-tiny-<set>[-cond].safetensors (+ .json),
<set> being the data set's name (mnist5k, fashion-mnist, ...) and --tag's name for a recipe variant:

    .venv/bin/python benchmarks/bench_diffusion_quality.py --tag hybrid --minutes 80 --max-steps 6660 \
        --set loss_type=hybrid --set variance=learned_range --set loss_weighting=none \
        --samplers dpm++2m-sde:20,dpm++2m:20,ddpm:50,ddpm:100 --exact-nll-images 1000 --ship

(--max-steps 6660 with a looser --minutes: the same optimiser steps as the shipped L_simple model's hour.)
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
ASSETS = ROOT / "src" / "diffprompt" / "assets"
PRESET = "ddpm-tiny-mnist"
SAMPLER = "dpm++2m:20"


def run_train(args) -> Path:
    """Train (or resume, or reuse) the run in --run for the wall-clock budget."""
    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train

    out = Path(args.run)
    if (out / "DONE").exists():
        print(f"reusing finished training run {out}", flush=True)
        return out
    sets = ["log_every=50", "sample_n=100", "sample_steps=20", "sample_sampler=dpm++2m", "ckpt_every=500",
            f"dataset={args.dataset}"] + (["conditional=true"] if args.conditional else []) + args.set
    cfg = resolve_config(PRESET, sets, steps=args.max_steps,
                         seed=args.seed, device="cpu", time_budget_s=args.minutes * 60.0)
    before, t0 = os.getloadavg()[0], time.perf_counter()
    resume = out if (out / "last.safetensors").exists() else None
    train(cfg, out=None if resume else out, resume=resume)
    (out / "bench_train.json").write_text(json.dumps({"seconds": time.perf_counter() - t0,
                                                      "load": [before, os.getloadavg()[0]]}))
    return out


def evaluate_conditional(run: Path, args) -> dict:
    """The guidance sweep and bits/dim of the EMA weights, then the fp16 check (each cached in the run folder)."""
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    def cached(name: str, path: Path, **kw) -> dict:
        out = run / name
        if not (out / "eval.json").exists():
            before = os.getloadavg()[0]
            evaluate(path, samplers=[args.sampler], n_samples=args.n, batch_size=250, device="cpu", out=out, **kw)
            r = json.loads((out / "eval.json").read_text())
            r["load_average_1m"] = {"before": before, "after": os.getloadavg()[0]}
            (out / "eval.json").write_text(json.dumps(r, indent=2))
        return json.loads((out / "eval.json").read_text())

    scales = [float(w) for w in args.guidance.split(",")]
    main = cached("eval-guidance", run, guidance=scales, nll_images=args.nll_images, nll_timesteps=50, seed=0)
    fp16 = write_fp16(run)
    half = cached("eval-fp16-seed0", fp16, guidance=[0.0], nll_images=0, seed=0)
    other_seed = cached("eval-fp32-seed1", run, guidance=[0.0], nll_images=0, seed=1)
    fid32 = next(r["fid"] for r in main["samplers"] if r.get("guidance") == 0.0)
    check = {"fid_fp32_seed0": fid32, "fid_fp16_seed0": half["samplers"][0]["fid"],
             "fid_fp32_seed1": other_seed["samplers"][0]["fid"]}
    check["fp16_within_noise"] = abs(check["fid_fp16_seed0"] - fid32) < abs(check["fid_fp32_seed1"] - fid32)
    return {**main, "fp16_check": check}


def write_fp16(run: Path) -> Path:
    """The run's EMA weights stored in fp16, with the same sidecar."""
    from diffprompt.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(run / "model.safetensors")
    path = run / "fp16" / "model.safetensors"
    half = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_checkpoint(path, half, {**meta, "storage_dtype": "float16"})
    return path


def render(results: dict, args) -> str:
    from diffprompt.diffusion.evaluation.markdown import render_markdown

    c = results["fp16_check"]
    lines = [render_markdown(results).rstrip(), "", training_text(results["step"], args), "## fp16 storage", "",
             f"FID at w = 0 (n = {args.n}): fp32 seed 0 {c['fid_fp32_seed0']:.3f}, fp16 seed 0 {c['fid_fp16_seed0']:.3f}, "
             f"fp32 seed 1 {c['fid_fp32_seed1']:.3f}: fp16 is {'within' if c['fp16_within_noise'] else 'outside'} "
             f"the seed-to-seed noise, so the shipped weights are {'fp16' if c['fp16_within_noise'] else 'fp32'}.", ""]
    return "\n".join(lines) + "\n"


def training_text(step: int, args) -> str:
    """How the evaluated model was trained, and the command that trains and scores it again."""
    cfg = json.loads((Path(args.run) / "config.json").read_text())
    train = json.loads((Path(args.run) / "bench_train.json").read_text())
    changed = f" with {', '.join(args.set)}" if args.set else ""
    kind = f"class-conditional (label dropout {cfg['cond_drop_prob']})" if args.conditional else "unconditional"
    return "\n".join([
        "## Training", "",
        f"`{PRESET}` preset on `{cfg['dataset']}`{changed}, {kind}, {step} steps of batch {cfg['batch_size']} "
        f"({step * cfg['batch_size']} training images) in {train['seconds'] / 60:.1f} min of wall clock (this sitting; "
        f"load average {train['load'][0]:.2f} before, {train['load'][1]:.2f} after).", "",
        f"Command: `.venv/bin/python benchmarks/bench_diffusion_quality.py {' '.join(sys.argv[1:])}`", ""])


def ship(run: Path, results: dict, args) -> None:
    name = f"ddpm-tiny-{args.dataset}{args.suffix}"
    use_fp16 = args.conditional and results["fp16_check"]["fp16_within_noise"]
    source = run / "fp16" / "model.safetensors" if use_fp16 else run / "model.safetensors"
    shutil.copy(source, ASSETS / f"{name}.safetensors")
    meta = json.loads(source.with_suffix(".json").read_text())
    meta["reproduce"] = f".venv/bin/python benchmarks/bench_diffusion_quality.py {' '.join(sys.argv[1:])}"
    meta["benchmark"] = f"benchmarks/results/{args.name}.md"
    (ASSETS / f"{name}.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=40.0, help="training wall-clock budget")
    ap.add_argument("--max-steps", type=int, default=200000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", default="mnist5k", help="a named image set (mnist5k, fashion-mnist, twemoji, ...)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a change to the preset's recipe, as `diffprompt diffusion train --set` (repeatable)")
    ap.add_argument("--sampler", default=SAMPLER, help="the conditional evaluation's sampler spec")
    ap.add_argument("--samplers", default=None,
                    help="the unconditional evaluation's sampler specs, comma-separated (default: all of "
                         "bench_diffusion_samplers.py's); naming them also skips its timing pass")
    ap.add_argument("--tag", default="", help="a name for a recipe variant (e.g. hybrid): it goes into the run "
                                               "folder, results and asset names, so the preset's files stay")
    ap.add_argument("--conditional", action="store_true", help="class-conditional, evaluated with guidance")
    ap.add_argument("--guidance", default="0,0.5,1,2,4", help="guidance scales w of the conditional evaluation")
    ap.add_argument("--n", type=int, default=1000, help="samples per evaluated row")
    ap.add_argument("--nll-images", type=int, default=500, help="test images of the bits/dim estimate (50 timesteps)")
    ap.add_argument("--exact-nll-images", type=int, default=100,
                    help="unconditional: test images of the exact bound (all T terms; ~3.3 s each on 2 cores)")
    ap.add_argument("--run", default=None, help="run folder (default runs/bench-ddpm-<set>[-cond])")
    ap.add_argument("--ship", action="store_true", help="copy the EMA checkpoint into src/diffprompt/assets/")
    args = ap.parse_args()
    args.suffix = ("-cond" if args.conditional else "") + (f"-{args.tag}" if args.tag else "")
    args.run = args.run or str(ROOT / "runs" / f"bench-ddpm-{args.dataset}{args.suffix}")
    args.name = f"diffusion_quality_{args.dataset}{args.suffix}".replace("-", "_")
    import torch

    torch.set_num_threads(2)
    run = run_train(args)
    shutil.copy(run / "loss.png", RESULTS / f"{args.name}_loss.png")
    if not args.conditional:
        if args.ship:
            ship(run, {}, args)
        chosen = ["--samplers", args.samplers, "--no-timing"] if args.samplers else []
        chosen += ["--exact-nll-images", str(args.exact_nll_images)]
        subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_samplers.py"), "--checkpoint", str(run),
                        "--work", str(run / "bench-samplers"), "--name", args.name, *chosen], check=True)
        md = RESULTS / f"{args.name}.md"
        step = json.loads((RESULTS / f"{args.name}.json").read_text())["step"]
        md.write_text(md.read_text().rstrip() + "\n\n" + training_text(step, args))
        return
    results = evaluate_conditional(run, args)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(results, indent=2))
    (RESULTS / f"{args.name}.md").write_text(render(results, args))
    shutil.copy(run / "eval-guidance" / "eval-guidance.png", RESULTS / f"{args.name}.png")
    if args.ship:
        ship(run, results, args)
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
