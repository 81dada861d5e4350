"""`diffprompt diffusion ...`: train, sample, evaluate and visualize a DDPM."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import add_command, add_group
from ..errors import UserError
from ..tracking import NO_TRACKER, TRACKERS
from .choices import DEFAULT_STEPS, SAMPLER_NAMES, SPACINGS

# The handlers below import the library when they run: `diffprompt --help` must not import torch.

TRAIN_HELP = """\
Train a DDPM (Ho et al. 2020) on an image data set; sampling uses the EMA weights.

With no arguments this is a quick CPU run: the tiny U-Net on MNIST 5k for 200 steps
(a few minutes on a laptop), written to runs/ddpm-mnist5k-TIME/.

Config: defaults <- --config FILE.toml or a shipped preset (ddpm-tiny-mnist, ddpm-cifar10)
<- --set key=value (model.KEY for U-Net fields) <- explicit flags. The resolved config is saved
as config.json in the run folder. Several processes or GPUs: run the same command under
`accelerate launch` or `torchrun`.

examples:
  diffprompt diffusion train
  diffprompt diffusion train --steps 2000 --out runs/ddpm-mnist
  diffprompt diffusion train --config ddpm-tiny-mnist --set lr=5e-4 --set model.base_channels=64
  diffprompt diffusion train --resume runs/ddpm-mnist --steps 4000
  diffprompt diffusion train --conditional --steps 2000 --out runs/ddpm-mnist-cond
  accelerate launch --num_processes 2 -m diffprompt diffusion train --mixed-precision bf16
"""

SAMPLE_HELP = """\
Draw samples from a trained model (EMA weights) as a PNG grid or an .npz of uint8 images.

Samplers: ddpm (ancestral, all T steps), ddim (Song et al. 2021; --eta 0 is deterministic) and
dpm++2m (DPM-Solver++(2M), Lu et al. 2022: about as good in 20 network calls as DDPM in 1000).
--spacing picks the visited timesteps as diffusers names them (linspace, leading, trailing).

A model trained with --conditional takes --class (an index, a class name, or `all`: --n samples
of every class, a row each) and --guidance w, classifier-free guidance (Ho & Salimans 2022):
eps = (1 + w) eps(x, class) - w eps(x, no class); 0 is the plain conditional model.

examples:
  diffprompt diffusion sample runs/ddpm-mnist --n 64 --sampler dpm++2m --steps 20 --out grid.png
  diffprompt diffusion sample runs/ddpm-mnist --n 64 --sampler ddim --steps 50 --spacing trailing
  diffprompt diffusion sample runs/ddpm-mnist --n 1000 --sampler ddpm --out samples.npz
  diffprompt diffusion sample runs/ddpm-mnist-cond --class all --n 10 --guidance 2.0
"""

EVALUATE_HELP = """\
For several samplers: FID, KID x 10^3 and improved precision/recall (features of a small CNN
trained on the train split, cached) against the full test split, the real-data floor (as many
stratified train images, scored the same way), the share of confidently classified samples,
class histograms, and sampling time per image; bits/dim (the full bound) on a stratified sample
of test images. FID needs n >= 1000 to be trusted (below it is marked biased: read KID).
Writes eval.json and eval.md into the run folder.

Sampler specs: ddpm, ddim:STEPS[:ETA][:SPACING], dpm++2m:STEPS[:SPACING].

A model trained with --conditional is sampled with the classes requested evenly at each
--guidance scale w (default 0); each row adds the conditional accuracy (the share of samples the
classifier assigns to the class asked for), and eval-guidance.png plots FID and conditional
accuracy against w. Its bits/dim is given each test image's true label (w = 0).

examples:
  diffprompt diffusion evaluate runs/ddpm-mnist --samplers ddpm,ddim:50,dpm++2m:20 --n-samples 1000 --nll-images 1000
  diffprompt diffusion evaluate runs/ddpm-mnist-cond --samplers dpm++2m:20 --guidance 0,0.5,1,2,4
