"""`diffprompt demo`: the main job behind `make demo`.

Stages, each a run folder under `runs/demo/` that is skipped when it already holds `DONE`
(so a demo stopped with Ctrl-C and started again resumes rather than redoes):

1. `data`        preview grids of the image sets that are installed;
2. `ddpm-train`  trains the tiny CPU U-Net on MNIST 5k from scratch for a short time budget
                 (a real run of the training loop: loss curve, checkpoint, first samples);
3. `ddpm`        the seed's model, the unconditional DDPM: samples with DPM-Solver++, FID, KID,
                 precision/recall and bits/dim, the forward strip, the reverse chain (PNG and GIF)
                 and samples beside real images. It uses the checkpoint shipped with diffprompt
                 (`diffprompt/assets/`) because a minute of CPU training cannot make recognisable
                 digits; `--no-pretrained` uses the stage-2 model instead;
4. `ddpm-cond`   the shipped class-conditional checkpoint, where installed (not with
                 `--no-pretrained`): FID and conditional accuracy at each guidance scale, and a row
                 of samples per class beside real ones;
5. `prompting`   zero-shot and a one-seed K = 16 comparison of the five prompting methods on MR;
6. the report    `runs/demo/report.html`, rendered by `diffprompt report`.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from functools import partial
from importlib import resources
from pathlib import Path

from .checkpoint import sidecar_path
from .errors import UserError
from .progress import log
from .rundir import DONE_FILE, RunDir

PRETRAINED = "ddpm-tiny-mnist5k.safetensors"
PRETRAINED_CONDITIONAL = "ddpm-tiny-mnist5k-cond.safetensors"  # preferred where installed
PREVIEW_IMAGES = 64  # images in each data set's preview grid


@dataclass
class DemoConfig:
    """Sizes of every stage. `quick()` shrinks them for tests (about a minute on 2 cores)."""

    out: str = "runs/demo"
    seed: int = 0
    device: str = "cpu"
    # stage 2: a short from-scratch training run
    train_steps: int = 2000
    train_seconds: float = 45.0
    train_set: dict = field(default_factory=dict)  # TrainConfig overrides
    # stages 3 and 4 (the sampler comparison at n = 1000 is benchmarks/bench_diffusion_samplers.py)
    pretrained: bool = True
    eval_samplers: tuple = ("dpm++2m:20",)
    eval_samples: int = 256
    nll_images: int = 4
    eval_guidance: tuple = (0.0, 2.0)  # a conditional model's guidance scales w (0: the plain conditional model)
    grid_samples: int = 64  # an unconditional model's grid
    grid_per_class: int = 10  # a conditional model's grid: a row per class, this many columns
    grid_guidance: float = 2.0
    grid_sampler: str = "dpm++2m:20"
    chain_sampler: str = "ddpm"
    chain_images: int = 8
    classifier_epochs: int = 4
    # stage 4
    prompt_methods: tuple = ("zero-shot", "prompt-ft", "soft", "hybrid", "finetune")
    prompt_shots: int = 16
    prompt_seed: int = 13
    prompt_steps: int = 150
    prompt_limit_test: int | None = None

    @classmethod
    def quick(cls, out: str) -> "DemoConfig":
        return cls(
            out=out, train_steps=6, train_seconds=0.0,
            train_set={"num_timesteps": 50, "batch_size": 16, "sample_n": 8, "sample_steps": 5,
                       "model": {"base_channels": 8, "channel_mults": [1, 2], "num_res_blocks": 1,
                                 "attention_resolutions": [14]}},
            pretrained=False, eval_samplers=("ddim:5", "dpm++2m:5"), eval_samples=16, nll_images=2, grid_samples=16,
            grid_per_class=2, grid_sampler="ddim:5", chain_sampler="ddim:10", chain_images=4, classifier_epochs=1,
            prompt_shots=4, prompt_steps=4, prompt_limit_test=32,
        )


def pretrained_checkpoint(name: str = PRETRAINED) -> Path | None:
    """A shipped EMA checkpoint (safetensors + JSON sidecar), if this install has it."""
    p = Path(str(resources.files("diffprompt") / "assets" / name))
    return p if p.exists() else None


def ddpm_sources(cfg: DemoConfig, trained: Path) -> list[tuple[str, Path, str]]:
    """(stage, model, why) for each model the demo shows: the seed's unconditional model (the shipped
    checkpoint; without one, or with `--no-pretrained`, the ddpm-train stage's model), then the shipped
    class-conditional checkpoint where installed."""
    made = " (see README: Diffusion, for the command that made it)"
    uncond = pretrained_checkpoint(PRETRAINED) if cfg.pretrained else None
    cond = pretrained_checkpoint(PRETRAINED_CONDITIONAL) if cfg.pretrained else None
    if cfg.pretrained and uncond is None:
        log("  no pre-trained checkpoint in this install; using the model trained in the ddpm-train stage")
    sources = [("ddpm", uncond, "the pre-trained checkpoint shipped with diffprompt" + made) if uncond else
               ("ddpm", trained, "the model trained in the ddpm-train stage")]
    if cond is not None:
        sources.append(("ddpm-cond", cond, "the class-conditional checkpoint shipped with diffprompt" + made))
    return sources


# ---------------------------------------------------------------------------------------------
# Stages


def stage_data(cfg: DemoConfig, out: Path) -> None:
    from .data import IMAGE_SETS, load_images
    from .data.preview import image_grid

    run = RunDir(out)
    shown = []
    for name in ("mnist5k", "fashion-mnist"):
        try:
            ds = load_images(name)
        except UserError as e:  # an optional set that is not installed
            log(f"  skipping {name}: {e}")
            continue
        image_grid(ds, out / f"{name}.png", n=PREVIEW_IMAGES, title=f"{name}: {len(ds)} images")
        shown.append({"dataset": name, "images": len(ds), "classes": len(ds.class_names), "shown": PREVIEW_IMAGES})
    run.save_config({"kind": "data-preview", "datasets": [s["dataset"] for s in shown],
                     "known_image_sets": sorted(IMAGE_SETS),
                     "description": "Preview grids of the installed image sets (`diffprompt data show NAME`)."})
    run.save_json("datasets.json", shown)
    run.mark_done()


def _train_config(cfg: DemoConfig):
    from .diffusion.config import resolve_config

    base = {"steps": cfg.train_steps, "time_budget_s": cfg.train_seconds, "seed": cfg.seed, "device": cfg.device,
            "ckpt_every": 100}
    base.update(cfg.train_set)
    return resolve_config(None, None, base=base)


def stage_train(cfg: DemoConfig, out: Path) -> None:
    from .diffusion.checkpoints import LAST
    from .diffusion.training import train

    tc = _train_config(cfg)
    if (out / LAST).exists():  # interrupted earlier: continue exactly where it stopped
        train(tc, resume=out)
    else:
        if out.exists():
            shutil.rmtree(out)
        train(tc, out=out)


def stage_ddpm(cfg: DemoConfig, out: Path, source: Path, why: str) -> None:
    """Evaluate the model `source` and draw it: samples beside real images (a row per class for a
    conditional model, at guidance `grid_guidance`); an unconditional model also the forward strip and
    the reverse chain."""
    import torch

    from .data import load_images
    from .data.images import stratified_subset
    from .diffusion.checkpoints import load_model
    from .diffusion.evaluation.evaluate_model import evaluate
    from .diffusion.generate import parse_sampler_spec
    from .diffusion.guidance import num_classes
    from .diffusion.pixels import images_to_tensor
    from .diffusion.visualize import write_visualizations

    out.mkdir(parents=True, exist_ok=True)
    run = RunDir(out)
    model, diffusion, meta = load_model(source, cfg.device)
    k = num_classes(model)
    run.save_config(ddpm_config(cfg, source, why, meta, diffusion.num_timesteps, k))
    data = load_images(meta.get("dataset") or "mnist5k")
    test = data.split("test")
    guidance = list(cfg.eval_guidance) if k else None
    at = f" at guidance scales w = {', '.join(f'{w:g}' for w in guidance)}" if k else ""
    log(f"  evaluating {source.name if source.is_file() else source} with {', '.join(cfg.eval_samplers)}{at}, "
        f"{cfg.eval_samples} samples each" + ("" if k else f", NLL on {cfg.nll_images} test images"))
    evaluate(source, samplers=list(cfg.eval_samplers), n_samples=cfg.eval_samples, nll_images=0 if k else cfg.nll_images,
             seed=cfg.seed, device=cfg.device, out=out, classifier_epochs=cfg.classifier_epochs, data=data,
             guidance=guidance, sample_grids=False)
    draw_grids(cfg, model, diffusion, meta, test, out)
    if not k:
        log(f"  drawing the forward strip and the {cfg.chain_sampler} reverse chain of {cfg.chain_images} images")
        chain = parse_sampler_spec(cfg.chain_sampler)
        write_visualizations(model, diffusion, out, images_to_tensor(stratified_subset(test, cfg.chain_images, cfg.seed)),
                             n=cfg.chain_images, sampler=chain["sampler"], steps=chain["steps"], eta=chain["eta"],
                             seed=cfg.seed, device=torch.device(cfg.device))
    run.mark_done()


GRID_SEED_OFFSET = 7  # the grid's seed is not the evaluation's: the grid shows other samples than those scored


def ddpm_config(cfg: DemoConfig, source: Path, why: str, meta: dict, num_timesteps: int, k: int) -> dict:
    """The ddpm stage's config.json: the model and how every picture is made (the report's captions).

    A conditional model (`k` classes) adds the guidance scales, and the grid's classes and w."""
    from .diffusion.generate import parse_sampler_spec, sampler_label

    grid, chain = parse_sampler_spec(cfg.grid_sampler), parse_sampler_spec(cfg.chain_sampler)
    samples = {"sampler": sampler_label(grid, num_timesteps), "spec": grid["spec"], "n": cfg.grid_samples,
               "seed": cfg.seed + GRID_SEED_OFFSET}
    real = {"n": cfg.grid_samples, "split": "test"}
    chain_facts = {"sampler": sampler_label(chain, num_timesteps), "n": cfg.chain_images}
    if k:
        rows = {"per_class": cfg.grid_per_class, "classes": k, "class_names": meta.get("class_names")}
        samples.update(n=k * cfg.grid_per_class, guidance=cfg.grid_guidance, **rows)
        real.update(n=k * cfg.grid_per_class, **rows)
    title = "Diffusion: the class-conditional model, with guidance" if k else "Diffusion: the DDPM (unconditional)"
    return {"kind": "diffusion-demo", "title": title, "checkpoint": str(source), "checkpoint_is": why,
            "model_step": meta.get("step"), "unet": meta.get("unet"), "diffusion": meta.get("diffusion"),
            "dataset": meta.get("dataset") or "mnist5k", "eval_samplers": list(cfg.eval_samplers),
            **({"eval_guidance": list(cfg.eval_guidance)} if k else {}),
            "eval_samples": cfg.eval_samples, "nll_images": 0 if k else cfg.nll_images,
            "samples": samples, "real": real, **({} if k else {"chain": chain_facts}),
            "description": f"Sampling, evaluation and pictures from {why}." + benchmark_pointer(source)}


