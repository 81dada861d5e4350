"""The embedding-logreg reference: its logistic regression is scikit-learn's objective solved to the
optimum (checked against Newton's method written in numpy), and a `prompting train` run reports the
accuracy that its saved head gives on embeddings computed here, with the C its dev scores chose. The
model (on a stand-in encoder) scores with the head it is given, saves and reads back that head with its C
and encoder name, and refuses pairs, non-text and a file from another encoder in one message each."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffprompt.checkpoint import load_checkpoint, save_checkpoint
from diffprompt.cli import main
from diffprompt.data import load_text
from diffprompt.errors import UserError
from diffprompt.prompting.models import embedding_logreg
from diffprompt.prompting.models.embedding_logreg import (
    C_GRID,
    FORMAT,
    EmbeddingLogReg,
    fit_logistic_regression,
    logreg_objective,
)
from diffprompt.prompting.models.sentence_encoder import (
    MAX_TOKENS,
    PIP_NAME,
    SentenceEncoder,
    default_encoder_dir,
)
from diffprompt.prompting.run.fewshot import sample_few_shot

pytestmark = pytest.mark.usefixtures("one_thread")


def newton_logreg(x: np.ndarray, y: np.ndarray, k: int, c: float, iters: int = 50) -> tuple[np.ndarray, np.ndarray]:
    """Minimise C·Σ CE + ½‖W‖² by damped Newton steps on θ = per class [W_k, b_k] (pseudo-inverse:
    the bias is defined up to a common shift)."""
    n, d = x.shape
    xt = np.hstack([x, np.ones((n, 1))])
    theta = np.zeros((k, d + 1))
    penalty = np.tile(np.r_[np.ones(d), 0.0], k)
    onehot = np.eye(k)[y]

    def f(t):
        z = xt @ t.T
        z = z - z.max(1, keepdims=True)
        logp = z - np.log(np.exp(z).sum(1, keepdims=True))
        return -c * (onehot * logp).sum() + 0.5 * (t[:, :d] ** 2).sum()

    for _ in range(iters):
        z = xt @ theta.T
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        grad = (c * (p - onehot).T @ xt + np.c_[theta[:, :d], np.zeros(k)]).ravel()
        if np.abs(grad).max() < 1e-11:
            break
        a = np.einsum("ik,kl->ikl", p, np.eye(k)) - np.einsum("ik,il->ikl", p, p)  # softmax Jacobians
        hess = np.diag(penalty) + c * np.einsum("ikl,id,ie->kdle", a, xt, xt).reshape(k * (d + 1), k * (d + 1))
        step = (np.linalg.pinv(hess, rcond=1e-12) @ grad).reshape(k, d + 1)
        t = 1.0
        while f(theta - t * step) > f(theta) and t > 1e-8:
            t /= 2
        theta = theta - t * step
    return theta[:, :d], theta[:, d]


@pytest.mark.parametrize("c", [0.1, 10.0])
def test_the_fit_is_the_optimum_newtons_method_finds(c):
    gen = np.random.default_rng(0)
    x = gen.normal(size=(30, 5))
    y = (x[:, 0] + 0.5 * gen.normal(size=30) > 0).astype(int) + (x[:, 1] > 0.8)
    w, b = fit_logistic_regression(torch.from_numpy(x), torch.from_numpy(y), 3, c)
    w_ref, b_ref = newton_logreg(x, y, 3, c)
    assert np.allclose(w.numpy(), w_ref, atol=1e-6)
    assert np.allclose(b.numpy() - b.numpy().mean(), b_ref - b_ref.mean(), atol=1e-6)
    # the gradient of the objective vanishes there
    wg, bg = w.clone().requires_grad_(), b.clone().requires_grad_()
    logreg_objective(wg, bg, torch.from_numpy(x), torch.from_numpy(y), c).backward()
    assert wg.grad.abs().max() < 1e-6 and bg.grad.abs().max() < 1e-6
    assert np.allclose(w.numpy().sum(0), 0, atol=1e-6)  # the penalty picks the W whose class rows sum to zero


def test_far_apart_inputs_at_the_largest_c_still_reach_the_optimum():
    """Six points at norm 30 and C = 100: without a line search the full L-BFGS steps overshoot and never settle."""
    gen = np.random.default_rng(2)
    x = gen.normal(size=(6, 3))
    x = 30 * x / np.linalg.norm(x, axis=1, keepdims=True)
    y = np.arange(6) % 2
    w, b = fit_logistic_regression(torch.from_numpy(x), torch.from_numpy(y), 2, 100.0)
    w_ref, b_ref = newton_logreg(x, y, 2, 100.0)
    assert np.allclose(w.numpy(), w_ref, atol=1e-6)
    assert np.allclose(b.numpy() - b.numpy().mean(), b_ref - b_ref.mean(), atol=1e-5)


def test_a_tiny_c_still_moves_the_fit_off_zero():
    """At C = 5e-8 every entry of the gradient at W = 0 is 7.5e-8, under L-BFGS's default tolerance_grad
    (1e-7) but over the fit's 1e-10: the fit is the optimum, W ≈ C·Σ_i (onehot_i − 1/K) x_i^T, not zero."""
    x = np.vstack([np.ones(8), -np.ones(8), 0.5 * np.ones(8), -0.5 * np.ones(8)])
    y = np.array([0, 1, 0, 1])
    c = 5e-8
    w, _ = fit_logistic_regression(torch.from_numpy(x), torch.from_numpy(y), 2, c)
    w_ref, _ = newton_logreg(x, y, 2, c)
    assert np.allclose(w_ref, c * (np.eye(2)[y] - 0.5).T @ x, rtol=1e-5)  # first order in C
    # the solver stops once the objective changes by < 1e-14: first order, off by O(C·‖x‖²) relatively
    assert np.allclose(w.numpy(), w_ref, rtol=1e-5, atol=0)


