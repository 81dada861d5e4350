"""Tests for the U-Net (src/diffprompt/diffusion/unet.py). Fast: small configs, batch 2."""

import json
import math

import pytest
import torch

from diffprompt.diffusion.choices import UNET_PRESETS
from diffprompt.diffusion.unet import (
    PRESETS,
    Attention,
    ResBlock,
    UNet,
    UNetConfig,
    supported_sizes,
    timestep_embedding,
)
from diffprompt.errors import UserError


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These models are tiny: one thread is faster than two on a busy 2-core machine (no OpenMP spinning)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(**overrides) -> UNetConfig:
    """The tiny preset, narrowed so that every test stays fast."""
    base = dict(base_channels=16, norm_groups=8)
    base.update(overrides)
    return UNetConfig.preset("tiny", **base)


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every parameter small random values (the zero-initialised layers included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("size", [8, 28, 32])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_shape_every_size_and_channel_count(size, channels):
    model = randomize_(UNet(small(image_size=size, in_channels=channels)))
    x = torch.randn(2, channels, size, size)
    out = model(x, torch.tensor([0, 999]))
    assert out.shape == (2, channels, size, size)
    assert out.is_contiguous()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [8, 28, 32])
def test_learned_variance_gets_2c_outputs(size):
    model = UNet(small(image_size=size, in_channels=3, out_channels=6))
    out = model(torch.randn(2, 3, size, size), torch.tensor([3, 4]))
    assert out.shape == (2, 6, size, size)


def test_learned_variance_channels_split_into_eps_and_the_variance_interpolation():
    """A randomised 2C-channel U-Net: p_mean_variance takes eps from channels [0, C) and v from
    [C, 2C), log Sigma = (v+1)/2 log beta_t + (1-v)/2 log beta-tilde_t (iDDPM eq. 15), recomputed
    here from the betas in float64; tolerance 1e-5 for the float32 buffers."""
    from diffprompt.diffusion.process import GaussianDiffusion
    from diffprompt.diffusion.schedule import NoiseSchedule

    schedule = NoiseSchedule.linear(50)
    diffusion = GaussianDiffusion(schedule, prediction="eps", variance="learned_range")
    model = randomize_(UNet(small(image_size=8, in_channels=3, out_channels=6)), seed=1).eval()
    x_t, t = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(2)), torch.tensor([4, 37])
    with torch.no_grad():
        out = model(x_t, t)
        got = diffusion.p_mean_variance(model, x_t, t, clip_denoised=False)
    eps, v = out[:, :3].double(), out[:, 3:].double()
    assert v.std() > 0.05 and (eps - v).abs().max() > 0.05  # both halves vary, and differ
    betas = schedule.betas.double()
    ab = torch.cumprod(1 - betas, 0)
    ab_prev = torch.cat([torch.ones(1, dtype=torch.float64), ab[:-1]])
    b, a, a_prev = (z[t][:, None, None, None] for z in (betas, ab, ab_prev))
    x = x_t.double()
    x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    mean = b * a_prev.sqrt() / (1 - a) * x0 + (1 - a_prev) * (1 - b).sqrt() / (1 - a) * x
    beta_tilde = b * (1 - a_prev) / (1 - a)
    log_var = (v + 1) / 2 * b.log() + (1 - v) / 2 * beta_tilde.log()
    torch.testing.assert_close(got["model_output"], out, rtol=0, atol=0)
    torch.testing.assert_close(got["pred_x0"].double(), x0, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["mean"].double(), mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["log_variance"].double(), log_var, rtol=1e-5, atol=1e-5)
    assert got["log_variance"].std() > 0.01  # the variance varies per pixel, as v does


def test_timestep_may_be_scalar_or_float():
    model = randomize_(UNet(small(image_size=8))).eval()
    x = torch.randn(2, 1, 8, 8)
    ref = model(x, torch.tensor([7, 7]))
    assert torch.equal(model(x, torch.tensor(7)), ref)
    assert torch.allclose(model(x, torch.tensor([7.0, 7.0])), ref)


def test_cifar10_preset_has_ho_et_al_parameter_count():
    config = UNetConfig.preset("cifar10")
    assert (config.base_channels, config.channel_mults, config.num_res_blocks) == (128, (1, 2, 2, 2), 2)
    assert config.attention_resolutions == (16,) and config.dropout == 0.1
    with torch.device("meta"):
        n = UNet(config).num_parameters()
    assert abs(n - 35.7e6) / 35.7e6 < 0.01, n


