"""DPM-Solver++(2M) and the timestep spacings: diffusers as the oracle, DDIM as the first-order
special case, and the convergence order on a Gaussian data set whose probability-flow ODE is
solved in closed form."""

import math

import numpy as np
import pytest
import torch

from diffprompt.diffusion.generate import generate, parse_sampler_spec
from diffprompt.diffusion.process import GaussianDiffusion
from diffprompt.diffusion.samplers import (
    DDIMSampler,
    DDPMSampler,
    DPMSolverPPSampler,
    make_sampler,
    sample_loop,
    spaced_timesteps,
)
from diffprompt.diffusion.schedule import NoiseSchedule
from diffprompt.errors import UserError
from diffprompt.seeding import make_generator, per_sample_generators



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
@pytest.mark.parametrize("spacing,steps", [("linspace", 20), ("trailing", 15), ("trailing", 8), ("leading", 5)])
def test_dpm_solver_pp_3m_equals_diffusers_step_for_step(prediction, spacing, steps):
    """Third order from the third step on; below 15 steps the second-to-last step is second order
    (15 steps: third order up to the last step)."""
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


def test_samplers_carry_their_documented_names_and_defaults():
    """The name labels progress bars and reports; the defaults are the documented ones."""
    assert DPMSolverPPSampler().name == "dpm++2m"
    assert [make_sampler(n).name for n in ("dpm++2m", "dpm++3m", "dpm++2m-sde")] == ["dpm++2m", "dpm++3m", "dpm++2m-sde"]
    assert DPMSolverPPSampler(order=1).name == "dpm++1m"
    assert DPMSolverPPSampler().timesteps(1000) == spaced_timesteps(1000, 21)[:-1]  # 20 steps by default
    assert DPMSolverPPSampler(None, "trailing").timesteps(10) == list(range(9, -1, -1))  # None: all T steps
    assert DDIMSampler().spacing == "linspace" and DDIMSampler(4).timesteps(1000) == [999, 666, 333, 0]
    assert DDPMSampler(10).timesteps(10) == list(range(9, -1, -1))


def test_step_count_errors_name_the_sampler_its_steps_and_spacing():
    with pytest.raises(UserError, match=r"^ddim steps \(20\) cannot exceed the number of diffusion steps T=10"):
        DDIMSampler(20).timesteps(10)
    with pytest.raises(UserError, match=r"^ddpm steps must be >= 1, got 0"):
        DDPMSampler(0).timesteps(10)
    with pytest.raises(UserError, match=r"^ddpm with 7 steps and 'trailing' spacing repeats a timestep"):
        DDPMSampler(7, "trailing").timesteps(17)
    assert DDPMSampler(5).timesteps(10) == spaced_timesteps(10, 5) and DDPMSampler(5, "trailing").timesteps(10) == [9, 7, 5, 3, 1]
    with pytest.raises(UserError, match=r"^dpm\+\+2m-sde steps must be >= 1, got 0"):
        make_sampler("dpm++2m-sde", steps=0).timesteps(10)
    with pytest.raises(UserError, match=r"^dpm\+\+3m with 10 steps and 'leading' spacing repeats a timestep"):
        DPMSolverPPSampler(10, "leading", order=3).timesteps(10)
    # diffusers' trailing grid (np.arange with a float step) gets an extra index -1 for T=17, 7 steps
    with pytest.raises(UserError, match=r"^ddim with 7 steps and 'trailing' spacing repeats a timestep; use fewer steps or another spacing"):
        DDIMSampler(7, spacing="trailing").timesteps(17)
    with pytest.raises(UserError, match="repeats a timestep"):  # 11 points over 0..9 round 3.6 and 4.5 both to 4
        DPMSolverPPSampler(10).timesteps(10)
    for steps in (2.5, True, "5"):
        with pytest.raises(UserError, match=rf"^ddim steps must be an integer, got {steps!r}"):
            DDIMSampler(steps).timesteps(10)
    assert DDIMSampler(5.0).timesteps(10) == DDIMSampler(5).timesteps(10)
    with pytest.raises(UserError, match="choose one of: linspace, leading, trailing"):
        spaced_timesteps(10, 2, "uniform")
    assert make_sampler().name == "ddpm"


