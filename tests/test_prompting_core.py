"""Prompting core: templates, verbalizers, PromptClassifier, FineTuneClassifier.

Uses the packaged BERT-tiny MLM (loads in about a second) and a tiny randomly initialised
RoBERTa with a byte-level BPE tokenizer trained here, so word-initial `Ġ` spaces are exercised.
"""

from __future__ import annotations


import pytest
import torch

from diffprompt.errors import UserError
from diffprompt.prompting import (
    DEFAULT_BACKBONE, FineTuneClassifier, PromptClassifier, Template, Verbalizer, backbone_id,
    full_vocab_label_logits, load_backbone,
)
from diffprompt.prompting.prompts.template import special_wrap, truncated_lengths

REVIEWS = [
    "a gorgeous , witty , seductive movie .",
    "the plot is nothing but boilerplate cliches from start to finish .",
    "one of the greatest family films of the year .",
    "it 's a bad , boring mess .",
]


@pytest.fixture(scope="module")
def bert():
    model, tok = load_backbone()
    return model, tok


def _roberta_tokenizer():
    from tokenizers import AddedToken, ByteLevelBPETokenizer
    from tokenizers.processors import RobertaProcessing
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    corpus = ["It was great .", "It was terrible .", "a gorgeous witty movie , great acting", "the plot is boring",
              "terrible script and bad acting", "It was good , It was bad", "so It was great"] * 5
    bpe.train_from_iterator(corpus, vocab_size=600, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.post_processor = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, bos_token="<s>", eos_token="</s>",
                                  sep_token="</s>", cls_token="<s>", unk_token="<unk>", pad_token="<pad>",
                                  mask_token=AddedToken("<mask>", lstrip=True, rstrip=False))
    tok.model_max_length = 120
    return tok


@pytest.fixture(scope="module")
def roberta():
    from transformers import RobertaConfig, RobertaForMaskedLM

    tok = _roberta_tokenizer()
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=130, pad_token_id=tok.pad_token_id,
                        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    model = RobertaForMaskedLM(cfg).eval()
    return model, tok


# ---------------------------------------------------------------------------- template language
def test_template_parsing():
    t = Template("{x} It was {mask}.")
    assert [p.kind for p in t.pieces] == ["x", "text", "mask", "text"]
    assert t.num_soft == 0 and not t.uses_x2 and t.text == "{x} It was {mask}."
    t = Template("{x} {soft*4} {mask}")
    assert t.num_soft == 4 and t.soft_init_words == [None] * 4
    t = Template("{x} {soft} {soft=It was} {mask} . { x2 }")
    assert t.num_soft == 3 and t.uses_x2 and t.soft_init_words == [None, "It", "was"]
    # literal text keeps its words; spaces before a piece are remembered (for BPE's Ġ)
    t = Template("Review: {x}{mask} ok")
    kinds = [(p.kind, p.text, p.space_before) for p in t.pieces]
    assert kinds == [("text", "Review:", False), ("x", "", True), ("mask", "", False), ("text", "ok", True)]


@pytest.mark.parametrize("text, needle", [
    ("{x} It was great.", "no {mask}"),
    ("It was {mask}.", "no {x}"),
    ("{x} It was {label} {mask}", "unknown template placeholder {label}"),
    ("{x} {mask} {mask}", "2 {mask}"),
    ("{x} {soft*0} {mask}", "soft tokens"),
    ("{x} {x} {mask}", "uses {x} 2 times"),
    ("{x} {soft=} {mask}", "names no words"),
])
def test_template_errors(text, needle):
    with pytest.raises(UserError, match=None) as e:
        Template(text)
    assert needle in str(e.value)


def test_template_input_errors(bert):
    _, tok = bert
    with pytest.raises(UserError, match="single-input task"):
        Template("{x} ? {mask} , {x2}").encode(tok, ["a"])
    with pytest.raises(UserError, match="has no {x2}"):
        Template("{x} {mask}").encode(tok, ["a"], ["b"])
    with pytest.raises(UserError, match="UTF-8"):
        Template("{x} {mask}").encode(tok, [b"caf\xe9"])
    with pytest.raises(UserError, match="UTF-8"):
        Template("{x} {mask}").encode(tok, b"bytes")
    with pytest.raises(UserError, match="max_length"):
        Template("{x} " + "very " * 40 + "{mask}").encode(tok, ["a"], max_length=30)
    with pytest.raises(UserError, match="write {mask} instead"):
        Template("{x} [MASK] {mask}").encode(tok, ["a"])


