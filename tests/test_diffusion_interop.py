"""diffusers in and out, with diffusers as the oracle: our U-Net computes what the exported UNet2DModel
computes, diffusers' DDPM and DDIM pipelines sample what ours sample from the same noise, a round trip
keeps every weight bit, and a UNet2DModel made by diffusers samples and gets its bound here.

diffusers is the `test` extra: only the tests that call it, or load a diffusers folder (which imports
it), skip without it; export refusals and the errors said without diffusers or offline run anyway."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_diffusion_cli import _err, write_folder

from diffprompt.checkpoint import save_checkpoint
from diffprompt.cli import main
from diffprompt.diffusion import DDIMSampler, DDPMSampler, GaussianDiffusion, NoiseSchedule, UNet, UNetConfig
from diffprompt.diffusion.checkpoints import load_model, output_folder
from diffprompt.diffusion.interop.diffusers_export import export_diffusers
from diffprompt.diffusion.interop.diffusers_import import DiffusersUNet
from diffprompt.diffusion.interop.diffusers_scheduler import diffusion_from_scheduler
from diffprompt.diffusion.interop.diffusers_unet import diffusers_unet_config, to_diffusers_state_dict, unet_config_from_diffusers
from diffprompt.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-5  # float32 arithmetic in a different order; the networks and steps are the same maths

SMALL = dict(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
             attention_resolutions=(4,), norm_groups=4)
CONFIGS = {
    "small": SMALL,
    "rgb-learned-variance": dict(in_channels=3, out_channels=6, image_size=8, base_channels=8, channel_mults=(1, 2, 2),
                                 num_res_blocks=2, attention_resolutions=(8, 2), norm_groups=4, time_embed_mult=2),
    "two-heads": dict(SMALL, num_heads=2),
}
# A network diffusers made, in the layout of google/ddpm-cifar10-32 (which ours cannot express:
# asymmetric downsampling padding, GroupNorm eps 1e-6).
GOOGLE_LIKE = dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16), layers_per_block=1,
                   down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                   norm_num_groups=4, attention_head_dim=None, flip_sin_to_cos=False, freq_shift=1,
                   downsample_padding=0, norm_eps=1e-6)


@pytest.fixture
def diffusers():
    """The diffusers package, for the tests that need it: only they skip without it."""
    return pytest.importorskip("diffusers")


@pytest.fixture(autouse=True)
def quiet_one_thread(monkeypatch, one_thread):
    monkeypatch.setenv("DIFFPROMPT_QUIET", "1")
    try:
        import diffusers
    except ImportError:  # the tests that need it skip; the others run without it
        yield
        return
    diffusers.utils.logging.disable_progress_bar()
    yield
    diffusers.utils.logging.enable_progress_bar()


def random_unet(config: dict, seed: int = 0) -> UNet:
    """Our U-Net with every weight drawn at random (a fresh one outputs exactly 0)."""
    torch.manual_seed(seed)
    model = UNet(UNetConfig(**config))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model.eval()


def save_ours(folder: Path, model: UNet, diffusion: GaussianDiffusion) -> Path:
    """A checkpoint as `diffprompt diffusion train` writes model.safetensors."""
    meta = {"kind": "diffusion-model", "unet": model.config.to_dict(), "diffusion": diffusion.to_dict(),
            "dataset": "bars", "step": 7, "seed": 0}
    return save_checkpoint(folder / "model.safetensors", model.state_dict(), meta)


def as_images(x: torch.Tensor) -> np.ndarray:
    """Our samples in [-1, 1] as DDPMPipeline's output_type="np" gives them: NHWC in [0, 1]."""
    return (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()


def google_like_pipeline(folder: Path, num_timesteps: int = 10):
    """A DDPMPipeline folder diffusers writes (skips the test without diffusers)."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(1)
    unet = diffusers.UNet2DModel(**GOOGLE_LIKE)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=num_timesteps, beta_schedule="linear", beta_start=1e-3, beta_end=0.2)
    diffusers.DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


# --- the network -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CONFIGS)
def test_exported_unet_computes_what_ours_computes(name, diffusers):
    config = UNetConfig(**CONFIGS[name])
    ours = random_unet(CONFIGS[name])
    theirs = diffusers.UNet2DModel(**{k: v for k, v in diffusers_unet_config(config).items() if k != "_class_name"})
    theirs.load_state_dict(to_diffusers_state_dict(config, ours.state_dict()), strict=True)
    x = torch.randn(3, config.in_channels, 8, 8, generator=torch.Generator().manual_seed(2))
    t = torch.tensor([0, 7, 999])
    with torch.no_grad():
        a, b = ours(x, t), theirs.eval()(x, t).sample
    assert a.abs().max() > 0.1  # random weights: a real output, not zeros
    assert (a - b).abs().max() < TOL
    assert unet_config_from_diffusers(dict(theirs.config)) == config


def test_a_unet2dmodel_ours_cannot_express_is_recognised(diffusers):
    assert unet_config_from_diffusers(dict(diffusers.UNet2DModel(**GOOGLE_LIKE).config)) is None


# --- out: export, and diffusers' pipelines on it ------------------------------------------------


@pytest.mark.parametrize("prediction, variance", [("eps", "fixed_small"), ("v", "fixed_large"), ("x0", "learned_range")])
def test_ddpm_pipeline_samples_what_ours_samples(tmp_path, prediction, variance, diffusers):
    channels = dict(out_channels=2) if variance == "learned_range" else {}
    model = random_unet(dict(SMALL, **channels))
    diffusion = GaussianDiffusion(NoiseSchedule.linear(10, 1e-3, 0.2), prediction=prediction, variance=variance)
    out = export_diffusers(save_ours(tmp_path, model, diffusion), tmp_path / "pipe")
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=10, output_type="np")
    ours = diffusion.sample(model, (2, 1, 8, 8), "ddpm", generator=torch.Generator().manual_seed(0))
    assert np.abs(theirs.images - as_images(ours)).max() < TOL


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_pipeline_with_fewer_steps_samples_what_our_respaced_ddpm_samples(tmp_path, variance, diffusers):
    """DDPMScheduler with num_inference_steps < T steps over the respaced chain, its variances computed
    from beta'_t = 1 - ab_t / ab_prev (iDDPM sec. 4), as `DDPMSampler(steps)` does."""
    channels = dict(out_channels=2) if variance == "learned_range" else {}
    model = random_unet(dict(SMALL, **channels))
    diffusion = GaussianDiffusion(NoiseSchedule.linear(20, 1e-3, 0.2), variance=variance)
    out = export_diffusers(save_ours(tmp_path, model, diffusion), tmp_path / "pipe")
    pipe = diffusers.DDPMPipeline.from_pretrained(out)
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=5, output_type="np")
    ddpm = DDPMSampler(steps=5, spacing="leading")  # DDPMScheduler's default spacing
    ours = diffusion.sample(model, (2, 1, 8, 8), ddpm, generator=torch.Generator().manual_seed(0))
    assert pipe.scheduler.timesteps.tolist() == ddpm.timesteps(20)
    assert np.abs(theirs.images - as_images(ours)).max() < TOL
    full = diffusion.sample(model, (2, 1, 8, 8), "ddpm", generator=torch.Generator().manual_seed(0))
    assert np.abs(as_images(full) - as_images(ours)).max() > 0.05  # fewer steps: other samples


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_pipeline_samples_what_ours_samples(tmp_path, eta, diffusers):
    model = random_unet(SMALL)
    diffusion = GaussianDiffusion(NoiseSchedule.cosine(20), prediction="eps")
    out = export_diffusers(save_ours(tmp_path, model, diffusion), tmp_path / "pipe")
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet")
    pipe = diffusers.DDIMPipeline(unet=unet, scheduler=diffusers.DDIMScheduler.from_pretrained(out / "scheduler"))
    theirs = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), eta=eta, num_inference_steps=5,
                  use_clipped_model_output=True, output_type="np")  # ours: eps consistent with the clipped x0
    ddim = DDIMSampler(steps=5, eta=eta, spacing="leading")  # DDIMScheduler's default spacing
    ours = diffusion.sample(model, (2, 1, 8, 8), ddim, generator=torch.Generator().manual_seed(0))
    assert np.abs(theirs.images - as_images(ours)).max() < TOL


