"""The demo's ddpm stages: the conditional one (a row per class, guidance, conditional accuracy in the
report) and the unconditional one (the seed's model, every picture of the chain), and which models
the demo shows. The conditional "shipped" checkpoint here is a tiny model trained in the test."""

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from diffprompt import demo
from diffprompt.diffusion.checkpoints import load_model
from diffprompt.diffusion.generate import generate
from diffprompt.diffusion.visualize import save_grid
from diffprompt.report import render_report
from report_page import numbers, shows, tables

pytestmark = pytest.mark.usefixtures("one_thread")
generate_module = importlib.import_module("diffprompt.diffusion.generate")

SCALE, PAD, SIDE = 2, 2, 28  # save_grid's defaults: 2x nearest upscaling, 2-pixel padding; MNIST is 28 x 28


def grid_size(rows: int, cols: int) -> tuple[int, int]:
    """(width, height) of a save_grid PNG of rows x cols images."""
    return SCALE * (cols * (SIDE + PAD) + PAD), SCALE * (rows * (SIDE + PAD) + PAD)


def installed(mapping: dict):
    """A stand-in for demo.pretrained_checkpoint: the asset names in `mapping` resolve to its paths
    (None: not installed); any other name resolves as in this install."""
    real = demo.pretrained_checkpoint

    def lookup(name: str = demo.PRETRAINED):
        return mapping[name] if name in mapping else real(name)
    return lookup


@pytest.fixture(scope="module")
def cond_demo(tmp_path_factory):
    """The quick demo's training stage made conditional, then the ddpm stage with that model standing in
    for the shipped conditional checkpoint; the grid's generate calls are recorded."""
    root = tmp_path_factory.mktemp("cond-demo")
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFPROMPT_CACHE", str(root / "cache"))
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = demo.DemoConfig.quick(str(root))
    cfg.train_set = {**cfg.train_set, "conditional": True}
    demo.stage_train(cfg, root / "ddpm-train")
    asset = root / "ddpm-train" / "model.safetensors"
    cfg.pretrained = True
    mp.setattr(demo, "pretrained_checkpoint", installed({demo.PRETRAINED_CONDITIONAL: asset}))
    [_, (stage, source, why)] = demo.ddpm_sources(cfg, root / "ddpm-train")
    calls = []

    def recording(*args, **kw):
        calls.append(kw)
        return generate(*args, **kw)

    importlib.import_module("diffprompt.diffusion.evaluation.evaluate_model")  # holds the real generate: only the grid is recorded
    mp.setattr(generate_module, "generate", recording)  # draw_grids imports it at call time
    demo.stage_ddpm(cfg, root / stage, source, why)
    mp.undo()
    page = render_report([root / stage]).read_text()
    torch.set_num_threads(before)
    yield {"root": root, "cfg": cfg, "asset": asset, "calls": calls, "page": page, "stage": stage,
           "ev": json.loads((root / stage / "eval.json").read_text()),
           "config": json.loads((root / stage / "config.json").read_text())}


def test_the_conditional_checkpoint_gets_its_stage_and_is_drawn_a_row_per_class(cond_demo):
    cfg, out, config = cond_demo["cfg"], cond_demo["root"] / "ddpm-cond", cond_demo["config"]
    assert cond_demo["stage"] == "ddpm-cond"
    assert config["checkpoint"] == str(cond_demo["asset"]) and "class-conditional" in config["checkpoint_is"]
    [grid_call] = cond_demo["calls"]
    per = cfg.grid_per_class
    assert grid_call["class_labels"].tolist() == [c for c in range(10) for _ in range(per)]
    assert grid_call["guidance"] == cfg.grid_guidance == 2.0
    for name in ("samples.png", "real.png"):
        with Image.open(out / name) as img:
            assert img.size == grid_size(10, per), (name, img.size)
    assert config["samples"]["guidance"] == 2.0 and config["samples"]["per_class"] == per
    assert config["eval_guidance"] == list(cfg.eval_guidance)
    # one grid per configuration: no eval grids beside samples.png, and no chain for the conditional model
    assert not list(out.glob("eval-samples-*.png")) and not (out / "reverse.png").exists() and "chain" not in config


