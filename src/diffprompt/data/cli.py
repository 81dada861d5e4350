"""`diffprompt data ...`: list the offline data sets, preview one, print its split sizes."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

from ..errors import UserError

LIST_HELP = """\
Show every named data set: kind, whether it is installed, its size, splits and classes,
and the command that installs a missing one.

example:
  diffprompt data list
"""

SHOW_HELP = """\
Write a preview of a data set: for images a PNG grid (classes balanced, each image
captioned with its class); for text a PNG table of a few examples per class, or a
Markdown table when --out ends in .md or .txt. NAME is a named set (see `data list`),
a folder of PNG/JPEG images (sub-folder = class), or a .csv/.tsv/.jsonl file with
text,label columns.

examples:
  diffprompt data show mnist5k --out runs/previews/mnist5k.png
  diffprompt data show twemoji --out twemoji.png --n 100 --split test
  diffprompt data show mr --out mr.md
  diffprompt data show path/to/images/ --out mine.png --size 32
"""

STATS_HELP = """\
Print the number of examples per split and class (the tables of docs/data.md).
Without NAME: every installed named set.

examples:
  diffprompt data stats mr trec
  diffprompt data stats --markdown
"""


def register(subparsers) -> None:
    from ..cli import add_command, add_group

    group = add_group(
        subparsers,
        "data",
        help="list and preview the offline data sets",
        description="The offline data sets: images for diffusion, text classification for prompting.\n\n"
        "examples:\n  diffprompt data list\n  diffprompt data show mnist5k --out mnist5k.png\n",
    )
    p = add_command(group, "list", help="list the named data sets and whether they are installed", description=LIST_HELP)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_list)

    p = add_command(group, "show", help="write a preview PNG (image grid or text table)", description=SHOW_HELP)
    p.add_argument("name", metavar="NAME", help="a named set, an image folder, or a text .csv/.tsv/.jsonl file")
    p.add_argument("--out", required=True, help="output file: .png (images or text), .md/.txt (text)")
    p.add_argument("--n", type=int, default=64, help="number of images in the grid")
    p.add_argument("--per-class", type=int, default=3, help="text: examples per class")
    p.add_argument("--split", choices=["train", "dev", "test"], default=None, help="preview one split instead of the whole set")
    p.add_argument("--size", type=int, default=None, help="image folders: resize every image to SIZE x SIZE")
    p.set_defaults(func=cmd_show)

    p = add_command(group, "stats", help="print examples per split and class", description=STATS_HELP)
    p.add_argument("names", nargs="*", metavar="NAME", help="named sets, folders or files (default: all installed named sets)")
    p.add_argument("--markdown", action="store_true", help="print Markdown tables")
    p.set_defaults(func=cmd_stats)


def _report_warnings(caught) -> None:
    from .catalog import DataWarning

    for w in caught:
        if issubclass(w.category, DataWarning):
            print(f"diffprompt: warning: {w.message}", file=sys.stderr)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _short_classes(names, width: int = 44) -> str:
    s = ", ".join(names)
    if len(s) > width:
        s = s[: width - 1] + "…"
    return f"{len(names)}: {s}"


def cmd_list(args) -> int:
    import json

    from .catalog import IMAGE_SETS, TEXT_SETS

    rows = []
    for info in list(IMAGE_SETS.values()) + list(TEXT_SETS.values()):
        ok = info.installed()
        rows.append(
            {
                "name": info.name,
                "kind": info.kind,
                "installed": ok,
                "size": info.size,
                "splits": info.split_sizes,
                "shape": list(info.shape) if info.shape else None,
                "classes": list(info.class_names),
                "install": None if ok else info.install,
                "source": info.source,
                "licence": info.licence,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ["NAME", "KIND", "INSTALLED", "SIZE", "SPLITS", "CLASSES", "INSTALL"]
    table = [head]
    for r in rows:
        size = f"{r['size']}" + (" x " + "x".join(map(str, r["shape"])) if r["shape"] else "")
        splits = "/".join(str(v) for v in r["splits"].values())
        table.append([r["name"], r["kind"], "yes" if r["installed"] else "no", size, splits, _short_classes(r["classes"]), r["install"] or "-"])
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print("\nSPLITS: train/test for images, train/dev/test for text. Details: docs/data.md")
    return 0


def _resolve(name: str):
    """Load a named set, folder or file; returns (kind, dataset)."""
    from .catalog import IMAGE_SETS, TEXT_SETS, unknown_name_error
    from .images import load_images
    from .text import TEXT_FILE_SUFFIXES, load_text

    low = name.lower()
    p = Path(name)
    if low in IMAGE_SETS and not p.exists():
        return "image", lambda **kw: load_images(low, **kw)
    if low in TEXT_SETS and not p.exists():
        return "text", lambda **kw: load_text(low)
    if p.is_dir():
        return "image", lambda **kw: load_images(p, **kw)
    if p.suffix.lower() in TEXT_FILE_SUFFIXES:
        return "text", lambda **kw: load_text(p)
    if p.exists():
        raise UserError(f"{p} is neither a folder of images nor a .csv/.tsv/.jsonl text file")
    if "/" in name or p.suffix:
        raise UserError(f"no such file or folder: {name}; pass a named set (see `diffprompt data list`), an image folder or a text file")
    raise unknown_name_error(name)


def cmd_show(args) -> int:
    from . import preview

    kind, load = _resolve(args.name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if kind == "image":
            kw = {"size": args.size} if args.size else {}
            ds = load(**kw)
        else:
            if args.size:
                raise UserError("--size applies to image folders only")
            ds = load()
    _report_warnings(caught)
    if args.split:
        if kind == "image" and args.split == "dev":
            raise UserError("image sets have train and test splits only; use --split train or --split test")
        ds = ds.split(args.split)
    if kind == "image":
        out = preview.image_grid(ds, args.out, n=args.n)
    else:
        out = preview.text_table(ds, args.out, per_class=args.per_class)
    print(f"wrote {out} ({ds.name}{' [' + ds.split_name + ']' if ds.split_name else ''}: {len(ds)} examples)")
    return 0


def stats_rows(ds) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per class plus a total, one column per split."""
    names = ds.class_names if hasattr(ds, "class_names") else ds.label_names
    split_names = list(ds.splits)
    counts = {s: ds.splits[s].class_counts() for s in split_names}
    head = ["class"] + split_names + ["all"]
    rows = []
    for c, cname in enumerate(names):
        rows.append([cname] + [str(counts[s][c]) for s in split_names] + [str(sum(counts[s][c] for s in split_names))])
    rows.append(["**total**"] + [str(len(ds.splits[s])) for s in split_names] + [str(len(ds))])
    return head, rows


def cmd_stats(args) -> int:
    from .catalog import IMAGE_SETS, TEXT_SETS

    names = args.names or [n for n, info in list(TEXT_SETS.items()) + list(IMAGE_SETS.items()) if info.installed()]
    for i, name in enumerate(names):
        kind, load = _resolve(name)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = load()
        _report_warnings(caught)
        head, rows = stats_rows(ds)
        if i:
            print()
        if args.markdown:
            print(f"**{ds.name}** ({kind}, {len(ds)} examples)\n")
            print("| " + " | ".join(head) + " |")
            print("|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|")
            for r in rows:
                print("| " + " | ".join(r) + " |")
        else:
            print(f"{ds.name} ({kind}, {len(ds)} examples)")
            rows_plain = [[c.replace("**", "") for c in r] for r in rows]
            widths = [max(len(x[j]) for x in [head] + rows_plain) for j in range(len(head))]
            for r in [head] + rows_plain:
                print("  " + "  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    return 0
