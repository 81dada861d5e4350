"""Read the report's headline tables back out of its HTML and check them against the run JSON.

The expected values are computed here from the JSON files, independently of the report's code:
which sampler is the reference, the speed-ups, the best prompting method per data set. A cell
matches when it equals the JSON value up to the rounding it shows.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class _Tables(HTMLParser):
    """Collects the cells of every <table> (of class `cls` where given) as a list of rows of text."""

    def __init__(self, cls: str | None = None):
        super().__init__()
        self.cls = cls
        self.tables: list[list[list[str]]] = []
        self.inside = False
        self.cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and (self.cls is None or ("class", self.cls) in attrs):
            self.inside = True
            self.tables.append([])
        elif self.inside and tag == "tr":
            self.tables[-1].append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = []

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append("".join(self.cell).strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def headline_tables(page: str) -> list[list[list[str]]]:
    return tables(page, "headline")


def tables(page: str, cls: str | None = None) -> list[list[list[str]]]:
    """Every table of the page (of class `cls` where given), each a list of rows of cell text."""
    parser = _Tables(cls)
    parser.feed(page)
    return parser.tables


def numbers(cell: str) -> list[float]:
    """The numbers in a cell; thousands are separated by thin spaces (1 000)."""
    return [float(x) for x in NUMBER.findall(cell.replace("\u2009", ""))]


def shows(cell: str, value: float, scale: float = 1.0) -> bool:
    """The cell's number equals value * scale up to half a unit of its last shown decimal."""
    [shown] = numbers(cell)
    decimals = len(cell.split(".")[1].rstrip("×% ")) if "." in cell else 0
    return abs(shown - value * scale) <= 0.5 * 10 ** -decimals + 1e-9


def shows_pm(cell: str, mean: float, err: float, scale: float = 1.0) -> bool:
    """`m ± e` with e kept to two significant digits: both within a tenth of the shown error."""
    m, e = numbers(cell)
    return abs(e - err * scale) <= e / 10 and abs(m - mean * scale) <= e / 10


def kid_scale(ev: dict) -> float:
    """KID is shown × 10³ when every value is small, as is otherwise."""
    return 1e3 if all(abs(s["kid"]) < 0.1 for s in ev["samplers"] + [ev["real_floor"]]) else 1.0


def check_diffusion_headline(table: list[list[str]], ev: dict) -> None:
    header, *rows = table
    samplers, floor = ev["samplers"], ev["real_floor"]
    ref = max(samplers, key=lambda s: (s["steps"], s["seconds_per_image"]))  # ties: the slower one
    scale = kid_scale(ev)
    assert header[0] == "Sampler" and header[2] == f"FID (n = {ev['n_samples']})", header
    assert header[5] == f"Speed-up vs {ref['sampler']}", header
    assert len(rows) == len(samplers) + 1
    for s, row in zip(samplers, rows):
        assert row[0] == s["sampler"] and numbers(row[1]) == [s["steps"]], row
        assert shows(row[2], s["fid"]), (row, s["fid"])
        assert shows_pm(row[3], s["kid"], s["kid_std"], scale), (row, s["kid"], s["kid_std"])
        [seconds] = numbers(row[4])
        assert abs(seconds - s["seconds_per_image"]) <= 0.05 * s["seconds_per_image"], (row, s["seconds_per_image"])
        assert shows(row[5], ref["seconds_per_image"] / s["seconds_per_image"]), row
    *_, floor_row = rows
    assert "floor" in floor_row[0] and shows(floor_row[2], floor["fid"]), floor_row
    assert shows_pm(floor_row[3], floor["kid"], floor["kid_std"], scale), floor_row


def check_prompting_headline(table: list[list[str]], compare: dict) -> None:
    header, *rows = table
    assert header == ["Data set", "Best prompting method", "Accuracy (%)", "Fine-tuning (%)", "Majority class (%)"]
    datasets = list(dict.fromkeys(r["dataset"] for r in compare["table"]))
    majority = {m["dataset"]: m["accuracy"] for m in compare["majority"]}
    assert [r[0] for r in rows] == [d.upper() for d in datasets]
    for d, row in zip(datasets, rows):
        prompting = [r for r in compare["table"] if r["dataset"] == d and r["method"] != "finetune"]
        best = max(prompting, key=lambda r: r["mean"])
        [ft] = [r for r in compare["table"] if r["dataset"] == d and r["method"] == "finetune"]
        assert row[1] == best["method"], (row, best)
        for cell, r in ((row[2], best), (row[3], ft)):
            if r["n"] > 1:
                mean, std = numbers(cell)
                assert abs(mean - 100 * r["mean"]) <= 0.05 + 1e-9 and abs(std - 100 * r["std"]) <= 0.05 + 1e-9, cell
            else:
                assert shows(cell, r["mean"], 100), (cell, r["mean"])
        assert shows(row[4], majority[d], 100), (row, majority[d])
