"""Quality against training time: every checkpoint a training run kept (`--ckpt-every`), and its
final EMA model, scored by `evaluate` at one sampler, beside the real-data floor.

    diffprompt diffusion train --config ddpm-tiny-mnist --steps 100000 --time-budget 2640 \\
        --ckpt-every 1000 --out runs/uncond-44min                        # the run to score
    .venv/bin/python benchmarks/bench_diffusion_curve.py runs/uncond-44min --every 2000 --name diffusion_uncond_curve_mnist5k

For each scored checkpoint: its step, the minutes of training that reached it (from the run's
metrics.jsonl time stamps), FID, KID, precision, recall and confident share at n samples against the
full test split. Each evaluation is kept in RUN/curve/STEP/, so a stopped run resumes. Writes
benchmarks/results/NAME.{json,md} (with --name).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def checkpoints(run: Path, every: int) -> list[tuple[int, Path]]:
    """(step, file) of the kept checkpoints whose step is a multiple of `every`, then the final model."""
    kept = sorted((int(m.group(1)), p) for p in run.glob("ckpt-*.safetensors")
                  if (m := re.fullmatch(r"ckpt-(\d+)\.safetensors", p.name)) and int(m.group(1)) % every == 0)
    final = json.loads((run / "train_summary.json").read_text())["steps"]
    return kept + [(final, run / "model.safetensors")] if not kept or kept[-1][0] != final else kept


def minutes_at(lines: list[dict], step: int) -> float:
    """The minutes of training that reached `step`, from metrics.jsonl's lines' time stamps: the sum of
    the intervals between lines, where an interval far longer than its steps take elsewhere (the run
    was stopped and resumed: `--resume`) counts as those steps at the run's median pace; the time
    before the first line and after the last one before `step` at the same pace."""
    paces = sorted((b["time"] - a["time"]) / (b["step"] - a["step"]) for a, b in zip(lines, lines[1:]))
    pace = paces[len(paces) // 2]  # seconds per step
    seconds, at = lines[0]["step"] * pace, lines[0]["step"]
    for a, b in zip(lines, lines[1:]):
        if b["step"] > step:
            break
        seconds += min(b["time"] - a["time"], 5 * pace * (b["step"] - a["step"]))
        at = b["step"]
    return (seconds + (step - at) * pace) / 60


def score(run: Path, step: int, path: Path, dataset: str, lines: list[dict], args) -> dict:
    """The checkpoint's scores (evaluated once, kept in RUN/curve/STEP/); `dataset`: the run's, which a
    kept checkpoint does not name; `lines`: the run's metrics.jsonl."""
    from diffprompt.diffusion import evaluate

    out = run / "curve" / str(step)
    if not (out / "eval.json").exists():
        before = os.getloadavg()[0]
        evaluate(path, samplers=[args.sampler], n_samples=args.n, nll_images=0, batch_size=250, device="cpu",
                 dataset=dataset, out=out)
        record = json.loads((out / "eval.json").read_text())
        record["load_average_1m"] = {"before": before, "after": os.getloadavg()[0]}
        (out / "eval.json").write_text(json.dumps(record, indent=2))
    ev = json.loads((out / "eval.json").read_text())
    row = ev["samplers"][0]
    return {"step": step, "minutes": round(minutes_at(lines, step), 2),
            **{k: row[k] for k in ("sampler", "fid", "kid", "precision", "recall", "confident_share", "n")},
            "floor_fid": ev["real_floor"]["fid"], "floor_confident_share": ev["real_floor"]["confident_share"],
            "classifier": ev["classifier"], "load": ev.get("load_average_1m")}


def render(rows: list[dict], run: Path, cfg: dict, args) -> str:
    from diffprompt.diffusion.evaluation.markdown import feature_network_text

    lines = [f"# FID against training time: {run.name}", "",
             f"`{cfg.get('dataset')}`, U-Net preset `{cfg.get('unet_preset')}`, loss {cfg.get('loss_type')} "
             f"(weighting {cfg.get('loss_weighting')}), batch {cfg.get('batch_size')}, lr {cfg.get('lr')}, EMA "
             f"{cfg.get('ema_decay')}; each row: the EMA weights at that step, {args.sampler}, n = {args.n} against the "
             f"full test split (the floor: n stratified train images, FID {rows[0]['floor_fid']:.2f}).", "",
             "| step | images | minutes | FID | × floor | precision | recall | confident share |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['step']} | {r['step'] * cfg['batch_size']} | {r['minutes']:.1f} | {r['fid']:.2f} | {r['fid'] / r['floor_fid']:.2f} | "
                     f"{r['precision']:.3f} | {r['recall']:.3f} | {r['confident_share']:.3f} |")
    lines += ["", f"Real data: confident share {rows[0]['floor_confident_share']:.3f}. "
              f"{feature_network_text(rows[0]['classifier'])}", "",
              f"Command: `.venv/bin/python benchmarks/bench_diffusion_curve.py {' '.join(sys.argv[1:])}`"]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a training run folder with ckpt-STEP.safetensors files")
    ap.add_argument("--every", type=int, default=1000, help="score the kept checkpoints whose step is a multiple of this")
    ap.add_argument("--sampler", default="dpm++2m:20")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--name", default=None, help="also write benchmarks/results/NAME.{json,md}")
    args = ap.parse_args()
    run = Path(args.run)
    cfg = json.loads((run / "config.json").read_text())
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [score(run, step, path, cfg["dataset"], lines, args) for step, path in checkpoints(run, args.every)]
    text = render(rows, run, cfg, args)
    print(text)
    if args.name:
        (RESULTS / f"{args.name}.json").write_text(json.dumps({"run": run.name, "rows": rows}, indent=2))
        (RESULTS / f"{args.name}.md").write_text(text)


if __name__ == "__main__":
    main()
