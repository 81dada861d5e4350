"""Calibration (Zhao et al. 2021): q = (p / p_ref) renormalised, against hand computations, and end to end."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from diffprompt.cli import main
from diffprompt.data import load_text
from diffprompt.data.text import Example
from diffprompt.prompting import PromptClassifier, load_backbone
from diffprompt.prompting.prompts.calibration import (
    apply_calibration, content_free_batches, domain_examples, fit_calibration, reference_log_probs,
)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone()


@pytest.fixture(scope="module")
def clf(backbone):
    model, tok = backbone
    return PromptClassifier(model, tok, "{x} It was {mask}.", "0:bad;1:good")


def _softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_calibration_against_a_hand_computation():
    logits = [[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]]
    cf = [[1.0, 0.0, 0.2], [0.4, 0.9, -0.3]]
    p_cf = [sum(col) / 2 for col in zip(*[_softmax(r) for r in cf])]  # mean of the content-free distributions
    log_ref = reference_log_probs(torch.tensor(cf))
    assert log_ref.exp().tolist() == pytest.approx(p_cf, abs=1e-6)
    q = apply_calibration(torch.tensor(logits), log_ref).exp()
    for row, got in zip(logits, q):
        ratio = [p / r for p, r in zip(_softmax(row), p_cf)]
        assert got.tolist() == pytest.approx([v / sum(ratio) for v in ratio], abs=1e-6)


def test_a_calibrated_content_free_input_is_uniform(clf):
    for batch in content_free_batches(clf, pair=False):
        clf.set_calibration(None)
        with torch.no_grad():
            clf.set_calibration(reference_log_probs(clf(batch)))
            assert clf(batch).exp()[0].tolist() == pytest.approx([0.5, 0.5], abs=1e-6)
    clf.set_calibration(None)


def test_content_free_inputs_and_their_reference(clf):
    """The mask-token input is the template with [MASK] as the input (the tokenizer's own encoding
    of the string), and the reference is the mean of the three inputs' label distributions."""
    tok = clf.tokenizer
    na, empty, masked = content_free_batches(clf, pair=False)
    want = tok(f"{tok.mask_token} It was {tok.mask_token}.")["input_ids"]
    assert masked["input_ids"][0].tolist() == want and int(masked["mask_positions"][0]) == len(want) - 3
    assert empty["input_ids"][0].tolist() == tok("It was [MASK].")["input_ids"]
    with torch.no_grad():
        by_hand = torch.stack([torch.softmax(clf(b)[0], -1) for b in (na, empty, masked)]).mean(0)
    info = fit_calibration(clf, "content-free", lambda: [], False, 200)
    assert info["reference_probabilities"] == pytest.approx(by_hand.tolist(), abs=1e-6)
    raw = clf.scores(["a fine film ."]).detach()  # calibrated now
    clf.set_calibration(None)
    plain = clf.scores(["a fine film ."]).detach()
    assert torch.allclose(raw, torch.log_softmax(plain - by_hand.log(), -1), atol=1e-5)


def test_domain_examples_are_a_fixed_hash_selected_subset():
    train = list(load_text("mr").split("train").examples)
    chosen = domain_examples(train, 50)
    assert len(chosen) == 50 and domain_examples(list(reversed(train)), 50) == chosen
    def digest(ex) -> str:  # data.splits.stable_hash of the salted key, seed 0, written out
        return hashlib.sha256(b"0\0domain\0" + f"{ex.text}\t".encode()).hexdigest()

    assert [digest(ex) for ex in chosen] == sorted(digest(ex) for ex in train)[:50]


def test_cli_zero_shot_calibrated_runs_and_evaluate_applies_the_stored_reference(tmp_path, capsys):
    """content-free and domain runs write calibration.json; their test scores are the uncalibrated
    run's scores divided by the stored reference and renormalised; domain's reference is the mean
    over the hash-selected train texts; evaluate of the folder gives the run's own accuracy."""
    common = ["prompting", "zero-shot", "--dataset", "mr", "--limit-test", "32", "--threads", "1"]
    assert main([*common, "--out", str(tmp_path / "none")]) == 0
    plain = torch.tensor([json.loads(x)["scores"] for x in (tmp_path / "none/predictions.jsonl").read_text().splitlines()])
    for kind in ("content-free", "domain"):
        out = tmp_path / kind
        assert main([*common, "--calibrate", kind, "--domain-examples", "40", "--out", str(out)]) == 0
        info = json.loads((out / "calibration.json").read_text())
        got = torch.tensor([json.loads(x)["scores"] for x in (out / "predictions.jsonl").read_text().splitlines()])
        want = torch.log_softmax(plain - torch.tensor(info["log_reference"]), -1)
        assert torch.allclose(got, want, atol=1e-4)
        res = json.loads((out / "results.json").read_text())
        assert res["calibrate"] == kind
        assert main(["prompting", "evaluate", str(out), "--limit", "32"]) == 0
        assert json.loads((out / "evaluate-mr-test.json").read_text())["accuracy"] == pytest.approx(res["test_accuracy"])
    model, tok = load_backbone()
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "negative:bad;positive:good")
    texts = [ex.text for ex in domain_examples(list(load_text("mr").split("train").examples), 40)]
    ref = torch.softmax(clf.scores_in_batches(texts), -1).mean(0)
    info = json.loads((tmp_path / "domain/calibration.json").read_text())
    assert info["reference_probabilities"] == pytest.approx(ref.tolist(), abs=1e-5)


