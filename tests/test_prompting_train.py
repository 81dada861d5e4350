"""The prompting training loop: a short prompt-ft run learns, soft training leaves the backbone alone,
model choice on the few-shot dev set, and the run folder's files."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from diffprompt.errors import UserError
from diffprompt.prompting.models.backbone import fresh_backbone
from diffprompt.prompting.run.classifier_factory import build_verbalizer
from diffprompt.prompting.run.config import RunConfig
from diffprompt.prompting.methods.defaults import default_template, default_verbalizer_spec
from diffprompt.prompting.methods.registry import METHODS
from diffprompt.prompting.run.data import limit_examples, load_data
from diffprompt.prompting.run.training import train_run


@pytest.fixture(scope="module")
def mr():
    return load_data("mr")


def test_prompt_ft_on_mr_16_shot_lowers_the_training_loss(mr, tmp_path):
    torch.set_num_threads(1)
    cfg = RunConfig(dataset="mr", method="prompt-ft", shots=16, seed=13, steps=16, eval_every=8,
                    batch_size=8, limit_test=40, num_examples=3)
    res = train_run(cfg, tmp_path / "run", ds=mr, quiet=True)
    # loss over all 32 few-shot training examples, eval mode, before and after the 16 steps
    assert res["train_loss_after"] < res["train_loss_before"] - 0.05, res
    assert res["num_train"] == 32 and res["num_dev"] == 32 and res["num_test"] == 40
    run = tmp_path / "run"
    conf = json.loads((run / "config.json").read_text())
    assert conf["kind"] == "prompting-train" and conf["template"] == "{x} It was {mask}." and conf["lr"] == METHODS["prompt-ft"].lr == 1e-3
    assert (run / "DONE").exists() and (run / "prompt.safetensors").exists()
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    devs = [m["dev_accuracy"] for m in metrics]
    assert [m["step"] for m in metrics] == [0, 8, 16]
    # model choice: the reported dev accuracy is the best seen, at the first step that reached it
    assert res["dev_accuracy"] == max(devs) and metrics[devs.index(max(devs))]["step"] == res["best_step"]
    preds = [json.loads(line) for line in (run / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 40
    assert sum(p["correct"] for p in preds) / 40 == pytest.approx(res["test_accuracy"])
    examples = json.loads((run / "examples.json").read_text())
    assert len(examples) == 3
    for ex in examples:
        assert "[MASK]" in ex["prompt"] and "it was" in ex["prompt"]
        assert set(ex["scores"]) == {"negative (bad)", "positive (good)"}
        best = max(ex["scores"], key=ex["scores"].get)
        assert best.startswith(ex["prediction"])


def test_soft_training_moves_the_soft_tokens_lowers_the_loss_and_leaves_the_backbone(mr, tmp_path, monkeypatch):
    """Soft prompt tuning: the two soft tokens start as the embeddings of "it" and "was" and move;
    the loss on the few-shot training set, recomputed here from the model's label scores at both
    states, goes down; every backbone tensor is bitwise unchanged; the saved prompt is the chosen
    state and gives the reported test accuracy."""
    from diffprompt.prompting.run import loop
    from diffprompt.prompting.models.prompt_classifier import PromptClassifier

    torch.set_num_threads(1)
    seen = []  # (model, soft embeddings, examples) each time the training-set loss is measured: before and after

    def spy(model, examples, batch_size=64):
        seen.append((model, model.soft_embeddings.detach().clone(), examples))
        return real_mean_loss(model, examples, batch_size)

    real_mean_loss = loop.mean_loss
    monkeypatch.setattr(loop, "mean_loss", spy)
    bb, tok = fresh_backbone(None)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    cfg = RunConfig(dataset="mr", method="soft", shots=4, seed=21, steps=6, eval_every=3, limit_test=16, lr=0.1)
    res = train_run(cfg, tmp_path / "soft", ds=mr, backbone=(bb, tok), quiet=True)
    assert res["trainable_parameters"] == 2 * bb.config.hidden_size  # {soft=It was}: two soft tokens
    for k, v in bb.state_dict().items():
        assert torch.equal(v, before[k]), k
    [(model, start, train), (_, end, _)] = seen
    words = bb.get_input_embeddings().weight.detach()
    it, was = (tok(" " + w, add_special_tokens=False)["input_ids"] for w in ("It", "was"))
    torch.testing.assert_close(start, torch.stack([words[it].mean(0), words[was].mean(0)]), rtol=0, atol=0)
    assert (end - start).abs().max() > 0.05  # lr 0.1 for six steps moves them
    labels = torch.tensor([ex.label for ex in train])
    losses = []
    with torch.no_grad():
        for state in (start, end):
            model.soft_embeddings.copy_(state)
            losses.append(float(F.cross_entropy(model.scores_in_batches([ex.text for ex in train]), labels)))
    assert losses == pytest.approx([res["train_loss_before"], res["train_loss_after"]], abs=1e-5)
    assert losses[1] < losses[0] - 0.05, losses
    saved = PromptClassifier.from_file(tmp_path / "soft" / "prompt.safetensors")
    chosen = {0: start, cfg.steps: end}.get(res["best_step"])
    if chosen is not None:  # the state of the dev set's best step
        torch.testing.assert_close(saved.soft_embeddings, chosen, rtol=0, atol=0)
    else:
        assert not torch.equal(saved.soft_embeddings, start) and not torch.equal(saved.soft_embeddings, end)
    assert accuracy_on_test_subset(saved, mr, 16) == res["test_accuracy"]


def accuracy_on_test_subset(model, ds, limit: int) -> float:
    """Accuracy of `model` on the run's `limit`-example test subset, predicted here."""
    examples = limit_examples(ds.split("test").examples, limit)
    pred = model.scores_in_batches([ex.text for ex in examples], batch_size=64).argmax(-1).tolist()
    return sum(p == ex.label for p, ex in zip(pred, examples)) / len(examples)