def benchmark_pointer(source: Path) -> str:
    """Where a shipped checkpoint's full evaluation is (its sidecar's `benchmark`), as a sentence."""
    side = sidecar_path(source) if source.is_file() else None
    bench = json.loads(side.read_text()).get("benchmark") if side and side.exists() else None
    return f" Its full evaluation at n = 1000: {bench} (README: Diffusion)." if bench else ""


def draw_grids(cfg: DemoConfig, model, diffusion, meta: dict, test, out: Path) -> None:
    """samples.png and real.png: for a conditional model a row per class (class 0 at the top), the samples
    drawn with guidance `grid_guidance`; else `grid_samples` images, 8 a row."""
    import torch

    from .data.images import stratified_subset
    from .diffusion.generate import class_rows, generate, parse_sampler_spec
    from .diffusion.guidance import num_classes
    from .diffusion.visualize import save_grid

    k = num_classes(model)
    grid = parse_sampler_spec(cfg.grid_sampler)
    labels = class_rows(k, cfg.grid_per_class) if k else None
    n = len(labels) if k else cfg.grid_samples
    shape = tuple(int(v) for v in (meta["unet"]["in_channels"], meta["unet"]["image_size"], meta["unet"]["image_size"]))
    samples, _ = generate(model, diffusion, n, shape, grid["sampler"], grid["steps"], grid["eta"],
                          cfg.seed + GRID_SEED_OFFSET, n, torch.device(cfg.device), grid["spacing"],
                          class_labels=labels, guidance=cfg.grid_guidance if k else 0.0)
    nrow = cfg.grid_per_class if k else 8
    save_grid(samples, out / "samples.png", nrow=nrow)
    real = real_rows(test, k, cfg.grid_per_class) if k else stratified_subset(test, cfg.grid_samples, cfg.seed)
    save_grid(real, out / "real.png", nrow=nrow)


