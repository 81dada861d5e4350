"""`diffprompt diffusion ...`: train, sample, evaluate and visualize a DDPM."""

from __future__ import annotations

import argparse

from ..cli import add_command, add_group
from ..tracking import NO_TRACKER, TRACKERS
from .choices import DEFAULT_EVAL_SAMPLERS, DEFAULT_STEPS, MIXED_PRECISION, SAMPLER_NAMES, SPACINGS, UNET_PRESETS, Recipe
from .config import TrainConfig, preset_names

TRAIN_DEFAULTS = TrainConfig()  # what a flag left out means, unless a config layer below the flags sets it

# The handlers below import the library when they run: `diffprompt --help` must not import torch.

TRAIN_HELP = """\
Train a DDPM (Ho et al. 2020) on an image data set; sampling uses the EMA weights.

With no arguments this is a quick CPU run: the tiny U-Net on MNIST 5k for 200 steps
(a few minutes on a laptop), written to runs/ddpm-mnist5k-TIME/.

Config: TrainConfig's defaults <- --config FILE.toml or a shipped training preset (ddpm-tiny-mnist,
ddpm-cifar10) <- --set key=value (model.KEY for U-Net fields) <- explicit flags such as --steps and
--unet (the U-Net architecture preset alone). The resolved config is saved as config.json in the
run folder. Several processes or GPUs: run the same command under `accelerate launch` or `torchrun`.

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

Samplers: ddpm (ancestral: all T steps, or --steps of the chain respaced as in Nichol & Dhariwal
2021), ddim (Song et al. 2021; --eta 0 is deterministic) and
DPM-Solver++ (Lu et al. 2022) in 20-50 network calls: dpm++2m (second order), dpm++3m (third
order) and dpm++2m-sde (the SDE variant: fresh noise at every step, like DDPM's).
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
For several samplers: FID, KID x 10^3 and improved precision/recall against the full test split
in a feature network's space (the network shipped for the data set, pinned by its sha256, so the
numbers are the same on every machine; --feature-net FILE for your own; a set without one gets a
network trained on this machine and cached), the real-data floor (as many
stratified train images, scored the same way), the share of confidently classified samples,
class histograms, and sampling time per image; bits/dim (the full bound) on a stratified sample
of test images (its finished batches are kept, so the same command resumes a stopped bound).
FID needs n >= 1000 to be trusted (below it is marked biased: read KID).
Writes eval.json and eval.md into the run folder.

Sampler specs: ddpm[:STEPS][:SPACING], ddim:STEPS[:ETA][:SPACING], dpm++2m|dpm++3m|dpm++2m-sde:STEPS[:SPACING].

A model trained with --conditional is sampled with the classes requested in the training split's
proportions (evenly on a balanced set) at each --guidance scale w (default 0); each row adds the
conditional accuracy (the share of samples the classifier assigns to the class asked for), and eval-guidance.png plots FID and conditional
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

FEATURE_NET_HELP = """\
The feature network is the yardstick of every FID, KID, precision/recall, confident share and
conditional accuracy. diffprompt ships one for mnist5k, mnist10k, fashion-mnist and twemoji
(benchmarks/results/feature_nets.md). For your own images, train one once, check its test
accuracy, and pass the same file to every evaluation you want to compare:

examples:
  diffprompt diffusion feature-net show mnist5k
  diffprompt diffusion feature-net train path/to/images --out my-features.safetensors --epochs 20
  diffprompt diffusion evaluate runs/my-model --feature-net my-features.safetensors
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
    for add in (_add_train, _add_sample, _add_evaluate, _add_feature_net, _add_visualize, _add_export):
        add(group)


