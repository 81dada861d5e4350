"""`diffprompt data ...`: list the offline data sets, preview one, print its split sizes."""

from __future__ import annotations

import sys
import warnings

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


def _loaded(name: str, split: str | None = None, size: int | None = None):
    """`load_dataset`, its data warnings printed as one line each."""
    from .loading import load_dataset

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            return load_dataset(name, split, size)
        finally:
            _report_warnings(caught)


def cmd_list(args) -> int:
    import json

    from .tables import catalog_entries, catalog_table

    entries = catalog_entries()
    print(json.dumps(entries, indent=2) if args.json else catalog_table(entries))
    return 0


def cmd_show(args) -> int:
    from . import preview
    from .catalog import dataset_kind

    ds = _loaded(args.name, args.split, args.size)
    if dataset_kind(args.name) == "image":
        out = preview.image_grid(ds, args.out, n=args.n)
    else:
        out = preview.text_table(ds, args.out, per_class=args.per_class)
    print(f"wrote {out} ({ds.name}{' [' + ds.split_name + ']' if ds.split_name else ''}: {len(ds)} examples)")
    return 0


def cmd_stats(args) -> int:
    from .catalog import IMAGE_SETS, TEXT_SETS, dataset_kind
    from .tables import class_count_table

    names = args.names or [n for n, info in list(TEXT_SETS.items()) + list(IMAGE_SETS.items()) if info.installed()]
    for i, name in enumerate(names):  # each table as soon as its set is loaded
        print(("\n" if i else "") + class_count_table(_loaded(name), dataset_kind(name), markdown=args.markdown))
    return 0
