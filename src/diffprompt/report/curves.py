"""Training curves drawn from a run's `metrics.jsonl` (loss, dev accuracy, learning rate, ...).

Only for runs whose metrics are logged per training step and that do not already draw their
own curve (a diffusion run writes `loss.png`; a comparison grid logs one line per cell).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..rundir import METRICS_FILE
from .generic import human
from .markup import plot_figure
from .numbers import is_number

MAX_PANELS = 6
SKIP = ("step", "time", "epoch")


def metric_rows(run: Path) -> list[dict]:
    """The lines of metrics.jsonl that carry a step (an unreadable line is skipped)."""
    p = run / METRICS_FILE
    rows = []
    for line in p.read_text().splitlines() if p.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return [r for r in rows if isinstance(r, dict) and "step" in r]


def curves_html(run: Path) -> str:
    """One panel per numeric metric against step, as an inlined figure; "" when there is nothing to draw."""
    rows = metric_rows(run)
    keys = sorted({k for r in rows for k, v in r.items() if k not in SKIP and is_number(v)})[:MAX_PANELS]
    if not keys:
        return ""
    import matplotlib  # lazy: matplotlib is slow to import and only pages with curves need it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 2.8), squeeze=False)
    for ax, k in zip(axes[0], keys):
        pts = [(r["step"], r[k]) for r in rows if is_number(r.get(k))]
        ax.plot([s for s, _ in pts], [v for _, v in pts], lw=1.2, marker="o" if len(pts) < 20 else None, ms=3)
        ax.set_title(human(k), fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        if k.startswith("loss") and all(v > 0 for _, v in pts):
            ax.set_yscale("log")
    fig.tight_layout()
    out = plot_figure(fig, f"{', '.join(human(k) for k in keys)} against training step, "
                           f"as logged in {METRICS_FILE} ({len(rows)} lines).")
    plt.close(fig)
    return out


def wants_curves(run: Path, cfg: dict) -> bool:
    return not (run / "loss.png").exists() and cfg.get("kind") != "prompting-compare"
