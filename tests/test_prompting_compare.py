"""The comparison on its own (prompting/comparison/compare.py, render.py): its statistics against
`statistics`, its cells, its markdown table, and resuming, with a stand-in for the training of a
cell so that no model is loaded. `test_prompting_cli.py` runs a real comparison end to end."""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import asdict
from types import SimpleNamespace

import pytest

from diffprompt.data import Example
from diffprompt.prompting.comparison import compare
from diffprompt.prompting.comparison.config import CompareConfig
from diffprompt.prompting.comparison.render import markdown_table

# The test split of the stand-in data set: 6 of 8 examples in class 1, so the majority class scores 0.75.
TEST_LABELS = [1, 0, 1, 1, 0, 1, 1, 1]


def fake_data(name: str):
    examples = [Example(f"{name} test text {i}", y) for i, y in enumerate(TEST_LABELS)]
    return SimpleNamespace(split=lambda split: SimpleNamespace(examples=examples))


def accuracy_of(method: str, shots: int, seed: int) -> float:
    """The stand-in's test accuracy of a cell: zero-shot does not depend on the seed, the others do."""
    if method == "zero-shot":
        return 0.625
    return round(0.5 + 0.01 * shots + 0.037 * (seed % 5) + (0.1 if method == "prompt-ft" else 0.0), 6)


@pytest.mark.parametrize("values", [[0.5, 0.75], [0.61, 0.64, 0.7], [0.1, 0.9, 0.35, 0.35, 0.8], [0.2, 0.2]])
def test_mean_std_is_the_mean_and_the_sample_standard_deviation(values):
    mean, std = compare.mean_std(values)
    assert mean == pytest.approx(statistics.mean(values), abs=1e-15)
    assert std == pytest.approx(statistics.stdev(values), abs=1e-15)  # n - 1 in the denominator


def test_mean_std_skips_nan_and_gives_zero_spread_for_one_value():
    assert compare.mean_std([0.5, math.nan, 0.75]) == pytest.approx((0.625, statistics.stdev([0.5, 0.75])))
    assert compare.mean_std([0.8]) == (0.8, 0.0)
    for empty in ([], [math.nan]):
        mean, std = compare.mean_std(empty)
        assert math.isnan(mean) and math.isnan(std)


def compare_config(**kw) -> CompareConfig:
    base = dict(datasets=["mr", "cr"], rows=["zero-shot", "prompt-ft", "finetune"], seeds=[13, 21, 42], shots=4,
                curve_shots=[2, 4, 8], steps=2, eval_every=2, limit_test=None)
    cc = CompareConfig(**{**base, **kw})
    cc.validate()
    return cc


def results_for(cc: CompareConfig, skip=()) -> dict:
    return {cell: {"test_accuracy": accuracy_of(cell[1], cell[2], cell[3]), "train_seconds": 1.0}
            for cell in compare.comparison_cells(cc) if cell not in skip}


def test_grid_cells_main_grid_then_the_curves_new_shots():
    cc = compare_config(curve_rows=["prompt-ft"])
    cells = compare.comparison_cells(cc)
    main = [(d, m, 4, s) for d in ("mr", "cr") for s in (13, 21, 42) for m in ("zero-shot", "prompt-ft", "finetune")]
    assert cells[:len(main)] == main
    # the curve (mr only: the default curve data set) reuses the main grid's K = 4 cells
    assert cells[len(main):] == [("mr", "prompt-ft", k, s) for k in (2, 8) for s in (13, 21, 42)]
    assert len(set(cells)) == len(cells)


