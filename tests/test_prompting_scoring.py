"""Scoring a classifier on examples (scores, loss, dev accuracy, predictions, the evaluation of a run
folder) and the classification metrics behind them.

The classifier is a stand-in with a fixed score per input text that records how it was called, so
every number is computed by hand; the data set is a `TextDataset` built here with chosen splits.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch

from diffprompt.data.text import Example, TextDataset
from diffprompt.errors import UserError
from diffprompt.prompting.run import scoring
from diffprompt.prompting.run.metrics import accuracy, macro_f1
from diffprompt.prompting.run.scoring import dev_accuracy, evaluate_run, mean_loss, predict_texts, score

NAMES = ["neg", "pos"]


class FixedScores:
    """A classifier whose scores depend only on the first text; it records each batch call."""

    def __init__(self, table: dict[str, list[float]]):
        self.table = table
        self.calls = []

    def scores_in_batches(self, texts, texts_b=None, batch_size: int = 64, desc: str | None = None) -> torch.Tensor:
        self.calls.append({"texts": list(texts), "texts_b": texts_b, "batch_size": batch_size, "desc": desc})
        if not texts:
            return torch.zeros(0, 2)
        return torch.tensor([self.table[t] for t in texts], dtype=torch.float32)


TABLE = {"good": [0.25, 2.0], "bad": [1.5, -0.5], "meh": [0.0, 0.5]}  # argmax: pos, neg, pos
EXAMPLES = [Example("good", 1, "x"), Example("bad", 0), Example("meh", 0, "y")]  # the model gets 2 of 3 right


def cross_entropy_by_hand(rows, labels) -> float:
    return sum(math.log(sum(math.exp(v) for v in row)) - row[y] for row, y in zip(rows, labels)) / len(rows)


# ---------------------------------------------------------------------------------------------
# metrics


def test_accuracy_is_the_fraction_of_matching_labels_and_nan_without_examples():
    assert accuracy([1], [1]) == 1.0 and accuracy([0], [1]) == 0.0
    assert accuracy([0, 1, 1, 0], [0, 1, 0, 0]) == 0.75
    assert math.isnan(accuracy([], []))


def test_macro_f1_averages_the_per_class_f1_by_hand():
    """gold 0 0 0 1 1 2, predicted 0 0 1 1 2 2, class 3 absent from both:
    class 0 TP 2 FP 0 FN 1 -> 4/5; class 1 TP 1 FP 1 FN 1 -> 2/4; class 2 TP 1 FP 1 FN 0 -> 2/3; class 3 -> 0."""
    pred, gold = [0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2]
    assert macro_f1(pred, gold, 4) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3 + 0) / 4, rel=1e-12)
    assert macro_f1(pred, gold, 3) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3, rel=1e-12)


def test_macro_f1_of_a_class_never_predicted_correctly_is_zero():
    """Class 1 is predicted once (wrongly) and missed twice: F1 0; class 0 has TP 1, FP 2, FN 1 -> 2/5."""
    assert macro_f1([1, 0, 0, 0], [0, 1, 1, 0], 2) == pytest.approx((2 / 5 + 0) / 2, rel=1e-12)
    assert macro_f1([1, 1], [0, 0], 2) == 0.0


def test_macro_f1_of_perfect_predictions_is_one_even_with_a_single_class():
    assert macro_f1([0, 0], [0, 0], 1) == 1.0
    assert macro_f1([0, 1, 1], [0, 1, 1], 2) == 1.0
    assert macro_f1([], [], 0) == 0.0


# ---------------------------------------------------------------------------------------------
# scores, loss and dev accuracy during a run


def test_score_passes_both_texts_of_pair_examples_and_the_progress_label():
    model = FixedScores(TABLE)
    out = score(model, EXAMPLES, desc="scoring dev")
    assert torch.equal(out, torch.tensor([TABLE["good"], TABLE["bad"], TABLE["meh"]]))
    assert model.calls == [{"texts": ["good", "bad", "meh"], "texts_b": ["x", "", "y"], "batch_size": 64,
                            "desc": "scoring dev"}]
    score(model, [Example("bad", 0)], batch_size=3)
    assert model.calls[-1] == {"texts": ["bad"], "texts_b": None, "batch_size": 3, "desc": None}


def test_mean_loss_is_the_mean_cross_entropy_of_the_scores():
    model = FixedScores(TABLE)
    want = cross_entropy_by_hand([TABLE["good"], TABLE["bad"], TABLE["meh"]], [1, 0, 0])
    assert mean_loss(model, EXAMPLES) == pytest.approx(want, rel=1e-6)  # float32 scores
    assert mean_loss(model, EXAMPLES, batch_size=2) == pytest.approx(want, rel=1e-6)
    assert [c["batch_size"] for c in model.calls] == [64, 2]


def test_mean_loss_of_no_examples_is_nan():
    assert math.isnan(mean_loss(FixedScores(TABLE), []))


def test_dev_accuracy_compares_each_examples_best_label_with_its_gold_label():
    model = FixedScores(TABLE)
    assert dev_accuracy(model, EXAMPLES) == pytest.approx(2 / 3, rel=1e-12)
    assert dev_accuracy(model, EXAMPLES, batch_size=5) == pytest.approx(2 / 3, rel=1e-12)
    assert [c["batch_size"] for c in model.calls] == [64, 5]
    assert dev_accuracy(model, [Example("good", 1), Example("bad", 0), Example("bad", 0)]) == 1.0
    assert math.isnan(dev_accuracy(model, []))
    assert len(model.calls) == 3  # no examples: the model is not called


# ---------------------------------------------------------------------------------------------
# a finished run folder: evaluate and predict


def toy_data(test_examples, class_names=NAMES, train=(Example("good", 1), Example("bad", 1))) -> TextDataset:
    examples = list(train) + list(test_examples)
    return TextDataset(name="toy", examples=examples, class_names=list(class_names),
                       _split_indices={"train": np.arange(len(train)), "test": np.arange(len(train), len(examples))})


@pytest.fixture
def fake_run(monkeypatch):
    """A run folder's model and config, and the data set `load_data` gives, without loading either."""
    state = {"model": FixedScores(TABLE), "conf": {"dataset": "toy", "class_names": list(NAMES), "method": "soft"},
             "data": toy_data(EXAMPLES), "loads": []}

    def load_run_model(run_dir, device="cpu"):
        state["loads"].append((run_dir, device))
        return state["model"], state["conf"]

    def load_data(name):
        state["loads"].append(name)
        return state["data"]

    monkeypatch.setattr(scoring, "load_run_model", load_run_model)
    monkeypatch.setattr(scoring, "load_data", load_data)
    return state


