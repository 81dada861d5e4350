"""Our `GaussianDiffusion` in diffusers' terms: a `DDPMScheduler` config, and the process a
scheduler config defines.

    ours                                   DDPMScheduler config
    schedule.betas (float64)               trained_betas, num_train_timesteps
    prediction eps / v / x0                prediction_type epsilon / v_prediction / sample
    variance fixed_small / fixed_large /   variance_type fixed_small (or fixed_small_log) /
      learned_range                          fixed_large (or fixed_large_log) / learned_range
    x0 clipped to [-1, 1] when sampling    clip_sample=True, clip_sample_range=1.0

Read back, a config without trained_betas names its schedule: linear (ours), squaredcos_cap_v2 (our
cosine with s = 0.008, betas capped at 0.999 as ours), scaled_linear and sigmoid (their formulas,
computed in float64). What the bound cannot take is refused: variance_type "learned" (a raw log
variance), rescale_betas_zero_snr (a last beta of 1), and schedules other than these.
"""

from __future__ import annotations

import math

import torch

from ...errors import UserError
from ..process import GaussianDiffusion
from ..schedule import NoiseSchedule

PREDICTION_TYPES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}
VARIANCE_TYPES = {"fixed_small": "fixed_small", "fixed_large": "fixed_large", "learned_range": "learned_range"}
PREDICTIONS_READ = {theirs: ours for ours, theirs in PREDICTION_TYPES.items()}
VARIANCES_READ = {**VARIANCE_TYPES, "fixed_small_log": "fixed_small", "fixed_large_log": "fixed_large"}
LOSS_SETTINGS = ("loss_type", "loss_weighting", "min_snr_gamma", "vlb_weight", "p2_gamma", "p2_k")  # ours only: training, not sampling


def scheduler_config(diffusion: GaussianDiffusion) -> dict:
    """The `DDPMScheduler` config of `diffusion`: its exact betas, prediction and variance."""
    return {
        "_class_name": "DDPMScheduler",
        "num_train_timesteps": diffusion.num_timesteps,
        "trained_betas": diffusion.schedule.betas.tolist(),  # float64 values; JSON keeps them exactly
        "prediction_type": PREDICTION_TYPES[diffusion.prediction.value],
        "variance_type": VARIANCE_TYPES[diffusion.variance.value],
        "clip_sample": True,
        "clip_sample_range": 1.0,
    }


def diffusion_from_scheduler(config: dict, recipe: dict | None = None) -> GaussianDiffusion:
    """The `GaussianDiffusion` a DDPMScheduler config (every argument present) defines.

    `recipe` is our `GaussianDiffusion.to_dict()` saved beside an export: when its schedule gives
    exactly these betas, the schedule keeps its name, and the loss settings come back too.
    """
    if config.get("rescale_betas_zero_snr"):
        raise UserError("the scheduler sets rescale_betas_zero_snr: its last beta is 1 (alpha-bar_T = 0), "
                        "which the variational bound cannot take")
    schedule = _named_schedule(config)
    loss = {}
    if recipe is not None and torch.equal(NoiseSchedule.from_dict(recipe["schedule"]).betas, schedule.betas):
        schedule = NoiseSchedule.from_dict(recipe["schedule"])
        loss = {k: recipe[k] for k in LOSS_SETTINGS if k in recipe}
    return GaussianDiffusion(schedule, prediction=_read(config, "prediction_type", PREDICTIONS_READ),
                             variance=_read(config, "variance_type", VARIANCES_READ), **loss)


def _read(config: dict, key: str, table: dict) -> str:
    """Our name for the scheduler's `key` (`table`: theirs -> ours); a UserError lists the values we read."""
    value = config[key]
    if value not in table:
        raise UserError(f"the scheduler's {key} {value!r} has no counterpart here; "
                        f"supported: {', '.join(sorted(table))}")
    return table[value]


def _named_schedule(config: dict) -> NoiseSchedule:
    """The betas of a scheduler config, in float64."""
    num_timesteps, name = int(config["num_train_timesteps"]), config["beta_schedule"]
    start, end = float(config["beta_start"]), float(config["beta_end"])
    if config.get("trained_betas") is not None:
        return NoiseSchedule(torch.tensor(config["trained_betas"], dtype=torch.float64))
    if name == "linear":
        return NoiseSchedule.linear(num_timesteps, start, end)
    if name == "squaredcos_cap_v2":
        return NoiseSchedule.cosine(num_timesteps)
    if name == "scaled_linear":
        betas = torch.linspace(math.sqrt(start), math.sqrt(end), num_timesteps, dtype=torch.float64) ** 2
    elif name == "sigmoid":
        betas = torch.sigmoid(torch.linspace(-6, 6, num_timesteps, dtype=torch.float64)) * (end - start) + start
    else:
        raise UserError(f"the scheduler's beta_schedule {name!r} is not read here; "
                        "supported: linear, scaled_linear, squaredcos_cap_v2, sigmoid, or trained_betas")
    return NoiseSchedule(betas, name, {"beta_start": start, "beta_end": end})