def test_labels_may_be_any_integer_array():
    gen = np.random.default_rng(0)
    x = torch.from_numpy(gen.normal(size=(12, 3)))
    y = np.arange(12) % 3
    w32, b32 = fit_logistic_regression(x, y.astype(np.int32), 3, 1.0)
    w64, b64 = fit_logistic_regression(x, torch.from_numpy(y), 3, 1.0)
    assert torch.equal(w32, w64) and torch.equal(b32, b64)


class FakeEncoder:
    """Stands in for a SentenceEncoder: 3-d embeddings (length, count of "a", 1) of each text."""

    def __init__(self, name="enc-a", tokenizer=None):
        self.name, self.tokenizer = name, tokenizer
        self.model = SimpleNamespace(config=SimpleNamespace(hidden_size=3))

    def embed(self, texts):
        return torch.tensor([[float(len(t)), float(t.count("a")), 1.0] for t in texts])


@pytest.fixture
def loaded_encoders(monkeypatch):
    """Replaces the SentenceEncoder the module builds: the list records each name it was asked to load."""
    asked = []

    def load(name_or_path=None):
        asked.append(name_or_path)
        return FakeEncoder(PIP_NAME if name_or_path is None else name_or_path)

    monkeypatch.setattr(embedding_logreg, "SentenceEncoder", load)
    return asked


