"""Previews of a data set: a grid of images with their class, or a table of texts per class."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np

from ..errors import UserError


def pick_balanced(labels: np.ndarray, n: int, num_classes: int) -> np.ndarray:
    """Up to `n` indices, taken round-robin over the classes in order (first members of each)."""
    labels = np.asarray(labels)
    per_class = [list(np.flatnonzero(labels == c)) for c in range(num_classes)]
    chosen: list[int] = []
    depth = 0
    while len(chosen) < n and any(depth < len(m) for m in per_class):
        for m in per_class:
            if depth < len(m) and len(chosen) < n:
                chosen.append(int(m[depth]))
        depth += 1
    # Group by class so that a row of the grid reads as one class where possible.
    chosen.sort(key=lambda i: (labels[i], i))
    return np.array(chosen, dtype=np.int64)


def _figure(width: float, height: float):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def image_grid(ds, out: str | Path, n: int = 64, title: str | None = None) -> Path:
    """Write a PNG grid of `n` images (balanced over classes), each captioned with its class."""
    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UserError(f"image previews are PNG files; use --out {out.with_suffix('.png')}")
    if n < 1:
        raise UserError(f"--n must be at least 1, got {n}")
    idx = pick_balanced(ds.labels, n, len(ds.class_names))
    k = len(idx)
    cols = max(1, math.ceil(math.sqrt(k)))
    rows = math.ceil(k / cols)
    cell = 1.1
    fig = _figure(cols * cell, rows * cell + 0.5)
    long_names = max(len(c) for c in ds.class_names) > 8
    for j, i in enumerate(idx):
        ax = fig.add_subplot(rows, cols, j + 1)
        img = ds.images[i]
        if img.shape[-1] == 1:
            ax.imshow(img[..., 0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(img, interpolation="nearest")
        name = ds.class_names[ds.labels[i]]
        ax.set_title(name if len(name) <= 14 else name[:13] + "…", fontsize=5 if long_names else 7, pad=2)
        ax.set_xticks([])
        ax.set_yticks([])
    h, w, c = ds.images.shape[1:]
    part = f" [{ds.split_name}]" if ds.split_name else ""
    fig.suptitle(title or f"{ds.name}{part}: {len(ds)} images {h}x{w}x{c}, {len(ds.class_names)} classes", fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.45 / (rows * cell + 0.5), wspace=0.1, hspace=0.35)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def _examples_per_class(ds, per_class: int) -> list[tuple[str, object]]:
    labels = ds.labels
    rows = []
    for c, name in enumerate(ds.class_names):
        for i in np.flatnonzero(labels == c)[:per_class]:
            rows.append((name, ds.examples[int(i)]))
    return rows


def _md_escape(s: str) -> str:
    return s.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def text_markdown(ds, per_class: int = 3) -> str:
    rows = _examples_per_class(ds, per_class)
    has_b = any(e.text_b is not None for _, e in rows)
    head = "| label | text |" + (" text_b |" if has_b else "")
    sep = "| --- | --- |" + (" --- |" if has_b else "")
    lines = [head, sep]
    for name, e in rows:
        line = f"| {_md_escape(name)} | {_md_escape(e.text)} |"
        if has_b:
            line += f" {_md_escape(e.text_b or '')} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def text_table(ds, out: str | Path, per_class: int = 3) -> Path:
    """Write `per_class` examples of each class: a PNG table (matplotlib) or a Markdown table (.md/.txt)."""
    out = Path(out)
    suffix = out.suffix.lower()
    if per_class < 1:
        raise UserError(f"examples per class must be at least 1, got {per_class}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix in (".md", ".txt"):
        part = f" [{ds.split_name}]" if ds.split_name else ""
        out.write_text(f"**{ds.name}{part}**: {len(ds)} examples, classes {', '.join(ds.class_names)}\n\n" + text_markdown(ds, per_class), encoding="utf-8")
        return out
    if suffix != ".png":
        raise UserError(f"text previews are .png, .md or .txt files, not '{out.suffix}'; e.g. --out {out.with_suffix('.png')}")
    rows = _examples_per_class(ds, per_class)
    wrap = 100
    blocks = []
    for name, e in rows:
        t = e.text if e.text_b is None else f"{e.text}  ||  {e.text_b}"
        if len(t) > 3 * wrap:
            t = t[: 3 * wrap - 1] + "…"
        blocks.append((name, textwrap.wrap(t, wrap) or [""]))
    n_lines = sum(len(b) for _, b in blocks) + len(blocks) * 0.6 + 2
    line_h = 0.19
    height = n_lines * line_h + 0.4
    fig = _figure(10.5, height)
    label_w = max(len(n) for n, _ in blocks)
    y = 1 - 0.35 / height
    part = f" [{ds.split_name}]" if ds.split_name else ""
    fig.text(0.01, y, f"{ds.name}{part}: {len(ds)} examples, {len(ds.class_names)} classes", fontsize=10, weight="bold", va="top")
    y -= 1.6 * line_h / height
    label_x = 0.01
    text_x = min(0.03 + 0.0085 * label_w, 0.25)
    prev = None
    for name, lines in blocks:
        if prev is not None and name != prev:
            fig.add_artist(_hline(fig, y + 0.3 * line_h / height))
        fig.text(label_x, y, name if name != prev else "", fontsize=8, weight="bold", va="top", family="monospace")
        for ln in lines:
            fig.text(text_x, y, ln, fontsize=8, va="top", family="monospace")
            y -= line_h / height
        y -= 0.6 * line_h / height
        prev = name
    fig.savefig(out)
    return out


def _hline(fig, y: float):
    from matplotlib.lines import Line2D

    return Line2D([0.01, 0.99], [y, y], transform=fig.transFigure, color="#bbbbbb", linewidth=0.6)
