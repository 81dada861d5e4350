"""Automatic label words (LM-BFF section 5.1) on a toy masked LM whose answer is known, and end to end.

The toy: a 1-layer BERT on the packaged tokenizer whose weights are set by hand. Every embedding is
zero except the cue words `awful` (along dimension 0) and `lovely` (dimension 1); attention is
uniform (zero queries and keys) with identity values, so the hidden state at the mask points along
the cue of its input; the MLM decoder maps dimension 0 to `terrible` and dimension 1 to `great`.
So class-0 inputs (with `awful`) favour `terrible` at the mask and class-1 inputs `great`.
"""

from __future__ import annotations

import itertools
import json
from types import SimpleNamespace

import pytest
import torch
import transformers as tf

from diffprompt.cli import main
from diffprompt.prompting import Template, load_backbone
from diffprompt.prompting.run.label_search import (
    best_assignments, class_word_scores, is_label_word, mask_log_probs, search_label_words, top_label_words,
)

TEMPLATE = "{x} It was {mask}."
TEXTS = [("the plot was awful and slow", 0), ("awful acting , awful music", 0), ("what an awful film", 0),
         ("a lovely , warm story", 1), ("lovely", 1), ("the cast is lovely and the songs too", 1)]


@pytest.fixture(scope="module")
def toy():
    _, tok = load_backbone()
    cfg = tf.BertConfig(vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=8, tie_word_embeddings=False, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    model = tf.BertForMaskedLM(cfg).eval()
    eye = torch.eye(8)
    ids = {w: tok.convert_tokens_to_ids(w) for w in ("awful", "lovely", "terrible", "great")}
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.ones_like(p) if "LayerNorm.weight" in name else torch.zeros_like(p))
        model.bert.embeddings.word_embeddings.weight[ids["awful"], 0] = 10.0
        model.bert.embeddings.word_embeddings.weight[ids["lovely"], 1] = 10.0
        layer = model.bert.encoder.layer[0]
        layer.attention.self.value.weight.copy_(eye)
        layer.attention.output.dense.weight.copy_(eye)
        model.cls.predictions.transform.dense.weight.copy_(eye)
        model.cls.predictions.decoder.weight[ids["terrible"], 0] = 5.0
        model.cls.predictions.decoder.weight[ids["great"], 1] = 5.0
    return model, tok


def _examples():
    return [SimpleNamespace(text=t, text_b=None, label=y) for t, y in TEXTS]


def test_the_search_finds_the_words_the_toy_mlm_was_built_to_give(toy):
    model, tok = toy
    found = search_label_words(model, tok, Template(TEMPLATE), _examples(), 2, k=5, n=10)
    assert [ws[0][0] for ws in found.top_words] == ["terrible", "great"]
    assert found.candidates[0]["words"] == ["terrible", "great"] and found.candidates[0]["train_accuracy"] == 1.0


def test_ranking_scores_are_the_summed_log_probs_of_the_models_own_forward(toy):
    """Scores by hand: transformers' full forward on the filled-in string (its own tokenisation),
    log_softmax at the mask, summed over each class's examples; to 1e-4."""
    model, tok = toy
    hand = torch.zeros(2, tok.vocab_size, dtype=torch.float64)
    for text, y in TEXTS:
        enc = tok(f"{text} It was {tok.mask_token}.", return_tensors="pt")
        pos = int((enc["input_ids"][0] == tok.mask_token_id).nonzero())
        with torch.no_grad():
            hand[y] += torch.log_softmax(model(**enc).logits[0, pos].double(), -1)
    lp = mask_log_probs(model, tok, Template(TEMPLATE), [t for t, _ in TEXTS], batch_size=4)
    ours = class_word_scores(lp, [y for _, y in TEXTS], 2)
    assert torch.allclose(ours, hand, atol=1e-4)
    found = search_label_words(model, tok, Template(TEMPLATE), _examples(), 2, k=3, n=4)
    for c, ws in enumerate(found.top_words):
        for word, score in ws:
            assert score == pytest.approx(float(hand[c, tok.convert_tokens_to_ids(word)]), abs=1e-3)
    # the candidates' summed score is the sum of their words' class scores
    for cand in found.candidates:
        total = sum(float(hand[c, tok.convert_tokens_to_ids(w)]) for c, w in enumerate(cand["words"]))
        assert cand["score"] == pytest.approx(total, abs=1e-2)


