"""PEFT interop: an exported soft prompt gives our mask logits through peft.PeftModel; adapters come
back bit for bit; templates PEFT cannot express are refused with the reason (exit 2 from the CLI).

peft is the `test` extra: the tests that run PEFT's own model skip without it; export, import and the
refusals are ours alone (peft_io never imports peft) and run anyway."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from diffprompt.cli import main
from diffprompt.errors import UserError
from diffprompt.prompting import FineTuneClassifier, PromptClassifier, full_vocab_label_logits
from diffprompt.prompting.models.backbone import fresh_backbone
from diffprompt.prompting.peft_io import export_peft, import_peft, read_adapter

pytestmark = [pytest.mark.usefixtures("one_thread"),  # peft asks transformers a deprecated question:
              pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")]
TEXTS = ["a gorgeous , witty , seductive movie .", "dull", "the plot is thin but the actors carry every scene"]


@pytest.fixture
def peft():
    """The peft package, for the tests that run PEFT itself: only they skip without it."""
    return pytest.importorskip("peft")


def trained_looking(template: str, prompt_encoder: str | None = None) -> PromptClassifier:
    """A frozen-backbone classifier whose soft tokens are moved off their initial word embeddings."""
    bb, tok = fresh_backbone()
    torch.manual_seed(0)
    clf = PromptClassifier(bb, tok, template, "0:bad;1:good", train="prompt", prompt_encoder=prompt_encoder)
    with torch.no_grad():
        clf.soft_embeddings.add_(0.5 * torch.randn_like(clf.soft_embeddings))
    return clf.eval()


def peft_mask_logits(peft, folder, batch: dict, drop: int) -> torch.Tensor:
    """Mask logits of PEFT's model on a fresh backbone, fed our ids without their first `drop` columns."""
    bb, _ = fresh_backbone()
    model = peft.PeftModel.from_pretrained(bb, str(folder)).eval()
    assert type(model).__name__ == "PeftModelForFeatureExtraction"
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"][:, drop:], attention_mask=batch["attention_mask"][:, drop:]).logits
    return logits[torch.arange(len(logits)), batch["mask_positions"]]


@pytest.mark.parametrize("template,encoder", [("{soft*3} {x} It was {mask}.", None),
                                              ("{soft=question about} {mask} : {x}", None),
                                              ("{soft*4} {x} {mask}", "mlp")])
def test_peft_gives_our_mask_logits_for_the_exported_prompt(tmp_path, template, encoder, peft):
    clf = trained_looking(template, encoder)
    export_peft(clf, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    n = clf.template.num_soft
    assert config["peft_type"] == "PROMPT_TUNING" and config["num_virtual_tokens"] == 1 + n  # [CLS], then the soft tokens
    batch = clf.encode(TEXTS)  # [CLS] soft... input ...: PEFT gets what follows the soft tokens
    theirs = peft_mask_logits(peft, tmp_path / "adapter", batch, drop=1 + n)
    with torch.no_grad():
        ours = clf.mask_logits(batch)
        reference = full_vocab_label_logits(clf, batch)
    # our mask-only head multiplies [B, H] instead of [B, L, H]: equal to float32 rounding, 1e-5 of the largest logit
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5 * float(theirs.abs().max()))
    # our full-vocabulary reference path computes exactly what PEFT computes
    assert torch.equal(reference, clf.label_scores(theirs))
    # the layout matters: PEFT fed the whole input (its [CLS] after the prompt) is another model
    assert (peft_mask_logits(peft, tmp_path / "adapter", batch, drop=n) - ours).abs().max() > 0.1


def test_import_brings_an_exported_prompt_back_bit_for_bit(tmp_path):
    clf = trained_looking("{soft*4} {x} {mask}", "lstm")  # the encoder's output is what travels
    export_peft(clf, tmp_path / "a")
    bb, tok = fresh_backbone()
    back = import_peft(tmp_path / "a", bb, tok)
    assert back.template == clf.template and back.verbalizer == clf.verbalizer and back.prompt_encoder is None
    with torch.no_grad():
        assert torch.equal(back.soft_embeddings, clf.soft_prompt())
        assert torch.equal(back.scores(TEXTS), clf.scores(TEXTS))
    # trained further in PEFT, the [CLS] slot moves: no longer the layout of the sidecar's template
    weights = load_file(tmp_path / "a" / "adapter_model.safetensors")
    weights["prompt_embeddings"][0] += 1e-3
    save_file(weights, tmp_path / "a" / "adapter_model.safetensors")
    with pytest.raises(UserError, match=r"no longer this backbone's embedding of \[101\].*\{soft\*5\}"):
        import_peft(tmp_path / "a", bb, tok)


