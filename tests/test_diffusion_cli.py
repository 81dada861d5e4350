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
TINY = ["--set", "model.base_channels=8", "--set", "model.num_res_blocks=1", "--set", "num_timesteps=20",
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


def test_sample_grid_of_five_is_three_by_two_padded_white_and_holds_the_samples(run, tmp_path):
    """n = 5 tiles as ceil(sqrt(5)) = 3 per row, 2 rows, 2-pixel white gaps and border, scaled 2x
    (nearest): 8x8 images give (3*(8+2)+2) x (2*(8+2)+2) = 32 x 22 pixels, 64 x 44 on disk. The
    tiles are exactly the uint8 samples the same seed writes to an .npz; the sixth slot stays white."""
    argv = ["diffusion", "sample", str(run), "--n", "5", "--sampler", "ddim", "--steps", "4", "--seed", "3",
            "--device", "cpu", "--out"]
    assert main(argv + [str(tmp_path / "g.png")]) == 0 and main(argv + [str(tmp_path / "g.npz")]) == 0
    png = Image.open(tmp_path / "g.png")
    assert png.mode == "L" and png.size == (64, 44)
    big = np.asarray(png)
    grid = big[::2, ::2]
    np.testing.assert_array_equal(np.repeat(np.repeat(grid, 2, 0), 2, 1), big)  # nearest-neighbour 2x
    images = np.load(tmp_path / "g.npz")["images"][..., 0]
    assert images.shape == (5, 8, 8)
    tiles = np.zeros(grid.shape, dtype=bool)
    for i in range(6):
        r, c = divmod(i, 3)
        rows, cols = slice(2 + 10 * r, 10 + 10 * r), slice(2 + 10 * c, 10 + 10 * c)
        if i < 5:
            np.testing.assert_array_equal(grid[rows, cols], images[i], err_msg=f"tile {i}")
            tiles[rows, cols] = True
    assert (grid[~tiles] == 255).all()  # gaps, border and the empty sixth slot
    assert (grid[12:20, 22:30] == 255).all() and not (grid[2:10, 22:30] == 255).all()  # slot 6 empty, slot 3 not


def test_sample_npz_and_its_seed(run, tmp_path):
    assert main(["diffusion", "sample", str(run / "model.safetensors"), "--n", "3", "--sampler", "ddpm",
                 "--out", str(tmp_path / "s.npz"), "--seed", "1"]) == 0
    z = np.load(tmp_path / "s.npz")
    assert z["images"].shape == (3, 8, 8, 1) and z["images"].dtype == np.uint8 and int(z["steps"]) == 20
    # the same seed gives the same samples
    assert main(["diffusion", "sample", str(run), "--n", "3", "--sampler", "ddpm", "--out", str(tmp_path / "t.npz"),
                 "--seed", "1"]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "t.npz")["images"], z["images"])


def strip_size(columns: int, rows: int, size: int = 8, pad: int = 2, scale: int = 2, band: int = 12) -> tuple[int, int]:
    """(width, height) of a labelled strip: a grid of rows x columns images, scaled, under a label band."""
    return (columns * (size + pad) + pad) * scale, (rows * (size + pad) + pad) * scale + band