def test_zero_shot_accuracy_is_the_hard_prompts_own_prediction(mr, tmp_path):
    """Zero-shot on MR: the reported accuracy and predictions equal those of a PromptClassifier built
    here from the template "{x} It was {mask}." and the words bad / good on the untrained BERT-tiny."""
    from diffprompt.prompting.models.prompt_classifier import PromptClassifier

    torch.set_num_threads(1)
    z = train_run(RunConfig(dataset="mr", method="zero-shot", shots=4, seed=13, limit_test=24), tmp_path / "zs",
                  ds=mr, quiet=True)
    assert z["trainable_parameters"] == 0 and z["best_step"] == 0 and "train_loss_before" not in z
    bb, tok = fresh_backbone(None)
    model = PromptClassifier(bb, tok, "{x} It was {mask}.", {"negative": ["bad"], "positive": ["good"]}).eval()
    assert accuracy_on_test_subset(model, mr, 24) == z["test_accuracy"]
    examples = limit_examples(mr.split("test").examples, 24)
    preds = [json.loads(line) for line in (tmp_path / "zs" / "predictions.jsonl").read_text().splitlines()]
    ours = model.scores_in_batches([ex.text for ex in examples]).argmax(-1).tolist()
    assert [p["text"] for p in preds] == [ex.text for ex in examples]
    assert [p["prediction"] for p in preds] == [("negative", "positive")[i] for i in ours]


def test_finetune_accuracy_is_the_saved_models_own_prediction(mr, tmp_path):
    """Fine-tuning: the saved model, loaded on its own, predicts the reported test accuracy."""
    from diffprompt.prompting.models.finetune_classifier import FineTuneClassifier

    torch.set_num_threads(1)
    f = train_run(RunConfig(dataset="mr", method="finetune", shots=4, seed=13, steps=4, eval_every=2, limit_test=24),
                  tmp_path / "ft", ds=mr, quiet=True)
    assert f["template"] is None and f["train_loss_after"] < f["train_loss_before"]
    saved = FineTuneClassifier.from_file(tmp_path / "ft" / "model.safetensors").eval()
    assert accuracy_on_test_subset(saved, mr, 24) == f["test_accuracy"]


