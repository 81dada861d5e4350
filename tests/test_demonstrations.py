"""LM-BFF demonstrations: layout token by token, exact logits on the six MLM families, the draws
(never the input itself, similar = top half by cosine), the 16-set ensemble, truncation, the CLI.

Tiny random models (and the packaged BERT-tiny) only; one test loads the packaged sentence
encoder when it is installed."""

from __future__ import annotations

import hashlib
import json
import math
import random
from types import SimpleNamespace

import pytest
import torch

from diffprompt.cli import main
from diffprompt.errors import UserError
from diffprompt.prompting import PromptClassifier, Template, load_backbone
from diffprompt.prompting.prompts.demonstrations import Demonstrations, make_demonstrations
from diffprompt.prompting.models.sentence_encoder import SentenceEncoder, default_encoder_dir, mean_pool
from diffprompt.prompting.prompts.template import fair_lengths, special_wrap, truncated_lengths
from test_prompting_core import _tiny, roberta  # noqa: F401 (roberta: a fixture)

QUERY = "a gorgeous witty movie"
NEG, POS = "the plot is boring", "so It was great"  # demonstrations of class 0 and class 1


def ex(text, label, text_b=None):
    return SimpleNamespace(text=text, label=label, text_b=text_b)


@pytest.fixture(autouse=True)
def embedding_cache(tmp_path, monkeypatch):
    """Sentence embeddings are cached in the test's folder, never in the user's cache."""
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def bert():
    return load_backbone()


def hand_built(tok, which):
    """The query and its two demonstrations spelled out as one string, with the tokenizer's own special tokens."""
    if which == "roberta":
        return f"<s>{QUERY} It was<mask>.</s>{NEG} It was terrible.</s>{POS} It was great.</s>"
    return f"[CLS] {QUERY} It was [MASK]. [SEP] {NEG} It was terrible. [SEP] {POS} It was great. [SEP]"


def demo_batch(clf):
    return clf.encode([QUERY], demos=[clf.render_demos([ex(NEG, 0), ex(POS, 1)])])


# ---------------------------------------------------------------------------- layout and exact logits
@pytest.mark.parametrize("which", ["bert", "roberta"])
def test_layout_token_by_token(request, which):
    model, tok = request.getfixturevalue(which)
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great")
    batch = demo_batch(clf)
    expected = tok(hand_built(tok, which), add_special_tokens=False)["input_ids"]
    assert batch["input_ids"][0].tolist() == expected
    assert tok.convert_ids_to_tokens(expected)[int(batch["mask_positions"][0])] == tok.mask_token
    if which == "roberta":  # the label words keep their word-initial form after "was"
        assert "Ġgreat" in tok.convert_ids_to_tokens(expected) and "Ġterrible" in tok.convert_ids_to_tokens(expected)
    # without demonstrations the encoding is unchanged: the query alone
    alone = clf.encode([QUERY])["input_ids"][0].tolist()
    sep = special_wrap(tok)[1]
    assert expected[:len(alone)] == alone and alone[-len(sep):] == sep


@pytest.mark.parametrize("arch", ["bert", "roberta", "distilbert", "electra", "albert", "deberta-v2"])
def test_logits_at_the_mask_equal_the_hand_built_inputs(bert, roberta, arch):
    if arch in ("bert", "roberta"):
        model, tok = bert if arch == "bert" else roberta
    else:
        tok = bert[1]
        torch.manual_seed(0)
        model = _tiny(arch, len(tok)).eval()
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great")
    ids = torch.tensor([tok(hand_built(tok, arch), add_special_tokens=False)["input_ids"]])
    mask = int((ids[0] == tok.mask_token_id).nonzero()[0, 0])
    words = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in ("terrible", "great")]
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0, mask], -1)[words]
        ours = clf(demo_batch(clf))[0]
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()


