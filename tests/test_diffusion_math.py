"""The diffusion maths, checked as maths: closed forms, Bayes' rule, an oracle model, exact bounds.

Statistical checks use tolerances derived from the sample count (5 standard errors); the rest
compare against formulas computed independently here in float64 with `math`.
"""

import math

import pytest
import torch

from diffprompt.diffusion import (
    GaussianDiffusion,
    NoiseSchedule,
    approx_standard_normal_cdf,
    discretized_gaussian_log_likelihood,
    normal_kl,
    predict_eps_from_v,
    predict_eps_from_x0,
    predict_v,
    predict_x0_from_eps,
    predict_x0_from_v,
)
from diffprompt.diffusion.gaussian import log_normal_cdf_difference, mean_flat, standard_normal_cdf
from diffprompt.diffusion.samplers import spaced_timesteps
from diffprompt.errors import UserError

LN2 = math.log(2.0)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grid_image(shape, seed=0):
    """A random image on the 8-bit grid scaled to [-1, 1], with both end values present."""
    k = torch.randint(0, 256, shape, generator=gen(seed))
    k.view(-1)[0], k.view(-1)[1] = 0, 255
    return k.float() * (2.0 / 255.0) - 1.0


def alpha_bar_by_hand(schedule):
    """alpha-bar_t = prod_{s<=t} (1 - beta_s), as Python floats."""
    out, prod = [], 1.0
    for b in schedule.betas.tolist():
        prod *= 1.0 - b
        out.append(prod)
    return out


class Oracle:
    """The exact denoiser for data that is one fixed image x*: from x_t it returns the true eps, x0 or v."""

    def __init__(self, x_star, schedule, prediction):
        self.x_star = x_star.double()
        self.ab = schedule.alphas_cumprod
        self.prediction = prediction

    def __call__(self, x_t, t):
        ab = self.ab[t.cpu()].view(-1, *([1] * (x_t.ndim - 1)))
        alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
        eps = (x_t.double() - alpha * self.x_star) / sigma
        out = {"eps": eps, "x0": self.x_star.expand_as(eps), "v": alpha * eps - sigma * self.x_star}
        return out[self.prediction].float()


def smooth_model(out_channels=None, scale=0.7):
    """A fixed, nonlinear, t-dependent stand-in for a network (not the oracle)."""

    def model(x_t, t):
        tt = (t.float() + 1).view(-1, *([1] * (x_t.ndim - 1))) / 100.0
        y = scale * torch.tanh(x_t * (1 + tt)) + 0.1 * torch.sin(3 * x_t + tt)
        if out_channels is not None and out_channels > x_t.shape[1]:
            y = torch.cat([y, torch.tanh(x_t.flip(1) + tt)], dim=1)  # v in [-1, 1]
        return y

    return model


# --- schedules -----------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda num_timesteps: NoiseSchedule.linear(num_timesteps), lambda num_timesteps: NoiseSchedule.cosine(num_timesteps),
                                  lambda num_timesteps: NoiseSchedule.linear_scaled(num_timesteps)])
@pytest.mark.parametrize("num_timesteps", [10, 1000])
def test_alphas_cumprod_strictly_decreasing_in_unit_interval(make, num_timesteps):
    s = make(num_timesteps)
    ab = s.alphas_cumprod
    assert s.num_timesteps == num_timesteps and s.betas.dtype == torch.float64 and ab.dtype == torch.float64
    assert torch.all(ab[1:] < ab[:-1])
    assert torch.all((ab > 0) & (ab < 1))
    assert torch.allclose(s.alphas, 1 - s.betas)
    assert s.alphas_cumprod_prev[0] == 1 and torch.equal(s.alphas_cumprod_prev[1:], ab[:-1])
    assert torch.allclose(ab, torch.tensor(alpha_bar_by_hand(s), dtype=torch.float64), rtol=1e-12)


def test_linear_schedule_endpoints_and_spacing():
    s = NoiseSchedule.linear(1000, 1e-4, 0.02)
    assert s.betas[0].item() == pytest.approx(1e-4, abs=1e-15)
    assert s.betas[-1].item() == pytest.approx(0.02, abs=1e-15)
    d = s.betas.diff()
    assert torch.allclose(d, torch.full_like(d, (0.02 - 1e-4) / 999), rtol=1e-9)
    scaled = NoiseSchedule.linear_scaled(100)
    assert scaled.betas[0].item() == pytest.approx(1e-3) and scaled.betas[-1].item() == pytest.approx(0.2)


@pytest.mark.parametrize("num_timesteps", [50, 1000])
def test_cosine_schedule_meets_its_definition(num_timesteps):
    s_off = 0.008
    sched = NoiseSchedule.cosine(num_timesteps, s=s_off)

    def f(t):
        return math.cos((t / num_timesteps + s_off) / (1 + s_off) * math.pi / 2) ** 2

    assert sched.betas.max() <= 0.999 + 1e-15
    unclipped = (sched.betas < 0.999).tolist()
    # the clip can only bite at the very end, where alpha-bar -> 0
    first_clipped = unclipped.index(False) if False in unclipped else num_timesteps
    assert all(unclipped[:first_clipped]) and first_clipped >= num_timesteps - 1
    ab = sched.alphas_cumprod.tolist()
    for i in range(first_clipped):
        assert ab[i] == pytest.approx(f(i + 1) / f(0), rel=1e-9, abs=1e-15)  # index i is the paper's t = i+1


def test_cosine_alpha_bar_takes_floats_and_tensors_alike():
    """f(u) = cos^2(pi/2 (u + s) / (1 + s)), by hand, for a Python float and a tensor; s defaults to 0.008."""
    from diffprompt.diffusion.schedule import cosine_alpha_bar, cosine_betas

    for u, s_off in [(0.0, 0.008), (0.37, 0.008), (0.9, 0.1), (1.0, 0.0)]:
        want = math.cos((u + s_off) / (1 + s_off) * math.pi / 2) ** 2
        assert cosine_alpha_bar(u, s_off) == pytest.approx(want, rel=1e-14, abs=1e-30)
        assert cosine_alpha_bar(torch.tensor(u, dtype=torch.float64), s_off).item() == pytest.approx(want, rel=1e-14, abs=1e-30)
    assert cosine_alpha_bar(0.37) == pytest.approx(math.cos(0.378 / 1.008 * math.pi / 2) ** 2, rel=1e-14)
    assert torch.equal(cosine_betas(12), cosine_betas(12, 0.008))


def test_cosine_schedule_uses_its_offset_s_and_accepts_zero():
    """alpha-bar_t = f(t/T) / f(0) for the s asked for; s = 0 is allowed (f(0) = 1), s < 0 refused."""
    T = 10
    for s_off in (0.0, 0.05):
        ab = NoiseSchedule.cosine(T, s=s_off).alphas_cumprod.tolist()
        f = [math.cos((t / T + s_off) / (1 + s_off) * math.pi / 2) ** 2 for t in range(T + 1)]
        for i in range(T - 1):  # the last beta is clipped at 0.999
            assert ab[i] == pytest.approx(f[i + 1] / f[0], rel=1e-12)
    assert NoiseSchedule.cosine(T, s=0.05).to_dict() == {"name": "cosine", "num_timesteps": T, "s": 0.05}
    with pytest.raises(UserError, match=r"^cosine schedule offset s must be >= 0, got -0\.01; the paper uses 0\.008$"):
        NoiseSchedule.cosine(T, s=-0.01)