def tiny_parameters_by_hand(c_in: int = 1, ch: int = 32, temb: int = 128) -> int:
    """The "tiny" preset's parameters counted from its layout: widths 32/64/64 at 28/14/7, one res
    block per level down, two up, attention at 7x7 and in the middle."""
    def conv(i, o, k=3):
        return i * o * k * k + o

    def linear(i, o):
        return i * o + o

    def norm(c):
        return 2 * c

    def res(i, o):  # norm, conv, time projection, norm, conv, and a 1x1 skip when the width changes
        return norm(i) + conv(i, o) + linear(temb, o) + norm(o) + conv(o, o) + (conv(i, o, 1) if i != o else 0)

    def attn(c):  # norm, fused q/k/v, output projection
        return norm(c) + linear(c, 3 * c) + linear(c, c)

    w1, w2 = ch, 2 * ch
    time_mlp = linear(ch, temb) + linear(temb, temb)
    # down: [res 32->32, down], [res 32->64, down], [res 64->64 + attn]; skips 32, 32, 32, 64, 64, 64
    down = res(w1, w1) + conv(w1, w1) + res(w1, w2) + conv(w2, w2) + res(w2, w2) + attn(w2)
    middle = res(w2, w2) + attn(w2) + res(w2, w2)
    # up, deepest first, each block on [h, skip]: 7x7 (attn; the second upsamples), 14x14 (the second upsamples), 28x28
    up = (res(w2 + w2, w2) + attn(w2) + res(w2 + w2, w2) + attn(w2) + conv(w2, w2)
          + res(w2 + w2, w2) + res(w2 + w1, w2) + conv(w2, w2)
          + res(w2 + w1, w1) + res(w1 + w1, w1))
    return time_mlp + conv(c_in, ch) + down + middle + up + norm(w1) + conv(w1, c_in)


def test_tiny_preset_has_exactly_the_hand_counted_parameters():
    model = UNet(UNetConfig.preset("tiny"))
    assert model.num_parameters() == tiny_parameters_by_hand() == 1_112_801
    assert model.num_parameters(trainable_only=True) == 1_112_801


def test_unsupported_size_names_the_supported_ones():
    with pytest.raises(UserError) as e:
        UNetConfig.preset("tiny", image_size=30)
    msg = str(e.value)
    assert "30" in msg and "multiple of 4" in msg
    for s in ("8", "28", "32"):
        assert s in msg.split("supported sizes:")[1]
    with pytest.raises(UserError, match=r"multiple of 8.*supported sizes: 8, 16, 24, 32"):
        UNetConfig.preset("cifar10", image_size=28)
    assert supported_sizes((1, 2, 2), up_to=32) == [4, 8, 12, 16, 20, 24, 28, 32]
    assert supported_sizes((1, 2, 2, 2), up_to=32) == [8, 16, 24, 32]


def test_other_bad_configs_are_user_errors():
    with pytest.raises(UserError, match="attention_resolutions"):
        UNetConfig.preset("tiny", attention_resolutions=(16,))
    with pytest.raises(UserError, match="norm_groups"):
        UNetConfig.preset("tiny", base_channels=20, norm_groups=8)
    with pytest.raises(UserError, match="unknown U-Net preset"):
        UNetConfig.preset("huge")
    with pytest.raises(UserError, match="dropout"):
        UNetConfig.preset("tiny", dropout=1.5)


def test_preset_moves_attention_with_the_image_size():
    assert UNetConfig.preset("tiny", image_size=32).attention_resolutions == (8,)
    assert UNetConfig.preset("cifar10", image_size=64).attention_resolutions == (32,)


def test_config_json_round_trip_and_unknown_keys():
    config = UNetConfig.preset("tiny", in_channels=3, out_channels=6, image_size=32)
    d = json.loads(json.dumps(config.to_dict()))
    assert UNetConfig.from_dict(d) == config
    with pytest.raises(UserError, match="bogus"):
        UNetConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(UserError, match="bogus"):
        UNetConfig.preset("tiny", bogus=1)


def test_timestep_embedding_is_the_sinusoidal_formula():
    t = torch.tensor([0, 1, 17, 999])
    for dim in (8, 7, 32):
        emb = timestep_embedding(t, dim)
        assert emb.shape == (4, dim)
        half = dim // 2
        for row, tv in enumerate(t.tolist()):
            for i in range(half):
                f = 10000.0 ** (-i / (half - 1))
                assert emb[row, i].item() == pytest.approx(math.sin(tv * f), abs=1e-4)
                assert emb[row, half + i].item() == pytest.approx(math.cos(tv * f), abs=1e-4)
            if dim % 2:
                assert emb[row, -1].item() == 0.0


def conv_flops(hw, cin, cout, k):
    return 2 * hw * cout * cin * k * k


