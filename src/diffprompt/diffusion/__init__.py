"""Denoising diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): schedules, process, samplers, U-Net.

    from diffprompt.diffusion import NoiseSchedule, GaussianDiffusion, UNet, UNetConfig
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000), prediction="eps", variance="fixed_small")
    model = UNet(UNetConfig.preset("tiny"))
    loss = diffusion.training_loss(model, x0, kind="simple")["loss"].mean()
    samples = diffusion.sample(model, (16, 1, 28, 28), sampler="ddim", steps=50)

Names are imported on first use, so `diffprompt --help` does not pay for importing torch.
"""

import importlib

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
    "GaussianDiffusion": ".process",
    "LossType": ".process",
    "ModelMeanType": ".process",
    "Prediction": ".process",
    "VarianceType": ".process",
    "DDIMSampler": ".samplers",
    "DDPMSampler": ".samplers",
    "Sampler": ".samplers",
    "NoiseSchedule": ".schedule",
    "UNet": ".unet",
    "UNetConfig": ".unet",
    "TrainConfig": ".config",
    "train": ".training",
    "load_model": ".training",
    "evaluate": ".evaluation",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__


_EXPORTS.update({
    "EMA": ".ema",
    "resolve_config": ".config",
    "fid_from_features": ".metrics",
    "kid_from_features": ".metrics",
    "frechet_distance": ".metrics",
    "write_visualizations": ".visualize",
    "save_grid": ".visualize",
})
__all__ = sorted(_EXPORTS)