def test_encode_matches_tokenizer_for_hard_template(bert):
    _, tok = bert
    t = Template("{x} It was {mask}.")
    batch = t.encode(tok, REVIEWS)
    ref = tok([r + " It was " + tok.mask_token + "." for r in REVIEWS], padding=True, return_tensors="pt")
    assert torch.equal(batch["input_ids"], ref["input_ids"])
    assert torch.equal(batch["attention_mask"], ref["attention_mask"])
    assert torch.equal(batch["mask_positions"], (ref["input_ids"] == tok.mask_token_id).nonzero()[:, 1])
    # the input may spell the mask token: it never becomes a second mask
    b = t.encode(tok, ["this is [MASK] text"])
    assert int((b["input_ids"] == tok.mask_token_id).sum()) == 1


def test_truncated_lengths_longest_first():
    assert truncated_lengths(3, 4, 10) == (3, 4)
    assert truncated_lengths(100, 3, 10) == (7, 3)
    assert truncated_lengths(3, 100, 10) == (3, 7)
    assert truncated_lengths(100, 100, 11) == (6, 5)
    assert truncated_lengths(100, 100, 10) == (5, 5)
    for la in range(0, 30, 3):
        for lb in range(0, 30, 4):
            for budget in range(1, 40, 5):
                fa, fb = truncated_lengths(la, lb, budget)
                assert fa <= la and fb <= lb and fa + fb == min(la + lb, budget)
                if la + lb > budget and fa < la and fb < lb:
                    assert abs(fa - fb) <= 1


@pytest.mark.parametrize("which", ["bert", "roberta"])
@pytest.mark.parametrize("text", ["{x} It was {mask}.", "{x} {soft*3} It was {mask} .",
                                  "Question: {x} ? {mask} , {soft*2} {x2} end", "{soft=a b} {x2} {mask} {x} !"])
def test_truncation_keeps_template_soft_and_mask(request, which, text):
    model, tok = request.getfixturevalue(which)
    t = Template(text)
    prefix, suffix = special_wrap(tok)
    long_a = " ".join(["wonderful"] * 2000)
    long_b = " ".join(["dreadful plot"] * 1000)
    pieces_ids = []
    for p in t.pieces:
        if p.kind == "text":
            pieces_ids.append(tok((" " if p.space_before else "") + p.text, add_special_tokens=False)["input_ids"])
        else:
            pieces_ids.append(None)
    for max_length in (24, 40, 64, 120):
        texts_b = [long_b, "short", long_b] if t.uses_x2 else None
        batch = t.encode(tok, [long_a, long_a, "tiny"], texts_b, max_length=max_length)
        enc_a = [tok(" " * any(p.kind == "x" and p.space_before for p in t.pieces) + s, add_special_tokens=False)["input_ids"]
                 for s in (long_a, long_a, "tiny")]
        for i in range(3):
            n = int(batch["attention_mask"][i].sum())
            row = batch["input_ids"][i, :n].tolist()
            assert n <= max_length
            assert int((batch["input_ids"][i] == tok.mask_token_id).sum()) == 1
            assert row[batch["mask_positions"][i]] == tok.mask_token_id
            assert batch["soft_positions"].shape == (3, t.num_soft)
            # rebuild the expected row from the pieces, with slot lengths read off the row
            fixed = len(prefix) + len(suffix) + sum(len(x) for x in pieces_ids if x is not None) + t.num_soft + 1
            room = n - fixed
            a = enc_a[i]
            if t.uses_x2:
                b = tok(" " + texts_b[i], add_special_tokens=False)["input_ids"]
                la, lb = truncated_lengths(len(a), len(b), max_length - fixed)
                assert la + lb == room
            else:
                b, la, lb = [], min(len(a), max_length - fixed), 0
                assert la == room
            expected, soft_pos, mask_pos = list(prefix), [], None
            for p, ids in zip(t.pieces, pieces_ids):
                if p.kind == "text":
                    expected += ids
                elif p.kind == "x":
                    expected += a[:la]
                elif p.kind == "x2":
                    expected += b[:lb]
                elif p.kind == "soft":
                    soft_pos.append(len(expected))
                    expected.append(row[len(expected)])
                else:
                    mask_pos = len(expected)
                    expected.append(tok.mask_token_id)
            expected += suffix
            assert row == expected
            assert batch["soft_positions"][i].tolist() == soft_pos
            assert int(batch["mask_positions"][i]) == mask_pos
            if len(a) > 200 and (not t.uses_x2 or len(b) > 200):
                assert la >= 1 and (not t.uses_x2 or abs(la - lb) <= 1)


