"""Denoising diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): schedules, process, samplers, U-Net.

    from diffprompt.diffusion import NoiseSchedule, GaussianDiffusion, UNet, UNetConfig
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000), prediction="eps", variance="fixed_small")
    model = UNet(UNetConfig.preset("tiny"))
    loss = diffusion.training_loss(model, x0, loss_type="simple")["loss"].mean()
    samples = diffusion.sample(model, (16, 1, 28, 28), sampler="ddim", steps=50)

Names are imported on first use, so `diffprompt --help` does not pay for importing torch.
"""

from ..lazy import lazy_exports

_EXPORTS = {
    "approx_standard_normal_cdf": ".gaussian",
    "discretized_gaussian_log_likelihood": ".gaussian",
    "mean_flat": ".gaussian",
    "normal_kl": ".gaussian",
    "predict_eps_from_v": ".parameterization",
    "predict_eps_from_x0": ".parameterization",
    "predict_v": ".parameterization",
    "predict_x0_from_eps": ".parameterization",
    "predict_x0_from_v": ".parameterization",
    "Prediction": ".parameterization",
    "GaussianDiffusion": ".process",
    "LossType": ".process",
    "LossWeighting": ".process",
    "VarianceType": ".process",
    "DDIMSampler": ".samplers",
    "DDPMSampler": ".samplers",
    "Sampler": ".samplers",
    "NoiseSchedule": ".schedule",
    "UNet": ".unet",
    "UNetConfig": ".unet",
    "guided": ".guidance",
    "TrainConfig": ".config",
    "train": ".training",
    "load_model": ".checkpoints",
    "evaluate": ".evaluation.evaluate_model",
}
__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
