"""What a run contributes to the page: headline findings, pictures, metric tables.

Each kind of run (`diffusion.view`, `prompting.view`, ...) reads its folder's JSON files into a
`RunView`; the page puts every run's headlines at the top ("What this run shows") and its
pictures and tables in the run's own section. A `Headline` also prints as plain text, which is
how `diffprompt demo` ends.
"""

from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .markup import esc, paragraph, table


TEXT_WIDTH = 100


@dataclass
class Headline:
    """A few computed sentences and a small table of the findings that matter most."""

    title: str
    sentences: list[str]
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    row_classes: list[str] | None = None
    kinds: str | None = None  # per column, as `markup.table` takes them: label columns first

    def _kinds(self) -> str:
        return self.kinds or "l" + "n" * (len(self.columns) - 1)

    def html(self) -> str:
        parts = [f"<h3>{esc(self.title)}</h3>", paragraph(" ".join(self.sentences))]
        if self.rows:
            parts.append(table(self.columns, self.rows, self._kinds(), cls="headline", row_classes=self.row_classes))
        return "\n".join(parts)

    def text(self) -> str:
        """The title, the sentences and the table in fixed-width columns (for a terminal)."""
        lines = [self.title, "=" * len(self.title), textwrap.fill(" ".join(self.sentences), TEXT_WIDTH)]
        if self.rows:
            grid = [self.columns, *self.rows]
            widths = [max(len(r[i]) for r in grid) for i in range(len(self.columns))]
            for j, row in enumerate(grid):
                cells = [c.ljust(w) if k != "n" else c.rjust(w) for c, w, k in zip(row, widths, self._kinds())]
                lines.append("  ".join(cells))
                if j == 0:
                    lines.append("  ".join("-" * w for w in widths))
        return "\n".join(lines)


@dataclass
class RunView:
    """One run folder as the page shows it."""

    headlines: list[Headline] = field(default_factory=list)
    figures: list[list[tuple[str, str]]] = field(default_factory=list)  # rows of (file name, caption)
    parts: list[tuple[str, str]] = field(default_factory=list)  # (heading, HTML)
    used: set[str] = field(default_factory=set)  # result files shown here; the page renders the rest as is

    def figure_row(self, *pictures: tuple[str, str]) -> None:
        """Pictures shown side by side, each a (file name, caption)."""
        if pictures:
            self.figures.append(list(pictures))
            self.used.update(name for name, _ in pictures)


def read_json(run: Path, name: str) -> Any:
    """The run's JSON file `name`, or None where it is missing or unreadable."""
    try:
        return json.loads((run / name).read_text())
    except (OSError, json.JSONDecodeError):
        return None
