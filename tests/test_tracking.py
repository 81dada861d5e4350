"""Experiment tracking (--log-with): TensorBoard gets exactly metrics.jsonl's values, the diffusion
samples as an image; the default writes metrics.jsonl only; a tracker that is not installed is a
UserError with its pip line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from diffprompt import tracking
from diffprompt.cli import main
from diffprompt.data.images import ImageDataset
from diffprompt.diffusion.config import resolve_config
from diffprompt.diffusion.training import train
from diffprompt.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")
needs_tensorboard = pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None,
                                       reason="tensorboard is not installed (pip install tensorboard)")


def events(folder: Path):
    """Everything TensorBoard wrote directly into `folder` (no sampling of long series)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def tensorboard_scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    acc = events(folder)
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def jsonl_scalars(path: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.jsonl's numbers by name, as (step, value) rounded to float32 (what an event holds)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for key, value in tracking.logged_values(record).items():
            if not isinstance(value, str):
                out.setdefault(key, []).append((record["step"], float(np.float32(value))))
    return out


def assert_same_scalars(run: Path) -> dict:
    """The run's TensorBoard scalars equal its metrics.jsonl's, name by name and step by step."""
    tb, js = tensorboard_scalars(run / "tensorboard"), jsonl_scalars(run / "metrics.jsonl")
    assert js and set(tb) == set(js)
    for tag in js:  # NaN (no dev set) compares equal to NaN only through this
        assert np.array_equal(np.array(tb[tag]), np.array(js[tag]), equal_nan=True), tag
    return js


def bars(n: int = 16, size: int = 8) -> ImageDataset:
    """A tiny image set: dark noise with one bright column, its place given by the class."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 30, size=(n, size, size, 1)).astype(np.uint8)
    labels = np.arange(n) % 2
    images[np.arange(n), :, 2 + 3 * labels, 0] = 200
    split = {"train": np.arange(n - 4), "test": np.arange(n - 4, n)}
    return ImageDataset(name="bars", images=images, labels=labels, class_names=["a", "b"], _split_indices=split)


@needs_tensorboard
def test_diffusion_run_logs_its_metrics_and_samples_to_tensorboard(tmp_path):
    sets = ["model.base_channels=8", "model.num_res_blocks=1", "timesteps=10", "sample_n=4", "sample_steps=2",
            "log_every=1", "warmup_steps=1"]
    run = train(resolve_config(sets=sets, steps=3, batch_size=4, log_with="tensorboard"), out=tmp_path / "d", data=bars())
    js = assert_same_scalars(run)
    assert {"loss", "lr", "grad_norm", "images_per_s", "ema_decay", "epoch"} <= set(js)
    assert [s for s, _ in js["loss"]] == [1, 2, 3]
    images = events(run / "tensorboard").Images("samples")
    assert len(images) == 1 and images[0].step == 3 and images[0].height == images[0].width > 8


@needs_tensorboard
def test_prompting_compare_logs_the_comparison_and_every_cell(tmp_path):
    out = tmp_path / "cmp"
    assert main(["prompting", "compare", "--datasets", "mr", "--rows", "zero-shot,soft", "--seeds", "13",
                 "--shots", "4", "--steps", "4", "--eval-every", "2", "--limit-test", "8", "--no-curve",
                 "--threads", "1", "--log-with", "tensorboard", "--out", str(out)]) == 0
    comparison = assert_same_scalars(out)
    assert set(comparison) == {"test_accuracy", "dev_accuracy", "seconds"}
    assert [s for s, _ in comparison["seconds"]] == [1, 2]
    assert "cell/text_summary" in events(out / "tensorboard").Tags()["tensors"]  # the cell's name, as text
    cell = assert_same_scalars(out / "cells" / "mr" / "k4" / "soft" / "seed13")
    assert set(cell) == {"dev_accuracy", "loss", "lr"} and [s for s, _ in cell["loss"]] == [2, 4]


def test_default_is_metrics_jsonl_only(tmp_path):
    out = tmp_path / "zs"
    assert main(["prompting", "zero-shot", "--dataset", "mr", "--shots", "4", "--limit-test", "8", "--threads", "1",
                 "--out", str(out)]) == 0
    assert (out / "metrics.jsonl").exists() and not (out / "tensorboard").exists()


def test_a_tracker_that_is_not_installed_is_a_user_error(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    for argv in (["diffusion", "train", "--log-with", "wandb", "--steps", "1"],
                 ["prompting", "train", "--dataset", "mr", "--log-with", "wandb"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pip install wandb" in err and "Traceback" not in err
    with pytest.raises(UserError, match="unknown tracker 'mlflow'"):
        tracking.check_tracker("mlflow")
