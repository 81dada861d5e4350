"""Deep prompts: trainable key/value prefixes at every attention layer of a frozen masked LM.

Prefix tuning (Li & Liang 2021) and P-tuning v2 (Liu et al. 2022) give every layer N extra keys
and values that every token attends to; the backbone's weights never change. The prefixes are one
tensor [layers, 2 (key, value), heads, N, head_dim], optionally produced by an MLP from N token
vectors while training (Li & Liang's reparameterisation, PEFT's `prefix_projection`); `save`
folds the MLP into that plain tensor, so a file holds only the prefixes.

How they reach the attention: transformers routes the attention of BERT, RoBERTa, DistilBERT,
ALBERT and ELECTRA through one registry (`AttentionInterface`) named by
`config._attn_implementation`. While `DeepPrompt.run` calls the backbone, that name points to
`_prefixed_attention`, which puts layer i's prefix in front of the keys and values the layer
computed and lets the usual SDPA kernel attend over both (the mask gets N attended columns in
front). DeBERTa-v2 computes its disentangled attention itself, so during the call its attention
modules run `_prefixed_disentangled_attention` instead: the same computation with the prefix in
front, whose keys get content scores only (they have no relative position), as in P-tuning v2's
DeBERTa. Layers are counted by call, so ALBERT's one shared layer gets a prefix per repetition,
and a backbone whose layers do not all take their prefix is refused.

Positions: the input's positions start at N, as if the prefix were N tokens before it. That is
what PEFT's prefix tuning (and P-tuning v2's code) does on BERT-family models, whose embeddings
shift positions by the cache length, so a PEFT adapter gives the same scores here.
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load, save
from torch import nn
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, eager_mask

from ...checkpoint import atomic_write_bytes
from ...errors import UserError
from .backbone import backbone_id

ATTENTION = "diffprompt_prefix"
FORMAT = "diffprompt-deep-prompt-v1"
WEIGHTS_KEY = "prefixes"
_SUPPORTED = "BERT, RoBERTa, DistilBERT, ALBERT, an ELECTRA generator or DeBERTa-v2/v3"


@dataclass(frozen=True)
class DeepPromptConfig:
    """num_virtual_tokens: prefix length N per layer. mlp_hidden_size: None trains the prefixes
    directly; a size trains N token vectors and an MLP (Linear, tanh, Linear) that maps each to
    its keys and values at every layer, as in Li & Liang and PEFT's prefix_projection."""

    num_virtual_tokens: int = 8
    mlp_hidden_size: int | None = None

    def __post_init__(self):
        if int(self.num_virtual_tokens) < 1:
            raise UserError(f"num_virtual_tokens is {self.num_virtual_tokens}; a deep prompt needs at least 1")
        if self.mlp_hidden_size is not None and int(self.mlp_hidden_size) < 1:
            raise UserError(f"mlp_hidden_size is {self.mlp_hidden_size}; pass a positive size or None (no MLP)")


def attention_shape(backbone: nn.Module) -> tuple[int, int, int]:
    """(layers, heads, hidden size) of a masked LM's self-attention, from its config."""
    cfg = backbone.config
    layers = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layers", None)
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_heads", None)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "dim", None)
    if not (layers and heads and hidden) or hidden % heads:
        raise UserError(f"cannot read the attention shape of {type(backbone).__name__} from its config; "
                        f"deep prompts need {_SUPPORTED}")
    return int(layers), int(heads), int(hidden)


# ---------------------------------------------------------------------------- the attention hook
class _Active:
    """The prefixes of the running forward pass and how many attention layers have used theirs
    (one prefixed forward pass at a time per process)."""

    prefixes: torch.Tensor | None = None
    calls: int = 0


_ACTIVE = _Active()


