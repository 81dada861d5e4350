"""tqdm progress bars that stay quiet when stderr is not a terminal, or when asked."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

_QUIET = False


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar made by `progress`."""
    global _QUIET
    _QUIET = bool(quiet)


def bars_enabled() -> bool:
    if _QUIET or os.environ.get("DIFFPROMPT_QUIET"):
        return False
    if os.environ.get("DIFFPROMPT_PROGRESS"):  # force bars, e.g. under a pager
        return True
    return sys.stderr.isatty()


def progress(iterable=None, **kwargs):
    """`tqdm(iterable, **kwargs)`, disabled unless stderr is a terminal."""
    kwargs.setdefault("disable", not bars_enabled())
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    return tqdm(iterable, **kwargs)


def log(message: str) -> None:
    """A one-line status message to stderr (a stage line), unless quiet."""
    if not (_QUIET or os.environ.get("DIFFPROMPT_QUIET")):
        tqdm.write(message, file=sys.stderr)
