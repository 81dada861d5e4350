"""The results page: headline findings first, then a section per run, then the raw files.

A run folder is anything written through `RunDir`: `config.json` (with a `kind`), result JSON
files and pictures; `DONE` marks it finished. A folder whose sub-folders are runs (the demo's
`runs/demo/`) shows each of them, in the order its config's `sections` gives.

Each kind of run has a view (`diffusion`, `prompting`, `stages`) that turns the JSON files it
knows into headline findings, captioned pictures and metric tables; any other result file or
picture is still shown, as a plain table or with its file name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..checkpoint import atomic_write_bytes
from ..errors import UserError
from ..rundir import CONFIG_FILE, DONE_FILE
from . import diffusion, prompting, stages
from .curves import curves_html, wants_curves
from .generic import json_parts, title_of
from .markup import CSS, details, esc, image_figure, paragraph
from .view import Headline, RunView, read_json

# A view per kind of run, by the kind's first word ("diffusion-train" -> diffusion.view).
VIEWS = {"diffusion": diffusion.view, "prompting": prompting.view, "data": stages.data_view, "demo": stages.demo_view}
TITLES = {"demo": "The demo's stages", "data-preview": "Data", "diffusion-train": "Diffusion: training",
          "diffusion-demo": "Diffusion: sampling and evaluation", "prompting-compare": "Prompting: the methods compared",
          "prompting-train": "Prompting: one training run"}
PICTURE_SUFFIXES = (".png", ".gif")


@dataclass
class Run:
    path: Path
    name: str  # the folder relative to the report's first run, for headings and anchors
    cfg: dict
    view: RunView
    root: bool  # a folder given on the command line: its description opens the page

    @property
    def anchor(self) -> str:
        return "run-" + (re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "top")

    @property
    def title(self) -> str:
        return self.cfg.get("title") or TITLES.get(self.cfg.get("kind", ""), title_of(self.path.name))


def is_run(path: Path) -> bool:
    return (path / CONFIG_FILE).is_file()


def child_runs(path: Path) -> list[Path]:
    """Sub-folders that are runs, in the order the parent's config lists them, then by name."""
    children = sorted(p for p in path.iterdir() if p.is_dir() and is_run(p))
    order = [str(n) for n in (read_json(path, CONFIG_FILE) or {}).get("sections", [])]
    return sorted(children, key=lambda c: (order.index(c.name) if c.name in order else len(order), c.name))


def check_run(path: Path, allow_incomplete: bool) -> None:
    if not path.is_dir():
        raise UserError(f"{path} is not a folder; pass a run folder written by diffprompt (it holds {CONFIG_FILE})")
    if not is_run(path) and not child_runs(path):
        raise UserError(f"{path} is not a diffprompt run: it has no {CONFIG_FILE}; pass the folder a "
                        "`diffprompt ... --out` command wrote (for the demo: runs/demo)")
    if is_run(path) and not (path / DONE_FILE).exists() and not allow_incomplete:
        raise UserError(f"run {path} is still in progress or was interrupted (no {DONE_FILE} marker); "
                        "wait for it to finish, resume it, or pass --allow-incomplete")


def no_view(run: Path, cfg: dict) -> RunView:
    """A run of a kind without a view: the page shows its files as they are."""
    return RunView()


def collect(path: Path, name: str, root: bool = True) -> list[Run]:
    """The run at `path` and every run below it: children first, their parent's own files last."""
    runs = [r for child in child_runs(path) for r in collect(child, f"{name}/{child.name}", root=False)]
    cfg = read_json(path, CONFIG_FILE) or {}
    view = VIEWS.get(str(cfg.get("kind", "")).split("-")[0], no_view)(path, cfg)
    return runs + [Run(path, name, cfg, view, root)]


def headlines(run_dir: str | Path) -> list[Headline]:
    """The headline findings of a run folder and the runs below it, as the page opens with them."""
    path = Path(run_dir)
    return [h for r in collect(path, path.name) for h in r.view.headlines]


def result_files(run: Path) -> list[Path]:
    """The run's JSON files other than its config and checkpoint sidecars (the JSON beside a .safetensors)."""
    return [p for p in sorted(run.glob("*.json"))
            if p.name != CONFIG_FILE and not p.with_suffix(".safetensors").exists()]


