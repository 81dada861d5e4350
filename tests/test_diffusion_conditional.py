"""Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022): the class embedding,
label dropout, the guidance formula for eps-, v- and x0-prediction, one batched network call per
step, conditional training and resume, sampling and evaluation commands, diffusers export; and the
shipped unconditional checkpoint unchanged."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from test_diffusion_cli import TINY, _err, write_folder
from test_diffusion_train import TINY8, synthetic_data
from torch import nn

from diffprompt.checkpoint import load_checkpoint, save_checkpoint
from diffprompt.cli import main
from diffprompt.diffusion import GaussianDiffusion, NoiseSchedule, UNet, UNetConfig
from diffprompt.diffusion.checkpoints import load_model, resumable_run_config
from diffprompt.diffusion.config import resolve_config
from diffprompt.diffusion.interop.diffusers_export import export_diffusers
from diffprompt.diffusion.interop.diffusers_unet import diffusers_unet_config, to_diffusers_state_dict, unet_config_from_diffusers
from diffprompt.diffusion.generate import generate, requested_classes
from diffprompt.diffusion.guidance import drop_labels, guided
from diffprompt.diffusion.samplers import make_sampler
from diffprompt.diffusion.training import train
from diffprompt.errors import UserError
from diffprompt.seeding import make_generator, per_sample_generators

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "diffprompt" / "assets" / "ddpm-tiny-mnist5k.safetensors"

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the shipped unconditional checkpoint ------------------------------------------------------


def test_shipped_checkpoint_loads_and_samples_as_when_it_was_shipped():
    """Numbers computed when the checkpoint was shipped (1 thread, float32); 1e-4 absorbs summation
    order, a changed network, process or sampler would move them by far more."""
    model, diffusion, meta = load_model(SHIPPED)
    assert model.config.num_classes == 0 and "class_embed.weight" not in model.state_dict()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        out = model(x, torch.tensor([10, 700]))
    expected = [2.26914119720459, 0.3334283232688904, 0.034608565270900726, 0.28357458114624023, 0.7438274621963501]
    assert torch.allclose(out.flatten()[[0, 100, 500, 1000, 1500]], torch.tensor(expected), atol=1e-4)
    assert out.double().sum().item() == pytest.approx(339.39054797403514, abs=1e-2)
    assert out.double().abs().sum().item() == pytest.approx(1582.8242611689493, abs=1e-2)
    samples, _ = generate(model, diffusion, 2, (1, 28, 28), "ddim", 5, 0.0, 0, 2, "cpu")
    expected = [-1.0, 0.939378559589386, 0.4993353486061096, -0.9438320994377136, -1.0]
    assert torch.allclose(samples.flatten()[[0, 300, 400, 1000, 1200]], torch.tensor(expected), atol=1e-4)
    assert samples.double().sum().item() == pytest.approx(-1002.1313035734929, abs=1e-2)


def test_every_shipped_diffusion_checkpoint_is_small_and_names_how_it_was_made():
    """Each checkpoint in assets/: under 10 MB, loads, and its sidecar names its data set, the results
    file that evaluates it (which exists) and the command that reproduces it (a script that exists)."""
    shipped = sorted(SHIPPED.parent.glob("ddpm-*.safetensors"))
    assert SHIPPED in shipped
    for path in shipped:
        assert path.stat().st_size < 10_000_000, path
        model, diffusion, side = load_model(path)  # side: the JSON sidecar
        assert (ROOT / side["benchmark"]).is_file() and side["dataset"] == side["config"]["dataset"]
        script = side["reproduce"].split()[1] if side["reproduce"].startswith(".venv/bin/python") else None
        assert script is None or (ROOT / script).is_file(), side["reproduce"]
        assert side["reproduce"].startswith((".venv/bin/python benchmarks/", "diffprompt diffusion train"))
        assert model.config.num_classes == (len(side["class_names"]) if side["config"]["conditional"] else 0)
        assert diffusion.num_timesteps == side["config"].get("num_timesteps", side["config"].get("timesteps"))


# --- the class embedding -------------------------------------------------------------------------

SMALL = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
             attention_resolutions=(4,), norm_groups=4, dropout=0.0)


def random_unet(num_classes: int, seed: int = 0, **changes) -> UNet:
    """Our U-Net with every weight drawn at random (a fresh one outputs exactly 0)."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(**{**SMALL, **changes}, num_classes=num_classes))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def test_class_embedding_is_added_to_the_time_embedding():
    """Hand check: the conditional U-Net with label c computes what the unconditional one computes when
    the class embedding's row c is added to the bias of the time MLP's last layer."""
    cond = random_unet(3)
    assert tuple(cond.class_embed.weight.shape) == (4, 8 * 4) and cond.null_class == 3
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0, 5, 17])
    plain = UNet(UNetConfig(**SMALL)).eval()
    with torch.no_grad():
        plain.load_state_dict({k: v for k, v in cond.state_dict().items() if k != "class_embed.weight"})
        for c in range(4):  # the null class 3 included
            plain.time_mlp[2].bias.copy_(cond.time_mlp[2].bias + cond.class_embed.weight[c])
            expected = plain(x, t)
            assert (cond(x, t, class_labels=torch.full((3,), c)) - expected).abs().max() < 1e-5
            assert (cond(x, t, class_labels=c) - expected).abs().max() < 1e-5  # a scalar label is repeated
        mixed = cond(x, t, class_labels=torch.tensor([0, 2, 1]))
        for i, c in enumerate([0, 2, 1]):
            assert torch.allclose(mixed[i], cond(x[i:i + 1], t[i:i + 1], class_labels=torch.tensor([c]))[0], atol=1e-5)
        assert torch.equal(cond(x, t), cond(x, t, class_labels=3))  # no labels: the null class
    assert cond(x, t, class_labels=0).abs().max() > 0.1 and not torch.allclose(cond(x, t, class_labels=0), cond(x, t, class_labels=1))


