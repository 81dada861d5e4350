"""Training recipes at a fixed budget of training images: which changes buy quality per CPU-minute.

Every arm trains the tiny U-Net on MNIST 5k from scratch for the same number of training images
(--images), seed 0, then is scored by our evaluation at n = 1000 with DPM-Solver++(2M), 20 steps:
FID, KID, precision, recall and confident share against the full test split. Each arm changes one
thing from the baseline (the `ddpm-tiny-mnist` preset with L_simple, as it was before this
benchmark moved it to min-SNR weighting); "combined" applies --combine; "diffusers"
is the anchor: diffusers' `train_unconditional` example recipe (UNet2DModel built to our tiny U-Net's
architecture, so the same parameter count, DDPMScheduler linear, AdamW lr 1e-4, betas 0.95/0.999,
weight decay 1e-6, 500 warm-up steps then cosine decay, EMA with inverse-gamma warm-up (inv_gamma 1,
power 3/4, max 0.9999), batch 16, gradient clipping at 1), trained by diffusers' own classes.
The arms in --curve are also scored part-way (--curve-points), for FID against images seen.

One arm at a time (2 threads by default); `uptime` is recorded before and after every training and scoring.
Finished arms are kept in --work, so the same command resumes.

    .venv/bin/python benchmarks/bench_diffusion_recipes.py            # ~55 min on 2 cores
    .venv/bin/python benchmarks/bench_diffusion_recipes.py --arms base,v-pred --images 8000   # a quick look

Writes benchmarks/results/diffusion_recipes_mnist5k.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESET = "ddpm-tiny-mnist"
SAMPLER = "dpm++2m:20"
QUIET = ["log_every=25", "sample_n=16", "sample_steps=10"]  # the end-of-run sample grid is not what we measure
BASELINE = ["loss_weighting=none"]  # the preset as it was before this benchmark chose min-SNR for it: L_simple
ARMS = {  # name -> `--set` overrides of the preset, one change each
    "base": [],
    "v-pred": ["prediction=v"],
    "min-snr-5": ["loss_weighting=min_snr", "min_snr_gamma=5"],
    "cosine": ["schedule=cosine"],
    "lr-5e-4": ["lr=5e-4"],
    "lr-2e-3": ["lr=2e-3"],
    "batch-128": ["batch_size=128"],
    "ema-0.995": ["ema_decay=0.995"],
    "dropout-0": ["model.dropout=0.0"],
    "2-blocks": ["model.num_res_blocks=2"],
}
DIFFUSERS = dict(lr=1e-4, warmup=500, batch=16, betas=(0.95, 0.999), weight_decay=1e-6, eps=1e-8,
                 ema_inv_gamma=1.0, ema_power=0.75, ema_max_decay=0.9999, clip=1.0)


def load() -> float:
    return os.getloadavg()[0]


N_SAMPLES = {"n": 1000}  # samples scored per checkpoint (--n)


def score(path: Path, out: Path) -> dict:
    """Our evaluation of one checkpoint (cached in `out`)."""
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    if not (out / "eval.json").exists():
        before = load()
        evaluate(path, samplers=[SAMPLER], n_samples=N_SAMPLES["n"], nll_images=0, seed=0, device="cpu", dataset="mnist5k", out=out)
        r = json.loads((out / "eval.json").read_text())
        r["load_average_1m"] = {"before": before, "after": load()}
        (out / "eval.json").write_text(json.dumps(r, indent=2))
    r = json.loads((out / "eval.json").read_text())
    row = r["samplers"][0]
    keep = ("fid", "kid", "precision", "recall", "confident_share")
    return {**{k: row[k] for k in keep}, "floor_fid": r["real_floor"]["fid"], "eval_load": r["load_average_1m"],
            "classifier": r["classifier"]}


def train_ours(name: str, sets: list[str], points: list[int], work: Path) -> list[dict]:
    """Train one arm of ours through `points` (training images seen), resuming between them; score each."""
    import torch

    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train

    run, rows = work / name / "run", []
    for images in points:
        done = work / name / f"train-{images}.json"
        if not done.exists():
            cfg = resolve_config(PRESET, QUIET + BASELINE + sets, seed=0, device="cpu")
            cfg.steps = math.ceil(images / cfg.batch_size)
            before, t0 = load(), time.perf_counter()
            train(cfg, out=None if run.exists() else run, resume=run if run.exists() else None)
            done.write_text(json.dumps({"seconds": time.perf_counter() - t0, "load": [before, load()],
                                        "steps": cfg.steps, "batch_size": cfg.batch_size, "threads": torch.get_num_threads()}))
        rows.append({"arm": name, "images": images, **json.loads(done.read_text()),
                     **score(run, work / name / f"eval-{images}")})
    return rows


def train_diffusers(points: list[int], work: Path, seed: int = 0) -> list[dict]:
    """diffusers' train_unconditional recipe for max(points) images; its EMA weights scored at each point."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DModel
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel

    from diffprompt.data import load_images
    from diffprompt.diffusion.interop.diffusers_unet import diffusers_unet_config
    from diffprompt.diffusion.pixels import images_to_tensor
    from diffprompt.diffusion.unet import UNetConfig

    h, folder = DIFFUSERS, work / "diffusers"
    if all((folder / f"eval-{p}" / "eval.json").exists() for p in points):
        return [{"arm": "diffusers", "images": p, **json.loads((folder / f"train-{p}.json").read_text()),
                 **score(folder / f"unet-{p}", folder / f"eval-{p}")} for p in points]
    torch.manual_seed(seed)
    x = images_to_tensor(load_images("mnist5k").split("train").images)
    config = {k: v for k, v in diffusers_unet_config(UNetConfig.preset("tiny")).items() if not k.startswith("_")}
    unet = UNet2DModel(**config)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear")
    total = math.ceil(max(points) / h["batch"])
    opt = torch.optim.AdamW(unet.parameters(), lr=h["lr"], betas=h["betas"], weight_decay=h["weight_decay"], eps=h["eps"])
    lr_sched = get_cosine_schedule_with_warmup(opt, num_warmup_steps=h["warmup"], num_training_steps=total)
    ema = EMAModel(unet.parameters(), decay=h["ema_max_decay"], use_ema_warmup=True, inv_gamma=h["ema_inv_gamma"],
                   power=h["ema_power"], model_cls=UNet2DModel, model_config=unet.config)
    order, before, t0, rows = torch.randperm(len(x)), load(), time.perf_counter(), []
    for step in range(total):
        start = (step * h["batch"]) % len(x)
        if start + h["batch"] > len(x):  # a new epoch: a new shuffle (the example's DataLoader drops no batch; close enough)
            order, start = torch.randperm(len(x)), 0
        x0 = x[order[start:start + h["batch"]]]
        noise = torch.randn_like(x0)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(x0),))
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), h["clip"])
        opt.step()
        lr_sched.step()
        opt.zero_grad(set_to_none=True)
        ema.step(unet.parameters())
        for p in points:  # point p is scored after the first step that reaches p images (a multiple of the batch)
            if (step * h["batch"]) < p <= (step + 1) * h["batch"]:
                rows.append(_save_diffusers(unet, ema, scheduler, folder, p, step + 1, time.perf_counter() - t0, before))
                before, t0 = load(), time.perf_counter()
    return [{**r, **score(folder / f"unet-{r['images']}", folder / f"eval-{r['images']}")} for r in rows]