def _add_train(group) -> None:
    p = add_command(group, "train", "train a DDPM (quick CPU default)", TRAIN_HELP)
    p.add_argument("--config", metavar="FILE_OR_PRESET",
                   help=f"a TOML config file, or a shipped training preset ({', '.join(preset_names())})")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable), e.g. --set lr=2e-4 --set model.dropout=0.0")
    _config_flag(p, "--dataset", "data set name or folder")
    _config_flag(p, "--unet", "the U-Net architecture preset", dest="unet_preset", choices=UNET_PRESETS)
    _config_flag(p, "--steps", "optimizer steps", type=int)
    _config_flag(p, "--batch-size", "global batch size (split across processes)", type=int)
    _config_flag(p, "--lr", "peak learning rate", type=float)
    _config_flag(p, "--seed", "random seed", type=int)
    _config_flag(p, "--device", "auto, cpu, cuda or mps")
    _config_flag(p, "--mixed-precision", "mixed precision on GPUs", choices=MIXED_PRECISION)
    _config_flag(p, "--ckpt-every", "also keep ckpt-STEP.safetensors every N steps (0: only the end)", type=int)
    _config_flag(p, "--conditional", "class-conditional, for classifier-free guidance: a class embedding, labels "
                 "dropped to 'no class' with probability cond_drop_prob", action=argparse.BooleanOptionalAction)
    _config_flag(p, "--hflip", "random horizontal flips (off for digits: they are not mirror-symmetric)",
                 action=argparse.BooleanOptionalAction)
    _config_flag(p, "--time-budget", "stop after this many seconds of training (0: no budget)", dest="time_budget_s",
                 type=float)
    _config_flag(p, "--log-with", "also send metrics.jsonl's lines and the samples to TensorBoard (RUN/tensorboard/) "
                 "or W&B", choices=(NO_TRACKER, *TRACKERS))
    p.add_argument("--out", help="run folder (default runs/ddpm-DATASET-TIME)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run exactly from its last.safetensors")
    p.set_defaults(func=cmd_train)


def _config_flag(p, flag: str, help: str, dest: str | None = None, **kw) -> None:
    """A flag that sets a `TrainConfig` field; its help shows the field's default, the one source of it.
    Not given (None), the field keeps what the config layers below the flags say."""
    dest = dest or flag.removeprefix("--").replace("-", "_")
    p.add_argument(flag, dest=dest, default=None, help=f"{help} (default: {getattr(TRAIN_DEFAULTS, dest)}, "
                   "unless --config or --set says otherwise)", **kw)


def _add_sample(group) -> None:
    p = add_command(group, "sample", "draw samples: PNG grid or .npz", SAMPLE_HELP)
    p.add_argument("path", metavar="RUN_DIR_OR_CKPT",
                   help="a training run folder, a .safetensors checkpoint, a diffusers folder or a hub id")
    p.add_argument("--n", type=int, default=64, help="number of samples")
    _sampler_arguments(p, default="dpm++2m")
    p.add_argument("--class", dest="class_", metavar="CLASS",
                   help="conditional models: a class index or name, or all (--n of each, a row per class)")
    p.add_argument("--guidance", type=float, default=0.0,
                   help="classifier-free guidance scale w with --class (0: the plain conditional model)")
    p.add_argument("--out", help="grid.png or samples.npz (default RUN_DIR/samples-SAMPLER-STEPS[-CLASS-wW].png)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_sample)


def _add_evaluate(group) -> None:
    p = add_command(group, "evaluate", "FID/KID, confident share, bits/dim, sampling time", EVALUATE_HELP)
    p.add_argument("path", metavar="RUN_DIR_OR_CKPT")
    p.add_argument("--samplers", default=DEFAULT_EVAL_SAMPLERS,
                   help="comma-separated specs: ddpm, ddim:STEPS[:ETA][:SPACING], dpm++2m|dpm++3m|dpm++2m-sde:STEPS[:SPACING]")
    p.add_argument("--n-samples", type=int, default=1000, help="samples per sampler")
    p.add_argument("--nll-images", type=int, default=100, help="test images for bits/dim (0 skips it; T model calls each)")
    p.add_argument("--nll-timesteps", type=int, default=0,
                   help="0: the exact bound (T calls per image); K: its unbiased estimate from K stratified timesteps")
    p.add_argument("--guidance", metavar="W,W,...",
                   help="conditional models: comma-separated guidance scales to sample at (default 0)")
    p.add_argument("--dataset", help="data set (default: the one the model was trained on)")
    p.add_argument("--feature-net", metavar="FILE", help="score in this feature network's space (a .safetensors from "
                   "`feature-net train`) instead of the data set's")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", choices=["ema", "raw"], default="ema",
                   help="raw: a training checkpoint's optimised weights instead of their EMA (what the EMA buys)")
    p.add_argument("--out", help="folder for eval.json/eval.md (default: the run folder)")
    p.set_defaults(func=cmd_evaluate)