def test_evaluate_run_scores_the_runs_own_test_split_and_saves_the_result(fake_run, tmp_path):
    res = evaluate_run(tmp_path)
    want = {"dataset": "toy", "split": "test", "n": 3, "accuracy": 2 / 3,
            "macro_f1": (2 / 3 + 2 / 3) / 2,  # neg: TP 1 FP 0 FN 1; pos: TP 1 FP 1 FN 0
            "run": str(tmp_path), "method": "soft"}
    assert res == pytest.approx(want) and set(res) == set(want)
    assert json.loads((tmp_path / "evaluate-toy-test.json").read_text()) == pytest.approx(want)
    assert fake_run["loads"] == [(tmp_path, "cpu"), "toy"]
    assert fake_run["model"].calls == [{"texts": ["good", "bad", "meh"], "texts_b": ["x", "", "y"],
                                        "batch_size": 64, "desc": "evaluate test"}]


def test_evaluate_run_takes_the_data_set_split_device_and_limit_asked_for(fake_run, tmp_path):
    fake_run["data"] = toy_data(EXAMPLES, train=[Example("bad", 0), Example("good", 0), Example("meh", 1)])
    res = evaluate_run(str(tmp_path), dataset="other.csv", split="train", limit=2, device="meta")
    assert fake_run["loads"] == [(str(tmp_path), "meta"), "other.csv"]
    assert (res["dataset"], res["split"], res["n"], res["run"]) == ("other.csv", "train", 2, str(tmp_path))
    call = fake_run["model"].calls[-1]
    assert call["desc"] == "evaluate train" and len(call["texts"]) == 2 and set(call["texts"]) < {"bad", "good", "meh"}
    assert (tmp_path / "evaluate-other-train.json").exists()


def test_evaluate_run_refuses_a_data_set_with_other_labels(fake_run, tmp_path):
    fake_run["data"] = toy_data(EXAMPLES, class_names=["bad", "good"])
    msg = ("data set 'toy' has labels ['bad', 'good'] but the run was trained on ['neg', 'pos']; "
           "evaluate on a data set with the same labels")
    with pytest.raises(UserError, match=re.escape(msg)):
        evaluate_run(tmp_path)


def test_evaluate_run_refuses_a_split_without_examples(fake_run, tmp_path):
    fake_run["data"] = toy_data([])
    with pytest.raises(UserError, match=re.escape("data set 'toy' has no test examples")):
        evaluate_run(tmp_path)
    assert fake_run["model"].calls == []


def test_evaluate_run_refuses_a_data_set_without_that_split(fake_run, tmp_path):
    """A data set whose split lookup fails with a plain KeyError counts as having no such split."""

    class NoSplits:
        class_names = list(NAMES)

        def split(self, name):
            raise KeyError(name)

    fake_run["data"] = NoSplits()
    with pytest.raises(UserError, match=re.escape("data set 'toy' has no dev examples")):
        evaluate_run(tmp_path, split="dev")


def test_predict_texts_gives_the_best_label_its_score_and_every_score_rounded():
    model = FixedScores({"a": [0.123456, 0.876544], "b": [0.612349, -1.0]})
    rows = predict_texts(model, ["a", "b"], NAMES)
    assert rows == [{"text": "a", "label": "pos", "score": 0.8765, "scores": {"neg": 0.1235, "pos": 0.8765}},
                    {"text": "b", "label": "neg", "score": 0.6123, "scores": {"neg": 0.6123, "pos": -1.0}}]
    assert model.calls == [{"texts": ["a", "b"], "texts_b": None, "batch_size": 64, "desc": None}]


def test_predict_texts_splits_pair_inputs_at_the_first_tab():
    """With a tab anywhere, every text is a pair: a text without one gets an empty second input."""
    model = FixedScores({"a film": [1.0, 0.0], "b": [0.0, 1.0]})
    rows = predict_texts(model, ["a film\tthe first\tthe second", "b"], NAMES, batch_size=7)
    assert model.calls == [{"texts": ["a film", "b"], "texts_b": ["the first\tthe second", ""], "batch_size": 7,
                            "desc": None}]
    assert [(r["text"], r["label"], r["score"]) for r in rows] == [
        ("a film\tthe first\tthe second", "neg", 1.0), ("b", "pos", 1.0)]
