"""Evaluation of a DDPM: FID/KID maths, the feature classifier and its cache, the evaluate() pipeline,
sampler specs, and the pictures (grids, forward/reverse strips, GIF)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffprompt.data.images import ImageDataset
from diffprompt.diffusion.evaluation.feature_metrics import (
    fid_from_features,
    frechet_distance,
    kid_from_features,
    mmd2_unbiased,
    sqrtm_psd,
    trace_sqrt_product,
)
from diffprompt.errors import UserError


pytestmark = pytest.mark.usefixtures("one_thread")


def bars(n: int = 48, seed: int = 0) -> ImageDataset:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 40, size=(n, 8, 8, 1)).astype(np.uint8)
    for i, y in enumerate(labels):
        images[i, :, (slice(1, 3) if y == 0 else slice(5, 7)), 0] = 220
    idx = np.arange(n)
    return ImageDataset(name="bars8", images=images, labels=labels, class_names=["left", "right"],
                        _split_indices={"train": idx[: n * 3 // 4], "test": idx[n * 3 // 4:]})


# --- metrics --------------------------------------------------------------------------------------

def _spd(d: int, rng) -> np.ndarray:
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def test_frechet_distance_closed_forms():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=5), rng.normal(size=5)
    a, b = rng.uniform(0.2, 3, size=5), rng.uniform(0.2, 3, size=5)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)  # commuting (diagonal) case
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    s = _spd(6, rng)
    assert frechet_distance(mu1[:1].repeat(6), s, mu1[:1].repeat(6), s) == pytest.approx(0.0, abs=1e-8)
    r = sqrtm_psd(s)
    np.testing.assert_allclose(r @ r, s, rtol=1e-8, atol=1e-10)


def test_trace_sqrt_product_matches_eigenvalues_of_the_product():
    rng = np.random.default_rng(1)
    s1, s2 = _spd(7, rng), _spd(7, rng)  # do not commute
    # S1 S2 is similar to an SPD matrix: real positive eigenvalues; computed independently here
    direct = np.sqrt(np.linalg.eigvals(s1 @ s2).real).sum()
    assert trace_sqrt_product(s1, s2) == pytest.approx(direct, rel=1e-8)


def test_fid_from_samples_estimates_the_mean_shift():
    rng = np.random.default_rng(2)
    n, d = 4000, 4
    shift = np.array([1.0, 0, 0, 0])
    x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) + shift
    # estimator sd ~ 2|shift| sqrt(2/n) = 0.045 plus O(d/n) bias: 0.15 is > 3 sd
    assert fid_from_features(x, y) == pytest.approx(1.0, abs=0.15)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)


def test_mmd_unbiased_matches_a_brute_force_sum():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(5, 3)) + 0.5
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m, n = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    assert mmd2_unbiased(x, y) == pytest.approx(sxx + syy - 2 * sxy, rel=1e-10)


def test_kid_separates_equal_from_shifted_distributions():
    rng = np.random.default_rng(4)
    x, y, z = rng.normal(size=(300, 8)), rng.normal(size=(300, 8)), rng.normal(size=(300, 8)) + 0.5
    same, same_sd = kid_from_features(x, y, num_subsets=20, subset_size=200)
    diff, _ = kid_from_features(x, z, num_subsets=20, subset_size=200)
    assert diff > 0 and abs(same) < diff / 10
    assert abs(same) < 4 * same_sd + 1e-3


# --- feature classifier ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def test_feature_classifier_learns_and_is_cached(cache_dir, monkeypatch):
    from diffprompt.diffusion.evaluation.feature_classifier import load_or_train

    tmp_path = cache_dir
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path))
    data = bars()
    clf = load_or_train("bars8", seed=0, epochs=6, data=data)
    assert not clf.cached and clf.test_accuracy == 1.0
    feats, probs = clf.run(data.split("test").images)
    assert feats.shape == (12, 128) and probs.shape == (12, 2)
    again = load_or_train("bars8", seed=0, epochs=6, data=data)
    assert again.cached and again.test_accuracy == clf.test_accuracy
    np.testing.assert_allclose(again.run(data.split("test").images)[0], feats, rtol=1e-5, atol=1e-6)
    files = list((tmp_path / "feature-classifier").glob("bars8-1x8x8-seed0-*.safetensors"))
    assert len(files) == 1 and json.loads(files[0].with_suffix(".json").read_text())["test_accuracy"] == 1.0


# --- evaluate() end to end -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run") / "r"
    sets = ["model.base_channels=8", "model.num_res_blocks=1", "num_timesteps=20", "sample_n=4", "sample_steps=3"]
    return train(resolve_config(sets=sets, steps=3, batch_size=8, dataset="bars8"), out=out, data=bars())


def test_evaluate_writes_json_and_markdown(tiny_run, cache_dir, monkeypatch):
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    monkeypatch.setenv("DIFFPROMPT_CACHE", str(cache_dir))  # the classifier of the test above
    res = evaluate(tiny_run, samplers="ddpm,ddim:5,dpm++2m:4:trailing", n_samples=16, nll_images=4, batch_size=16,
                   data=bars(), classifier_epochs=6, device="cpu")
    assert [s["sampler"] for s in res["samplers"]] == ["DDPM-20", "DDIM-5", "DPM++2M-4 (trailing)"]
    for s in res["samplers"] + [res["real_floor"]]:
        assert np.isfinite(s["fid"]) and s["fid"] >= 0 and np.isfinite(s["kid"])
        assert sum(s["class_histogram"]) == 16 and 0 <= s["confident_share"] <= 1
        assert s["n"] == 16 and s["fid_biased"] is True  # every row at the same n, below 1000
        assert 0 <= s["precision"] <= 1 and 0 <= s["recall"] <= 1
    assert res["samplers"][0]["seconds_per_image"] > 0 and res["samplers"][1]["model_calls_per_image"] == 5
    assert res["samplers"][2]["model_calls_per_image"] == 4 and res["samplers"][2]["spacing"] == "trailing"
    # the floor is a stratified sample: 16 of the 36 train images of 2 classes, 8 of each
    assert res["real_floor"]["class_histogram"] == [8, 8]
    assert res["classifier"]["test_accuracy"] == 1.0
    nll = res["nll"]
    assert nll["images"] == 4 and np.isfinite(nll["bpd"]) and nll["bpd"] > 0 and nll["split"] == "test"
    saved = json.loads((tiny_run / "eval.json").read_text())
    assert saved["kind"] == "diffusion-eval" and saved["samplers"][1]["fid"] == res["samplers"][1]["fid"]
    md = (tiny_run / "eval.md").read_text()
    assert "| DDIM-5 | 5 |" in md and "real-data floor" in md and "bits/dim" in md and "(biased)" in md
    # an untrained model is far from the data; real train images are much closer to the test split
    assert res["real_floor"]["fid"] < res["samplers"][1]["fid"]


def fid_by_hand(a: np.ndarray, b: np.ndarray) -> float:
    """FID from two feature matrices with numpy alone: tr sqrt(S_a S_b) from the product's eigenvalues."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvals(s_a @ s_b).real, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * tr_sqrt)