def test_a_peft_trained_adapter_imports_its_embeddings(tmp_path, capsys, peft):
    bb, tok = fresh_backbone()
    config = peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=5)
    model = peft.get_peft_model(bb, config)
    weight = model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weight.normal_(generator=torch.Generator().manual_seed(1))
    model.save_pretrained(str(tmp_path / "native"))
    prompt, _, side = read_adapter(tmp_path / "native")
    assert side == {} and torch.equal(prompt, weight.detach())
    bb2, _ = fresh_backbone()
    with pytest.raises(UserError, match=r"no diffprompt.json naming its template.*\{soft\*5\}"):
        import_peft(tmp_path / "native", bb2, tok, verbalizer="0:bad;1:good")
    with pytest.raises(UserError, match="holds 5 soft tokens but template"):
        import_peft(tmp_path / "native", bb2, tok, "{soft*4} {x} It was {mask}.", "0:bad;1:good")
    clf = import_peft(tmp_path / "native", bb2, tok, "{soft*5} {x} It was {mask}.", "0:bad;1:good")
    assert torch.equal(clf.soft_embeddings.detach(), weight.detach())
    assert "scores differ from PEFT's" in capsys.readouterr().err  # PEFT trained it in front of [CLS]
    # the CLI's defaults: MR's labels and words, its hard template after the 5 soft tokens
    assert main(["prompting", "import-peft", str(tmp_path / "native"), "--out", str(tmp_path / "run")]) == 0
    conf = json.loads((tmp_path / "run" / "config.json").read_text())
    assert conf["template"] == "{soft*5} {x} It was {mask}." and conf["class_names"] == ["negative", "positive"]


@pytest.mark.parametrize("template,train,why", [
    ("{x} {soft*2} {mask}", "prompt", r"soft tokens come after the input \{x\}"),
    ("Review: {soft*2} {x} {mask}", "prompt", "soft tokens come after the hard words 'Review:'"),
    ("{mask} {soft} : {x}", "prompt", r"soft tokens come after \{mask\}"),
    ("{soft*2} {x} {soft} {mask}", "prompt", r"two places \(2 at the start, more after the input \{x\}\)"),
    ("{x} It was {mask}.", "all", "has no soft tokens"),
    ("{soft*2} {x} {mask}", "all", r"backbone was trained too"),
])
def test_templates_peft_cannot_express_are_refused(tmp_path, template, train, why):
    bb, tok = fresh_backbone()
    clf = PromptClassifier(bb, tok, template, "0:bad;1:good", train=train)
    with pytest.raises(UserError, match="cannot export to PEFT: .*" + why):
        export_peft(clf, tmp_path / "x")
    with pytest.raises(UserError, match="fine-tuned classifier has no prompt"):
        export_peft(FineTuneClassifier(bb, tok, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def cli_run(tmp_path, name: str, template: str):
    out = tmp_path / name
    assert main(["prompting", "train", "--dataset", "mr", "--method", "soft", "--template", template, "--shots", "4",
                 "--seed", "13", "--steps", "2", "--eval-every", "2", "--limit-test", "16", "--threads", "1",
                 "--out", str(out)]) == 0
    return out


def test_cli_export_import_evaluate_and_refusals(tmp_path, capsys):
    run = cli_run(tmp_path, "soft", "{soft*2} {x} It was {mask}.")
    assert main(["prompting", "export", str(run), "--to", "peft", str(tmp_path / "adapter")]) == 0
    assert main(["prompting", "import-peft", str(tmp_path / "adapter"), "--out", str(tmp_path / "back")]) == 0
    assert main(["prompting", "evaluate", str(tmp_path / "back"), "--limit", "16"]) == 0
    trained = json.loads((run / "results.json").read_text())
    again = json.loads((tmp_path / "back" / "evaluate-mr-test.json").read_text())
    assert again["n"] == 16 and again["accuracy"] == trained["test_accuracy"]
    capsys.readouterr()
    after_input = cli_run(tmp_path, "after", "{x} {soft*2} {mask}")
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "adapter_config.json").write_text('{"peft_type": "LORA"}')
    for argv, why in ((["export", str(after_input), "--to", "peft", str(tmp_path / "no")], "soft tokens come after"),
                      (["import-peft", str(tmp_path / "nothing")], "has no adapter_config.json"),
                      (["import-peft", str(lora)], "holds a LORA adapter")):
        capsys.readouterr()
        assert main(["prompting", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and why in err and "Traceback" not in err
