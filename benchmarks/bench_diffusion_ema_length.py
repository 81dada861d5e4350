"""How long should the weight average be? FID against the EMA length on one training trajectory.

With a constant learning rate the optimised weights do not depend on the EMA, so one trajectory can
carry several averages at once and each is scored at the end (the idea behind Karras et al. 2024's
post-hoc EMA). This resumes the shipped unconditional MNIST 5k run from its checkpoint at --from-step
(bitwise, as `--resume` is) to its last step, and beside the run's own EMA tracks:

- power-function EMAs (Karras et al. 2024, "EDM2"): update t uses decay (1 - 1/t)^(gamma + 1), which
  averages the weights with a profile proportional to t^gamma; its width relative to the length of
  training is sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))). The preset's warm-up
  min(0.999, (1 + n) / (10 + n)) is close to gamma = 8 (sigma_rel 0.09) while it binds;
- fixed-decay EMAs (no warm-up) with a window of about 1 / (1 - decay) steps.

Each extra average starts from the run's EMA at --from-step (the steps before it carry little weight in
every profile here: (from / to)^(gamma + 1) for a power EMA). The run's own EMA must come out
bitwise equal to the shipped run's: that checks the resumed trajectory is the shipped one. Every
average is then scored with the same samplers and seed at n = 1000 against the full test split.

    .venv/bin/python benchmarks/bench_diffusion_ema_length.py     # ~33 min of training + ~2 min per average

Writes benchmarks/results/diffusion_ema_length_mnist5k.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch

from diffprompt.diffusion.ema import EMA
from diffprompt.diffusion.unet import UNet, UNetConfig

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PRESET = "ddpm-tiny-mnist"
NEW_RUN_SETS = ["log_every=50", "sample_n=64", "sample_sampler=dpm++2m", "sample_steps=20", "ckpt_every=1000"]


def gamma_for(sigma_rel: float) -> float:
    """The power-EMA exponent gamma whose profile has relative width sigma_rel (Karras et al. 2024),
    by bisection: the width falls as gamma grows from 0."""
    def width(g: float) -> float:
        return math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))

    lo, hi = 0.0, 1e4  # gamma >= 0: sigma_rel up to 1/sqrt(12)
    if not width(hi) < sigma_rel < width(lo):
        raise ValueError(f"sigma_rel {sigma_rel} is outside ({width(hi):.4f}, {width(lo):.4f})")
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if width(mid) > sigma_rel else (lo, mid)
    return (lo + hi) / 2


class PowerEMA(EMA):
    """A power-function EMA: update t = 1, 2, ... uses decay (1 - 1/t)^(gamma + 1), so after T updates the
    weights of update t sum to (t^(gamma+1) - (t-1)^(gamma+1)) / T^(gamma+1)."""

    def __init__(self, model: torch.nn.Module, gamma: float):
        super().__init__(model, decay=0.0, warmup=False)
        self.gamma = float(gamma)

    def current_decay(self) -> float:
        return (1.0 - 1.0 / (self.num_updates + 1)) ** (self.gamma + 1.0)


def averages(model: torch.nn.Module, start_state: dict, start_step: int, sigma_rels: list[float],
             decays: list[float]) -> dict[str, EMA]:
    """Name -> an average of `model`'s weights, each starting from `start_state` after `start_step` updates."""
    out: dict[str, EMA] = {f"power sigma_rel={s:g}": PowerEMA(model, gamma_for(s)) for s in sigma_rels}
    out.update({f"fixed decay={d:g}": EMA(model, decay=d, warmup=False) for d in decays})
    for ema in out.values():
        ema.load_state_dict(start_state, start_step)
    return out


