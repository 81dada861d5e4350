"""`diffprompt diffusion train|sample|evaluate|visualize` on a tiny folder data set, and the bad
inputs: each is one line on stderr and exit code 2, with no traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffprompt.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "model.base_channels=8", "--set", "model.num_res_blocks=1", "--set", "timesteps=20",
        "--set", "sample_n=4", "--set", "sample_steps=3", "--set", "log_every=1"]


@pytest.fixture(autouse=True)
def one_thread(monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_QUIET", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_folder(root: Path, size: int = 8, per_class: int = 12) -> Path:
    """Two classes of grey PNGs: a bright bar on the left or on the right."""
    rng = np.random.default_rng(0)
    for c, cols in (("left", slice(1, 3)), ("right", slice(size - 3, size - 1))):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 40, size=(size, size)).astype(np.uint8)
            a[:, cols] = 220
            Image.fromarray(a, mode="L").save(root / c / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("bars") / "bars")


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("runs") / "r"
    assert main(["diffusion", "train", "--dataset", str(folder), "--steps", "2", "--batch-size", "8",
                 "--device", "cpu", "--out", str(out), *TINY]) == 0
    return out


def test_train_writes_a_run_and_resume_continues(run, capsys):
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["kind"] == "diffusion-train" and cfg["steps"] == 2 and cfg["model"]["base_channels"] == 8
    assert (run / "DONE").exists() and (run / "samples.png").exists()
    assert main(["diffusion", "train", "--resume", str(run), "--steps", "3"]) == 0
    assert json.loads((run / "last.json").read_text())["step"] == 3
    assert json.loads((run / "config.json").read_text())["steps"] == 3
    assert (run / "DONE").exists()


def test_sample_grid_and_npz(run, tmp_path):
    assert main(["diffusion", "sample", str(run), "--n", "5", "--sampler", "ddim", "--steps", "4",
                 "--out", str(tmp_path / "g.png"), "--device", "cpu"]) == 0
    assert Image.open(tmp_path / "g.png").size[0] > 8
    assert main(["diffusion", "sample", str(run / "model.safetensors"), "--n", "3", "--sampler", "ddpm",
                 "--out", str(tmp_path / "s.npz"), "--seed", "1"]) == 0
    z = np.load(tmp_path / "s.npz")
    assert z["images"].shape == (3, 8, 8, 1) and z["images"].dtype == np.uint8 and int(z["steps"]) == 20
    # the same seed gives the same samples
    assert main(["diffusion", "sample", str(run), "--n", "3", "--sampler", "ddpm", "--out", str(tmp_path / "t.npz"),
                 "--seed", "1"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npz")["images"], z["images"])


def test_visualize_and_evaluate(run, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "pics"
    assert main(["diffusion", "visualize", str(run), "--n", "2", "--sampler", "ddim", "--steps", "5",
                 "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"forward.png", "reverse.png", "reverse.gif", "pred_x0.png"}
    assert main(["diffusion", "evaluate", str(run), "--samplers", "ddim:4", "--n-samples", "8",
                 "--nll-images", "2", "--device", "cpu"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["samplers"][0]["sampler"] == "DDIM-4" and res["nll"]["images"] == 2
    assert (run / "eval.md").exists()


def _err(capsys, argv) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith("diffprompt: error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_inputs_exit_2_with_one_line(run, folder, tmp_path, capsys):
    odd = write_folder(tmp_path / "odd", size=10, per_class=4)  # 10 is not a multiple of 4
    err = _err(capsys, ["diffusion", "train", "--dataset", str(odd), "--steps", "1", "--batch-size", "4",
                        "--out", str(tmp_path / "o"), *TINY])
    assert "image size 10" in err and "supported sizes: 4, 8, 12" in err
    assert "unknown schedule" in _err(capsys, ["diffusion", "train", "--set", "schedule=quadratic"])
    assert "unknown prediction" in _err(capsys, ["diffusion", "train", "--set", "prediction=score"])
    assert "unknown variance" in _err(capsys, ["diffusion", "train", "--set", "variance=learned"])
    assert "cannot exceed" in _err(capsys, ["diffusion", "sample", str(run), "--sampler", "ddim", "--steps", "50"])
    assert "cannot exceed" in _err(capsys, ["diffusion", "visualize", str(run), "--sampler", "ddim", "--steps", "21"])
    assert "eta must be >= 0" in _err(capsys, ["diffusion", "sample", str(run), "--eta", "-0.5"])
    assert "cannot exceed" in _err(capsys, ["diffusion", "evaluate", str(run), "--samplers", "ddim:100"])
    err = _err(capsys, ["diffusion", "train", "--resume", str(run), "--steps", "9", "--set", "model.base_channels=16"])
    assert "another model config" in err and "conv" in err
    assert "not a resumable training run" in _err(capsys, ["diffusion", "train", "--resume", str(tmp_path)])
    assert "does not exist" in _err(capsys, ["diffusion", "sample", str(tmp_path / "nope.safetensors")])


@pytest.mark.parametrize("argv, needle", [
    (["diffusion", "train", "--set", "schedule=bogus"], "unknown schedule"),
    (["diffusion", "sample", "RUN", "--steps", "999", "--sampler", "ddim"], "cannot exceed"),
])
def test_errors_from_a_real_process_have_no_traceback(run, argv, needle):
    argv = [str(run) if a == "RUN" else a for a in argv]
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFPROMPT_QUIET="1")
    proc = subprocess.run([sys.executable, "-m", "diffprompt", *argv], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and needle in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_help_teaches_with_examples(capsys):
    with pytest.raises(SystemExit):
        main(["diffusion", "train", "--help"])
    out = capsys.readouterr().out
    assert "--resume" in out and "--set KEY=VALUE" in out and "accelerate launch" in out
    assert main(["diffusion"]) == 2  # the group alone prints its help
    out = capsys.readouterr().out
    assert all(c in out for c in ("train", "sample", "evaluate", "visualize"))
