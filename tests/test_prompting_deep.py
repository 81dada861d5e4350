"""The deep prompt methods, prefix-tuning and p-tuning-v2, end to end: a short `prompting train` run
of each on the packaged BERT-tiny leaves the backbone bitwise unchanged, saves only the prefixes, and
reports the test accuracy that its predictions and its saved prefixes, scored here by a forward pass
of their own, give; its PEFT export gives PeftModel the run model's scores at the mask."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from diffprompt.cli import build_parser, main
from diffprompt.errors import UserError
from diffprompt.prompting.methods.registry import METHODS
from diffprompt.prompting.models.backbone import fresh_backbone
from diffprompt.prompting.models.deep_prompt import DeepPrompt
from diffprompt.prompting.run.config import RunConfig

pytestmark = [pytest.mark.usefixtures("one_thread"),  # peft asks transformers deprecated questions:
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
              pytest.mark.filterwarnings("ignore:`past_key_values` is deprecated:FutureWarning")]
# (method, data set, K, the template its run resolves to)
RUNS = [("prefix-tuning", "mr", 4, "{x} {mask}"), ("p-tuning-v2", "trec", 2, "{mask} : {x}")]


@pytest.fixture(scope="module", params=RUNS, ids=[r[0] for r in RUNS])
def deep_run(request, tmp_path_factory):
    """(run folder, the backbone the run trained, a copy of it from before, method, template): 4 steps,
    dev every 2, 24 test examples, through the CLI; the run's backbone is handed in so it can be checked."""
    method, dataset, shots, template = request.param
    bb, tok = fresh_backbone(None)
    before = copy.deepcopy(bb)
    out = tmp_path_factory.mktemp("deep") / method
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("diffprompt.prompting.run.training.fresh_backbone", lambda name=None: (bb, tok))
        assert main(["prompting", "train", "--dataset", dataset, "--method", method, "--shots", str(shots),
                     "--seed", "13", "--steps", "4", "--eval-every", "2", "--limit-test", "24", "--threads", "1",
                     "--out", str(out)]) == 0
    return out, bb, before, method, template


