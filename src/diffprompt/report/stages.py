"""The demo's own files on the page: how long each stage took (`stages.json`) and the data
previews (`datasets.json` and a picture per image set)."""

from __future__ import annotations

from pathlib import Path

from .markup import paragraph, table
from .numbers import count, seconds
from .view import RunView, read_json


def demo_view(run: Path, cfg: dict) -> RunView:
    v = RunView()
    stages = read_json(run, "stages.json")
    if isinstance(stages, dict) and stages:
        rows = [[name, seconds(s.get("seconds")), "kept from an earlier run" if s.get("skipped_last_run") else "run"]
                for name, s in stages.items() if isinstance(s, dict)]
        note = "A stage whose folder already held DONE was kept, not redone; its time is from the run that made it."
        v.parts.append(("How long each stage took", table(["Stage", "Time (s)", "This time"], rows, kinds="lnl")
                        + paragraph(note, "muted")))
        v.used.add("stages.json")
    return v


def data_view(run: Path, cfg: dict) -> RunView:
    v = RunView()
    sets = read_json(run, "datasets.json")
    if isinstance(sets, list) and all(isinstance(s, dict) and "dataset" in s for s in sets):
        rows = [[s["dataset"], count(s.get("images")), count(s.get("classes"))] for s in sets]
        v.parts.append(("Image sets", table(["Data set", "Images", "Classes"], rows)))
        v.used.add("datasets.json")
        v.figure_row(*[(f"{s['dataset']}.png", preview_caption(s)) for s in sets
                       if (run / f"{s['dataset']}.png").exists()])
    return v


def preview_caption(s: dict) -> str:
    shown = f"{s['shown']} of its" if s.get("shown") else "a sample of its"
    return f"{s['dataset']}: {shown} {count(s.get('images'))} images, balanced over the classes, each titled with its class."