def test_the_class_embedding_is_built_last_and_only_when_conditional():
    torch.manual_seed(0)
    plain = UNet(UNetConfig(**SMALL)).state_dict()
    torch.manual_seed(0)
    cond = UNet(UNetConfig(**SMALL, num_classes=5)).state_dict()
    assert set(cond) - set(plain) == {"class_embed.weight"}
    assert all(torch.equal(plain[k], cond[k]) for k in plain)  # the same seed gives the same other weights
    with pytest.raises(UserError, match="unconditional"):
        UNet(UNetConfig(**SMALL))(torch.zeros(1, 1, 8, 8), torch.tensor([0]), class_labels=torch.tensor([0]))
    with pytest.raises(UserError, match="num_classes must be >= 0"):
        UNetConfig(**SMALL, num_classes=-1).validate()
    assert UNetConfig.from_dict(UNetConfig(**SMALL, num_classes=5).to_dict()).num_classes == 5


# --- label dropout ---------------------------------------------------------------------------------


def test_label_dropout_rate_from_the_seeded_generator():
    n, p, null = 100_000, 0.1, 10
    labels = torch.arange(n) % 10
    out = drop_labels(labels, p, null, torch.Generator().manual_seed(0))
    dropped = out == null
    assert torch.equal(out[~dropped], labels[~dropped])  # the others keep their label
    assert int(dropped.sum()) == 10026  # this seed's count: the draws come from the generator alone
    assert torch.equal(out, drop_labels(labels, p, null, torch.Generator().manual_seed(0)))
    # Binomial(n, p): the share is within 4 standard deviations, sqrt(p (1 - p) / n) = 0.00095, of p
    tolerance = 4 * math.sqrt(p * (1 - p) / n)
    assert abs(float(dropped.double().mean()) - p) < tolerance
    assert not drop_labels(labels, 0.0, null, torch.Generator()).eq(null).any()
    assert drop_labels(labels, 1.0, null, torch.Generator()).eq(null).all()


# --- the guidance formula --------------------------------------------------------------------------

K = 3