# LM-BFF's manual prompts (uncased BERT) and label words, as methods/defaults.py's table documents them.
DEFAULTS = {
    "mr": ({"hard": "{x} It was {mask}.", "soft": "{x} {soft=It was} {mask}", "hybrid": "{x} {soft*2} It was {mask}."},
           {"negative": ["bad"], "positive": ["good"]}),
    "cr": ({"hard": "{x} It was {mask}.", "soft": "{x} {soft=It was} {mask}", "hybrid": "{x} {soft*2} It was {mask}."},
           {"negative": ["bad"], "positive": ["good"]}),
    "subj": ({"hard": "{x} This is {mask}.", "soft": "{x} {soft=This is} {mask}", "hybrid": "{x} {soft*2} This is {mask}."},
             {"subjective": ["subjective"], "objective": ["objective"]}),
    "trec": ({"hard": "{mask} : {x}", "soft": "{soft=question about} {mask} : {x}", "hybrid": "{soft*2} {mask} : {x}"},
             {"ABBR": ["expression"], "DESC": ["description"], "ENTY": ["entity"], "HUM": ["human"],
              "LOC": ["location"], "NUM": ["number"]}),
}


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_default_templates_and_label_words_per_data_set(name):
    templates, words = DEFAULTS[name]
    ds = load_data(name)
    assert default_verbalizer_spec(name, ds.class_names) == words
    for style, template in templates.items():
        assert default_template(name, style) == template
    for method in ("zero-shot", "prompt-ft", "soft", "hybrid"):  # what a run resolves to
        style = METHODS[method].style
        assert RunConfig(dataset=name, method=method).resolved().template == templates[style]
    verbalizer = build_verbalizer(RunConfig(dataset=name), ds.class_names)
    assert verbalizer.words == [words[n] for n in ds.class_names]
    assert documented_templates()[name] == [templates[s] for s in ("hard", "soft", "hybrid")]


def documented_templates() -> dict[str, list[str]]:
    """The table of default templates in methods/defaults.py's docstring: {data set: [hard, soft, hybrid]}."""
    from diffprompt.prompting.methods import defaults

    table = {}
    for line in defaults.__doc__.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and "{mask}" in cells[1]:
            table.update({name: cells[1:4] for name in cells[0].split(", ")})
    return table


def test_default_templates_of_files_and_pairs():
    assert default_template("mytask.csv", "hard", pair=True) == "{x} ? {mask} , {x2}"
    assert default_template("mytask.csv", "soft") == "{x} {soft*4} {mask}"
    assert default_verbalizer_spec("mytask.csv", ["a", "b"]) is None


def test_verbalizer_lacking_a_label_and_bad_method_settings():
    with pytest.raises(UserError, match="lacks label"):
        build_verbalizer(RunConfig(dataset="mr", verbalizer="negative:bad"), ["negative", "positive"])
    with pytest.raises(UserError, match="prompt-ft trains every parameter"):
        RunConfig(method="prompt-ft", train="prompt").resolved()
    with pytest.raises(UserError, match="unknown method"):
        RunConfig(method="prefix").resolved()


DIST_SCRIPT = """
import hashlib, json, sys, torch
from diffprompt.prompting.models.backbone import fresh_backbone
from diffprompt.prompting.run.config import RunConfig
from diffprompt.training_setup import get_accelerator
from diffprompt.prompting.run.training import train_run
bb, tok = fresh_backbone(None)
res = train_run(RunConfig(dataset="mr", method="prompt-ft", shots=4, seed=13, steps=3, eval_every=3, limit_test=8),
                sys.argv[1] + "/run", backbone=(bb, tok), quiet=True)
acc = get_accelerator()
h = hashlib.sha256(b"".join(v.detach().numpy().tobytes() for v in bb.state_dict().values())).hexdigest()
with open(f"{sys.argv[1]}/rank{acc.process_index}.json", "w") as f:
    json.dump({"world": acc.num_processes, "sha256": h, "loss_after": res["train_loss_after"]}, f)
"""


def test_two_process_run_keeps_replicas_identical(tmp_path):
    """torchrun (gloo): each process takes half of every batch, gradients are all-reduced, so the
    replicas stay bitwise identical; only rank 0 writes the run folder."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "dist.py"
    script.write_text(DIST_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFPROMPT_QUIET="1")
    torchrun = Path(sys.executable).with_name("torchrun")
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((tmp_path / f"rank{i}.json").read_text()) for i in (0, 1))
    assert r0["world"] == r1["world"] == 2
    assert r0["sha256"] == r1["sha256"] and r0["loss_after"] == r1["loss_after"]
    assert (tmp_path / "run" / "DONE").exists()
    assert json.loads((tmp_path / "run" / "results.json").read_text())["num_test"] == 8
