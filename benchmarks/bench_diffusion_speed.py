"""Speed of our U-Net + GaussianDiffusion against diffusers' UNet2DModel + DDPMScheduler, on CPU.

Both networks have the same architecture (Ho et al.'s layout at the size of our "tiny" preset:
ch=32, mults (1, 2, 2), 1 res block per level, attention at 7x7, GroupNorm with 8 groups,
dropout 0.1), so their parameter counts match (the script checks they are within 10 %).
Data: 28 x 28 x 1, batch 64, float32, on the CPU.

Measured, interleaved in one run (each repeat times ours and theirs back to back, alternating
which goes first, so that load from other processes hits both alike), medians reported:

- training: images/s of one step = sample t and noise, noise the batch, forward, MSE on eps,
  backward, AdamW step (same optimizer settings on both sides);
- sampling: images/s of one denoising step = one network call + one reverse-process step
  (ours: DDPMSampler.step, which calls GaussianDiffusion.p_mean_variance; theirs: DDPMScheduler.step),
  under torch.inference_mode on both sides.

Usage:
    .venv/bin/python benchmarks/bench_diffusion_speed.py               # quick: ~2-3 min on 2 cores
    .venv/bin/python benchmarks/bench_diffusion_speed.py --repeats 40  # steadier
    .venv/bin/python benchmarks/bench_diffusion_speed.py --ablation    # also ours in NCHW layout
    .venv/bin/python benchmarks/bench_diffusion_speed.py --threads 1 --clock cpu  # CPU seconds: robust to load

diffusers is a benchmark-only dependency: `pip install -e ".[bench]"` (or `pip install diffusers`).
Writes benchmarks/results/diffusion_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from diffprompt.diffusion import GaussianDiffusion, NoiseSchedule, UNet, UNetConfig
from diffprompt.diffusion.samplers import DDPMSampler

RESULTS = Path(__file__).resolve().parent / "results"


def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


# --- the two contenders ---------------------------------------------------------------------


def build_theirs(c: UNetConfig, num_timesteps: int):
    from diffusers import DDPMScheduler, UNet2DModel

    levels = len(c.channel_mults)
    down = tuple("AttnDownBlock2D" if r in c.attention_resolutions else "DownBlock2D" for r in c.resolutions)
    up = tuple(("AttnUpBlock2D" if r in c.attention_resolutions else "UpBlock2D") for r in reversed(c.resolutions))
    width = c.base_channels * max(c.channel_mults)
    model = UNet2DModel(
        sample_size=c.image_size, in_channels=c.in_channels, out_channels=c.out_ch,
        layers_per_block=c.num_res_blocks, block_out_channels=tuple(c.base_channels * m for m in c.channel_mults),
        down_block_types=down, up_block_types=up, norm_num_groups=c.norm_groups, dropout=c.dropout,
        attention_head_dim=width // c.num_heads,
    )
    assert len(down) == levels
    scheduler = DDPMScheduler(num_train_timesteps=num_timesteps, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                              variance_type="fixed_small", clip_sample=True, prediction_type="epsilon")
    scheduler.set_timesteps(num_timesteps)
    return model, scheduler


class Ours:
    name = "ours"

    def __init__(self, c: UNetConfig, num_timesteps: int, memory_format=torch.channels_last):
        self.model = UNet(c)
        self.model.memory_format = memory_format
        self.diffusion = GaussianDiffusion(NoiseSchedule.linear(num_timesteps), prediction="eps")
        self.sampler = DDPMSampler()
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4)

    def train_step(self, x0, gen):
        loss = self.diffusion.training_loss(self.model, x0, loss_type="simple", generator=gen)["loss"].mean()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def sample_step(self, x, t, gen):
        return self.sampler.step(self.diffusion, self.model, x, t, t - 1, generator=gen)[0]


class Theirs:
    name = "diffusers"

    def __init__(self, c: UNetConfig, num_timesteps: int):
        self.model, self.scheduler = build_theirs(c, num_timesteps)
        self.num_timesteps = num_timesteps
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=2e-4)

    def train_step(self, x0, gen):
        # diffusers' train_unconditional example, minus the data loading.
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, self.num_timesteps, (x0.shape[0],), generator=gen)
        noisy = self.scheduler.add_noise(x0, noise, t)
        loss = F.mse_loss(self.model(noisy, t).sample, noise)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def sample_step(self, x, t, gen):
        out = self.model(x, t).sample
        return self.scheduler.step(out, t, x, generator=gen).prev_sample


# --- timing -----------------------------------------------------------------------------------


CLOCK = time.perf_counter


def timed(fn) -> float:
    t0 = CLOCK()
    fn()
    return CLOCK() - t0


def run(args) -> dict:
    global CLOCK
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "cpu":
        if torch.get_num_threads() != 1:
            sys.exit("--clock cpu needs --threads 1 (with more threads, OpenMP's spin-waiting counts as CPU time)")
        CLOCK = time.process_time
    c = UNetConfig.preset("tiny")
    num_timesteps = 1000
    contenders = [Ours(c, num_timesteps), Theirs(c, num_timesteps)]
    if args.ablation:
        nchw = Ours(c, num_timesteps, memory_format=torch.contiguous_format)
        nchw.name = "ours (NCHW)"
        contenders.append(nchw)
    params = {k.name: sum(p.numel() for p in k.model.parameters()) for k in contenders}
    gap = abs(params["ours"] - params["diffusers"]) / params["diffusers"]
    if gap > 0.10:
        sys.exit(f"parameter counts differ by {gap:.1%} (> 10 %): {params}")
    B = args.batch
    x0 = torch.rand(B, 1, 28, 28) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    train = {k.name: [] for k in contenders}
    sample = {k.name: [] for k in contenders}

    for k in contenders:
        k.model.train()
    for r in range(args.warmup + args.repeats):
        order = contenders if r % 2 == 0 else contenders[::-1]
        for k in order:
            dt = timed(lambda: k.train_step(x0, gen))
            if r >= args.warmup:
                train[k.name].append(dt)
        print(f"train repeat {r + 1}/{args.warmup + args.repeats}: "
              + ", ".join(f"{n} {v[-1]:.3f}s" for n, v in train.items() if v), flush=True)

    for k in contenders:
        k.model.eval()
    x = torch.randn(B, 1, 28, 28)
    with torch.inference_mode():
        for r in range(args.warmup + args.sample_repeats):
            t = num_timesteps - 1 - r  # walk down the chain as a sampler would
            order = contenders if r % 2 == 0 else contenders[::-1]
            for k in order:
                dt = timed(lambda: k.sample_step(x, t, gen))
                if r >= args.warmup:
                    sample[k.name].append(dt)
        print("sampling done", flush=True)

    def summary(times):
        med = statistics.median(times)
        return {"median_s": med, "min_s": min(times), "images_per_s": B / med, "times_s": times}

    result = {
        "benchmark": "diffusion_speed",
        "command": "python benchmarks/bench_diffusion_speed.py " + " ".join(sys.argv[1:]),
        "setup": {
            "model": {"preset": "tiny", **c.to_dict()},
            "image": "28x28x1", "batch": B, "num_timesteps": num_timesteps, "dtype": "float32", "device": "cpu",
            "train_step": "noise + forward + MSE(eps) + backward + AdamW(lr=2e-4)",
            "sample_step": "one network call + one reverse step (ours DDPMSampler.step, theirs DDPMScheduler.step), inference_mode",
            "repeats": args.repeats, "sample_repeats": args.sample_repeats, "warmup": args.warmup,
            "interleaved": "alternating order each repeat; medians",
            "clock": "wall (time.perf_counter)" if args.clock == "wall" else "process CPU time (time.process_time), 1 thread",
        },
        "parameters": params,
        "flops_per_image_forward": contenders[0].model.flops_per_image(),
        "machine": {
            "cpu": cpu_model(), "cores": os.cpu_count(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "diffusers": __import__("diffusers").__version__, "load_average_at_end": load_average(),
        },
        "train": {n: summary(v) for n, v in train.items()},
        "sample": {n: summary(v) for n, v in sample.items()},
    }
    result["ratio"] = {
        "train": result["train"]["ours"]["images_per_s"] / result["train"]["diffusers"]["images_per_s"],
        "sample": result["sample"]["ours"]["images_per_s"] / result["sample"]["diffusers"]["images_per_s"],
        "train_by_min": result["train"]["diffusers"]["min_s"] / result["train"]["ours"]["min_s"],
        "sample_by_min": result["sample"]["diffusers"]["min_s"] / result["sample"]["ours"]["min_s"],
        # Each repeat times ours and theirs back to back: the median of these paired ratios is the
        # estimate least moved by load that changes from one repeat to the next.
        "train_paired": statistics.median(d / o for d, o in zip(train["diffusers"], train["ours"])),
        "sample_paired": statistics.median(d / o for d, o in zip(sample["diffusers"], sample["ours"])),
    }
    return result


def markdown(res: dict, load_before) -> str:
    m = res["machine"]
    lines = [
        "| | parameters | training images/s | sampling images/s per step |",
        "|---|---:|---:|---:|",
    ]
    for name in res["train"]:
        lines.append(f"| {name} | {res['parameters'][name]:,} | {res['train'][name]['images_per_s']:.1f} | "
                     f"{res['sample'][name]['images_per_s']:.1f} |")
    r = res["ratio"]
    lines.append(f"| **ours / diffusers** | | **{r['train']:.2f}x** | **{r['sample']:.2f}x** |")
    lines += [
        "",
        f"Median of the per-repeat paired ratios (diffusers time / our time, measured back to back): "
        f"training {r['train_paired']:.2f}x, sampling {r['sample_paired']:.2f}x. "
        f"From the fastest repeat of each: training {r['train_by_min']:.2f}x, sampling {r['sample_by_min']:.2f}x.",
        "",
        f"Batch {res['setup']['batch']}, 28x28x1, float32; {res['setup']['repeats']} training and "
        f"{res['setup']['sample_repeats']} sampling repeats after {res['setup']['warmup']} warm-up, interleaved, medians; "
        f"clock: {res['setup']['clock']}. "
        f"Forward FLOPs per image: {res['flops_per_image_forward'] / 1e9:.3f} G.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"diffusers {m['diffusers']}, Python {m['python']}. Load average before/after: {load_before} / "
        f"{m['load_average_at_end']} (the cores are shared with other jobs, so absolute numbers are noisy; "
        "the interleaving keeps the ratio fair).",
        "",
        f"Command: `{res['command'].strip()}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=12, help="timed training steps per contender (default 12)")
    p.add_argument("--sample-repeats", type=int, default=20, help="timed sampling steps per contender (default 20)")
    p.add_argument("--warmup", type=int, default=2, help="untimed repeats first (default 2)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="wall: wall-clock seconds (default); cpu: this process's CPU seconds, with --threads 1 "
                        "(steadier when other jobs share the cores)")
    p.add_argument("--ablation", action="store_true", help="also time our U-Net in NCHW (channels-first) layout")
    p.add_argument("--out", default=str(RESULTS / "diffusion_speed"), help="output path without extension")
    args = p.parse_args(argv)
    try:
        import diffusers  # noqa: F401
    except ImportError:
        sys.exit('diffusers is not installed; it is a benchmark-only dependency: pip install -e ".[bench]"')
    load_before = load_average()
    res = run(args)
    res["machine"]["load_average_at_start"] = load_before
    md = markdown(res, load_before)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    out.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