# ---------------------------------------------------------------------------- verbalizer
def test_verbalizer_parsing_and_defaults(bert):
    _, tok = bert
    v = Verbalizer.from_string("0:terrible,bad;1:great,good")
    assert v.num_labels == 2 and v.words == [["terrible", "bad"], ["great", "good"]]
    assert Verbalizer.from_string(v.to_string()) == v
    assert v.label_word_ids(tok) == [[[6659], [2919]], [[2307], [2204]]]
    v = Verbalizer({"positive": ["great"], "negative": "terrible"}, class_names=["negative", "positive"])
    assert v.words == [["terrible"], ["great"]] and v.to_string() == "negative:terrible;positive:great"
    assert Verbalizer.from_string(v.to_string(), ["negative", "positive"]) == v
    trec = Verbalizer.default_for(["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"])
    assert [w[0] for w in trec.words] == ["expression", "description", "entity", "human", "location", "number"]
    for d in (trec, Verbalizer.default_for(["negative", "positive"]), Verbalizer.default_for(["subjective", "objective"])):
        assert all(len(ids) == 1 for per in d.label_word_ids(tok) for ids in per)  # single WordPiece tokens


def test_verbalizer_errors(bert):
    _, tok = bert
    with pytest.raises(UserError, match="not in the backbone's vocabulary"):
        Verbalizer.from_string("0:terrible;1:\u2603").label_word_ids(tok)
    with pytest.raises(UserError, match="lacks label"):
        Verbalizer.from_string("0:terrible", class_names=["neg", "pos"])
    with pytest.raises(UserError, match="not a label of this data set"):
        Verbalizer.from_string("neg:terrible;happy:great", class_names=["neg", "pos"])
    with pytest.raises(UserError, match="both"):
        Verbalizer.from_string("0:great;1:great")
    with pytest.raises(UserError, match="has no ':'"):
        Verbalizer.from_string("terrible,great")
    with pytest.raises(UserError, match="no default label words"):
        Verbalizer.default_for(["cats", "dogs"])
    with pytest.raises(UserError, match="aggregation"):
        Verbalizer.from_string("0:a;1:b", aggregation="max")


# ---------------------------------------------------------------------------- prompt model
def _hf_label_logprobs(model, batch, ids):
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        at = logits[torch.arange(len(logits)), batch["mask_positions"]]
        return torch.log_softmax(at, dim=-1)[:, ids]


@pytest.mark.parametrize("which, words", [("bert", ("terrible", "great")), ("roberta", ("terrible", "great"))])
def test_scores_equal_transformers_mlm(request, which, words):
    model, tok = request.getfixturevalue(which)
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", f"0:{words[0]};1:{words[1]}")
    assert not clf.training
    batch = clf.encode(REVIEWS)
    ids = [tok(" " + w, add_special_tokens=False)["input_ids"][0] for w in words]
    if which == "roberta":  # word-initial forms: Ġgreat, and ' It was' as ĠIt Ġwas
        assert tok.convert_ids_to_tokens(ids) == ["Ġterrible", "Ġgreat"]
        assert "ĠIt" in tok.convert_ids_to_tokens(batch["input_ids"][0])
    with torch.no_grad():
        ours = clf.scores(REVIEWS)
    ref = _hf_label_logprobs(model, batch, ids)
    assert ours.shape == (len(REVIEWS), 2)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0), (ours - ref).abs().max()
    # the full-vocabulary reference path agrees too, also with soft tokens in the template
    soft = PromptClassifier(model, tok, "{x} {soft*2} It was {mask}.", f"0:{words[0]};1:{words[1]}")
    b = soft.encode(REVIEWS)
    with torch.no_grad():
        assert torch.allclose(soft(b), full_vocab_label_logits(soft, b), atol=1e-5, rtol=0)


