"""The project's on-disk cache folder: `$DIFFPROMPT_CACHE`, default `~/.cache/diffprompt`.

Each kind of cached file has a subfolder: the diffusion feature classifier's weights
(diffusion/evaluation/feature_classifier.py), sentence embeddings (prompting/embedding_cache.py).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """`$DIFFPROMPT_CACHE`, else `~/.cache/diffprompt`."""
    return Path(os.environ.get("DIFFPROMPT_CACHE") or Path.home() / ".cache" / "diffprompt")