def test_summary_rows_are_mean_and_sample_std_of_the_seeds_accuracies():
    cc = compare_config()
    missing = ("cr", "finetune", 4, 42)
    summary = compare.summarise(cc, results_for(cc, skip={missing}), fake_data)
    rows = {(r["dataset"], r["method"]): r for r in summary["table"]}
    assert len(rows) == 6
    for (d, m), row in rows.items():
        seeds = [s for s in cc.seeds if (d, m, 4, s) != missing]
        accs = [accuracy_of(m, 4, s) for s in seeds]
        assert row["accuracies"] == accs and row["n"] == len(accs)
        assert row["mean"] == pytest.approx(statistics.mean(accs), abs=1e-15)
        assert row["std"] == pytest.approx(statistics.stdev(accs), abs=1e-15)
    assert rows[("mr", "prompt-ft")]["std"] > 0.03 and rows[("mr", "zero-shot")]["std"] == 0.0
    assert summary["majority"] == [{"dataset": "mr", "accuracy": 0.75}, {"dataset": "cr", "accuracy": 0.75}]
    margins = {m["comparison"]: m["points"] for m in summary["margins"]}
    assert margins["mr: zero-shot minus majority (points)"] == pytest.approx(100 * (0.625 - 0.75))
    ft = statistics.mean(accuracy_of("finetune", 4, s) for s in (13, 21))
    pft = statistics.mean(accuracy_of("prompt-ft", 4, s) for s in cc.seeds)
    assert margins["cr: prompt-ft minus finetune (points)"] == pytest.approx(100 * (pft - ft))


def test_markdown_table_shows_mean_and_std_in_percent_and_a_dash_for_no_result():
    cc = compare_config(rows=["zero-shot", "prompt-ft", "soft"])
    results = {c: r for c, r in results_for(cc).items() if c[1] != "soft" or c[0] == "mr"}
    md = markdown_table(cc, compare.summarise(cc, results, fake_data))
    accs = [accuracy_of("prompt-ft", 4, s) for s in cc.seeds]
    cell = f"{100 * statistics.mean(accs):.1f} ({100 * statistics.stdev(accs):.1f})"
    assert f"| prompt-ft | {cell} | {cell} |" in md
    assert "| zero-shot | 62.5 (0.0) | 62.5 (0.0) |" in md
    soft = [accuracy_of("soft", 4, s) for s in cc.seeds]
    assert f"| soft | {100 * statistics.mean(soft):.1f} ({100 * statistics.stdev(soft):.1f}) | – |" in md
    assert "| majority class | 75.0 | 75.0 |" in md
    assert md.startswith("Test accuracy (%), K = 4 examples per class, mean (std) over 3 seed(s) 13, 21, 42, full test split.")
    assert "- mr: zero-shot minus majority (points): -12.5" in md


def test_learning_curve_is_mean_and_std_per_shot_count():
    cc = compare_config(curve_rows=["prompt-ft", "zero-shot"])
    curve = compare.learning_curve(cc, results_for(cc, skip={("mr", "prompt-ft", 8, 42)}), fake_data)
    [pft, zs] = curve["curves"]
    assert (pft["dataset"], pft["method"], pft["shots"], pft["n"]) == ("mr", "prompt-ft", [2, 4, 8], [3, 3, 2])
    for i, k in enumerate((2, 4, 8)):
        accs = [accuracy_of("prompt-ft", k, s) for s in (cc.seeds if k != 8 else [13, 21])]
        assert pft["mean"][i] == pytest.approx(statistics.mean(accs)) and pft["std"][i] == pytest.approx(statistics.stdev(accs))
    assert zs["mean"] == [0.625] * 3 and zs["std"] == [0.0] * 3
    assert curve["majority"] == [{"dataset": "mr", "accuracy": 0.75}]


# ---------------------------------------------------------------------------------------------- resuming


def write_cell(path, cfg, accuracy: float, done: bool = True) -> dict:
    """What `train_run` leaves in a cell's folder: config.json (the resolved config and more), results.json, DONE."""
    path.mkdir(parents=True, exist_ok=True)
    res = {"test_accuracy": accuracy, "dev_accuracy": 0.5, "train_seconds": 0.01}
    (path / "config.json").write_text(json.dumps({**asdict(cfg.resolved()), "pair": False, "class_names": ["a", "b"]}))
    (path / "results.json").write_text(json.dumps(res))
    if done:
        (path / "DONE").write_text("")
    return res