def pictures_html(run: Run) -> str:
    rows = ['<div class="row">' + "".join(image_figure(run.path / n, c) for n, c in row) + "</div>"
            for row in run.view.figures]
    rest = [p for suffix in PICTURE_SUFFIXES for p in sorted(run.path.glob(f"*{suffix}"))
            if p.name not in run.view.used]
    rows += [image_figure(p, title_of(p.name)) for p in rest]
    return "\n".join(rows)


def run_section(run: Run) -> str:
    kind = run.cfg.get("kind", "run")
    parts = [f'<section id="{run.anchor}"><h2>{esc(run.title)}</h2>',
             paragraph(f"Run folder {run.path} ({kind}).", "muted")]
    if is_run(run.path) and not (run.path / DONE_FILE).exists():  # rendered with --allow-incomplete
        parts.append(paragraph(f"Incomplete run: no {DONE_FILE} marker (still running or interrupted); "
                               "what follows is what it had written so far."))
    if run.cfg.get("description") and not run.root:
        parts.append(paragraph(str(run.cfg["description"])))
    parts.append(pictures_html(run))
    unread = [(p.name, read_json(p.parent, p.name)) for p in result_files(run.path) if p.name not in run.view.used]
    other = [part for name, obj in unread if obj is not None for part in json_parts(name, obj)]
    for heading, html in run.view.parts + other:
        parts.append(f"<h3>{esc(heading)}</h3>{html}")
    if wants_curves(run.path, run.cfg):
        curves = curves_html(run.path)
        if curves:
            parts.append(f"<h3>Training curves</h3>{curves}")
    parts.append("</section>")
    return "\n".join(parts)


def headlines_section(runs: list[Run]) -> str:
    headlines = [h for r in runs for h in r.view.headlines]
    body = ([h.html() for h in headlines] if headlines else
            [paragraph("These runs record no results this report knows how to summarise; the sections below "
                       "show every file they hold.")])
    return '<section id="summary"><h2>What this run shows</h2>' + "\n".join(body) + "</section>"


def appendix(runs: list[Run]) -> str:
    blocks = []
    for run in runs:
        if run.cfg:
            blocks.append(details(f"Resolved config: {run.name}", json.dumps(run.cfg, indent=2, sort_keys=True)))
        for p in result_files(run.path):
            blocks.append(details(f"Raw JSON: {run.name}/{p.name}", p.read_text()))
    return '<section id="appendix"><h2>Configs and raw JSON</h2>' + "\n".join(blocks) + "</section>"


def contents(runs: list[Run]) -> str:
    items = [("summary", "What this run shows"), *[(r.anchor, r.title) for r in runs], ("appendix", "Configs and raw JSON")]
    links = "".join(f'<li><a href="#{a}">{esc(t)}</a></li>' for a, t in items)
    return f"<nav><h2>Contents</h2><ol>{links}</ol></nav>"


def render_report(run_dirs: list[str | Path], out: str | Path | None = None, allow_incomplete: bool = False,
                  title: str = "diffprompt report") -> Path:
    """Write one self-contained HTML page for the given run folders and return its path."""
    paths = [Path(p) for p in run_dirs]
    if not paths:
        raise UserError("give at least one run folder, e.g. `diffprompt report runs/demo`")
    for p in paths:
        check_run(p, allow_incomplete)
        for child in child_runs(p):
            check_run(child, allow_incomplete)
    out = Path(out) if out else paths[0] / "report.html"
    runs = [r for p in paths for r in collect(p, p.name)]
    intro = [str(r.cfg["description"]).rstrip(".") + "." for r in runs if r.root and r.cfg.get("description")]
    intro.append(f"Runs: {', '.join(str(p) for p in paths)}. Every picture is inlined and every number is read "
                 "from the runs' JSON files.")
    page = (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
            f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>{paragraph(' '.join(intro))}"
            f"{contents(runs)}{headlines_section(runs)}{''.join(run_section(r) for r in runs)}{appendix(runs)}"
            "</body></html>")
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
