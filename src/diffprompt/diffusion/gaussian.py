"""Pure functions on Gaussians: KL divergence, normal CDFs, and the discretized decoder likelihood.

All return elementwise values in nats; `mean_flat` averages over every axis but the batch.
"""

from __future__ import annotations

import math

import torch

# Pixel values of 8-bit data scaled to [-1, 1] lie on a grid of spacing 2/255; each owns
# the bin [x - 1/255, x + 1/255], and the two end bins reach out to -inf and +inf.
HALF_BIN_8BIT = 1.0 / 255.0


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all axes except the first (batch): [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL( N(mean1, exp(logvar1)) || N(mean2, exp(logvar2)) ) elementwise, in nats.

    = 1/2 [ logvar2 - logvar1 + (exp(logvar1) + (mean1 - mean2)^2) / exp(logvar2) - 1 ],
    computed as 1/2 [ expm1(d) - d + (mean1 - mean2)^2 exp(-logvar2) ] with d = logvar1 - logvar2,
    which never goes below zero by round-off (the variance part is exactly 0 when d = 0).
    Arguments broadcast; scalars are accepted for any of them.
    """
    ref = next(a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor))
    logvar1, logvar2 = (torch.as_tensor(v, dtype=ref.dtype, device=ref.device) for v in (logvar1, logvar2))
    d = logvar1 - logvar2
    return 0.5 * (torch.expm1(d) - d + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Phi(x), the exact standard normal CDF."""
    return torch.special.ndtr(x)


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation of Phi(x) used by Ho et al. and improved-diffusion (|error| < 2e-4).

    Kept for comparison; `discretized_gaussian_log_likelihood` uses the exact CDF.
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))


def log_normal_cdf_difference(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper, accurate far into either tail.

    Works with log-CDFs (log_ndtr) so that neither tail underflows; an interval above
    zero is reflected below zero first (Phi(b) - Phi(a) = Phi(-a) - Phi(-b)).
    """
    flip = lower > 0
    lo = torch.where(flip, -upper, lower)
    hi = torch.where(flip, -lower, upper)
    log_hi = torch.special.log_ndtr(hi)
    log_lo = torch.special.log_ndtr(lo)
    # log(Phi(hi) - Phi(lo)) = log Phi(hi) + log(1 - exp(log Phi(lo) - log Phi(hi)))
    return log_hi + torch.log(-torch.expm1(torch.clamp(log_lo - log_hi, max=-1e-30)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor,
                                        half_bin: float = HALF_BIN_8BIT) -> torch.Tensor:
    """log P(x) elementwise (nats) for x on the 8-bit grid in [-1, 1], under N(mean, exp(log_scale)^2)
    integrated over x's bin [x - half_bin, x + half_bin]; the end bins at -1 and +1 extend to -inf / +inf.

    This is Ho et al.'s decoder L_0 = -log p(x_0 | x_1). `log_scale` is the log standard deviation.
    """
    inv_std = torch.exp(-log_scale)
    upper = (x - mean + half_bin) * inv_std
    lower = (x - mean - half_bin) * inv_std
    log_cdf_upper = torch.special.log_ndtr(upper)         # bin reaching -inf (x = -1)
    log_one_minus_cdf_lower = torch.special.log_ndtr(-lower)  # bin reaching +inf (x = +1)
    log_bin = log_normal_cdf_difference(lower, upper)
    edge = 1.0 - half_bin  # halfway between the last grid point and its neighbour
    return torch.where(x < -edge, log_cdf_upper, torch.where(x > edge, log_one_minus_cdf_lower, log_bin))