def test_the_real_grid_shows_each_class_in_its_row(cond_demo):
    from diffprompt.data import load_images

    test = load_images("mnist5k").split("test")
    per = cond_demo["cfg"].grid_per_class
    shown = demo.real_rows(test, 10, per)
    flat = test.images.reshape(len(test.images), -1)
    labels = [int(test.labels[np.flatnonzero((flat == img.reshape(-1)).all(1))[0]]) for img in shown]
    assert labels == [c for c in range(10) for _ in range(per)]


def test_the_conditional_evaluation_has_every_sampler_at_every_guidance_scale(cond_demo):
    ev, cfg = cond_demo["ev"], cond_demo["cfg"]
    assert ev["conditional"]["guidance"] == list(cfg.eval_guidance)
    assert [(r["spec"], r["guidance"]) for r in ev["samplers"]] == [
        (s, w) for s in cfg.eval_samplers for w in cfg.eval_guidance]
    for r in ev["samplers"]:
        assert 0.0 <= r["conditional_accuracy"] <= 1.0 and (r["conditional_accuracy"] * r["n"]) % 1 == 0


def test_the_report_shows_conditional_accuracy_per_w_beside_the_floor(cond_demo):
    ev, page = cond_demo["ev"], cond_demo["page"]
    [quality] = [t for t in tables(page) if "Conditional accuracy (%)" in t[0]]
    header, *rows = quality
    w_col, acc_col, share_col = header.index("w"), header.index("Conditional accuracy (%)"), header.index("Confident (%)")
    assert len(rows) == len(ev["samplers"]) + 1
    for r, row in zip(ev["samplers"], rows):
        assert row[0] == r["sampler"] and numbers(row[w_col]) == [r["guidance"]], row
        assert shows(row[acc_col], r["conditional_accuracy"], 100), (row, r["conditional_accuracy"])
        assert shows(row[share_col], r["confident_share"], 100), (row, r["confident_share"])
    floor = rows[-1]
    assert floor[0].startswith("Real images") and shows(floor[acc_col], ev["classifier"]["test_accuracy"], 100)
    # the grid's caption: checkpoint, sampler, guidance, which row is which class
    caption = ("Samples: 2 of each class, a row per class (row = class 0..9), drawn with DDIM-5 and classifier-free "
               f"guidance w = 2 by the model at training step {ev['step']} of model.safetensors, seed 7")
    assert caption in page


def test_the_report_says_how_good_the_samples_are_from_the_numbers(cond_demo):
    ev, page = cond_demo["ev"], cond_demo["page"]
    [row] = [r for r in ev["samplers"] if r["spec"] == "ddim:5" and r["guidance"] == 2.0]  # the grid's sampler and w
    c, floor = ev["classifier"], ev["real_floor"]
    ratio = row["fid"] / floor["fid"]
    close = row["confident_share"] >= c["test_confident_share"] - 0.05 and ratio <= 3.0
    sentence = (f"Against real data the DDIM-5 samples at guidance w = 2 are {'close' if close else 'still short'}: "
                f"the classifier is confident on {100 * row['confident_share']:.0f} % of them against "
                f"{100 * c['test_confident_share']:.0f} % of real test images, gives "
                f"{100 * row['conditional_accuracy']:.0f} % of them the class asked for (real test images: "
                f"{100 * c['test_accuracy']:.0f} %), and their FID is {ratio:.1f}× the real-data floor "
                f"({row['fid']:.1f} against {floor['fid']:.1f}).")
    assert sentence in page