@pytest.mark.parametrize("args, says", [
    (["zero-shot", "--calibrate", "platt"], "--calibrate must be one of none, content-free, domain"),
    (["train", "--method", "finetune", "--calibrate", "domain"], "finetune has a classification head"),
    (["zero-shot", "--calibrate", "domain", "--domain-examples", "0"], "--domain-examples must be at least 1"),
])
def test_calibration_refusals_are_one_line_and_exit_2(args, says, tmp_path, capsys):
    assert main(["prompting", *args, "--dataset", "mr", "--limit-test", "8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]


def test_calibration_keeps_the_scores_dtype_and_device_and_takes_one_row():
    """The reference is cast to the scores' dtype and moved to their device (a float64 reference
    does not turn float32 scores into float64); a single score vector [C] is calibrated like a row."""
    scores = torch.tensor([[2.0, 0.5, -1.0], [0.0, 0.3, 0.1]])
    log_ref = reference_log_probs(torch.tensor([[1.0, 0.0, 0.2]])).double()
    q = apply_calibration(scores, log_ref)
    assert q.dtype == torch.float32
    assert torch.allclose(q, torch.log_softmax(scores - log_ref.float(), -1), atol=1e-6)
    one = apply_calibration(scores[0], log_ref)
    assert one.shape == (3,) and torch.allclose(one, q[0], atol=1e-6)
    half = apply_calibration(scores.to(torch.bfloat16), log_ref.float())
    assert half.dtype == torch.bfloat16
    elsewhere = apply_calibration(torch.zeros(2, 3, device="meta"), log_ref)  # a CPU reference follows the scores
    assert elsewhere.device.type == "meta" and elsewhere.shape == (2, 3)


def test_domain_examples_keep_at_least_one_and_exactly_n():
    train = [Example(f"text number {i}", i % 2) for i in range(6)]
    assert len(domain_examples(train, 0)) == 1 and len(domain_examples(train, 1)) == 1
    assert domain_examples(train, 1) == domain_examples(train, 3)[:1]
    assert len(domain_examples(train, 2)) == 2 and len(domain_examples(train, 10)) == 6


def _tokens(tok, batch):
    return tok.convert_ids_to_tokens(batch["input_ids"][0].tolist())


@pytest.mark.parametrize("template, na, masked, mask_at", [
    ("{x} ? {mask} , {x2}", "[CLS] n / a ? [MASK] , n / a [SEP]", "[CLS] [MASK] ? [MASK] , [MASK] [SEP]", 3),
    ("{x2} ? {mask} , {x}", "[CLS] n / a ? [MASK] , n / a [SEP]", "[CLS] [MASK] ? [MASK] , [MASK] [SEP]", 3),
    ("{x} and {x2} : {mask} .", "[CLS] n / a and n / a : [MASK] . [SEP]", "[CLS] [MASK] and [MASK] : [MASK] . [SEP]", 5),
])
def test_pair_content_free_inputs_fill_both_slots(backbone, template, na, masked, mask_at):
    """Pair tasks: "N/A", "" and the mask token go in {x} and in {x2}, whichever comes first."""
    model, tok = backbone
    clf = PromptClassifier(model, tok, template, "0:no;1:yes", check_head=False)
    b_na, b_empty, b_mask = content_free_batches(clf, pair=True)
    assert " ".join(_tokens(tok, b_na)) == na
    assert " ".join(_tokens(tok, b_empty)) == na.replace("n / a ", "")
    assert " ".join(_tokens(tok, b_mask)) == masked
    assert int(b_mask["mask_positions"][0]) == mask_at


@pytest.mark.parametrize("template, masked, soft, mask_at", [
    ("{x} {soft*2} It was {mask}.", "[CLS] [MASK] [UNK] [UNK] it was [MASK] . [SEP]", [2, 3], 6),
    ("{soft} {x} {mask}.", "[CLS] [UNK] [MASK] [MASK] . [SEP]", [1], 3),
    ("{x} It was {mask}.", "[CLS] [MASK] it was [MASK] . [SEP]", [], 4),
])
def test_mask_token_input_shifts_the_soft_tokens_and_the_template_mask(backbone, template, masked, soft, mask_at):
    """The inserted mask moves the soft tokens and the template's mask that come at or after the
    input's place (the template's own mask stays the one predicted, also right after the input);
    the batch has the keys, shapes and dtypes of an encoded batch."""
    model, tok = backbone
    clf = PromptClassifier(model, tok, template, "0:bad;1:good", check_head=False)
    b_mask = content_free_batches(clf, pair=False)[2]
    assert " ".join(_tokens(tok, b_mask)) == masked
    assert b_mask["soft_positions"].tolist() == [soft] and int(b_mask["mask_positions"][0]) == mask_at
    ref = clf.encode(["a b"])
    assert set(b_mask) == set(ref)
    for key in ref:
        assert b_mask[key].dtype == ref[key].dtype, key
        assert b_mask[key].dim() == ref[key].dim() and b_mask[key].shape[0] == 1, key
    assert b_mask["attention_mask"].tolist() == [[1] * b_mask["input_ids"].shape[1]]


def test_the_mask_input_goes_in_the_slot_when_the_template_text_after_it_starts_like_the_probe(backbone):
    """Text after {x} that begins with "N/A" made a search with that probe alone find the slot late."""
    model, tok = backbone
    clf = PromptClassifier(model, tok, "{x} N/A: it was {mask}.", "0:bad;1:good", check_head=False)
    b_mask = content_free_batches(clf, pair=False)[2]
    assert " ".join(_tokens(tok, b_mask)) == "[CLS] [MASK] n / a : it was [MASK] . [SEP]"
    assert int(b_mask["mask_positions"][0]) == 8