def test_a_short_run_trains_only_the_prefixes_and_reports_what_they_score(deep_run):
    out, bb, before, method, template = deep_run
    after = bb.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.state_dict().items())  # the backbone, bitwise
    conf = json.loads((out / "config.json").read_text())
    assert (conf["template"], conf["train"], conf["prefix_length"]) == (template, "prompt", METHODS[method].prefix_length)
    layers, heads, hidden = bb.config.num_hidden_layers, bb.config.num_attention_heads, bb.config.hidden_size
    saved = load_file(out / "prompt.safetensors")
    n = METHODS[method].prefix_length
    assert list(saved) == ["prefixes"] and saved["prefixes"].shape == (layers, 2, heads, n, hidden // heads)
    res = json.loads((out / "results.json").read_text())
    assert res["trainable_parameters"] == layers * 2 * hidden * n and res["train_loss_after"] != res["train_loss_before"]
    assert [json.loads(m)["step"] for m in (out / "metrics.jsonl").read_text().splitlines()] == [0, 2, 4]
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 24 and res["test_accuracy"] == sum(p["label"] == p["prediction"] for p in preds) / 24
    # the saved prefixes on the untouched backbone, the whole forward pass, the label words' log-probabilities
    theirs = label_log_probs(DeepPrompt.load(out / "prompt.safetensors", before).run, before, template, preds,
                             res["label_words"])
    torch.testing.assert_close(theirs, torch.tensor([p["scores"] for p in preds]), rtol=0, atol=2e-5)
    plain = label_log_probs(lambda attention_mask, input_ids: before(input_ids=input_ids, attention_mask=attention_mask),
                            before, template, preds, res["label_words"])
    assert (plain - theirs).abs().max() > 1e-2  # the prefixes matter
    names = conf["class_names"]
    assert res["test_accuracy"] == sum(names[int(i)] == p["label"] for i, p in zip(theirs.argmax(-1), preds)) / 24
    assert main(["prompting", "evaluate", str(out), "--limit", "24"]) == 0  # the model rebuilt from the folder
    assert json.loads(next(out.glob("evaluate-*-test.json")).read_text())["accuracy"] == res["test_accuracy"]


def label_log_probs(run, bb, template: str, preds: list[dict], words: list[str]) -> torch.Tensor:
    """[N, labels]: log_softmax of `run`'s MLM logits at the mask, at each label's one word, for the
    template filled in as plain text and tokenised by the backbone's tokenizer."""
    tok = fresh_backbone(None)[1]
    enc = tok([template.format(x=p["text"], mask=tok.mask_token) for p in preds], return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = run(enc["attention_mask"], input_ids=enc["input_ids"]).logits
    at_mask = logits[enc["input_ids"] == tok.mask_token_id]  # one mask per row
    return at_mask.log_softmax(-1)[:, tok.convert_tokens_to_ids(words)]


def test_the_exported_prefix_tuning_adapter_gives_peft_the_run_models_scores(deep_run, tmp_path):
    peft = pytest.importorskip("peft")
    from diffprompt.prompting.run.folder import load_run_model

    out, _, before, method, template = deep_run
    assert main(["prompting", "export", str(out), "--to", "peft", str(tmp_path / "adapter")]) == 0
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    n = METHODS[method].prefix_length
    assert (config["peft_type"], config["num_virtual_tokens"], config["prefix_projection"]) == ("PREFIX_TUNING", n, False)
    side = json.loads((tmp_path / "adapter" / "diffprompt.json").read_text())
    assert side["template"] == template and side["prefix_length"] == n
    model, _ = load_run_model(out)
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    texts = [p["text"] for p in preds]
    with torch.no_grad():
        ours = model.mask_logits(model.encode(texts))
    peft_model = peft.PeftModel.from_pretrained(copy.deepcopy(before), str(tmp_path / "adapter")).eval()
    words = [w for ws in model.verbalizer.words for w in ws]
    theirs = label_log_probs(lambda attention_mask, input_ids: peft_model(input_ids=input_ids,
                                                                        attention_mask=attention_mask),
                             before, template, preds, words)
    torch.testing.assert_close(model.label_scores(ours), theirs, rtol=0, atol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(model.scores_in_batches(texts), theirs, rtol=0, atol=1e-5)


def test_an_exported_adapter_imports_as_a_run_folder_that_scores_as_the_run_did(deep_run, tmp_path):
    from diffprompt.prompting.run.folder import load_run_model

    out, _, _, method, template = deep_run
    assert main(["prompting", "export", str(out), "--to", "peft", str(tmp_path / "adapter")]) == 0
    assert main(["prompting", "import-peft", str(tmp_path / "adapter"), "--out", str(tmp_path / "back")]) == 0
    conf = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (conf["method"], conf["template"], conf["prefix_length"]) == (method, template, METHODS[method].prefix_length)
    assert load_file(tmp_path / "back" / "prompt.safetensors")["prefixes"].equal(load_file(out / "prompt.safetensors")["prefixes"])
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    model, _ = load_run_model(tmp_path / "back")
    scores = model.scores_in_batches([p["text"] for p in preds])
    torch.testing.assert_close(scores, torch.tensor([p["scores"] for p in preds]), rtol=0, atol=1e-4)


def sweep_winners() -> dict[str, tuple]:
    """(lr, steps, dev every, size) of each method's **best** row in the committed dev-split sweep."""
    text = (Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "prompting_budget_sweep.md").read_text()
    winners = {}
    for section in text.split("### ")[1:]:
        method = section.split()[0]
        row = next(line for line in section.splitlines() if "**best**" in line)
        lr, steps, every, size = [c.strip() for c in row.strip("|").split("|")[:4]]
        winners[method] = (float(lr), int(steps), int(every), size)
    return winners


def test_the_frozen_methods_budgets_are_the_dev_sweeps_winners_and_the_cli_names_them(capsys):
    winners = sweep_winners()
    assert set(winners) == {"soft", "hybrid", "prefix-tuning", "p-tuning-v2"}
    for method, (lr, steps, every, size) in winners.items():
        cfg = RunConfig(dataset="trec", method=method).resolved()
        m = METHODS[method]
        assert (cfg.steps, cfg.lr, cfg.eval_every, cfg.prefix_length) == (m.steps, m.lr, m.eval_every, m.prefix_length)
        assert (m.lr, m.steps, m.eval_every) == (lr, steps, every) and m.train == "prompt", method
        if m.deep:
            assert m.prefix_length == int(size)
        else:  # the default template's soft tokens: the hard words' ("words") or {soft*N}
            soft = cfg.template.count("{soft*" + size + "}") if size.isdigit() else cfg.template.count("{soft=")
            assert soft == 1, (method, cfg.template)
    with pytest.raises(UserError, match="trains only its prefixes"):
        RunConfig(method="prefix-tuning", train="all").resolved()
    with pytest.raises(UserError, match="not input soft tokens"):
        RunConfig(method="p-tuning-v2", template="{x} {soft*2} It was {mask}.").resolved()
    for method in ("prompt-ft", "finetune"):  # the full-model budgets as they were
        cfg = RunConfig(dataset="trec", method=method, prefix_length=4).resolved()
        assert (cfg.steps, cfg.eval_every, cfg.prefix_length) == (80, 10, None)
    for command in ("train", "compare"):
        with pytest.raises(SystemExit):
            main(["prompting", command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "prefix-tuning" in text and "p-tuning-v2" in text, command
    from diffprompt.prompting.cli import compare_config

    cc = compare_config(build_parser().parse_args(["prompting", "compare", "--rows", "soft,prefix-tuning,p-tuning-v2"]))
    cells = {row: cc.cell_config("mr", row, 16, 13).resolved() for row in cc.rows}
    assert cells["p-tuning-v2"].template == "{x} It was {mask}." and cells["prefix-tuning"].template == "{x} {mask}"
    assert [cells[r].prefix_length for r in cc.rows] == [None, 16, 8]


def test_prefixes_trained_through_an_mlp_are_saved_folded_and_score_as_the_run_did(tmp_path):
    from diffprompt.prompting.run.folder import load_run_model

    out = tmp_path / "mlp"
    assert main(["prompting", "train", "--dataset", "mr", "--method", "prefix-tuning", "--prefix-mlp", "16",
                 "--shots", "4", "--seed", "13", "--steps", "4", "--eval-every", "2", "--limit-test", "24",
                 "--threads", "1", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    bb, _ = fresh_backbone(None)
    layers, hidden = bb.config.num_hidden_layers, bb.config.hidden_size
    # trained: 8 token vectors and Linear(hidden, 16) -> tanh -> Linear(16, layers * 2 * hidden)
    n = METHODS["prefix-tuning"].prefix_length
    assert res["trainable_parameters"] == n * hidden + (hidden * 16 + 16) + (16 * layers * 2 * hidden + layers * 2 * hidden)
    saved = load_file(out / "prompt.safetensors")  # saved: the prefixes the MLP made, nothing else
    assert list(saved) == ["prefixes"] and saved["prefixes"].shape[3] == n
    model, conf = load_run_model(out)
    assert conf["prefix_mlp"] == 16 and model.deep_prompt.config.mlp_hidden_size is None
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    torch.testing.assert_close(model.scores_in_batches([p["text"] for p in preds]),
                               torch.tensor([p["scores"] for p in preds]), rtol=0, atol=1e-4)
    with pytest.raises(UserError, match="--prefix-mlp must be a positive hidden size"):
        RunConfig(method="p-tuning-v2", prefix_mlp=0).resolved()
