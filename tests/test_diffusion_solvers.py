"""DPM-Solver++(2M) and the timestep spacings: diffusers as the oracle, DDIM as the first-order
special case, and the convergence order on a Gaussian data set whose probability-flow ODE is
solved in closed form."""

import math

import numpy as np
import pytest
import torch

from diffprompt.diffusion.process import GaussianDiffusion
from diffprompt.diffusion.samplers import (
    DDIMSampler,
    DPMSolverPPSampler,
    make_sampler,
    sample_loop,
    spaced_timesteps,
)
from diffprompt.diffusion.schedule import NoiseSchedule
from diffprompt.errors import UserError



def oracle():
    """diffusers (the `test` extra), for the tests that use it as the oracle: only they skip without it."""
    return pytest.importorskip("diffusers")

PREDICTION_NAMES = {"eps": "epsilon", "v": "v_prediction", "x0": "sample"}


def toy_model(x_t, t):
    """A fixed, nonlinear, t-dependent stand-in for a network (outputs of order 1)."""
    tt = (t.float() + 1).view(-1, 1, 1, 1) / 1000.0
    return 0.7 * torch.tanh(x_t * (1 + tt)) + 0.1 * torch.sin(3 * x_t + tt)


def dpm_scheduler(schedule, prediction="eps", spacing="linspace"):
    return oracle().DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.num_timesteps, trained_betas=schedule.betas.numpy(), solver_order=2,
        prediction_type=PREDICTION_NAMES[prediction], algorithm_type="dpmsolver++", solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing=spacing)


@pytest.mark.parametrize("spacing", ["linspace", "leading", "trailing"])
@pytest.mark.parametrize("num_timesteps,n", [(1000, 5), (1000, 10), (1000, 20), (1000, 27), (1000, 50), (100, 7), (100, 100)])
def test_spacings_equal_diffusers(spacing, num_timesteps, n):
    diffusers = oracle()
    ddim = diffusers.DDIMScheduler(num_train_timesteps=num_timesteps, timestep_spacing=spacing)
    ddim.set_timesteps(n)
    assert spaced_timesteps(num_timesteps, n, spacing) == ddim.timesteps.tolist()
    if n < num_timesteps:
        dpm = diffusers.DPMSolverMultistepScheduler(num_train_timesteps=num_timesteps, timestep_spacing=spacing)
        dpm.set_timesteps(n)
        assert DPMSolverPPSampler(n, spacing).timesteps(num_timesteps) == dpm.timesteps.tolist()


def test_trailing_includes_the_last_index_and_leading_the_first():
    assert spaced_timesteps(1000, 4, "trailing") == [999, 749, 499, 249]
    assert spaced_timesteps(1000, 4, "leading") == [750, 500, 250, 0]
    assert spaced_timesteps(1000, 4, "linspace") == [999, 666, 333, 0]


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
@pytest.mark.parametrize("spacing,steps", [("linspace", 20), ("trailing", 8), ("leading", 5)])
def test_dpm_solver_pp_2m_equals_diffusers_step_for_step(prediction, spacing, steps):
    schedule = NoiseSchedule.linear(1000)
    diffusion = GaussianDiffusion(schedule, prediction=prediction)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    sampler = DPMSolverPPSampler(steps, spacing)
    _, chain, _ = sample_loop(diffusion, toy_model, sampler, x_T.shape, x_T=x_T, clip_denoised=False,
                              keep_chain=True)

    sched = dpm_scheduler(schedule, prediction, spacing)
    sched.set_timesteps(steps)
    x, theirs = x_T.clone(), [x_T]
    for t in sched.timesteps:
        x = sched.step(toy_model(x, t.expand(x.shape[0])), t, x).prev_sample
        theirs.append(x)
    assert len(chain) == len(theirs) == steps + 1
    for ours, ref in zip(chain, theirs, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)  # eps toy x0 reaches ~100


@pytest.mark.parametrize("clip", [True, False])
def test_first_order_dpm_solver_pp_is_ddim_eta_0(clip):
    diffusion = GaussianDiffusion(NoiseSchedule.cosine(200), prediction="v")
    x_T = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    _, ours, _ = sample_loop(diffusion, toy_model, DPMSolverPPSampler(10, "trailing", order=1), x_T.shape,
                             x_T=x_T, clip_denoised=clip, keep_chain=True)
    _, ddim, _ = sample_loop(diffusion, toy_model, DDIMSampler(10, eta=0.0, spacing="trailing"), x_T.shape,
                             x_T=x_T, clip_denoised=clip, keep_chain=True)
    for a, b in zip(ours, ddim, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_sampler_history_does_not_leak_between_chains():
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    sampler = make_sampler("dpm++2m", steps=6)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(2))
    a, _, _ = sample_loop(diffusion, toy_model, sampler, x_T.shape, x_T=x_T)
    b, _, _ = sample_loop(diffusion, toy_model, sampler, x_T.shape, x_T=x_T)
    c, _, _ = sample_loop(diffusion, toy_model, DPMSolverPPSampler(6), x_T.shape, x_T=x_T)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert a.abs().max() <= 1.0  # clipped x0 estimate at the last step