def test_aggregation_rules(bert):
    model, tok = bert
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible,bad;1:great,good,terribleness",
                           check_head=False)
    mean = PromptClassifier(model, tok, "{x} It was {mask}.", Verbalizer.from_string(
        "0:terrible,bad;1:great,good,terribleness", aggregation="mean"), check_head=False)
    batch = clf.encode(REVIEWS[:2])
    with torch.no_grad():
        lp = torch.log_softmax(clf.mask_logits(batch), -1)
        got, got_mean = clf(batch), mean(batch)
    t, b, g, o, ness = 6659, 2919, 2307, 2204, 2791  # terribleness = terrible ##ness
    expect0 = torch.log((lp[:, t].exp() + lp[:, b].exp()) / 2)
    expect1 = torch.log((lp[:, g].exp() + lp[:, o].exp() + lp[:, t].exp()) / 3)  # "first": terrible of terribleness
    expect1_mean = torch.log((lp[:, g].exp() + lp[:, o].exp() + ((lp[:, t] + lp[:, ness]) / 2).exp()) / 3)
    assert torch.allclose(got[:, 0], expect0, atol=1e-5) and torch.allclose(got[:, 1], expect1, atol=1e-5)
    assert torch.allclose(got_mean[:, 0], expect0, atol=1e-5)
    assert torch.allclose(got_mean[:, 1], expect1_mean, atol=1e-5)