def test_hybrid_demonstrations_carry_the_soft_tokens(bert):
    model, tok = bert
    clf = PromptClassifier(model, tok, "{x} {soft*2} It was {mask}.", "0:bad;1:good")
    batch = demo_batch(clf)
    assert batch["soft_positions"].shape == (1, 6)  # the query's two, then each demonstration's two
    emb = clf.input_embeds(batch)[0]
    soft = clf.soft_prompt()
    for k, pos in enumerate(batch["soft_positions"][0].tolist()):
        assert torch.equal(emb[pos], soft[k % 2])


# ---------------------------------------------------------------------------- the draws
POOL = [ex(f"negative review {i}", 0) for i in range(4)] + [ex(f"positive review {i}", 1) for i in range(4)]


def test_never_the_input_itself_and_fresh_sets_per_step():
    d = Demonstrations(POOL, 2, "random", sets=16, seed=3)
    seen = set()
    for _ in range(50):
        for q, demos in zip(POOL, d.training_sets([e.text for e in POOL], None)):
            assert [x.label for x in demos] == [0, 1]
            assert all(x.text != q.text for x in demos)
            seen.add(tuple(x.text for x in demos))
        for demos in d.test_sets(POOL[0].text):
            assert POOL[0].text not in [x.text for x in demos]
    assert len(seen) > 8  # fresh draws, not one fixed set
    assert [[x.text for x in s] for s in d.test_sets("new")] == [[x.text for x in s] for s in d.test_sets("new")]
    with pytest.raises(UserError, match="at least 2 training examples per class"):
        Demonstrations(POOL[:1] + POOL[4:], 2, "random")


class ToyEncoder:
    """Texts "t<angle>" embed as the unit vector at that angle (degrees): cosines are known."""

    def embed(self, texts, batch_size=64):
        ang = torch.tensor([math.radians(float(t.split("t")[-1])) for t in texts])
        return torch.stack([ang.cos(), ang.sin()], 1)


def test_similar_keeps_the_most_similar_half_of_each_class():
    pool = [ex(f"t{a}", 0) for a in (0, 10, 50, 90, 170, 180)] + [ex(f"t{a}", 1) for a in (-20, 40, 100, 200)]
    d = Demonstrations(pool, 2, "similar", seed=0, encoder=ToyEncoder())
    cand = d.candidates("t30")
    assert [pool[i].text for i in cand[0]] == ["t10", "t50", "t0"]  # 3 of 6, by cosine to 30 degrees
    assert [pool[i].text for i in cand[1]] == ["t40", "t-20"]  # 2 of 4
    own = d.candidates("t10")  # a pool example: left out, then the top half of the other five (rounded up)
    assert [pool[i].text for i in own[0]] == ["t0", "t50", "t90"]
    for s in d.test_sets("t30"):
        assert s[0].text in ("t10", "t50", "t0") and s[1].text in ("t40", "t-20")


def test_sentence_encoder_mean_pools_and_normalises(bert, tmp_path):
    from transformers import BertConfig, BertModel

    tok = bert[1]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    enc = SentenceEncoder(str(tmp_path / "enc"))
    texts = ["a short one", "a much longer sentence with many more words in it"]
    got = enc.embed(texts, batch_size=2)
    for i, t in enumerate(texts):  # alone (no padding): the plain mean of the hidden states, unit length
        ids = tok(t, return_tensors="pt")
        with torch.no_grad():
            h = enc.model(**ids)[0][0]
        want = h.mean(0) / h.mean(0).norm()
        assert torch.allclose(got[i], want, atol=1e-5)
    assert torch.allclose(mean_pool(torch.ones(1, 3, 2), torch.tensor([[1, 1, 0]])), torch.full((1, 2), 2 ** -0.5))


def test_packaged_sentence_encoder_ranks_paraphrases_first():
    try:
        default_encoder_dir()
    except UserError as e:
        pytest.skip(f"the packaged sentence encoder is not installed ({e})")
    e = SentenceEncoder().embed(["a wonderful , moving film", "a great and touching movie", "the stock market fell today"])
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.3