class Toy(nn.Module):
    """A 'network' whose outputs per class are known: out = a[y] * x + b[y] + t / 100 (and, with
    `learned`, a second channel c[y] as the variance value). It records every call's labels."""

    def __init__(self, learned: bool = False):
        super().__init__()
        self.config = SimpleNamespace(num_classes=K)
        self.a, self.b, self.c = torch.tensor([0.5, -1.0, 2.0, 0.3]), torch.tensor([0.1, 0.4, -0.2, 0.05]), \
            torch.tensor([-0.5, 0.2, 0.9, 0.0])
        self.learned, self.calls = learned, []

    def forward(self, x, t, class_labels=None):
        self.calls.append(class_labels.clone())
        y = class_labels
        out = self.a[y].view(-1, 1, 1, 1) * x + self.b[y].view(-1, 1, 1, 1) + t.view(-1, 1, 1, 1) / 100
        return torch.cat([out, self.c[y].view(-1, 1, 1, 1).expand_as(x)], 1) if self.learned else out


def _to_eps(prediction: str, out: torch.Tensor, x_t: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """A prediction as eps, by hand: x_t = alpha x0 + sigma eps and v = alpha eps - sigma x0."""
    if prediction == "eps":
        return out
    if prediction == "x0":
        return (x_t - alpha * out) / sigma
    return alpha * out + sigma * x_t


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("w", [0.0, 0.5, 3.0])
def test_guidance_is_the_paper_formula_in_eps_for_every_parameterisation(prediction, w):
    """eps~ = (1 + w) eps(x, c) - w eps(x, null) computed by hand in float64, against the guided model's
    eps as GaussianDiffusion reads it (unclipped), for a model that predicts eps, x0 or v."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(50), prediction=prediction)
    x_t = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    t, labels = torch.tensor([3, 20, 49]), torch.tensor([0, 2, 1])
    toy = Toy()
    got = diffusion.p_mean_variance(guided(toy, labels, w), x_t, t, clip_denoised=False)
    ab = diffusion.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)  # float64
    alpha, sigma, x = ab.sqrt(), (1 - ab).sqrt(), x_t.double()
    with torch.no_grad():
        out_c, out_null = toy(x, t, labels), toy(x, t, torch.full_like(labels, K))
    eps = (1 + w) * _to_eps(prediction, out_c, x, alpha, sigma) - w * _to_eps(prediction, out_null, x, alpha, sigma)
    assert torch.allclose(got["pred_eps"].double(), eps, rtol=1e-4, atol=1e-4)
    assert torch.allclose(got["pred_x0"].double(), (x - sigma * eps) / alpha, rtol=1e-4, atol=1e-4)


def test_learned_variance_guides_the_prediction_and_keeps_the_conditional_variance():
    diffusion = GaussianDiffusion(NoiseSchedule.linear(50), variance="learned_range")
    x_t, t, labels = torch.randn(2, 1, 4, 4), torch.tensor([10, 40]), torch.tensor([1, 2])
    toy = Toy(learned=True)
    out = guided(toy, labels, 2.0)(x_t, t)
    c, null = toy(x_t, t, labels), toy(x_t, t, torch.full_like(labels, K))
    assert torch.allclose(out[:, :1], 3.0 * c[:, :1] - 2.0 * null[:, :1], atol=1e-6)
    assert torch.equal(out[:, 1:], c[:, 1:])  # the conditional variance channels, untouched
    guided_var = diffusion.p_mean_variance(guided(toy, labels, 2.0), x_t, t)["log_variance"]
    plain_var = diffusion.p_mean_variance(lambda x, s: toy(x, s, labels), x_t, t)["log_variance"]
    assert torch.equal(guided_var, plain_var)


class Counting(nn.Module):
    """A conditional U-Net that records the batch size and labels of every call."""

    def __init__(self, model: UNet):
        super().__init__()
        self.model, self.config, self.calls = model, model.config, []

    def forward(self, x, t, class_labels=None):
        self.calls.append((x.shape[0], class_labels.clone()))
        return self.model(x, t, class_labels=class_labels)


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 5), ("dpm++2m", 4)])
def test_one_network_call_per_step_on_the_doubled_batch(sampler, steps):
    diffusion = GaussianDiffusion(NoiseSchedule.linear(12))
    counting = Counting(random_unet(K))
    labels = torch.tensor([2, 0, 1])
    generate(counting, diffusion, 3, (1, 8, 8), sampler, steps, 0.0, 0, 3, "cpu", class_labels=labels, guidance=1.5)
    visited = len(make_sampler(sampler, steps=steps).timesteps(diffusion.num_timesteps))
    assert len(counting.calls) == visited
    for batch, sent in counting.calls:
        assert batch == 6 and torch.equal(sent, torch.tensor([2, 0, 1, K, K, K]))


@pytest.mark.parametrize("sampler, steps", [("ddpm", None), ("ddim", 5), ("dpm++2m", 4)])
def test_guidance_zero_is_the_plain_conditional_model(sampler, steps):
    diffusion = GaussianDiffusion(NoiseSchedule.linear(12))
    model, labels = random_unet(K), torch.tensor([2, 0, 1, 1])
    counting = Counting(model)
    ours, _ = generate(counting, diffusion, 4, (1, 8, 8), sampler, steps, 0.0, 7, 4, "cpu", class_labels=labels)
    assert all(batch == 4 for batch, _ in counting.calls)  # w = 0: no unconditional half
    plain = diffusion.sample(lambda x, t: model(x, t, class_labels=labels), (4, 1, 8, 8),
                             sampler=make_sampler(sampler, steps=steps),
                             x_T=torch.randn((4, 1, 8, 8), generator=make_generator(7)), generator=per_sample_generators(7, 4))
    assert torch.equal(ours, plain)


def test_guidance_refusals_are_one_line():
    model = random_unet(K)
    with pytest.raises(UserError, match="unconditional"):
        guided(random_unet(0), [0], 1.0)
    with pytest.raises(UserError, match="class 3 is out of range"):
        guided(model, [0, 3], 1.0)
    with pytest.raises(UserError, match=">= 0"):
        guided(model, [0], -1.0)
    with pytest.raises(UserError, match="needs classes"):
        generate(model, GaussianDiffusion(NoiseSchedule.linear(5)), 2, (1, 8, 8), "ddim", 2, 0.0, 0, 2, "cpu",
                 guidance=1.0)


# --- training ----------------------------------------------------------------------------------------


def test_conditional_training_resumes_bitwise_and_draws_drops_from_the_data_generator(tmp_path):
    data = synthetic_data()
    sets = TINY8 + ["conditional=true", "cond_drop_prob=0.5"]
    full = train(resolve_config(sets=sets, steps=6, batch_size=8, seed=3), out=tmp_path / "full", data=data)
    half = train(resolve_config(sets=sets, steps=3, batch_size=8, seed=3), out=tmp_path / "half", data=data)
    resumed = train(resolve_config(base=resumable_run_config(half), steps=6), resume=half, data=data)
    a, meta = load_checkpoint(full / "last.safetensors")
    b, _ = load_checkpoint(resumed / "last.safetensors")
    assert set(a) == set(b) and "model.class_embed.weight" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert meta["unet"]["num_classes"] == 2 and meta["class_names"] == ["left", "right"]
    model, _, model_meta = load_model(full)
    assert model.null_class == 2 and model_meta["class_names"] == ["left", "right"]
    # the label drops come from the data-order generator: an unconditional run leaves it elsewhere
    plain = train(resolve_config(sets=TINY8, steps=6, batch_size=8, seed=3), out=tmp_path / "plain", data=data)
    c, _ = load_checkpoint(plain / "last.safetensors")
    assert not torch.equal(a["data.gen"], c["data.gen"]) and "model.class_embed.weight" not in c


def test_conditional_settings_are_checked():
    with pytest.raises(UserError, match="cond_drop_prob must be in"):
        resolve_config(sets=["cond_drop_prob=1.5"])
    with pytest.raises(UserError, match="comes from the data set"):
        resolve_config(sets=["model.num_classes=10"])
    with pytest.raises(UserError, match="needs a data set with class labels"):
        resolve_config(sets=["conditional=true"]).make_unet_config(1, 8, num_classes=0)


# --- the commands ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cond_run(tmp_path_factory):
    """A conditional run on an image folder: its sub-folders `left` and `right` are the classes."""
    folder = write_folder(tmp_path_factory.mktemp("bars") / "bars")
    out = tmp_path_factory.mktemp("runs") / "cond"
    torch.set_num_threads(1)
    assert main(["diffusion", "train", "--dataset", str(folder), "--conditional", "--steps", "2", "--batch-size", "8",
                 "--device", "cpu", "--out", str(out), *TINY]) == 0
    return out


def test_sample_a_class_or_a_row_per_class_with_guidance(cond_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_QUIET", "1")
    assert main(["diffusion", "sample", str(cond_run), "--class", "all", "--n", "3", "--sampler", "ddim", "--steps", "3",
                 "--guidance", "2", "--out", str(tmp_path / "all.npz")]) == 0
    saved = np.load(tmp_path / "all.npz")
    assert saved["images"].shape == (6, 8, 8, 1) and saved["class_labels"].tolist() == [0, 0, 0, 1, 1, 1]
    assert float(saved["guidance"]) == 2.0
    # the command's images are the library's for its seed (0); the guided samples differ from w = 0's
    from diffprompt.diffusion.pixels import tensor_to_images

    model, diffusion, _ = load_model(cond_run, torch.device("cpu"))
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    x = {w: generate(model, diffusion, 6, (1, 8, 8), "ddim", 3, 0.0, 0, 256, torch.device("cpu"),
                     class_labels=labels, guidance=w)[0] for w in (0.0, 2.0)}
    assert np.array_equal(tensor_to_images(x[2.0]), saved["images"])
    assert not torch.equal(x[0.0], x[2.0])
    assert main(["diffusion", "sample", str(cond_run), "--class", "right", "--n", "2", "--sampler", "ddim",
                 "--steps", "3", "--out", str(tmp_path / "right.npz")]) == 0
    assert np.load(tmp_path / "right.npz")["class_labels"].tolist() == [1, 1]
    assert main(["diffusion", "sample", str(cond_run), "--class", "all", "--n", "3", "--sampler", "ddim",
                 "--steps", "3", "--out", str(tmp_path / "all.png")]) == 0
    with Image.open(tmp_path / "all.png") as grid:  # 3 columns, a row per class: 8-pixel images, 2 padding, scale 2
        assert grid.size == (2 * (3 * 10 + 2), 2 * (2 * 10 + 2))


def test_an_unconditional_checkpoint_refuses_a_class_with_exit_2(cond_run, capsys):
    assert "unconditional model" in _err(capsys, ["diffusion", "sample", str(SHIPPED), "--class", "7", "--n", "1"])
    assert "--guidance needs --class" in _err(capsys, ["diffusion", "sample", str(cond_run), "--guidance", "2"])
    assert "unknown class 'up'" in _err(capsys, ["diffusion", "sample", str(cond_run), "--class", "up"])
    assert "unknown class '2'" in _err(capsys, ["diffusion", "sample", str(cond_run), "--class", "2"])
    assert "takes no --guidance" in _err(capsys, ["diffusion", "evaluate", str(SHIPPED), "--guidance", "0,1"])


def test_evaluate_gives_conditional_accuracy_per_guidance_scale(cond_run, tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "eval"
    assert main(["diffusion", "evaluate", str(cond_run), "--samplers", "ddim:3", "--guidance", "0,2",
                 "--n-samples", "8", "--nll-images", "2", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads((out / "eval.json").read_text())
    assert res["conditional"]["guidance"] == [0.0, 2.0] and res["conditional"]["num_classes"] == 2
    rows = res["samplers"]
    assert [(r["sampler"], r["guidance"], r["n"]) for r in rows] == [("DDIM-3-w0", 0.0, 8), ("DDIM-3-w2", 2.0, 8)]
    for r in rows:  # 8 samples, 4 asked of each class: accuracy is a multiple of 1/8
        assert 0.0 <= r["conditional_accuracy"] <= 1.0 and (r["conditional_accuracy"] * 8) % 1 == 0
    assert res["nll"]["given"].startswith("each image's true label") and math.isfinite(res["nll"]["bpd"])
    text = (out / "eval.md").read_text()
    assert "conditional accuracy" in text and "| DDIM-3-w2 |" in text
    for name in ("eval-guidance.png", "eval-samples-ddim-3-w0.png", "eval-samples-ddim-3-w2.png"):
        assert (out / name).exists(), name


@pytest.mark.parametrize("shift", [0, 1])
def test_conditional_accuracy_of_real_images_is_one_for_the_class_asked_for_and_zero_for_the_other(
        cond_run, tmp_path, monkeypatch, shift):
    """`evaluate` with the sampler replaced by real test images: of the class each sample asks for
    (shift 0) the conditional accuracy is the classifier's accuracy on them, 1 on these bars; of the
    other class (shift 1) it is 0. Both also equal an independent count on the classifier's labels."""
    from diffprompt.data import load_images
    from diffprompt.diffusion.evaluation import evaluate_model
    from diffprompt.diffusion.evaluation.feature_classifier import load_or_train
    from diffprompt.diffusion.pixels import images_to_tensor

    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    dataset = json.loads((cond_run / "config.json").read_text())["dataset"]
    test = load_images(dataset).split("test")
    by_class = [test.images[test.labels == c] for c in range(2)]

    def real_images(*args, class_labels, **kw):  # sample i: a test image of class (asked + shift) mod 2
        picks = [by_class[(int(c) + shift) % 2][i // 2 % len(by_class[(int(c) + shift) % 2])]
                 for i, c in enumerate(class_labels)]
        return images_to_tensor(np.stack(picks)), 0.1

    monkeypatch.setattr(evaluate_model, "generate", real_images)
    res = evaluate_model.evaluate(cond_run, samplers="ddim:3", n_samples=8, nll_images=0, device="cpu", out=tmp_path)
    assert res["classifier"]["test_accuracy"] == 1.0
    got = res["samplers"][0]["conditional_accuracy"]
    asked = np.arange(8) % 2
    clf = load_or_train(dataset, seed=0)
    _, probs = clf.run(real_images(class_labels=torch.as_tensor(asked))[0])
    assert got == float((probs.argmax(1) == asked).mean())
    assert got == (1.0 if shift == 0 else 0.0)


@pytest.mark.parametrize("n", [1, 7, 10, 25, 1000])
def test_balanced_classes_are_requested_round_robin(n):
    from diffprompt.diffusion.evaluation.evaluate_model import classes_in_proportion

    assert classes_in_proportion(np.full(10, 400), n).tolist() == (np.arange(n) % 10).tolist()


def test_unbalanced_classes_are_requested_in_the_data_proportions():
    from diffprompt.diffusion.evaluation.evaluate_model import classes_in_proportion

    twemoji = np.array([135, 1809, 4, 127, 105, 174, 68, 211, 179, 216])  # its training split
    got = np.bincount(classes_in_proportion(twemoji, 1000).numpy(), minlength=10)
    share = 1000 * twemoji / twemoji.sum()
    assert got.sum() == 1000 and np.all(np.abs(got - share) < 1)  # each within one sample of its share
    assert got.tolist() == [45, 597, 1, 42, 35, 58, 22, 70, 59, 71]  # largest remainders, worked by hand
    labels = classes_in_proportion(np.array([3, 1]), 4).tolist()
    assert labels == [0, 1, 0, 0]  # dealt round-robin while a class has quota left


def test_evaluate_asks_an_unbalanced_set_for_its_own_mixture_of_classes(tmp_path, monkeypatch):
    """Two classes of 24 and 8 images: the samples ask for the classes 3 : 1, as the floor's images are."""
    from diffprompt.diffusion.evaluation import evaluate_model

    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    folder = write_folder(tmp_path / "bars", per_class=24)
    for f in sorted((folder / "right").iterdir())[8:]:
        f.unlink()
    run = tmp_path / "run"
    assert main(["diffusion", "train", "--dataset", str(folder), "--conditional", "--steps", "1", "--batch-size", "4",
                 "--device", "cpu", "--out", str(run), *TINY]) == 0
    asked = []
    real = generate

    def recording(*args, class_labels, **kw):
        asked.append(class_labels.clone())
        return real(*args, class_labels=class_labels, **kw)

    monkeypatch.setattr(evaluate_model, "generate", recording)
    res = evaluate_model.evaluate(run, samplers="ddim:2", n_samples=8, nll_images=0, device="cpu", out=tmp_path / "e")
    train_counts = np.bincount(evaluate_model.load_images(str(folder)).split("train").labels)
    expected = evaluate_model.classes_in_proportion(train_counts, 8)
    assert train_counts[0] > 2 * train_counts[1] and asked[0].tolist() == expected.tolist()
    assert res["conditional"]["requested_counts"] == np.bincount(expected.numpy()).tolist()
    assert "samples per class: " + ", ".join(map(str, res["conditional"]["requested_counts"])) in (
        tmp_path / "e" / "eval.md").read_text()


# --- diffusers --------------------------------------------------------------------------------------


def test_export_maps_the_class_embedding_to_unet2dmodel(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    model = random_unet(K)
    config = diffusers_unet_config(model.config)
    assert (config["num_class_embeds"], config["class_embed_type"]) == (K + 1, None)
    theirs = diffusers.UNet2DModel(**{k: v for k, v in config.items() if k != "_class_name"}).eval()
    theirs.load_state_dict(to_diffusers_state_dict(model.config, model.state_dict()), strict=True)
    x, t = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 7, 300, 999])
    labels = torch.tensor([0, 1, 2, K])  # the null class is the last row in both
    with torch.no_grad():
        a, b = model(x, t, class_labels=labels), theirs(x, t, class_labels=labels).sample
    assert a.abs().max() > 0.1 and (a - b).abs().max() < 1e-5
    assert unet_config_from_diffusers(dict(theirs.config)) == model.config
    # the export folder loads back bit for bit, class embedding and class names included
    meta = {"kind": "diffusion-model", "unet": model.config.to_dict(), "class_names": ["a", "b", "c"],
            "diffusion": GaussianDiffusion(NoiseSchedule.linear(10)).to_dict(), "dataset": "bars", "step": 1}
    save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), meta)
    back, _, back_meta = load_model(export_diffusers(tmp_path / "model.safetensors", tmp_path / "out"))
    assert back.config == model.config and back_meta["class_names"] == ["a", "b", "c"]
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in model.state_dict().items())


