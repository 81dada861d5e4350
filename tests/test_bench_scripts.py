"""Benchmark scripts whose whole path runs on a CPU at toy size: the prepared GPU benchmark
(benchmarks/gpu_paper_preset.py: the paper preset's settings for a short budget, training,
evaluation, its results file), the quality-against-time curve (benchmarks/bench_diffusion_curve.py),
the sampler table (benchmarks/bench_diffusion_samplers.py), the horizontal-flip check
(benchmarks/bench_hflip_symmetry.py), the paired bounds of two checkpoints
(benchmarks/bench_diffusion_likelihood.py, benchmarks/bench_diffusion_overfitting.py), the averages
of one trajectory's weights (benchmarks/bench_diffusion_ema_length.py), and the spread of FID over
sampling seeds (benchmarks/bench_diffusion_fid_draws.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
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


def test_the_sampler_table_without_a_timing_pass_holds_each_evaluation(tmp_path):
    folder = write_folder(tmp_path / "bars")
    run = tmp_path / "run"
    assert main(["diffusion", "train", "--dataset", str(folder), "--steps", "3", "--batch-size", "8",
                 "--device", "cpu", "--out", str(run), *TINY]) == 0

    def bench(exact_images: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_samplers.py"), "--checkpoint",
                               str(run), "--samplers", "ddim:2,dpm++2m:3", "--n", "8", "--nll-images", "4",
                               "--nll-timesteps", "2", "--exact-nll-images", str(exact_images), "--no-timing",
                               "--work", str(tmp_path / "w"), "--name", "toy", "--results", str(tmp_path / "results")],
                              capture_output=True, text=True, timeout=300,
                              env={**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "cache")})

    done = bench(2)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "results" / "toy.json").read_text())
    md = (tmp_path / "results" / "toy.md").read_text()
    for spec, label in (("ddim-2", "DDIM-2"), ("dpmpp2m-3", "DPM++2M-3")):
        ev = json.loads((tmp_path / "w" / spec / "eval.json").read_text())["samplers"][0]
        assert ev["sampler"] == label and f"| {label} | {ev['model_calls_per_image']} | {ev['fid']:.2f} |" in md
    exact = json.loads((tmp_path / "w" / "nll_exact-2-images" / "eval.json").read_text())["nll"]
    assert exact["images"] == 2 and exact["timesteps"] == 20 and res["nll_exact"] == exact
    assert f"all 20 terms) on 2 stratified test images: **{exact['bpd']:.3f}" in md
    assert "measured while scoring" in md and "--no-timing" in md and "timing_n" not in res
    # asked again for another count, the bound is computed anew; the samplers' scores come from the cache
    assert bench(3).returncode == 0
    again = json.loads((tmp_path / "results" / "toy.json").read_text())
    assert again["nll_exact"]["images"] == 3 and again["samplers"] == res["samplers"]


def test_the_likelihood_table_pairs_two_models_on_the_same_images(tmp_path):
    folder = write_folder(tmp_path / "bars")
    runs = {"simple": [], "hybrid": ["--set", "loss_type=hybrid", "--set", "variance=learned_range"]}
    for name, extra in runs.items():
        assert main(["diffusion", "train", "--dataset", str(folder), "--steps", "3", "--batch-size", "8", "--device", "cpu",
                     "--out", str(tmp_path / name), *TINY, *extra]) == 0
    models = [a for name in runs for a in ("--model", name, str(tmp_path / name), str(tmp_path / f"w-{name}"))]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_likelihood.py"), *models,
                           "--samplers", "ddpm:3", "--n", "8", "--images", "4", "--results", str(tmp_path / "results")],
                          capture_output=True, text=True, timeout=300, env={**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "cache")})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "results" / "diffusion_likelihood_mnist5k.json").read_text())
    md = (tmp_path / "results" / "diffusion_likelihood_mnist5k.md").read_text()
    bounds = [json.loads((tmp_path / f"w-{name}" / "nll_exact-4-images" / "eval.json").read_text())["nll"] for name in runs]
    diffs = np.array(bounds[1]["image_bpd"]) - np.array(bounds[0]["image_bpd"])
    assert res["paired_difference"]["mean"] == pytest.approx(diffs.mean(), abs=1e-9)
    assert res["paired_difference"]["stderr"] == pytest.approx(diffs.std(ddof=1) / 2, abs=1e-9)
    assert f"**{diffs.mean():+.3f} ± {diffs.std(ddof=1) / 2:.3f} bits/dim**" in md
    for name, b in zip(runs, bounds, strict=True):
        assert b["images"] == 4 and b["timesteps"] == 20
        assert f"| {name} | " in md and f"**{b['bpd']:.3f} ± {b['bpd_stderr']:.3f}** |" in md
    assert "| simple | simple, Σ fixed_small | 3 |" in md and "| hybrid | hybrid (λ = 0.001), Σ learned_range | 3 |" in md
    assert md.count("| DDPM-3 |") == 2 and "| t = 10–19 |" in md


def _bench_module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return __import__(name)
    finally:
        sys.path.pop(0)


def _mutation_scores():
    return _bench_module("mutation_scores")


@pytest.mark.usefixtures("one_thread")
def test_mirrored_digits_score_as_another_distribution_and_symmetric_images_do_not(monkeypatch):
    from diffprompt.data import images as image_data

    hf = _bench_module("bench_hflip_symmetry")
    digits = hf.check("mnist5k", n=300, seeds=[0])
    plain, mirrored = digits["rows"]
    assert plain["accuracy"] > 0.95 and mirrored["accuracy"] < plain["accuracy"] - 0.2  # a mirrored 2 is no 2
    assert mirrored["fid"] > 2 * plain["fid"]
    train = image_data.load_images("mnist5k", "train").images.astype(np.float32)
    gap = np.abs(train - train[:, :, ::-1]).mean(axis=(1, 2, 3))
    assert digits["self_mirror_share"] == pytest.approx(float((gap <= 10).mean()))
    assert digits["mean_mirror_gap"] == pytest.approx(float(gap.mean()), rel=1e-6)

    real_load = image_data.load_images

    def symmetrised(name, split=None, **kw):  # every image made its own mirror image
        ds = real_load(name, split, **kw)
        ds.images = np.maximum(ds.images, ds.images[:, :, ::-1])
        return ds

    monkeypatch.setattr(image_data, "load_images", symmetrised)
    sym = hf.check("mnist5k", n=300, seeds=[0])
    assert sym["rows"][0] == {**sym["rows"][1], "kind": "plain"} and sym["self_mirror_share"] == 1.0


def test_mutation_scores_count_timeouts_as_killed_and_leave_equivalents_out(monkeypatch):
    ms = _mutation_scores()
    monkeypatch.setattr(ms, "EQUIVALENT", {"pkg.mod.x_f__mutmut_4": "a default every caller overrides"})
    found = {"pkg.mod.x_f__mutmut_1": "killed", "pkg.mod.x_f__mutmut_2": "timeout", "pkg.mod.x_f__mutmut_3": "survived",
             "pkg.mod.x_f__mutmut_4": "survived", "pkg.mod.x_f__mutmut_5": "no tests", "pkg.mod.x_f__mutmut_6": "not checked"}
    text = ms.render(found)
    assert "| `pkg.mod` | 6 | 2 | 1 | 1 | 1 | 1 | 50.0 % |" in text  # 2 killed of 4 counted
    assert "- `pkg.mod.x_f__mutmut_3`: survived" in text and "- `pkg.mod.x_f__mutmut_5`: no tests" in text
    assert "- `pkg.mod.x_f__mutmut_4`: a default every caller overrides" in text
    monkeypatch.setattr(ms, "EQUIVALENT", {"pkg.mod.x_f__mutmut_1": "wrongly listed"})  # a test kills it
    text = ms.render(found)
    assert "| `pkg.mod` | 6 | 2 | 2 | 1 | 0 | 1 | 40.0 % |" in text  # still killed, not equivalent
    assert "not a live mutant (remove them):\n\n- `pkg.mod.x_f__mutmut_1`: killed" in text


def test_forgetting_survivors_clears_all_but_the_killed_and_the_coverage_stats(tmp_path):
    ms = _mutation_scores()
    meta = tmp_path / "src" / "m.py.meta"
    meta.parent.mkdir()
    codes = {"a": 1, "b": 0, "c": 33, "d": -24, "e": None}
    meta.write_text(json.dumps({"exit_code_by_key": codes, "durations_by_key": {"a": 0.5}}))
    (tmp_path / "mutmut-stats.json").write_text("{}")
    assert ms.forget_survivors(tmp_path) == 3
    data = json.loads(meta.read_text())
    assert data["exit_code_by_key"] == {"a": 1, "b": None, "c": None, "d": None, "e": None}
    assert data["durations_by_key"] == {"a": 0.5} and not (tmp_path / "mutmut-stats.json").exists()
    meta.write_text(json.dumps({"exit_code_by_key": {"pkg.a.x_f__mutmut_1": 0, "pkg.b.x_f__mutmut_1": 0}}))
    assert ms.forget_survivors(tmp_path, prefix="pkg.a.") == 1  # one module only
    assert json.loads(meta.read_text())["exit_code_by_key"] == {"pkg.a.x_f__mutmut_1": None, "pkg.b.x_f__mutmut_1": 0}


def test_every_listed_equivalent_mutant_has_a_reason():
    ms = _mutation_scores()
    assert ms.EQUIVALENT and all(name.startswith("diffprompt.") and len(why) > 20 for name, why in ms.EQUIVALENT.items())


def test_the_overfitting_table_pairs_models_on_each_split(tmp_path):
    """Each model's bits/dim on the train and test splits, and the paired differences, as numpy gives them;
    a model set against itself differs by exactly 0 (the same images, timesteps and noise for both)."""
    import torch

    from diffprompt.data import load_images
    from diffprompt.data.splits import stratified_sample
    from diffprompt.diffusion.checkpoints import load_model
    from diffprompt.diffusion.evaluation.bits_per_dim import nll_on_images
    from diffprompt.diffusion.pixels import images_to_tensor

    folder = write_folder(tmp_path / "bars")
    for name, steps in (("a", "2"), ("b", "4")):
        assert main(["diffusion", "train", "--dataset", str(folder), "--steps", steps, "--batch-size", "8",
                     "--device", "cpu", "--out", str(tmp_path / name), *TINY]) == 0

    def bench(*models: str, name: str) -> tuple[dict, str]:
        done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_overfitting.py"), *models,
                               "--images", "4", "--timesteps", "3", "--name", name, "--results", str(tmp_path / "res")],
                              capture_output=True, text=True, timeout=300, env=ENV)
        assert done.returncode == 0, done.stderr[-2000:]
        return (json.loads((tmp_path / "res" / f"{name}.json").read_text()),
                (tmp_path / "res" / f"{name}.md").read_text())

    res, md = bench("--model", "A", str(tmp_path / "a"), "--model", "B", str(tmp_path / "b"), name="ab")
    a, b = res["models"]
    for split in ("train", "test"):
        diffs = np.array(b[split]["image_bpd"]) - np.array(a[split]["image_bpd"])
        assert a[split]["images"] == 4 and a[split]["split"] == split and a[split]["timesteps"] == 3
        assert res["paired_difference"][split]["mean"] == pytest.approx(diffs.mean(), abs=1e-9)
        assert res["paired_difference"][split]["stderr"] == pytest.approx(diffs.std(ddof=1) / 2, abs=1e-9)
        assert f"| {split} | {diffs.mean():+.4f} ± {diffs.std(ddof=1) / 2:.4f} |" in md
    # the train row is the bound on the stratified training images, computed here independently
    model, diffusion, _ = load_model(tmp_path / "a", "cpu")
    train = load_images(str(folder)).split("train")
    x0 = images_to_tensor(train.images[stratified_sample(train.labels, 4, seed=0)])
    alone = nll_on_images(model, diffusion, x0, batch_size=100, seed=0, device=torch.device("cpu"), num_t=3)
    assert a["train"]["bpd"] == pytest.approx(alone["bpd"], abs=1e-9)
    assert f"| A | `{tmp_path / 'a'}` | 2 | {a['train']['bpd']:.3f} ± {a['train']['bpd_stderr']:.3f} |" in md
    same, _ = bench("--model", "A", str(tmp_path / "a"), "--model", "A again", str(tmp_path / "a"), name="aa")
    assert all(same["paired_difference"][s]["mean"] == 0.0 for s in ("train", "test"))


def _ema_length():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_diffusion_ema_length

    return bench_diffusion_ema_length


def test_a_power_ema_weights_each_update_as_the_closed_form_says():
    """After T updates starting from nothing, update t has weight (t^(g+1) - (t-1)^(g+1)) / T^(g+1); the width
    of that profile is the sigma_rel asked for, and the exponents are the ones the EDM2 paper quotes."""
    import torch

    m = _ema_length()
    rng = np.random.default_rng(0)
    for sigma_rel, paper_gamma in ((0.05, 16.97), (0.10, 6.94)):
        gamma = m.gamma_for(sigma_rel)
        assert gamma == pytest.approx(paper_gamma, abs=0.01)
        assert np.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3))) == pytest.approx(sigma_rel, rel=1e-9)
        net = torch.nn.Linear(1, 1, bias=False).double()
        ema, xs = m.PowerEMA(net, gamma), rng.normal(size=200)
        for x in xs:
            net.weight.data.fill_(float(x))
            ema.update(net)
        t = np.arange(1, 201, dtype=np.float64)
        weights = (t ** (gamma + 1) - (t - 1) ** (gamma + 1)) / 200.0 ** (gamma + 1)
        assert float(ema.model.weight) == pytest.approx(float(weights @ xs), abs=1e-12)
    with pytest.raises(ValueError, match="outside"):
        m.gamma_for(0.3)


@pytest.mark.usefixtures("one_thread")
def test_the_ema_length_bench_resumes_the_same_trajectory_and_scores_each_average(tmp_path):
    """The resumed run's own EMA equals the original's bitwise; a fixed-decay average is d^2 e_1 + d(1-d) w_2
    + (1-d) w_3 of the kept weights; every saved average is scored and tabled."""
    from diffprompt.checkpoint import load_checkpoint, strip_prefix

    folder = write_folder(tmp_path / "bars")
    run, env = tmp_path / "run", {**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "cache")}
    trained = subprocess.run([sys.executable, "-m", "diffprompt", "diffusion", "train", "--dataset", str(folder),
                              "--steps", "3", "--batch-size", "8", "--ckpt-every", "1", "--device", "cpu",
                              "--out", str(run), *TINY], capture_output=True, text=True, timeout=300, env=env)
    assert trained.returncode == 0, trained.stderr[-2000:]  # with the bench's thread count: resume is bitwise
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_ema_length.py"), "--run", str(run),
                           "--from-step", "1", "--to-step", "3", "--sigma-rels", "0.2", "--decays", "0.5",
                           "--samplers", "dpm++2m:2", "--n", "8", "--work", str(tmp_path / "work"),
                           "--results", str(tmp_path / "res"), "--name", "ema"], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "res" / "ema.json").read_text())
    assert res["check"]["max_abs_diff_to_shipped_ema"] == 0.0
    assert [r["name"] for r in res["rows"]] == ["power sigma_rel=0.2", "fixed decay=0.5", "run's own EMA (warm-up, 0.999)"]
    e1 = strip_prefix(load_checkpoint(run / "ckpt-0000001.safetensors")[0], "ema.")
    w2 = strip_prefix(load_checkpoint(run / "ckpt-0000002.safetensors")[0], "model.")
    w3 = strip_prefix(load_checkpoint(run / "last.safetensors")[0], "model.")
    fixed, _ = load_checkpoint(res["rows"][1]["checkpoint"])
    for k, v in fixed.items():
        if v.is_floating_point():
            expected = 0.25 * e1[k] + 0.25 * w2[k] + 0.5 * w3[k]
            assert torch_allclose(v, expected), k
    md = (tmp_path / "res" / "ema.md").read_text()
    for row in res["rows"]:
        ev = json.loads((Path(row["checkpoint"]).parent / "eval-seed0" / "eval.json").read_text())
        fid = ev["samplers"][0]["fid"]
        assert row["scores"]["rows"]["dpm++2m:2"]["fid"] == fid and f"| {row['name']} | {fid:.2f} |" in md


def torch_allclose(a, b) -> bool:
    import torch

    return bool(torch.allclose(a.double(), b.double(), atol=1e-6, rtol=1e-5))


@pytest.mark.usefixtures("one_thread")
def test_the_ema_length_bench_tracks_averages_along_a_new_run_of_changed_settings(tmp_path):
    """With --set: a new run of the preset so changed; an average of decay 0 is the last step's weights."""
    from diffprompt.checkpoint import load_checkpoint, strip_prefix

    folder = write_folder(tmp_path / "bars")
    settings = [f"--set={kv}" for kv in [f"dataset={folder}", "batch_size=8", "lr=2e-3", *TINY[1::2]]]
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_ema_length.py"), *settings,
                           "--tag", "toy", "--to-step", "3", "--sigma-rels", "0.2", "--decays", "0", "--samplers",
                           "dpm++2m:2", "--n", "8", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res")],
                          capture_output=True, text=True, timeout=300, env={**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "c")})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "res" / "diffusion_ema_length_mnist5k_toy.json").read_text())
    config = json.loads((tmp_path / "work" / "run" / "config.json").read_text())
    assert config["lr"] == 2e-3 and config["steps"] == 3 and config["dataset"] == str(folder)
    last = strip_prefix(load_checkpoint(tmp_path / "work" / "run" / "last.safetensors")[0], "model.")
    zero, _ = load_checkpoint(res["rows"][1]["checkpoint"])
    assert res["rows"][1]["name"] == "fixed decay=0" and all(torch_allclose(v, last[k]) for k, v in zero.items())
    assert "a new unconditional run of the `ddpm-tiny-mnist` preset with dataset=" in (
        tmp_path / "res" / "diffusion_ema_length_mnist5k_toy.md").read_text()


