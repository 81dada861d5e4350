"""An on-disk cache of sentence embeddings: each text is embedded once per encoder, across runs.

A comparison embeds the same texts in many cells (`--demos similar`: every cell embeds its
data set's test split, the same for each seed and row). The vectors live under
`cache_root()/sentence-embeddings/<encoder key>/` (cache.py); the key names the encoder's identity
(sentence_encoder.encoder_key) and a text is found by the SHA-256 of its UTF-8 bytes.

The folder holds append-only chunks: each call that misses writes its new vectors as one
safetensors file (`embeddings` [N, D] float32, `digests` [N, 32] uint8), named by the digest of
its texts and written atomically (temp file, then rename: checkpoint.atomic_write_bytes), so two
processes writing at once never read each other's half-written files. A file that cannot be read
(corrupt, foreign) is skipped and its texts are embedded again; a chunk with the same texts
replaces it. A text keeps the vector of its first computation: the same texts in another batch
can differ from it in the last float bits (padding changes the matrix shapes), never more.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import load_file, save

from ...cache import cache_root
from ...checkpoint import atomic_write_bytes
from ...progress import log

SUBDIR = "sentence-embeddings"
DIGEST_BYTES = 32  # SHA-256


def text_digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


class EmbeddingCache:
    """The cached vectors of one encoder; `embed` returns them and computes (and stores) the rest."""

    def __init__(self, key: str, root: Path | None = None):
        self.folder = (cache_root() if root is None else Path(root)) / SUBDIR / key
        self._rows: dict[bytes, torch.Tensor] = {}
        self._read: set[str] = set()  # chunk files already read (or skipped as unreadable)

    def embed(self, texts: list[str], compute: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        """[N, D]: each text's vector, from the cache where it is there; `compute(texts)` -> [M, D]
        embeds the missing ones (each once, in the order given), which are then stored."""
        if not texts:
            return compute(texts)
        digests = [text_digest(t) for t in texts]
        if any(d not in self._rows for d in digests):
            self._scan()  # another process may have written them since
        missing = list(dict.fromkeys(t for t, d in zip(texts, digests) if d not in self._rows))
        if missing:
            self._store(missing, compute(missing).float().contiguous())
        return torch.stack([self._rows[d] for d in digests])

    def _scan(self) -> None:
        """Read the chunk files not read yet."""
        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("*.safetensors")):
            if path.name in self._read:
                continue
            self._read.add(path.name)
            chunk = read_chunk(path)
            if chunk is None:
                log(f"embedding cache: skipping unreadable {path}; its texts are embedded again")
                continue
            vectors, raw = chunk
            self._rows.update((raw[i * DIGEST_BYTES:(i + 1) * DIGEST_BYTES], v) for i, v in enumerate(vectors))

    def _store(self, texts: list[str], vectors: torch.Tensor) -> None:
        """Keep `vectors` (one per text) here and write them as one chunk file."""
        digests = [text_digest(t) for t in texts]
        self._rows.update(zip(digests, vectors))
        raw = b"".join(digests)
        name = hashlib.sha256(raw).hexdigest()[:32] + ".safetensors"
        table = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(len(texts), DIGEST_BYTES)
        try:
            atomic_write_bytes(self.folder / name, save({"embeddings": vectors, "digests": table}))
        except OSError as e:  # a read-only or full disk costs the saving, not the run
            log(f"embedding cache: could not write {self.folder / name} ({e}); continuing without it")
        self._read.add(name)


def read_chunk(path: Path) -> tuple[torch.Tensor, bytes] | None:
    """A chunk's vectors [N, D] and its N digests as one byte string; None when it is not a valid chunk."""
    try:
        tensors = load_file(str(path))
    except Exception:  # safetensors' own error types, OSError, a truncated header: all mean "not usable"
        return None
    vectors, digests = tensors.get("embeddings"), tensors.get("digests")
    if vectors is None or digests is None or vectors.dtype != torch.float32 or digests.dtype != torch.uint8:
        return None
    if vectors.dim() != 2 or tuple(digests.shape) != (len(vectors), DIGEST_BYTES):
        return None
    return vectors, digests.numpy().tobytes()
