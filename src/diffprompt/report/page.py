"""`diffprompt report`: render run folders as one self-contained HTML page.

A run folder is anything written through `RunDir`: `config.json` (with a `kind`), `metrics.jsonl`,
result JSON files, and PNG/GIF pictures; `DONE` marks it finished. A folder whose sub-folders
are runs (the demo's `runs/demo/`) renders each of them as a section.

Everything is inlined (pictures as data URIs, curves drawn here with matplotlib), so the page
needs no network and no script. Every number in a table is read from the run's JSON files and
formatted by `format_value`; nothing is typed in.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..rundir import CONFIG_FILE, DONE_FILE, METRICS_FILE

# Pictures shown first, in this order, with captions; any other picture follows.
PICTURES = {
    "real.png": "Real images (test split)",
    "samples.png": "Samples",
    "forward.png": "Forward process: x_0 to x_T",
    "reverse.gif": "Reverse chain (animated)",
    "reverse.png": "Reverse chain: x_T to x_0",
    "pred_x0.png": "Predicted x_0 along the reverse chain",
    "loss.png": "Training loss",
    "compare.png": "Prompting methods compared",
    "learning_curve.png": "Accuracy against K (shots per class)",
}
SIDE_BY_SIDE = ("real.png", "samples.png")
SKIP_JSON = {CONFIG_FILE, "examples.json"}
MAX_TABLE_ROWS = 60

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;padding:0 1rem;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:2.5rem;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6rem 0 1.2rem;font-size:.9rem;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ccc;padding:.25rem .55rem;text-align:right;vertical-align:top;max-width:34rem;overflow-wrap:anywhere}
th{background:#f0f0f0}td.l,th.l{text-align:left}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top;max-width:47%}
figure img{image-rendering:pixelated;max-width:100%;height:auto;border:1px solid #ddd}
figcaption{font-size:.85rem;color:#555}
details pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:.8rem}
.pair{display:flex;gap:1rem;flex-wrap:wrap}.muted{color:#777;font-size:.85rem}
code{background:#f3f3f3;padding:0 .2rem}
"""


def format_value(v: Any) -> str:
    """How a value appears in a table. Tests use the same function to find numbers on the page."""
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) for x in v) and len(v) <= 12:
        return "[" + ", ".join(format_value(x) for x in v) + "]"
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v)
    return str(v)


def is_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def _child_runs(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and is_run(p))


def _check_run(path: Path, allow_incomplete: bool) -> None:
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; pass a run folder written by diffprompt (it holds config.json)")
    if not is_run(path) and not _child_runs(path):
        raise UserError(f"{path} is not a diffprompt run: it has no config.json; pass the folder a "
                        "`diffprompt ... --out` command wrote (for the demo: runs/demo)")
    if is_run(path) and not (path / DONE_FILE).exists() and not allow_incomplete:
        raise UserError(f"run {path} is still in progress or was interrupted (no {DONE_FILE} marker); "
                        "wait for it to finish, resume it, or pass --allow-incomplete")


def _img(path: Path, caption: str) -> str:
    mime = "image/gif" if path.suffix.lower() == ".gif" else "image/png"
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img src="data:{mime};base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _fig_to_img(fig, caption: str) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode()
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return '<p class="muted">(empty)</p>'
    if columns is None:
        columns = []
        for r in rows:
            columns += [k for k in r if k not in columns]
    head = "".join(f'<th class="l">{html.escape(str(c))}</th>' for c in columns)
    body = []
    for r in rows[:MAX_TABLE_ROWS]:
        cells = []
        for c in columns:
            v = r.get(c, "")
            cls = ' class="l"' if isinstance(v, str) else ""
            cells.append(f"<td{cls}>{html.escape(format_value(v) if v != '' else '')}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="muted">{len(rows) - MAX_TABLE_ROWS} more rows in the JSON file</p>' if len(rows) > MAX_TABLE_ROWS else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>{more}"


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def json_tables(obj: Any) -> list[tuple[str, list[dict]]]:
    """Turn a result JSON object into (title, rows) tables.

    - a list of dicts is one table;
    - a dict whose values are all dicts with the same keys (one entry per sampler, say) is one
      table with a row per key;
    - otherwise: the scalars make a name/value table, each list of dicts a table, each dict of
      dicts a table with a row per key, and each other dict a name/value table of its own.
    """
    if isinstance(obj, list):
        if all(isinstance(r, dict) for r in obj):
            return [("", [_flatten(r) for r in obj])]
        return [("", [{"value": v} for v in obj])]
    if not isinstance(obj, dict):
        return [("", [{"value": obj}])]
    values = list(obj.values())
    if values and all(isinstance(v, dict) for v in values) and len({tuple(_flatten(v)) for v in values}) == 1:
        return [("", [{"": k, **_flatten(v)} for k, v in obj.items()])]
    tables: list[tuple[str, list[dict]]] = []
    scalars: dict = {}
    for k, v in obj.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            tables.append((str(k), [_flatten(r) for r in v]))
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            tables.append((str(k), [{"": kk, **_flatten(vv)} for kk, vv in v.items()]))
        elif isinstance(v, dict) and v:
            tables.append((str(k), [{"name": kk, "value": vv} for kk, vv in _flatten(v).items()]))
        else:
            scalars[k] = v
    if scalars:
        tables.insert(0, ("", [{"name": k, "value": v} for k, v in scalars.items()]))
    return tables


def _curves(path: Path) -> str:
    """Plot every numeric metric against step from metrics.jsonl (loss, accuracy, ...)."""
    p = path / METRICS_FILE
    if not p.exists():
        return ""
    rows = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "step" in r]
    keys = sorted({k for r in rows for k, v in r.items()
                   if k not in ("step", "time") and isinstance(v, (int, float)) and not isinstance(v, bool)})
    if not rows or not keys:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = keys[:6]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float))]
        ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.2)
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if k.startswith("loss") and all(v > 0 for _, v in pts):
            ax.set_yscale("log")
    fig.tight_layout()
    out = _fig_to_img(fig, "Curves from metrics.jsonl")
    plt.close(fig)
    return "<h3>Curves</h3>" + out