def test_export_refuses_a_conditional_model_unet2dmodel_cannot_express(tmp_path):
    model = random_unet(K, num_heads=2, channel_mults=(1, 2), attention_resolutions=(8, 4))
    meta = {"kind": "diffusion-model", "unet": model.config.to_dict(),
            "diffusion": GaussianDiffusion(NoiseSchedule.linear(10)).to_dict()}
    save_checkpoint(tmp_path / "model.safetensors", model.state_dict(), meta)
    with pytest.raises(UserError) as e:
        export_diffusers(tmp_path / "model.safetensors", tmp_path / "out")
    assert "cannot express" in str(e.value) and "\n" not in str(e.value)


def test_requested_classes_by_index_name_or_all():
    meta = {"unet": {"num_classes": 3}, "class_names": ["cat", "dog", "emu"], "path": "m"}
    assert requested_classes(None, 4, meta) == (None, None)
    labels, nrow = requested_classes("dog", 4, meta)
    assert labels.tolist() == [1, 1, 1, 1] and nrow is None
    assert requested_classes("2", 2, meta)[0].tolist() == [2, 2]
    labels, nrow = requested_classes("all", 2, meta)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2] and nrow == 2
    for choice, guidance, message in (("3", 0.0, "unknown class '3'; choose an index 0..2, a name \\(cat, dog, emu\\)"),
                                      (None, 1.0, "--guidance needs --class")):
        with pytest.raises(UserError, match=message):
            requested_classes(choice, 2, meta, guidance)
    with pytest.raises(UserError, match="unconditional model"):
        requested_classes("0", 2, {"unet": {}, "path": "m"})