def test_schedules_default_to_1000_steps():
    for make in (NoiseSchedule.linear, NoiseSchedule.cosine, NoiseSchedule.linear_scaled):
        assert make().num_timesteps == 1000
    assert NoiseSchedule.linear_scaled(20).params == {"num_timesteps": 20}


def test_schedule_repr_names_the_recipe():
    assert repr(NoiseSchedule.linear(20)) == "NoiseSchedule.linear(num_timesteps=20, beta_start=0.0001, beta_end=0.02)"
    assert repr(NoiseSchedule.cosine(30, s=0.01)) == "NoiseSchedule.cosine(num_timesteps=30, s=0.01)"
    assert repr(NoiseSchedule.linear_scaled(20)) == "NoiseSchedule.linear_scaled(num_timesteps=20)"
    assert repr(NoiseSchedule(torch.tensor([0.1, 0.2, 0.3]))) == "NoiseSchedule.custom(num_timesteps=3)"


def test_schedule_from_dict_keeps_options_and_reads_old_configs():
    s = NoiseSchedule.from_dict({"name": "linear", "num_timesteps": 20, "beta_start": 2e-4, "beta_end": 0.05})
    assert torch.equal(s.betas, NoiseSchedule.linear(20, 2e-4, 0.05).betas)
    assert NoiseSchedule.from_dict({"name": "cosine", "T": 15}).num_timesteps == 15  # the key before the rename
    assert NoiseSchedule.from_dict({"name": "cosine"}).num_timesteps == 1000
    with pytest.raises(UserError, match=r"^a schedule config needs a 'name' field \(linear, linear_scaled or cosine\)$"):
        NoiseSchedule.from_dict({"num_timesteps": 20})


def test_prior_term_is_negligible_for_the_linear_schedule():
    d = GaussianDiffusion(NoiseSchedule.linear(1000))
    worst = torch.ones(2, 3, 4, 4)  # |x0| = 1 maximises the prior KL
    worst[1] *= -1
    prior = d.prior_bpd(worst)
    assert torch.all(prior > 0) and torch.all(prior < 1e-4)
    # and by hand: KL(N(sqrt(ab) x, 1 - ab) || N(0, 1)) for x = 1
    ab = alpha_bar_by_hand(d.schedule)[-1]
    kl = 0.5 * (-1 - math.log(1 - ab) + (1 - ab) + ab)
    assert prior[0].item() == pytest.approx(kl / LN2, rel=1e-3)


def test_schedule_names_and_round_trip():
    for name in ("linear", "cosine", "linear_scaled"):
        s = NoiseSchedule.from_name(name, 20)
        again = NoiseSchedule.from_dict(s.to_dict())
        assert again.name == name and torch.equal(again.betas, s.betas)
    with pytest.raises(UserError, match="linear.*cosine"):
        NoiseSchedule.from_name("quadratic", 100)
    with pytest.raises(UserError):
        NoiseSchedule.linear(1)
    with pytest.raises(UserError):
        NoiseSchedule.linear(10, beta_start=0.5, beta_end=0.1)


def test_schedule_validation_boundaries_and_messages():
    """T >= 2 (an integer), every beta in the open interval (0, 1), and 0 < beta_start <= beta_end < 1."""
    from diffprompt.diffusion.schedule import linear_betas

    assert torch.equal(linear_betas(5), torch.linspace(1e-4, 0.02, 5, dtype=torch.float64))  # the paper's ends
    assert NoiseSchedule.linear(2).num_timesteps == 2 and NoiseSchedule(torch.tensor([0.1, 0.2])).num_timesteps == 2
    for bad in (1, 2.5):
        with pytest.raises(UserError, match=rf"^the number of diffusion steps T must be an integer >= 2, got {bad!r}$"):
            NoiseSchedule.linear(bad)
    with pytest.raises(UserError, match=r"^a noise schedule needs at least 2 steps, got T=1; use T >= 2$"):
        NoiseSchedule(torch.tensor([0.1]))
    # whatever comes in is stored as float64 on the CPU
    for given in (torch.tensor([0.1, 0.2], dtype=torch.float32), [0.1, 0.2]):
        assert NoiseSchedule(given).betas.dtype == torch.float64
    for bad in ([0.0, 0.5], [0.5, 1.0], [0.5, 1.5], [-0.1, 0.5]):
        with pytest.raises(UserError, match=r"^every beta of a noise schedule must lie in \(0, 1\); check beta_start/beta_end$"):
            NoiseSchedule(torch.tensor(bad, dtype=torch.float64))
    assert torch.all(NoiseSchedule.linear(3, 0.01, 0.01).betas == 0.01)  # equal ends: a constant schedule
    for start, end in [(0.0, 0.02), (0.01, 1.0), (0.01, 1.5), (0.02, 0.01)]:
        with pytest.raises(UserError, match=rf"^linear schedule needs 0 < beta_start <= beta_end < 1, got {start}, {end}; "
                                            r"the paper uses 1e-4 and 0\.02$"):
            NoiseSchedule.linear(10, start, end)


def test_schedule_names_are_forgiving_and_refusals_list_the_choices():
    assert NoiseSchedule.from_name("linear").num_timesteps == 1000
    assert NoiseSchedule.from_name("Linear-Scaled", 20).name == "linear_scaled"
    with pytest.raises(UserError, match=r"^unknown noise schedule 'quadratic'; choose one of: linear, linear_scaled, cosine$"):
        NoiseSchedule.from_name("quadratic", 100)
    with pytest.raises(UserError, match=r"^bad options for the cosine schedule: .*beta_start"):
        NoiseSchedule.from_name("cosine", 10, beta_start=0.1)


# --- Gaussian helpers ---------------------------------------------------------------------------
def test_normal_kl_matches_torch_distributions_and_is_nonnegative():
    g = gen(1)
    m1, m2 = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    lv1, lv2 = torch.randn(1000, generator=g, dtype=torch.float64), torch.randn(1000, generator=g, dtype=torch.float64)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    kl = normal_kl(m1, lv1, m2, lv2)
    assert torch.allclose(kl, ref, rtol=1e-10, atol=1e-12)
    assert torch.all(kl >= 0)
    assert normal_kl(m1, lv1, m1, lv1).abs().max() < 1e-15


def test_normal_kl_takes_scalar_log_variances_in_the_dtype_and_device_of_its_tensors():
    """Python-float log-variances are computed in float64 with float64 means (not float32), and a
    log-variance tensor is moved to the first tensor's device ("meta" stands in for a GPU)."""
    m1 = torch.tensor([0.0, 0.3, -1.7], dtype=torch.float64)
    kl = normal_kl(m1, 0.3, 0.1, -0.2)
    want = [0.5 * (-0.2 - 0.3 + (math.exp(0.3) + (m - 0.1) ** 2) / math.exp(-0.2) - 1) for m in m1.tolist()]
    assert kl.dtype == torch.float64
    assert torch.allclose(kl, torch.tensor(want, dtype=torch.float64), rtol=1e-13, atol=0)
    on_meta = normal_kl(torch.zeros(3, device="meta"), torch.tensor([0.1, 0.2, 0.3]), 0.0, 0.0)
    assert on_meta.device.type == "meta" and on_meta.shape == (3,)