def _example_files(path: Path) -> list[tuple[str, Path]]:
    """examples.json of this run, or of each cell of a comparison grid (one seed per method)."""
    if (path / "examples.json").exists():
        return [("", path / "examples.json")]
    found, seen = [], set()
    for p in sorted(path.glob("cells/*/*/*/*/examples.json")):
        dataset, shots, method = p.parts[-5], p.parts[-4], p.parts[-3]
        if (dataset, shots, method) not in seen:
            seen.add((dataset, shots, method))
            found.append((f"{method} on {dataset}, K={shots[1:]} ({p.parts[-2]})", p))
    return found


def _examples(path: Path, per_group: int = 4) -> str:
    groups = []
    for title, p in _example_files(path):
        data = json.loads(p.read_text())
        if isinstance(data, dict):
            groups += [(f"{title} {k}".strip(), v) for k, v in data.items()]
        else:
            groups.append((title, data[:per_group] if title else data))
    if not groups:
        return ""
    blocks = []
    for name, rows in groups:
        if not isinstance(rows, list):
            continue
        title = f"<h4>{html.escape(str(name))}</h4>" if name else ""
        blocks.append(title + _table([_flatten(r) if isinstance(r, dict) else {"example": r} for r in rows]))
    return "<h3>Test examples as the model saw them</h3>" + "".join(blocks)


def render_run(path: Path, level: int = 2) -> str:
    cfg = json.loads((path / CONFIG_FILE).read_text()) if is_run(path) else {}
    kind = cfg.get("kind", "run")
    parts = [f"<section><h{level}>{html.escape(path.name)} <span class='muted'>({html.escape(str(kind))})</span></h{level}>"]
    if cfg.get("description"):
        parts.append(f"<p>{html.escape(str(cfg['description']))}</p>")
    # Pictures: real beside samples, then the known ones, then the rest.
    shown = set()
    if all((path / n).exists() for n in SIDE_BY_SIDE):
        parts.append('<div class="pair">' + "".join(_img(path / n, PICTURES[n]) for n in SIDE_BY_SIDE) + "</div>")
        shown.update(SIDE_BY_SIDE)
    for name, caption in PICTURES.items():
        if name not in shown and (path / name).exists():
            parts.append(_img(path / name, caption))
            shown.add(name)
    for p in sorted(path.glob("*.png")) + sorted(path.glob("*.gif")):
        if p.name not in shown:
            parts.append(_img(p, p.stem.replace("_", " ")))
    # Tables from result JSON.
    for p in sorted(path.glob("*.json")):
        if p.name in SKIP_JSON or p.with_suffix(".safetensors").exists():  # checkpoint sidecars are not results
            continue
        try:
            obj = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        parts.append(f"<h3>{html.escape(p.name)}</h3>")
        for title, rows in json_tables(obj):
            if title:
                parts.append(f"<h4>{html.escape(title)}</h4>")
            parts.append(_table(rows))
    parts.append(_examples(path))
    parts.append(_curves(path))
    if cfg:
        parts.append("<details><summary>Resolved config</summary><pre>"
                     + html.escape(json.dumps(cfg, indent=2, sort_keys=True)) + "</pre></details>")
    order = [str(n) for n in cfg.get("sections", [])]
    children = sorted(_child_runs(path), key=lambda c: (order.index(c.name) if c.name in order else len(order), c.name))
    for child in children:
        parts.append(render_run(child, level + 1))
    parts.append("</section>")
    return "\n".join(parts)


def render_report(run_dirs: list[str | Path], out: str | Path | None = None, allow_incomplete: bool = False,
                  title: str = "diffprompt report") -> Path:
    """Write one self-contained HTML page for the given run folders and return its path."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise UserError("give at least one run folder, e.g. `diffprompt report runs/demo`")
    for p in paths:
        _check_run(p, allow_incomplete)
        for child in _child_runs(p) if p.is_dir() else []:
            _check_run(child, allow_incomplete)
    out = Path(out) if out else paths[0] / "report.html"
    body = "\n".join(render_run(p) for p in paths)
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<p class='muted'>Runs: {', '.join(html.escape(str(p)) for p in paths)}. Self-contained: "
            f"every picture is inlined and every number is read from the runs' JSON files.</p>{body}</body></html>")
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(out, page.encode("utf-8"))
    return out


def _cmd_report(args) -> int:
    out = render_report(args.runs, out=args.out, allow_incomplete=args.allow_incomplete)
    print(out)
    return 0


def register(sub) -> None:
    from ..cli import HelpFormatter

    p = sub.add_parser(
        "report",
        help="render run folders as one self-contained report.html",
        description=("Render one or more run folders (diffusion, prompting, or the demo's runs/demo) as a\n"
                     "single HTML page with every picture inlined: open it offline, mail it, archive it.\n\n"
                     "example:\n  diffprompt report runs/demo\n  diffprompt report runs/ddpm runs/compare --out both.html"),
        formatter_class=HelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (each holds config.json)")
    p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html of the first run)")
    p.add_argument("--allow-incomplete", action="store_true", help="render runs without a DONE marker too")
    p.set_defaults(func=_cmd_report)
