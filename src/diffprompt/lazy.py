"""Lazy package exports (PEP 562): a name is imported from its module on first use.

The parts' `__init__` files use it so that `import diffprompt.diffusion.cli` (and so
`diffprompt --help`) does not import torch.
"""

from __future__ import annotations

import importlib


def lazy_exports(package: str, exports: dict[str, str], namespace: dict):
    """Return (`__getattr__`, `__dir__`) for `package`, serving `exports` ({name: ".module"})."""

    def __getattr__(name: str):
        if name in exports:
            value = getattr(importlib.import_module(exports[name], package), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(exports)

    return __getattr__, __dir__