def test_a_finished_cell_is_reused_only_with_the_same_result_settings(tmp_path):
    cc = compare_config()
    cfg = cc.cell_config("mr", "prompt-ft", 4, 13)
    res = write_cell(tmp_path / "cell", cfg, 0.7)
    assert compare.finished_results(tmp_path / "cell", cfg) == res
    # settings that do not change the result: still reused
    for change in ({"device": "cuda"}, {"eval_batch_size": 7}, {"num_examples": 1}):
        assert compare.finished_results(tmp_path / "cell", type(cfg)(**{**asdict(cfg), **change})) == res, change
    # settings that do: rerun
    for change in ({"lr": 0.5}, {"steps": 3}, {"seed": 21}, {"limit_test": 10}, {"template": "{x} So {mask}."}):
        assert compare.finished_results(tmp_path / "cell", type(cfg)(**{**asdict(cfg), **change})) is None, change
    # unfinished or damaged folders: rerun
    write_cell(tmp_path / "busy", cfg, 0.7, done=False)
    assert compare.finished_results(tmp_path / "busy", cfg) is None
    (tmp_path / "cell" / "results.json").write_text("{not json")
    assert compare.finished_results(tmp_path / "cell", cfg) is None


@pytest.fixture
def stand_in(monkeypatch):
    """Cells 'train' by writing what train_run writes; every call is recorded."""
    calls = []

    def train_run(cfg, out, ds=None, backbone=None, quiet=False, extra_config=None):
        calls.append((cfg.dataset, cfg.method, cfg.shots, cfg.seed))
        return write_cell(out, cfg, accuracy_of(cfg.method, cfg.shots, cfg.seed))

    monkeypatch.setattr(compare, "train_run", train_run)
    monkeypatch.setattr(compare, "fresh_backbone", lambda name: None)
    monkeypatch.setattr(compare, "load_data", fake_data)
    return calls


def test_run_compare_resumes_finished_cells_and_reruns_exactly_the_changed_ones(stand_in, tmp_path, capsys):
    cc = compare_config(datasets=["mr"], rows=["zero-shot", "soft"], seeds=[13, 21], curve_shots=[2, 4])
    out = tmp_path / "cmp"
    summary = compare.run_compare(cc, out)
    cells = compare.comparison_cells(cc)
    assert stand_in == cells and len(cells) == 8  # 2 methods x 2 seeds at K = 4, and again at K = 2
    saved = json.loads((out / "compare.json").read_text())
    rows = {r["method"]: r for r in saved["table"]}
    soft = [accuracy_of("soft", 4, s) for s in (13, 21)]
    assert rows["soft"]["std"] == pytest.approx(statistics.stdev(soft)) and rows["soft"]["std"] > 0.03
    assert {k: v for k, v in summary.items() if k != "seconds"} == saved and (out / "DONE").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 8

    stand_in.clear()
    capsys.readouterr()
    compare.run_compare(cc, out)
    assert stand_in == [] and "resumed: 8 of 8 cells" in capsys.readouterr().err
    assert json.loads((out / "compare.json").read_text())["table"] == saved["table"]

    cc.lr = {"soft": 0.5}
    compare.run_compare(cc, out)
    assert stand_in == [c for c in cells if c[1] == "soft"]
    assert json.loads((out / "cells/mr/k2/soft/seed21/config.json").read_text())["lr"] == 0.5


# ---------------------------------------------------------------------------------------------- rows and shards

NEW_ROWS = ["prompt-ft+demos-random", "prompt-ft+demos-similar", "prompt-ft+auto", "pet", "pet-distilled",
            "zero-shot+cal-content-free", "zero-shot+cal-domain"]