# --- convergence on Gaussian data: x0 ~ N(mu, s^2), whose probability-flow ODE keeps the
# standardised value z = (x_t - alpha_t mu) / sqrt(alpha_t^2 s^2 + sigma_t^2) constant.
MU, S = 0.3, 0.5


def gaussian_oracle(diffusion):
    """The exact eps-prediction for Gaussian data: E[eps | x_t]."""
    ab = diffusion.schedule.alphas_cumprod

    def model(x_t, t):
        a = ab[t].sqrt().view(-1, 1, 1, 1).to(torch.float64)
        sig = (1 - ab[t]).sqrt().view(-1, 1, 1, 1).to(torch.float64)
        x = x_t.to(torch.float64)
        x0 = MU + a * S**2 / (a**2 * S**2 + sig**2) * (x - a * MU)  # posterior mean E[x0 | x_t]
        return ((x - a * x0) / sig).to(x_t.dtype)

    return model


def ode_error(diffusion, sampler, x_T, at: int) -> float:
    """How far z has drifted from z_T when the solver's chain reaches timestep `at` (the exact flow
    keeps it at z_T). Measured at a timestep every compared grid visits, away from the last steps,
    whose large lambda-jumps are not yet in the asymptotic regime."""
    ts = sampler.timesteps(diffusion.num_timesteps)
    _, chain, _ = sample_loop(diffusion, gaussian_oracle(diffusion), sampler, x_T.shape, x_T=x_T,
                              clip_denoised=False, keep_chain=True)
    ab = diffusion.schedule.alphas_cumprod

    def z(x, t):
        a, sig2 = math.sqrt(float(ab[t])), 1 - float(ab[t])
        return (x.double() - a * MU) / math.sqrt(a**2 * S**2 + sig2)

    return float((z(chain[ts.index(at)], at) - z(chain[0], ts[0])).abs().max())  # chain[i] is at ts[i]


def test_dpm_solver_pp_converges_at_second_order_and_ddim_at_first():
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    x_T = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(3))
    grids = (10, 20, 40)  # trailing: all visit 199
    dpm = [ode_error(diffusion, DPMSolverPPSampler(n, "trailing"), x_T, 199) for n in grids]
    ddim = [ode_error(diffusion, DDIMSampler(n, spacing="trailing"), x_T, 199) for n in grids]
    dpm_orders = [math.log2(a / b) for a, b in zip(dpm, dpm[1:], strict=False)]
    ddim_orders = [math.log2(a / b) for a, b in zip(ddim, ddim[1:], strict=False)]
    assert all(1.7 < p < 2.3 for p in dpm_orders), (dpm, dpm_orders)
    assert all(0.8 < p < 1.2 for p in ddim_orders), (ddim, ddim_orders)
    assert dpm[1] < ddim[1] / 5


def test_bad_spacing_and_repeated_timesteps_are_user_errors():
    with pytest.raises(UserError, match="spacing"):
        DDIMSampler(10, spacing="uniform")
    with pytest.raises(UserError, match="repeats a timestep"):
        DPMSolverPPSampler(10, "leading").timesteps(10)
    with pytest.raises(UserError, match="order"):
        DPMSolverPPSampler(10, order=4)
    with pytest.raises(UserError, match="SDE"):
        make_sampler("dpm++2m-sde").__class__(10, order=3, stochastic=True)
    assert np.all(np.diff(DPMSolverPPSampler(999).timesteps(1000)) < 0)


def dpm_oracle_chain(schedule, prediction, spacing, steps, x_T, order=2, sde_noise=None):
    """diffusers' chain for the same start; `sde_noise` (one tensor per step) makes it the SDE variant."""
    sched = oracle().DPMSolverMultistepScheduler(
        num_train_timesteps=schedule.num_timesteps, trained_betas=schedule.betas.numpy(), solver_order=order,
        prediction_type=PREDICTION_NAMES[prediction],
        algorithm_type="sde-dpmsolver++" if sde_noise is not None else "dpmsolver++", solver_type="midpoint",
        lower_order_final=True, final_sigmas_type="zero", timestep_spacing=spacing)
    sched.set_timesteps(steps)
    x, chain = x_T.clone(), [x_T]
    for i, t in enumerate(sched.timesteps):
        noise = None if sde_noise is None else sde_noise[i]
        x = sched.step(toy_model(x, t.expand(x.shape[0])), t, x, variance_noise=noise).prev_sample
        chain.append(x)
    return chain