def shifted_toy_model(x_t, t, shift=0.0):
    return toy_model(x_t, t) + shift


def test_one_step_clips_the_x0_estimate_by_default_and_passes_model_kwargs():
    """At t = 999 the eps-model's x0 estimate is far outside [-1, 1]: a step clips it unless told not to,
    and `model_kwargs` reach the model."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(8))
    raw = diffusion.predict_x0(toy_model, x, torch.full((2,), 999), clip_denoised=False)
    assert raw.abs().max() > 5
    makers = [DDPMSampler, lambda: DDIMSampler(10, eta=1.0), DPMSolverPPSampler]
    for make in makers:
        default = make().step(diffusion, toy_model, x, 999, 500, torch.Generator().manual_seed(9))
        clipped = make().step(diffusion, toy_model, x, 999, 500, torch.Generator().manual_seed(9), clip_denoised=True)
        for a, b in zip(default, clipped, strict=True):
            assert torch.equal(a, b)
        torch.testing.assert_close(clipped[1], raw.clamp(-1, 1), atol=1e-6, rtol=0)
        kw = make().step(diffusion, shifted_toy_model, x, 999, 500, torch.Generator().manual_seed(9), False,
                         {"shift": 0.3})
        closure = make().step(diffusion, lambda x_t, t: toy_model(x_t, t) + 0.3, x, 999, 500,
                              torch.Generator().manual_seed(9), False)
        assert not torch.equal(kw[1], raw)
        for a, b in zip(kw, closure, strict=True):
            assert torch.equal(a, b)


def test_stochastic_steps_draw_their_noise_in_the_dtype_of_x():
    """A float64 chain gets float64 noise: each step equals its closed form (module docstring) with the
    noise drawn in float64 from a twin generator."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(10), dtype=torch.float64)
    t, t_prev = 600, 300
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(11), dtype=torch.float64)
    tv = torch.full((2,), t)
    out = diffusion.p_mean_variance(toy_model, x, tv, False)
    ab_t, ab_p = float(diffusion.schedule.alphas_cumprod[t]), float(diffusion.schedule.alphas_cumprod[t_prev])

    ddpm, _ = DDPMSampler().step(diffusion, toy_model, x, t, t - 1, torch.Generator().manual_seed(11), False)
    torch.testing.assert_close(ddpm, out["mean"] + torch.exp(0.5 * out["log_variance"]) * z, atol=1e-12, rtol=0)

    ddim, _ = DDIMSampler(eta=1.0).step(diffusion, toy_model, x, t, t_prev, torch.Generator().manual_seed(11), False)
    s = math.sqrt((1 - ab_p) / (1 - ab_t)) * math.sqrt(1 - ab_t / ab_p)
    expected = math.sqrt(ab_p) * out["pred_x0"] + math.sqrt(1 - ab_p - s**2) * out["pred_eps"] + s * z
    torch.testing.assert_close(ddim, expected, atol=1e-12, rtol=0)

    sde, _ = make_sampler("dpm++2m-sde", 20).step(diffusion, toy_model, x, t, t_prev, torch.Generator().manual_seed(11), False)
    a_t, sig_s, sig_t = math.sqrt(ab_p), math.sqrt(1 - ab_t), math.sqrt(1 - ab_p)
    h = math.log(a_t / sig_t) - math.log(math.sqrt(ab_t) / sig_s)
    expected = (sig_t / sig_s * math.exp(-h)) * x + a_t * (1 - math.exp(-2 * h)) * out["pred_x0"] \
        + sig_t * math.sqrt(1 - math.exp(-2 * h)) * z
    torch.testing.assert_close(sde, expected, atol=1e-12, rtol=0)


