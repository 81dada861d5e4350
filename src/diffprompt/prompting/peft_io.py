"""PEFT interop: a soft prompt out as a PEFT prompt-tuning adapter, and a PEFT adapter in as soft tokens.

PEFT's prompt tuning puts its `num_virtual_tokens` embeddings in front of the token embeddings of
the whole input, special tokens included. `PromptClassifier` keeps the tokenizer's leading special
token ([CLS], <s>) first and puts the soft tokens after it. So a template whose soft tokens are
all at its very start (`{soft*N} {x} It was {mask}.`, `{soft*N} {mask} : {x}`) exports as 1 + N
virtual tokens: the backbone's own [CLS] embedding, then the N soft tokens. Fed the rest of the
input (the tokenizer's ids without their leading [CLS]), the PEFT model computes what our
classifier computes. Other templates are refused with the reason (soft tokens after the input or
after hard words, soft tokens in two places, no soft tokens), and so is a run whose backbone
trained too: an adapter holds only the prompt and applies to the unchanged backbone.

An adapter folder holds what `peft.PeftModel.from_pretrained(backbone, folder)` reads, and two
files of ours:

- `adapter_config.json`: peft_type PROMPT_TUNING, task_type FEATURE_EXTRACTION, num_virtual_tokens,
  token_dim, num_transformer_submodules 1, num_attention_heads, num_layers, base_model_name_or_path;
- `adapter_model.safetensors`: one tensor, `prompt_embeddings` [num_virtual_tokens, token_dim];
- `diffprompt.json`: template, verbalizer, label names, data set (what importing needs back);
- `README.md`: how to call the adapter from PEFT.

Task type: PEFT's plain `PeftModel` (task_type None) calls the backbone without the prompt, and its
causal-LM, seq2seq and classification models expect other heads; `PeftModelForFeatureExtraction`
(FEATURE_EXTRACTION) prepends the prompt and calls the wrapped model as it is, so on a
`BertForMaskedLM` it returns the MLM logits over the virtual tokens and the input.

Importing: an adapter whose first virtual tokens are exactly the backbone's leading special-token
embeddings (one exported here) comes back exactly. Any other prompt-tuning adapter was trained in
front of [CLS]; its embeddings become soft tokens bit for bit, but here they sit after [CLS], so
its scores differ from PEFT's (`import_peft` says so).

Deep prompts (models/deep_prompt.py) travel as PEFT PREFIX_TUNING adapters: adapter_config.json
(peft_type PREFIX_TUNING, task_type FEATURE_EXTRACTION, num_virtual_tokens, token_dim,
num_layers, num_attention_heads, prefix_projection false) and `prompt_embeddings`
[num_virtual_tokens, num_layers * 2 * token_dim], PEFT's flat layout of the folded prefixes (the
MLP, if any, applied, as PEFT saves them too). Both sides shift the input's positions by the prefix
length, so an adapter gives the same mask scores here and in `PeftModel`. A run of
`prefix-tuning` or `p-tuning-v2` exports that way (`export_peft` on a `DeepPromptClassifier`), with
diffprompt.json naming its template and label words; PEFT then runs the filled-in template, [CLS]
included, as it is.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file, save

from ..checkpoint import atomic_write_bytes
from ..errors import UserError
from ..progress import log
from ..rundir import RunDir
from .models.backbone import DEFAULT_BACKBONE, backbone_id, default_backbone_dir, fresh_backbone
from .models.deep_prompt import DeepPrompt, attention_shape, flat_to_prefixes, prefixes_to_flat
from .models.deep_prompt_classifier import DeepPromptClassifier
from .run.classifier_factory import build_verbalizer
from .run.config import RunConfig
from .methods.defaults import default_template
from .models.prompt_classifier import PromptClassifier
from .run.data import class_names_of, load_data, saved_class_names
from .run.folder import load_run_model, model_file
from .prompts.template import Template, special_wrap

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
SIDECAR = "diffprompt.json"
WEIGHTS_KEY = "prompt_embeddings"
FORMAT = "diffprompt-peft-v1"


# ----------------------------------------------------------------------------- out
def peft_refusal(model) -> str | None:
    """Why PEFT's prompt tuning cannot hold this classifier's prompt; None when it can."""
    if not isinstance(model, PromptClassifier):
        return "a fine-tuned classifier has no prompt; PEFT prompt tuning holds soft tokens only"
    text, n = model.template.text, model.template.num_soft
    kinds = [p.kind for p in model.template.pieces]
    if n == 0:
        return f"template {text!r} has no soft tokens; PEFT prompt tuning holds soft tokens only"
    if kinds[:n] != ["soft"] * n:
        return f"in template {text!r} {_what_precedes_soft(model.template)}; PEFT prompt tuning puts one block of " \
               "virtual tokens before the whole input, so only templates that start with all their soft tokens export"
    if model.train_mode == "all":
        return "the backbone was trained too (train='all'); a PEFT prompt-tuning adapter holds only the prompt and " \
               "applies to the unchanged backbone"
    return None


def _what_precedes_soft(template: Template) -> str:
    """Says what stands before a soft token of a template that does not start with all of them."""
    kinds = [p.kind for p in template.pieces]
    start = kinds.index("soft")
    if start == 0:
        end = next(i for i, k in enumerate(kinds) if k != "soft")
        return f"the soft tokens are in two places ({end} at the start, more after {_names(template.pieces[end:])})"
    return f"the soft tokens come after {_names(template.pieces[:start])}"


def _names(pieces) -> str:
    """The first non-soft piece of `pieces`, as a person reads it."""
    p = next(p for p in pieces if p.kind != "soft")
    return {"x": "the input {x}", "x2": "the second input {x2}", "mask": "{mask}"}.get(p.kind, f"the hard words {p.text!r}")


def virtual_tokens(model: PromptClassifier) -> tuple[torch.Tensor, list[int]]:
    """The adapter's virtual tokens [k + N, D] (the leading special tokens' embeddings, then the soft
    prompt as the model feeds it, its prompt encoder applied) and the k special token ids."""
    prefix, _ = special_wrap(model.tokenizer)
    with torch.no_grad():
        specials = model.backbone.get_input_embeddings().weight[prefix]
        return torch.cat([specials, model.soft_prompt().to(specials.dtype)]).cpu().contiguous(), list(prefix)


def adapter_config(model: PromptClassifier, num_virtual_tokens: int) -> dict:
    """adapter_config.json as PEFT writes it for prompt tuning."""
    ident = backbone_id(model.backbone)
    cfg = model.backbone.config
    return {"peft_type": "PROMPT_TUNING", "task_type": "FEATURE_EXTRACTION", "num_virtual_tokens": num_virtual_tokens,
            "token_dim": model.embed_dim, "num_transformer_submodules": 1,
            "num_attention_heads": getattr(cfg, "num_attention_heads", None),
            "num_layers": getattr(cfg, "num_hidden_layers", None),
            "base_model_name_or_path": str(default_backbone_dir()) if ident == DEFAULT_BACKBONE else ident,
            "revision": None, "inference_mode": True, "prompt_tuning_init": "RANDOM", "prompt_tuning_init_text": None,
            "tokenizer_name_or_path": None, "tokenizer_kwargs": None, "modules_to_save": None, "auto_mapping": None}


def export_peft(model: PromptClassifier, out, extra: dict | None = None) -> Path:
    """Write `model`'s prompt as a PEFT prompt-tuning adapter folder (a deep prompt's as a prefix-tuning
    one); a template PEFT cannot express is a `UserError` that says why. `extra` goes into
    diffprompt.json (the data set, label names)."""
    if isinstance(model, DeepPromptClassifier):
        return export_deep_classifier(model, out, extra)
    why = peft_refusal(model)
    if why:
        raise UserError(f"cannot export to PEFT: {why}")
    out = Path(out)
    tokens, specials = virtual_tokens(model)
    config = adapter_config(model, tokens.shape[0])
    atomic_write_bytes(out / WEIGHTS_FILE, save({WEIGHTS_KEY: tokens}, metadata={"format": "pt"}))
    atomic_write_bytes(out / CONFIG_FILE, json.dumps(config, indent=2).encode())
    side = {"format": FORMAT, "template": model.template.text, "verbalizer": model.verbalizer.to_dict(),
            "backbone": backbone_id(model.backbone), "max_length": model.max_length, "special_token_ids": specials,
            "num_soft": model.template.num_soft, **(extra or {})}
    atomic_write_bytes(out / SIDECAR, json.dumps(side, indent=2).encode())
    atomic_write_bytes(out / "README.md", usage(model, config, specials, out).encode())
    return out


def usage(model: PromptClassifier, config: dict, specials: list[int], folder: Path) -> str:
    """README.md: what the adapter is and the PEFT code that gives our classifier's mask logits."""
    k = len(specials)
    hard = re.sub(r"\{\s*soft[^{}]*\}\s*", "", model.template.text)
    names = " ".join(model.tokenizer.convert_ids_to_tokens(specials))
    return f"""# A soft prompt as a PEFT prompt-tuning adapter

Exported by `diffprompt prompting export` from the template `{model.template.text}` (label words
`{model.verbalizer.to_string()}`). The first {k} of its {config['num_virtual_tokens']} virtual tokens are the backbone's own
{names} embedding, which diffprompt keeps before the soft tokens: feed PEFT the input without it.

```python
from peft import PeftModel
from transformers import AutoModelForMaskedLM, AutoTokenizer

base = "{config['base_model_name_or_path']}"
tok = AutoTokenizer.from_pretrained(base)
model = PeftModel.from_pretrained(AutoModelForMaskedLM.from_pretrained(base), "{folder}").eval()
enc = tok({hard!r}.format(x="a gorgeous , witty film", mask=tok.mask_token), return_tensors="pt")
logits = model(input_ids=enc.input_ids[:, {k}:], attention_mask=enc.attention_mask[:, {k}:]).logits
mask_logits = logits[0, {model.template.num_soft} + int((enc.input_ids[0] == tok.mask_token_id).nonzero()[0, 0])]
```
"""