def test_prompt_training_freezes_backbone_and_moves_soft(bert):
    model, tok = bert
    torch.manual_seed(0)
    clf = PromptClassifier(model, tok, "{x} {soft*4} It was {mask}.", "0:terrible;1:great", train="prompt")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    soft0 = clf.soft_embeddings.detach().clone()
    names = [n for n, p in clf.named_parameters() if p.requires_grad]
    assert names == ["soft_embeddings"]
    assert all(not p.requires_grad for p in model.parameters())
    clf.train()
    assert clf.training and not model.training  # frozen backbone stays in eval mode (no dropout)
    opt = torch.optim.Adam(clf.trainable_parameters(), lr=1e-2)
    labels = torch.tensor([1, 0, 1, 0])
    losses = []
    for _ in range(5):
        loss = clf.loss(REVIEWS, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    clf.eval()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not torch.equal(clf.soft_embeddings.detach(), soft0)
    assert losses[-1] < losses[0]


def test_prompt_encoder_starts_as_identity_and_trains(bert):
    model, tok = bert
    for kind in ("lstm", "mlp"):
        clf = PromptClassifier(model, tok, "{x} {soft=It was} {soft*2} {mask}.", "0:terrible;1:great",
                               train="prompt", prompt_encoder=kind, check_head=False)
        word_emb = model.get_input_embeddings().weight
        assert torch.equal(clf.soft_embeddings[0].detach(), word_emb[2009].detach())  # "it"
        assert torch.allclose(clf.soft_prompt(), clf.soft_embeddings)
        clf.loss(REVIEWS[:2], [1, 0]).backward()
        enc_grads = [p.grad for p in clf.prompt_encoder.parameters()]
        assert any(g is not None and g.abs().sum() > 0 for g in enc_grads)


def test_save_load_prompt_round_trip(bert, tmp_path):
    model, tok = bert
    torch.manual_seed(1)
    clf = PromptClassifier(model, tok, "{x} {soft*20} {mask} .", "0:terrible,bad;1:great", train="prompt")
    with torch.no_grad():
        clf.soft_embeddings.add_(torch.randn_like(clf.soft_embeddings))
    path = clf.save(tmp_path / "p")
    assert path.suffix == ".safetensors" and path.stat().st_size < 100_000
    same = PromptClassifier.from_file(path, backbone=model, tokenizer=tok)
    assert same.template == clf.template and same.verbalizer == clf.verbalizer and same.train_mode == "prompt"
    assert torch.equal(same.predict(REVIEWS * 3), clf.predict(REVIEWS * 3))
    with torch.no_grad():
        assert torch.equal(same.scores(REVIEWS), clf.scores(REVIEWS))
    other = PromptClassifier(model, tok, "{x} {soft*20} {mask} .", "0:terrible,bad;1:great", train="prompt")
    other.load(path)
    assert torch.equal(other.soft_embeddings, clf.soft_embeddings)
    # with no backbone given, the backbone named in the file is loaded
    fresh = PromptClassifier.from_file(path)
    assert backbone_id(fresh.backbone) == DEFAULT_BACKBONE
    assert torch.equal(fresh.predict(REVIEWS), clf.predict(REVIEWS))


def test_save_load_full_model(bert, tmp_path):
    model, tok = bert
    import copy
    mine = copy.deepcopy(model)
    clf = PromptClassifier(mine, tok, "{x} It was {mask}.", "0:terrible;1:great", train="all")
    with torch.no_grad():
        mine.cls.predictions.transform.dense.bias.add_(0.5)
        mine.bert.encoder.layer[0].output.dense.weight.mul_(1.5)
    path = clf.save(tmp_path / "full.safetensors")
    loaded = PromptClassifier.from_file(path, backbone=copy.deepcopy(model), tokenizer=tok)
    with torch.no_grad():
        assert torch.equal(loaded.scores(REVIEWS), clf.scores(REVIEWS))
    sd = loaded.backbone.state_dict()
    assert sd["cls.predictions.decoder.weight"].data_ptr() == sd["bert.embeddings.word_embeddings.weight"].data_ptr()


def test_mismatching_prompt_files(bert, roberta, tmp_path):
    model, tok = bert
    clf = PromptClassifier(model, tok, "{x} {soft*3} {mask} .", "0:terrible;1:great", train="prompt")
    path = clf.save(tmp_path / "p3")
    other = PromptClassifier(model, tok, "{x} {soft*5} {mask} .", "0:terrible;1:great", train="prompt")
    with pytest.raises(UserError, match="3 soft tokens but template .* has 5"):
        other.load(path)
    rmodel, rtok = roberta
    with pytest.raises(UserError, match="embedding size 128.* has 32"):
        PromptClassifier.from_file(path, backbone=rmodel, tokenizer=rtok)
    model._diffprompt_backbone_id = "some-other-bert"
    try:
        with pytest.raises(UserError, match="bert-tiny .packaged.*some-other-bert"):
            PromptClassifier(model, tok, "{x} {soft*3} {mask} .", "0:terrible;1:great", train="prompt").load(path)
    finally:
        model._diffprompt_backbone_id = DEFAULT_BACKBONE
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError):
        PromptClassifier.from_file(tmp_path / "junk.safetensors", backbone=model, tokenizer=tok)


def test_prompt_classifier_input_errors(bert, tmp_path):
    model, tok = bert
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great", check_head=False)
    with pytest.raises(UserError, match="UTF-8"):
        clf.predict([b"\xff\xfe"])
    with pytest.raises(UserError, match="no soft tokens"):
        PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great", train="prompt")
    with pytest.raises(UserError, match="train mode"):
        PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great", train="head")
    with pytest.raises(UserError, match="config.json"):
        load_backbone(tmp_path)