@pytest.fixture
def row_stand_in(monkeypatch):
    """Like `stand_in`, and a PET cell also reports its ensemble's accuracy (0.01 above the distilled model's)."""
    calls = []

    def train_run(cfg, out, ds=None, backbone=None, quiet=False, extra_config=None):
        calls.append((cfg.dataset, cfg.method, cfg.demos, cfg.verbalizer, cfg.calibrate, cfg.seed))
        res = write_cell(out, cfg, accuracy_of(cfg.method, cfg.shots, cfg.seed))
        if cfg.method == "pet":
            res["ensemble_test_accuracy"] = res["test_accuracy"] + 0.01
            (out / "results.json").write_text(json.dumps(res))
        return res

    monkeypatch.setattr(compare, "train_run", train_run)
    monkeypatch.setattr(compare, "fresh_backbone", lambda name: None)
    monkeypatch.setattr(compare, "load_data", fake_data)
    return calls


def test_new_rows_set_their_run_settings_and_pet_rows_share_one_run(row_stand_in, tmp_path):
    cc = compare_config(datasets=["mr", "cr"], rows=NEW_ROWS, seeds=[13, 21], curve=False)
    summary = compare.run_compare(cc, tmp_path / "cmp")
    assert len(row_stand_in) == 2 * 2 * 6  # 7 rows, 6 runs: pet and pet-distilled are one
    assert set(row_stand_in) == {(d, m, demos, words, cal, s) for d in ("mr", "cr") for s in (13, 21)
                                 for m, demos, words, cal in (("prompt-ft", "random", None, "none"),
                                                              ("prompt-ft", "similar", None, "none"),
                                                              ("prompt-ft", "none", "auto", "none"),
                                                              ("pet", "none", None, "none"),
                                                              ("zero-shot", "none", None, "content-free"),
                                                              ("zero-shot", "none", None, "domain"))}
    assert (tmp_path / "cmp/cells/mr/k4/prompt-ft+demos-similar/seed21/DONE").exists()
    rows = {(r["dataset"], r["method"]): r for r in summary["table"]}
    distilled = [accuracy_of("pet", 4, s) for s in (13, 21)]
    assert rows[("cr", "pet-distilled")]["accuracies"] == distilled
    assert rows[("cr", "pet")]["accuracies"] == pytest.approx([a + 0.01 for a in distilled])
    averages = {r["method"]: r["mean"] for r in summary["averages"]}
    assert averages["pet"] == pytest.approx(statistics.mean([rows[(d, "pet")]["mean"] for d in ("mr", "cr")]))
    md = (tmp_path / "cmp/compare.md").read_text()
    assert "| method | mr | cr | mean |" in md and "| pet-distilled | " in md and "| majority class | 75.0 | 75.0 | 75.0 |" in md


def test_shards_split_the_cells_and_a_last_run_reuses_all_of_them(row_stand_in, tmp_path, capsys):
    cc = compare_config(datasets=["mr", "cr"], rows=["prompt-ft", "pet", "pet-distilled"], seeds=[13, 21, 42],
                        curve_rows=["pet"], curve_shots=[2, 4])
    cells = compare.comparison_cells(cc)
    shares = [compare.shard_cells(cells, i, 2) for i in range(2)]
    assert sorted(shares[0] + shares[1]) == sorted(cells) and not set(shares[0]) & set(shares[1])
    assert abs(len(shares[0]) - len(shares[1])) <= 2  # whole (data set, K, seed) groups, dealt in turn
    out = tmp_path / "cmp"
    for i in range(2):
        assert compare.run_compare(cc, out, shard=(i, 2)) == {}
    assert len(row_stand_in) == len(cells) and not (out / "compare.json").exists()
    row_stand_in.clear()
    capsys.readouterr()
    summary = compare.run_compare(cc, out)
    assert row_stand_in == [] and f"resumed: {len(cells)} of {len(cells)} cells" in capsys.readouterr().err
    assert {r["method"] for r in summary["table"]} == {"prompt-ft", "pet", "pet-distilled"}
    curve = json.loads((out / "learning_curve.json").read_text())
    assert [c["method"] for c in curve["curves"]] == ["pet"] and curve["curves"][0]["n"] == [3, 3]