def test_the_unconditional_stage_shows_the_shipped_seed_model(cond_demo, tmp_path, monkeypatch):
    """The shipped unconditional checkpoint, its 8-wide grid of exactly the samples of one generate call,
    the chain pictures, no guidance anywhere, and no eval grid repeating samples.png."""
    monkeypatch.setattr(demo, "pretrained_checkpoint", installed({demo.PRETRAINED_CONDITIONAL: None}))
    shipped = demo.pretrained_checkpoint(demo.PRETRAINED)
    cfg = demo.DemoConfig.quick(str(tmp_path))
    cfg.pretrained, cfg.eval_samplers, cfg.eval_samples, cfg.nll_images = True, ("ddim:2",), 4, 0
    [(stage, source, why)] = demo.ddpm_sources(cfg, tmp_path / "no-training-run")
    assert (stage, source) == ("ddpm", shipped)
    demo.stage_ddpm(cfg, tmp_path / "ddpm", source, why)
    config = json.loads((tmp_path / "ddpm" / "config.json").read_text())
    assert config["checkpoint"] == str(shipped) and config["checkpoint_is"] == (
        "the pre-trained checkpoint shipped with diffprompt (see README: Diffusion, for the command that made it)")
    assert "eval_guidance" not in config and "guidance" not in config["samples"]
    bench = json.loads(shipped.with_suffix(".json").read_text())["benchmark"]
    assert config["description"] == (f"Sampling, evaluation and pictures from {config['checkpoint_is']}. Its full "
                                     f"evaluation at n = 1000: {bench} (README: Diffusion).")
    ev = json.loads((tmp_path / "ddpm" / "eval.json").read_text())
    assert "conditional" not in ev and all("guidance" not in r for r in ev["samplers"])
    assert not list((tmp_path / "ddpm").glob("eval-samples-*.png"))
    assert all((tmp_path / "ddpm" / name).exists() for name in ("forward.png", "reverse.png", "reverse.gif"))
    model, diffusion, _ = load_model(shipped)
    expected, _ = generate(model, diffusion, cfg.grid_samples, (1, 28, 28), "ddim", 5, 0.0, cfg.seed + 7,
                           cfg.grid_samples, torch.device("cpu"), "linspace")
    save_grid(expected, tmp_path / "expected.png", nrow=8)
    with Image.open(tmp_path / "ddpm" / "samples.png") as got, Image.open(tmp_path / "expected.png") as want:
        assert got.size == grid_size(2, 8) and np.array_equal(np.asarray(got), np.asarray(want))


def test_the_models_the_demo_shows(tmp_path, monkeypatch):
    cond, uncond, trained = tmp_path / "cond.safetensors", tmp_path / "uncond.safetensors", tmp_path / "ddpm-train"
    cfg = demo.DemoConfig.quick(str(tmp_path))
    cfg.pretrained = True
    for assets, expected in (({demo.PRETRAINED_CONDITIONAL: cond, demo.PRETRAINED: uncond},
                              [("ddpm", uncond), ("ddpm-cond", cond)]),
                             ({demo.PRETRAINED_CONDITIONAL: None, demo.PRETRAINED: uncond}, [("ddpm", uncond)]),
                             ({demo.PRETRAINED_CONDITIONAL: cond, demo.PRETRAINED: None},
                              [("ddpm", trained), ("ddpm-cond", cond)]),
                             ({demo.PRETRAINED_CONDITIONAL: None, demo.PRETRAINED: None}, [("ddpm", trained)])):
        monkeypatch.setattr(demo, "pretrained_checkpoint", installed(assets))
        assert [(stage, path) for stage, path, _ in demo.ddpm_sources(cfg, trained)] == expected
    monkeypatch.setattr(demo, "pretrained_checkpoint", installed({demo.PRETRAINED_CONDITIONAL: cond, demo.PRETRAINED: uncond}))
    cfg.pretrained = False  # --no-pretrained
    assert demo.ddpm_sources(cfg, trained) == [("ddpm", trained, "the model trained in the ddpm-train stage")]