# ---------------------------------------------------------------------------- fine-tuning baseline
def test_finetune_classifier_shapes_learning_and_save(bert, tmp_path):
    import copy
    model, tok = bert
    torch.manual_seed(0)
    ft = FineTuneClassifier(copy.deepcopy(model), tok, num_labels=3, dropout=0.1)
    assert ft.scores(REVIEWS).shape == (4, 3)
    assert ft.scores(REVIEWS[:2], ["and a second input", "more"]).shape == (2, 3)
    assert ft.predict(REVIEWS, batch_size=3).shape == (4,)
    texts = ["good fun", "very good", "good story", "bad mess", "very bad", "bad story"]
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    ft2 = FineTuneClassifier(copy.deepcopy(model), tok, num_labels=2)
    opt = torch.optim.Adam(ft2.trainable_parameters(), lr=1e-3)
    ft2.train()
    first = ft2.loss(texts, labels).item()
    for _ in range(15):
        loss = ft2.loss(texts, labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    ft2.eval()
    with torch.no_grad():
        final = ft2.loss(texts, labels).item()
    assert final < first - 0.1
    assert (ft2.predict(texts) == labels).float().mean() >= 5 / 6
    path = ft2.save(tmp_path / "ft")
    back = FineTuneClassifier.from_file(path, backbone=copy.deepcopy(model), tokenizer=tok)
    with torch.no_grad():
        assert torch.equal(back.scores(texts), ft2.scores(texts))
    with pytest.raises(UserError, match="UTF-8"):
        ft2.scores([b"abc"])


# ---------------------------------------------------------------------------- other architectures
def _tiny(arch, vocab):
    import transformers as tf

    common = dict(vocab_size=vocab, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                  max_position_embeddings=160)
    if arch == "distilbert":
        return tf.DistilBertForMaskedLM(tf.DistilBertConfig(vocab_size=vocab, dim=16, n_layers=1, n_heads=2,
                                                            hidden_dim=32, max_position_embeddings=160))
    if arch == "electra":
        return tf.ElectraForMaskedLM(tf.ElectraConfig(embedding_size=8, hidden_size=16, **common))
    if arch == "albert":
        return tf.AlbertForMaskedLM(tf.AlbertConfig(embedding_size=8, hidden_size=16, **common))
    if arch == "deberta-v2":
        return tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(hidden_size=16, legacy=False, **common))
    if arch == "deberta-v2-legacy":
        return tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(hidden_size=16, legacy=True, **common))
    raise AssertionError(arch)


@pytest.mark.parametrize("arch", ["distilbert", "electra", "albert", "deberta-v2", "deberta-v2-legacy"])
def test_other_architectures_match_their_mlm(bert, arch):
    _, tok = bert
    torch.manual_seed(0)
    model = _tiny(arch, len(tok)).eval()
    clf = PromptClassifier(model, tok, "{x} It was {mask}.", "0:terrible;1:great")  # self-checks the head
    batch = clf.encode(REVIEWS)
    with torch.no_grad():
        ours = clf.scores(REVIEWS)
    assert torch.allclose(ours, _hf_label_logprobs(model, batch, [6659, 2307]), atol=1e-5, rtol=0)
    soft = PromptClassifier(model, tok, "{x} {soft*2} {mask}.", "0:terrible;1:great", train="prompt")
    soft.loss(REVIEWS, [1, 0, 1, 0]).backward()
    assert soft.soft_embeddings.grad is not None and soft.soft_embeddings.grad.abs().sum() > 0


def test_hub_id_offline_is_a_user_error(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(UserError, match="needs network access"):
        load_backbone("no-such-org/no-such-masked-lm")


def test_sentencepiece_glued_literal_has_no_word_start_mark():
    import transformers as tf
    from tokenizers import SentencePieceUnigramTokenizer

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(["It was great .", "It was terrible .", "a good movie ."] * 10, vocab_size=60,
                           special_tokens=["<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]"], unk_token="<unk>",
                           show_progress=False)
    tok = tf.PreTrainedTokenizerFast(tokenizer_object=sp._tokenizer, unk_token="<unk>", pad_token="<pad>",
                                     cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    assert tok.convert_ids_to_tokens(tok(".", add_special_tokens=False)["input_ids"])[0] == "\u2581"  # alone: ▁ .
    b = Template("{x} It was {mask}.").encode(tok, ["a good movie"])
    toks = tok.convert_ids_to_tokens(b["input_ids"][0])
    m = int(b["mask_positions"][0])
    assert toks[m] == "[MASK]" and toks[m + 1:] == ["."]