# ---------------------------------------------------------------------------- the ensemble
def test_ensemble_averages_the_label_probabilities(bert):
    model, tok = bert
    pool = [ex(t, 0) for t in ("dull", "a bad , boring mess", "awful acting")] + \
           [ex(t, 1) for t in ("great fun", "a gorgeous film", "witty and warm")]
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:bad;1:good",
                           demos=Demonstrations(pool, 2, "random", sets=16, seed=5))
    queries = ["one of the best films of the year", "it never ends", "a gorgeous film"]
    with torch.no_grad():
        got = clf.scores(queries)  # eval mode: the ensemble
        for i, q in enumerate(queries):
            sets = clf.demos.test_sets(q)
            assert len(sets) == 16
            probs = [torch.softmax(clf(clf.encode([q], demos=[clf.render_demos(s)]))[0], -1) for s in sets]
            assert torch.allclose(got[i], torch.stack(probs).mean(0).log(), atol=1e-5, rtol=0)
    assert torch.allclose(got.exp().sum(1), torch.ones(3), atol=1e-5)
    clf.train()
    assert clf.scores(queries).shape == (3, 2)  # training mode: one fresh set per input


# ---------------------------------------------------------------------------- truncation
def test_fair_lengths_generalises_the_two_slot_rule():
    for la in range(0, 30, 3):
        for lb in range(0, 30, 4):
            for budget in range(1, 40, 5):
                assert tuple(fair_lengths([la, lb], budget)) == truncated_lengths(la, lb, budget)
    assert fair_lengths([100, 3, 50, 8], 30) == [10, 3, 9, 8]
    assert fair_lengths([5, 5, 5], 20) == [5, 5, 5]


@pytest.mark.parametrize("which", ["bert", "roberta"])
@pytest.mark.parametrize("text", ["{x} It was {mask}.", "{x} {soft*2} It was {mask} .", "{mask} : {x}"])
def test_truncation_keeps_template_mask_and_label_words(request, which, text):
    model, tok = request.getfixturevalue(which)
    t = Template(text)
    prefix, sep = special_wrap(tok)
    words = [tok(" terrible", add_special_tokens=False)["input_ids"], tok(" great", add_special_tokens=False)["input_ids"]]
    lit = []
    for p in t.pieces:
        lit.append(tok((" " if p.space_before else "") + p.text, add_special_tokens=False)["input_ids"]
                   if p.kind == "text" else None)
    lead = " " if next(p for p in t.pieces if p.kind == "x").space_before else ""
    long_q, long_d = " ".join(["wonderful"] * 2000), " ".join(["dreadful plot"] * 1000)
    for max_length in (24, 40, 64, 120):
        slots_text = [long_q, long_d, "boring"]
        batch = t.encode(tok, [long_q], demos=[[(long_d, None, words[0]), ("boring", None, words[1])]],
                         max_length=max_length)
        row = batch["input_ids"][0].tolist()
        assert len(row) <= max_length and row.count(tok.mask_token_id) == 1
        ids = [tok(lead + s, add_special_tokens=False)["input_ids"] for s in slots_text]
        room = max_length - (len(prefix) + 3 * (len(sep) + sum(len(x) for x in lit if x) + t.num_soft) + 1
                             + len(words[0]) + len(words[1]))
        keep = fair_lengths([len(i) for i in ids], room)
        assert sum(keep) == room and (room < 3 * len(ids[2]) or keep[2] == len(ids[2]))  # short slots stay whole
        expected = list(prefix)
        for j, at_mask in enumerate([[tok.mask_token_id]] + words):
            if j:
                expected += sep
            for p, li in zip(t.pieces, lit):
                expected += li if p.kind == "text" else ids[j][:keep[j]] if p.kind == "x" else \
                    at_mask if p.kind == "mask" else [row[len(expected)]]
        expected += sep
        assert row == expected, max_length
    with pytest.raises(UserError, match="demonstrations leaves"):
        t.encode(tok, ["a"], demos=[[("b", None, words[0] * 40)]], max_length=40)