@pytest.mark.usefixtures("diffusers")  # loading the export back imports diffusers
def test_round_trip_keeps_every_weight_bit_and_the_process(tmp_path):
    model = random_unet(CONFIGS["rgb-learned-variance"])
    diffusion = GaussianDiffusion(NoiseSchedule.cosine(30), prediction="v", variance="learned_range", loss_type="hybrid",
                                  loss_weighting="p2", p2_gamma=0.5, p2_k=2.0)
    out = export_diffusers(save_ours(tmp_path, model, diffusion), tmp_path / "pipe")
    scheduler = json.loads((out / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["trained_betas"] == diffusion.schedule.betas.tolist()  # float64, exactly
    assert (scheduler["prediction_type"], scheduler["variance_type"]) == ("v_prediction", "learned_range")
    back, back_diffusion, meta = load_model(out)
    assert type(back) is UNet and back.config == model.config
    assert all(torch.equal(back.state_dict()[k], v) for k, v in model.state_dict().items())
    assert back_diffusion.to_dict() == diffusion.to_dict()
    assert (meta["dataset"], meta["step"], meta["unet"]) == ("bars", 7, model.config.to_dict())


def test_export_refuses_what_unet2dmodel_cannot_express(tmp_path, capsys):
    model = random_unet(dict(SMALL, attention_resolutions=(8, 4), num_heads=2))
    ckpt = save_ours(tmp_path, model, GaussianDiffusion(NoiseSchedule.linear(10)))
    err = _err(capsys, ["diffusion", "export", str(ckpt), "--to", "diffusers", str(tmp_path / "out")])
    assert "num_heads=2" in err and "widths [8, 16]" in err
    assert not (tmp_path / "out").exists()
    assert main(["diffusion", "export", str(ckpt.parent), "--to", "diffusers", str(tmp_path)]) == 2  # not empty


# --- in: a model diffusers made -----------------------------------------------------------------


def test_a_diffusers_pipeline_samples_and_gets_its_bound_here(tmp_path, diffusers):
    folder = google_like_pipeline(tmp_path / "pipe")
    model, diffusion, meta = load_model(folder)
    assert isinstance(model, DiffusersUNet) and meta["unet"]["image_size"] == 8 and meta.get("dataset") is None
    theirs = diffusers.DDPMPipeline.from_pretrained(folder)(batch_size=2, generator=torch.Generator().manual_seed(0),
                                                           num_inference_steps=10, output_type="np")
    ours = diffusion.sample(model, (2, 1, 8, 8), "ddpm", generator=torch.Generator().manual_seed(0))
    assert np.abs(theirs.images - as_images(ours)).max() < TOL
    x0 = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 2 - 1
    bound = diffusion.nll_bpd(model, x0, generator=torch.Generator().manual_seed(4))
    estimate = diffusion.nll_estimate(model, x0, num_t=3, generator=torch.Generator().manual_seed(4))
    assert bound.shape == estimate.shape == (3,) and bool(torch.isfinite(bound).all()) and bool((bound > 0).all())
    # with one timestep per stratum (T - 1 = 9 strata) the estimate visits every term once: over 16
    # draws of the noise its mean agrees with the full bound's within 4 standard errors of the difference
    draws = [(diffusion.nll_bpd(model, x0, generator=torch.Generator().manual_seed(100 + i)),
              diffusion.nll_estimate(model, x0, num_t=9, generator=torch.Generator().manual_seed(500 + i)))
             for i in range(16)]
    full, est = (torch.stack([d[j] for d in draws]).double() for j in (0, 1))  # [16, 3] each
    stderr = (full.var(0) / 16 + est.var(0) / 16).sqrt()
    assert bool(((full.mean(0) - est.mean(0)).abs() <= 4 * stderr).all()), (full.mean(0), est.mean(0), stderr)
    assert bool((stderr < 0.05 * full.mean(0)).all())  # tight enough to see a stratum weighed wrong


def test_flat_and_unet_only_folders_load(tmp_path, diffusers):
    pipeline = google_like_pipeline(tmp_path / "pipe")
    flat = tmp_path / "flat"  # the hub layout of google/ddpm-cifar10-32
    diffusers.UNet2DModel.from_pretrained(pipeline / "unet").save_pretrained(flat)
    diffusers.DDPMScheduler.from_pretrained(pipeline / "scheduler").save_pretrained(flat)
    reference = load_model(pipeline)[1].schedule.betas
    for folder in (flat, pipeline / "unet"):  # unet/ alone finds the pipeline's scheduler
        assert torch.equal(load_model(folder)[1].schedule.betas, reference)
    bare = tmp_path / "bare"
    diffusers.UNet2DModel.from_pretrained(pipeline / "unet").save_pretrained(bare)
    assert load_model(bare)[1].num_timesteps == 1000  # no scheduler config: DDPMScheduler's defaults


@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"])
def test_scheduler_betas_are_diffusers_betas(schedule, diffusers):
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=50, beta_schedule=schedule, beta_start=1e-4, beta_end=0.02)
    ours = diffusion_from_scheduler(dict(scheduler.config)).schedule
    torch.testing.assert_close(ours.betas.float(), scheduler.betas, rtol=1e-6, atol=0)  # theirs are float32


@pytest.mark.parametrize("change, needle", [
    (dict(variance_type="learned"), "variance_type 'learned'"),
    (dict(prediction_type="score"), "prediction_type 'score'"),
    (dict(rescale_betas_zero_snr=True), "rescale_betas_zero_snr"),
    (dict(beta_schedule="laplace"), "beta_schedule 'laplace'"),
])
def test_scheduler_settings_without_a_counterpart_are_refused(change, needle, diffusers):
    with pytest.raises(UserError, match=needle):
        diffusion_from_scheduler({**dict(diffusers.DDPMScheduler().config), **change})


def test_pickled_weights_are_never_opened(tmp_path, diffusers):
    unet = diffusers.UNet2DModel(**GOOGLE_LIKE)
    unet.save_pretrained(tmp_path / "bin", safe_serialization=False)
    with pytest.raises(UserError, match="only safetensors weights load here"):
        load_model(tmp_path / "bin")


def test_without_diffusers_the_error_names_the_install(tmp_path, monkeypatch):
    folder = export_diffusers(save_ours(tmp_path, random_unet(SMALL), GaussianDiffusion(NoiseSchedule.linear(10))),
                              tmp_path / "pipe")  # a pipeline folder, written without diffusers
    monkeypatch.setitem(sys.modules, "diffusers", None)
    for source in (folder, "google/ddpm-cifar10-32"):  # said before any download
        with pytest.raises(UserError, match="pip install diffusers"):
            load_model(source)


# --- the commands ------------------------------------------------------------------------------


@pytest.mark.usefixtures("diffusers")  # sampling a diffusers folder imports diffusers
def test_commands_read_diffusers_folders(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    model = random_unet(SMALL)
    ckpt = save_ours(tmp_path, model, GaussianDiffusion(NoiseSchedule.linear(10, 1e-3, 0.2)))
    assert main(["diffusion", "export", str(ckpt), "--to", "diffusers", str(tmp_path / "exported")]) == 0
    theirs = google_like_pipeline(tmp_path / "theirs")
    for folder in (tmp_path / "exported", theirs):
        assert main(["diffusion", "sample", str(folder), "--n", "3", "--sampler", "ddim", "--steps", "4",
                     "--out", str(tmp_path / f"{folder.name}.npz")]) == 0
        assert np.load(tmp_path / f"{folder.name}.npz")["images"].shape == (3, 8, 8, 1)
    bars = write_folder(tmp_path / "bars")
    assert main(["diffusion", "evaluate", str(theirs), "--dataset", str(bars), "--samplers", "ddim:4",
                 "--n-samples", "8", "--nll-images", "2", "--device", "cpu"]) == 0
    res = json.loads((theirs / "eval.json").read_text())
    assert math.isfinite(res["nll"]["bpd"]) and res["nll"]["timesteps"] == 10
    assert {"fid", "kid", "precision", "recall"} <= set(res["samplers"][0])
    assert main(["diffusion", "visualize", str(theirs), "--dataset", str(bars), "--n", "2", "--sampler", "ddim",
                 "--steps", "3"]) == 0
    assert {"forward.png", "reverse.png", "reverse.gif", "pred_x0.png"} <= {p.name for p in theirs.iterdir()}


@pytest.mark.usefixtures("diffusers")  # without it the command stops at "pip install diffusers", before the hub
def test_a_hub_id_offline_is_one_line_without_a_traceback(tmp_path):
    assert output_folder("google/ddpm-cifar10-32") == Path("runs/google--ddpm-cifar10-32")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path), OMP_NUM_THREADS="1", DIFFPROMPT_QUIET="1")
    proc = subprocess.run([sys.executable, "-m", "diffprompt", "diffusion", "sample", "google/ddpm-cifar10-32", "--n", "1"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "google/ddpm-cifar10-32" in proc.stderr
