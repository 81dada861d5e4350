"""The on-disk sentence-embedding cache: a hit never runs the encoder and returns the stored vectors
bit for bit, another text list or another encoder misses, an unreadable chunk is embedded again,
a reader never sees a chunk that is still being written. Tiny random BERT encoders in tmp_path."""

from __future__ import annotations

import pytest
import torch

from diffprompt import checkpoint
from diffprompt.prompting import load_backbone
from diffprompt.prompting.models.embedding_cache import EmbeddingCache, read_chunk
from diffprompt.prompting.models.sentence_encoder import SentenceEncoder, encoder_key

TEXTS = ["a gorgeous witty movie", "the plot is boring", "so it was great", "a long and tedious film about nothing"]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFPROMPT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tok():
    return load_backbone()[1]


def save_encoder(folder, tok, seed=0):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def counted(enc):
    """The encoder, and the batch sizes of its model's forward calls from now on."""
    calls = []
    enc.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(len(kwargs["input_ids"])),
                                    with_kwargs=True)
    return enc, calls


def test_a_second_encoder_reads_the_cache_and_never_runs_the_model(tok, tmp_path, cache_dir):
    folder = save_encoder(tmp_path / "enc", tok)
    first, first_calls = counted(SentenceEncoder(folder))
    stored = first.embed(TEXTS, batch_size=2)
    assert first_calls == [2, 2]
    fresh = SentenceEncoder(folder, cache=False).embed(TEXTS, batch_size=2)
    assert torch.equal(stored, fresh)  # the stored vectors are the fresh ones, exactly
    assert len(list(cache_dir.rglob("*.safetensors"))) == 1  # one chunk; cache=False wrote nothing

    second, calls = counted(SentenceEncoder(folder))
    assert torch.equal(second.embed(TEXTS, batch_size=2), fresh) and calls == []
    again = second.embed([TEXTS[2], TEXTS[0], TEXTS[2]])  # any order, repeats: still hits
    assert torch.equal(again, fresh[[2, 0, 2]]) and calls == []
    mixed = second.embed([TEXTS[1], "a text nobody embedded yet", TEXTS[3]])
    assert calls == [1]  # the model saw the one new text only
    assert torch.equal(mixed[[0, 2]], fresh[[1, 3]])
    assert torch.equal(mixed[1], SentenceEncoder(folder, cache=False).embed(["a text nobody embedded yet"])[0])


def test_another_encoder_or_another_text_misses(tok, tmp_path):
    a = save_encoder(tmp_path / "a", tok, seed=0)
    b = save_encoder(tmp_path / "b", tok, seed=1)
    SentenceEncoder(a).embed(TEXTS)
    other, calls = counted(SentenceEncoder(b))
    assert encoder_key(a) != encoder_key(b)
    got = other.embed(TEXTS)
    assert calls == [4] and not torch.allclose(got, SentenceEncoder(a).embed(TEXTS))
    again, calls = counted(SentenceEncoder(a))
    again.embed(["the plot is boring!"])  # one character more: another text
    assert calls == [1]
    key = encoder_key(a)
    save_encoder(tmp_path / "a", tok, seed=2)  # new weights in the same folder: new sizes/mtimes, a new key
    assert encoder_key(a) != key
    renewed, calls = counted(SentenceEncoder(a))
    renewed.embed(TEXTS)
    assert calls == [4]


def test_an_unreadable_chunk_is_embedded_again(tok, tmp_path, cache_dir):
    folder = save_encoder(tmp_path / "enc", tok)
    fresh = SentenceEncoder(folder, cache=False).embed(TEXTS)
    SentenceEncoder(folder).embed(TEXTS)
    (chunk,) = cache_dir.rglob("*.safetensors")
    chunk.write_bytes(chunk.read_bytes()[: chunk.stat().st_size // 2])  # cut in half
    assert read_chunk(chunk) is None
    enc, calls = counted(SentenceEncoder(folder))
    assert torch.equal(enc.embed(TEXTS), fresh) and calls == [4]
    assert read_chunk(chunk) is not None  # the same texts wrote the same chunk name over it
    last, calls = counted(SentenceEncoder(folder))
    last.embed(TEXTS)
    assert calls == []


def test_a_reader_never_sees_a_chunk_being_written(tmp_path, monkeypatch):
    seen = []

    def meanwhile(tmp, final):  # the writer has written its temp file and not renamed it yet
        reader = EmbeddingCache("k", root=tmp_path)
        reader._scan()
        seen.append((final.exists(), len(reader._rows)))

    monkeypatch.setattr(checkpoint, "_before_rename", meanwhile)
    writer = EmbeddingCache("k", root=tmp_path)
    writer.embed(["x", "y"], lambda todo: torch.ones(len(todo), 3))
    assert seen == [(False, 0)]
    monkeypatch.undo()
    reader = EmbeddingCache("k", root=tmp_path)
    assert torch.equal(reader.embed(["y"], lambda todo: pytest.fail("a hit computes nothing")), torch.ones(1, 3))
