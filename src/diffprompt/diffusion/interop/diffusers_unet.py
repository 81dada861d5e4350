"""Our U-Net in diffusers' terms: the `UNet2DModel` config that builds the same network, and where
each of our weights lives in it.

Both networks follow Ho et al.'s layout (unet.py), so they match layer for layer:

    ours                                   UNet2DModel
    time_mlp.0, time_mlp.2                 time_embedding.linear_1, time_embedding.linear_2
    conv_in, norm_out, conv_out            conv_in, conv_norm_out, conv_out
    down.K (block i of level L)            down_blocks.L.resnets.i, down_blocks.L.attentions.i
    down.K (the Downsample of level L)     down_blocks.L.downsamplers.0
    mid.0.res, mid.0.attn, mid.1.res       mid_block.resnets.0, mid_block.attentions.0, mid_block.resnets.1
    up.K (block i, J-th level from below)  up_blocks.J.resnets.i, .attentions.i, .upsamplers.0
    res: norm1 conv1 temb_proj norm2 conv2 skip     norm1 conv1 time_emb_proj norm2 conv2 conv_shortcut
    attn: norm, qkv (q, k, v stacked), proj         group_norm, to_q + to_k + to_v, to_out.0
    class_embed (a conditional U-Net's)    class_embedding (num_class_embeds = num_classes + 1)

A class-conditional U-Net adds its class embedding to the time embedding before the SiLU, as
UNet2DModel does with `num_class_embeds` and `class_embed_type=None`: forward(x, t, class_labels=y)
computes what ours computes with the same labels (our null class is the last row).

The settings that make UNet2DModel compute what ours computes: the sinusoidal embedding with sin
first and frequencies exp(-ln(10^4) i / (half - 1)) (`flip_sin_to_cos=False`, `freq_shift=1`), a
stride-2 convolution padded by 1 on each side (`downsample_padding=1`), GroupNorm eps 1e-5 (torch's
default, which ours uses). Every UNet2DModel argument is written out, so that the exported network
does not depend on diffusers' defaults.

Nothing here imports diffusers: the configs are dicts and the weights plain tensors.
"""

from __future__ import annotations

import torch

from ...errors import UserError
from ..unet import UNet, UNetConfig

NORM_EPS = 1e-5  # torch.nn.GroupNorm's default, which our U-Net uses
RES_NAMES = {"temb_proj": "time_emb_proj", "skip": "conv_shortcut"}  # the others keep their names
ATTN_NAMES = {"norm": "group_norm", "proj": "to_out.0", "qkv": ("to_q", "to_k", "to_v")}


# --- the config ------------------------------------------------------------------------------


def diffusers_unet_config(c: UNetConfig) -> dict:
    """Every argument of the `UNet2DModel` that computes what `UNet(c)` computes.

    A UserError names the part diffusers cannot express: UNet2DModel has one attention head
    width for all its attention layers, ours one head count.
    """
    widths = [c.base_channels * m for m in c.channel_mults]
    attends = [r in c.attention_resolutions for r in c.resolutions]
    return {
        "_class_name": "UNet2DModel",
        "sample_size": c.image_size, "in_channels": c.in_channels, "out_channels": c.out_ch,
        "center_input_sample": False, "time_embedding_type": "positional",
        "time_embedding_dim": c.base_channels * c.time_embed_mult, "freq_shift": 1, "flip_sin_to_cos": False,
        "down_block_types": ["AttnDownBlock2D" if a else "DownBlock2D" for a in attends],
        "mid_block_type": "UNetMidBlock2D",
        "up_block_types": ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)],
        "block_out_channels": widths, "layers_per_block": c.num_res_blocks, "mid_block_scale_factor": 1,
        "downsample_padding": 1, "downsample_type": "conv", "upsample_type": "conv", "dropout": c.dropout,
        "act_fn": "silu", "attention_head_dim": _attention_head_dim(c, widths, attends),
        "norm_num_groups": c.norm_groups, "attn_norm_num_groups": None, "norm_eps": NORM_EPS,
        "resnet_time_scale_shift": "default", "add_attention": True, "class_embed_type": None,
        "num_class_embeds": c.num_classes + 1 if c.num_classes else None,
    }


def _attention_head_dim(c: UNetConfig, widths: list[int], attends: list[bool]) -> int | None:
    """None (one head as wide as the layer) for one head; else the one head width all layers share."""
    if c.num_heads == 1:
        return None
    attended = sorted({w for w, a in zip(widths, attends, strict=True) if a} | {widths[-1]})  # the middle attends
    if len(attended) > 1:
        raise UserError(f"num_heads={c.num_heads} with attention at widths {attended}: UNet2DModel gives all its "
                        "attention layers one head width, so it cannot express this network "
                        "(export works with num_heads=1, or with attention only at the deepest width)")
    return attended[0] // c.num_heads


