"""The embedding-logreg reference: its logistic regression is scikit-learn's objective solved to the
optimum (checked against Newton's method written in numpy), and a `prompting train` run reports the
accuracy that its saved head gives on embeddings computed here, with the C its dev scores chose."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from diffprompt.cli import main
from diffprompt.data import load_text
from diffprompt.prompting.models.embedding_logreg import C_GRID, fit_logistic_regression, logreg_objective
from diffprompt.prompting.models.sentence_encoder import SentenceEncoder
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
