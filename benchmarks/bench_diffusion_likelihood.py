"""L_simple against the hybrid loss: the exact bound and the FIDs of two checkpoints, side by side.

Ho et al. (2020) train on L_simple, which drops the variational bound's weights; Nichol & Dhariwal
(2021) add lambda * L_vlb (lambda = 0.001) and learn the variances, to win back the bound. Given
two checkpoints of the same data set and training budget (by default the shipped unconditional
MNIST 5k model and the hybrid run of `bench_diffusion_quality.py --tag hybrid`), this scores each
with the same samplers at n = 1000 and computes the exact bound (all T terms) on the same
--images stratified test images with the same noise, so the per-image difference is paired:

- the bound per model with its standard error, and split into the prior L_T, the decoder L_0 and
  the KL terms summed over decades of t (where in the chain the bits go);
- the paired difference of the second model against the first, with its standard error;
- FID, KID, precision/recall and confident share per sampler, beside the real-data floor.

Each evaluation is cached in the model's --model WORK folder (the sampler table's cache layout),
so scores that `bench_diffusion_samplers.py` or `bench_diffusion_quality.py` made are reused.

    .venv/bin/python benchmarks/bench_diffusion_likelihood.py     # ~55 min per uncached bound on 2 cores

Writes benchmarks/results/diffusion_likelihood_mnist5k.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_MODELS = [["L_simple", "src/diffprompt/assets/ddpm-tiny-mnist5k.safetensors", "runs/bench-samplers-60min"],
                  ["hybrid", "runs/bench-ddpm-mnist5k-hybrid", "runs/bench-ddpm-mnist5k-hybrid/bench-samplers"]]


def score(name: str, checkpoint: str, work: str, args) -> dict:
    """One model's sampler scores and exact bound (cached in `work`), with its training recipe."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_diffusion_samplers import evaluate_each

    each = argparse.Namespace(checkpoint=checkpoint, work=work, samplers=args.samplers, n=args.n,
                              batch_size=args.batch_size, seed=args.seed, nll_images=0, nll_timesteps=0,
                              exact_nll_images=args.images)
    return {"name": name, "checkpoint": checkpoint, **evaluate_each(each)}


def paired(first: list[float], second: list[float]) -> dict:
    """Mean and standard error of second - first, image by image (the same images and noise for both)."""
    diffs = [y - x for x, y in zip(first, second, strict=True)]
    n = len(diffs)
    mean = sum(diffs) / n
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    return {"mean": mean, "stderr": sd / math.sqrt(n), "images": n, "second_lower": sum(d < 0 for d in diffs)}


def recipe(r: dict) -> str:
    d = r["diffusion"]
    weighting = f", {d['loss_weighting']}" if d["loss_weighting"] != "none" else ""
    weighting += f"-{d['min_snr_gamma']:g}" if d["loss_weighting"] == "min_snr" else ""
    weighting += f" (γ = {d['p2_gamma']:g}, k = {d['p2_k']:g})" if d["loss_weighting"] == "p2" else ""
    lam = f" (λ = {d['vlb_weight']:g})" if d["loss_type"] == "hybrid" else ""
    return f"{d['loss_type']}{lam}{weighting}, Σ {d['variance']}"


def markdown(models: list[dict], diff: dict, machine: dict, command: str) -> str:
    first = models[0]
    b0 = first["nll_exact"]
    bands = [f"t = {b['t_from']}–{b['t_to']}" for b in b0["band_bpd"]]
    lines = ["# L_simple against the hybrid loss: the exact bound and FID", "",
             f"Every model on the same {b0['images']} stratified test images with the same noise (exact bound, all "
             f"{b0['timesteps']} terms, bits/dim; ± one standard error). Features: the `{first['classifier']['key']}` network "
             f"(sha256 `{first['classifier']['sha256'][:12]}`).", "",
             "| model | recipe | steps | bits/dim | prior L_T | decoder L_0 | " + " | ".join(bands) + " |",
             "| --- | --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(bands)]
    for r in models:
        b = r["nll_exact"]
        lines.append(f"| {r['name']} | {recipe(r)} | {r['step']} | **{b['bpd']:.3f} ± {b['bpd_stderr']:.3f}** | "
                     f"{b['prior_bpd']:.1e} | {b['decoder_bpd']:.3f} | "
                     + " | ".join(f"{band['bpd']:.3f}" for band in b["band_bpd"]) + " |")
    second = models[1]["name"]
    lines += ["", f"Paired difference {second} − {first['name']} over the {diff['images']} images: "
              f"**{diff['mean']:+.3f} ± {diff['stderr']:.3f} bits/dim**; {second} is lower on {diff['second_lower']} "
              f"of them.", "", f"Samples, n = {first['n_samples']} against the test split:", "",
              "| model | sampler | FID | KID × 10³ | precision | recall | confident share | FID / floor |",
              "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in models:
        floor = r["real_floor"]["fid"]
        lines += [f"| {r['name']} | {s['sampler']} | {s['fid']:.2f} | {s['kid'] * 1e3:.2f} | {s['precision']:.3f} | "
                  f"{s['recall']:.3f} | {s['confident_share']:.3f} | {s['fid'] / floor:.2f} |" for s in r["samplers"]]
    floor = first["real_floor"]
    lines += [f"| real-data floor | {floor['what']} | {floor['fid']:.2f} | {floor['kid'] * 1e3:.2f} | "
              f"{floor['precision']:.3f} | {floor['recall']:.3f} | {floor['confident_share']:.3f} | 1.00 |",
              "", f"Machine: {machine.get('cpu_model')}, {machine.get('cpu_count')} cores, torch {machine.get('torch')}.",
              "", "Command:", "", "```", command, "```", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", nargs=3, action="append", metavar=("NAME", "CHECKPOINT", "WORK"),
                    help="a model to compare (twice: the first is the baseline of the paired difference); "
                         "default: the shipped L_simple MNIST 5k model and the hybrid run")
    ap.add_argument("--samplers", default="dpm++2m-sde:20,dpm++2m:20,ddpm:50,ddpm:100")
    ap.add_argument("--images", type=int, default=1000, help="stratified test images of the exact bound")
    ap.add_argument("--n", type=int, default=1000, help="samples per sampler, and floor images")
    args, specs = parse_pair(ap, "diffusion_likelihood_mnist5k", DEFAULT_MODELS)
    models = [score(*spec, args) for spec in specs]
    diff = paired(*(m["nll_exact"]["image_bpd"] for m in models))
    write_results(args, {"models": models, "paired_difference": diff},
                  lambda r: markdown(models, diff, r["machine"], r["command"]))


def parse_pair(ap: argparse.ArgumentParser, name: str, default_models: list) -> tuple[argparse.Namespace, list]:
    """The options every paired-checkpoint benchmark shares, parsed; the two models (--model twice, or the
    defaults); torch on 2 threads."""
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--name", default=name)
    ap.add_argument("--results", default=str(RESULTS), help="folder of the results files")
    args = ap.parse_args()
    specs = args.model or default_models
    if len(specs) != 2:
        ap.error("give --model twice (a baseline and the model compared with it), or neither")
    import torch

    torch.set_num_threads(2)
    return args, specs


def write_results(args, result: dict, render) -> None:
    """<--results>/<--name>.json (the result with the machine and the command line) and .md (render(result)),
    then print the table."""
    from diffprompt.diffusion.evaluation.evaluate_model import machine_info

    command = ".venv/bin/python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    result = {**result, "machine": machine_info(), "command": command}
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (results / f"{args.name}.md").write_text(render(result))
    print((results / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
