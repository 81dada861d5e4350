"""Result files the report has no dedicated view for, shown as tables with readable headers.

A JSON object becomes one or more tables (`json_tables`); keys become headers through `human`
("seconds_per_image" -> "s / image"); numbers go through `format_value`.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .markup import table

MAX_TABLE_ROWS = 60

# Keys whose plain-English name is not just the key with spaces.
HUMAN = {
    "fid": "FID", "kid": "KID", "kid_std": "KID std", "bpd": "Bits/dim", "bpd_stderr": "Bits/dim s.e.",
    "seconds_per_image": "s / image", "model_calls_per_image": "Model calls / image", "seconds": "Time (s)",
    "train_seconds": "Training (s)", "test_seconds": "Testing (s)", "images_per_s": "Images / s",
    "lr": "Learning rate", "grad_norm": "Gradient norm", "macro_f1": "Macro-F1", "test_macro_f1": "Test macro-F1",
}


def human(key: str) -> str:
    """A JSON key as a column header: `dev_accuracy` -> `Dev accuracy`, `fid` -> `FID`."""
    if key in HUMAN:
        return HUMAN[key]
    words = key.replace("_", " ").replace(".", ": ")
    return words[:1].upper() + words[1:]


def title_of(file_name: str) -> str:
    """A section heading for a result file: `evaluate-mr-test.json` -> `Evaluate mr test`."""
    words = file_name.rsplit(".", 1)[0].replace("_", " ").replace("-", " ")
    return words[:1].upper() + words[1:]


def format_value(v: Any) -> str:
    """How a value appears in a table of a result file without a dedicated view."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if v is None:
        return "—"
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


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
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
            return [("", [flatten(r) for r in obj])]
        return [("", [{"value": v} for v in obj])]
    if not isinstance(obj, dict):
        return [("", [{"value": obj}])]
    values = list(obj.values())
    if values and all(isinstance(v, dict) for v in values) and len({tuple(flatten(v)) for v in values}) == 1:
        return [("", [{"": k, **flatten(v)} for k, v in obj.items()])]
    tables: list[tuple[str, list[dict]]] = []
    scalars: dict = {}
    for k, v in obj.items():
        if isinstance(v, list) and v and all(isinstance(r, dict) for r in v):
            tables.append((str(k), [flatten(r) for r in v]))
        elif isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            tables.append((str(k), [{"": kk, **flatten(vv)} for kk, vv in v.items()]))
        elif isinstance(v, dict) and v:
            tables.append((str(k), [{"name": kk, "value": vv} for kk, vv in flatten(v).items()]))
        else:
            scalars[k] = v
    if scalars:
        tables.insert(0, ("", [{"name": k, "value": v} for k, v in scalars.items()]))
    return tables


def rows_table(rows: list[dict]) -> str:
    """Dicts as a table: a column per key (headers made readable), string cells left-aligned."""
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    cells = [[_cell(c, r[c]) if c in r else "" for c in columns] for r in rows[:MAX_TABLE_ROWS]]
    kinds = "".join(_kind([r.get(c) for r in rows]) for c in columns)
    more = (f'<p class="muted">{len(rows) - MAX_TABLE_ROWS} more rows in the JSON file</p>'
            if len(rows) > MAX_TABLE_ROWS else "")
    return table([human(c) for c in columns], cells, kinds=kinds) + more


def _cell(column: str, value: Any) -> str:
    """A name/value table's names are keys too: they read like headers."""
    return human(value) if column == "name" and isinstance(value, str) else format_value(value)


def _kind(values: list) -> str:
    """A column's kind for `table`: numbers right, short strings left, long strings as text."""
    strings = [v for v in values if isinstance(v, str)]
    if not strings:
        return "n"
    return "t" if max(len(v) for v in strings) > 60 else "l"


def json_parts(file_name: str, obj: Any) -> list[tuple[str, str]]:
    """A result file as (heading, HTML) parts: one per table `json_tables` finds."""
    parts = []
    for title, rows in json_tables(obj):
        heading = title_of(file_name) + (f": {human(title)}" if title else "")
        parts.append((heading, rows_table(rows) if rows else '<p class="muted">(empty)</p>'))
    return parts