def _add_feature_net(group) -> None:
    sub = add_group(group, "feature-net", "the feature network FID is measured with: show, train", FEATURE_NET_HELP)
    p = add_command(sub, "show", "which network scores a data set, or what a network file holds", FEATURE_NET_HELP)
    p.add_argument("target", metavar="DATASET_OR_FILE", help="a data set name or folder, or a .safetensors file")
    p.set_defaults(func=cmd_feature_net_show)
    p = add_command(sub, "train", "train a feature network for your data set", FEATURE_NET_HELP)
    p.add_argument("dataset", metavar="DATASET", help="a data set name or a folder of images (with train/test splits)")
    p.add_argument("--out", required=True, help="the network file to write (.safetensors, with a .json sidecar)")
    defaults = Recipe()
    p.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the train split")
    p.add_argument("--rotate", type=float, default=defaults.rotate, help="random rotations up to this many degrees")
    p.add_argument("--shift", type=int, default=defaults.shift, help="random shifts up to this many pixels")
    p.add_argument("--hflip", action="store_true", help="random mirror images (not for digits or text)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.set_defaults(func=cmd_feature_net_train)


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
    p.add_argument("--sampler", choices=SAMPLER_NAMES, default=default, help="the reverse-process loop")
    p.add_argument("--steps", type=int, default=None, help=f"network calls per image (default: {steps})")
    p.add_argument("--eta", type=float, default=0.0, help="DDIM eta: 0 deterministic, 1 DDPM-like")
    p.add_argument("--spacing", choices=SPACINGS, default="linspace", help="which timesteps the samplers visit (ddpm: when --steps < T)")


def cmd_train(args) -> int:
    from .training import train_or_resume

    flags = {k: getattr(args, k) for k in ("dataset", "unet_preset", "steps", "batch_size", "lr", "seed", "device",
                                           "mixed_precision", "ckpt_every", "conditional", "hflip", "time_budget_s",
                                           "log_with")}
    train_or_resume(args.config, args.sets, out=args.out, resume=args.resume, **flags)
    return 0


def cmd_sample(args) -> int:
    from .generate import sample_model

    print(sample_model(args.path, args.n, args.sampler, args.steps, args.eta, args.spacing, args.class_, args.guidance,
                       args.out, args.seed, args.batch_size, args.device))
    return 0


def cmd_evaluate(args) -> int:
    from .evaluation.evaluate_model import evaluate
    from .evaluation.markdown import render_markdown

    res = evaluate(args.path, samplers=args.samplers, n_samples=args.n_samples, nll_images=args.nll_images,
                   batch_size=args.batch_size, seed=args.seed, device=args.device, dataset=args.dataset, out=args.out,
                   nll_timesteps=args.nll_timesteps, guidance=args.guidance, feature_net=args.feature_net,
                   weights=args.weights)
    print(render_markdown(res))
    return 0


def cmd_feature_net_show(args) -> int:
    import json

    from .evaluation.feature_networks import describe_network

    print(json.dumps(describe_network(args.target), indent=2))
    return 0


def cmd_feature_net_train(args) -> int:
    import json

    from ..device import choose_device
    from .evaluation.feature_networks import train_network

    recipe = Recipe(epochs=args.epochs, rotate=args.rotate, shift=args.shift, hflip=args.hflip)
    print(json.dumps(train_network(args.dataset, args.out, recipe, args.seed, choose_device(args.device)), indent=2))
    return 0


def cmd_visualize(args) -> int:
    from .visualize import visualize_model

    paths = visualize_model(args.path, args.out, args.n, args.sampler, args.steps, args.eta, args.spacing, args.frames,
                            args.dataset, args.seed, args.device)
    for p in paths.values():
        print(p)
    return 0


def cmd_export(args) -> int:
    from .interop.diffusers_export import export_diffusers

    print(export_diffusers(args.path, args.out))
    return 0