# ---------------------------------------------------------------------------- CLI and runs
@pytest.mark.parametrize("argv, needle", [
    (["prompting", "train", "--demos", "bogus"], "--demos must be one of none, random, similar"),
    (["prompting", "zero-shot", "--demos", "some"], "--demos must be one of"),
    (["prompting", "train", "--method", "finetune", "--demos", "random"], "method finetune takes no demonstrations"),
    (["prompting", "train", "--method", "soft", "--demos", "similar"], "method soft takes no demonstrations"),
    (["prompting", "train", "--demos", "random", "--calibrate", "content-free"], "--calibrate domain or none"),
    (["prompting", "train", "--demos", "random", "--demo-sets", "0"], "--demo-sets must be at least 1"),
])
def test_cli_bad_demos_exit_2_one_line(argv, needle, capsys):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and needle in err[0], err


def test_train_with_similar_demos_then_evaluate(bert, tmp_path, capsys):
    from transformers import BertConfig, BertModel

    tok = bert[1]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    out = tmp_path / "run"
    argv = ["prompting", "train", "--dataset", "mr", "--method", "prompt-ft", "--demos", "similar", "--demo-encoder",
            str(tmp_path / "enc"), "--demo-sets", "2", "--shots", "4", "--steps", "2", "--eval-every", "1",
            "--limit-test", "8", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    conf = json.loads((out / "config.json").read_text())
    assert conf["demos"] == "similar" and conf["demo_sets"] == 2
    capsys.readouterr()
    assert main(["prompting", "evaluate", str(out), "--limit", "8"]) == 0
    assert f"accuracy {100 * res['test_accuracy']:.2f} %" in capsys.readouterr().out


# ---------------------------------------------------------------------------- checks, defaults, seeds, pairs
def test_demonstrations_refuse_bad_modes_sets_and_classes_in_one_line():
    for mode in ("none", "bogus"):
        with pytest.raises(UserError, match=f"demonstrations are 'random' or 'similar', got '{mode}'"):
            Demonstrations(POOL, 2, mode)
    with pytest.raises(UserError, match="demonstration sets must be at least 1, got 0"):
        Demonstrations(POOL, 2, "random", sets=0)
    assert len(Demonstrations(POOL, 2, "random", sets=1).test_sets("new")) == 1
    with pytest.raises(UserError, match=r"classes \[0\] have fewer: give --shots 2 or more"):
        Demonstrations(POOL[:1] + POOL[4:], 2, "random")
    two = Demonstrations(POOL[:2] + POOL[4:], 2, "random")  # two of class 0 are enough: one is left for itself
    assert [x.text for x in two.draw(POOL[0].text, None, random.Random(0))][0] == POOL[1].text
    with pytest.raises(UserError, match=r"^--demos similar needs a sentence encoder \(sentence_encoder\.SentenceEncoder\)$"):
        Demonstrations(POOL, 2, "similar")


def _by_hand(pool, text, rng, text_b=None):
    """One set drawn as documented: per class, rng.choice among the class's pool indices, the input left out."""
    key = (text, text_b or "")
    per_class = [[i for i, e in enumerate(pool) if e.label == c and (e.text, e.text_b or "") != key] for c in (0, 1)]
    return [pool[rng.choice(idx)].text for idx in per_class]


def test_draws_follow_the_documented_seeds_and_defaults():
    """Defaults: random, 16 test sets, seed 0. Training draws come from Random("demos-train-<seed>"),
    an input's test sets from Random(sha256("<seed>\\t<text>\\t<text_b or ''>")), so runs reproduce."""
    d = Demonstrations(POOL, 2)
    texts = [e.text for e in POOL[:3]] + ["new"]
    rng = random.Random("demos-train-0")
    want = [[_by_hand(POOL, t, rng) for t in texts] for _ in range(3)]
    assert [[[x.text for x in s] for s in d.training_sets(texts, None)] for _ in range(3)] == want
    for seed, text, text_b in [(0, "new", None), (0, "new", ""), (0, POOL[0].text, None), (7, "new", "second")]:
        dd = d if seed == 0 else Demonstrations(POOL, 2, "random", seed=seed)
        rng = random.Random(hashlib.sha256(f"{seed}\t{text}\t{text_b or ''}".encode()).hexdigest())
        want = [_by_hand(POOL, text, rng, text_b) for _ in range(16)]
        assert [[x.text for x in s] for s in dd.test_sets(text, text_b)] == want


class PairToyEncoder:
    """A text of words "t<angle>" embeds as the unit vector at the sum of the angles (degrees);
    it records each call's texts and batch size."""

    def __init__(self):
        self.calls = []

    def embed(self, texts, batch_size=None):
        self.calls.append((list(texts), batch_size))
        ang = torch.tensor([math.radians(sum(float(w[1:]) for w in t.split())) for t in texts])
        return torch.stack([ang.cos(), ang.sin()], 1)


PAIRS = [ex("t0", 0, "t90"), ex("t80", 0, "t0"), ex("t50", 0, "t-50"), ex("t100", 0, "t100"),
         ex("t0", 1, "t0"), ex("t90", 1, "t60"), ex("t30", 1, "t60"), ex("t-90", 1, "t0")]


def test_similar_pairs_compare_both_texts_and_leave_the_input_itself_out():
    """Pairs: the encoder sees "text text_b" for inputs and pool examples alike (angles add up);
    an input equal to a pool pair (both texts) is left out of its own demonstrations."""
    enc = PairToyEncoder()
    d = Demonstrations(PAIRS, 2, "similar", sets=4, seed=0, encoder=enc)
    d.prepare(["t40"], ["t50"])
    assert enc.calls == [(["t40 t50", "t0 t90", "t80 t0", "t50 t-50", "t100 t100", "t0 t0", "t90 t60",
                           "t30 t60", "t-90 t0"], 64)]
    d.prepare(["t40", "t5"], ["t50", "t5"], batch_size=3)  # only the new text, in batches of 3
    assert enc.calls[1:] == [(["t5 t5"], 3)]
    texts = lambda idx: [[PAIRS[i].text + " " + PAIRS[i].text_b for i in c] for c in idx]  # noqa: E731
    assert texts(d.candidates("t40", "t50")) == [["t0 t90", "t80 t0"], ["t30 t60", "t90 t60"]]  # 90 degrees
    own = texts(d.candidates("t0", "t90"))  # a pool pair: left out; the rest ranked by cosine to 90 degrees
    assert own == [["t80 t0", "t50 t-50"], ["t30 t60", "t90 t60"]]
    assert len(enc.calls) == 2  # every text was embedded by `prepare`
    for sets in (d.test_sets("t0", "t90"), d.training_sets(["t0"], ["t90"])):
        for s in sets:
            assert s[0].text + " " + s[0].text_b in own[0] and s[1].text + " " + s[1].text_b in own[1]
    alone = texts(d.candidates("t0"))  # the text without a second text is another input: ("t0", "t0") stays
    assert alone[0] == ["t50 t-50", "t80 t0"] and alone[1][0] == "t0 t0"  # by cosine to 0 degrees


def test_similar_keeps_one_of_two_and_takes_examples_without_a_second_text():
    pool = [SimpleNamespace(text=f"t{a}", label=0) for a in (0, 60)] + \
           [SimpleNamespace(text=f"t{a}", label=1) for a in (20, 90, 170)]
    d = Demonstrations(pool, 2, "similar", encoder=PairToyEncoder())
    assert [[pool[i].text for i in c] for c in d.candidates("t50")] == [["t60"], ["t20", "t90"]]
    assert [[pool[i].text for i in c] for c in d.candidates("t90")] == [["t60"], ["t20"]]  # itself left out


def test_make_demonstrations_loads_the_named_encoder_only_for_similar(bert, tmp_path):
    from transformers import BertConfig, BertModel

    assert make_demonstrations("none", POOL, 2, 16, 0) is None
    rnd = make_demonstrations("random", POOL, 2, 3, 5)
    assert rnd.encoder is None and (rnd.mode, rnd.sets, rnd.seed) == ("random", 3, 5)
    tok = bert[1]
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    sim = make_demonstrations("similar", POOL, 2, 2, 0, encoder_name=str(tmp_path / "enc"))
    assert isinstance(sim.encoder, SentenceEncoder) and sim.encoder.name == str(tmp_path / "enc")
