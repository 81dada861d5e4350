"""The HTML pieces of the results page: style, tables, inlined figures, collapsible blocks.

Everything is inlined (pictures as data URIs), so the page needs no network and no script.
Table headers and numbers never wrap and words never break inside themselves: a wide table scrolls.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2.5rem;border-bottom:1px solid #bbb}h3{margin-top:1.6rem}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right;vertical-align:top;
word-break:normal;overflow-wrap:normal;hyphens:none}
th{background:#f0f0f0;white-space:nowrap}td{font-variant-numeric:tabular-nums}td:not(.l){white-space:nowrap}
td.l,th.l{text-align:left}td.text{min-width:24rem;max-width:40rem}
table.headline{font-size:1rem}table.headline td:first-child{font-weight:600}
tr.floor td{background:#f7f7f2;font-style:italic}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top;max-width:47%}
figure.wide{max-width:100%}
figure img{image-rendering:pixelated;max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.85rem;color:#444;max-width:34rem}
details{margin:.4rem 0}details pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.8rem}
summary{cursor:pointer}
.row{display:flex;gap:1rem;flex-wrap:wrap;align-items:flex-start}.row figure{max-width:48%;margin-right:0}
.row figure:only-child{max-width:100%}
.muted{color:#666;font-size:.85rem}nav ol{margin:.3rem 0}
code{background:#f3f3f3;padding:0 .2rem}
"""


def esc(text) -> str:
    return html.escape(str(text))


CELL_CLASS = {"l": ' class="l"', "t": ' class="l text"', "n": ""}


def table(columns: list[str], rows: list[list[str]], kinds: str | None = None, cls: str = "",
          row_classes: list[str] | None = None) -> str:
    """An HTML table of already formatted cells.

    `kinds` has a letter per column: `l` a left-aligned label, `n` a right-aligned number, `t`
    running text (wide, wrapping between words). Default: a label column, then numbers.
    """
    kinds = kinds or "l" + "n" * (len(columns) - 1)
    head = "".join(f"<th{CELL_CLASS['l'] if k != 'n' else ''}>{esc(c)}</th>" for c, k in zip(columns, kinds))
    body = []
    for j, row in enumerate(rows):
        tr = f' class="{row_classes[j]}"' if row_classes and row_classes[j] else ""
        body.append(f"<tr{tr}>" + "".join(f"<td{CELL_CLASS[k]}>{esc(c)}</td>" for c, k in zip(row, kinds)) + "</tr>")
    klass = f' class="{cls}"' if cls else ""
    return f"<table{klass}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(src: str, caption: str, wide: bool) -> str:
    klass = ' class="wide"' if wide else ""
    return (f'<figure{klass}><img src="{src}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def image_figure(path: Path, caption: str, wide: bool = False) -> str:
    """A PNG or GIF file inlined as a data URI, with its caption."""
    mime = "image/gif" if path.suffix.lower() == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return _figure(f"data:{mime};base64,{data}", caption, wide)


def plot_figure(fig, caption: str) -> str:
    """A matplotlib figure inlined as a PNG data URI, with its caption."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode()
    return _figure(f"data:image/png;base64,{data}", caption, wide=True)


def details(summary: str, text: str) -> str:
    """A collapsed block holding preformatted text (a config, a raw JSON file)."""
    return f"<details><summary>{esc(summary)}</summary><pre>{esc(text)}</pre></details>"


def fold(summary: str, html_body: str, open_: bool = False) -> str:
    """A collapsible block holding HTML (a table of examples, say)."""
    return f"<details{' open' if open_ else ''}><summary>{esc(summary)}</summary>{html_body}</details>"


def paragraph(text: str, cls: str = "") -> str:
    """Escaped text; `code` in backticks is set as code."""
    klass = f' class="{cls}"' if cls else ""
    body = re.sub(r"`([^`]+)`", r"<code>\1</code>", esc(text))
    return f"<p{klass}>{body}</p>"