# ----------------------------------------------------------------------------- in
def read_adapter(folder) -> tuple[torch.Tensor, dict, dict]:
    """(prompt_embeddings [M, D], adapter_config, our diffprompt.json or {}) of a PEFT prompt-tuning folder."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}; pass a folder written by PEFT's save_pretrained "
                        "(download a hub adapter first: `huggingface-cli download ID --local-dir DIR`)")
    config = _read_json(folder / CONFIG_FILE)
    if config.get("peft_type") != "PROMPT_TUNING":
        raise UserError(f"{folder} holds a {config.get('peft_type')} adapter; only PEFT prompt tuning (PROMPT_TUNING) "
                        "becomes soft tokens")
    if (config.get("num_transformer_submodules") or 1) != 1:
        raise UserError(f"{folder} is an encoder-decoder prompt ({config['num_transformer_submodules']} submodules); "
                        "a masked LM takes one")
    if not (folder / WEIGHTS_FILE).is_file():
        raise UserError(f"{folder} has no {WEIGHTS_FILE} (an adapter_model.bin is a pickle, which diffprompt never "
                        "loads); save it again with PEFT's save_pretrained(DIR, safe_serialization=True)")
    weights = load_file(folder / WEIGHTS_FILE)
    if WEIGHTS_KEY not in weights or weights[WEIGHTS_KEY].ndim != 2:
        raise UserError(f"{folder / WEIGHTS_FILE} has no 2-D {WEIGHTS_KEY!r} tensor; it holds {sorted(weights)}")
    side = folder / SIDECAR
    return weights[WEIGHTS_KEY], config, _read_json(side) if side.is_file() else {}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e}); write it again with PEFT's save_pretrained") from None


def leading_specials(prompt: torch.Tensor, backbone, tokenizer) -> int:
    """How many of the first virtual tokens are exactly the backbone's leading special-token
    embeddings (1 for BERT's [CLS] in an adapter exported here), else 0 (a PEFT-trained prompt)."""
    prefix, _ = special_wrap(tokenizer)
    specials = backbone.get_input_embeddings().weight.detach()[prefix].cpu()
    k = len(prefix)
    same = prompt.shape[0] > k and torch.equal(prompt[:k].to(specials.dtype), specials)
    return k if same else 0


def import_peft(folder, backbone, tokenizer, template=None, verbalizer=None, max_length: int = 128) -> PromptClassifier:
    """A frozen-backbone `PromptClassifier` whose soft tokens are a PEFT adapter's prompt.

    `template` must start with all its soft tokens, as many as the prompt has (without the leading
    special tokens an adapter exported here carries); by default the one in diffprompt.json.
    """
    prompt, _, side = read_adapter(folder)
    k = leading_specials(prompt, backbone, tokenizer)
    if k == 0 and side and not template:
        raise UserError(f"{folder} was exported by diffprompt, but its first virtual token is no longer this backbone's "
                        f"embedding of {side.get('special_token_ids')} (trained further in PEFT, or another backbone?); "
                        f"pass a template starting with {{soft*{prompt.shape[0]}}} to take every virtual token as a soft token")
    soft = prompt[k:]
    template = template or side.get("template")
    if not template:
        raise UserError(f"{folder} has no {SIDECAR} naming its template; pass one that starts with its "
                        f"{soft.shape[0]} soft tokens, e.g. '{{soft*{soft.shape[0]}}} {{x}} It was {{mask}}.'")
    verbalizer = verbalizer or side.get("verbalizer", {}).get("spec")
    model = PromptClassifier(backbone, tokenizer, template, verbalizer, train="prompt", max_length=max_length)
    _check_prompt_fits(model, soft, folder)
    with torch.no_grad():
        model.soft_embeddings.copy_(soft)
    if k == 0:
        log(f"note: {folder} was trained with its prompt before the leading special token; here the soft tokens "
            "follow it, so the scores differ from PEFT's (an adapter exported by diffprompt comes back exactly)")
    return model


def _check_prompt_fits(model: PromptClassifier, soft: torch.Tensor, folder) -> None:
    why = peft_refusal(model)
    if why:
        raise UserError(f"cannot import {folder}: {why}")
    if soft.shape[1] != model.embed_dim:
        raise UserError(f"{folder} holds {soft.shape[1]}-wide embeddings but backbone {backbone_id(model.backbone)!r} "
                        f"has {model.embed_dim}; load it onto the backbone it was trained with (--backbone)")
    if soft.shape[0] != model.template.num_soft:
        raise UserError(f"{folder} holds {soft.shape[0]} soft tokens but template {model.template.text!r} has "
                        f"{model.template.num_soft}; write the template with {{soft*{soft.shape[0]}}} at its start")


# ----------------------------------------------------------------------------- run folders
def export_run(run_dir, out) -> Path:
    """`diffprompt prompting export RUN_DIR --to peft OUT`."""
    model, conf = load_run_model(run_dir)
    return export_peft(model, out, {"dataset": conf["dataset"], "class_names": conf["class_names"]})


def import_run(adapter, out, dataset: str | None = None, template: str | None = None, verbalizer: str | None = None,
               backbone: str | None = None) -> Path:
    """`diffprompt prompting import-peft ADAPTER --out RUN_DIR`: a run folder of method `soft` holding
    the adapter's prompt, which `prompting evaluate` and `predict` take. Unset options come from the
    adapter's diffprompt.json, then from the run defaults (the data set's hard template after the soft tokens).
    A PREFIX_TUNING adapter becomes a deep-prompt run folder instead (`import_prefix_run`)."""
    if (Path(adapter) / CONFIG_FILE).is_file() and _read_json(Path(adapter) / CONFIG_FILE).get("peft_type") == "PREFIX_TUNING":
        return import_prefix_run(adapter, out, dataset, template, verbalizer, backbone)
    prompt, config, side = read_adapter(adapter)
    name, (bb, tok), dataset, class_names = adapter_target(config, side, dataset, backbone)
    n = prompt.shape[0] - leading_specials(prompt, bb, tok)
    template = template or (None if side else f"{{soft*{n}}} " + default_template(dataset, "hard"))
    cfg = RunConfig(dataset=dataset, method="soft", train="prompt", shots=0, backbone=name,
                    template=template or side.get("template"), max_length=side.get("max_length", RunConfig.max_length),
                    verbalizer=verbalizer or side.get("verbalizer", {}).get("spec"))
    model = import_peft(adapter, bb, tok, template, build_verbalizer(cfg, class_names), cfg.max_length)
    return write_imported_run(out, model, cfg, class_names, adapter, f"PEFT prompt-tuning adapter {adapter} as {n} soft tokens")


def adapter_target(config: dict, side: dict, dataset: str | None, backbone: str | None) -> tuple:
    """(backbone name or None for the packaged one, a fresh (model, tokenizer), data set, class names) of an
    adapter being imported: the options given, else its diffprompt.json, else its config and the run defaults."""
    name = backbone or side.get("backbone") or config.get("base_model_name_or_path")
    name = None if name in (DEFAULT_BACKBONE, str(default_backbone_dir())) else name
    dataset = dataset or side.get("dataset") or RunConfig.dataset
    class_names = saved_class_names(side) if dataset == side.get("dataset") else class_names_of(load_data(dataset))
    return name, fresh_backbone(name), dataset, class_names


def write_imported_run(out, model, cfg: RunConfig, class_names: list[str], adapter, description: str) -> Path:
    """The run folder of an imported adapter: its config.json and the model file its method keeps."""
    RunDir(out).save_config({**asdict(cfg), "class_names": class_names, "imported_from": str(adapter),
                             "backbone_id": backbone_id(model.backbone), "description": description})
    model.save(model_file(out, cfg.method))
    return Path(out)


# ----------------------------------------------------------------------------- deep prompts (prefix tuning)
def prefix_adapter_config(prompt: DeepPrompt) -> dict:
    """adapter_config.json as PEFT writes it for prefix tuning, the prefixes already folded."""
    ident = backbone_id(prompt.backbone)
    return {"peft_type": "PREFIX_TUNING", "task_type": "FEATURE_EXTRACTION",
            "num_virtual_tokens": prompt.num_virtual_tokens, "token_dim": prompt.hidden,
            "num_transformer_submodules": 1, "num_attention_heads": prompt.heads, "num_layers": prompt.layers,
            "encoder_hidden_size": prompt.config.mlp_hidden_size or prompt.hidden, "prefix_projection": False,
            "base_model_name_or_path": str(default_backbone_dir()) if ident == DEFAULT_BACKBONE else ident,
            "revision": None, "inference_mode": True, "init_weights": None, "modules_to_save": None,
            "auto_mapping": None}


def export_peft_prefix(prompt: DeepPrompt, out) -> Path:
    """Write a deep prompt as a PEFT prefix-tuning adapter folder that `PeftModel.from_pretrained` reads."""
    out = Path(out)
    with torch.no_grad():
        flat = prefixes_to_flat(prompt.prefixes()).cpu().contiguous()
    atomic_write_bytes(out / WEIGHTS_FILE, save({WEIGHTS_KEY: flat}, metadata={"format": "pt"}))
    atomic_write_bytes(out / CONFIG_FILE, json.dumps(prefix_adapter_config(prompt), indent=2).encode())
    return out


def export_deep_classifier(model: DeepPromptClassifier, out, extra: dict | None = None) -> Path:
    """A deep-prompt classifier's prefixes as a PEFT prefix-tuning adapter, with diffprompt.json naming
    the template and label words PEFT's scores at the mask are read with."""
    out = export_peft_prefix(model.deep_prompt, out)
    side = {"format": FORMAT, "template": model.template.text, "verbalizer": model.verbalizer.to_dict(),
            "backbone": backbone_id(model.backbone), "max_length": model.max_length,
            "prefix_length": model.deep_prompt.num_virtual_tokens, **(extra or {})}
    atomic_write_bytes(out / SIDECAR, json.dumps(side, indent=2).encode())
    return out


def import_peft_prefix(folder, backbone) -> DeepPrompt:
    """A deep prompt holding the prefixes of a PEFT prefix-tuning adapter folder, on `backbone`."""
    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file():
        raise UserError(f"{folder} has no {CONFIG_FILE}; pass a folder written by PEFT's save_pretrained")
    config = _read_json(folder / CONFIG_FILE)
    if config.get("peft_type") != "PREFIX_TUNING" or (config.get("num_transformer_submodules") or 1) != 1:
        raise UserError(f"{folder} holds a {config.get('peft_type')} adapter with "
                        f"{config.get('num_transformer_submodules') or 1} submodules; deep prompts take PEFT prefix "
                        "tuning (PREFIX_TUNING) of an encoder")
    if not (folder / WEIGHTS_FILE).is_file():
        raise UserError(f"{folder} has no {WEIGHTS_FILE} (an adapter_model.bin is a pickle, which diffprompt never "
                        "loads); save it again with PEFT's save_pretrained(DIR, safe_serialization=True)")
    flat = load_file(folder / WEIGHTS_FILE).get(WEIGHTS_KEY)
    layers, heads, hidden = attention_shape(backbone)
    if flat is None or tuple(flat.shape) != (config.get("num_virtual_tokens"), layers * 2 * hidden):
        raise UserError(f"{folder / WEIGHTS_FILE} holds no {WEIGHTS_KEY!r} of shape [num_virtual_tokens, "
                        f"{layers * 2 * hidden}] for backbone {backbone_id(backbone)!r} ({layers} layers, hidden "
                        f"{hidden}); load it onto the backbone it was trained with")
    return DeepPrompt.from_prefixes(backbone, flat_to_prefixes(flat, layers, heads))


def import_prefix_run(adapter, out, dataset: str | None = None, template: str | None = None,
                      verbalizer: str | None = None, backbone: str | None = None) -> Path:
    """A PEFT prefix-tuning adapter as a run folder of `prefix-tuning` (a template of the input and the
    mask only) or `p-tuning-v2` (a template with hard words), which `evaluate` and `predict` take.
    Unset options come from the adapter's diffprompt.json, then from the data set's bare template
    and label words."""
    folder = Path(adapter)
    side = _read_json(folder / SIDECAR) if (folder / SIDECAR).is_file() else {}
    name, (bb, tok), dataset, class_names = adapter_target(_read_json(folder / CONFIG_FILE), side, dataset, backbone)
    prompt = import_peft_prefix(folder, bb)
    template = template or side.get("template") or default_template(dataset, "bare")
    method = "p-tuning-v2" if any(p.kind == "text" for p in Template(template).pieces) else "prefix-tuning"
    cfg = RunConfig(dataset=dataset, method=method, train="prompt", shots=0, backbone=name, template=template,
                    prefix_length=prompt.num_virtual_tokens, max_length=side.get("max_length", RunConfig.max_length),
                    verbalizer=verbalizer or side.get("verbalizer", {}).get("spec"))
    model = DeepPromptClassifier(bb, tok, Template(template), build_verbalizer(cfg, class_names),
                                 prefix_length=prompt.num_virtual_tokens, max_length=cfg.max_length)
    model.deep_prompt = prompt
    return write_imported_run(out, model, cfg, class_names, adapter, f"PEFT prefix-tuning adapter {adapter} as "
                              f"{prompt.num_virtual_tokens} prefix tokens per layer ({method})")
