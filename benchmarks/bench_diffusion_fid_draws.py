"""How far does one draw of sampling noise move a FID at n = 1000? One checkpoint, several seeds.

A FID from n samples is itself a random variable: another seed draws other x_T (and, for a
stochastic sampler, other noise at every step), and the real-data floor scores other stratified
training images. This evaluates one checkpoint (by default the shipped unconditional MNIST 5k
model) with the same samplers at --seeds, and reports per seed each sampler's FID and its ratio to
that seed's floor, then per sampler the mean, the standard deviation over seeds and the range.

The samples depend on the seed only, not on --batch-size, so seed 0 reproduces the sampler table's
rows (`bench_diffusion_samplers.py`).

    .venv/bin/python benchmarks/bench_diffusion_fid_draws.py      # ~2.3 min per seed on 2 cores

Writes benchmarks/results/diffusion_fid_draws_mnist5k.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def draw(seed: int, args) -> dict:
    """One seed's evaluation (cached in --work/seedS): the floor and each sampler's FID."""
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    out = Path(args.work) / f"seed{seed}"
    if not (out / "eval.json").exists():
        evaluate(args.checkpoint, samplers=args.samplers, n_samples=args.n, nll_images=0, batch_size=args.batch_size,
                 seed=seed, device="cpu", out=out, sample_grids=False)
    r = json.loads((out / "eval.json").read_text())
    return {"seed": seed, "floor": r["real_floor"]["fid"], "fid": {s["spec"]: s["fid"] for s in r["samplers"]},
            "load_average_1m": r["machine"]["load_average_1m"], "feature_net": r["classifier"]["sha256"][:12],
            "step": r["step"]}


def summary(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def markdown(result: dict) -> str:
    draws, specs = result["draws"], result["samplers"]
    lines = ["# One checkpoint, several draws: the spread of FID at n = 1000", "",
             (f"`{result['checkpoint']}` (step {draws[0]['step']}), n = {result['n']} samples per row against the "
              f"full test split, sampling batch {result['batch_size']}; each seed draws other samples and scores "
              f"other stratified train images for the floor. Feature network `mnist` (sha256 "
              f"`{draws[0]['feature_net']}`)."), "",
             "| seed | floor | " + " | ".join(f"{s} FID | {s} × floor" for s in specs) + " |",
             "| ---: | ---: | " + " | ".join("---: | ---:" for _ in specs) + " |"]
    for d in draws:
        lines.append(f"| {d['seed']} | {d['floor']:.2f} | "
                     + " | ".join(f"{d['fid'][s]:.2f} | {d['fid'][s] / d['floor']:.2f}" for s in specs) + " |")
    lines += ["", "| | floor | " + " | ".join(f"{s} FID | {s} × floor" for s in specs) + " |",
              "| --- | ---: | " + " | ".join("---: | ---:" for _ in specs) + " |"]
    stats = result["summary"]
    for key in ("mean", "sd", "min", "max"):
        lines.append(f"| {key} | {stats['floor'][key]:.2f} | " + " | ".join(
            f"{stats[s]['fid'][key]:.2f} | {stats[s]['ratio'][key]:.2f}" for s in specs) + " |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default="src/diffprompt/assets/ddpm-tiny-mnist5k.safetensors")
    ap.add_argument("--samplers", default="dpm++2m-sde:20,dpm++2m:20")
    ap.add_argument("--seeds", default="0,1,2,3,4,5,6,7")
    ap.add_argument("--n", type=int, default=1000, help="samples per row")
    ap.add_argument("--batch-size", type=int, default=100, help="sampling batch (memory and speed only)")
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-fid-draws"))
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--name", default="diffusion_fid_draws_mnist5k")
    args = ap.parse_args()
    args.samplers = [s for s in args.samplers.split(",") if s]
    draws = [draw(int(s), args) for s in args.seeds.split(",") if s]
    stats = {"floor": summary([d["floor"] for d in draws])}
    for s in args.samplers:
        stats[s] = {"fid": summary([d["fid"][s] for d in draws]),
                    "ratio": summary([d["fid"][s] / d["floor"] for d in draws])}
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_diffusion_likelihood import write_results

    write_results(args, {"checkpoint": args.checkpoint, "n": args.n, "batch_size": args.batch_size,
                         "samplers": args.samplers, "draws": draws, "summary": stats}, markdown)


if __name__ == "__main__":
    main()