def _save_diffusers(unet, ema, scheduler, folder: Path, images: int, steps: int, seconds: float, before: float) -> dict:
    """The EMA weights as a diffusers pipeline folder (unet/ + scheduler/), which our evaluation loads."""
    ema.store(unet.parameters())
    ema.copy_to(unet.parameters())
    unet.save_pretrained(folder / f"unet-{images}" / "unet")
    ema.restore(unet.parameters())
    scheduler.save_pretrained(folder / f"unet-{images}" / "scheduler")
    import torch

    row = {"seconds": seconds, "load": [before, load()], "steps": steps, "batch_size": DIFFUSERS["batch"],
           "threads": torch.get_num_threads()}
    (folder / f"train-{images}.json").write_text(json.dumps(row))
    return {"arm": "diffusers", "images": images, **row}


def cumulative_seconds(rows: list[dict]) -> list[dict]:
    """Each row's training seconds from scratch ("train_seconds"): the sum of its arm's sittings so far."""
    total: dict[str, float] = {}
    for r in sorted(rows, key=lambda r: (r["arm"], r["images"])):
        total[r["arm"]] = r["train_seconds"] = total.get(r["arm"], 0.0) + r["seconds"]
    return rows


def render(rows: list[dict], args, machine: dict) -> str:
    from diffprompt.diffusion.evaluation.markdown import feature_network_text

    final = [r for r in rows if r["images"] == args.images]
    base = next((r for r in final if r["arm"] == "base"), None)
    lines = [f"Training recipes on MNIST 5k at a budget of {args.images} training images each, seed 0; scored at "
             f"n = 1000 with DPM-Solver++(2M) 20 steps against the full test split (real-data floor FID "
             f"{final[0]['floor_fid']:.2f} at the same n). Machine: {machine.get('cpu_model')}, "
             f"{machine.get('cpu_count')} cores, torch {machine.get('torch')}, {args.threads} thread(s). "
             f"{feature_network_text(final[0]['classifier'])}", "",
             "| arm | change | FID | KID x10^3 | precision | recall | confident share | train s | threads | images/s | load before/after |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in final:
        change = "diffusers train_unconditional" if r["arm"] == "diffusers" else ", ".join(_arm_sets(r["arm"], args)) or "baseline"
        mark = "" if base is None or r["arm"] == "base" else (" ↓" if r["fid"] < base["fid"] else " ↑")
        lines.append(f"| {r['arm']} | {change} | {r['fid']:.2f}{mark} | {1e3 * r['kid']:.2f} | {r['precision']:.3f} | "
                     f"{r['recall']:.3f} | {r['confident_share']:.3f} | {r['train_seconds']:.0f} | {r.get('threads', 1)} | {args.images / r['train_seconds']:.0f} | "
                     f"{r['load'][0]:.2f} / {r['load'][1]:.2f} |")
    curve = [r for r in rows if r["arm"] in args.curve.split(",")]
    if curve:
        lines += ["", "Curves (FID and confident share against training images seen):", "",
                  "| arm | images | train s | FID | confident share |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {r['arm']} | {r['images']} | {r['train_seconds']:.0f} | {r['fid']:.2f} | {r['confident_share']:.3f} |"
                  for r in sorted(curve, key=lambda r: (r["arm"], r["images"]))]
    lines += ["", "↓ / ↑: FID below / above the baseline's. Train seconds: the training only (not the scoring), "
              "from scratch (an arm scored part-way adds its sittings); load: the 1-minute load average.", "",
              f"Command: `.venv/bin/python benchmarks/bench_diffusion_recipes.py {' '.join(args.argv)}`".rstrip()]
    return "\n".join(lines) + "\n"


def _arm_sets(name: str, args) -> list[str]:
    return _combined(args) if name == "combined" else ARMS[name]


def _combined(args) -> list[str]:
    return [s for arm in args.combine.split(",") if arm for s in ARMS[arm]]


def plot(rows: list[dict], args, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for arm in args.curve.split(","):
        pts = sorted((r["images"], r["fid"], r["confident_share"]) for r in rows if r["arm"] == arm)
        if pts:
            axes[0].plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=arm)
            axes[1].plot([p[0] for p in pts], [p[2] for p in pts], "o-", label=arm)
    axes[0].set(xlabel="training images seen", ylabel="FID (n = 1000, DPM-Solver++ 20)", yscale="log")
    axes[1].set(xlabel="training images seen", ylabel="confident share (p >= 0.9)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20000, help="training images per arm (steps = images / batch)")
    ap.add_argument("--arms", default=",".join([*ARMS, "combined", "diffusers"]))
    ap.add_argument("--combine", default="v-pred,min-snr-5,cosine", help="the arms whose changes 'combined' applies together")
    ap.add_argument("--curve", default="combined,diffusers", help="arms also scored at --curve-points")
    ap.add_argument("--curve-points", default="5000,10000", help="training images at which --curve arms are scored too")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-recipes"))
    ap.add_argument("--name", default="diffusion_recipes_mnist5k")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the table states them)")
    ap.add_argument("--n", type=int, default=N_SAMPLES["n"], help="samples scored per checkpoint (FID is biased below 1000)")
    args = ap.parse_args()
    args.argv = sys.argv[1:]
    import torch

    from diffprompt.diffusion.evaluation.evaluate_model import machine_info

    N_SAMPLES["n"] = args.n
    torch.set_num_threads(args.threads)
    work, rows = Path(args.work), []
    for arm in args.arms.split(","):
        points = sorted({args.images, *([int(p) for p in args.curve_points.split(",")] if arm in args.curve.split(",") else [])})
        rows += train_diffusers(points, work) if arm == "diffusers" else train_ours(arm, _arm_sets(arm, args), points, work)
        print(json.dumps(rows[-1]), flush=True)
    rows = cumulative_seconds(rows)
    machine = machine_info()
    out = {"kind": "diffusion-recipes", "images": args.images, "sampler": SAMPLER, "n_samples": args.n, "arms": ARMS,
           "combined": _combined(args), "diffusers_recipe": DIFFUSERS, "threads": args.threads, "rows": rows, "machine": machine}
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{args.name}.md").write_text(render(rows, args, machine))
    plot(rows, args, RESULTS / f"{args.name}.png")
    print((RESULTS / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
