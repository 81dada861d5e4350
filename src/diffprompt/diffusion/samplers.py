"""Sampling loops for `GaussianDiffusion`, separate and swappable (diffusers-style).

A `Sampler` says which timesteps it visits (`timesteps(T)`, high to low) and how to take one step
(`step(...)` -> (x_prev, pred_x0)); `sample_loop` runs any sampler. Two are built in:

- `DDPMSampler` ("ddpm"): Ho et al.'s ancestral sampler over all T steps,
  x_{t-1} = mu_theta(x_t, t) + Sigma_t^{1/2} z, with no noise at t = 0.
- `DDIMSampler` ("ddim", Song et al. 2021): `steps` (None: all T) indices evenly spaced over [0, T-1], both ends
  included (diffusers' "linspace" spacing: round(linspace(0, T-1, steps))), so the chain starts at
  t = T-1 from pure noise and its last step, from t = 0, lands on x0 (alpha-bar = 1). Update:
  x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - s^2) eps_hat + s z,
  s = eta * sqrt((1 - ab_prev) / (1 - ab_t)) * sqrt(1 - ab_t / ab_prev).
  eta = 0 is deterministic; eta = 1 with steps = T is the DDPM sampler with fixed_small variance.
  The DDIM coefficients are computed in float64 from the schedule.

All randomness comes from the `generator` when one is given.
"""

from __future__ import annotations

import math

import torch

from diffprompt.errors import UserError

class Sampler:
    """Base class: subclasses define `timesteps(T)` and `step(...)`."""

    name = "sampler"

    def timesteps(self, T: int) -> list[int]:
        raise NotImplementedError

    def step(self, diffusion, model, x_t: torch.Tensor, t: int, t_prev: int, generator=None,
             clip_denoised: bool = True, model_kwargs: dict | None = None):
        """One reverse step from index t to index t_prev (-1 means x0). Returns (x_prev, pred_x0)."""
        raise NotImplementedError


def _check_steps(steps, T: int, sampler: str) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | float) or int(steps) != steps:
        raise UserError(f"{sampler} steps must be an integer, got {steps!r}")
    steps = int(steps)
    if steps < 1:
        raise UserError(f"{sampler} steps must be >= 1, got {steps}")
    if steps > T:
        raise UserError(f"{sampler} steps ({steps}) cannot exceed the number of diffusion steps T={T}; use steps <= {T}")
    return steps


def _check_eta(eta) -> float:
    eta = float(eta)
    if not eta >= 0:
        raise UserError(f"eta must be >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta}")
    return eta


class DDPMSampler(Sampler):
    """Ancestral sampling over all T steps with the diffusion's (fixed or learned) variance."""

    name = "ddpm"

    def __init__(self, steps: int | None = None):
        self.steps = steps

    def timesteps(self, T: int) -> list[int]:
        if self.steps is not None:
            steps = _check_steps(self.steps, T, "ddpm")
            if steps != T:
                raise UserError(f"the ddpm sampler runs all T={T} steps, got steps={steps}; "
                                "use sampler='ddim' (eta=1 for stochastic) to sample with fewer steps")
        return list(range(T - 1, -1, -1))

    def step(self, diffusion, model, x_t, t, t_prev, generator=None, clip_denoised=True, model_kwargs=None):
        t_vec = torch.full((x_t.shape[0],), t, device=x_t.device, dtype=torch.long)
        out = diffusion.p_mean_variance(model, x_t, t_vec, clip_denoised, model_kwargs)
        x_prev = out["mean"]
        if t > 0:
            noise = diffusion.randn(x_t.shape, generator, x_t.device, x_t.dtype)
            x_prev = x_prev + torch.exp(0.5 * out["log_variance"]) * noise
        return x_prev, out["pred_x0"]


class DDIMSampler(Sampler):
    """DDIM over `steps` evenly spaced indices (T-1 and 0 included) with stochasticity `eta`."""

    name = "ddim"

    def __init__(self, steps: int | None = None, eta: float = 0.0):
        self.steps = steps
        self.eta = _check_eta(eta)

    def timesteps(self, T: int) -> list[int]:
        steps = T if self.steps is None else _check_steps(self.steps, T, "ddim")  # None: all T, as ddpm
        return evenly_spaced_timesteps(T, steps)

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


def ddim_sigma(ab_t: float, ab_prev: float, eta: float) -> float:
    """DDIM's noise scale sigma_t(eta) = eta * sqrt((1 - ab_prev)/(1 - ab_t)) * sqrt(1 - ab_t/ab_prev)."""
    return eta * math.sqrt((1.0 - ab_prev) / (1.0 - ab_t)) * math.sqrt(max(1.0 - ab_t / ab_prev, 0.0))


def evenly_spaced_timesteps(T: int, steps: int) -> list[int]:
    """round(linspace(0, T-1, steps)), high to low: T-1 first, 0 last (for steps >= 2), all distinct."""
    if steps == 1:
        return [T - 1]
    return [round(i * (T - 1) / (steps - 1)) for i in range(steps - 1, -1, -1)]


SAMPLERS = {"ddpm": DDPMSampler, "ddim": DDIMSampler}


def make_sampler(sampler="ddpm", steps: int | None = None, eta: float = 0.0) -> Sampler:
    """A `Sampler` from its name ("ddpm" or "ddim"); an instance is returned as is.

    eta is checked (>= 0) for both, and used by ddim only.
    """
    if isinstance(sampler, Sampler):
        return sampler
    eta = _check_eta(eta)
    key = str(sampler).lower()
    if key == "ddpm":
        return DDPMSampler(steps)
    if key == "ddim":
        return DDIMSampler(steps, eta)
    raise UserError(f"unknown sampler {sampler!r}; choose one of: {', '.join(SAMPLERS)}")


@torch.no_grad()
def sample_loop(diffusion, model, sampler: Sampler, shape, generator=None, clip_denoised: bool = True,
                progress: bool = False, device=None, x_T: torch.Tensor | None = None,
                model_kwargs: dict | None = None, keep_chain: bool = False, keep_pred_x0: bool = False):
    """Run `sampler` from x_T (noise from `generator`, or the given `x_T`) down to x0.

    Returns (x0, chain, pred_x0s): chain = [x_T, ..., x0] if keep_chain else [];
    pred_x0s = the model's x0 estimate at each visited t if keep_pred_x0 else [].
    """
    from diffprompt.progress import progress as progress_bar

    ts = sampler.timesteps(diffusion.T)  # validates steps before any work
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