def test_evaluate_on_the_test_images_themselves_gives_the_known_answers(tiny_run, cache_dir, monkeypatch, tmp_path):
    """With the sampler replaced by the test split itself, every score has a known value: precision =
    recall = 1 and FID = 0 against the test split; the floor's FID, the confident share and the class
    histogram equal an independent computation on the classifier's features."""
    from diffprompt.data.images import stratified_subset
    from diffprompt.diffusion.evaluation import evaluate_model
    from diffprompt.diffusion.evaluation.feature_classifier import load_or_train
    from diffprompt.diffusion.pixels import images_to_tensor

    monkeypatch.setenv("DIFFPROMPT_CACHE", str(cache_dir))
    data = bars()
    test, train = data.split("test"), data.split("train")
    monkeypatch.setattr(evaluate_model, "generate",
                        lambda *args, **kw: (images_to_tensor(test.images), 0.5))
    n = len(test.images)
    res = evaluate_model.evaluate(tiny_run, samplers="ddim:3", n_samples=n, nll_images=0, data=data,
                                  classifier_epochs=6, device="cpu", out=tmp_path)
    row, floor = res["samplers"][0], res["real_floor"]
    assert row["precision"] == 1.0 and row["recall"] == 1.0
    assert row["fid"] == pytest.approx(0.0, abs=1e-6)
    clf = load_or_train("bars8", seed=0, epochs=6, data=data)
    feats, probs = clf.run(test.images)
    assert row["confident_share"] == float((probs.max(1) >= 0.9).mean())
    assert row["class_histogram"] == np.bincount(probs.argmax(1), minlength=2).tolist()
    assert row["seconds_per_image"] == pytest.approx(0.5 / n)
    floor_feats, _ = clf.run(stratified_subset(train, n, 0))  # the floor: n stratified train images, seed 0
    scale = np.trace(np.cov(floor_feats, rowvar=False)) + np.trace(np.cov(feats, rowvar=False))
    # float64 round-off: the square root of each of the d (near-)zero eigenvalues of the rank-deficient
    # covariance product is off by up to sqrt(eps * scale), whichever route takes it
    d, eps = feats.shape[1], np.finfo(np.float64).eps
    assert floor["fid"] == pytest.approx(fid_by_hand(floor_feats, feats), abs=2 * d * np.sqrt(eps * scale))