@pytest.mark.usefixtures("one_thread")
def test_the_fid_draws_table_summarises_each_seeds_evaluation(tmp_path):
    """Per seed the FIDs and floors that evaluate wrote; per sampler mean, sd (n - 1) and range as numpy gives them."""
    folder = write_folder(tmp_path / "bars")
    run = tmp_path / "run"
    assert main(["diffusion", "train", "--dataset", str(folder), "--steps", "2", "--batch-size", "8",
                 "--device", "cpu", "--out", str(run), *TINY]) == 0
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_diffusion_fid_draws.py"), "--checkpoint",
                           str(run), "--samplers", "dpm++2m-sde:2,dpm++2m:2", "--seeds", "0,1,2", "--n", "8",
                           "--work", str(tmp_path / "work"), "--results", str(tmp_path / "res"), "--name", "draws"],
                          capture_output=True, text=True, timeout=300, env={**ENV, "DIFFPROMPT_CACHE": str(tmp_path / "c")})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads((tmp_path / "res" / "draws.json").read_text())
    md = (tmp_path / "res" / "draws.md").read_text()
    evals = [json.loads((tmp_path / "work" / f"seed{s}" / "eval.json").read_text()) for s in range(3)]
    assert [e["seed"] for e in evals] == [0, 1, 2] and res["batch_size"] == 100
    for spec in ("dpm++2m-sde:2", "dpm++2m:2"):
        fids = np.array([next(r["fid"] for r in e["samplers"] if r["spec"] == spec) for e in evals])
        ratios = fids / np.array([e["real_floor"]["fid"] for e in evals])
        stats = res["summary"][spec]
        assert stats["fid"]["mean"] == pytest.approx(fids.mean()) and stats["fid"]["sd"] == pytest.approx(fids.std(ddof=1))
        assert stats["ratio"]["min"] == pytest.approx(ratios.min()) and stats["ratio"]["max"] == pytest.approx(ratios.max())
    floor0, fid0 = evals[0]["real_floor"]["fid"], evals[0]["samplers"][0]["fid"]
    assert f"| 0 | {floor0:.2f} | {fid0:.2f} | {fid0 / floor0:.2f} |" in md
