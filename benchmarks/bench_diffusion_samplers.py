"""Samplers on one checkpoint, all at n = 1000: quality against network calls, and speed against diffusers.

For each sampler (by default DDPM-1000, DDIM 10/20/50/100 and 100 with eta = 1, DPM-Solver++(2M)
5/10/15/20/50 and 20 with trailing spacing, DPM-Solver++(3M) 10/20, DPM-Solver++(2M) SDE
10/20/50/100): FID, KID x 10^3, improved precision/recall, confident share and seconds per image,
each on n samples against the full test split, beside the real-data floor (n stratified train images, same n).
Bits/dim on a stratified sample of test images: the unbiased 50-timestep estimate on --nll-images
images, and the exact T-term bound on --exact-nll-images of them as a cross-check.

Timings come from a separate pass, meant to run with the machine otherwise idle (the quality pass
is deterministic and may share the machine): seconds per image for each sampler on --timing-n
images in one batch, and two comparisons, each interleaved over --repeats rounds:
- sampling loop: our DPMSolverPPSampler against diffusers' DPMSolverMultistepScheduler (20 steps,
  batch 250, same network): the ratio is loop overhead, the network calls being the same;
- evaluation overhead: features + FID + KID + precision/recall for n samples.

Each sampler's result is kept in --work as it finishes, so a stopped run resumes where it was. With
--no-timing the results are written from the quality pass alone (another checkpoint, a few samplers).

    .venv/bin/python benchmarks/bench_diffusion_samplers.py --quality-only   # ~90 min on 2 cores, may share them
    .venv/bin/python benchmarks/bench_diffusion_samplers.py                  # the timing pass, ~6 min, idle machine

Writes benchmarks/results/diffusion_samplers_mnist5k.{json,md,png} (the png: FID against network calls).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_SAMPLERS = ("dpm++2m:5,dpm++2m:10,dpm++2m:15,dpm++2m:20,dpm++2m:50,"
                    "ddim:10,ddim:20,ddim:50,ddim:100,ddpm,"
                    "dpm++2m:20:trailing,ddim:100:1.0,"  # does spacing or noise close the ODE's gap?
                    "dpm++3m:10,dpm++3m:20,dpm++2m-sde:10,dpm++2m-sde:20,dpm++2m-sde:50,dpm++2m-sde:100")  # a higher order; the SDE
SHIPPED = resources.files("diffprompt") / "assets" / "ddpm-tiny-mnist5k.safetensors"


def evaluate_each(args) -> dict:
    """One `evaluate` per sampler (cached in --work), then bits/dim; merged into one result."""
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    work = Path(args.work)
    rows, first = [], None
    for spec in args.samplers.split(","):
        part = work / spec.replace(":", "-").replace("+", "p")
        if not (part / "eval.json").exists():
            uptime = os.getloadavg()[0]
            evaluate(args.checkpoint, samplers=[spec], n_samples=args.n, nll_images=0, batch_size=args.batch_size,
                     seed=args.seed, device="cpu", out=part)
            _merge_load(part / "eval.json", uptime)
        r = json.loads((part / "eval.json").read_text())
        first = first or r
        rows += r["samplers"]
    nll = {}
    for key, images, num_t in (("nll", args.nll_images, args.nll_timesteps), ("nll_exact", args.exact_nll_images, 0)):
        part = work / f"{key}-{images}-images"  # a changed count is computed anew, not read from the cache
        if images and not (part / "eval.json").exists():
            evaluate(args.checkpoint, samplers=[], n_samples=args.n, nll_images=images, nll_timesteps=num_t,
                     batch_size=args.batch_size, seed=args.seed, device="cpu", out=part)
        if images:
            nll[key] = json.loads((part / "eval.json").read_text())["nll"]
    return {**{k: first[k] for k in ("checkpoint", "dataset", "step", "diffusion", "n_samples", "reference",
                                     "classifier", "class_names", "real_floor")}, "samplers": rows, **nll}


def _merge_load(path: Path, before: float) -> None:
    r = json.loads(path.read_text())
    r["load_average_1m"] = {"before": before, "after": os.getloadavg()[0]}
    path.write_text(json.dumps(r, indent=2))


def time_samplers(args) -> dict[str, float]:
    """Seconds per image of each sampler, --timing-n images in one batch (the quiet pass)."""
    import torch

    from diffprompt.diffusion.checkpoints import load_model
    from diffprompt.diffusion.generate import generate, parse_sampler_spec, sampler_label

    model, diffusion, meta = load_model(args.checkpoint, "cpu")
    u = meta["unet"]
    shape = (int(u["in_channels"]), int(u["image_size"]), int(u["image_size"]))
    out = {}
    for spec in map(parse_sampler_spec, args.samplers.split(",")):
        _, seconds = generate(model, diffusion, args.timing_n, shape, spec["sampler"], spec["steps"], spec["eta"],
                              args.seed, args.timing_n, torch.device("cpu"), spec["spacing"])
        out[sampler_label(spec, diffusion.num_timesteps)] = seconds / args.timing_n
    return out


def time_loops(args) -> dict:
    """Seconds for one batch through our DPM-Solver++(2M) loop and through diffusers', interleaved."""
    import torch
    from diffusers import DPMSolverMultistepScheduler

    from diffprompt.diffusion.checkpoints import load_model
    from diffprompt.diffusion.samplers import DPMSolverPPSampler, sample_loop

    model, diffusion, _ = load_model(args.checkpoint, "cpu")
    sched = DPMSolverMultistepScheduler(num_train_timesteps=diffusion.num_timesteps, trained_betas=diffusion.schedule.betas.numpy(),
                                        solver_order=2, algorithm_type="dpmsolver++", final_sigmas_type="zero")
    shape = (args.loop_batch, 1, 28, 28)
    x_T = torch.randn(shape, generator=torch.Generator().manual_seed(0))

    @torch.inference_mode()
    def ours():
        return sample_loop(diffusion, model, DPMSolverPPSampler(20), shape, x_T=x_T, clip_denoised=False)[0]

    @torch.inference_mode()
    def theirs():
        sched.set_timesteps(20)
        x = x_T
        for t in sched.timesteps:
            x = sched.step(model(x, t.expand(shape[0])), t, x).prev_sample
        return x

    times = {"ours": [], "diffusers": []}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("diffusers", theirs)):
            t0 = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t0)
    diff = float((ours() - out).abs().max())
    best = {k: min(v) for k, v in times.items()}
    return {"batch": args.loop_batch, "steps": 20, "seconds": times, "best": best,
            "speed_ratio": best["diffusers"] / best["ours"], "max_abs_difference": diff}