def resume_with_averages(args) -> tuple[dict, dict]:
    """Resume the run from --from-step to its last step with the extra averages; return them and the check."""
    from diffprompt.checkpoint import load_checkpoint, strip_prefix
    from diffprompt.diffusion.checkpoints import LAST, resumable_run_config
    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train

    source, work = Path(args.run), Path(args.work) / "run"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    shutil.copy(source / "config.json", work / "config.json")
    ckpt = source / f"ckpt-{args.from_step:07d}.safetensors"
    shutil.copy(ckpt, work / LAST)
    shutil.copy(ckpt.with_suffix(".json"), work / "last.json")
    tensors, meta = load_checkpoint(ckpt)
    extra = averages(UNet(UNetConfig.from_dict(meta["unet"])), strip_prefix(tensors, "ema."), meta["ema_updates"],
                     args.sigma_rels, args.decays)
    before = os.getloadavg()[0]
    cfg = resolve_config(sets=[f"steps={args.to_step}", "time_budget_s=0", "ckpt_every=0"],
                         base=resumable_run_config(work))
    train(cfg, resume=work, on_step=lambda run: [ema.update(run.model) for ema in extra.values()])
    shipped, _ = load_checkpoint(source / "model.safetensors")
    resumed, _ = load_checkpoint(work / "model.safetensors")
    diff = max(float((shipped[k] - resumed[k]).abs().max()) for k in shipped)
    return extra, {"max_abs_diff_to_shipped_ema": diff, "load_average_1m": [before, os.getloadavg()[0]]}


def train_new_with_averages(args) -> tuple[dict, dict]:
    """Train a new run of the preset changed by --set for --to-step steps, with the extra averages from step 1."""
    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.ema import unwrap
    from diffprompt.diffusion.training import train

    work = Path(args.work) / "run"
    if work.exists():
        shutil.rmtree(work)
    extra: dict[str, EMA] = {}

    def track(run) -> None:
        if not extra:  # the first update of every average copies the weights after step 1
            bare = unwrap(run.model)
            extra.update(averages(bare, bare.state_dict(), 0, args.sigma_rels, args.decays))
        for ema in extra.values():
            ema.update(run.model)

    cfg = resolve_config(PRESET, [*NEW_RUN_SETS, *args.set], steps=args.to_step, seed=0, device="cpu", time_budget_s=0)
    before = os.getloadavg()[0]
    train(cfg, out=work, on_step=track)
    return extra, {"new_run": args.set, "load_average_1m": [before, os.getloadavg()[0]]}


def score(path: Path, args) -> dict:
    """The samplers' scores of one checkpoint and the load average around them (cached in its folder)."""
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    out = path.parent / f"eval-seed{args.seed}"
    if not (out / "eval.json").exists():
        before = os.getloadavg()[0]
        evaluate(path, samplers=args.samplers, n_samples=args.n, nll_images=0, batch_size=args.batch_size,
                 seed=args.seed, device="cpu", out=out, sample_grids=False)
        r = json.loads((out / "eval.json").read_text())
        (out / "eval.json").write_text(json.dumps({**r, "load_average_1m": [before, os.getloadavg()[0]]}, indent=2))
    r = json.loads((out / "eval.json").read_text())
    return {"floor": r["real_floor"]["fid"], "feature_net": r["classifier"]["sha256"][:12],
            "load_average_1m": r["load_average_1m"],
            "rows": {s["spec"]: {k: s[k] for k in ("fid", "kid", "precision", "recall", "confident_share")}
                     for s in r["samplers"]}}


def save_average(name: str, ema, meta: dict, folder: Path) -> Path:
    """One average as a model checkpoint (the run's model.json sidecar, with what the weights are)."""
    from diffprompt.checkpoint import save_checkpoint

    path = folder / name.replace(" ", "-").replace("=", "") / "model.safetensors"
    gamma = getattr(ema, "gamma", None)
    return save_checkpoint(path, ema.state_dict(), {**meta, "weights": f"ema ({name}"
                                                    + (f", gamma {gamma:.3f})" if gamma is not None else ")")})


