"""The Gaussian diffusion process of Ho et al. (2020), with Nichol & Dhariwal's (2021) extensions.

Read top to bottom:

1. options (what the network predicts, its variance, the loss),
2. constants derived from the schedule (float64, then cast to float32 buffers),
3. the forward process q: `q_step`, `q_sample`, `q_posterior`,
4. the reverse process p: `p_mean_variance` (and `p_mean_variance_skip` for a respaced chain),
5. the bound: `prior_bpd`, `vb_term_bpd`, `nll_terms`, `nll_bpd`,
6. the training losses: `training_loss`,
7. sampling: `sample` (the loops live in `samplers.py`).

Timesteps are 0-based: index ``t`` in ``[0, T)`` is the paper's step t+1. The model is any
callable ``model(x_t, t, **model_kwargs)`` with ``t`` a LongTensor [B] of indices; it returns
C channels, or 2C for ``variance="learned_range"`` (the second half is iDDPM's
interpolation value v: v = -1 gives beta-tilde_t, v = +1 gives beta_t).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import torch
from torch import nn

from diffprompt.errors import UserError
from diffprompt.progress import progress as progress_bar

from .choices import MIN_SNR_GAMMA, P2_GAMMA, P2_K, VLB_WEIGHT
from .gaussian import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from .parameterization import Prediction, check_prediction, predict_eps_from_x0, training_target, x0_from_model_output
from .samplers import make_sampler, sample_loop
from .schedule import NoiseSchedule

LN2 = math.log(2.0)


# --- 1. options (what the network predicts: `Prediction`, in parameterization.py) -------------
class VarianceType(str, Enum):
    """The reverse-process variance Sigma_t.

    fixed_small: beta-tilde_t (the true posterior variance; Ho et al.'s lower choice),
    fixed_large: beta_t (upper choice; index 0 uses beta-tilde_1 as improved-diffusion does, for a
        better decoder likelihood), learned_range: exp(v log beta_t' + (1-v) log beta-tilde_t), v from the network,
        mapped from [-1, 1] to [0, 1].
    """

    FIXED_SMALL = "fixed_small"
    FIXED_LARGE = "fixed_large"
    LEARNED_RANGE = "learned_range"


class LossType(str, Enum):
    """simple: L_simple (MSE on the prediction target); vlb: the bound; hybrid: L_simple + lambda * L_vlb."""

    SIMPLE = "simple"
    VLB = "vlb"
    HYBRID = "hybrid"


class LossWeighting(str, Enum):
    """Weight of the MSE per timestep: none (plain L_simple), min_snr (Hang et al. 2023's Min-SNR-gamma) or
    p2 (Choi et al. 2022's perception-prioritised weighting)."""

    NONE = "none"
    MIN_SNR = "min_snr"
    P2 = "p2"


def _parse_option(enum_cls, value, what: str):
    try:
        return enum_cls(str(getattr(value, "value", value)).lower())
    except ValueError:
        known = ", ".join(m.value for m in enum_cls)
        raise UserError(f"unknown {what} {value!r}; choose one of: {known}") from None


def extract(values: torch.Tensor, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """values[t] reshaped to [B, 1, ..., 1] so that it broadcasts against a tensor with `ndim` dims."""
    out = values.gather(0, t.to(values.device).long().reshape(-1))
    return out.reshape(-1, *([1] * (ndim - 1)))


# --- 2. constants ----------------------------------------------------------------------------
def diffusion_constants(schedule: NoiseSchedule) -> dict[str, torch.Tensor]:
    """Every per-step constant the process needs, computed in float64 from the schedule."""
    betas = schedule.betas
    alphas = 1.0 - betas
    ab = schedule.alphas_cumprod
    ab_prev = schedule.alphas_cumprod_prev
    posterior_variance = betas * (1.0 - ab_prev) / (1.0 - ab)  # beta-tilde_t; exactly 0 at index 0
    # log beta-tilde with index 0 (where beta-tilde = 0) replaced by index 1, as improved-diffusion.
    posterior_log_variance_clipped = torch.log(torch.cat([posterior_variance[1:2], posterior_variance[1:]]))
    return {
        "betas": betas,
        "log_betas": torch.log(betas),
        "sqrt_alphas": torch.sqrt(alphas),
        "sqrt_betas": torch.sqrt(betas),
        "alphas_cumprod": ab,
        "alphas_cumprod_prev": ab_prev,
        "sqrt_alphas_cumprod": torch.sqrt(ab),  # signal scale alpha in parameterization.py
        "sqrt_one_minus_alphas_cumprod": torch.sqrt(1.0 - ab),  # noise scale sigma
        "one_minus_alphas_cumprod": 1.0 - ab,
        "log_one_minus_alphas_cumprod": torch.log(1.0 - ab),
        "sqrt_alphas_cumprod_prev": torch.sqrt(ab_prev),
        "sqrt_one_minus_alphas_cumprod_prev": torch.sqrt(1.0 - ab_prev),
        "snr": ab / (1.0 - ab),
        "posterior_variance": posterior_variance,
        "posterior_log_variance_clipped": posterior_log_variance_clipped,
        # q(x_{t-1} | x_t, x0) has mean coef1 * x0 + coef2 * x_t (Ho et al. eq. 7)
        "posterior_mean_coef1": betas * torch.sqrt(ab_prev) / (1.0 - ab),
        "posterior_mean_coef2": (1.0 - ab_prev) * torch.sqrt(alphas) / (1.0 - ab),
        # fixed_large: beta_t, but beta-tilde_1 at index 0
        "large_log_variance": torch.log(torch.cat([posterior_variance[1:2], betas[1:]])),
    }


class GaussianDiffusion(nn.Module):
    """Forward and reverse Gaussian diffusion over a `NoiseSchedule`.

    An `nn.Module` only to hold its constants as (non-persistent, float32) buffers: `.to(device)`
    moves them; it has no parameters and an empty state dict.

    Args:
        schedule: the betas.
        prediction: "eps" | "x0" | "v", what the network outputs.
        variance: "fixed_small" | "fixed_large" | "learned_range".
        loss_type: "simple" | "vlb" | "hybrid", the training loss `training_loss` computes by default.
        loss_weighting: "none" (plain MSE on the prediction target: Ho et al.'s L_simple for eps),
            "min_snr" (Hang et al. 2023: the MSE weighted so that, in x0 terms, the weight is min(SNR, gamma)) or
            "p2" (Choi et al. 2022: the eps-MSE weighted by 1 / (k + SNR)^gamma, which leaves the noisiest steps,
            where a sample's content is decided, at weight ~1 and turns down the nearly clean ones).
        min_snr_gamma: gamma for "min_snr".
        p2_gamma, p2_k: gamma and k for "p2" (Choi et al. use k = 1 and gamma = 1 or 0.5).
        vlb_weight: lambda of the hybrid loss (Nichol & Dhariwal use 0.001).
    """

    def __init__(self, schedule: NoiseSchedule, prediction: str = "eps", variance: str = "fixed_small",
                 loss_type: str = "simple", loss_weighting: str = "none", min_snr_gamma: float = MIN_SNR_GAMMA,
                 vlb_weight: float = VLB_WEIGHT, p2_gamma: float = P2_GAMMA, p2_k: float = P2_K):
        super().__init__()
        if not isinstance(schedule, NoiseSchedule):
            raise UserError(f"GaussianDiffusion needs a NoiseSchedule, got {type(schedule).__name__}; "
                            "build one with NoiseSchedule.linear(T) or NoiseSchedule.from_name(name, T)")
        self.schedule = schedule
        self.prediction = check_prediction(prediction)
        self.variance = _parse_option(VarianceType, variance, "variance type")
        self.loss_type = _parse_option(LossType, loss_type, "loss type")
        self.loss_weighting = _parse_option(LossWeighting, loss_weighting, "loss weighting")
        if not min_snr_gamma > 0:
            raise UserError(f"min_snr_gamma must be > 0, got {min_snr_gamma}; Hang et al. use {MIN_SNR_GAMMA:g}")
        self.min_snr_gamma = float(min_snr_gamma)
        if not (p2_gamma >= 0 and p2_k > 0):
            raise UserError(f"p2_gamma must be >= 0 and p2_k > 0, got {p2_gamma} and {p2_k}; "
                            f"Choi et al. use gamma = {P2_GAMMA:g}, k = {P2_K:g}")
        self.p2_gamma, self.p2_k = float(p2_gamma), float(p2_k)
        if not vlb_weight >= 0:
            raise UserError(f"vlb_weight must be >= 0, got {vlb_weight}; Nichol & Dhariwal use {VLB_WEIGHT}")
        self.vlb_weight = float(vlb_weight)
        for name, value in diffusion_constants(schedule).items():
            self.register_buffer(name, value.to(torch.float32), persistent=False)

    # --- small helpers ----------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        """T, the number of diffusion steps."""
        return self.schedule.num_timesteps

    @property
    def learns_variance(self) -> bool:
        return self.variance is VarianceType.LEARNED_RANGE

    def model_output_channels(self, channels: int) -> int:
        """How many channels the network must return for images with `channels` channels."""
        return 2 * channels if self.learns_variance else channels

    def to_dict(self) -> dict:
        """The JSON-able recipe, every constructor argument: schedule, prediction, variance, loss."""
        return {"schedule": self.schedule.to_dict(), "prediction": self.prediction.value,
                "variance": self.variance.value, "loss_type": self.loss_type.value,
                "loss_weighting": self.loss_weighting.value, "min_snr_gamma": self.min_snr_gamma,
                "vlb_weight": self.vlb_weight, "p2_gamma": self.p2_gamma, "p2_k": self.p2_k}

    @classmethod
    def from_dict(cls, d: dict) -> "GaussianDiffusion":
        d = dict(d)
        schedule = NoiseSchedule.from_dict(d.pop("schedule"))
        return cls(schedule, **d)

    def extra_repr(self) -> str:
        return (f"{self.schedule!r}, prediction={self.prediction.value}, variance={self.variance.value}, "
                f"loss_type={self.loss_type.value}, loss_weighting={self.loss_weighting.value}")

    def _scales(self, t: torch.Tensor, ndim: int):
        """(alpha, sigma) = (sqrt(alpha-bar_t), sqrt(1 - alpha-bar_t)) shaped to broadcast."""
        return extract(self.sqrt_alphas_cumprod, t, ndim), extract(self.sqrt_one_minus_alphas_cumprod, t, ndim)

    def randn(self, shape, generator: torch.Generator | Sequence[torch.Generator] | None = None, device=None,
              dtype=torch.float32):
        """Standard normal noise, drawn from `generator` when given (on its device, then moved); a list
        of generators draws row i of the batch from the i-th (as diffusers' `randn_tensor` does)."""
        device = torch.device(device) if device is not None else self.betas.device
        if isinstance(generator, list | tuple):
            if len(generator) != shape[0]:
                raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}: give one per sample")
            return torch.cat([self.randn((1, *shape[1:]), g, device, dtype) for g in generator])
        gen_device = generator.device if generator is not None else device
        return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)

    def sample_timesteps(self, batch_size: int, device=None, generator: torch.Generator | None = None):
        """t ~ Uniform{0, ..., T-1}, [B] LongTensor."""
        device = torch.device(device) if device is not None else self.betas.device
        gen_device = generator.device if generator is not None else device
        return torch.randint(0, self.num_timesteps, (batch_size,), generator=generator, device=gen_device).to(device)

    def _check_t(self, t, x: torch.Tensor) -> torch.Tensor:
        """t as a LongTensor [B] on x's device (a scalar is broadcast); moves the buffers to x's device."""
        if x.device != self.betas.device:
            self.to(x.device)
        t = torch.as_tensor(t, device=x.device).long()
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return t

    # --- 3. forward process q -----------------------------------------------------------------
    def q_step(self, x_prev: torch.Tensor, t, noise: torch.Tensor | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """One step of the forward chain: x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) eps.

        With 0-based t, `x_prev` is x at index t-1 (x0 itself for t = 0).
        """
        t = self._check_t(t, x_prev)
        if noise is None:
            noise = self.randn(x_prev.shape, generator, x_prev.device, x_prev.dtype)
        return extract(self.sqrt_alphas, t, x_prev.ndim) * x_prev + extract(self.sqrt_betas, t, x_prev.ndim) * noise

    def q_mean_variance(self, x0: torch.Tensor, t):
        """Mean, variance and log-variance of q(x_t | x0) = N(sqrt(alpha-bar_t) x0, (1 - alpha-bar_t) I)."""
        t = self._check_t(t, x0)
        mean = extract(self.sqrt_alphas_cumprod, t, x0.ndim) * x0
        variance = extract(self.one_minus_alphas_cumprod, t, x0.ndim).expand_as(x0)
        log_variance = extract(self.log_one_minus_alphas_cumprod, t, x0.ndim).expand_as(x0)
        return mean, variance, log_variance

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """x_t ~ q(x_t | x0) in closed form: sqrt(alpha-bar_t) x0 + sqrt(1 - alpha-bar_t) eps."""
        t = self._check_t(t, x0)
        if noise is None:
            noise = self.randn(x0.shape, generator, x0.device, x0.dtype)
        alpha, sigma = self._scales(t, x0.ndim)
        return alpha * x0 + sigma * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t):
        """Mean, variance and log-variance of q(x_{t-1} | x_t, x0) (Ho et al. eqs. 6-7).

        The variance at index 0 is 0 (x_{-1} is x0 itself); the log-variance there is clipped to
        log beta-tilde at index 1, as in improved-diffusion, so that it stays finite.
        """
        t = self._check_t(t, x_t)
        mean = extract(self.posterior_mean_coef1, t, x_t.ndim) * x0 + extract(self.posterior_mean_coef2, t, x_t.ndim) * x_t
        variance = extract(self.posterior_variance, t, x_t.ndim).expand_as(x_t)
        log_variance = extract(self.posterior_log_variance_clipped, t, x_t.ndim).expand_as(x_t)
        return mean, variance, log_variance

    # --- 4. reverse process p -----------------------------------------------------------------
    def split_model_output(self, output: torch.Tensor, x_t: torch.Tensor):
        """(prediction, v) where v is the learned-variance half of the channels (None unless learned_range)."""
        channels = x_t.shape[1]
        expected = self.model_output_channels(channels)
        if output.shape[0] != x_t.shape[0] or output.shape[1] != expected or output.shape[2:] != x_t.shape[2:]:
            raise UserError(
                f"the model returned shape {tuple(output.shape)} for input {tuple(x_t.shape)}; with "
                f"variance={self.variance.value} it must return {expected} channels "
                f"({'2C: prediction and variance' if self.learns_variance else 'C'}) at the same size"
            )
        if self.learns_variance:
            return output[:, :channels], output[:, channels:]
        return output, None

    def model_log_variance(self, t: torch.Tensor, x_t: torch.Tensor, var_values: torch.Tensor | None = None):
        """log Sigma_t of p(x_{t-1} | x_t), shaped like x_t."""
        if self.variance is VarianceType.FIXED_SMALL:
            return extract(self.posterior_log_variance_clipped, t, x_t.ndim).expand_as(x_t)
        if self.variance is VarianceType.FIXED_LARGE:
            return extract(self.large_log_variance, t, x_t.ndim).expand_as(x_t)
        return learned_range_log_variance(var_values, extract(self.posterior_log_variance_clipped, t, x_t.ndim),
                                          extract(self.log_betas, t, x_t.ndim))

    def p_mean_variance_from_output(self, output: torch.Tensor, x_t: torch.Tensor, t, clip_denoised: bool = True) -> dict:
        """`p_mean_variance` for an already computed network output (used by the losses to reuse one call)."""
        t = self._check_t(t, x_t)
        pred, var_values = self.split_model_output(output, x_t)
        pred_x0 = self._x0_estimate(pred, x_t, t, clip_denoised)
        alpha, sigma = self._scales(t, x_t.ndim)
        mean, _, _ = self.q_posterior(pred_x0, x_t, t)
        log_variance = self.model_log_variance(t, x_t, var_values)
        return {
            "mean": mean,
            "variance": torch.exp(log_variance),
            "log_variance": log_variance,
            "pred_x0": pred_x0,
            "pred_eps": predict_eps_from_x0(x_t, pred_x0, alpha, sigma),  # consistent with the (clipped) x0
            "model_output": output,
        }

    def _x0_estimate(self, pred: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool) -> torch.Tensor:
        alpha, sigma = self._scales(t, x_t.ndim)
        pred_x0 = x0_from_model_output(self.prediction, pred, x_t, alpha, sigma)
        return pred_x0.clamp(-1.0, 1.0) if clip_denoised else pred_x0

    def predict_x0(self, model, x_t: torch.Tensor, t, clip_denoised: bool = True,
                   model_kwargs: dict | None = None) -> torch.Tensor:
        """The network's estimate of x0 at (x_t, t), clipped to [-1, 1] when asked: all an ODE solver needs."""
        t = self._check_t(t, x_t)
        pred, _ = self.split_model_output(model(x_t, t, **(model_kwargs or {})), x_t)
        return self._x0_estimate(pred, x_t, t, clip_denoised)

    def p_mean_variance(self, model, x_t: torch.Tensor, t, clip_denoised: bool = True,
                        model_kwargs: dict | None = None) -> dict:
        """p(x_{t-1} | x_t): dict(mean, variance, log_variance, pred_x0, pred_eps, model_output).

        The mean is the posterior mean q(x_{t-1} | x_t, x0 = pred_x0); `pred_x0` is clipped to
        [-1, 1] first when `clip_denoised`.
        """
        t = self._check_t(t, x_t)
        output = model(x_t, t, **(model_kwargs or {}))
        return self.p_mean_variance_from_output(output, x_t, t, clip_denoised)

    def p_mean_variance_skip(self, model, x_t: torch.Tensor, t: int, t_prev: int, clip_denoised: bool = True,
                             model_kwargs: dict | None = None) -> dict:
        """p(x_{t_prev} | x_t) of the chain respaced to a subsequence of the indices (Nichol & Dhariwal
        2021, sec. 4): the step t -> t_prev has beta'_t = 1 - alpha-bar_t / alpha-bar_{t_prev}, and with it
        the posterior mean given pred_x0 and the variance beta-tilde'_t (fixed_small), beta'_t
        (fixed_large) or learned_range's interpolation between their logs. t_prev = -1 is x0
        (alpha-bar = 1); t_prev = t - 1 is `p_mean_variance` itself. Same dict as `p_mean_variance`.
        """
        if t_prev == t - 1:
            return self.p_mean_variance(model, x_t, t, clip_denoised, model_kwargs)
        t_vec = self._check_t(t, x_t)
        output = model(x_t, t_vec, **(model_kwargs or {}))
        pred, var_values = self.split_model_output(output, x_t)
        pred_x0 = self._x0_estimate(pred, x_t, t_vec, clip_denoised)
        ab_t = float(self.schedule.alphas_cumprod[t])  # float64 scalars
        ab_prev = float(self.schedule.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        beta = 1.0 - ab_t / ab_prev
        beta_tilde = max(beta * (1.0 - ab_prev) / (1.0 - ab_t), 1e-20)  # 0 only on the last step, which adds no noise
        mean = (math.sqrt(ab_prev) * beta / (1.0 - ab_t)) * pred_x0 + (
            math.sqrt(1.0 - beta) * (1.0 - ab_prev) / (1.0 - ab_t)) * x_t
        log_small, log_large = (torch.full_like(x_t, math.log(v)) for v in (beta_tilde, beta))
        if self.variance is VarianceType.FIXED_SMALL:
            log_variance = log_small
        elif self.variance is VarianceType.FIXED_LARGE:
            log_variance = log_large
        else:
            log_variance = learned_range_log_variance(var_values, log_small, log_large)
        alpha, sigma = self._scales(t_vec, x_t.ndim)
        return {"mean": mean, "variance": torch.exp(log_variance), "log_variance": log_variance, "pred_x0": pred_x0,
                "pred_eps": predict_eps_from_x0(x_t, pred_x0, alpha, sigma), "model_output": output}

    # --- 5. the variational bound, in bits per dimension ---------------------------------------
    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """L_T = KL(q(x_T | x0) || N(0, I)) in bits/dim, [B]. Not learned; tiny for a good schedule."""
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, device=x0.device, dtype=torch.long)
        mean, _, log_variance = self.q_mean_variance(x0, t)
        return mean_flat(normal_kl(mean, log_variance, 0.0, 0.0)) / LN2

    def vb_term_bpd(self, x0: torch.Tensor, x_t: torch.Tensor, t, mean: torch.Tensor,
                    log_variance: torch.Tensor) -> torch.Tensor:
        """The bound's term at index t, bits/dim, [B]: the decoder NLL L_0 = -log p(x0 | x_1) at t = 0
        (discretized Gaussian, 8-bit data in [-1, 1]), else KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t))."""
        t = self._check_t(t, x_t)
        true_mean, _, true_log_variance = self.q_posterior(x0, x_t, t)
        kl = mean_flat(normal_kl(true_mean, true_log_variance, mean, log_variance)) / LN2
        first = t == 0
        if not bool(first.any()):  # skip the (costlier) decoder when no example is at t = 0
            return kl
        decoder_nll = -mean_flat(discretized_gaussian_log_likelihood(x0, mean, 0.5 * log_variance)) / LN2
        return torch.where(first, decoder_nll, kl)

    @torch.no_grad()
    def nll_terms(self, model, x0: torch.Tensor, clip_denoised: bool = True, progress: bool = False,
                  generator: torch.Generator | None = None, model_kwargs: dict | None = None,
                  t_batch: int = 1) -> dict:
        """Every term of the bound for each image in bits/dim.

        Returns dict:
            prior_bpd [B]: L_T;
            vb_bpd [B, T]: index 0 is the decoder term L_0, index t >= 1 the KL term at t;
            total_bpd [B]: prior + sum of vb_bpd (an upper bound on -log2 p(x0) per dim);
            x0_mse [B, T]: mean squared error of pred_x0 at each t.
        Each t draws its own x_t ~ q(x_t | x0). `t_batch` timesteps share one model call
        (batch t_batch * B), which is faster for small models.
        """
        if t_batch < 1:
            raise UserError(f"t_batch must be >= 1, got {t_batch}")
        B = x0.shape[0]
        vb = torch.zeros(B, self.num_timesteps, device=x0.device)
        x0_mse = torch.zeros(B, self.num_timesteps, device=x0.device)
        order = list(range(self.num_timesteps - 1, -1, -1))
        chunks = [order[i:i + t_batch] for i in range(0, self.num_timesteps, t_batch)]
        bar = progress_bar(chunks, desc="bits/dim") if progress else chunks
        for chunk in bar:
            k = len(chunk)
            t = torch.tensor(chunk, device=x0.device, dtype=torch.long).repeat_interleave(B)
            xs = x0.repeat(k, *([1] * (x0.ndim - 1)))
            kwargs = _repeat_kwargs(model_kwargs, k, B)
            x_t = self.q_sample(xs, t, generator=generator)
            out = self.p_mean_variance(model, x_t, t, clip_denoised, kwargs)
            terms = self.vb_term_bpd(xs, x_t, t, out["mean"], out["log_variance"])
            mse = mean_flat((out["pred_x0"] - xs) ** 2)
            idx = torch.tensor(chunk, device=x0.device)
            vb[:, idx] = terms.view(k, B).T.to(vb.dtype)
            x0_mse[:, idx] = mse.view(k, B).T.to(vb.dtype)
        prior = self.prior_bpd(x0)
        return {"prior_bpd": prior, "vb_bpd": vb, "total_bpd": prior + vb.sum(dim=1), "x0_mse": x0_mse}

    @torch.no_grad()
    def nll_estimate(self, model, x0: torch.Tensor, num_t: int = 50, clip_denoised: bool = True,
                     generator: torch.Generator | None = None, model_kwargs: dict | None = None) -> torch.Tensor:
        """An unbiased estimate of each image's bound (total bits/dim, [B]) from num_t + 1 model calls.

        L_T and the decoder term L_0 are exact; the sum of the KL terms over t = 1..T-1 is estimated by
        stratified sampling: the indices are cut into `num_t` equal strata and each image draws one t
        per stratum, weighted by the stratum's size. The spread of the per-image estimates includes
        the t-sampling noise, so their standard error is honest.
        """
        B, num_timesteps = x0.shape[0], self.num_timesteps
        num_t = max(1, min(int(num_t), num_timesteps - 1))
        edges = torch.linspace(1, num_timesteps, num_t + 1).round().long().tolist()
        total = self.prior_bpd(x0).double()
        for lo, hi in [(0, 1)] + list(zip(edges[:-1], edges[1:], strict=True)):
            u = torch.rand(B, generator=generator, device=generator.device if generator else None)
            t = (lo + (u * (hi - lo)).long().clamp(max=hi - lo - 1)).to(x0.device)
            x_t = self.q_sample(x0, t, generator=generator)
            out = self.p_mean_variance(model, x_t, t, clip_denoised, model_kwargs)
            total += (hi - lo) * self.vb_term_bpd(x0, x_t, t, out["mean"], out["log_variance"]).double()
        return total

    def nll_bpd(self, model, x0: torch.Tensor, clip_denoised: bool = True, progress: bool = False,
                generator: torch.Generator | None = None, model_kwargs: dict | None = None,
                t_batch: int = 1) -> torch.Tensor:
        """The full variational bound on the NLL, bits/dim, [B]: L_T + L_{T-1} + ... + L_1 + L_0."""
        return self.nll_terms(model, x0, clip_denoised, progress, generator, model_kwargs, t_batch)["total_bpd"]

    # --- 6. training losses --------------------------------------------------------------------
    def mse_weight(self, t: torch.Tensor, ndim: int = 1) -> torch.Tensor:
        """Per-example weight of the MSE term on the prediction target: 1, or the weighting's weight in x0
        terms (min(SNR, gamma) for min_snr, SNR / (k + SNR)^gamma for p2) turned into the target's terms
        (the eps-MSE is SNR times the x0-MSE, the v-MSE SNR + 1 times)."""
        if self.loss_weighting is LossWeighting.NONE:
            return torch.ones_like(t, dtype=torch.float32).reshape(-1, *([1] * (ndim - 1)))
        snr = extract(self.snr, t, ndim)
        if self.loss_weighting is LossWeighting.MIN_SNR:
            x0_weight = snr.clamp(max=self.min_snr_gamma)
        else:
            x0_weight = snr / (self.p2_k + snr) ** self.p2_gamma
        if self.prediction is Prediction.EPS:
            return x0_weight / snr
        if self.prediction is Prediction.X0:
            return x0_weight
        return x0_weight / (snr + 1.0)

    def training_loss(self, model, x0: torch.Tensor, loss_type: str | None = None, t: torch.Tensor | None = None,
                      noise: torch.Tensor | None = None, vlb_weight: float | None = None,
                      generator: torch.Generator | None = None, model_kwargs: dict | None = None) -> dict:
        """Per-example training losses, each [B]; t ~ Uniform{0..T-1} unless given.

        `loss_type` and `vlb_weight` default to the process's `loss_type` and `vlb_weight`.

        loss_type="simple": loss = mse, the (weighted) MSE between the network's output and its target
            (eps, x0 or v): Ho et al.'s L_simple.
        loss_type="vlb": loss = vlb = T * L_t in bits/dim, a one-sample unbiased estimate of L_0 + ... + L_{T-1}
            (improved-diffusion's "rescaled KL"; L_T is constant and left out).
        loss_type="hybrid": loss = mse + vlb_weight * vlb, with the mean stopped from the vlb's gradient so the
            bound trains only the variance (Nichol & Dhariwal's L_hybrid; vlb_weight=0.001 is their lambda,
            which with this T-scaled vlb equals their T/1000 factor).
        Returns dict(loss, mse, vlb (for vlb/hybrid), t).
        """
        loss_type = self.loss_type if loss_type is None else _parse_option(LossType, loss_type, "loss type")
        vlb_weight = self.vlb_weight if vlb_weight is None else vlb_weight
        B = x0.shape[0]
        if t is None:
            t = self.sample_timesteps(B, x0.device, generator)
        t = self._check_t(t, x0)
        if noise is None:
            noise = self.randn(x0.shape, generator, x0.device, x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, t, **(model_kwargs or {}))
        pred, var_values = self.split_model_output(output, x_t)
        alpha, sigma = self._scales(t, x0.ndim)
        target = training_target(self.prediction, x0, noise, alpha, sigma)
        mse = mean_flat(self.mse_weight(t, x0.ndim) * (pred.float() - target) ** 2)
        terms = {"mse": mse, "t": t}
        if loss_type is not LossType.SIMPLE:
            if loss_type is LossType.HYBRID:
                frozen = pred.detach()
                output = torch.cat([frozen, var_values], dim=1) if self.learns_variance else frozen
            p = self.p_mean_variance_from_output(output.float(), x_t, t, clip_denoised=False)
            terms["vlb"] = self.vb_term_bpd(x0, x_t, t, p["mean"], p["log_variance"]) * self.num_timesteps
        if loss_type is LossType.SIMPLE:
            terms["loss"] = mse
        elif loss_type is LossType.VLB:
            terms["loss"] = terms["vlb"]
        else:
            terms["loss"] = mse + vlb_weight * terms["vlb"]
        return terms

    # --- 7. sampling ---------------------------------------------------------------------------
    def sampling_timesteps(self, sampler: str = "ddpm", steps: int | None = None) -> list[int]:
        """The indices t the sampler visits, from high to low (see samplers.py)."""
        return make_sampler(sampler, steps=steps).timesteps(self.num_timesteps)

    @torch.no_grad()
    def sample(self, model, shape, sampler="ddpm", steps: int | None = None, eta: float = 0.0,
               generator: torch.Generator | Sequence[torch.Generator] | None = None, return_chain: bool = False,
               return_pred_x0: bool = False, clip_denoised: bool = True, progress: bool = False,
               device=None, x_T: torch.Tensor | None = None, model_kwargs: dict | None = None):
        """Draw samples of `shape` [B, C, H, W] from the reverse process.

        sampler="ddpm": ancestral over all T steps (or `steps` of them, respaced) with the model's variance,
        no noise on the last step.
        sampler="ddim": over `steps` (None: all T) evenly spaced indices (both T-1 and 0 included), with `eta`
        (0 = deterministic DDIM, 1 = DDPM-like posterior variance). A `samplers.Sampler` instance works too.
        Randomness comes only from `generator` when given (one, or a list of one per sample). `x_T` starts
        from given noise.

        Returns the final x_0; or (x_0, chain) with chain = [x_T, ..., x_0] when return_chain;
        or (x_0, chain, pred_x0s) when return_pred_x0 (chain is then filled as well).
        """
        s = make_sampler(sampler, steps=steps, eta=eta)
        final, chain, pred_x0s = sample_loop(
            self, model, s, shape, generator=generator, clip_denoised=clip_denoised, progress=progress,
            device=device, x_T=x_T, model_kwargs=model_kwargs,
            keep_chain=return_chain or return_pred_x0, keep_pred_x0=return_pred_x0,
        )
        if return_pred_x0:
            return final, chain, pred_x0s
        if return_chain:
            return final, chain
        return final


def learned_range_log_variance(v: torch.Tensor, min_log: torch.Tensor, max_log: torch.Tensor) -> torch.Tensor:
    """iDDPM's learned variance: log Sigma = frac * log beta + (1 - frac) * log beta-tilde, frac = (v + 1) / 2.

    v = -1 gives beta-tilde_t (min_log), v = +1 gives beta_t (max_log); v is not clamped (as iDDPM).
    """
    frac = (v + 1.0) / 2.0
    return frac * max_log + (1.0 - frac) * min_log


def _repeat_kwargs(model_kwargs: dict | None, k: int, batch: int) -> dict:
    """Repeat batch-shaped tensors in model_kwargs k times along dim 0 (for t_batch > 1)."""
    if not model_kwargs:
        return {}
    if k == 1:
        return model_kwargs
    out = {}
    for key, value in model_kwargs.items():
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == batch:
            value = value.repeat(k, *([1] * (value.ndim - 1)))
        out[key] = value
    return out
