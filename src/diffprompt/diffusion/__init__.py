"""Denoising diffusion (Ho et al. 2020; Nichol & Dhariwal 2021): schedules, process, samplers."""

from .gaussian import approx_standard_normal_cdf, discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .parameterization import (
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_v,
    predict_x0_from_eps,
    predict_x0_from_v,
)
from .process import GaussianDiffusion, LossType, ModelMeanType, Prediction, VarianceType
from .samplers import DDIMSampler, DDPMSampler, Sampler
from .schedule import NoiseSchedule
from .unet import UNet, UNetConfig
