"""Sampling loops for `GaussianDiffusion`, separate and swappable (diffusers-style).

A `Sampler` says which timesteps it visits (`timesteps(T)`, high to low) and how to take one step
(`step(...)` -> (x_prev, pred_x0)); `sample_loop` runs any sampler. Built in:

- `DDPMSampler` ("ddpm"): Ho et al.'s ancestral sampler over all T steps,
  x_{t-1} = mu_theta(x_t, t) + Sigma_t^{1/2} z, with no noise at t = 0; with `steps` < T, the same
  over the chain respaced to `steps` indices (iDDPM sec. 4: beta'_t = 1 - ab_t / ab_prev).
- `DDIMSampler` ("ddim", Song et al. 2021): `steps` indices spaced over [0, T-1] (see
  `spaced_timesteps`); its last step lands on x0 (alpha-bar = 1). Update:
  x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - s^2) eps_hat + s z,
  s = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).
  eta = 0 is deterministic; eta = 1 with steps = T is the DDPM sampler with fixed_small variance.
- `DPMSolverPPSampler` (Lu et al. 2022, DPM-Solver++, multistep, data-prediction form), with a
  first-order first and last step. With half log-SNR lambda = log(alpha / sigma), h = lambda_t -
  lambda_s, r_k = h_k / h (h_k the earlier steps' h) and D0 = x0_s, D1 = (x0_s - x0_prev) / r_0:
  "dpm++2m":     x_t = (sigma_t / sigma_s) x_s + alpha_t (1 - e^{-h}) (D0 + D1 / 2);
  "dpm++3m":     the third-order multistep update (diffusers' `multistep_dpm_solver_third_order_update`),
                 second order at the second-to-last step when there are fewer than 15 steps;
  "dpm++2m-sde": x_t = (sigma_t / sigma_s) e^{-h} x_s + alpha_t (1 - e^{-2h}) (D0 + D1 / 2)
                 + sigma_t sqrt(1 - e^{-2h}) z, the SDE variant (fresh noise z at every step but the last).
  The first-order ODE update (no history term) is DDIM with eta = 0.

Timestep spacings follow diffusers' names: "linspace", "leading", "trailing". Coefficients are
computed in float64 from the schedule. All randomness comes from the `generator` when one is given.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from diffprompt.errors import UserError
from diffprompt.progress import progress as progress_bar

from .choices import SAMPLER_NAMES, SPACINGS, default_steps


class Sampler:
    """Base class: subclasses define `timesteps(T)` and `step(...)`."""

    name = "sampler"

    def timesteps(self, num_timesteps: int) -> list[int]:
        raise NotImplementedError

    def step(self, diffusion, model, x_t: torch.Tensor, t: int, t_prev: int, generator=None,
             clip_denoised: bool = True, model_kwargs: dict | None = None):
        """One reverse step from index t to index t_prev (-1 means x0). Returns (x_prev, pred_x0)."""
        raise NotImplementedError


def _check_steps(steps, num_timesteps: int, sampler: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | float) or int(steps) != steps:
        raise UserError(f"{sampler} steps must be an integer, got {steps!r}")
    steps = int(steps)
    if steps < 1:
        raise UserError(f"{sampler} steps must be >= 1, got {steps}")
    if steps > num_timesteps:
        raise UserError(f"{sampler} steps ({steps}) cannot exceed the number of diffusion steps T={num_timesteps}; use steps <= {num_timesteps}")
    return steps


def _check_eta(eta) -> float:
    eta = float(eta)
    if not eta >= 0:
        raise UserError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
    return eta


class DDPMSampler(Sampler):
    """Ancestral sampling with the diffusion's (fixed or learned) variance: over all T steps, or over
    `steps` spaced indices of the chain respaced to them (Nichol & Dhariwal 2021, sec. 4;
    `GaussianDiffusion.p_mean_variance_skip`), where learned variances keep the quality of fewer steps."""

    name = "ddpm"

    def __init__(self, steps: int | None = None, spacing: str = "linspace"):
        self.steps = steps
        self.spacing = _check_spacing(spacing)

    def timesteps(self, num_timesteps: int) -> list[int]:
        steps = num_timesteps if self.steps is None else _check_steps(self.steps, num_timesteps, "ddpm")
        if steps == num_timesteps:
            return list(range(num_timesteps - 1, -1, -1))
        return _distinct(spaced_timesteps(num_timesteps, steps, self.spacing), "ddpm", steps, self.spacing)

    def step(self, diffusion, model, x_t, t, t_prev, generator=None, clip_denoised=True, model_kwargs=None):
        out = diffusion.p_mean_variance_skip(model, x_t, t, t_prev, clip_denoised, model_kwargs)
        x_prev = out["mean"]
        if t_prev >= 0:  # the step to x0 adds no noise
            noise = diffusion.randn(x_t.shape, generator, x_t.device, x_t.dtype)
            x_prev = x_prev + torch.exp(0.5 * out["log_variance"]) * noise
        return x_prev, out["pred_x0"]


class DDIMSampler(Sampler):
    """DDIM over `steps` spaced indices (see `spaced_timesteps`) with stochasticity `eta`."""

    name = "ddim"

    def __init__(self, steps: int | None = None, eta: float = 0.0, spacing: str = "linspace"):
        self.steps = steps
        self.eta = _check_eta(eta)
        self.spacing = _check_spacing(spacing)

    def timesteps(self, num_timesteps: int) -> list[int]:
        steps = num_timesteps if self.steps is None else _check_steps(self.steps, num_timesteps, "ddim")  # None: all T, as ddpm
        return _distinct(spaced_timesteps(num_timesteps, steps, self.spacing), "ddim", steps, self.spacing)

    def step(self, diffusion, model, x_t, t, t_prev, generator=None, clip_denoised=True, model_kwargs=None):
        t_vec = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        out = diffusion.p_mean_variance(model, x_t, t_vec, clip_denoised, model_kwargs)
        ab = diffusion.schedule.alphas_cumprod  # float64
        ab_t = float(ab[t])
        ab_prev = float(ab[t_prev]) if t_prev >= 0 else 1.0
        sigma = ddim_sigma(ab_t, ab_prev, self.eta)
        direction = math.sqrt(max(1.0 - ab_prev - sigma**2, 0.0))
        x_prev = math.sqrt(ab_prev) * out["pred_x0"] + direction * out["pred_eps"]
        if sigma > 0:
            noise = diffusion.randn(x_t.shape, generator, x_t.device, x_t.dtype)
            x_prev = x_prev + sigma * noise
        return x_prev, out["pred_x0"]


class DPMSolverPPSampler(Sampler):
    """DPM-Solver++ of order 1, 2 or 3 (multistep, data prediction), the ODE or (`stochastic`,
    order <= 2) the SDE variant; first order at the first and the last step.

    The timesteps are diffusers' `DPMSolverMultistepScheduler`'s for the same spacing: `steps`
    indices above 0, then one last step to sigma = 0, which returns the model's x0 estimate.
    The sampler remembers the x0 estimates of its chain; a step whose t is not the previous step's
    t_prev starts a new chain.
    """

    def __init__(self, steps: int = 20, spacing: str = "linspace", order: int = 2, stochastic: bool = False):
        if order not in (1, 2, 3) or (stochastic and order == 3):
            raise UserError(f"DPM-Solver++ order must be 1, 2 or 3 (1 or 2 for the SDE variant), got {order!r}")
        self.steps, self.spacing, self.order, self.stochastic = steps, _check_spacing(spacing), order, stochastic
        self.name = f"dpm++{order}m" + ("-sde" if stochastic else "")
        self._history: list[tuple[float, torch.Tensor]] = []  # (lambda, x0) of this chain's steps, oldest first
        self._next_t: int | None = None

    def timesteps(self, num_timesteps: int) -> list[int]:
        steps = _check_steps(num_timesteps if self.steps is None else self.steps, num_timesteps, self.name)
        if self.spacing == "trailing":
            ts = spaced_timesteps(num_timesteps, steps, "trailing")
        else:  # steps + 1 points, the last (t = 0) replaced by the final step to sigma = 0
            ts = spaced_timesteps(num_timesteps, steps + 1, self.spacing)[:-1]
        return _distinct(ts, self.name, steps, self.spacing)

    def step(self, diffusion, model, x_t, t, t_prev, generator=None, clip_denoised=True, model_kwargs=None):
        t_vec = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        x0 = diffusion.predict_x0(model, x_t, t_vec, clip_denoised, model_kwargs)
        history = self._history if self._next_t == t else []
        self._history, self._next_t = [], None
        if t_prev < 0:  # sigma = 0: the first-order update is x0 itself
            return x0, x0
        ab = diffusion.schedule.alphas_cumprod  # float64
        (_, sigma_s, lam_s), (alpha_t, sigma_t, lam_t) = _half_log_snr(ab[t]), _half_log_snr(ab[t_prev])
        h = lam_t - lam_s
        order = min(self.order, len(history) + 1)
        if order == 3:  # diffusers' lower_order_second: below 15 steps the second-to-last step is second order
            ts = self.timesteps(diffusion.num_timesteps)
            order = 2 if len(ts) < 15 and t_prev == ts[-1] else 3
        chain = history[len(history) - (order - 1):] + [(lam_s, x0)]  # the points this step uses, newest last
        self._history, self._next_t = chain[-2:], t_prev
        lams, x0s = [lam for lam, _ in chain], [x for _, x in chain]
        if not self.stochastic:
            return (sigma_t / sigma_s) * x_t + alpha_t * _dpm_pp_data_term(h, lams, x0s, -math.expm1(-h)), x0
        phi = -math.expm1(-2.0 * h)  # 1 - e^{-2h}
        noise = diffusion.randn(x_t.shape, generator, x_t.device, x_t.dtype)
        x_prev = (sigma_t / sigma_s * math.exp(-h)) * x_t + alpha_t * _dpm_pp_data_term(h, lams, x0s, phi)
        return x_prev + sigma_t * math.sqrt(phi) * noise, x0


def _dpm_pp_data_term(h: float, lams: list[float], x0s: list[torch.Tensor], phi1: float) -> torch.Tensor:
    """The x0 part of a DPM-Solver++ step of order len(x0s) (the newest last), divided by alpha_t.

    phi1 = 1 - e^{-h} (ODE) or 1 - e^{-2h} (SDE): order 1 gives phi1 D0, order 2 phi1 (D0 + D1 / 2)
    (the midpoint form); order 3 (ODE only) adds the curvature term D2, as in Lu et al.'s Algorithm 2
    written out by diffusers.
    """
    d0 = x0s[-1]
    if len(x0s) == 1:
        return phi1 * d0
    r0 = (lams[-1] - lams[-2]) / h
    d1_0 = (x0s[-1] - x0s[-2]) / r0
    if len(x0s) == 2:
        return phi1 * (d0 + 0.5 * d1_0)
    r1 = (lams[-2] - lams[-3]) / h
    d1_1 = (x0s[-2] - x0s[-3]) / r1
    d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
    d2 = (d1_0 - d1_1) / (r0 + r1)
    em1 = math.expm1(-h)  # e^{-h} - 1
    return phi1 * d0 + (em1 / h + 1.0) * d1 - ((em1 + h) / h**2 - 0.5) * d2


def _half_log_snr(alpha_bar) -> tuple[float, float, float]:
    """(alpha, sigma, lambda = log(alpha / sigma)) for one alpha-bar."""
    ab = float(alpha_bar)
    alpha, sigma = math.sqrt(ab), math.sqrt(1.0 - ab)
    return alpha, sigma, math.log(alpha) - math.log(sigma)


def ddim_sigma(ab_t: float, ab_prev: float, eta: float) -> float:
    """DDIM's noise scale sigma_t(eta) = eta * sqrt((1 - ab_prev)/(1 - ab_t)) * sqrt(1 - ab_t/ab_prev)."""
    return eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * math.sqrt(max(1.0 - ab_t / ab_prev, 0.0))