def test_evaluate_estimates_bits_per_dim_from_few_timesteps(tiny_run, cache_dir, monkeypatch, tmp_path):
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate

    monkeypatch.setenv("DIFFPROMPT_CACHE", str(cache_dir))
    res = evaluate(tiny_run, samplers="ddim:2", n_samples=4, nll_images=6, nll_timesteps=5, data=bars(),
                   classifier_epochs=6, device="cpu", out=tmp_path)
    nll = res["nll"]
    assert nll["images"] == 6 and nll["timesteps"] == 5 and nll["exact"] is False and nll["bpd_stderr"] > 0
    assert "prior_bpd" not in nll and "5 stratified timesteps" in (tmp_path / "eval.md").read_text()


def test_evaluate_rejects_bad_samplers_before_sampling(tiny_run):
    from diffprompt.diffusion.evaluation.evaluate_model import evaluate
    from diffprompt.diffusion.generate import parse_sampler_spec

    with pytest.raises(UserError, match="cannot exceed"):
        evaluate(tiny_run, samplers="ddim:50", n_samples=4, nll_images=0, data=bars(), device="cpu")
    assert parse_sampler_spec("ddim:50:0.5") == {"sampler": "ddim", "steps": 50, "eta": 0.5, "spacing": "linspace",
                                                 "spec": "ddim:50:0.5"}
    assert parse_sampler_spec("dpm++2m:20:trailing") == {"sampler": "dpm++2m", "steps": 20, "eta": 0.0,
                                                         "spacing": "trailing", "spec": "dpm++2m:20:trailing"}
    from diffprompt.diffusion.generate import sampler_label

    labels = {spec: sampler_label(parse_sampler_spec(spec), 1000)
              for spec in ("ddpm", "ddpm:100", "ddpm:100:trailing", "ddpm:trailing", "ddim:50:0.5", "dpm++2m:20:trailing")}
    assert labels == {"ddpm": "DDPM-1000", "ddpm:100": "DDPM-100", "ddpm:100:trailing": "DDPM-100 (trailing)",
                      "ddpm:trailing": "DDPM-1000", "ddim:50:0.5": "DDIM-50 (eta 0.5)",
                      "dpm++2m:20:trailing": "DPM++2M-20 (trailing)"}
    for bad, msg in (("plms:10", "unknown sampler"), ("ddim", "needs a step count"), ("ddim:10:-1", "eta must be"),
                     ("ddim:x", "cannot read 'x'"), ("dpm++2m:10:0.5", "cannot read '0.5'")):
        with pytest.raises(UserError, match=msg):
            parse_sampler_spec(bad)


# --- pictures ------------------------------------------------------------------------------------------

def test_grid_layout():
    from diffprompt.diffusion.visualize import grid_array

    imgs = np.arange(5 * 8 * 8, dtype=np.uint8).reshape(5, 8, 8, 1)
    g = grid_array(imgs, nrow=3, pad=2)
    assert g.shape == (2 * 10 + 2, 3 * 10 + 2, 1)
    np.testing.assert_array_equal(g[2:10, 12:20], imgs[1])  # second image, first row
    np.testing.assert_array_equal(g[12:20, 2:10], imgs[3])  # fourth image starts the second row
    assert (g[12:20, 22:30] == 255).all()  # the empty slot is padding


def test_visualizations_are_written(tiny_run, tmp_path):
    from diffprompt.diffusion.checkpoints import load_model
    from diffprompt.diffusion.pixels import images_to_tensor
    from diffprompt.diffusion.visualize import write_visualizations

    model, diffusion, _ = load_model(tiny_run)
    x0 = images_to_tensor(bars().split("test").images[:3])
    paths = write_visualizations(model, diffusion, tmp_path, x0, n=3, sampler="ddpm", frames=5, gif_frames=7)
    assert set(paths) == {"forward", "reverse", "pred_x0", "reverse_gif"}
    gif = Image.open(tmp_path / "reverse.gif")
    assert gif.n_frames == 7
    rev = Image.open(tmp_path / "reverse.png")
    fwd = Image.open(tmp_path / "forward.png")
    # 3 rows of 8x8 images (scale 2, padding 2, label band 12); reverse has 5 columns
    assert rev.height == (3 * 10 + 2) * 2 + 12 and rev.width == (5 * 10 + 2) * 2
    assert fwd.height == rev.height and Image.open(tmp_path / "pred_x0.png").width == rev.width