def test_normal_cdfs():
    x = torch.linspace(-6, 6, 2001, dtype=torch.float64)
    exact = torch.tensor([0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x.tolist()], dtype=torch.float64)
    assert torch.allclose(standard_normal_cdf(x), exact, atol=1e-14)
    assert (approx_standard_normal_cdf(x) - exact).abs().max() < 2e-4


def test_log_cdf_difference_is_accurate_in_both_tails():
    for lo, hi in [(-0.3, 0.2), (1.0, 1.5), (-2.0, -1.0), (7.0, 7.01), (-9.0, -8.99)]:
        got = log_normal_cdf_difference(torch.tensor(lo, dtype=torch.float64), torch.tensor(hi, dtype=torch.float64))
        # reference: erfc-based differences stay accurate in both tails
        if lo >= 0:
            ref = math.log(0.5 * (math.erfc(lo / math.sqrt(2)) - math.erfc(hi / math.sqrt(2))))
        elif hi <= 0:
            ref = math.log(0.5 * (math.erfc(-hi / math.sqrt(2)) - math.erfc(-lo / math.sqrt(2))))
        else:
            ref = math.log(0.5 * (math.erf(hi / math.sqrt(2)) - math.erf(lo / math.sqrt(2))))
        assert got.item() == pytest.approx(ref, rel=1e-9)
        assert math.isfinite(got.item())
    # deep tail: no reference underflows there, but the value must be finite and close to log pdf * width
    got = log_normal_cdf_difference(torch.tensor(-40.01, dtype=torch.float64), torch.tensor(-40.0, dtype=torch.float64))
    approx = -0.5 * 40.005**2 - 0.5 * math.log(2 * math.pi) + math.log(0.01)
    assert got.item() == pytest.approx(approx, abs=0.05)


def test_log_cdf_difference_of_an_empty_interval_is_a_finite_floor():
    """Phi(a) - Phi(a) = 0: the CDF ratio is clamped to 1 - 1e-30, giving log(min(Phi(a), 1 - Phi(a))) + log(1e-30)
    (an interval above zero is reflected first), a finite floor rather than NaN or -inf."""
    for a in (-3.0, 0.0, 0.5, 4.0):
        got = log_normal_cdf_difference(torch.tensor(a, dtype=torch.float64), torch.tensor(a, dtype=torch.float64))
        phi = 0.5 * math.erfc(abs(a) / math.sqrt(2))  # the smaller tail
        assert got.item() == pytest.approx(math.log(phi) + math.log(1e-30), rel=1e-12)