def test_deterministic_ddim_leaves_the_generator_untouched():
    """eta = 0 draws no noise, so the caller's later draws do not depend on it."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(12))
    g = torch.Generator().manual_seed(13)
    DDIMSampler(eta=0.0).step(diffusion, toy_model, x, 600, 300, g)
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(13).get_state())


def test_a_step_that_does_not_continue_the_chain_starts_a_new_one():
    """An interrupted chain (restarted at its first timestep) forgets the old x0 estimates: its first
    step is the first-order one of a fresh sampler."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(1000))
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(14))
    sampler = DPMSolverPPSampler(6)
    ts = sampler.timesteps(1000)
    x1, _ = sampler.step(diffusion, toy_model, x, ts[0], ts[1])
    sampler.step(diffusion, toy_model, x1, ts[1], ts[2])  # history: two x0 estimates, next t = ts[2]
    again, _ = sampler.step(diffusion, toy_model, x, ts[0], ts[1])
    assert torch.equal(again, x1)


def test_first_order_dpm_solver_pp_steps_onto_index_0_as_ddim():
    """With trailing spacing and steps = T the grid ends at index 0: the step onto it is a real step,
    only the one after it lands on x0."""
    diffusion = GaussianDiffusion(NoiseSchedule.cosine(10), prediction="v")
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(15))
    sampler = DPMSolverPPSampler(10, "trailing", order=1)
    assert sampler.timesteps(10)[-1] == 0
    _, ours, _ = sample_loop(diffusion, toy_model, sampler, x_T.shape, x_T=x_T, keep_chain=True)
    _, ddim, _ = sample_loop(diffusion, toy_model, DDIMSampler(10, spacing="trailing"), x_T.shape, x_T=x_T,
                             keep_chain=True)
    for a, b in zip(ours, ddim, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["dpm++2m", "dpm++3m", "dpm++2m-sde"])
def test_dpm_solver_pp_without_steps_takes_its_default_of_20(name):
    """DPM-Solver++ needs steps + 1 points, so steps=None (DDPM's and DDIM's "all T") means its default."""
    assert make_sampler(name).timesteps(1000) == make_sampler(name, steps=20).timesteps(1000)
    assert len(make_sampler(name).timesteps(1000)) == 20


# --- DDPM over a respaced chain (Nichol & Dhariwal 2021, sec. 4) -----------------------------


def learned_toy_model(x_t, t):
    """2C channels: the toy prediction and a t-dependent variance value v, partly outside [-1, 1]."""
    tt = (t.to(x_t.dtype) + 1).view(-1, 1, 1, 1) / 50.0
    return torch.cat([toy_model(x_t, t), 1.3 * torch.sin(2 * x_t + tt)], dim=1)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_a_respaced_step_is_the_step_of_the_process_built_on_the_respaced_betas(variance):
    """iDDPM's construction: the visited indices S define betas 1 - ab[S_i] / ab[S_{i-1}], a process of
    len(S) steps, and a model called with the original index. Its `p_mean_variance` at i is our skip step
    S_i -> S_{i-1} (i >= 1; at i = 0 both clip the log-variance differently, and no noise is drawn there)."""
    T, visited = 100, [0, 9, 30, 31, 64, 99]
    diffusion = GaussianDiffusion(NoiseSchedule.linear(T, 1e-3, 0.05), variance=variance)
    ab = diffusion.schedule.alphas_cumprod[visited]
    respaced = GaussianDiffusion(NoiseSchedule(1 - ab / torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])),
                                 variance=variance)
    model = learned_toy_model if variance == "learned_range" else toy_model

    def on_original(x_t, i):
        return model(x_t, torch.tensor(visited)[i])

    x = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(12), dtype=torch.float64)
    for i in range(1, len(visited)):
        ours = diffusion.p_mean_variance_skip(model, x, visited[i], visited[i - 1], clip_denoised=False)
        theirs = respaced.p_mean_variance(on_original, x, torch.full((3,), i), clip_denoised=False)
        for key in ("mean", "pred_x0"):
            torch.testing.assert_close(ours[key], theirs[key].to(x.dtype), atol=2e-6, rtol=2e-6)
        torch.testing.assert_close(ours["log_variance"].to(x.dtype), theirs["log_variance"].to(x.dtype), atol=2e-6, rtol=2e-6)
    step = diffusion.p_mean_variance_skip(model, x, 31, 30)  # adjacent indices: the full chain's own step
    full = diffusion.p_mean_variance(model, x, torch.full((3,), 31))
    assert all(torch.equal(step[k], full[k]) for k in ("mean", "log_variance", "pred_x0"))