@pytest.mark.parametrize("prediction", ["eps", "v"])
@pytest.mark.parametrize("spacing,steps", [("linspace", 20), ("trailing", 8), ("leading", 5)])
def test_dpm_solver_pp_3m_equals_diffusers_step_for_step(prediction, spacing, steps):
    """Third order from the third step on; below 15 steps the second-to-last step is second order."""
    schedule = NoiseSchedule.linear(1000)
    diffusion = GaussianDiffusion(schedule, prediction=prediction)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(4))
    sampler = make_sampler("dpm++3m", steps=steps, spacing=spacing)
    _, chain, _ = sample_loop(diffusion, toy_model, sampler, x_T.shape, x_T=x_T, clip_denoised=False, keep_chain=True)
    theirs = dpm_oracle_chain(schedule, prediction, spacing, steps, x_T, order=3)
    assert len(chain) == len(theirs) == steps + 1
    for ours, ref in zip(chain, theirs, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    two = dpm_oracle_chain(schedule, prediction, spacing, steps, x_T, order=2)
    gap = max(float((a - b).abs().max()) for a, b in zip(chain, two, strict=True))
    assert gap > 1e-3  # the third-order term changes the chain: the comparison above can tell the orders apart


@pytest.mark.parametrize("prediction", ["eps", "x0"])
@pytest.mark.parametrize("spacing,steps", [("linspace", 20), ("trailing", 6)])
def test_dpm_solver_pp_2m_sde_equals_diffusers_given_the_same_noise(prediction, spacing, steps):
    schedule = NoiseSchedule.linear(1000)
    diffusion = GaussianDiffusion(schedule, prediction=prediction)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    _, chain, _ = sample_loop(diffusion, toy_model, make_sampler("dpm++2m-sde", steps, spacing=spacing), x_T.shape,
                              x_T=x_T, clip_denoised=False, keep_chain=True, generator=torch.Generator().manual_seed(6))
    twin = torch.Generator().manual_seed(6)  # the same draws, in the same order: one per step but the last
    noise = [torch.randn(x_T.shape, generator=twin) for _ in range(steps - 1)] + [torch.zeros_like(x_T)]
    theirs = dpm_oracle_chain(schedule, prediction, spacing, steps, x_T, sde_noise=noise)
    for ours, ref in zip(chain, theirs, strict=True):
        torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-5)
    ode = dpm_oracle_chain(schedule, prediction, spacing, steps, x_T)
    assert (chain[-1] - ode[-1]).abs().max() > 1e-2  # the noise is there


def test_dpm_solver_pp_3m_cuts_the_2m_error_several_times():
    """Third-order steps shrink the error constant; the first-order first step (diffusers' warm-up,
    local error O(h^2)) keeps the global order at 2, so the gain shows as a constant factor."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    x_T = torch.randn(64, 1, 1, 1, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    grids = (20, 40, 80)  # trailing: all visit 199; >= 15 steps, so third order up to the last step
    three = [ode_error(diffusion, DPMSolverPPSampler(n, "trailing", order=3), x_T, 199) for n in grids]
    two = [ode_error(diffusion, DPMSolverPPSampler(n, "trailing", order=2), x_T, 199) for n in grids]
    assert all(b / a > 5 for a, b in zip(three, two, strict=True)), (three, two)  # measured 6.6, 8.2, 8.0
    orders = [math.log2(a / b) for a, b in zip(three, three[1:], strict=False)]
    assert all(1.8 < p < 2.6 for p in orders), (three, orders)  # measured 2.34, 1.99


def test_dpm_solver_pp_2m_sde_samples_the_gaussian_data_distribution():
    """With the exact denoiser, the SDE sampler's samples have the data's mean MU and deviation S, to
    within 4 standard errors of n samples (se(mean) = S / sqrt(n), se(sd) = S / sqrt(2 n)) plus the
    solver's bias, which shrinks as 1 / steps (weak order 1: sd off by +0.014, +0.007 at 50, 100 steps
    with n = 200,000)."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    n, steps = 20_000, 200
    x, _, _ = sample_loop(diffusion, gaussian_oracle(diffusion), make_sampler("dpm++2m-sde", steps), (n, 1, 1, 1),
                          generator=torch.Generator().manual_seed(7), clip_denoised=False)
    x = x.double().flatten()
    bias = 0.75 / steps
    assert abs(float(x.mean()) - MU) < 4 * S / math.sqrt(n) + bias
    assert abs(float(x.std()) - S) < 4 * S / math.sqrt(2 * n) + bias
