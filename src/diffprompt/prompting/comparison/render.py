"""The comparison for people: its markdown table, its bar chart and its learning-curve chart.

Each function takes the dicts that `compare.py` writes as compare.json and learning_curve.json.
Figures use matplotlib's object API (no pyplot), so no global backend or figure state is touched.
"""

from __future__ import annotations

import math
from pathlib import Path

from matplotlib.figure import Figure

from .config import CompareConfig

COLORS = {"zero-shot": "#9e9e9e", "prompt-ft": "#1f77b4", "soft": "#2ca02c", "hybrid": "#9467bd", "finetune": "#d62728",
          "prompt-ft+demos-random": "#6baed6", "prompt-ft+demos-similar": "#08519c", "prompt-ft+auto": "#17becf",
          "pet": "#ff7f0e", "pet-distilled": "#8c564b", "zero-shot+cal-content-free": "#c7c7c7",
          "zero-shot+cal-domain": "#636363",
          "prefix-tuning": "#006d2c", "p-tuning-v2": "#54278f"}  # deep soft / hybrid darker; other rows: matplotlib's cycle


def _mean_std(mean: float, std: float) -> str:
    return "–" if math.isnan(mean) else f"{100 * mean:.1f} ({100 * std:.1f})"


def markdown_table(cc: CompareConfig, summary: dict) -> str:
    """compare.md: "mean (std)" test accuracy in % per row and data set, the majority-class row
    first, a last column with each row's mean over the data sets (more than one), then the margins."""
    by = {(r["dataset"], r["method"]): r for r in summary["table"]}
    maj = {r["dataset"]: r["accuracy"] for r in summary["majority"]}
    avg = {r["method"]: r["mean"] for r in summary.get("averages", [])} if len(cc.datasets) > 1 else None
    extra = (lambda value: [] if avg is None else [value])  # the mean column's entry, when there is one
    lines = ["| method | " + " | ".join([*cc.datasets, *extra("mean")]) + " |",
             "| --- | " + " | ".join("---:" for _ in [*cc.datasets, *extra("mean")]) + " |",
             "| majority class | " + " | ".join([*(f"{100 * maj[d]:.1f}" for d in cc.datasets),
                                                 *extra(f"{100 * sum(maj.values()) / len(maj):.1f}")]) + " |"]
    for m in cc.rows:
        cells = [_mean_std(by[(d, m)]["mean"], by[(d, m)]["std"]) if (d, m) in by else "–" for d in cc.datasets]
        mean = f"{100 * avg[m]:.1f}" if avg is not None and m in avg else "–"
        lines.append(f"| {m} | " + " | ".join([*cells, *extra(mean)]) + " |")
    n = max((r["n"] for r in summary["table"]), default=0)
    test = f", first {cc.limit_test} test examples" if cc.limit_test else ", full test split"
    text = (f"Test accuracy (%), K = {cc.shots} examples per class, mean (std) over {n} seed(s) "
            f"{', '.join(map(str, cc.seeds))}{test}.\n\n" + "\n".join(lines) + "\n")
    if summary.get("margins"):
        text += "\n" + "\n".join(f"- {m['comparison']}: {m['points']:+.1f}" for m in summary["margins"]) + "\n"
    return text


def draw_compare(cc: CompareConfig, summary: dict, path: Path) -> None:
    """compare.png: grouped bars (mean, error bar one std) per data set, the majority class dashed."""
    by = {(r["dataset"], r["method"]): r for r in summary["table"]}
    maj = {r["dataset"]: r["accuracy"] for r in summary["majority"]}
    width = 0.8 / len(cc.rows)
    fig = Figure(figsize=(max(5.0, 1.6 * len(cc.datasets) + 2), 3.6))
    ax = fig.subplots()
    for j, m in enumerate(cc.rows):
        rows = [(i, by[(d, m)]) for i, d in enumerate(cc.datasets) if (d, m) in by]
        ax.bar([i - 0.4 + width * (j + 0.5) for i, _ in rows], [100 * r["mean"] for _, r in rows], width,
               yerr=[100 * r["std"] for _, r in rows], capsize=2, label=m, color=COLORS.get(m),
               edgecolor="black", linewidth=0.4)
    for i, d in enumerate(cc.datasets):
        ax.hlines(100 * maj[d], i - 0.45, i + 0.45, colors="black", linestyles="dashed", linewidth=1,
                  label="majority class" if i == 0 else None)
    ax.set_xticks(range(len(cc.datasets)))
    ax.set_xticklabels([d.upper() if len(d) <= 5 else d for d in cc.datasets])
    ax.set_ylabel("test accuracy (%)")
    n = max((r["n"] for r in summary["table"]), default=0)
    ax.set_title(f"K = {cc.shots} per class, mean ± std over {n} seed(s)", fontsize=10)
    lo = min([100 * v for v in maj.values()] + [100 * r["mean"] - 100 * r["std"] for r in summary["table"]] + [100])
    ax.set_ylim(max(0, math.floor(lo / 10) * 10 - 10), 100)
    ax.legend(fontsize=7, ncol=3, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def draw_learning_curve(curve: dict, path: Path) -> None:
    """learning_curve.png: one panel per data set, test accuracy against K (log scale) per method,
    error bars one std over the seeds, the majority class dashed."""
    datasets = [m["dataset"] for m in curve["majority"]]
    maj = {m["dataset"]: m["accuracy"] for m in curve["majority"]}
    fig = Figure(figsize=(4.6 * len(datasets), 3.4))
    axes = fig.subplots(1, len(datasets), squeeze=False)[0]
    for ax, d in zip(axes, datasets):
        shots = []
        for c in (c for c in curve["curves"] if c["dataset"] == d):
            shots = c["shots"]
            ax.errorbar(shots, [100 * v for v in c["mean"]], yerr=[100 * v for v in c["std"]], marker="o", capsize=3,
                        label=c["method"], color=COLORS.get(c["method"]))
        ax.axhline(100 * maj[d], color="black", linestyle="--", linewidth=1, label="majority class")
        ax.set_xscale("log", base=2)
        ax.set_xticks(shots)
        ax.set_xticklabels([str(k) for k in shots])
        ax.set_xlabel("K (training examples per class)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{d.upper()}: accuracy vs K ({len(curve['seeds'])} seed(s))", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
