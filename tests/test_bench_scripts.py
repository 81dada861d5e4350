"""Benchmark scripts whose whole path runs on a CPU at toy size: the prepared GPU benchmark
(benchmarks/gpu_paper_preset.py: the paper preset's settings for a short budget, training,
evaluation, its results file) and the quality-against-time curve (benchmarks/bench_diffusion_curve.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_diffusion_cli import TINY, write_folder

from diffprompt.cli import main

ROOT = Path(__file__).resolve().parents[1]
ENV = {"OMP_NUM_THREADS": "1", "DIFFPROMPT_QUIET": "1", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}


@pytest.mark.usefixtures("one_thread")
def test_the_gpu_script_runs_end_to_end_at_toy_size(tmp_path):
    folder = write_folder(tmp_path / "bars")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_paper_preset.py"), "--toy", "--dataset",
                           str(folder), "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((out / "gpu_paper_preset.json").read_text())
    config = json.loads((out / "config.json").read_text())
    # the preset's paper settings, with the short-budget ones the script documents
    assert config["unet_preset"] == "cifar10" and config["variance"] == "fixed_large" and config["hflip"] is True
    assert config["warmup_steps"] == 1 and config["ema_decay"] == 0.999 and config["sample_sampler"] == "dpm++2m"
    assert res["steps"] == 2 and res["batch_size"] == 8 and res["n_samples"] == 8 and res["toy"] is True
    ev = json.loads((out / "eval.json").read_text())
    assert res["fid"] == ev["samplers"][0]["fid"] and res["floor_fid"] == ev["real_floor"]["fid"]
    assert res["fid_over_floor"] == pytest.approx(res["fid"] / res["floor_fid"])
    assert res["sampler"] == "DPM++2M-20" and res["device"] == "cpu"


@pytest.mark.usefixtures("one_thread")
def test_the_curve_scores_every_kept_checkpoint_and_the_final_model(tmp_path):
    folder = write_folder(tmp_path / "bars")
    run = tmp_path / "run"
    assert main(["diffusion", "train", "--dataset", str(folder), "--steps", "5", "--batch-size", "8", "--ckpt-every", "2",
                 "--device", "cpu", "--out", str(run), *TINY]) == 0
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_curve.py"), str(run), "--every", "2",
                           "--n", "8", "--sampler", "ddim:3"], capture_output=True, text=True, timeout=300,
                          env={**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    scored = {step: json.loads((run / "curve" / str(step) / "eval.json").read_text()) for step in (2, 4, 5)}
    assert sorted(p.name for p in (run / "curve").iterdir()) == ["2", "4", "5"]  # ckpt 2, ckpt 4, the final model
    for step, ev in scored.items():
        assert f"| {step} | {step * 8} |" in done.stdout and f"{ev['samplers'][0]['fid']:.2f}" in done.stdout