def real_rows(test, k: int, per_class: int):
    """The first `per_class` test images of each class, class 0 first: real images laid out as the class grid."""
    import numpy as np

    return np.concatenate([test.images[test.labels == c][:per_class] for c in range(k)])


def stage_prompting(cfg: DemoConfig, out: Path) -> None:
    from .prompting.comparison.compare import run_compare
    from .prompting.comparison.config import CompareConfig

    cc = CompareConfig(datasets=["mr"], rows=list(cfg.prompt_methods), shots=cfg.prompt_shots,
                       seeds=[cfg.prompt_seed], steps=cfg.prompt_steps, limit_test=cfg.prompt_limit_test,
                       device=cfg.device, curve=False)
    run_compare(cc, out)


# ---------------------------------------------------------------------------------------------
# The driver


def run_demo(cfg: DemoConfig) -> dict:
    """Run (or resume) every stage and render the report; return its headlines, path and duration."""
    from .report import headlines, render_report

    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    top = RunDir(root)
    top.save_config({"kind": "demo", **{k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()},
                     "sections": ["ddpm", "ddpm-cond", "prompting", "ddpm-train", "data"],
                     "description": "diffprompt demo: DDPM on MNIST 5k and prompt-based learning on MR."})
    top.mark_not_done()
    timing_file = root / "stages.json"
    timings = json.loads(timing_file.read_text()) if timing_file.exists() else {}
    stages = [
        ("data", "preview the image data sets", lambda p: stage_data(cfg, p)),
        ("ddpm-train", "train the tiny DDPM on MNIST 5k", lambda p: stage_train(cfg, p)),
        *[(name, f"sample, evaluate and draw {why.split(' (')[0]}", partial(stage_ddpm, cfg, source=src, why=why))
          for name, src, why in ddpm_sources(cfg, root / "ddpm-train")],
        ("prompting", "zero-shot and the five prompting methods on MR, K=16", lambda p: stage_prompting(cfg, p)),
    ]
    t_all = time.perf_counter()
    for i, (name, what, fn) in enumerate(stages, 1):
        path = root / name
        if (path / DONE_FILE).exists():
            log(f"[{i}/{len(stages) + 1}] {name}: already done in {path}, skipped")
            timings.setdefault(name, {})["skipped_last_run"] = True
            continue
        log(f"[{i}/{len(stages) + 1}] {name}: {what}")
        t0 = time.perf_counter()
        fn(path)
        timings[name] = {"seconds": round(time.perf_counter() - t0, 1), "skipped_last_run": False}
        top.save_json("stages.json", timings)
    log(f"[{len(stages) + 1}/{len(stages) + 1}] report")
    top.save_json("stages.json", timings)
    top.mark_done()
    report = render_report([root], out=root / "report.html", title="diffprompt demo")
    return {"headlines": headlines(root), "report": str(report), "seconds": round(time.perf_counter() - t_all, 1)}