def test_only_whole_ordinary_words_qualify():
    _, tok = load_backbone()
    specials = set(tok.all_special_ids)
    ask = lambda t: is_label_word(tok, tok.convert_tokens_to_ids(t), specials)  # noqa: E731
    assert ask("great") == "great" and ask("movie") == "movie"
    assert ask("##ing") is None and ask("[CLS]") is None and ask("[MASK]") is None
    assert ask(".") is None and ask(",") is None and ask("[unused5]") is None


def test_best_assignments_are_the_brute_force_top_n_without_repeated_words():
    g = torch.Generator().manual_seed(3)
    for num_classes, k in ((2, 6), (3, 4)):
        top = []
        for _ in range(num_classes):
            ids = torch.randperm(8, generator=g)[:k].tolist()  # words shared between classes on purpose
            scores = sorted(torch.randn(k, generator=g).tolist(), reverse=True)
            top.append([(i, str(i), s) for i, s in zip(ids, scores)])
        brute = sorted((sum(top[c][j][2] for c, j in enumerate(idx)), idx)
                       for idx in itertools.product(range(k), repeat=num_classes)
                       if len({top[c][j][0] for c, j in enumerate(idx)}) == num_classes)[::-1]
        got = best_assignments(top, 7)
        assert [s for _, s in got] == pytest.approx([s for s, _ in brute[:7]])
        assert all(len({top[c][j][0] for c, j in enumerate(idx)}) == num_classes for idx, _ in got)


def test_top_words_walk_past_pieces_and_specials(toy):
    model, tok = toy
    scores = torch.zeros(1, tok.vocab_size)
    for rank, t in enumerate(["[CLS]", "##ing", ".", "good", "[MASK]", "bad"]):
        scores[0, tok.convert_tokens_to_ids(t)] = 10.0 - rank
    top = top_label_words(scores, tok, 2)
    assert [w for _, w, _ in top[0]] == ["good", "bad"]


def test_auto_run_writes_its_words_and_equals_a_run_with_those_words(tmp_path, capsys):
    """`--verbalizer auto` end to end: label_words.json names the chosen words, the final model is
    exactly a run given those words (same test predictions), and evaluate rebuilds it."""
    common = ["--dataset", "mr", "--method", "prompt-ft", "--shots", "4", "--seed", "13", "--steps", "2",
              "--eval-every", "2", "--limit-test", "16", "--threads", "1"]
    auto = tmp_path / "auto"
    assert main(["prompting", "train", *common, "--verbalizer", "auto", "--auto-words", "4", "--auto-candidates", "4",
                 "--auto-finetune", "2", "--auto-steps", "2", "--out", str(auto)]) == 0
    words = json.loads((auto / "label_words.json").read_text())
    assert list(words["chosen"]) == ["negative", "positive"] and len(words["candidates"]) == 4
    assert sum("dev_accuracy" in c for c in words["candidates"]) == 2
    assert json.loads((auto / "config.json").read_text())["verbalizer"] == "auto"
    manual = tmp_path / "manual"
    assert main(["prompting", "train", *common, "--verbalizer", words["verbalizer"], "--out", str(manual)]) == 0
    preds = [(p / "predictions.jsonl").read_text() for p in (auto, manual)]
    assert preds[0] == preds[1]
    res = json.loads((auto / "results.json").read_text())
    assert res["label_words"] == list(words["chosen"].values())
    assert main(["prompting", "evaluate", str(auto), "--limit", "16"]) == 0
    assert json.loads((auto / "evaluate-mr-test.json").read_text())["accuracy"] == pytest.approx(res["test_accuracy"])


@pytest.mark.parametrize("args, says", [
    (["train", "--method", "finetune", "--verbalizer", "auto"], "finetune has a classification head"),
    (["train", "--method", "soft", "--verbalizer", "auto"], "without soft tokens"),
    (["zero-shot", "--verbalizer", "auto", "--shots", "0"], "--shots K >= 1"),
    (["zero-shot", "--verbalizer", "auto", "--auto-words", "0"], "--auto-words must be at least 1"),
])
def test_auto_refusals_are_one_line_and_exit_2(args, says, tmp_path, capsys):
    assert main(["prompting", *args, "--dataset", "mr", "--limit-test", "8", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and says in err[0]