def time_metrics(args) -> dict:
    """Seconds to score n samples: features, FID, KID and precision/recall against the test split."""
    from diffprompt.data import load_images
    from diffprompt.data.images import stratified_subset
    from diffprompt.diffusion.evaluation.sample_scores import PR_NEIGHBOURS, score_images
    from diffprompt.diffusion.evaluation.feature_networks import feature_network
    from diffprompt.diffusion.evaluation.feature_metrics import knn_radii

    data = load_images("mnist5k")
    clf = feature_network("mnist5k", data)
    ref, _ = clf.run(data.split("test").images)
    images = stratified_subset(data.split("train"), args.n, args.seed)
    t0 = time.perf_counter()
    score_images(clf, images, ref, knn_radii(ref, PR_NEIGHBOURS), k=10, seed=args.seed)
    return {"n": args.n, "seconds": time.perf_counter() - t0}


def plot(result: dict, path: Path) -> None:
    from diffprompt.diffusion.visualize import fid_against_calls

    fig = fid_against_calls(result["samplers"], result["real_floor"])
    fig.axes[0].set_title(f"Sample quality against sampling cost ({result['dataset']}, tiny U-Net)")
    fig.tight_layout()
    fig.savefig(path)


def _row(name: str, calls, q: dict, seconds) -> str:
    kid = f"{q['kid'] * 1e3:.2f} ± {q['kid_std'] * 1e3:.2f}"
    s = "—" if seconds is None else f"{seconds:.3f}"
    return (f"| {name} | {calls} | {q['fid']:.2f} | {kid} | {q['precision']:.3f} | {q['recall']:.3f} | "
            f"{q['confident_share']:.3f} | {s} |")


