"""The names a user picks from and the constants the defaults are made of, in one torch-free place
(the CLI reads them, and `TrainConfig`'s defaults, without importing torch)."""

from __future__ import annotations

from dataclasses import dataclass

SAMPLER_NAMES = ("ddpm", "ddim", "dpm++2m", "dpm++3m", "dpm++2m-sde")
SPACINGS = ("linspace", "leading", "trailing")  # diffusers' `timestep_spacing` names
DEFAULT_STEPS = {"ddpm": None, "ddim": 50, "dpm++2m": 20, "dpm++3m": 20, "dpm++2m-sde": 20}  # None: all T steps
DEFAULT_EVAL_SAMPLERS = "ddpm,ddim:20,ddim:50,dpm++2m:10,dpm++2m:20"  # what `evaluate` compares unless told
UNET_PRESETS = ("tiny", "cifar10")  # the names of unet.PRESETS (`UNetConfig.preset`)
MIXED_PRECISION = ("no", "fp16", "bf16")
COND_DROP_PROB = 0.1  # classifier-free guidance's label dropout; Ho & Salimans: p_uncond = 0.1 or 0.2
MIN_SNR_GAMMA = 5.0  # Hang et al.'s gamma of the min-SNR loss weighting
P2_GAMMA, P2_K = 1.0, 1.0  # Choi et al.'s gamma and k of the P2 loss weighting 1 / (k + SNR)^gamma
VLB_WEIGHT = 0.001  # Nichol & Dhariwal's lambda of the hybrid loss


def default_steps(sampler: str, steps: int | None) -> int | None:
    """`steps`, or when it is None the sampler's default (`DEFAULT_STEPS`; None: all T steps)."""
    return steps if steps is not None else DEFAULT_STEPS[sampler]


@dataclass(frozen=True)
class Recipe:
    """How a feature network (evaluation/feature_classifier.py) is trained: AdamW with a one-cycle
    learning rate; each training image shifted by up to `shift` pixels, rotated by up to `rotate`
    degrees and (with `hflip`) mirrored; dropout `dropout` on the features while training."""

    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    shift: int = 2
    rotate: float = 0.0
    hflip: bool = False
    dropout: float = 0.0