"""

EXPORT_HELP = """\
Write a model trained here in another library's format. --to diffusers writes a folder that
diffusers.DDPMPipeline.from_pretrained(OUT) loads: model_index.json, unet/ (a UNet2DModel config and
the EMA weights in safetensors) and scheduler/ (a DDPMScheduler config with the exact betas,
prediction and variance type). A U-Net part UNet2DModel cannot express is refused. Every
`diffprompt diffusion` command also reads such a folder, or a hub id (docs/interop.md).

example:
  diffprompt diffusion export runs/ddpm-mnist --to diffusers runs/ddpm-mnist-diffusers
  python -c "import diffusers; diffusers.DDPMPipeline.from_pretrained('runs/ddpm-mnist-diffusers')(batch_size=4)"
"""

VISUALIZE_HELP = """\
Pictures of the processes: forward.png (x_0 -> x_T at chosen t), reverse.png and reverse.gif
(the reverse chain x_T -> x_0), and pred_x0.png (the model's x_0 estimate along the chain).

example:
  diffprompt diffusion visualize runs/ddpm-mnist --n 8 --sampler ddpm
"""


def register(subparsers) -> None:
    group = add_group(subparsers, "diffusion", "train, sample, evaluate, visualize, export a DDPM",
                      "Denoising diffusion probabilistic models (DDPM; DDIM and DPM-Solver++ sampling).\n\n"
                      "example: diffprompt diffusion train && diffprompt diffusion sample runs/ddpm-mnist5k-*/")
    for add in (_add_train, _add_sample, _add_evaluate, _add_visualize, _add_export):
        add(group)


def _add_train(group) -> None:
    p = add_command(group, "train", "train a DDPM (quick CPU default)", TRAIN_HELP)
    p.add_argument("--config", metavar="FILE_OR_PRESET", help="TOML config file, or a shipped preset name (ddpm-tiny-mnist, ddpm-cifar10)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set lr=2e-4 --set model.dropout=0.0")
    p.add_argument("--dataset", help="data set name or folder (default mnist5k)")
    p.add_argument("--preset", dest="unet_preset", help="U-Net preset: tiny or cifar10")
    p.add_argument("--steps", type=int, help="optimizer steps (default 200)")
    p.add_argument("--batch-size", type=int, help="global batch size (default 32)")
    p.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="auto, cpu, cuda or mps (default auto)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), help="mixed precision on GPUs (default no)")
    p.add_argument("--ckpt-every", type=int, help="also keep ckpt-STEP.safetensors every N steps (default 0: only the end)")
    p.add_argument("--conditional", action=argparse.BooleanOptionalAction, default=None,
                   help="class-conditional, for classifier-free guidance: a class embedding, labels dropped to "
                        "'no class' with probability cond_drop_prob (default off)")
    p.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (default off: digits are not mirror-symmetric)")
    p.add_argument("--time-budget", dest="time_budget_s", type=float, help="stop after this many seconds of training")
    p.add_argument("--log-with", choices=(NO_TRACKER, *TRACKERS),
                   help="also send metrics.jsonl's lines and the samples to TensorBoard (RUN/tensorboard/) or W&B (default none)")
    p.add_argument("--out", help="run folder (default runs/ddpm-DATASET-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its last.safetensors")
    p.set_defaults(func=cmd_train)


def _add_sample(group) -> None:
    p = add_command(group, "sample", "draw samples: PNG grid or .npz", SAMPLE_HELP)
    p.add_argument("path", metavar="RUN_DIR_OR_CKPT",
                   help="a training run folder, a .safetensors checkpoint, a diffusers folder or a hub id")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    _sampler_arguments(p, default="dpm++2m")
    p.add_argument("--class", dest="class_", metavar="CLASS",
                   help="conditional models: a class index or name, or all (--n of each, a row per class)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="classifier-free guidance scale w with --class (default 0: the plain conditional model)")
    p.add_argument("--out", help="grid.png or samples.npz (default RUN_DIR/samples-SAMPLER-STEPS[-CLASS-wW].png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sample)


def _add_evaluate(group) -> None:
    p = add_command(group, "evaluate", "FID/KID, confident share, bits/dim, sampling time", EVALUATE_HELP)
    p.add_argument("path", metavar="RUN_DIR_OR_CKPT")
    p.add_argument("--samplers", default="ddpm,ddim:20,ddim:50,dpm++2m:10,dpm++2m:20",
                   help="comma-separated specs: ddpm, ddim:STEPS[:ETA][:SPACING], dpm++2m:STEPS[:SPACING]")
    p.add_argument("--n-samples", type=int, default=1000, help="samples per sampler")
    p.add_argument("--nll-images", type=int, default=100, help="test images for bits/dim (0 skips it; T model calls each)")
    p.add_argument("--nll-timesteps", type=int, default=0,
                   help="0: the exact bound (T calls per image); K: its unbiased estimate from K stratified timesteps")
    p.add_argument("--guidance", metavar="W,W,...",
                   help="conditional models: comma-separated guidance scales to sample at (default 0)")
    p.add_argument("--dataset", help="data set (default: the one the model was trained on)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="folder for eval.json/eval.md (default: the run folder)")
    p.set_defaults(func=cmd_evaluate)


def _add_visualize(group) -> None:
    p = add_command(group, "visualize", "forward/reverse process pictures and GIF", VISUALIZE_HELP)
    p.add_argument("path", metavar="RUN_DIR_OR_CKPT")
    p.add_argument("--n", type=int, default=8, help="images (rows) per picture")
    _sampler_arguments(p, default="ddpm")
    p.add_argument("--frames", type=int, default=10, help="columns of the strips")
    p.add_argument("--dataset", help="data set for the forward process (default: the model's)")
    p.add_argument("--out", help="folder for the pictures (default: the run folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_visualize)


def _add_export(group) -> None:
    p = add_command(group, "export", "write a model as a diffusers pipeline folder", EXPORT_HELP)
    p.add_argument("path", metavar="RUN_DIR_OR_CKPT", help="a training run folder or a .safetensors checkpoint")
    p.add_argument("--to", choices=("diffusers",), required=True, help="the format to write")
    p.add_argument("out", metavar="OUT", help="a new (or empty) folder")
    p.set_defaults(func=cmd_export)


def _sampler_arguments(p, default: str) -> None:
    steps = ", ".join(f"{k} {v or 'T'}" for k, v in DEFAULT_STEPS.items())
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=default, help=f"the reverse-process loop (default {default})")
    p.add_argument("--steps", type=int, default=None, help=f"network calls per image (default: {steps})")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like")
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="which timesteps ddim and dpm++2m visit")


def cmd_train(args) -> int:
    from .checkpoints import resumable_run_config
    from .config import resolve_config
    from .training import train

    flags = {k: getattr(args, k) for k in ("dataset", "unet_preset", "steps", "batch_size", "lr", "seed", "device",
                                           "mixed_precision", "ckpt_every", "conditional", "hflip", "time_budget_s",
                                           "log_with")}
    if args.resume:
        if args.config:
            raise UserError("--resume continues a run with its saved config; drop --config (use --set/flags to change e.g. --steps)")
        cfg = resolve_config(sets=args.sets, base=resumable_run_config(args.resume), **flags)
        train(cfg, resume=args.resume)
    else:
        train(resolve_config(args.config, args.sets, **flags), out=args.out)
    return 0


def _default_steps(sampler: str, steps: int | None) -> int | None:
    return steps if steps is not None else DEFAULT_STEPS[sampler]


def cmd_sample(args) -> int:
    from ..device import choose_device
    from ..progress import log
    from .checkpoints import load_model
    from .generate import generate, save_samples

    out = Path(args.out) if args.out else None
    if out is not None and out.suffix.lower() not in (".png", ".npz"):
        raise UserError(f"--out must end in .png (a grid) or .npz (uint8 images), got {out}")
    device = choose_device(args.device)
    model, diffusion, meta = load_model(args.path, device)
    labels, nrow = _class_labels(args.class_, args.n, meta, args.guidance)
    n = args.n if labels is None else len(labels)
    steps = _default_steps(args.sampler, args.steps)
    shape = (meta["unet"]["in_channels"], meta["unet"]["image_size"], meta["unet"]["image_size"])
    x, seconds = generate(model, diffusion, n, shape, args.sampler, steps, args.eta, args.seed, args.batch_size,
                          device, args.spacing, class_labels=labels, guidance=args.guidance)
    steps = steps or diffusion.num_timesteps
    if out is None:
        which = "" if labels is None else f"-class{args.class_}-w{args.guidance:g}"
        out = (Path(args.path) if Path(args.path).is_dir() else Path(".")) / f"samples-{args.sampler}-{steps}{which}.png"
    info = {} if labels is None else {"class_labels": labels.numpy(), "guidance": args.guidance}
    save_samples(x, out, nrow=nrow, sampler=args.sampler, steps=steps, eta=args.eta, spacing=args.spacing,
                 seed=args.seed, **info)
    log(f"{n} samples ({args.sampler}, {steps} steps, {seconds / n * 1000:.1f} ms/image) -> {out}")
    print(out)
    return 0


def _class_labels(choice: str | None, n: int, meta: dict, guidance: float):
    """(labels, grid row length) for `--class`: (None, None) without it; n of one class; or n of each (`all`)."""
    import torch

    from .generate import class_rows

    k = int(meta["unet"].get("num_classes", 0) or 0)
    if choice is None:
        if guidance:
            raise UserError("--guidance needs --class: the classes to guide towards (a class, or all)")
        return None, None
    if not k:
        raise UserError(f"{meta.get('path')} is an unconditional model (not trained with --conditional): "
                        "it takes no --class; drop --class and --guidance")
    if choice == "all":
        return class_rows(k, n), n
    names = list(meta.get("class_names") or [])
    if choice in names:
        return torch.full((n,), names.index(choice)), None
    if not choice.isdigit() or int(choice) >= k:
        known = ", ".join(names) if names else f"0..{k - 1}"
        raise UserError(f"unknown class {choice!r}; choose an index 0..{k - 1}, a name ({known}) or all")
    return torch.full((n,), int(choice)), None


def cmd_evaluate(args) -> int:
    from .evaluation.evaluate_model import evaluate
    from .evaluation.markdown import render_markdown

    res = evaluate(args.path, samplers=args.samplers, n_samples=args.n_samples, nll_images=args.nll_images,
                   batch_size=args.batch_size, seed=args.seed, device=args.device, dataset=args.dataset, out=args.out,
                   nll_timesteps=args.nll_timesteps, guidance=args.guidance)
    print(render_markdown(res))
    return 0


def cmd_visualize(args) -> int:
    from ..data import load_images
    from ..data.images import stratified_subset
    from ..device import choose_device
    from ..progress import log
    from .checkpoints import load_model, output_folder
    from .pixels import images_to_tensor
    from .samplers import make_sampler
    from .visualize import write_visualizations

    if args.n < 1:
        raise UserError(f"--n must be >= 1, got {args.n}")
    device = choose_device(args.device)
    model, diffusion, meta = load_model(args.path, device)
    loop = make_sampler(args.sampler, _default_steps(args.sampler, args.steps), args.eta, args.spacing)
    loop.timesteps(diffusion.num_timesteps)  # a bad step count fails now, before any work
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise UserError("the checkpoint does not name its data set; pass --dataset NAME")
    data = load_images(dataset)
    try:
        real = data.split("test")
    except UserError:  # a data set without a test split shows all its images
        real = data
    x0 = images_to_tensor(stratified_subset(real, args.n, args.seed))
    out = Path(args.out) if args.out else output_folder(args.path)
    paths = write_visualizations(model, diffusion, out, x0.to(device), n=args.n, sampler=loop, frames=args.frames,
                                 seed=args.seed, device=device)
    for p in paths.values():
        print(p)
    log(f"wrote {', '.join(Path(p).name for p in paths.values())} to {out}")
    return 0


def cmd_export(args) -> int:
    from .interop.diffusers_export import export_diffusers

    print(export_diffusers(args.path, args.out))
    return 0