def markdown(r: dict) -> str:
    from diffprompt.diffusion.evaluation.markdown import feature_network_text

    n, floor = r["n_samples"], r["real_floor"]
    by = {s["sampler"]: s for s in r["samplers"]}
    lines = [
        f"# Samplers at n = {n} on `{Path(r['checkpoint']).name}` ({r['dataset']})", "",
        f"Checkpoint `{Path(r['checkpoint']).name}` (step {r['step']}); every row scores {n} samples against the "
        f"{r['reference']}; the floor scores {floor['n']} stratified train images the same way. "
        f"{feature_network_text(r['classifier'])} KID is unbiased; precision/recall use k = 3 neighbours."
        + (" KID's ± is 0 where one subset of 1000 covers both sets: the value is then exact for these samples, "
           "and its spread over other draws is not measured." if all(x["kid_std"] == 0 for x in r["samplers"]) else ""),
        "",
        f"| sampler | network calls | FID (n = {n}) | KID × 10³ | precision | recall | confident share | s / image |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in sorted(r["samplers"], key=lambda s: (s["sampler"].split(" ")[0].rsplit("-", 1)[0], s["model_calls_per_image"])):
        lines.append(_row(s["sampler"], s["model_calls_per_image"], s, s["seconds_per_image"]))
    lines.append(_row(f"real-data floor ({floor['what']})", "—", floor, None))
    ddpm, dpm20, ddim50 = by.get("DDPM-1000"), by.get("DPM++2M-20"), by.get("DDIM-50")
    if ddpm and dpm20 and ddim50:
        lines += ["", f"Targets: DPM++2M-20 FID / DDPM-1000 FID = **{dpm20['fid'] / ddpm['fid']:.2f}** (target ≤ 1.1) "
                  f"with {ddpm['model_calls_per_image'] / dpm20['model_calls_per_image']:.0f}× fewer network calls; "
                  f"DDIM-50 / DDPM-1000 = **{ddim50['fid'] / ddpm['fid']:.2f}** (target ≤ 1.25)."]
        lines += [f"{name} FID / DDPM-1000 FID = **{by[name]['fid'] / ddpm['fid']:.2f}**."
                  for name in ("DPM++3M-20", "DPM++2M-SDE-20", "DPM++2M-SDE-50") if name in by]
    for key, what in (("nll", "unbiased estimate from {t} stratified timesteps per image"), ("nll_exact", "all {t} terms")):
        if key in r:
            b = r[key]
            lines += ["", f"Bits/dim ({what.format(t=b['timesteps'])}) on {b['images']} stratified test images: "
                      f"**{b['bpd']:.3f} ± {b['bpd_stderr']:.3f}** (± one standard error)."]
    if "loops" in r:
        lp = r["loops"]
        lines += ["", f"Sampling loop, DPM-Solver++(2M) 20 steps, batch {lp['batch']}, same network: ours "
                  f"{lp['best']['ours']:.2f} s, diffusers' DPMSolverMultistepScheduler {lp['best']['diffusers']:.2f} s "
                  f"(best of {len(lp['seconds']['ours'])}, interleaved): **{lp['speed_ratio']:.2f}×** "
                  f"(max |difference| of the outputs {lp['max_abs_difference']:.1e})."]
    if "metrics_time" in r:
        lines += ["", f"Scoring {r['metrics_time']['n']} samples (features, FID, KID, precision/recall): "
                  f"**{r['metrics_time']['seconds']:.1f} s**."]
    hist = r.get("class_names") or []
    lines += ["", "Class histograms (classifier argmax):", "", "| sampler | " + " | ".join(hist) + " |",
              "| --- |" + " ---: |" * len(hist)]
    lines += [f"| {s['sampler']} | " + " | ".join(map(str, s["class_histogram"])) + " |" for s in r["samplers"]]
    m = r["machine"]
    timing = (f"Seconds per image come from a separate timing pass ({r['timing_n']} images per sampler in one batch; "
              f"1-minute load average {r['uptime']['before']} before and {r['uptime']['after']} after it); the timing "
              f"pass took {r['wall_minutes']:.0f} min." if "timing_n" in r else
              "Seconds per image were measured while scoring, without a separate timing pass.")
    lines += ["", f"Machine: {m.get('cpu_model')}, {m.get('cpu_count')} cores, torch {m.get('torch')} "
              f"({m.get('torch_threads')} threads). {timing}", "", "Command:", "", "```", r["command"], "```", ""]
    return "\n".join(lines)


def add_timings(result: dict, args) -> None:
    """The quiet pass: seconds per image of each sampler, our loop against diffusers', and scoring time."""
    before, t0 = os.getloadavg()[0], time.time()  # run it on an otherwise idle machine
    quiet = time_samplers(args)
    for row in result["samplers"]:
        row["seconds_per_image_while_scoring"] = row["seconds_per_image"]
        row["seconds_per_image"] = quiet[row["sampler"]]
    result["timing_n"] = args.timing_n
    result["loops"] = time_loops(args)
    result["metrics_time"] = time_metrics(args)
    result.update(uptime={"before": round(before, 2), "after": round(os.getloadavg()[0], 2)},
                  wall_minutes=(time.time() - t0) / 60,  # the timing pass alone
                  command="\n".join(f".venv/bin/python benchmarks/bench_diffusion_samplers.py{flag}" + (
                      "" if args.checkpoint == str(SHIPPED) else f" --checkpoint {args.checkpoint}")
                      for flag in (" --quality-only", "")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=str(SHIPPED), help="a run folder or .safetensors (default: the shipped one)")
    ap.add_argument("--samplers", default=DEFAULT_SAMPLERS)
    ap.add_argument("--n", type=int, default=1000, help="samples per sampler, and floor images")
    ap.add_argument("--nll-images", type=int, default=1000)
    ap.add_argument("--nll-timesteps", type=int, default=50)
    ap.add_argument("--exact-nll-images", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--loop-batch", type=int, default=250)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timing-n", type=int, default=50, help="images per sampler in the timing pass")
    ap.add_argument("--quality-only", action="store_true",
                    help="run (or resume) the quality pass and stop; a later run without it reuses it and times")
    ap.add_argument("--no-timing", action="store_true",
                    help="write the results from the quality pass alone: seconds per image as measured while scoring")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "bench-samplers"))
    ap.add_argument("--name", default="diffusion_samplers_mnist5k")
    ap.add_argument("--results", default=str(RESULTS), help="folder of the results files")
    args = ap.parse_args()

    from diffprompt.diffusion.evaluation.evaluate_model import machine_info

    result = evaluate_each(args)
    if args.quality_only:
        return
    result["machine"] = machine_info()
    if args.no_timing:
        result["command"] = ".venv/bin/python " + " ".join(["benchmarks/bench_diffusion_samplers.py", *sys.argv[1:]])
    else:
        add_timings(result, args)
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (results / f"{args.name}.md").write_text(markdown(result))
    plot(result, results / f"{args.name}.png")
    print((results / f"{args.name}.md").read_text())


if __name__ == "__main__":
    main()
