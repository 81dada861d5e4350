"""The data sets as text tables: the catalog (`diffprompt data list`) and the examples per split and
class (`diffprompt data stats`, the tables of docs/data.md)."""

from __future__ import annotations

from typing import Any

from .catalog import IMAGE_SETS, TEXT_SETS
from .images import ImageDataset
from .text import TextDataset

CLASSES_WIDTH = 44  # characters of the class list in the catalog table


def catalog_entries() -> list[dict[str, Any]]:
    """Every named set: kind, whether it is installed, size, splits, classes, how to install it."""
    entries = []
    for info in list(IMAGE_SETS.values()) + list(TEXT_SETS.values()):
        ok = info.installed()
        entries.append({"name": info.name, "kind": info.kind, "installed": ok, "size": info.size,
                        "splits": info.split_sizes, "shape": list(info.shape) if info.shape else None,
                        "classes": list(info.class_names), "install": None if ok else info.install,
                        "source": info.source, "licence": info.licence})
    return entries


def catalog_table(entries: list[dict[str, Any]]) -> str:
    """The catalog as an aligned plain-text table with a note on the splits."""
    head = ["NAME", "KIND", "INSTALLED", "SIZE", "SPLITS", "CLASSES", "INSTALL"]
    rows = []
    for e in entries:
        size = f"{e['size']}" + (" x " + "x".join(map(str, e["shape"])) if e["shape"] else "")
        splits = "/".join(str(v) for v in e["splits"].values())
        rows.append([e["name"], e["kind"], "yes" if e["installed"] else "no", size, splits,
                     _short_classes(e["classes"]), e["install"] or "-"])
    table = plain_table(head, rows, right_aligned=())
    return table + "\n\nSPLITS: train/test for images, train/dev/test for text. Details: docs/data.md"


def _short_classes(names: list[str], width: int = CLASSES_WIDTH) -> str:
    s = ", ".join(names)
    if len(s) > width:
        s = s[: width - 1] + "…"
    return f"{len(names)}: {s}"


def class_count_rows(ds: ImageDataset | TextDataset) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per class plus a total, one column per split."""
    split_names = list(ds.splits)
    counts = {s: ds.splits[s].class_counts() for s in split_names}
    head = ["class"] + split_names + ["all"]
    rows = [[name] + [str(counts[s][c]) for s in split_names] + [str(sum(counts[s][c] for s in split_names))]
            for c, name in enumerate(ds.class_names)]
    rows.append(["total"] + [str(len(ds.splits[s])) for s in split_names] + [str(len(ds))])
    return head, rows


def class_count_table(ds: ImageDataset | TextDataset, kind: str, markdown: bool = False) -> str:
    """The examples per split and class under a title line, as Markdown (total in bold) or plain text."""
    head, rows = class_count_rows(ds)
    if markdown:
        rows[-1][0] = "**total**"
        return f"**{ds.name}** ({kind}, {len(ds)} examples)\n\n" + markdown_table(head, rows)
    table = plain_table(head, rows, right_aligned=range(1, len(head)))
    return f"{ds.name} ({kind}, {len(ds)} examples)\n" + "\n".join("  " + line for line in table.splitlines())


def plain_table(head: list[str], rows: list[list[str]], right_aligned=()) -> str:
    """Columns padded to their widest cell, two spaces apart; `right_aligned` column indices."""
    widths = [max(len(r[j]) for r in [head] + rows) for j in range(len(head))]
    right = set(right_aligned)
    return "\n".join("  ".join(c.rjust(w) if j in right else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip()
                     for r in [head] + rows)


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table, the first column left-aligned and the others (numbers) right-aligned."""
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
