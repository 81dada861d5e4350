"""The prepared GPU benchmark (benchmarks/gpu_paper_preset.py) runs its whole path on a CPU at toy
size: the paper preset's settings for a short budget, training, evaluation, the results file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from test_diffusion_cli import write_folder

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.usefixtures("one_thread")
def test_the_gpu_script_runs_end_to_end_at_toy_size(tmp_path):
    folder = write_folder(tmp_path / "bars")
    out = tmp_path / "run"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_paper_preset.py"), "--toy", "--dataset",
                           str(folder), "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={"OMP_NUM_THREADS": "1", "DIFFPROMPT_QUIET": "1", "DIFFPROMPT_CACHE": str(tmp_path / "cache"),
                               "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
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