def test_the_exact_bound_keeps_each_image_and_where_in_the_chain_its_bits_go():
    """nll_on_images, exact: the per-image totals are nll_terms' on the same images and noise; prior +
    decoder + the decade bands of the KL terms add up to the mean bound."""
    from diffprompt.diffusion import GaussianDiffusion, NoiseSchedule
    from diffprompt.diffusion.evaluation.bits_per_dim import nll_on_images, term_bands
    from diffprompt.seeding import make_generator

    diffusion = GaussianDiffusion(NoiseSchedule.linear(120, 1e-3, 0.1))

    def model(x_t, t):
        return 0.5 * torch.tanh(x_t) + 1e-3 * t.view(-1, 1, 1, 1)

    x0 = torch.rand(5, 1, 4, 4, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = nll_on_images(model, diffusion, x0, batch_size=5, seed=7, device="cpu")
    terms = diffusion.nll_terms(model, x0, generator=make_generator(7, "cpu"), t_batch=256 // 5)
    assert out["image_bpd"] == pytest.approx(terms["total_bpd"].tolist(), abs=1e-6)
    assert out["bpd"] == pytest.approx(float(terms["total_bpd"].double().mean()), abs=1e-6)
    bands = out["band_bpd"]
    assert [(b["t_from"], b["t_to"]) for b in bands] == [(1, 9), (10, 99), (100, 119)]
    assert out["prior_bpd"] + out["decoder_bpd"] + sum(b["bpd"] for b in bands) == pytest.approx(out["bpd"], rel=1e-6)
    assert bands[1]["bpd"] == pytest.approx(float(terms["vb_bpd"][:, 10:100].double().sum(1).mean()), abs=1e-6)
    assert [(b["t_from"], b["t_to"]) for b in term_bands(torch.zeros(10))] == [(1, 9)]


class _Stopper(torch.nn.Module):
    """A tiny model whose forward raises once `stop_after` calls are made (a run killed part-way)."""

    def __init__(self, stop_after: int | None = None):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor(0.5))
        self.calls, self.stop_after = 0, stop_after

    def forward(self, x_t, t):
        self.calls += 1
        if self.stop_after is not None and self.calls > self.stop_after:
            raise KeyboardInterrupt
        return self.weight * torch.tanh(x_t) + 1e-3 * t.view(-1, 1, 1, 1)


@pytest.mark.parametrize("num_t", [0, 4])
def test_a_stopped_bound_resumes_at_its_first_missing_batch_with_the_same_numbers(tmp_path, num_t):
    from diffprompt.diffusion import GaussianDiffusion, NoiseSchedule
    from diffprompt.diffusion.evaluation.bits_per_dim import nll_on_images

    diffusion = GaussianDiffusion(NoiseSchedule.linear(30, 1e-3, 0.1))
    x0 = torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(4)) * 2 - 1

    def run(model, folder=None):
        return nll_on_images(model, diffusion, x0, batch_size=3, seed=5, device="cpu", num_t=num_t, resume_dir=folder)

    whole = _Stopper()
    expected = run(whole)
    per_batch = whole.calls // 4  # 4 batches of 3 images, the same calls each
    folder = tmp_path / "nll-batches"
    with pytest.raises(KeyboardInterrupt):
        run(_Stopper(stop_after=2 * per_batch), folder)  # dies in the third batch
    assert sorted(p.name for p in folder.iterdir()) == ["batch-00000.safetensors", "batch-00001.safetensors", "job.json"]
    resumed_model = _Stopper()
    resumed = run(resumed_model, folder)
    assert resumed_model.calls == 2 * per_batch and resumed["resumed_batches"] == 2 and not folder.exists()
    for key in ("bpd", "bpd_stderr", "image_bpd", "prior_bpd", "band_bpd"):
        assert resumed.get(key) == expected.get(key)
    with pytest.raises(KeyboardInterrupt):
        run(_Stopper(stop_after=per_batch), folder)  # keeps batch 0 of this model
    other = _Stopper()
    with torch.no_grad():
        other.weight.fill_(0.4)  # other weights: nothing kept is reused
    assert run(other, folder)["resumed_batches"] == 0 and other.calls == 4 * per_batch