def test_visualize_has_the_frame_counts_and_pixel_sizes_asked_for(run, tmp_path):
    """T = 20, 2 images, DDIM with 5 steps (a chain of 6 states, 5 x0 predictions), --frames 4:
    forward.png shows x0 and 8 noise levels (t = 1, 2, 4, 6, 9, 12, 15, 20: denser early), the
    strips 4 columns each, the GIF every one of the 6 states as a 2-image row, scaled 3x."""
    out = tmp_path / "pics"
    assert main(["diffusion", "visualize", str(run), "--n", "2", "--sampler", "ddim", "--steps", "5", "--frames", "4",
                 "--device", "cpu", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"forward.png", "reverse.png", "reverse.gif", "pred_x0.png"}
    assert Image.open(out / "forward.png").size == strip_size(9, 2) == (184, 56)
    assert Image.open(out / "reverse.png").size == strip_size(4, 2) == (84, 56)
    assert Image.open(out / "pred_x0.png").size == strip_size(4, 2)
    gif = Image.open(out / "reverse.gif")
    assert gif.size == ((2 * 10 + 2) * 3, (10 + 2) * 3)
    durations = []
    for i in range(gif.n_frames):
        gif.seek(i)
        durations.append(gif.info["duration"])
    # 6 frames of 80 ms, the last (the samples) held 1500 ms; the GIF writer merges a frame that
    # repeats the one before into it, adding the durations, so the total counts the frames written
    assert sum(durations) == 5 * 80 + 1500 and durations[-1] >= 1500 and 1 < gif.n_frames <= 6
    assert all(d % 80 == 0 for d in durations[:-1]) and (durations[-1] - 1500) % 80 == 0


def test_evaluate_writes_its_files(run, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    assert main(["diffusion", "evaluate", str(run), "--samplers", "ddim:4", "--n-samples", "8",
                 "--nll-images", "2", "--device", "cpu"]) == 0
    res = json.loads((run / "eval.json").read_text())
    assert res["samplers"][0]["sampler"] == "DDIM-4" and res["nll"]["images"] == 2
    # the command is the library call with its arguments: the same numbers, to the last bit
    from diffprompt.diffusion import evaluate

    again = evaluate(run, samplers="ddim:4", n_samples=8, nll_images=2, device="cpu", out=tmp_path / "lib")
    keys = ("fid", "kid", "precision", "recall", "confident_share", "class_histogram", "n")
    assert {k: res["samplers"][0][k] for k in keys} == {k: again["samplers"][0][k] for k in keys}
    assert res["real_floor"]["fid"] == again["real_floor"]["fid"] and res["nll"]["bpd"] == again["nll"]["bpd"]
    md = (run / "eval.md").read_text()
    assert f"| DDIM-4 | 4 | {res['samplers'][0]['fid']:.2f} (biased) |" in md
    assert f"**{res['nll']['bpd']:.3f} ± {res['nll']['bpd_stderr']:.3f} bits/dim**" in md


def test_evaluate_raw_weights_scores_the_optimised_weights_not_their_ema(run, tmp_path, monkeypatch, capsys):
    from diffprompt.checkpoint import load_checkpoint, strip_prefix
    from diffprompt.diffusion.checkpoints import load_model

    tensors, _ = load_checkpoint(run / "last.safetensors")
    for weights, prefix in (("raw", "model."), ("ema", "ema.")):
        model, _, meta = load_model(run / "last.safetensors", weights=weights)
        assert all(torch.equal(v, tensors[prefix + k]) for k, v in model.state_dict().items())
        assert meta["dataset"] == json.loads((run / "config.json").read_text())["dataset"]  # from its config
    assert any(not torch.equal(tensors["model." + k], tensors["ema." + k]) for k in strip_prefix(tensors, "ema."))
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    argv = ["diffusion", "evaluate", str(run / "last.safetensors"), "--samplers", "ddim:4", "--n-samples", "8",
            "--nll-images", "2", "--nll-timesteps", "2", "--device", "cpu"]
    assert main([*argv, "--weights", "raw", "--out", str(tmp_path / "raw")]) == 0
    assert main([*argv, "--out", str(tmp_path / "ema")]) == 0
    raw, ema = (json.loads((tmp_path / w / "eval.json").read_text()) for w in ("raw", "ema"))
    assert raw["weights"] == "raw" and ema["weights"] == "ema" and raw["nll"]["bpd"] != ema["nll"]["bpd"]
    assert "its raw weights, not their EMA" in (tmp_path / "raw" / "eval.md").read_text()
    capsys.readouterr()
    err = _err(capsys, ["diffusion", "evaluate", str(run / "model.safetensors"), "--weights", "raw"])
    assert "holds only the EMA weights" in err and "last.safetensors" in err


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
