"""`diffprompt prompting ...` end to end on tiny settings, and every bad input: exit 2, one line, no traceback."""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import textwrap

import pytest

from diffprompt.cli import main


@pytest.fixture(scope="module")
def soft_run(tmp_path_factory):
    """A tiny trained soft-prompt run folder (2 soft tokens, 2 steps)."""
    out = tmp_path_factory.mktemp("prompting") / "soft"
    code = main(["prompting", "train", "--dataset", "mr", "--method", "soft", "--template", "{x} {soft*2} {mask}",
                 "--shots", "4", "--seed", "13", "--steps", "2", "--eval-every", "2", "--limit-test", "16",
                 "--threads", "1", "--out", str(out)])
    assert code == 0
    return out


def test_zero_shot_cli(tmp_path, capsys):
    out = tmp_path / "zs"
    assert main(["prompting", "zero-shot", "--dataset", "mr", "--limit-test", "64", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    res = json.loads((out / "results.json").read_text())
    assert res["method"] == "zero-shot" and res["num_test"] == 64
    assert f"{100 * res['test_accuracy']:.2f} %" in printed
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 64
    assert (out / "DONE").exists()


def test_train_then_evaluate_gives_the_training_runs_test_accuracy(soft_run, capsys):
    res = json.loads((soft_run / "results.json").read_text())
    # the prompt file is small: two soft tokens of the 128-wide BERT-tiny
    assert (soft_run / "prompt.safetensors").stat().st_size < 10_000
    capsys.readouterr()
    assert main(["prompting", "evaluate", str(soft_run), "--limit", "16"]) == 0
    ev = json.loads((soft_run / "evaluate-mr-test.json").read_text())
    # same 16 test examples, same model: same accuracy as at the end of training
    assert ev["n"] == 16 and ev["accuracy"] == pytest.approx(res["test_accuracy"])


def test_predict_prints_what_the_saved_prompt_predicts(soft_run, tmp_path, capsys):
    """`predict` equals the prompt file loaded on its own (PromptClassifier.from_file): the same
    label and the same label scores (log-probabilities, to the 4 decimals printed) for every text."""
    from diffprompt.prompting.models.prompt_classifier import PromptClassifier

    texts = ["a gorgeous , witty film", "dull and slow", "one fine movie", "another bad one"]
    names = json.loads((soft_run / "config.json").read_text())["class_names"]
    model = PromptClassifier.from_file(soft_run / "prompt.safetensors")
    scores = model.scores_in_batches(texts)
    expected = [(names[int(row.argmax())], row) for row in scores]
    capsys.readouterr()
    assert main(["prompting", "predict", str(soft_run), "--text", texts[0], "--text", texts[1]]) == 0
    lines = [line.split("\t") for line in capsys.readouterr().out.strip().splitlines()]
    assert [(label, text) for label, _, text in lines] == [(label, t) for (label, _), t in zip(expected[:2], texts)]
    for (_, score, _), (label, row) in zip(lines, expected):
        assert float(score) == pytest.approx(float(row[names.index(label)]), abs=1e-4)
    inp = tmp_path / "in.txt"
    inp.write_text("one fine movie\n\nanother bad one\n", encoding="utf-8")
    assert main(["prompting", "predict", str(soft_run), "--input", str(inp), "--output", str(tmp_path / "p.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == texts[2:]  # the blank line is skipped
    for r, (label, row) in zip(rows, expected[2:]):
        assert r["label"] == label
        assert r["scores"] == pytest.approx({n: float(v) for n, v in zip(names, row)}, abs=1e-4)


def test_a_run_folder_written_before_class_names_still_evaluates(soft_run, tmp_path):
    """Older run folders call the class names "label_names" in config.json and in the prompt's
    sidecar: they evaluate to the same accuracy as the folder written today."""
    old = tmp_path / "old"
    shutil.copytree(soft_run, old)
    for name in ("config.json", "prompt.json"):
        record = json.loads((old / name).read_text())
        holder = record if name == "config.json" else record["verbalizer"]
        holder["label_names"] = holder.pop("class_names")
        (old / name).write_text(json.dumps(record))
    assert main(["prompting", "evaluate", str(soft_run), "--limit", "16"]) == 0
    assert main(["prompting", "evaluate", str(old), "--limit", "16"]) == 0
    now, before = (json.loads((d / "evaluate-mr-test.json").read_text()) for d in (soft_run, old))
    assert before["accuracy"] == now["accuracy"] and before["n"] == now["n"] == 16


def test_compare_cli_two_seeds_mean_and_sample_std_and_resume(tmp_path, capsys):
    """Two seeds: compare.json's mean and std, and compare.md's "mean (std)" cells, are
    statistics.mean and statistics.stdev (n - 1) of the cells' own test accuracies."""
    out = tmp_path / "cmp"
    argv = ["prompting", "compare", "--datasets", "mr", "--rows", "zero-shot,soft", "--shots", "4", "--seeds", "13,21",
            "--steps", "2", "--eval-every", "2", "--limit-test", "24", "--curve-shots", "2,4", "--threads", "1",
            "--out", str(out)]
    assert main(argv) == 0
    for name in ("compare.json", "compare.md", "compare.png", "learning_curve.json", "learning_curve.png", "DONE"):
        assert (out / name).exists(), name
    assert json.loads((out / "config.json").read_text())["kind"] == "prompting-compare"
    summary = json.loads((out / "compare.json").read_text())
    rows = {r["method"]: r for r in summary["table"]}
    assert set(rows) == {"zero-shot", "soft"}
    md = (out / "compare.md").read_text()
    for method, row in rows.items():
        accs = [json.loads((out / f"cells/mr/k4/{method}/seed{s}/results.json").read_text())["test_accuracy"]
                for s in (13, 21)]
        assert row["n"] == 2 and row["accuracies"] == accs
        assert row["mean"] == pytest.approx(statistics.mean(accs), abs=1e-12)
        assert row["std"] == pytest.approx(statistics.stdev(accs), abs=1e-12)
        assert f"| {method} | {100 * statistics.mean(accs):.1f} ({100 * statistics.stdev(accs):.1f}) |" in md
    assert rows["soft"]["std"] > 0  # the seeds differ, so n against n - 1 shows
    assert "| majority class |" in md and "over 2 seed(s) 13, 21" in md
    curve = json.loads((out / "learning_curve.json").read_text())
    assert curve["curves"][0]["shots"] == [2, 4] and curve["curves"][0]["n"] == [2, 2]
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    n_metrics = len((out / "metrics.jsonl").read_text().splitlines())
    assert n_metrics == 8
    capsys.readouterr()
    # resume: every cell is finished, nothing is rerun
    assert main(argv) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == n_metrics
    assert "resumed: 8 of 8 cells" in capsys.readouterr().err
    # a changed setting reruns exactly the cells it touches (soft at K = 4 and K = 2, two seeds each)
    assert main(argv + ["--lr", "soft=0.5"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == n_metrics + 4
    assert json.loads((out / "cells/mr/k4/soft/seed13/config.json").read_text())["lr"] == 0.5


DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, sys
    from diffprompt.cli import main
    for argv in json.loads(sys.argv[1]):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
        print(json.dumps({"code": code, "err": err.getvalue()}), flush=True)
    """
)


def test_bad_inputs_exit_2_with_one_line(soft_run, tmp_path):
    one_class = tmp_path / "one.csv"
    one_class.write_text("text,label\n" + "".join(f"text number {i},pos\n" for i in range(20)), encoding="utf-8")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("un film tr\xe8s r\xe9ussi\n".encode("latin-1"))
    latin_csv = tmp_path / "latin.csv"
    latin_csv.write_bytes(("text,label\n" + "".join(f"caf\xe9 {i},{i % 2}\n" for i in range(20))).encode("latin-1"))
    more_soft = tmp_path / "more_soft"
    shutil.copytree(soft_run, more_soft)
    conf = json.loads((more_soft / "config.json").read_text())
    conf["template"] = "{x} {soft*3} {mask}"
    (more_soft / "config.json").write_text(json.dumps(conf))
    other_bb = tmp_path / "other_backbone"
    shutil.copytree(soft_run, other_bb)
    side = json.loads((other_bb / "prompt.json").read_text())
    side["backbone"] = "roberta-large"
    (other_bb / "prompt.json").write_text(json.dumps(side))

    base = ["--limit-test", "8", "--threads", "1"]
    cases = [
        (["prompting", "zero-shot", "--dataset", "mr", "--template", "{x} It was great."] + base, "mask"),
        (["prompting", "zero-shot", "--dataset", "mr", "--template", "{x} It was {mask} {y}."] + base, "y"),
        (["prompting", "zero-shot", "--dataset", "mr", "--verbalizer", "negative:bad"] + base, "lacks label"),
        (["prompting", "train", "--dataset", str(one_class), "--steps", "1"] + base, "one class"),
        (["prompting", "train", "--dataset", "cr", "--shots", "900", "--steps", "1"] + base,
         r"K=900 is larger than class 'negative' (label 0)"),
        (["prompting", "evaluate", str(more_soft)], "soft tokens"),
        (["prompting", "evaluate", str(other_bb)], "roberta-large"),
        (["prompting", "predict", str(soft_run), "--input", str(latin)], "not UTF-8"),
        (["prompting", "zero-shot", "--dataset", str(latin_csv)] + base, "not UTF-8"),
        (["prompting", "compare", "--rows", "zero-shot,prefix"], "unknown method"),
    ]
    env = {**os.environ, "DIFFPROMPT_QUIET": "1"}
    proc = subprocess.run([sys.executable, "-c", DRIVER, json.dumps([c for c, _ in cases])],
                          capture_output=True, text=True, timeout=300, env=env, cwd=str(tmp_path))
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(results) == len(cases), proc.stderr[-2000:]
    for (argv, needle), r in zip(cases, results):
        lines = [x for x in r["err"].splitlines() if x.strip()]
        assert r["code"] == 2, (argv, r)
        assert len(lines) == 1 and lines[0].startswith("diffprompt: error: "), (argv, r["err"])
        assert needle in lines[0], (argv, lines[0])