def spaced_timesteps(num_timesteps: int, n: int, spacing: str = "linspace") -> list[int]:
    """`n` of the indices 0..T-1, high to low, spaced as diffusers' `DDIMScheduler` does.

    linspace: round(linspace(0, T-1, n)), both ends included (n = 1: [T-1]);
    leading:  k * (T // n) for k < n, so 0 is included and T-1 usually not;
    trailing: round(T - k * T / n) - 1 for k < n, so T-1 is included and 0 usually not.
    """
    spacing = _check_spacing(spacing)
    if spacing == "linspace":
        ts = [num_timesteps - 1] if n == 1 else np.linspace(0, num_timesteps - 1, n).round()[::-1]
    elif spacing == "leading":
        ts = (np.arange(n) * (num_timesteps // n))[::-1]
    else:
        ts = np.arange(num_timesteps, 0, -num_timesteps / n).round() - 1
    return [int(t) for t in ts]


def _distinct(ts: list[int], sampler: str, steps: int, spacing: str) -> list[int]:
    if any(a <= b for a, b in zip(ts, ts[1:], strict=False)) or min(ts) < 0:
        raise UserError(f"{sampler} with {steps} steps and {spacing!r} spacing repeats a timestep; "
                        "use fewer steps or another spacing")
    return ts


def _check_spacing(spacing: str) -> str:
    if spacing not in SPACINGS:
        raise UserError(f"unknown timestep spacing {spacing!r}; choose one of: {', '.join(SPACINGS)}")
    return spacing


SAMPLERS = {  # name -> how to build it from (steps, eta, spacing); eta is DDIM's only
    "ddpm": lambda steps, eta, spacing: DDPMSampler(steps, spacing),
    "ddim": lambda steps, eta, spacing: DDIMSampler(steps, eta, spacing),
    "dpm++2m": lambda steps, eta, spacing: DPMSolverPPSampler(steps, spacing, order=2),
    "dpm++3m": lambda steps, eta, spacing: DPMSolverPPSampler(steps, spacing, order=3),
    "dpm++2m-sde": lambda steps, eta, spacing: DPMSolverPPSampler(steps, spacing, order=2, stochastic=True),
}
assert tuple(SAMPLERS) == SAMPLER_NAMES


def make_sampler(sampler="ddpm", steps: int | None = None, eta: float = 0.0, spacing: str = "linspace") -> Sampler:
    """A `Sampler` from its name (one of `SAMPLER_NAMES`); an instance is returned as is.

    eta is checked (>= 0) for all and used by ddim only; spacing is used by all (by ddpm when respaced).
    steps=None is all T steps for ddpm and ddim, and `DEFAULT_STEPS` (20) for the DPM-Solver++ samplers.
    """
    if isinstance(sampler, Sampler):
        return sampler
    eta = _check_eta(eta)
    key = str(sampler).lower()
    if key not in SAMPLERS:
        raise UserError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")
    if key.startswith("dpm++"):  # it needs steps + 1 points, so "all T steps" (None) means its default
        steps = default_steps(key, steps)
    return SAMPLERS[key](steps, eta, spacing)


@torch.no_grad()
def sample_loop(diffusion, model, sampler: Sampler, shape, generator=None, clip_denoised: bool = True,
                progress: bool = False, device=None, x_T: torch.Tensor | None = None,
                model_kwargs: dict | None = None, keep_chain: bool = False, keep_pred_x0: bool = False):
    """Run `sampler` from x_T (noise from `generator`, or the given `x_T`) down to x0.

    Returns (x0, chain, pred_x0s): chain = [x_T, ..., x0] if keep_chain else [];
    pred_x0s = the model's x0 estimate at each visited t if keep_pred_x0 else [].
    """
    ts = sampler.timesteps(diffusion.num_timesteps)  # validates steps before any work
    if x_T is not None:
        if tuple(x_T.shape) != tuple(shape):
            raise UserError(f"x_T has shape {tuple(x_T.shape)} but shape={tuple(shape)} was asked for")
        x = x_T.to(device) if device is not None else x_T
    else:
        x = diffusion.randn(shape, generator, device)
    chain = [x] if keep_chain else []
    pred_x0s = []
    iterator = progress_bar(range(len(ts)), desc=f"{sampler.name} sampling") if progress else range(len(ts))
    for i in iterator:
        t = ts[i]
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        x, pred_x0 = sampler.step(diffusion, model, x, t, t_prev, generator, clip_denoised, model_kwargs)
        if keep_chain:
            chain.append(x)
        if keep_pred_x0:
            pred_x0s.append(pred_x0)
    return x, chain, pred_x0s
