"""DDPM training: loss goes down, exact resume, NaN stop, config mismatch, config layering, EMA,
optimizer-state round trip, and a 2-process gloo run (torchrun) with identical replicas."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from diffprompt.checkpoint import flatten_optimizer_state, load_checkpoint, unflatten_optimizer_state
from diffprompt.data.images import ImageDataset
from diffprompt.diffusion.checkpoints import load_model, resumable_run_config
from diffprompt.diffusion.config import OLD_KEYS, TrainConfig, resolve_config
from diffprompt.diffusion.ema import EMA
from diffprompt.diffusion.training import train
from diffprompt.errors import UserError
from diffprompt.training_setup import lr_factor

ROOT = Path(__file__).resolve().parents[1]
# A very small U-Net for 8x8 images: widths 8/16/16, one block per level.
TINY8 = ["model.base_channels=8", "model.num_res_blocks=1", "model.dropout=0.1", "num_timesteps=20",
         "sample_n=4", "sample_steps=4", "log_every=1", "warmup_steps=2", "lr=2e-3"]


pytestmark = pytest.mark.usefixtures("one_thread")


def synthetic_data(n: int = 48, size: int = 8, seed: int = 0) -> ImageDataset:
    """Two classes of 8x8 grey images: a bright bar on the left or on the right, plus noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    images = rng.integers(0, 40, size=(n, size, size, 1)).astype(np.uint8)
    for i, y in enumerate(labels):
        cols = slice(1, 3) if y == 0 else slice(size - 3, size - 1)
        images[i, :, cols, 0] = 220
    idx = np.arange(n)
    return ImageDataset(name="bars8", images=images, labels=labels, class_names=["left", "right"],
                        _split_indices={"train": idx[: n * 3 // 4], "test": idx[n * 3 // 4:]})


def test_fifty_steps_on_mnist5k_lower_the_loss(tmp_path):
    cfg = resolve_config(sets=["model.base_channels=8", "model.num_res_blocks=1", "log_every=1", "sample_n=4",
                               "sample_steps=2", "warmup_steps=5", "lr=2e-3"], steps=50, batch_size=16, seed=0)
    out = train(cfg, out=tmp_path / "run")
    losses = [m["loss"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())]
    assert len(losses) == 50
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    # eps-prediction starts near 1 (zero-initialised output); a working optimiser halves it quickly
    assert last < 0.8 * first, (first, last)
    for name in ("config.json", "metrics.jsonl", "last.safetensors", "model.safetensors", "loss.png",
                 "samples.png", "real.png", "train_summary.json", "DONE"):
        assert (out / name).exists(), name
    saved = json.loads((out / "config.json").read_text())
    assert saved["kind"] == "diffusion-train" and saved["steps"] == 50 and saved["dataset"] == "mnist5k"
    _, meta = load_checkpoint(out / "model.safetensors")
    assert meta["kind"] == "diffusion-model" and meta["weights"] == "ema" and meta["step"] == 50


def _all_tensors(path: Path) -> dict[str, torch.Tensor]:
    tensors, _ = load_checkpoint(path)
    return tensors


def test_resume_is_bitwise_exact(tmp_path):
    data = synthetic_data()
    sets = TINY8 + ["hflip=true"]  # flips exercise the data-order generator too
    full = train(resolve_config(sets=sets, steps=8, batch_size=8, seed=3), out=tmp_path / "full", data=data)
    half = train(resolve_config(sets=sets, steps=4, batch_size=8, seed=3), out=tmp_path / "half", data=data)
    at_half = _all_tensors(half / "last.safetensors")
    cfg = resolve_config(base=resumable_run_config(half), steps=8)
    resumed = train(cfg, resume=half, data=data)
    a, b = _all_tensors(full / "last.safetensors"), _all_tensors(resumed / "last.safetensors")
    assert set(a) == set(b)
    assert any(k.startswith("optim.state.") for k in a) and "rng.torch" in a and "data.perm" in a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    _, meta = load_checkpoint(resumed / "last.safetensors")
    assert meta["step"] == 8 and meta["ema_updates"] == 8
    # the run stopped at step 4 differs from the finished one (so equality above means something)
    assert any(not torch.equal(at_half[k], a[k]) for k in a if k.startswith("model."))
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    assert (resumed / "DONE").exists()


def test_resume_with_another_model_config_names_the_keys(tmp_path):
    data = synthetic_data()
    run = train(resolve_config(sets=TINY8, steps=2, batch_size=8), out=tmp_path / "r", data=data)
    cfg = resolve_config(base=resumable_run_config(run), sets=["model.base_channels=16"], steps=4)
    with pytest.raises(UserError, match=r"another model config.*(shape mismatch|missing keys).*conv"):
        train(cfg, resume=run, data=data)
    with pytest.raises(UserError, match="already holds a training run"):
        train(resolve_config(sets=TINY8, steps=2, batch_size=8), out=run, data=data)


def test_checkpoints_keep_the_full_diffusion_spec(tmp_path):
    data = synthetic_data()
    sets = TINY8 + ["schedule=cosine", "prediction=v", "variance=learned_range", "loss_type=hybrid",
                    "loss_weighting=min_snr", "min_snr_gamma=3", "vlb_weight=0.01"]
    run = train(resolve_config(sets=sets, steps=2, batch_size=8), out=tmp_path / "spec", data=data)
    trained = resolve_config(sets=sets).make_diffusion().to_dict()
    assert trained["loss_weighting"] == "min_snr" and trained["min_snr_gamma"] == 3.0
    for path in (run, run / "last.safetensors"):
        _, diffusion, meta = load_model(path)
        assert diffusion.to_dict() == trained and meta["diffusion"] == trained
    assert (diffusion.loss_type.value, diffusion.loss_weighting.value, diffusion.vlb_weight) == ("hybrid", "min_snr", 0.01)
    # a sidecar from before the full spec (schedule name and timesteps only) loads with the defaults
    side = run / "model.json"
    meta = json.loads(side.read_text())
    meta["diffusion"] = {"schedule": "cosine", "timesteps": 20, "prediction": "v", "variance": "learned_range"}
    meta["config"] = renamed_back(meta["config"])  # and its config in the keys of then
    side.write_text(json.dumps(meta))
    _, old, _ = load_model(run)
    assert old.schedule.to_dict() == {"name": "cosine", "s": 0.008, "num_timesteps": 20} and old.prediction.value == "v"
    assert (old.loss_type.value, old.loss_weighting.value) == ("hybrid", "none")  # the loss from the saved config
    _, shipped, _ = load_model(ROOT / "src" / "diffprompt" / "assets" / "ddpm-tiny-mnist5k.safetensors")
    assert shipped.num_timesteps == 1000 and shipped.to_dict()["loss_weighting"] == "min_snr" and shipped.loss_type.value == "simple"


def test_a_p2_run_keeps_its_weighting_in_the_checkpoint(tmp_path):
    sets = TINY8 + ["loss_weighting=p2", "p2_gamma=0.5", "p2_k=2"]
    run = train(resolve_config(sets=sets, steps=2, batch_size=8), out=tmp_path / "p2", data=synthetic_data())
    _, diffusion, meta = load_model(run)
    assert (meta["diffusion"]["loss_weighting"], meta["diffusion"]["p2_gamma"], meta["diffusion"]["p2_k"]) == ("p2", 0.5, 2.0)
    t = torch.tensor([0, 10, 19])
    snr = diffusion.snr[t]
    assert torch.allclose(diffusion.mse_weight(t), 1 / (2 + snr) ** 0.5, rtol=1e-5)


def renamed_back(config: dict) -> dict:
    """A config as it was saved before `loss` and `timesteps` were renamed."""
    old = {new: old for old, new in OLD_KEYS.items()}
    return {old.get(k, k): v for k, v in config.items()}


def test_configs_with_the_keys_before_the_rename_still_resume_and_load(tmp_path):
    run = tmp_path / "old"
    train(resolve_config(sets=TINY8 + ["loss_type=hybrid", "variance=learned_range"], steps=2, batch_size=8),
          out=run, data=synthetic_data())
    saved = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps(renamed_back(saved)))
    assert "loss" in json.loads((run / "config.json").read_text())
    cfg = resolve_config(base=resumable_run_config(run), steps=4)
    assert (cfg.loss_type, cfg.num_timesteps) == ("hybrid", 20)
    toml = tmp_path / "old.toml"
    toml.write_text('timesteps = 30\nloss = "vlb"\n')
    assert (resolve_config(str(toml)).num_timesteps, resolve_config(str(toml)).loss_type) == (30, "vlb")
    assert resolve_config(sets=["loss=vlb", "timesteps=40"]).to_dict()["num_timesteps"] == 40
    assert TrainConfig.from_dict({"loss": "vlb"}).loss_type == "vlb"


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from diffprompt.diffusion.process import GaussianDiffusion

    original = GaussianDiffusion.training_loss
    calls = {"n": 0}

    def flaky(self, model, x0, loss_type="simple", **kw):
        out = original(self, model, x0, loss_type=loss_type, **kw)
        calls["n"] += 1
        if calls["n"] == 5:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(GaussianDiffusion, "training_loss", flaky)
    data = synthetic_data()
    with pytest.raises(UserError, match=r"nan at step 5.*lower the learning rate"):
        train(resolve_config(sets=TINY8 + ["ckpt_every=2"], steps=8, batch_size=8), out=tmp_path / "nan", data=data)
    _, meta = load_checkpoint(tmp_path / "nan" / "last.safetensors")
    assert meta["step"] == 4
    assert not (tmp_path / "nan" / "DONE").exists()
    tensors, _ = load_checkpoint(tmp_path / "nan" / "last.safetensors")
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if v.dtype.is_floating_point)


@pytest.mark.parametrize("decay", ["linear", "cosine"])
def test_the_learning_rate_of_every_step_follows_the_configured_decay(tmp_path, decay):
    cfg = resolve_config(sets=[*TINY8, f"lr_decay={decay}"], steps=6, batch_size=8, seed=0)
    out = train(cfg, out=tmp_path / "run", data=synthetic_data())
    logged = [json.loads(line)["lr"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([2e-3 * lr_factor(step, 6, 2, decay) for step in range(6)], rel=1e-12)
    assert logged[0] < logged[1] == logged[2] > logged[3] > logged[-1] and logged[1] == pytest.approx(2e-3)
    with pytest.raises(UserError, match="unknown lr decay 'step'; choose one of: constant, linear, cosine"):
        resolve_config(sets=["lr_decay=step"])


def test_config_layers_toml_set_and_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('steps = 7\nlr = 3e-4\nschedule = "cosine"\n[model]\nbase_channels = 16\n')
    cfg = resolve_config(str(f), ["lr=5e-4", "model.dropout=0.0", "hflip=yes"], steps=9, batch_size=None)
    assert (cfg.steps, cfg.lr, cfg.schedule, cfg.hflip, cfg.batch_size) == (9, 5e-4, "cosine", True, 32)
    assert cfg.model == {"base_channels": 16, "dropout": 0.0}
    preset = resolve_config("ddpm-cifar10")
    assert preset.unet_preset == "cifar10" and preset.ema_decay == 0.9999 and preset.hflip
    assert resolve_config("ddpm-tiny-mnist").dataset == "mnist5k"
    for bad, msg in ((["schedule=foo"], "unknown schedule"), (["prediction=score"], "unknown prediction"),
                     (["variance=learned"], "unknown variance"), (["stepz=3"], "unknown config key"),
                     (["steps=2.5"], "integer"), (["sample_steps=2000"], "sample_steps")):
        with pytest.raises(UserError, match=msg):
            resolve_config(sets=bad)
    with pytest.raises(UserError, match="unknown preset"):
        resolve_config("no-such-preset")
    assert TrainConfig.from_dict(resolve_config(sets=["lr=1e-2"]).to_dict()).lr == 1e-2


def test_ema_update_and_warmup():
    model = torch.nn.Linear(3, 2)
    ema = EMA(model, decay=0.9, warmup=True)
    before = ema.model.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    d = ema.update(model)
    assert d == pytest.approx(1 / 10)  # min(0.9, (1 + 0) / (10 + 0))
    torch.testing.assert_close(ema.model.weight, d * before + (1 - d) * model.weight)
    for _ in range(200):
        d = ema.update(model)
    assert d == pytest.approx(0.9)
    assert not ema.model.weight.requires_grad
    assert EMA(model, decay=0.5, warmup=False).current_decay() == 0.5


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.8, 0.95))
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    tensors, meta = flatten_optimizer_state(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # what the JSON sidecar keeps
    back = unflatten_optimizer_state(tensors, meta)
    opt2 = torch.optim.AdamW(torch.nn.Linear(4, 3).parameters(), lr=1.0)
    opt2.load_state_dict(back)
    sd1, sd2 = opt.state_dict(), opt2.state_dict()
    assert sd2["param_groups"][0]["betas"] == (0.8, 0.95) and sd2["param_groups"][0]["lr"] == 1e-3
    for pid in sd1["state"]:
        for name, v in sd1["state"][pid].items():
            assert torch.equal(v, sd2["state"][pid][name])


DIST_SCRIPT = textwrap.dedent("""
    import hashlib, json, os, sys
    import numpy as np
    import torch
    torch.set_num_threads(1)
    import diffprompt.diffusion.checkpoints as ck
    import diffprompt.diffusion.training as tr
    from diffprompt.data.images import ImageDataset
    from diffprompt.diffusion.config import resolve_config

    def own_hash(module):
        # this process's own weights, hashed here (not by the code under test)
        module = getattr(module, "module", module)  # DDP wraps the model
        h = hashlib.sha256()
        for name, t in sorted(module.state_dict().items()):
            h.update(name.encode() + t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    record = {"saves": [], "batches": []}
    real_save, real_setup, real_finish = ck.save_checkpoint, tr.setup, tr.finish
    real_next = tr.TrainingRun.next_batch
    def save_spy(path, *a, **k):
        record["saves"].append(str(path))
        return real_save(path, *a, **k)
    def setup_spy(*a, **k):
        run = real_setup(*a, **k)
        record["initial"] = own_hash(run.model)
        return run
    def finish_spy(run, *a, **k):
        record["final"], record["ema"] = own_hash(run.model), own_hash(run.ema.model)
        return real_finish(run, *a, **k)
    def next_spy(self):
        x0, cond = real_next(self)
        record["batches"].append(hashlib.sha256(x0.numpy().tobytes()).hexdigest())
        return x0, cond
    ck.save_checkpoint, tr.setup, tr.finish, tr.TrainingRun.next_batch = save_spy, setup_spy, finish_spy, next_spy

    rng = np.random.default_rng(0)
    n = 32
    labels = np.arange(n) % 2
    images = rng.integers(0, 255, size=(n, 8, 8, 1)).astype(np.uint8)
    idx = np.arange(n)
    data = ImageDataset(name="noise8", images=images, labels=labels, class_names=["a", "b"],
                        _split_indices={"train": idx[:24], "test": idx[24:]})
    sets = ["model.base_channels=8", "model.num_res_blocks=1", "num_timesteps=20", "sample_n=2", "sample_steps=2",
            "log_every=1", "device=cpu"]
    out = sys.argv[1]
    tr.train(resolve_config(sets=sets, steps=3, batch_size=8, seed=1), out=out + "/run", data=data)
    with open(f"{out}/rank{os.environ['RANK']}.json", "w") as f:
        json.dump(record, f)
""")


def test_two_process_gloo_run_keeps_replicas_identical(tmp_path):
    """torchrun, 2 processes: each rank hashes its own weights (in the script, not with the code
    under test). Both start equal, see different halves of every batch, end equal to each other and
    to the saved checkpoint, and differ from the start: DDP's gradient average keeps them in step."""
    script = tmp_path / "dist_train.py"
    script.write_text(DIST_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFPROMPT_QUIET="1")
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["initial"] == r1["initial"]  # the same seeded initialisation
    assert len(r0["batches"]) == len(r1["batches"]) == 3
    assert all(a != b for a, b in zip(r0["batches"], r1["batches"]))  # each rank its own half of the batch
    assert r0["final"] == r1["final"] and r0["ema"] == r1["ema"]  # and yet identical replicas
    assert r0["final"] != r0["initial"]  # after three steps that moved the weights
    tensors, meta = load_checkpoint(tmp_path / "run" / "last.safetensors")
    saved = hashlib.sha256()
    for name in sorted(k for k in tensors if k.startswith("model.")):
        saved.update(name[len("model."):].encode() + tensors[name].contiguous().numpy().tobytes())
    assert saved.hexdigest() == r0["final"] and meta["step"] == 3
    assert r1["saves"] == [] and any(p.endswith("last.safetensors") for p in r0["saves"])  # only rank 0 writes
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["images_seen"] == 3 * 8
    assert json.loads((tmp_path / "run" / "config.json").read_text())["derived"]["world_size"] == 2


@pytest.mark.parametrize("sampler, calls", [("ddim", 4), ("dpm++2m", 4), ("ddpm", 20)])
def test_end_of_run_samples_take_the_configured_sampler_and_steps(tmp_path, monkeypatch, sampler, calls):
    """samples.png is drawn with sample_sampler in sample_steps network calls (DDPM: all T = 20)."""
    from diffprompt.diffusion.unet import UNet

    evals, forward = [], UNet.forward

    def counting(self, x, *args, **kwargs):
        if not self.training:
            evals.append(x.shape[0])
        return forward(self, x, *args, **kwargs)

    monkeypatch.setattr(UNet, "forward", counting)
    train(resolve_config(sets=TINY8 + [f"sample_sampler={sampler}"], steps=1, batch_size=8), out=tmp_path / "r",
          data=synthetic_data())
    assert evals == [4] * calls  # sample_n = 4 images, one call per step
    assert json.loads((tmp_path / "r" / "train_summary.json").read_text())["samples"] == f"4 x {sampler}-{calls}"