def test_flops_match_a_hand_count():
    # One level (no resampling), one res block, attention only in the middle block.
    config = UNetConfig(in_channels=1, image_size=8, base_channels=8, channel_mults=(1,), num_res_blocks=1,
                        attention_resolutions=(), dropout=0.0, num_heads=1, time_embed_mult=4, norm_groups=4)
    hw, c, temb = 64, 8, 32
    time_mlp = 2 * c * temb + 2 * temb * temb
    conv_in = conv_flops(hw, 1, c, 3)
    res_same = conv_flops(hw, c, c, 3) * 2 + 2 * temb * c  # 8 -> 8: two 3x3 convs, the time projection
    res_cat = conv_flops(hw, 2 * c, c, 3) + conv_flops(hw, c, c, 3) + 2 * temb * c + conv_flops(hw, 2 * c, c, 1)
    attention = 2 * hw * c * 3 * c + 2 * hw * c * c + 4 * hw * hw * c  # qkv, proj, QK^T and AV
    conv_out = conv_flops(hw, c, 1, 3)
    # down: 1 block; middle: res+attention, res; up: 2 blocks, each on [h, skip] (16 channels).
    expected = time_mlp + conv_in + res_same + (res_same + attention + res_same) + 2 * res_cat + conv_out
    assert UNet(config).flops_per_image() == expected


def test_flops_grow_with_the_attention_matmuls():
    with_attn = UNet(small(image_size=8, num_res_blocks=2, attention_resolutions=(8,))).flops_per_image()
    without = UNet(small(image_size=8, num_res_blocks=2, attention_resolutions=())).flops_per_image()
    c, hw = 16, 64  # two attention layers at 8x8 on the down path (16 channels), three on the up path
    per_layer = lambda ch: 2 * hw * ch * 4 * ch + 4 * hw * hw * ch
    assert with_attn - without == 5 * per_layer(c)


def test_eval_is_deterministic_and_train_uses_dropout():
    model = randomize_(UNet(small(image_size=8, dropout=0.5)))
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([10, 500])
    model.eval()
    assert torch.equal(model(x, t), model(x, t))
    model.train()
    a, b = model(x, t), model(x, t)
    assert not torch.allclose(a, b)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x, t), model(x, t))


def test_zero_init_gives_exactly_zero_output_and_learns():
    torch.manual_seed(0)
    model = UNet(small(image_size=8))
    for m in model.modules():
        if isinstance(m, ResBlock):
            assert not m.conv2.weight.any() and not m.conv2.bias.any()
        if isinstance(m, Attention):
            assert not m.proj.weight.any()
    assert not model.conv_out.weight.any()
    x = torch.randn(4, 1, 8, 8)
    t = torch.randint(0, 1000, (4,))
    out = model(x, t)
    assert torch.equal(out, torch.zeros_like(out))
    # One optimizer step on the eps loss moves the output away from zero and lowers the loss.
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loss0 = (model(x, t) - x).pow(2).mean()
    loss0.backward()
    opt.step()
    with torch.no_grad():
        out1 = model.eval()(x, t)
    assert out1.abs().max() > 0
    assert (out1 - x).pow(2).mean() < loss0


def test_in_place_ops_keep_outputs_and_gradients_exact():
    # The residual blocks work in place where autograd allows it, and the SiLUs too when there is
    # no gradient: the output must not depend on grad mode, and gradients must match finite differences.
    config = UNetConfig(in_channels=1, image_size=8, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
                        attention_resolutions=(4,), dropout=0.0, norm_groups=4)
    model = randomize_(UNet(config)).double().eval()
    x, t = torch.randn(2, 1, 8, 8, dtype=torch.float64), torch.tensor([3, 600])
    with torch.no_grad():
        a = model(x, t)
    assert torch.allclose(model(x, t), a, atol=1e-12)
    small_x = x[:1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda inp: model(inp, t[:1]), (small_x,), eps=1e-6, atol=1e-5)


def test_fast_dropout_rate_scale_and_gradient():
    from diffprompt.diffusion.unet import dropout_

    torch.manual_seed(0)
    n, p = 2**20, 0.1
    x = torch.ones(16, 16, 64, 64).contiguous(memory_format=torch.channels_last)  # n elements
    y = dropout_(x.clone(), p, training=True)
    assert y.is_contiguous(memory_format=torch.channels_last)
    # Drop rate: binomial, std sqrt(p(1-p)/n) = 2.9e-4; mean of y: std sqrt(p/(1-p)/n) = 3.3e-4. 5 sigma each.
    assert abs((y == 0).float().mean().item() - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(y.mean().item() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)
    values = torch.unique(y)
    assert len(values) == 2 and values[0] == 0.0
    assert values[1].item() == pytest.approx(32768 / (32768 - round(p * 32768)), rel=1e-6)
    assert dropout_(x, p, training=False) is x
    # The gradient is the same mask and scale.
    a = torch.randn(4, 8, 6, 6, requires_grad=True)
    out = dropout_(a * 1.0, 0.5, training=True)
    out.sum().backward()
    assert torch.equal(a.grad, (out != 0).float() * 2.0)
    # Seeded: the same mask again.
    torch.manual_seed(1)
    m1 = dropout_(torch.ones(1000), 0.3, True)
    torch.manual_seed(1)
    assert torch.equal(m1, dropout_(torch.ones(1000), 0.3, True))


def test_the_cli_lists_every_preset():
    """`--unet` offers the torch-free list of names; it must name the presets the U-Net has."""
    assert UNET_PRESETS == tuple(PRESETS)