def test_discretized_gaussian_on_a_coarse_grid_opens_only_the_end_bins():
    """half_bin = 1/2: levels -1, 0, 1 own (-inf, -1/2], [-1/2, 1/2], [1/2, inf); a value exactly halfway,
    +-1/2, is scored as an interior bin of width 1, not as an open end bin."""
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    mean, std = 0.2, 0.7
    x = torch.tensor([-1.0, 0.0, 1.0, -0.5, 0.5], dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(x, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(math.log(std), dtype=torch.float64), half_bin=0.5)
    want = [phi((-0.5 - mean) / std), phi((0.5 - mean) / std) - phi((-0.5 - mean) / std), 1 - phi((0.5 - mean) / std),
            phi((0.0 - mean) / std) - phi((-1.0 - mean) / std), phi((1.0 - mean) / std) - phi((0.0 - mean) / std)]
    assert torch.allclose(logp.exp(), torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    assert logp[:3].exp().sum().item() == pytest.approx(1.0, abs=1e-14)


@pytest.mark.parametrize("mean,std", [(0.0, 0.05), (0.31, 0.003), (-0.98, 0.2), (0.999, 1e-3), (0.2, 3.0)])
def test_discretized_gaussian_is_a_distribution_over_the_256_levels(mean, std):
    levels = torch.arange(256, dtype=torch.float64) * (2 / 255) - 1
    logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(math.log(std), dtype=torch.float64))
    assert torch.all(logp <= 0)
    assert logp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
    # one interior level and both end levels, by hand from erf
    phi = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    k = 128
    x = levels[k].item()
    assert logp[k].exp().item() == pytest.approx(phi((x + 1 / 255 - mean) / std) - phi((x - 1 / 255 - mean) / std), abs=1e-12)
    assert logp[0].exp().item() == pytest.approx(phi((-1 + 1 / 255 - mean) / std), abs=1e-12)
    assert logp[255].exp().item() == pytest.approx(1 - phi((1 - 1 / 255 - mean) / std), abs=1e-12)


def test_discretized_gaussian_stays_finite_far_from_the_mean():
    x = torch.tensor([-1.0, 0.0, 1.0])
    logp = discretized_gaussian_log_likelihood(x, torch.tensor([1.0, 5.0, -1.0]), torch.tensor(math.log(1e-3)))
    assert torch.all(torch.isfinite(logp)) and torch.all(logp < -1e5)


# --- parameterizations --------------------------------------------------------------------------
def test_parameterization_helpers_round_trip():
    g = gen(2)
    x0 = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    eps = torch.randn(6, 3, 4, 4, generator=g, dtype=torch.float64)
    ab = torch.rand(6, 1, 1, 1, generator=g, dtype=torch.float64) * 0.998 + 0.001
    alpha, sigma = ab.sqrt(), (1 - ab).sqrt()
    x_t = alpha * x0 + sigma * eps
    v = predict_v(x0, eps, alpha, sigma)
    assert torch.allclose(predict_x0_from_eps(x_t, eps, alpha, sigma), x0, atol=1e-9)
    assert torch.allclose(predict_eps_from_x0(x_t, x0, alpha, sigma), eps, atol=1e-9)
    assert torch.allclose(predict_x0_from_v(x_t, v, alpha, sigma), x0, atol=1e-12)
    assert torch.allclose(predict_eps_from_v(x_t, v, alpha, sigma), eps, atol=1e-12)
    # x0 -> eps -> x0
    assert torch.allclose(predict_x0_from_eps(x_t, predict_eps_from_x0(x_t, x0, alpha, sigma), alpha, sigma), x0, atol=1e-9)
    # v is the velocity d x_t / d phi for x_t = cos(phi) x0 + sin(phi) eps
    phi = torch.atan2(sigma, alpha)
    assert torch.allclose(v, -torch.sin(phi) * x0 + torch.cos(phi) * eps, atol=1e-12)


# --- forward process ----------------------------------------------------------------------------
def test_iterated_forward_steps_match_the_closed_form():
    d = GaussianDiffusion(NoiseSchedule.linear_scaled(50))
    n = 20000
    x0 = torch.tensor([-0.8, 0.1, 0.9]).view(1, 3, 1, 1).expand(n, 3, 1, 1)
    g = gen(3)
    ab = alpha_bar_by_hand(d.schedule)
    x = x0
    for t in range(50):
        x = d.q_step(x, t, generator=g)
        if t not in (0, 9, 49):
            continue
        closed = d.q_sample(x0, torch.full((n,), t), generator=g)
        mean_true = math.sqrt(ab[t]) * x0[0].flatten().double()
        var_true = 1 - ab[t]
        for samples in (x, closed):
            s = samples.double().reshape(n, 3)
            # 5 standard errors: SE(mean) = sqrt(var / n); SE(sample variance) = var * sqrt(2 / (n - 1))
            assert torch.all((s.mean(0) - mean_true).abs() < 5 * math.sqrt(var_true / n))
            assert torch.all((s.var(0) - var_true).abs() < 5 * var_true * math.sqrt(2 / (n - 1)))


def test_q_sample_and_q_step_are_the_stated_formulas():
    d = GaussianDiffusion(NoiseSchedule.cosine(30))
    x0, noise = grid_image((4, 1, 3, 3)), torch.randn(4, 1, 3, 3, generator=gen(4))
    t = torch.tensor([0, 5, 17, 29])
    ab = torch.tensor(alpha_bar_by_hand(d.schedule))[t].view(-1, 1, 1, 1)
    assert torch.allclose(d.q_sample(x0, t, noise), (ab.sqrt() * x0 + (1 - ab).sqrt() * noise).float(), atol=1e-6)
    b = d.schedule.betas[t].view(-1, 1, 1, 1)
    assert torch.allclose(d.q_step(x0, t, noise), ((1 - b).sqrt() * x0 + b.sqrt() * noise).float(), atol=1e-6)


def test_forward_noise_is_drawn_from_the_generator_in_the_images_dtype():
    """Without `noise`, q_sample and q_step draw it as torch.randn(x.shape, generator, dtype=x.dtype)."""
    d = GaussianDiffusion(NoiseSchedule.cosine(30))
    x0, t = grid_image((2, 1, 3, 3)).double(), torch.tensor([4, 20])
    noise = torch.randn(2, 1, 3, 3, generator=gen(5), dtype=torch.float64)
    drawn = d.q_sample(x0, t, generator=gen(5))
    assert drawn.dtype == torch.float64 and torch.equal(drawn, d.q_sample(x0, t, noise))
    assert torch.equal(d.q_step(x0, t, generator=gen(5)), d.q_step(x0, t, noise))


def test_q_mean_variance_is_the_closed_form():
    d = GaussianDiffusion(NoiseSchedule.linear_scaled(25))
    x0, t = grid_image((3, 2, 2, 2), seed=6), torch.tensor([0, 11, 24])
    ab = torch.tensor(alpha_bar_by_hand(d.schedule), dtype=torch.float64)[t].view(-1, 1, 1, 1)
    mean, var, logvar = d.q_mean_variance(x0, t)
    assert var.shape == logvar.shape == mean.shape == x0.shape
    assert torch.allclose(mean.double(), ab.sqrt() * x0.double(), rtol=1e-6, atol=1e-7)
    assert torch.allclose(var.double(), (1 - ab).expand_as(var), rtol=1e-6)
    assert torch.allclose(logvar.double(), (1 - ab).log().expand_as(logvar), rtol=1e-6, atol=1e-7)


def test_q_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x0): complete the square independently."""
    sched = NoiseSchedule.linear_scaled(40)
    d = GaussianDiffusion(sched)
    betas = sched.betas.tolist()
    ab = alpha_bar_by_hand(sched)
    x0 = torch.tensor([-0.7, 0.0, 0.55, 1.0]).view(1, 4, 1, 1).expand(3, 4, 1, 1)
    x_t = torch.tensor([0.3, -1.2, 0.9, 2.0]).view(1, 4, 1, 1).expand(3, 4, 1, 1) * torch.tensor([1.0, 0.5, -1.0]).view(3, 1, 1, 1)
    for t in (1, 7, 39):
        mean, var, logvar = d.q_posterior(x0, x_t, torch.full((3,), t))
        a_t, ab_prev = 1 - betas[t], ab[t - 1]
        precision = a_t / betas[t] + 1 / (1 - ab_prev)
        want_mean = (math.sqrt(a_t) * x_t.double() / betas[t] + math.sqrt(ab_prev) * x0.double() / (1 - ab_prev)) / precision
        assert torch.allclose(mean.double(), want_mean, rtol=1e-5, atol=1e-6)
        assert torch.allclose(var.double(), torch.full_like(want_mean, 1 / precision), rtol=1e-5)
        assert torch.allclose(logvar.double(), torch.full_like(want_mean, -math.log(precision)), rtol=1e-5)
    # at index 0 the posterior is the point mass x0; its log-variance is clipped to index 1's
    mean, var, logvar = d.q_posterior(x0, x_t, torch.zeros(3, dtype=torch.long))
    assert torch.allclose(mean, x0) and torch.all(var == 0)
    assert torch.allclose(logvar, d.q_posterior(x0, x_t, torch.ones(3, dtype=torch.long))[2])


def test_q_posterior_matches_numerical_bayes_on_a_grid():
    sched = NoiseSchedule.linear_scaled(20)
    d = GaussianDiffusion(sched)
    t, x0v, xtv = 6, 0.4, -0.25
    b = sched.betas[t].item()
    ab_prev = alpha_bar_by_hand(sched)[t - 1]
    grid = torch.linspace(-3, 3, 600001, dtype=torch.float64)
    log_joint = (-(xtv - math.sqrt(1 - b) * grid) ** 2 / (2 * b)
                 - (grid - math.sqrt(ab_prev) * x0v) ** 2 / (2 * (1 - ab_prev)))
    w = torch.exp(log_joint - log_joint.max())
    w = w / w.sum()
    num_mean = (w * grid).sum().item()
    num_var = (w * (grid - num_mean) ** 2).sum().item()
    mean, var, _ = d.q_posterior(torch.full((1, 1), x0v), torch.full((1, 1), xtv), torch.tensor([t]))
    assert mean.item() == pytest.approx(num_mean, abs=1e-5)
    assert var.item() == pytest.approx(num_var, rel=1e-4)


# --- the bound with an oracle -------------------------------------------------------------------
def decoder_bpd_by_hand(x_star, var):
    """-log2 P(x* | mean = x*) per dim for the discretized Gaussian N(x*, var), from math.erf."""
    z = 1 / (255 * math.sqrt(var) * math.sqrt(2))
    p_interior = math.erf(z)  # Phi(1/(255 s)) - Phi(-1/(255 s))
    p_edge = 0.5 * (1 + math.erf(z))  # the end bins reach to +-inf
    total = 0.0
    for x in x_star.flatten().tolist():
        total += -math.log2(p_edge if abs(x) > 0.999 else p_interior)
    return total / x_star.numel()


def prior_bpd_by_hand(x_star, ab_T):
    vals = [0.5 * (-1 - math.log(1 - ab_T) + (1 - ab_T) + ab_T * x * x) for x in x_star.flatten().tolist()]
    return sum(vals) / len(vals) / LN2


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_point_mass_oracle_has_zero_kl_terms_and_hand_computed_total(prediction, schedule):
    sched = NoiseSchedule.from_name(schedule, 100)
    d = GaussianDiffusion(sched, prediction=prediction, variance="fixed_small")
    x_star = grid_image((1, 2, 4, 4), seed=5)
    x0 = x_star.expand(3, -1, -1, -1)
    terms = d.nll_terms(Oracle(x_star, sched, prediction), x0, generator=gen(6), t_batch=8)
    assert terms["vb_bpd"].shape == (3, 100)
    kl = terms["vb_bpd"][:, 1:]
    assert kl.abs().max().item() < 1e-9  # float32 round-off only (seen: ~1e-12)
    assert torch.all(kl >= 0)
    ab = alpha_bar_by_hand(sched)
    b = sched.betas.tolist()
    var1 = b[1] * (1 - ab[0]) / (1 - ab[1])  # beta-tilde at index 1, the clipped decoder variance
    l0 = decoder_bpd_by_hand(x_star, var1)
    lT = prior_bpd_by_hand(x_star, ab[-1])
    assert torch.allclose(terms["vb_bpd"][:, 0].double(), torch.full((3,), l0, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(terms["prior_bpd"].double(), torch.full((3,), lT, dtype=torch.float64), rtol=1e-4)
    total = d.nll_bpd(Oracle(x_star, sched, prediction), x0, generator=gen(7))
    assert torch.allclose(total.double(), torch.full((3,), l0 + lT, dtype=torch.float64), rtol=1e-5)
    assert torch.allclose(terms["total_bpd"], terms["prior_bpd"] + terms["vb_bpd"].sum(1))


def test_kl_terms_of_a_wrong_constant_prediction_match_the_closed_form():
    """A model that always predicts x0 = y: KL_t = coef1_t^2 (x* - y)^2 / (2 beta-tilde_t), whatever x_t."""
    sched = NoiseSchedule.linear_scaled(30)
    d = GaussianDiffusion(sched, prediction="x0")
    x_star, y = grid_image((2, 1, 3, 3), seed=8), grid_image((1, 1, 3, 3), seed=9)
    model = lambda x_t, t: y.expand_as(x_t)  # noqa: E731
    a = d.nll_terms(model, x_star, generator=gen(1), t_batch=1)["vb_bpd"]
    b = d.nll_terms(model, x_star, generator=gen(2), t_batch=7)["vb_bpd"]
    assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)
    betas, ab = sched.betas.tolist(), alpha_bar_by_hand(sched)
    sq = ((x_star.double() - y.double()) ** 2).reshape(2, -1)
    for t in (1, 12, 29):
        coef1 = betas[t] * math.sqrt(ab[t - 1]) / (1 - ab[t])
        var = betas[t] * (1 - ab[t - 1]) / (1 - ab[t])
        want = (coef1**2 * sq / (2 * var)).mean(1) / LN2
        assert torch.allclose(a[:, t].double(), want, rtol=1e-4)


def test_stratified_bound_estimate_is_exact_with_one_t_per_stratum_and_unbiased_with_fewer():
    """For a constant x0-prediction every term is independent of x_t, so the exact bound is known."""
    sched = NoiseSchedule.linear_scaled(30)
    d = GaussianDiffusion(sched, prediction="x0")
    x_star, y = grid_image((2, 1, 3, 3), seed=8), grid_image((1, 1, 3, 3), seed=9)
    model = lambda x_t, t: y.expand_as(x_t)  # noqa: E731
    exact = d.nll_terms(model, x_star, generator=gen(1), t_batch=30)["total_bpd"].double()
    full = d.nll_estimate(model, x_star, num_t=29, generator=gen(2))
    assert torch.allclose(full, exact, rtol=1e-5)
    # 5 strata: each estimate is random; the mean of n draws is within 4 standard errors
    n = 4000
    draws = d.nll_estimate(model, x_star.repeat(n // 2, 1, 1, 1), num_t=5, generator=gen(3)).view(n // 2, 2)
    mean, se = draws.mean(0), draws.std(0) / math.sqrt(n // 2)
    assert torch.all(se > 0) and torch.all((mean - exact).abs() < 4 * se), (mean, exact, se)


def test_nll_bpd_is_the_total_of_nll_terms_with_the_same_options(monkeypatch, capsys):
    """Defaults: clipped x0, one t per model call, no progress bar; every option is passed through."""
    monkeypatch.setenv("DIFFPROMPT_PROGRESS", "1")  # a bar, if one were made, would show off a terminal
    d = GaussianDiffusion(NoiseSchedule.linear_scaled(12))
    x0 = grid_image((2, 1, 2, 2), seed=31)
    model = smooth_model(scale=3.0)  # eps this large puts x0 estimates outside [-1, 1]: the clip matters

    def terms(**kw):
        return d.nll_terms(model, x0, generator=gen(32), **kw)["total_bpd"]

    assert torch.equal(d.nll_bpd(model, x0, generator=gen(32)), terms(clip_denoised=True, t_batch=1))
    assert capsys.readouterr().err == ""
    unclipped = d.nll_bpd(model, x0, clip_denoised=False, generator=gen(32), t_batch=3, progress=True)
    assert "bits/dim" in capsys.readouterr().err
    assert torch.equal(unclipped, terms(clip_denoised=False, t_batch=3))
    # the options do change the result (the noise is drawn per call, so t_batch changes the draws)
    assert not torch.equal(unclipped, terms(clip_denoised=False, t_batch=1))
    assert not torch.equal(terms(clip_denoised=True, t_batch=3), unclipped)
    centers = torch.tensor([-0.5, 0.5])
    by_class = d.nll_bpd(lambda x, t, y: centers[y].repeat(x.shape[0] // 2).view(-1, 1, 1, 1).expand_as(x),
                         x0, generator=gen(32), model_kwargs={"y": torch.tensor([0, 1])})
    assert by_class.shape == (2,)


def test_t_batch_repeats_only_the_batch_shaped_model_kwargs():
    """With t_batch = k the model sees k * B images: [B, ...] tensors are tiled k times along dim 0,
    anything else (a shorter tensor, a 0-dim tensor, a Python number) is passed as is."""
    d = GaussianDiffusion(NoiseSchedule.linear_scaled(6), prediction="x0")
    centers, y = torch.tensor([-0.5, 0.5]), torch.tensor([0, 1, 1])
    emb = torch.stack([centers[y], torch.zeros(3)], dim=1)  # [B, 2]: each image's value in column 0
    seen = []

    def model(x_t, t, y, emb, centers, scale, gain):
        seen.append((tuple(y.shape), tuple(emb.shape), tuple(centers.shape), scale.ndim, gain))
        assert torch.equal(centers[y], emb[:, 0])
        return (emb[:, 0] * scale * gain).view(-1, 1, 1, 1).expand_as(x_t)  # the exact x0: an oracle

    x0 = centers[y].view(-1, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    kwargs = {"y": y, "emb": emb, "centers": centers, "scale": torch.tensor(1.0), "gain": 1.0}
    terms = d.nll_terms(model, x0, model_kwargs=kwargs, t_batch=4, generator=gen(33))
    assert terms["vb_bpd"][:, 1:].abs().max() < 1e-9
    assert seen == [((12,), (12, 2), (2,), 0, 1.0), ((6,), (6, 2), (2,), 0, 1.0)]  # t = 5..2, then 1..0


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_every_kl_term_is_nonnegative_for_a_random_model(variance):
    d = GaussianDiffusion(NoiseSchedule.cosine(40), prediction="eps", variance=variance)
    x0 = grid_image((3, 2, 4, 4), seed=10)
    terms = d.nll_terms(smooth_model(d.model_output_channels(2)), x0, generator=gen(11), t_batch=40)
    assert torch.all(terms["vb_bpd"] >= -1e-7)  # KL >= 0, and -log P >= 0 for the decoder
    assert torch.all(terms["vb_bpd"][:, 1:].sum(1) > 1e-3)  # and it is not the oracle
    assert torch.all(torch.isfinite(terms["total_bpd"]))


# --- the reverse process ------------------------------------------------------------------------
def test_learned_range_shapes_and_variance_bounds():
    sched = NoiseSchedule.linear_scaled(25)
    d = GaussianDiffusion(sched, variance="learned_range")
    assert d.model_output_channels(3) == 6
    x_t = torch.randn(5, 3, 4, 4, generator=gen(12))
    t = torch.tensor([0, 1, 7, 20, 24])
    betas = sched.betas.tolist()
    ab = alpha_bar_by_hand(sched)
    tilde = [betas[i] * (1 - (ab[i - 1] if i else 1.0)) / (1 - ab[i]) for i in range(25)]
    tilde[0] = tilde[1]  # clipped at index 0
    lo = torch.tensor([tilde[i] for i in t]).view(-1, 1, 1, 1)
    hi = torch.tensor([betas[i] for i in t]).view(-1, 1, 1, 1)
    for v, want in [(-1.0, lo), (1.0, hi)]:
        out = d.p_mean_variance(lambda x, tt, v=v: torch.cat([torch.zeros_like(x), torch.full_like(x, v)], 1), x_t, t)
        assert out["variance"].shape == x_t.shape and out["mean"].shape == x_t.shape
        assert torch.allclose(out["variance"].double(), want.expand_as(x_t).double(), rtol=1e-5)
    v = torch.rand(5, 3, 4, 4, generator=gen(13)) * 2 - 1
    out = d.p_mean_variance(lambda x, tt: torch.cat([x, v], 1), x_t, t)
    assert torch.all(out["variance"] >= lo * (1 - 1e-5)) and torch.all(out["variance"] <= hi * (1 + 1e-5))
    assert out["pred_x0"].shape == x_t.shape and out["model_output"].shape == (5, 6, 4, 4)
    assert torch.all(out["pred_x0"].abs() <= 1)
    with pytest.raises(UserError, match="6 channels"):
        d.p_mean_variance(lambda x, tt: x, x_t, t)


def test_fixed_variances():
    sched = NoiseSchedule.linear(20)
    x_t, t = torch.zeros(2, 1, 2, 2), torch.tensor([0, 10])
    small = GaussianDiffusion(sched, variance="fixed_small").p_mean_variance(lambda x, tt: x, x_t, t)["variance"]
    large = GaussianDiffusion(sched, variance="fixed_large").p_mean_variance(lambda x, tt: x, x_t, t)["variance"]
    b = sched.betas
    tilde1 = (b[1] * b[0] / (1 - (1 - b[0]) * (1 - b[1]))).item()  # beta-tilde_1 = beta_1 (1 - ab_0) / (1 - ab_1)
    assert small[0].flatten()[0].item() == pytest.approx(tilde1, rel=1e-5)
    assert large[0].flatten()[0].item() == pytest.approx(tilde1, rel=1e-5)  # improved-diffusion's index-0 choice
    assert large[1].flatten()[0].item() == pytest.approx(b[10].item(), rel=1e-6)
    assert small[1].flatten()[0].item() < large[1].flatten()[0].item()


def test_hybrid_loss_stops_the_vlb_gradient_at_the_mean():
    d = GaussianDiffusion(NoiseSchedule.cosine(50), prediction="eps", variance="learned_range")
    mean_w = torch.nn.Parameter(torch.tensor(0.3))
    var_w = torch.nn.Parameter(torch.tensor(0.2))

    def model(x_t, t):
        return torch.cat([mean_w * x_t, torch.tanh(var_w * x_t)], dim=1)

    x0 = grid_image((4, 2, 3, 3), seed=14)
    t = torch.tensor([1, 10, 30, 49])
    noise = torch.randn(4, 2, 3, 3, generator=gen(15))
    hybrid = d.training_loss(model, x0, loss_type="hybrid", t=t, noise=noise)
    g_mean, g_var = torch.autograd.grad(hybrid["vlb"].sum(), [mean_w, var_w], allow_unused=True)
    assert g_mean is None or g_mean.abs().item() == 0.0
    assert g_var.abs().item() > 0
    # the full bound does push the mean, so the check above can fail
    vlb = d.training_loss(model, x0, loss_type="vlb", t=t, noise=noise)
    assert torch.autograd.grad(vlb["loss"].sum(), mean_w)[0].abs().item() > 0
    # hybrid = mse + lambda * vlb, and its mean gradient is exactly the MSE's
    assert torch.allclose(hybrid["loss"], hybrid["mse"] + 0.001 * hybrid["vlb"])
    simple = d.training_loss(model, x0, loss_type="simple", t=t, noise=noise)
    hybrid = d.training_loss(model, x0, loss_type="hybrid", t=t, noise=noise)
    assert torch.allclose(torch.autograd.grad(hybrid["loss"].sum(), mean_w)[0],
                          torch.autograd.grad(simple["loss"].sum(), mean_w)[0])


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_simple_loss_is_zero_for_the_oracle_and_matches_its_target(prediction):
    sched = NoiseSchedule.linear_scaled(30)
    d = GaussianDiffusion(sched, prediction=prediction)
    x_star = grid_image((1, 1, 4, 4), seed=16)
    x0 = x_star.expand(6, -1, -1, -1)
    out = d.training_loss(Oracle(x_star, sched, prediction), x0, generator=gen(17))
    assert out["loss"].shape == (6,) and out["t"].shape == (6,)
    assert out["loss"].max().item() < 1e-9
    out = d.training_loss(lambda x, t: torch.zeros_like(x), x0, t=torch.full((6,), 3), noise=torch.ones_like(x0))
    ab = alpha_bar_by_hand(sched)[3]
    target = {"eps": torch.ones_like(x0), "x0": x0,
              "v": math.sqrt(ab) * torch.ones_like(x0) - math.sqrt(1 - ab) * x0}[prediction]
    assert torch.allclose(out["mse"], mean_flat(target**2), rtol=1e-5)


def test_predict_x0_clips_by_default_and_passes_model_kwargs():
    d = GaussianDiffusion(NoiseSchedule.linear(10), prediction="x0")
    x_t, t = torch.zeros(2, 1, 2, 2), torch.tensor([3, 7])

    def model(x, tt, gain):
        return gain * torch.ones_like(x)

    assert torch.equal(d.predict_x0(model, x_t, t, model_kwargs={"gain": 2.5}), torch.ones_like(x_t))
    assert torch.equal(d.predict_x0(model, x_t, t, clip_denoised=False, model_kwargs={"gain": -2.5}),
                       torch.full_like(x_t, -2.5))


def test_training_loss_draws_t_then_the_noise_from_the_generator():
    """Given a generator, t = randint(0, T, [B]) and then noise = randn(x0.shape, dtype=x0.dtype) from it."""
    d = GaussianDiffusion(NoiseSchedule.linear_scaled(20))
    x0, model = grid_image((3, 1, 2, 2), seed=34).double(), smooth_model()
    g = gen(35)
    t = torch.randint(0, 20, (3,), generator=g)
    noise = torch.randn(3, 1, 2, 2, generator=g, dtype=torch.float64)
    drawn = d.training_loss(model, x0, generator=gen(35))
    assert torch.equal(drawn["t"], t)
    assert torch.equal(drawn["loss"], d.training_loss(model, x0, t=t, noise=noise)["loss"])


def test_unweighted_mse_is_a_float_weight_of_one_per_example():
    d = GaussianDiffusion(NoiseSchedule.linear(10))
    t = torch.tensor([0, 3, 9])
    w = d.mse_weight(t)
    assert w.dtype == torch.float32 and torch.equal(w, torch.ones(3))
    assert d.mse_weight(t, 4).shape == (3, 1, 1, 1)
    noise = torch.arange(3.0).view(3, 1, 1, 1).expand(3, 1, 2, 2)  # squared errors 0, 1, 4 per example
    out = d.training_loss(lambda x, tt: torch.zeros_like(x), torch.zeros(3, 1, 2, 2), t=t, noise=noise)
    assert torch.equal(out["mse"], torch.tensor([0.0, 1.0, 4.0]))


def test_hybrid_loss_with_a_fixed_variance_uses_the_weight_asked_for():
    d = GaussianDiffusion(NoiseSchedule.cosine(20), variance="fixed_large", loss_type="hybrid", vlb_weight=0.001)
    x0, t = grid_image((3, 1, 4, 4), seed=36), torch.tensor([0, 5, 19])
    noise, model = torch.randn(3, 1, 4, 4, generator=gen(37)), smooth_model()
    vlb = d.training_loss(model, x0, loss_type="vlb", t=t, noise=noise)["loss"]
    default = d.training_loss(model, x0, t=t, noise=noise)  # the process's own loss type and weight
    assert torch.allclose(default["vlb"], vlb) and torch.allclose(default["loss"], default["mse"] + 0.001 * vlb)
    heavy = d.training_loss(model, x0, t=t, noise=noise, vlb_weight=0.5)
    assert torch.allclose(heavy["loss"], heavy["mse"] + 0.5 * vlb)


def test_vlb_loss_is_T_times_the_bound_term():
    sched = NoiseSchedule.cosine(20)
    d = GaussianDiffusion(sched, variance="fixed_large")
    x0 = grid_image((3, 1, 4, 4), seed=18)
    t, noise = torch.tensor([0, 4, 19]), torch.randn(3, 1, 4, 4, generator=gen(19))
    model = smooth_model()
    out = d.training_loss(model, x0, loss_type="vlb", t=t, noise=noise)
    x_t = d.q_sample(x0, t, noise)
    p = d.p_mean_variance(model, x_t, t, clip_denoised=False)
    assert torch.allclose(out["loss"], 20 * d.vb_term_bpd(x0, x_t, t, p["mean"], p["log_variance"]))


def test_min_snr_and_p2_weightings_match_their_papers_formulas():
    sched = NoiseSchedule.linear(100)
    snr = sched.snr
    p2 = lambda s: 1 / (1 + s) ** 0.5  # Choi et al.'s weight on the eps-MSE, k = 1, gamma = 0.5
    for weighting, prediction, want in [("min_snr", "eps", lambda s: min(s, 5) / s), ("min_snr", "x0", lambda s: min(s, 5)),
                                        ("min_snr", "v", lambda s: min(s, 5) / (s + 1)), ("p2", "eps", p2),
                                        ("p2", "x0", lambda s: s * p2(s)), ("p2", "v", lambda s: s * p2(s) / (s + 1))]:
        d = GaussianDiffusion(sched, prediction=prediction, loss_weighting=weighting, min_snr_gamma=5, p2_gamma=0.5)
        t = torch.tensor([0, 50, 99])
        got = d.mse_weight(t).flatten()
        assert torch.allclose(got.double(), torch.tensor([want(snr[i].item()) for i in t], dtype=torch.float64), rtol=1e-5)


def test_p2_with_gamma_0_is_plain_l_simple_and_its_options_round_trip():
    sched = NoiseSchedule.linear(50)
    t = torch.arange(50)
    flat = GaussianDiffusion(sched, loss_weighting="p2", p2_gamma=0.0).mse_weight(t)
    assert torch.allclose(flat, torch.ones(50), rtol=1e-6)
    d = GaussianDiffusion(sched, loss_weighting="p2", p2_gamma=0.5, p2_k=2.0)
    back = GaussianDiffusion.from_dict(d.to_dict())
    assert (back.p2_gamma, back.p2_k) == (0.5, 2.0) and torch.equal(back.mse_weight(t), d.mse_weight(t))
    w = d.mse_weight(t)  # turned down most where the image is nearly clean (small t)
    assert bool((w[1:] > w[:-1]).all()) and w[0] < 0.02 < 0.5 < w[-1]
    with pytest.raises(UserError, match="p2_k > 0"):
        GaussianDiffusion(sched, loss_weighting="p2", p2_k=0.0)


# --- samplers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_ddim_eta0_returns_the_point_mass_from_any_noise(prediction):
    sched = NoiseSchedule.linear(200)
    d = GaussianDiffusion(sched, prediction=prediction)
    x_star = grid_image((1, 3, 4, 4), seed=20)
    oracle = Oracle(x_star, sched, prediction)
    for steps in (1, 7, 200):
        x_T = 3 * torch.randn(4, 3, 4, 4, generator=gen(steps))
        out = d.sample(oracle, (4, 3, 4, 4), sampler="ddim", steps=steps, eta=0.0, x_T=x_T)
        assert torch.allclose(out, x_star.expand_as(out), atol=1e-5)


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ancestral_sampler_ends_at_the_point_mass(variance):
    sched = NoiseSchedule.cosine(60)
    d = GaussianDiffusion(sched, prediction="eps", variance=variance)
    x_star = grid_image((1, 1, 5, 5), seed=21)
    out, chain = d.sample(Oracle(x_star, sched, "eps"), (3, 1, 5, 5), generator=gen(22), return_chain=True)
    assert len(chain) == 61 and torch.equal(chain[-1], out)
    assert torch.allclose(out, x_star.expand_as(out), atol=1e-5)
    assert chain[0].std() > 0.5  # it started from noise


def test_ddim_with_eta1_and_all_steps_is_the_ddpm_sampler():
    sched = NoiseSchedule.linear_scaled(40)
    d = GaussianDiffusion(sched, prediction="eps", variance="fixed_small")
    model = smooth_model(scale=0.5)
    a = d.sample(model, (3, 2, 4, 4), sampler="ddpm", generator=gen(23), clip_denoised=False)
    b = d.sample(model, (3, 2, 4, 4), sampler="ddim", steps=40, eta=1.0, generator=gen(23), clip_denoised=False)
    assert torch.allclose(a, b, atol=1e-4)
    c = d.sample(model, (3, 2, 4, 4), sampler="ddim", steps=40, eta=0.0, generator=gen(23), clip_denoised=False)
    assert (a - c).abs().max() > 1e-2  # eta matters


def test_sampling_is_deterministic_given_a_generator_and_returns_chains():
    d = GaussianDiffusion(NoiseSchedule.linear_scaled(30))
    model = smooth_model()
    for sampler, steps, n in [("ddpm", None, 30), ("ddim", 6, 6)]:
        a = d.sample(model, (2, 1, 4, 4), sampler=sampler, steps=steps, eta=0.5, generator=gen(24))
        b, chain, preds = d.sample(model, (2, 1, 4, 4), sampler=sampler, steps=steps, eta=0.5,
                                   generator=gen(24), return_pred_x0=True)
        assert torch.equal(a, b) and len(chain) == n + 1 and len(preds) == n
        assert not torch.equal(a, d.sample(model, (2, 1, 4, 4), sampler=sampler, steps=steps, eta=0.5, generator=gen(25)))


def test_training_timesteps_are_uniform_draws_on_the_device_asked_for():
    d = GaussianDiffusion(NoiseSchedule.linear(10))
    t = d.sample_timesteps(500, generator=gen(38))
    assert torch.equal(t, torch.randint(0, 10, (500,), generator=gen(38))) and set(t.tolist()) == set(range(10))
    assert d.sample_timesteps(4).device == d.betas.device and d.sample_timesteps(4).dtype == torch.long
    # drawn on the generator's device (the CPU), then moved; "meta" stands in for a GPU here
    assert d.sample_timesteps(4, device="meta", generator=gen(38)).device.type == "meta"
    assert d.sample_timesteps(4, device="meta").device.type == "meta"
    assert d.sampling_timesteps() == list(range(9, -1, -1))  # ddpm by default


def test_ddim_timesteps_are_evenly_spaced_and_include_both_ends():
    assert spaced_timesteps(1000, 1) == [999]
    assert spaced_timesteps(10, 10) == list(range(9, -1, -1))
    ts = spaced_timesteps(1000, 50)
    assert ts[0] == 999 and ts[-1] == 0 and len(set(ts)) == 50 and ts == sorted(ts, reverse=True)
    gaps = [a - b for a, b in zip(ts, ts[1:])]
    assert max(gaps) - min(gaps) <= 1
    d = GaussianDiffusion(NoiseSchedule.linear(100))
    assert d.sampling_timesteps("ddim", 5) == [99, 74, 50, 25, 0]
    assert d.sampling_timesteps("ddpm") == list(range(99, -1, -1))


# --- bad input ----------------------------------------------------------------------------------
def test_bad_options_raise_user_errors_that_list_the_choices():
    sched = NoiseSchedule.linear(10)
    with pytest.raises(UserError, match="eps, x0, v"):
        GaussianDiffusion(sched, prediction="score")
    with pytest.raises(UserError, match="fixed_small, fixed_large, learned_range"):
        GaussianDiffusion(sched, variance="learned")
    with pytest.raises(UserError, match="none, min_snr, p2"):
        GaussianDiffusion(sched, loss_weighting="snr")
    d = GaussianDiffusion(sched)
    model = smooth_model()
    with pytest.raises(UserError, match=r"^unknown loss type 'l1'; choose one of: simple, vlb, hybrid$"):
        d.training_loss(model, torch.zeros(1, 1, 2, 2), loss_type="l1")
    for kwargs, pattern in [({"sampler": "ddim", "steps": 11}, "cannot exceed"),
                            ({"sampler": "ddim", "steps": 0}, ">= 1"),
                            ({"sampler": "ddim", "eta": -0.1}, "eta"),
                            ({"sampler": "ddpm", "eta": -1.0}, "eta"),
                            ({"sampler": "ddpm", "steps": 11}, "cannot exceed"),
                            ({"sampler": "euler"}, "ddpm, ddim")]:
        with pytest.raises(UserError, match=pattern):
            d.sample(model, (1, 1, 2, 2), **kwargs)


def test_module_holds_float32_buffers_and_no_state():
    d = GaussianDiffusion(NoiseSchedule.cosine(10), prediction="v", variance="learned_range")
    assert d.state_dict() == {} and list(d.parameters()) == []
    assert d.betas.dtype == torch.float32 and d.posterior_mean_coef1.dtype == torch.float32
    again = GaussianDiffusion.from_dict(d.to_dict())
    assert again.to_dict() == d.to_dict() and torch.equal(again.betas, d.betas)
    # the float32 constants were computed in float64: sqrt(1 - alpha-bar_0) is accurate to float32 precision
    ab0 = 1 - d.schedule.betas[0].item()
    assert d.sqrt_one_minus_alphas_cumprod[0].item() == pytest.approx(math.sqrt(1 - ab0), rel=1e-7)


def test_model_kwargs_reach_the_model_in_every_path():
    """Class labels (any batch-shaped keyword) follow their images, also when t_batch stacks timesteps."""
    sched = NoiseSchedule.linear_scaled(12)
    d = GaussianDiffusion(sched, prediction="x0")
    centers = torch.tensor([-0.5, 0.5])
    seen = []

    def model(x_t, t, y):
        seen.append(y.shape[0] == x_t.shape[0])
        return centers[y].view(-1, 1, 1, 1).expand_as(x_t)  # predicts x0 = the class center

    y = torch.tensor([0, 1, 1])
    x0 = centers[y].view(-1, 1, 1, 1).expand(3, 1, 2, 2).contiguous()
    terms = d.nll_terms(model, x0, model_kwargs={"y": y}, t_batch=5, generator=gen(26))
    assert terms["vb_bpd"][:, 1:].abs().max() < 1e-9  # each image got its own label: the oracle again
    out, chain = d.sample(model, (3, 1, 2, 2), sampler="ddim", steps=4, model_kwargs={"y": y},
                          generator=gen(27), return_chain=True)
    assert torch.allclose(out, x0, atol=1e-6) and len(chain) == 5
    loss = d.training_loss(model, x0, model_kwargs={"y": y}, generator=gen(28))["loss"]
    assert loss.max() < 1e-12 and all(seen)


def test_x_T_starts_the_chain():
    d = GaussianDiffusion(NoiseSchedule.linear(20))
    x_T = torch.randn(2, 1, 3, 3, generator=gen(29))
    _, chain = d.sample(smooth_model(), (2, 1, 3, 3), sampler="ddim", steps=3, x_T=x_T, return_chain=True)
    assert torch.equal(chain[0], x_T)
    with pytest.raises(UserError, match="shape"):
        d.sample(smooth_model(), (3, 1, 3, 3), x_T=x_T)


def test_steps_none_means_all_T_for_both_samplers():
    d = GaussianDiffusion(NoiseSchedule.linear(25))
    assert d.sampling_timesteps("ddim") == d.sampling_timesteps("ddpm") == list(range(24, -1, -1))