def markdown(result: dict) -> str:
    specs = list(result["rows"][0]["scores"]["rows"])
    floor = result["rows"][0]["scores"]["floor"]
    check = result["check"]
    if "new_run" in check:
        what = (f"One trajectory: a new unconditional run of the `{PRESET}` preset with {', '.join(check['new_run'])}, "
                f"{result['to_step']} steps; every average below starts at step 1.")
    else:
        what = (f"One trajectory: the shipped unconditional MNIST 5k run (constant learning rate), resumed bitwise from "
                f"step {result['from_step']} to {result['to_step']}; every average below starts from the run's EMA at "
                f"step {result['from_step']}. The run's own EMA came out with a largest difference of "
                f"{check['max_abs_diff_to_shipped_ema']:.3g} to the shipped run's.")
    lines = ["# FID against the length of the weight average", "",
             (f"{what} n = {result['n']} samples per row, seed {result['seed']}, sampling batch {result['batch_size']}, "
              f"against the full test split; "
              f"real-data floor FID {floor:.2f}; feature network `mnist` (sha256 "
              f"`{result['rows'][0]['scores']['feature_net']}`)."), "",
             "| average | " + " | ".join(f"{s} FID" for s in specs) + " | " + " | ".join(f"{s} conf." for s in specs) + " |",
             "| --- | " + " | ".join("---:" for _ in specs * 2) + " |"]
    for row in result["rows"]:
        cells = row["scores"]["rows"]
        lines.append(f"| {row['name']} | " + " | ".join(f"{cells[s]['fid']:.2f}" for s in specs) + " | "
                     + " | ".join(f"{cells[s]['confident_share']:.3f}" for s in specs) + " |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=str(ROOT / "runs" / "uncond-60min"), help="the training run to resume")
    ap.add_argument("--from-step", type=int, default=3000, help="its kept checkpoint to resume from")
    ap.add_argument("--to-step", type=int, default=6660, help="its last step")
    ap.add_argument("--sigma-rels", default="0.03,0.05,0.07,0.1,0.15,0.2,0.25",
                    help="relative widths of the power-function EMAs")
    ap.add_argument("--decays", default="0.995,0.998", help="decays of the fixed EMAs")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="train a new run of the preset changed by these settings (e.g. lr=2e-3) for --to-step "
                         "steps, the averages tracked from step 1, instead of resuming --run")
    ap.add_argument("--samplers", default="dpm++2m-sde:20,dpm++2m:20")
    ap.add_argument("--n", type=int, default=1000, help="samples per row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=250,
                    help="sampling batch (memory and speed only: the samples do not depend on it)")
    ap.add_argument("--tag", default="", help="a name for the new run of --set: it goes into the work folder and "
                                               "the results' name")
    ap.add_argument("--work", default=None, help="folder of the run and its averages (default runs/bench-ema-length[-TAG])")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--name", default=None, help="results' name (default diffusion_ema_length_mnist5k[_TAG][_seedN])")
    args = ap.parse_args()
    if args.set and not args.tag:
        ap.error("a new run (--set) needs a --tag, so its folder and results do not overwrite the shipped run's")
    suffix = f"-{args.tag}" if args.tag else ""
    args.work = args.work or str(ROOT / "runs" / f"bench-ema-length{suffix}")
    args.name = args.name or (f"diffusion_ema_length_mnist5k{suffix}".replace("-", "_")
                              + (f"_seed{args.seed}" if args.seed else ""))
    args.sigma_rels = [float(s) for s in args.sigma_rels.split(",") if s]
    args.decays = [float(d) for d in args.decays.split(",") if d]
    work = Path(args.work)
    done = work / "averages.json"
    if not done.exists():
        extra, check = train_new_with_averages(args) if args.set else resume_with_averages(args)
        meta = json.loads((work / "run" / "model.json").read_text())
        names = {name: str(save_average(name, ema, meta, work)) for name, ema in extra.items()}
        names["run's own EMA (warm-up, 0.999)"] = str(work / "run" / "model.safetensors")
        done.write_text(json.dumps({"check": check, "paths": names}, indent=2))
    saved = json.loads(done.read_text())
    rows = []
    for name, path in saved["paths"].items():
        rows.append({"name": name, "checkpoint": path, "scores": score(Path(path), args)})
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_diffusion_likelihood import write_results

    write_results(args, {"from_step": args.from_step, "to_step": args.to_step, "n": args.n, "seed": args.seed,
                         "batch_size": args.batch_size,
                         "check": saved["check"], "rows": rows}, markdown)


if __name__ == "__main__":
    main()