def _next_prefix(module, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """The key and value prefixes [heads, N, head_dim] of the attention layer being called."""
    prefixes = _ACTIVE.prefixes
    if _ACTIVE.calls >= prefixes.shape[0]:
        raise UserError(f"{type(module).__name__} ran more attention layers than the {prefixes.shape[0]} the deep "
                        "prompt has prefixes for; build the deep prompt from this backbone")
    _ACTIVE.calls += 1
    return prefixes[_ACTIVE.calls - 1].to(dtype).unbind(0)


def _prefixed_attention(module, query, key, value, attention_mask, **kwargs):
    """SDPA attention over [layer i's prefix; the layer's own keys and values]."""
    layer_k, layer_v = _next_prefix(module, key.dtype)
    batch, n = key.shape[0], layer_k.shape[1]
    key = torch.cat([layer_k.expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([layer_v.expand(batch, -1, -1, -1), value], dim=2)
    if attention_mask is not None:  # additive [B, 1, Lq, Lk]: the prefix columns are attended (0)
        attention_mask = nn.functional.pad(attention_mask, (n, 0), value=0.0)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, _prefixed_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, eager_mask)  # additive float masks, padded above


def _prefixed_disentangled_attention(module, hidden_states, attention_mask, output_attentions=False,
                                     query_states=None, relative_pos=None, rel_embeddings=None):
    """DeBERTa-v2's DisentangledSelfAttention.forward with layer i's prefix in front of its keys and
    values; the prefix columns get the content score q.k only, no relative-position terms."""
    heads, batch = module.num_attention_heads, hidden_states.shape[0]
    query_states = hidden_states if query_states is None else query_states
    q = module.transpose_for_scores(module.query_proj(query_states), heads)  # [B * heads, L, head_dim]
    k = module.transpose_for_scores(module.key_proj(hidden_states), heads)
    v = module.transpose_for_scores(module.value_proj(hidden_states), heads)
    layer_k, layer_v = _next_prefix(module, k.dtype)
    n, length = layer_k.shape[1], q.shape[1]
    scale_factor = 1 + ("c2p" in module.pos_att_type) + ("p2c" in module.pos_att_type)
    scores = torch.bmm(q, torch.cat([layer_k.repeat(batch, 1, 1), k], dim=1).transpose(-1, -2))
    scores = scores / math.sqrt(q.shape[-1] * scale_factor)
    if module.relative_attention:
        rel = module.disentangled_attention_bias(q, k, relative_pos, module.pos_dropout(rel_embeddings), scale_factor)
        scores = scores + nn.functional.pad(rel, (n, 0))
    scores = scores.view(batch, heads, length, n + k.shape[1])
    keep = nn.functional.pad(attention_mask.bool(), (n, 0), value=True)
    probs = module.dropout(scores.masked_fill(~keep, torch.finfo(q.dtype).min).softmax(-1))
    context = torch.bmm(probs.view(batch * heads, length, -1), torch.cat([layer_v.repeat(batch, 1, 1), v], dim=1))
    context = context.view(batch, heads, length, -1).permute(0, 2, 1, 3).reshape(batch, length, -1)
    return context, probs if output_attentions else None


def disentangled_attentions(backbone: nn.Module) -> list[nn.Module]:
    """DeBERTa-v2's attention modules, which compute their attention themselves (none elsewhere)."""
    return [m for m in backbone.modules() if hasattr(m, "disentangled_attention_bias") and hasattr(m, "query_proj")]


@contextmanager
def _prefixes_in(backbone: nn.Module, prefixes: torch.Tensor, disentangled: list[nn.Module]):
    """While inside, the backbone's attention layers take `prefixes` (`disentangled`: its DeBERTa-v2
    attention modules); its config and modules are restored after."""
    config, before = backbone.config, backbone.config._attn_implementation
    _ACTIVE.prefixes, _ACTIVE.calls = prefixes, 0
    config._attn_implementation = ATTENTION
    for m in disentangled:  # an instance attribute shadows the class's forward until deleted
        m.forward = lambda *args, _m=m, **kwargs: _prefixed_disentangled_attention(_m, *args, **kwargs)
    try:
        yield _ACTIVE
    finally:
        config._attn_implementation = before
        for m in disentangled:
            del m.forward
        _ACTIVE.prefixes = None


def position_ids(backbone: nn.Module, attention_mask: torch.Tensor, n: int) -> torch.Tensor:
    """The input's position ids shifted by the prefix length n, as the backbone's embeddings
    compute them after a cache of n tokens (RoBERTa: counted over non-padding tokens after padding_idx)."""
    embeddings = getattr(getattr(backbone, backbone.base_model_prefix), "embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)
    if padding_idx is not None and hasattr(embeddings, "create_position_ids_from_input_ids"):
        mask = attention_mask.long()
        return (torch.cumsum(mask, dim=1) + n) * mask + padding_idx
    length = attention_mask.shape[1]
    return torch.arange(n, n + length, device=attention_mask.device).unsqueeze(0).expand_as(attention_mask)


# ---------------------------------------------------------------------------- the module
class DeepPrompt(nn.Module):
    """Key/value prefixes for every attention layer of a frozen masked LM.

    The backbone is held as a plain attribute (not a submodule): `state_dict()` and `parameters()`
    are the prefixes (or the token vectors and MLP that make them) only. `run` never changes the
    backbone's weights; freezing them (requires_grad False) is the caller's choice.
    """

    def __init__(self, backbone: nn.Module, config: DeepPromptConfig = DeepPromptConfig()):
        super().__init__()
        object.__setattr__(self, "backbone", backbone)
        self.config = config
        self.layers, self.heads, self.hidden = attention_shape(backbone)
        object.__setattr__(self, "disentangled", disentangled_attentions(backbone))  # found once, not per forward
        n = int(config.num_virtual_tokens)
        if config.mlp_hidden_size is None:
            self.prefix = nn.Parameter(0.02 * torch.randn(self.layers, 2, self.heads, n, self.hidden // self.heads))
        else:  # PEFT's PrefixEncoder with prefix_projection: token vectors, then Linear-tanh-Linear
            self.embedding = nn.Parameter(torch.randn(n, self.hidden))
            self.mlp = nn.Sequential(nn.Linear(self.hidden, int(config.mlp_hidden_size)), nn.Tanh(),
                                     nn.Linear(int(config.mlp_hidden_size), self.layers * 2 * self.hidden))
        self.to(next(backbone.parameters()).device)
        self._check_backbone()

    @property
    def num_virtual_tokens(self) -> int:
        return int(self.config.num_virtual_tokens)

    def prefixes(self) -> torch.Tensor:
        """The prefixes the layers see [layers, 2, heads, N, head_dim] (the MLP applied, if any)."""
        if self.config.mlp_hidden_size is None:
            return self.prefix
        return flat_to_prefixes(self.mlp(self.embedding), self.layers, self.heads)

    def run(self, attention_mask: torch.Tensor, model: nn.Module | None = None, **inputs):
        """`model(attention_mask=..., position_ids=..., **inputs)` with the prefixes prepended to every
        layer's keys and values. `model` is the backbone (its MLM logits) or its encoder (hidden
        states); `inputs` are `input_ids` or `inputs_embeds` [B, L] / [B, L, H]; `attention_mask` [B, L]."""
        model = self.backbone if model is None else model
        positions = position_ids(self.backbone, attention_mask, self.num_virtual_tokens)
        with _prefixes_in(self.backbone, self.prefixes(), self.disentangled) as active:
            out = model(attention_mask=attention_mask, position_ids=positions, **inputs)
        if active.calls != self.layers:
            raise UserError(f"in {type(self.backbone).__name__} {active.calls} of its {self.layers} attention layers "
                            f"took their prefix (its attention is its own); deep prompts need {_SUPPORTED}")
        return out

    def _check_backbone(self) -> None:
        """Run two tokens through the backbone: every layer must take its prefix."""
        param = next(self.backbone.parameters())
        ids = torch.ones(1, 2, dtype=torch.long, device=param.device)
        with torch.no_grad():
            self.run(torch.ones_like(ids), input_ids=ids)

    # ------------------------------------------------------------------ files
    def folded(self) -> DeepPrompt:
        """A plain deep prompt (no MLP) whose prefixes equal this one's."""
        plain = DeepPrompt(self.backbone, DeepPromptConfig(self.num_virtual_tokens))
        with torch.no_grad():
            plain.prefix.copy_(self.prefixes())
        return plain

    def save(self, path) -> None:
        """Write the prefixes alone (the MLP folded in) as safetensors, with the backbone's name."""
        meta = {"format": FORMAT, "backbone": backbone_id(self.backbone),
                "config": json.dumps(asdict(DeepPromptConfig(self.num_virtual_tokens)))}
        tensor = self.prefixes().detach().cpu().contiguous()
        atomic_write_bytes(path, save({WEIGHTS_KEY: tensor}, metadata=meta))

    @classmethod
    def from_prefixes(cls, backbone: nn.Module, prefixes: torch.Tensor) -> DeepPrompt:
        """A plain deep prompt holding `prefixes` [layers, 2, heads, N, head_dim] for `backbone`."""
        layers, heads, hidden = attention_shape(backbone)
        shape = tuple(prefixes.shape)
        if len(shape) != 5 or shape[:3] + shape[4:] != (layers, 2, heads, hidden // heads):
            raise UserError(f"the prefixes have shape {tuple(prefixes.shape)} but backbone {backbone_id(backbone)!r} "
                            f"needs [layers={layers}, 2, heads={heads}, N, head_dim={hidden // heads}]; "
                            "load them onto the backbone they were trained with")
        prompt = cls(backbone, DeepPromptConfig(int(prefixes.shape[3])))
        with torch.no_grad():
            prompt.prefix.copy_(prefixes)
        return prompt

    @classmethod
    def load(cls, path, backbone: nn.Module) -> DeepPrompt:
        """A deep prompt saved by `save`, on `backbone`."""
        try:
            weights = load(Path(path).read_bytes())
        except (OSError, SafetensorError) as e:
            raise UserError(f"cannot read deep prompt {path} ({e}); pass a file written by DeepPrompt.save") from None
        if WEIGHTS_KEY not in weights:
            raise UserError(f"{path} holds no {WEIGHTS_KEY!r} tensor ({sorted(weights)}); pass a file written by "
                            "DeepPrompt.save")
        return cls.from_prefixes(backbone, weights[WEIGHTS_KEY])


def flat_to_prefixes(flat: torch.Tensor, layers: int, heads: int) -> torch.Tensor:
    """PEFT's flat layout [N, layers * 2 * hidden] (per token: layer 0 keys, layer 0 values,
    layer 1 keys, ...) as prefixes [layers, 2, heads, N, head_dim]."""
    n = flat.shape[0]
    return flat.view(n, layers, 2, heads, -1).permute(1, 2, 3, 0, 4)


def prefixes_to_flat(prefixes: torch.Tensor) -> torch.Tensor:
    """The inverse of `flat_to_prefixes`: [layers, 2, heads, N, head_dim] -> [N, layers * 2 * hidden]."""
    return prefixes.permute(3, 0, 1, 2, 4).reshape(prefixes.shape[3], -1)