def _cmd_demo(args) -> int:
    cfg = DemoConfig.quick(args.out) if args.quick else DemoConfig(out=args.out)
    if args.no_pretrained:
        cfg.pretrained = False
    if args.train_seconds is not None:
        cfg.train_seconds = args.train_seconds
    if args.fresh and Path(cfg.out).exists():
        shutil.rmtree(cfg.out)
    summary = run_demo(cfg)
    for headline in summary["headlines"]:
        print("\n" + headline.text())
    print(f"\ndemo finished in {summary['seconds']:.0f} s; open the report: {summary['report']}")
    return 0


def register(sub) -> None:
    from .cli import HelpFormatter

    p = sub.add_parser(
        "demo", help="the main job: a small DDPM and the prompting comparison, with an HTML report",
        description=("Run the whole toolkit once on the offline data, in under 10 minutes on 2 CPU cores:\n"
                     "train a tiny DDPM on MNIST 5k, sample it with DDPM and DDIM, measure FID, KID and\n"
                     "bits/dim, draw the forward and reverse processes, run zero-shot and the five prompting\n"
                     "methods on MR (K=16, one seed), and write runs/demo/report.html.\n\n"
                     "Stopped with Ctrl-C? Run it again: finished stages are kept and skipped.\n\n"
                     "example:\n  diffprompt demo\n  diffprompt demo --fresh --out runs/demo2"),
        formatter_class=HelpFormatter)
    p.add_argument("--out", default="runs/demo", help="the demo's run folder")
    p.add_argument("--fresh", action="store_true", help="delete the folder first and redo every stage")
    p.add_argument("--quick", action="store_true", help="tiny sizes everywhere (about a minute; for tests)")
    p.add_argument("--no-pretrained", action="store_true",
                   help="evaluate the model trained in the demo instead of the shipped pre-trained checkpoint "
                        "(the class-conditional one where installed)")
    p.add_argument("--train-seconds", type=float, default=None, help="time budget of the from-scratch training stage")
    p.set_defaults(func=_cmd_demo)