def unet_config_from_diffusers(d: dict) -> UNetConfig | None:
    """Our `UNetConfig` for a UNet2DModel config (all its arguments), or None where ours cannot express it.

    The sizes give a candidate; it is ours only if exporting it gives back `d` exactly.
    """
    try:
        candidate = _candidate(d)
        exported = diffusers_unet_config(candidate)
    except (UserError, KeyError, TypeError, ValueError, ZeroDivisionError):
        return None
    same = all(_plain(d.get(k)) == _plain(v) for k, v in exported.items() if not k.startswith("_"))
    return candidate if same else None


def _candidate(d: dict) -> UNetConfig:
    widths = list(d["block_out_channels"])
    base, size = widths[0], d["sample_size"]
    attends = [t.startswith("Attn") for t in d["down_block_types"]]
    head_dim, out, embeds = d["attention_head_dim"], d["out_channels"], d.get("num_class_embeds")
    return UNetConfig.from_dict({
        "in_channels": d["in_channels"], "out_channels": None if out == d["in_channels"] else out, "image_size": size,
        "base_channels": base, "channel_mults": [w // base for w in widths], "num_res_blocks": d["layers_per_block"],
        "attention_resolutions": [size // 2**i for i, a in enumerate(attends) if a], "dropout": d["dropout"],
        "num_heads": 1 if head_dim is None else widths[-1] // head_dim,
        "time_embed_mult": (d["time_embedding_dim"] or 4 * base) // base, "norm_groups": d["norm_num_groups"],
        "num_classes": embeds - 1 if embeds else 0,
    })


def _plain(value):
    """Lists and tuples compare alike; so do 1 and 1.0."""
    return list(value) if isinstance(value, list | tuple) else value


# --- the weights -----------------------------------------------------------------------------


def key_pairs(c: UNetConfig) -> list[tuple[str, tuple[str, ...]]]:
    """Each key of `UNet(c).state_dict()` with the UNet2DModel key(s) that hold it (three for q/k/v)."""
    with torch.device("meta"):  # the names and shapes only, no memory
        ours = list(UNet(c).state_dict())
    owners = _module_pairs(c)
    pairs = []
    for key in ours:
        module, param = key.rsplit(".", 1)
        parts = module.split(".")
        owner = next(o for o in (".".join(parts[:n]) for n in range(len(parts), 0, -1)) if o in owners)
        theirs, kind = owners[owner]
        inner = module[len(owner) + 1:]
        name = (RES_NAMES if kind == "res" else ATTN_NAMES if kind == "attn" else {}).get(inner, inner)
        names = name if isinstance(name, tuple) else (name,)
        pairs.append((key, tuple(".".join(p for p in (theirs, n, param) if p) for n in names)))
    return pairs


def _module_pairs(c: UNetConfig) -> dict[str, tuple[str, str]]:
    """{our module: (UNet2DModel module, kind)}; kind "res" or "attn" renames the parts inside."""
    pairs = {"time_mlp.0": ("time_embedding.linear_1", ""), "time_mlp.2": ("time_embedding.linear_2", ""),
             "conv_in": ("conv_in", ""), "norm_out": ("conv_norm_out", ""), "conv_out": ("conv_out", ""),
             "mid.0.res": ("mid_block.resnets.0", "res"), "mid.0.attn": ("mid_block.attentions.0", "attn"),
             "mid.1.res": ("mid_block.resnets.1", "res"), "class_embed": ("class_embedding", "")}
    last = len(c.channel_mults) - 1
    k = 0
    for level in range(last + 1):
        for i in range(c.num_res_blocks):
            pairs.update(_block(f"down.{k}", f"down_blocks.{level}", i))
            k += 1
        if level != last:
            pairs[f"down.{k}"] = (f"down_blocks.{level}.downsamplers.0", "")
            k += 1
    k = 0
    for j in range(last + 1):
        for i in range(c.num_res_blocks + 1):
            pairs.update(_block(f"up.{k}", f"up_blocks.{j}", i))
            pairs[f"up.{k}.up"] = (f"up_blocks.{j}.upsamplers.0", "")
            k += 1
    return pairs


def _block(ours: str, theirs: str, i: int) -> dict[str, tuple[str, str]]:
    return {f"{ours}.res": (f"{theirs}.resnets.{i}", "res"), f"{ours}.attn": (f"{theirs}.attentions.{i}", "attn")}


def to_diffusers_state_dict(c: UNetConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our weights under UNet2DModel's names (the fused q/k/v split into three)."""
    out = {}
    for ours, theirs in key_pairs(c):
        out.update(zip(theirs, state[ours].chunk(len(theirs)), strict=True))
    return out


def from_diffusers_state_dict(c: UNetConfig, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_diffusers_state_dict`: bit for bit our weights again."""
    return {ours: torch.cat([state[k] for k in theirs]) if len(theirs) > 1 else state[theirs[0]]
            for ours, theirs in key_pairs(c)}
