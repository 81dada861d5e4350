"""The U-Net that predicts the noise: Ho et al. 2020 (Appendix B), as in improved-diffusion.

Read top to bottom:

1. `UNetConfig`: every size of the network, presets ("tiny" for CPU demos, "cifar10" for the
   paper's 35.7 M-parameter model), JSON round-trip and validation.
2. `timestep_embedding`: the sinusoidal embedding of the step index t (Transformer style), and
   `dropout_`, a cheaper dropout for the CPU.
3. The building blocks: `ResBlock` (GroupNorm, SiLU, conv, time injection, dropout, conv, skip),
   `Attention` (single- or multi-head self-attention over the H*W positions), `Downsample`,
   `Upsample`.
4. `UNet`: conv_in -> down path (res blocks, attention, downsampling, every output kept as a skip)
   -> middle (res, attention, res) -> up path (concatenate a skip, res block, attention,
   upsampling) -> GroupNorm, SiLU, conv_out.

Class-conditional (`num_classes` K > 0, for classifier-free guidance, guidance.py): an embedding
table of K + 1 rows, the last one the null class, whose row for the label is added to the time
embedding before its SiLU, as diffusers' UNet2DModel does with `num_class_embeds`. The table is
built after every other layer, so a conditional and an unconditional U-Net drawn from the same
seed share all their other weights.

The layout of the network follows Ho et al.'s TensorFlow code: the time MLP maps the sinusoidal
embedding of width `base_channels` to `time_embed_mult * base_channels`; each residual block adds
a linear projection of SiLU(time embedding) after its first convolution; each level of the down
path has `num_res_blocks` blocks and each level of the up path one more (it also consumes the skip
of the downsampling step). The last convolution of every residual block, the output projection of
every attention layer, and the final convolution start at zero (Ho et al. and iDDPM do this), so
the untrained network outputs exactly 0: it predicts eps = 0.

Around the convolutions the network avoids work a CPU would pay for: a cheaper dropout
(`dropout_`), in-place adds and activations where autograd allows them, one fused q/k/v
projection, SiLU(time embedding) once per forward. It runs in channels-last layout (NHWC), which
makes the attention's [B, H*W, C] view free; set `model.memory_format = torch.contiguous_format`
for NCHW. What each choice is worth, measured against diffusers: benchmarks/README.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import UserError

# -----------------------------------------------------------------------------
# Configuration


@dataclass
class UNetConfig:
    """Every size of the U-Net. Build one with `UNetConfig.preset(name, **overrides)`."""

    in_channels: int = 1  # image channels: 1 (MNIST) or 3 (RGB)
    out_channels: int | None = None  # None -> in_channels; pass 2*C for a learned variance
    image_size: int = 28  # square images of image_size x image_size
    base_channels: int = 32  # width of the first level ("ch" in Ho et al.)
    channel_mults: tuple[int, ...] = (1, 2, 2)  # width of level i = base_channels * channel_mults[i]
    num_res_blocks: int = 2  # residual blocks per level on the down path (up path: one more)
    attention_resolutions: tuple[int, ...] = (7,)  # feature-map sizes that get self-attention
    dropout: float = 0.1  # dropout inside every residual block
    num_heads: int = 1  # attention heads (Ho et al. use 1)
    time_embed_mult: int = 4  # time-embedding width = time_embed_mult * base_channels
    norm_groups: int = 32  # GroupNorm groups (every width must be divisible by it)
    num_classes: int = 0  # 0: unconditional; K: a class embedding of K + 1 rows (the last: the null class)

    def __post_init__(self) -> None:
        # JSON and TOML give lists; the config holds tuples so that it stays hashable and printable.
        self.channel_mults = tuple(int(m) for m in self.channel_mults)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)

    # --- presets -------------------------------------------------------------

    @classmethod
    def preset(cls, name: str, **overrides) -> "UNetConfig":
        """A named configuration with fields overridden, validated.

        - "tiny": 1.1 M parameters, for CPU demos on 28x28 MNIST (3 levels: 28 -> 14 -> 7, widths
          32/64/64, one res block per level, attention at the lowest resolution). One block per
          level rather than Ho et al.'s two, so more steps fit in a CPU time budget.
        - "cifar10": Ho et al.'s CIFAR-10 model, 35.7 M parameters (ch=128, mults (1,2,2,2),
          2 res blocks, attention at 16x16, dropout 0.1), for 32x32x3 images on a GPU.

        If `image_size` is overridden and `attention_resolutions` is not, "tiny" keeps its
        attention at the lowest resolution of the new size, "cifar10" at half the image size.
        """
        if name not in PRESETS:
            raise UserError(f"unknown U-Net preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
        base = dict(PRESETS[name])
        if "image_size" in overrides and "attention_resolutions" not in overrides:
            size = int(overrides["image_size"])
            mults = overrides.get("channel_mults", base["channel_mults"])
            if name == "tiny":
                base["attention_resolutions"] = (size // 2 ** (len(mults) - 1),)
            else:
                base["attention_resolutions"] = (size // 2,)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise UserError(f"unknown U-Net config key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        base.update(overrides)
        config = cls(**base)
        config.validate()
        return config

    # --- JSON round-trip -----------------------------------------------------

    def to_dict(self) -> dict:
        """A JSON-ready dict (tuples become lists)."""
        d = asdict(self)
        d["channel_mults"] = list(self.channel_mults)
        d["attention_resolutions"] = list(self.attention_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """The inverse of `to_dict`; unknown keys are a UserError naming them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise UserError(f"unknown U-Net config key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        config = cls(**d)
        config.validate()
        return config

    # --- derived sizes and validation ----------------------------------------

    @property
    def out_ch(self) -> int:
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def resolutions(self) -> tuple[int, ...]:
        """The feature-map size at each level: image_size, image_size/2, ..."""
        return tuple(self.image_size // 2**i for i in range(len(self.channel_mults)))

    def validate(self) -> "UNetConfig":
        """Raise UserError (problem and fix in one line) for a config the U-Net cannot build."""
        for name in ("in_channels", "base_channels", "num_res_blocks", "num_heads", "time_embed_mult", "norm_groups"):
            if int(getattr(self, name)) < 1:
                raise UserError(f"U-Net {name} must be >= 1, got {getattr(self, name)}")
        if self.out_channels is not None and self.out_channels < 1:
            raise UserError(f"U-Net out_channels must be >= 1 (or None for in_channels), got {self.out_channels}")
        if int(self.num_classes) < 0:
            raise UserError(f"U-Net num_classes must be >= 0 (0: unconditional), got {self.num_classes}")
        if not self.channel_mults or min(self.channel_mults) < 1:
            raise UserError(f"U-Net channel_mults must be a non-empty list of positive integers, got {list(self.channel_mults)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"U-Net dropout must be in [0, 1), got {self.dropout}")
        factor = 2 ** (len(self.channel_mults) - 1)
        if self.image_size < factor or self.image_size % factor:
            sizes = supported_sizes(self.channel_mults)
            raise UserError(
                f"image size {self.image_size} does not fit a U-Net with channel_mults {list(self.channel_mults)}: "
                f"it halves the size {len(self.channel_mults) - 1} times, so the size must be a multiple of {factor}; "
                f"supported sizes: {', '.join(map(str, sizes))}, ... (resize the images or use fewer channel_mults)"
            )
        bad = [r for r in self.attention_resolutions if r not in self.resolutions]
        if bad:
            raise UserError(
                f"attention_resolutions {bad} are not feature-map sizes of this U-Net; for image_size "
                f"{self.image_size} the sizes are {list(self.resolutions)}: choose among them"
            )
        for width in sorted({self.base_channels * m for m in self.channel_mults}):
            if width % self.norm_groups:
                raise UserError(
                    f"U-Net width {width} is not divisible by norm_groups={self.norm_groups}; "
                    f"choose base_channels and norm_groups so that every base_channels*mult is a multiple of it"
                )
            if width % self.num_heads:
                raise UserError(f"U-Net width {width} is not divisible by num_heads={self.num_heads}; choose fewer heads")
        return self


def supported_sizes(channel_mults, up_to: int = 64) -> list[int]:
    """The image sizes (<= up_to) a U-Net with these channel multipliers can take."""
    factor = 2 ** (len(tuple(channel_mults)) - 1)
    return list(range(factor, up_to + 1, factor))


PRESETS: dict[str, dict] = {
    "tiny": dict(
        in_channels=1, image_size=28, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1,
        attention_resolutions=(7,), dropout=0.1, num_heads=1, time_embed_mult=4, norm_groups=8,
    ),
    "cifar10": dict(
        in_channels=3, image_size=32, base_channels=128, channel_mults=(1, 2, 2, 2), num_res_blocks=2,
        attention_resolutions=(16,), dropout=0.1, num_heads=1, time_embed_mult=4, norm_groups=32,
    ),
}

# -----------------------------------------------------------------------------
# Time embedding


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of timesteps, as in Ho et al.'s code (from tensor2tensor).

    With half = dim // 2 and frequencies f_i = max_period ** (-i / (half - 1)), i = 0..half-1,
    the embedding of t is [sin(t * f_0), ..., sin(t * f_{half-1}), cos(t * f_0), ..., cos(t * f_{half-1})]
    (zero-padded by one column if dim is odd). t: [B] integer or float; returns float32 [B, dim].
    """
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1)
    freqs = torch.exp(-math.log(max_period) * exponent)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


# -----------------------------------------------------------------------------
# Building blocks


def dropout_(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Dropout that may overwrite x, with a cheaper mask than F.dropout's on the CPU.

    F.dropout on the CPU draws its mask with `bernoulli_`, a visible share of a training step on
    these small nets (measured in benchmarks/README.md, "Cheaper dropout"). Here one
    32-bit random integer gives two 15-bit uniforms u in [0, 32768); an element is dropped when
    u < round(p * 32768), and kept ones are scaled by 1 / (1 - round(p * 32768) / 32768), so the
    expectation is exactly x (the drop rate is p up to 1/32768: 0.100006 for p = 0.1). The global
    torch generator is used, so seeding and RNG-state checkpoints work as with F.dropout. Other
    devices (and odd layouts) use F.dropout.
    """
    if not training or p == 0.0:
        return x
    dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)
    if x.device.type != "cpu" or not dense or x.numel() % 2:
        return F.dropout(x, p, True)
    threshold = round(p * 32768)
    bits = torch.empty(x.numel() // 2, dtype=torch.int32).random_().view(torch.int16)  # random_: [0, 2**31)
    keep = bits.bitwise_and_(0x7FFF).ge_(threshold).as_strided(x.shape, x.stride())
    return x.mul_(keep.to(x.dtype).mul_(32768 / (32768 - threshold)))


def zero_(module: nn.Module) -> nn.Module:
    """Set a layer's weight and bias to zero (so the block starts as the identity)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GroupNorm -> SiLU -> conv3x3 -> + time -> GroupNorm -> SiLU -> dropout -> conv3x3 (zero) + skip."""

    def __init__(self, in_ch: int, out_ch: int, temb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = nn.GroupNorm(groups, out_ch)
        self.dropout_p = dropout
        self.conv2 = zero_(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        # Ho et al. use a 1x1 convolution ("nin_shortcut") when the width changes.
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        # temb is SiLU(time embedding), computed once in UNet.forward.
        # The in-place ops below save a fresh allocation each (costly for big CPU tensors). They are
        # safe for autograd: a convolution's backward needs its input, not its output, and SiLU's
        # backward needs its input, so the outputs of conv and SiLU may be overwritten. Without
        # gradients (sampling), the SiLUs work in place too.
        inplace = not torch.is_grad_enabled()
        h = self.conv1(F.silu(self.norm1(x), inplace=inplace))
        h += self.temb_proj(temb)[:, :, None, None]
        h = self.conv2(dropout_(F.silu(self.norm2(h), inplace=inplace), self.dropout_p, self.training))
        return h.add_(self.skip(x))


class Attention(nn.Module):
    """Self-attention over the H*W positions with a residual connection (output projection zeroed)."""

    def __init__(self, ch: int, num_heads: int, groups: int):
        super().__init__()
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(groups, ch)
        self.qkv = nn.Linear(ch, 3 * ch)  # one matmul for q, k and v
        self.proj = zero_(nn.Linear(ch, ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]; a free view in channels-last
        q, k, v = self.qkv(h).view(B, H * W, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, C/heads], scaled by 1/sqrt(C/heads)
        h = self.proj(h.transpose(1, 2).reshape(B, H * W, C))
        return x + h.transpose(1, 2).view(B, C, H, W)


class Downsample(nn.Module):
    """Halve H and W with a stride-2 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour upsampling, then a 3x3 convolution."""

    def __init__(self, ch: int):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Block(nn.Module):
    """One step of a path: a residual block, then optional attention, then optional upsampling."""

    def __init__(self, res: ResBlock, attn: Attention | None = None, up: Upsample | None = None):
        super().__init__()
        self.res, self.attn, self.up = res, attn, up

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.res(x, temb)
        if self.attn is not None:
            h = self.attn(h)
        if self.up is not None:
            h = self.up(h)
        return h


# -----------------------------------------------------------------------------
# The U-Net


class UNet(nn.Module):
    """eps_theta(x_t, t): [B, C, H, W] and [B] timesteps -> [B, out_channels, H, W]."""

    def __init__(self, config: UNetConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config
        ch, temb_dim, G = c.base_channels, c.base_channels * c.time_embed_mult, c.norm_groups

        def res(i, o):
            return ResBlock(i, o, temb_dim, c.dropout, G)

        def attn(width, resolution):
            return Attention(width, c.num_heads, G) if resolution in c.attention_resolutions else None

        self.time_mlp = nn.Sequential(nn.Linear(ch, temb_dim), nn.SiLU(), nn.Linear(temb_dim, temb_dim))
        self.conv_in = nn.Conv2d(c.in_channels, ch, 3, padding=1)

        # Down path. Every block's output is kept for the up path (skip_widths tracks their widths).
        self.down = nn.ModuleList()
        skip_widths, width = [ch], ch
        for level, mult in enumerate(c.channel_mults):
            resolution = c.resolutions[level]
            for _ in range(c.num_res_blocks):
                self.down.append(Block(res(width, ch * mult), attn(ch * mult, resolution)))
                width = ch * mult
                skip_widths.append(width)
            if level != len(c.channel_mults) - 1:
                self.down.append(Downsample(width))
                skip_widths.append(width)

        self.mid = nn.ModuleList([Block(res(width, width), Attention(width, c.num_heads, G)), Block(res(width, width))])

        # Up path: num_res_blocks + 1 blocks per level, each taking one skip, deepest level first.
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.channel_mults))):
            resolution = c.resolutions[level]
            for i in range(c.num_res_blocks + 1):
                upsample = Upsample(ch * mult) if (level != 0 and i == c.num_res_blocks) else None
                self.up.append(Block(res(width + skip_widths.pop(), ch * mult), attn(ch * mult, resolution), upsample))
                width = ch * mult

        self.norm_out = nn.GroupNorm(G, width)
        self.conv_out = zero_(nn.Conv2d(width, c.out_ch, 3, padding=1))
        # Channels-last (NHWC) by default: it makes the attention's [B, HW, C] view free. Set
        # torch.contiguous_format to run in NCHW; it changes speed only, never the result.
        self.memory_format = torch.channels_last
        self.class_embed = nn.Embedding(c.num_classes + 1, temb_dim) if c.num_classes else None

    @property
    def null_class(self) -> int | None:
        """The label of "no class" (the last row of the class embedding); None when unconditional."""
        return self.config.num_classes if self.config.num_classes else None

    def forward(self, x: torch.Tensor, t: torch.Tensor, class_labels: torch.Tensor | None = None) -> torch.Tensor:
        """eps (or x0, v) for x [B, C, H, W] at steps t ([B] or a scalar); `class_labels` [B] (or a scalar)
        in 0..num_classes, num_classes being the null class, which None means for a conditional U-Net."""
        B = x.shape[0]
        t = torch.as_tensor(t, device=x.device)
        if t.ndim == 0:
            t = t.expand(B)
        emb = self.time_mlp(timestep_embedding(t, self.config.base_channels).to(x.dtype))
        if self.class_embed is not None:
            emb = emb + self.class_embed(self._labels(class_labels, B, x.device))
        elif class_labels is not None:
            raise UserError("this U-Net is unconditional (num_classes 0): it takes no class labels")
        temb = F.silu(emb)
        # The memory layout is chosen once here and every layer below keeps it (see memory_format).
        h = self.conv_in(x.contiguous(memory_format=self.memory_format))
        skips = [h]
        for block in self.down:
            h = block(h, temb)
            skips.append(h)
        for block in self.mid:
            h = block(h, temb)
        for block in self.up:
            h = block(torch.cat([h, skips.pop()], dim=1), temb)
        return self.conv_out(F.silu(self.norm_out(h), inplace=not torch.is_grad_enabled())).contiguous()

    def _labels(self, class_labels: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        """The labels as a LongTensor [B]: None -> the null class, a scalar -> repeated."""
        if class_labels is None:
            return torch.full((batch,), self.config.num_classes, dtype=torch.long, device=device)
        labels = torch.as_tensor(class_labels, device=device).long()
        return labels.expand(batch) if labels.ndim == 0 else labels

    # --- reporting -------------------------------------------------------------

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    @torch.no_grad()
    def flops_per_image(self) -> int:
        """FLOPs of one forward pass on one image, counted as 2 x multiply-accumulates.

        Counted (with forward hooks on a batch-1 pass): every convolution
        (2 * H_out * W_out * C_out * C_in * k * k), every linear layer (2 * in * out, the time MLP
        and projections included) and the two attention matmuls, Q K^T and A V (2 * 2 * (HW)^2 * C).
        Not counted: biases, GroupNorm, SiLU, softmax, additions, concatenation, upsampling.
        """
        total = 0

        def conv_hook(m, inp, out):
            nonlocal total
            total += 2 * out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

        def linear_hook(m, inp, out):
            nonlocal total
            total += 2 * out.numel() * m.in_features

        def attn_hook(m, inp, out):
            nonlocal total
            _, C, H, W = inp[0].shape
            total += 2 * 2 * (H * W) ** 2 * C

        hooks = []
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                hooks.append(m.register_forward_hook(conv_hook))
            elif isinstance(m, nn.Linear):
                hooks.append(m.register_forward_hook(linear_hook))
            elif isinstance(m, Attention):
                hooks.append(m.register_forward_hook(attn_hook))
        was_training = self.training
        try:
            self.eval()
            p = next(self.parameters())
            c = self.config
            self(torch.zeros(1, c.in_channels, c.image_size, c.image_size, device=p.device, dtype=p.dtype),
                 torch.zeros(1, dtype=torch.long, device=p.device))
        finally:
            for h in hooks:
                h.remove()
            self.train(was_training)
        return int(total)