def test_respaced_ddpm_with_the_posterior_variance_is_ddim_with_eta_one():
    """With Sigma = beta-tilde' the respaced ancestral step is DDIM's eta = 1 update (Song et al. 2021,
    eq. 16): whole chains from the same x_T and noise agree to the rounding of the process's float32
    buffers (both convert eps to x0 with them), far below the O(0.1) a wrong variance or mean would make."""
    diffusion = GaussianDiffusion(NoiseSchedule.cosine(200))
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(13), dtype=torch.float64)
    for spacing in ("linspace", "trailing"):
        chains = [sample_loop(diffusion, toy_model, sampler, x_T.shape, generator=torch.Generator().manual_seed(14),
                              x_T=x_T, keep_chain=True)[1]
                  for sampler in (DDPMSampler(12, spacing), DDIMSampler(12, eta=1.0, spacing=spacing))]
        assert len(chains[0]) == 13
        for a, b in zip(*chains, strict=True):
            torch.testing.assert_close(a, b, atol=1e-7, rtol=0)


# --- generate: the samples do not depend on how they are batched ----------------------------------


@pytest.mark.parametrize("spec", ["ddpm:6", "ddim:5:1", "dpm++2m-sde:5", "dpm++2m:5"])
def test_samples_do_not_depend_on_the_batch_size_or_on_n(spec):
    """Sample i is a function of the seed and i: batches of 7, 3 or 1 give the same 7 samples, the
    first 4 are what n = 4 gives, and another seed gives other samples. (5 x 5 images: torch draws
    a tensor of fewer than 16 numbers otherwise than a larger one, so only drawing row by row agrees.)"""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(50))
    s = parse_sampler_spec(spec)

    def draw(n, batch, seed=3):
        return generate(toy_model, diffusion, n, (1, 5, 5), s["sampler"], s["steps"], s["eta"], seed=seed,
                        batch_size=batch, device="cpu")[0]

    whole = draw(7, 7)
    assert torch.equal(draw(7, 3), whole) and torch.equal(draw(7, 1), whole)
    assert torch.equal(draw(4, 2), whole[:4])
    assert (draw(7, 7, seed=4) - whole).abs().amax(dim=(1, 2, 3)).min() > 0.1  # every sample


@pytest.mark.parametrize("sampler, steps", [("dpm++2m", 5), ("ddpm", None), ("dpm++2m-sde", 5)])
def test_x_T_is_the_seeds_stream_and_the_step_noise_each_samples_own(sampler, steps):
    """x_T: the first n x C x H x W numbers of the generator seeded with `seed` (so a deterministic
    sampler gives what one generator feeding the batches gave); the noise of every later step: sample
    i's generator from `per_sample_generators`."""
    diffusion = GaussianDiffusion(NoiseSchedule.linear(30))
    ours, _ = generate(toy_model, diffusion, 5, (1, 8, 8), sampler, steps, 0.0, seed=11, batch_size=2, device="cpu")
    x_T = torch.randn((5, 1, 8, 8), generator=make_generator(11))
    expected = diffusion.sample(toy_model, (5, 1, 8, 8), make_sampler(sampler, steps=steps), x_T=x_T,
                                generator=per_sample_generators(11, 5))
    assert torch.equal(ours, expected)


def test_per_sample_generators_are_distinct_streams_fixed_by_seed_and_index():
    first = [torch.randn(3, generator=g) for g in per_sample_generators(5, 4)]
    again = [torch.randn(3, generator=g) for g in per_sample_generators(5, 6)][:4]
    other = [torch.randn(3, generator=g) for g in per_sample_generators(6, 4)]
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert len({tuple(x.tolist()) for x in first + other}) == 8


def test_one_generator_per_row_or_a_clear_error():
    diffusion = GaussianDiffusion(NoiseSchedule.linear(10))
    gens = per_sample_generators(0, 3)
    rows = diffusion.randn((3, 2, 4), gens)
    assert torch.equal(rows[1], torch.randn((2, 4), generator=per_sample_generators(0, 3)[1]))
    with pytest.raises(ValueError, match="2 generators for a batch of 3: give one per sample"):
        diffusion.randn((3, 2, 4), gens[:2])
