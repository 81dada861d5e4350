"""Does a recipe's lower training loss carry to held-out images? Two checkpoints' bits/dim on training
images and on test images, paired.

A model that fits its training images better than another but is no better on the test split has
spent the difference on memorising them. Given two checkpoints of the same data set (by default the
shipped unconditional MNIST 5k model, constant learning rate, and the same recipe with a cosine
decay, `bench_diffusion_quality.py --tag cosine`), this computes each model's bits/dim on --images
stratified training images and as many stratified test images, with the same timesteps and noise
for both models, so the per-image difference between the models is paired on each split:

- bits/dim per model and split, ± one standard error (the unbiased estimate from --timesteps
  stratified timesteps per image; --timesteps 0: the exact bound, T calls per image);
- the paired difference second − first on each split, with its standard error: a difference that
  is negative on the training split and not on the test split is overfitting.

    .venv/bin/python benchmarks/bench_diffusion_overfitting.py      # ~6 min on 2 cores

Writes benchmarks/results/diffusion_overfitting_mnist5k.{json,md}.
"""

from __future__ import annotations

import argparse

from bench_diffusion_likelihood import paired, parse_pair, write_results

DEFAULT_MODELS = [["constant lr", "src/diffprompt/assets/ddpm-tiny-mnist5k.safetensors"],
                  ["cosine lr decay", "runs/bench-ddpm-mnist5k-cosine"]]
SPLITS = ("train", "test")


def split_bounds(path: str, args) -> dict:
    """One model's bits/dim on the stratified images of each split, with each image's value."""
    import torch

    from diffprompt.data import load_images
    from diffprompt.data.splits import stratified_sample
    from diffprompt.diffusion.checkpoints import load_model
    from diffprompt.diffusion.evaluation.bits_per_dim import nll_on_images
    from diffprompt.diffusion.pixels import images_to_tensor

    model, diffusion, meta = load_model(path, torch.device("cpu"))
    data = load_images(args.dataset or meta["dataset"])
    out = {"checkpoint": path, "step": meta.get("step"), "dataset": meta["dataset"]}
    for split in SPLITS:
        part = data.split(split)
        x0 = images_to_tensor(part.images[stratified_sample(part.labels, args.images, seed=args.seed)])
        out[split] = nll_on_images(model, diffusion, x0, batch_size=args.batch_size, seed=args.seed,
                                   device=torch.device("cpu"), num_t=args.timesteps, split=split)
    return out


def markdown(models: list[dict], diffs: dict, machine: dict, command: str, args) -> str:
    what = "the exact bound" if not args.timesteps else f"the unbiased estimate from {args.timesteps} timesteps"
    lines = ["# Bits/dim on training images against test images", "",
             (f"{args.images} stratified images of each split of `{models[0]['dataset']}`, the same timesteps and "
              f"noise for every model ({what}; bits/dim ± one standard error)."), "",
             "| model | checkpoint | step | train bits/dim | test bits/dim | test − train |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for r in models:
        tr, te = r["train"], r["test"]
        lines.append(f"| {r['name']} | `{r['checkpoint']}` | {r['step']} | {tr['bpd']:.3f} ± {tr['bpd_stderr']:.3f} | "
                     f"{te['bpd']:.3f} ± {te['bpd_stderr']:.3f} | {te['bpd'] - tr['bpd']:+.3f} |")
    second, first = models[1]["name"], models[0]["name"]
    lines += ["", f"Paired difference {second} − {first}, image by image:", "",
              "| split | difference (bits/dim) | images where it is lower |", "| --- | ---: | ---: |"]
    lines += [f"| {s} | {diffs[s]['mean']:+.4f} ± {diffs[s]['stderr']:.4f} | {diffs[s]['second_lower']} of "
              f"{diffs[s]['images']} |" for s in SPLITS]
    lines += ["", f"Machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} cores, torch {machine.get('torch')}.",
              "", "Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs=2, action="append", metavar=("NAME", "CHECKPOINT"),
                    help="a model to compare (twice: the first is the baseline of the paired differences); "
                         "default: the shipped MNIST 5k model and the cosine-decay run")
    ap.add_argument("--images", type=int, default=500, help="stratified images of each split")
    ap.add_argument("--timesteps", type=int, default=50, help="timesteps of the estimate (0: the exact bound)")
    ap.add_argument("--dataset", default=None, help="the image set (default: the first checkpoint's)")
    args, specs = parse_pair(ap, "diffusion_overfitting_mnist5k", DEFAULT_MODELS)
    models = [{"name": name, **split_bounds(path, args)} for name, path in specs]
    diffs = {s: paired(models[0][s]["image_bpd"], models[1][s]["image_bpd"]) for s in SPLITS}
    write_results(args, {"models": models, "paired_difference": diffs},
                  lambda r: markdown(models, diffs, r["machine"], r["command"], args))

if __name__ == "__main__":
    main()
