"""tqdm progress bars and status lines that stay quiet when stderr is not a terminal, or when asked.

`DIFFPROMPT_QUIET=1` silences both; `DIFFPROMPT_PROGRESS=1` forces bars off a terminal.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def bars_enabled() -> bool:
    if os.environ.get("DIFFPROMPT_QUIET"):
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
    if not os.environ.get("DIFFPROMPT_QUIET"):
        tqdm.write(message, file=sys.stderr)