W = torch.tensor([[0.5, -1.0, 0.25], [-0.5, 2.0, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -1.5], dtype=torch.float64)


def test_the_scores_are_the_head_set_on_the_embeddings():
    model = EmbeddingLogReg(FakeEncoder(), 2)
    assert model.c == 1.0  # scikit-learn's default C
    assert model.set_head(W, B, c=0.1) is model and model.c == 0.1
    texts = ["banana", "a cat", "xyz"]
    e = torch.tensor([[6.0, 3.0, 1.0], [5.0, 2.0, 1.0], [3.0, 0.0, 1.0]])
    assert torch.equal(model.embed(texts), e)
    assert torch.equal(model.scores(texts), (e.double() @ W.T + B).float())


def test_scores_run_the_head_on_its_own_device():
    """The embeddings come back on the CPU; the head (here on the meta device, as on a GPU) gets them moved."""
    model = EmbeddingLogReg(FakeEncoder(), 2).to("meta")
    out = model.scores(["a", "b"])
    assert out.device.type == "meta" and tuple(out.shape) == (2, 2)


def test_one_label_pairs_and_non_text_are_refused():
    with pytest.raises(UserError, match="a classifier needs at least 2 labels, got 1"):
        EmbeddingLogReg(FakeEncoder(), 1)
    model = EmbeddingLogReg(FakeEncoder(), 2)
    pairs = "the embedding-logreg reference embeds one text per example; pair tasks need a prompt method"
    for call in (model.scores, model.encode):
        with pytest.raises(UserError, match=f"^{re.escape(pairs)}$"):
            call(["a"], ["b"])
    for call in (model.embed, model.encode):
        with pytest.raises(UserError, match=r"^texts\[1\] is int, not a string"):
            call(["a", 3])


def test_encode_gives_the_tokens_the_encoder_embeds_cut_at_its_max_length():
    from transformers import AutoTokenizer

    model = EmbeddingLogReg(FakeEncoder(tokenizer=AutoTokenizer.from_pretrained(str(default_encoder_dir()))), 2)
    enc = model.encode(["word " * 400, "a short one"])
    assert set(enc) == {"input_ids", "attention_mask"}
    assert tuple(enc["input_ids"].shape) == (2, MAX_TOKENS)
    assert enc["attention_mask"].sum(1).tolist() == [MAX_TOKENS, 5]  # [CLS] a short one [SEP]


def test_a_saved_head_is_read_back_with_its_c(tmp_path, loaded_encoders):
    enc = FakeEncoder()
    model = EmbeddingLogReg(enc, 2).set_head(W, B, c=0.1)
    path = model.save(tmp_path / "head", extra_meta={"run": "r1"})
    tensors, meta = load_checkpoint(path)
    assert meta == {"format": FORMAT, "kind": "embedding-logreg", "encoder": "enc-a", "num_labels": 2, "c": 0.1,
                    "run": "r1"}
    assert torch.equal(tensors["head.weight"], W.float()) and torch.equal(tensors["head.bias"], B.float())
    back = EmbeddingLogReg.from_file(path, encoder=enc)
    assert back.sentence_encoder is enc and loaded_encoders == []
    assert back.c == 0.1 and torch.equal(back.scores(["banana"]), model.scores(["banana"]))
    fresh = EmbeddingLogReg(enc, 2, c=10.0).load(path)
    assert fresh.c == 0.1 and torch.equal(fresh.head.weight, W.float())


def test_a_file_without_c_keeps_the_models_c(tmp_path):
    path = save_checkpoint(tmp_path / "old.safetensors", {"head.weight": W.float(), "head.bias": B.float()},
                           {"format": FORMAT, "encoder": "enc-a", "num_labels": 2})
    model = EmbeddingLogReg(FakeEncoder(), 2, c=10.0).load(path)
    assert model.c == 10.0 and torch.equal(model.head.bias, B.float())


def test_a_file_is_refused_by_a_model_with_another_encoder_or_label_count(tmp_path):
    path = EmbeddingLogReg(FakeEncoder("enc-a"), 2).save(tmp_path / "head.safetensors")
    with pytest.raises(UserError, match=re.escape(f"{path} was fitted on sentence encoder 'enc-a', not 'enc-b'; "
                                                  "load it with the encoder it was fitted on")):
        EmbeddingLogReg(FakeEncoder("enc-b"), 2).load(path)
    with pytest.raises(UserError, match=re.escape(f"checkpoint {path} was made with another model config")):
        EmbeddingLogReg(FakeEncoder("enc-a"), 3).load(path)


def test_from_meta_loads_the_encoder_the_file_names(loaded_encoders):
    packaged = EmbeddingLogReg.from_meta({"format": FORMAT, "encoder": PIP_NAME, "num_labels": 3, "c": 0.1})
    assert loaded_encoders == [None]  # the packaged encoder is found by its package, not its pip name
    assert packaged.sentence_encoder.name == PIP_NAME
    assert packaged.num_labels == 3 and packaged.c == 0.1 and tuple(packaged.head.weight.shape) == (3, 3)
    other = EmbeddingLogReg.from_meta({"format": FORMAT, "encoder": "/models/my-sbert", "num_labels": 2})
    assert loaded_encoders == [None, "/models/my-sbert"] and other.sentence_encoder.name == "/models/my-sbert"
    assert other.num_labels == 2 and other.c == 1.0  # a sidecar without C: the default
    given = FakeEncoder("enc-given")
    assert EmbeddingLogReg.from_meta({"encoder": PIP_NAME, "num_labels": 2}, encoder=given).sentence_encoder is given
    assert loaded_encoders == [None, "/models/my-sbert"]


def test_a_run_reports_what_its_head_gives_on_embeddings_computed_here(tmp_path):
    out = tmp_path / "run"
    assert main(["prompting", "train", "--dataset", "mr", "--method", "embedding-logreg", "--shots", "4",
                 "--seed", "13", "--limit-test", "40", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    metrics = [json.loads(m) for m in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["c"] for m in metrics] == list(C_GRID)
    chosen = max(range(len(C_GRID)), key=lambda i: (metrics[i]["dev_accuracy"], -i))  # ties: the first (smaller C)
    assert res["c"] == C_GRID[chosen] and res["dev_accuracy"] == metrics[chosen]["dev_accuracy"]
    head = load_file(out / "logreg.safetensors")
    encoder = SentenceEncoder(cache=False)
    # the saved head is the optimum on the run's own few-shot draw
    ds = load_text("mr")
    names = [str(n) for n in ds.class_names]
    draw = sample_few_shot(list(ds.split("train").examples), 4, 13, class_names=names)
    x = encoder.encode([e.text for e in draw.train]).double().numpy()
    w_ref, _ = newton_logreg(x, np.array([e.label for e in draw.train]), len(names), res["c"])
    assert np.allclose(head["head.weight"].double().numpy(), w_ref, atol=1e-4)
    # its test accuracy is the one the head gives on these embeddings
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    logits = encoder.encode([p["text"] for p in preds]) @ head["head.weight"].T + head["head.bias"]
    mine = [names[i] for i in logits.argmax(-1).tolist()]
    assert mine == [p["prediction"] for p in preds]
    assert res["test_accuracy"] == sum(p["label"] == m for p, m in zip(preds, mine)) / 40
    # and `evaluate` on the folder reads the same head back
    assert main(["prompting", "evaluate", str(out), "--limit", "40"]) == 0
    again = json.loads(next(out.glob("evaluate-*.json")).read_text())
    assert again["accuracy"] == res["test_accuracy"]


@pytest.mark.parametrize("flags, says", [
    (["--template", "{x} {mask}"], "--template, --verbalizer and --calibrate apply to the prompt methods"),
    (["--train", "all"], "--prompt-encoder and --train do not apply"),
    (["--shots", "0"], "give --shots K >= 1"),
])
def test_settings_that_do_not_apply_are_refused_in_one_line(tmp_path, capsys, flags, says):
    assert main(["prompting", "train", "--dataset", "trec", "--method", "embedding-logreg", *flags,
                 "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1
