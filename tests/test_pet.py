"""PET (prompting/pet.py): the ensemble's soft labels and the distillation loss against hand
computations, the unlabeled set (train split only, disjoint from dev, test and the few-shot
examples), pattern 0 is a prompt-ft run, PET end to end on the six MLM families, and its rows."""

from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch

from diffprompt.data import Example
from diffprompt.errors import UserError
from diffprompt.prompting.run import pet
from diffprompt.prompting.models.backbone import backbone_id, default_backbone_dir, load_backbone
from diffprompt.prompting.run.config import RunConfig
from diffprompt.training_setup import get_accelerator
from diffprompt.prompting.run.scoring import dev_accuracy, score
from diffprompt.prompting.methods.defaults import PET_PATTERNS, TEMPLATES, pet_patterns
from diffprompt.prompting.comparison.rows import parse_row
from diffprompt.prompting.run.data import RunData, load_data, prepare_data
from diffprompt.prompting.run.fewshot import FewShotSplit
from diffprompt.prompting.run.folder import load_run_model
from diffprompt.prompting.run.training import train_run
from test_prompting_core import _roberta_tokenizer, _tiny

# ----------------------------------------------------------------------------------- the formulas


def test_soft_labels_are_the_softmax_of_the_mean_pattern_scores_over_t():
    a = torch.tensor([[-1.0, -3.0], [-0.2, -2.5]])
    b = torch.tensor([[-2.0, 0.5], [-0.7, -0.9]])
    q = pet.soft_labels([a, b], temperature=2.0)
    for i in range(2):
        s = [(a[i, y].item() + b[i, y].item()) / 2 for y in range(2)]  # the ensemble's mean score
        e = [math.exp(v / 2.0) for v in s]
        assert q[i].tolist() == pytest.approx([v / sum(e) for v in e], abs=1e-6)
    assert pet.ensemble_scores([a, b]).argmax(-1).tolist() == [1, 0]
    # a per-input constant (the vocabulary log-normaliser of a log-probability) changes nothing
    shifted = pet.soft_labels([a + torch.tensor([[5.0], [-3.0]]), b], temperature=2.0)
    assert torch.allclose(shifted, q, atol=1e-6)


def test_distillation_loss_is_t_squared_cross_entropy_of_the_tempered_student():
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -0.4]])
    q = torch.tensor([[0.7, 0.1, 0.2], [0.25, 0.5, 0.25]])
    t = 3.0  # T = 2 would not tell T^2 from 2T
    total = 0.0
    for i in range(2):
        norm = sum(math.exp(v / t) for v in z[i].tolist())
        total += -sum(q[i, y].item() * math.log(math.exp(z[i, y].item() / t) / norm) for y in range(3))
    assert float(pet.distillation_loss(z, q, t)) == pytest.approx(t * t * total / 2, abs=1e-6)
    # the loss the training loop uses on soft examples is the same number
    model = SimpleNamespace(scores=lambda texts, texts_b: z)
    examples = [pet.SoftExample("a", None, q[0]), pet.SoftExample("b", None, q[1])]
    assert float(pet.soft_label_loss(model, examples, t)) == pytest.approx(t * t * total / 2, abs=1e-6)
    assert [ex.label for ex in examples] == [0, 1]


def test_distillation_loss_normalises_over_the_classes_whatever_the_leading_axes():
    """One example [C] is a batch of one; a [2, N, C] stack is the mean of its two batches."""
    z = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -0.4]])
    q = torch.tensor([[0.7, 0.1, 0.2], [0.25, 0.5, 0.25]])
    for i in range(2):
        assert float(pet.distillation_loss(z[i], q[i], 3.0)) == pytest.approx(
            float(pet.distillation_loss(z[i:i + 1], q[i:i + 1], 3.0)), abs=1e-6)
    z2, q2 = z.flip(0) * 2, q.flip(0)
    both = (float(pet.distillation_loss(z, q, 3.0)) + float(pet.distillation_loss(z2, q2, 3.0))) / 2
    assert float(pet.distillation_loss(torch.stack([z, z2]), torch.stack([q, q2]), 3.0)) == pytest.approx(both, abs=1e-6)
    # one input's pattern scores [C]: the soft label of a batch of one
    a, b = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, 0.5])
    assert torch.allclose(pet.soft_labels([a, b], 2.0), pet.soft_labels([a[None], b[None]], 2.0)[0], atol=1e-7)


def test_distillation_loss_keeps_the_students_device_and_dtype():
    """float64 soft labels do not promote a float32 loss, and CPU soft labels follow logits on
    another device (the meta device stands in for a GPU here)."""
    z = torch.tensor([[2.0, -1.0, 0.5]])
    q = torch.tensor([[0.7, 0.1, 0.2]], dtype=torch.float64)
    assert pet.distillation_loss(z, q, 2.0).dtype == torch.float32
    on_meta = pet.distillation_loss(z.to("meta"), q, 2.0)
    assert on_meta.device.type == "meta" and on_meta.shape == ()


def test_the_soft_label_loss_gives_the_student_both_texts_of_a_pair():
    seen = []

    def scores(texts, texts_b):
        seen.append((texts, texts_b))
        return torch.zeros(len(texts), 2)
    examples = [pet.SoftExample("a", "b", torch.tensor([0.5, 0.5])), pet.SoftExample("c", "d", torch.tensor([0.5, 0.5]))]
    assert float(pet.soft_label_loss(SimpleNamespace(scores=scores), examples, 2.0)) == pytest.approx(4 * math.log(2))
    assert seen == [(["a", "c"], ["b", "d"])]


def test_patterns_start_with_the_hard_template_and_are_four_per_data_set():
    for key, patterns in PET_PATTERNS.items():
        assert patterns[0] == TEMPLATES[key]["hard"] and len(set(patterns)) == 4
    assert pet_patterns("file.csv")[0] == "{x} It was {mask}." and "{x2}" in pet_patterns("file.csv", pair=True)[1]


# ----------------------------------------------------------------------------------- the unlabeled set


def test_unlabeled_texts_come_from_the_train_split_only_never_dev_test_or_the_few_shot_set():
    ds = load_data("mr")
    data = prepare_data(RunConfig(dataset="mr", shots=16, seed=13), ds)
    unlabeled = pet.unlabeled_examples(ds, data, 300)
    keys = {(ex.text, ex.text_b or "") for ex in unlabeled}
    assert len(unlabeled) == len(keys) == 300
    split_keys = {name: {(ex.text, getattr(ex, "text_b", None) or "") for ex in ds.split(name).examples}
                  for name in ("train", "dev", "test")}
    assert keys <= split_keys["train"]
    assert not keys & split_keys["dev"] and not keys & split_keys["test"]
    assert not keys & {(ex.text, "") for ex in data.few_shot.train + data.few_shot.dev}


def test_a_train_text_that_is_also_in_dev_or_test_is_left_out():
    train = [Example(f"train text {i}", i % 2) for i in range(12)]
    dev, test = [Example("train text 6", 0), Example("only dev", 1)], [Example("train text 3", 1), Example("only test", 0)]
    ds = fake_dataset(train, test, dev)
    data = prepare_data(RunConfig(dataset="mr", shots=2, seed=13), ds)
    few = {ex.text for ex in data.few_shot.train + data.few_shot.dev}
    assert not few & {"train text 3", "train text 6"}  # left out for being in test and dev, not for being few-shot
    texts = {ex.text for ex in pet.unlabeled_examples(ds, data, 100)}
    assert texts == {ex.text for ex in train} - few - {"train text 3", "train text 6"} and len(texts) == 2


def test_a_data_set_without_a_train_split_has_no_unlabeled_texts():
    test = [Example("a test text", 0), Example("another", 1)]
    data = RunData(FewShotSplit(1, 13, [Example("x", 0), Example("y", 1)], []), test, ["negative", "positive"], False)
    assert pet.unlabeled_examples(fake_dataset(None, test), data, 10) == []


# ----------------------------------------------------------------------------------- runs


def fake_dataset(train, test, dev=None):
    splits = {name: part for name, part in (("train", train), ("dev", dev), ("test", test)) if part is not None}

    def split(name):
        if name not in splits:
            raise KeyError(name)
        return SimpleNamespace(examples=splits[name])
    return SimpleNamespace(class_names=["negative", "positive"], split=split)


WORDS = ["great", "fun", "witty", "boring", "dull", "bad", "good", "movie", "plot", "acting"]


def toy_sentiment():
    train = [Example(f"{WORDS[i % 10]} {WORDS[(3 * i) % 10]} film {i}", i % 2) for i in range(40)]
    test = [Example(f"a {WORDS[i % 10]} story {i}", (i + 1) % 2) for i in range(10)]
    return fake_dataset(train, test)


def small(**kw) -> RunConfig:
    base = dict(dataset="mr", method="pet", shots=4, seed=13, steps=2, eval_every=2, batch_size=4,
                pet_unlabeled=6, pet_distill_steps=2, num_examples=2)
    return RunConfig(**{**base, **kw})


def test_pattern_zero_is_a_prompt_ft_run(one_thread, tmp_path):
    bb, tok = load_backbone()
    ds = toy_sentiment()
    ref = train_run(small(method="prompt-ft"), tmp_path / "pft", ds=ds, backbone=(copy.deepcopy(bb), tok), quiet=True)
    cfg = small()
    data = prepare_data(cfg, ds)
    cfg = cfg.resolved(pair=False)
    p0 = pet.train_pattern(cfg, data, pet_patterns("mr")[0], copy.deepcopy(bb), tok, get_accelerator("cpu"), data.test[:2])
    preds = [json.loads(line)["scores"] for line in (tmp_path / "pft" / "predictions.jsonl").read_text().splitlines()]
    assert torch.allclose(p0["test_scores"], torch.tensor(preds), atol=1e-4)
    assert (p0["test_accuracy"], p0["dev_accuracy"], p0["best_step"]) == (
        ref["test_accuracy"], ref["dev_accuracy"], ref["best_step"])


def _family(name):
    bb, tok = load_backbone()
    if name == "bert":
        return bb, tok
    torch.manual_seed(0)
    if name == "roberta":
        from transformers import RobertaConfig, RobertaForMaskedLM

        rtok = _roberta_tokenizer()
        cfg = RobertaConfig(vocab_size=len(rtok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, max_position_embeddings=130, pad_token_id=rtok.pad_token_id,
                            bos_token_id=rtok.bos_token_id, eos_token_id=rtok.eos_token_id)
        return RobertaForMaskedLM(cfg).eval(), rtok
    return _tiny(name, len(tok)).eval(), tok


@pytest.mark.parametrize("family", ["bert", "roberta", "distilbert", "electra", "albert", "deberta-v2"])
def test_pet_runs_on_every_mlm_family(family, one_thread, tmp_path, monkeypatch, capsys):
    """A PET run on each backbone family; the patterns' and the ensemble's accuracies are recounted
    here from the patterns' own test scores (the ensemble: the argmax of their mean)."""
    model, tok = _family(family)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    seen, fresh = [], []  # each pattern's test scores, as its model gave them; whether its backbone was untrained

    def spy(*args, **kwargs):
        fresh.append(all(torch.equal(v, start[k]) for k, v in args[3].state_dict().items()))
        out = real_train_pattern(*args, **kwargs)
        seen.append(out["test_scores"].clone())
        return out

    real_train_pattern = pet.train_pattern
    monkeypatch.setattr(pet, "train_pattern", spy)
    monkeypatch.setenv("DIFFPROMPT_PROGRESS", "1")  # bars on: a quiet run must still print none
    monkeypatch.delenv("DIFFPROMPT_QUIET", raising=False)
    run = tmp_path / "run"
    res = train_run(small(pet_distill_steps=3), run, ds=toy_sentiment(), backbone=(model, tok), quiet=True,
                    extra_config={"row": "pet"})
    assert "pet" not in capsys.readouterr().err  # neither the distillation's progress bar nor the summary line
    assert fresh == [True] * 4  # every pattern model starts from the backbone as given
    info = json.loads((run / "pet.json").read_text())
    assert [p["template"] for p in info["patterns"]] == list(PET_PATTERNS["mr"])
    assert all(set(p) == {"template", "label_words", "dev_accuracy", "best_step", "test_accuracy", "seconds"}
               for p in info["patterns"])
    gold = torch.tensor([ex.label for ex in toy_sentiment().split("test").examples])
    recounted = [float((s.argmax(-1) == gold).double().mean()) for s in seen]
    assert res["pattern_test_accuracy"] == pytest.approx(recounted, abs=1e-12) and len(seen) == 4
    assert [p["test_accuracy"] for p in info["patterns"]] == res["pattern_test_accuracy"]
    ensemble = torch.stack([s.double() for s in seen]).mean(0).argmax(-1)
    assert res["ensemble_test_accuracy"] == pytest.approx(float((ensemble == gold).double().mean()), abs=1e-12)
    assert info["ensemble"] == {"test_accuracy": res["ensemble_test_accuracy"]}
    # the distilled model: 3 steps (not the patterns' 2), chosen on the 8 few-shot dev examples
    assert info["distilled"] == {"test_accuracy": res["test_accuracy"], "dev_accuracy": res["dev_accuracy"],
                                 "best_step": res["best_step"], "steps": 3}
    assert (8 * res["dev_accuracy"]).is_integer() and res["num_unlabeled"] == 6
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 2, 3]
    assert info["unlabeled"] == {"n": 6, "from": "train split, without labels"}
    assert info["temperature"] == 2.0 and info["formulas"] == pet.FORMULAS and (run / "DONE").exists()
    assert json.loads((run / "results.json").read_text()) == json.loads(json.dumps(res))
    conf = json.loads((run / "config.json").read_text())
    assert conf["backbone_id"] == backbone_id(model) and conf["row"] == "pet"
    assert (run / "model.safetensors").exists()  # the run folder's model is the distilled one
    if family == "bert":  # evaluate/predict rebuild it: the same test scores, and the dev accuracy it was chosen on
        again, _ = load_run_model(run)
        preds = [json.loads(line)["scores"] for line in (run / "predictions.jsonl").read_text().splitlines()]
        assert torch.allclose(score(again, toy_sentiment().split("test").examples), torch.tensor(preds), atol=1e-4)
        dev = prepare_data(small(), toy_sentiment()).few_shot.dev
        assert dev_accuracy(again, dev) == res["dev_accuracy"]


def test_pet_on_a_pair_file_named_in_the_config(one_thread, tmp_path, monkeypatch, capsys):
    """train_pet as the CLI calls it: the data set and the backbone loaded from the config's names,
    the summary line printed by default. A pair file gets the pair patterns and the student sees
    both texts of its unlabeled pairs; every model goes to the accelerator's device, is scored
    with --eval-batch-size and timed (each model here takes 1.23456 s to build on a fake clock)."""
    path = tmp_path / "pairs.csv"
    path.write_text("text,text_b,label\n" + "".join(
        f"{WORDS[i % 10]} claim {i},{WORDS[(3 * i) % 10]} reply {i},{('bad', 'good')[i % 2]}\n" for i in range(50)))
    folder = str(default_backbone_dir())
    cfg = small(dataset=str(path), backbone=folder, eval_batch_size=3, pet_temperature=3.0, pet_distill_steps=3)
    clock, builds, batch_sizes, soft_batches = [100.0], [], [], []

    def build(cfg, backbone, *args):
        model = real_build(cfg, backbone, *args)
        clock[0] += 1.23456
        real_to = model.to
        model.to = lambda device: (builds.append((cfg.template, backbone_id(backbone), device)), real_to(device))[1]
        return model

    def scoring(model, examples, batch_size=64, desc=None):
        batch_sizes.append(batch_size)
        return real_score(model, examples, batch_size, desc)

    def soft_loss(model, examples, temperature):
        soft_batches.append((examples, temperature))
        return real_loss(model, examples, temperature)

    real_build, real_score, real_loss = pet.build_model, pet.score, pet.soft_label_loss
    monkeypatch.setattr(pet, "build_model", build)
    monkeypatch.setattr(pet, "score", scoring)
    monkeypatch.setattr(pet, "soft_label_loss", soft_loss)
    monkeypatch.setattr(pet, "time", SimpleNamespace(time=lambda: clock[0]))
    monkeypatch.setenv("DIFFPROMPT_PROGRESS", "1")
    monkeypatch.delenv("DIFFPROMPT_QUIET", raising=False)
    res = pet.train_pet(cfg, tmp_path / "run")

    patterns = pet_patterns(str(path), pair=True)
    assert patterns != pet_patterns(str(path))
    assert builds == [(t, folder, torch.device("cpu")) for t in patterns] + [(None, folder, torch.device("cpu"))]
    assert batch_sizes == [3] * (2 * len(patterns) + 1)  # each pattern: test and U; the student: test
    ds = load_data(str(path))
    unlabeled = pet.unlabeled_examples(ds, prepare_data(cfg, ds), 6)
    assert all(ex.text_b for ex in unlabeled) and len(unlabeled) == 6
    assert {(ex.text, ex.text_b) for batch, _ in soft_batches for ex in batch} == {(ex.text, ex.text_b) for ex in unlabeled}
    assert {t for _, t in soft_batches} == {3.0}
    info = json.loads((tmp_path / "run" / "pet.json").read_text())
    assert [p["template"] for p in info["patterns"]] == patterns and info["temperature"] == 3.0
    assert [p["seconds"] for p in info["patterns"]] == [1.23] * len(patterns)
    assert res["train_seconds"] == round(1.23456 * (len(patterns) + 1), 2) == 4.94
    err = capsys.readouterr().err
    assert "K=4 s=13" in err  # the distillation's progress bar (not quiet)
    line = (f"pet on {path} (K=4, seed 13): patterns " + ", ".join(f"{100 * a:.1f}" for a in res["pattern_test_accuracy"])
            + f" %, ensemble {100 * res['ensemble_test_accuracy']:.1f} %, distilled {100 * res['test_accuracy']:.1f} %")
    assert line in err.splitlines(), (res["pattern_test_accuracy"], res["ensemble_test_accuracy"], res["test_accuracy"])


def test_a_process_other_than_the_main_one_trains_but_writes_no_run_folder(one_thread, tmp_path, monkeypatch):
    class Worker:  # this process's accelerator, as a non-main process of a multi-process run sees it
        is_main_process = False

        def __init__(self, acc):
            self.acc = acc

        def __getattr__(self, name):
            return getattr(self.acc, name)

    real_accelerator = pet.get_accelerator
    monkeypatch.setattr(pet, "get_accelerator", lambda device: Worker(real_accelerator(device)))
    cfg = small(steps=1, eval_every=1, pet_distill_steps=1, pet_unlabeled=2)
    # the examples are plain objects with a text and a label only, as a caller passing ds= may give them
    plain = [SimpleNamespace(text=ex.text, label=ex.label) for ex in toy_sentiment().split("train").examples]
    ds = fake_dataset(plain, toy_sentiment().split("test").examples)
    res = pet.train_pet(cfg, tmp_path / "run", ds=ds, backbone=_family("distilbert"), quiet=True)
    assert not (tmp_path / "run").exists() and len(res["pattern_test_accuracy"]) == 4 and res["num_unlabeled"] == 2


def test_pet_refusals():
    for kw, says in (({"template": "{x} {mask}"}, "does not apply"), ({"calibrate": "domain"}, "--calibrate"),
                     ({"shots": 0}, "--shots K"), ({"pet_unlabeled": 0}, "--pet-unlabeled")):
        with pytest.raises(UserError, match=says):
            small(**kw).resolved()


def test_pet_refuses_a_data_set_whose_train_split_is_all_few_shot_examples():
    train = [Example(f"train text {i}", i % 2) for i in range(8)]  # K=2: 2 train + 2 dev per class take them all
    ds = fake_dataset(train, [Example("a test text", 0)])
    with pytest.raises(UserError, match="pet needs unlabeled train-split texts beyond the few-shot examples; 'mr' has none"):
        pet.train_pet(small(shots=2), None, ds=ds, backbone=(None, None), quiet=True)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without a CUDA GPU")
def test_pet_runs_on_the_configs_device():
    """--device cuda on a machine without one is refused, not replaced by the CPU."""
    train = [Example(f"train text {i}", i % 2) for i in range(8)]
    with pytest.raises(UserError, match="no CUDA GPU"):
        pet.train_pet(small(shots=2, device="cuda"), None, ds=fake_dataset(train, [Example("t", 0)]),
                      backbone=(None, None), quiet=True)


# ----------------------------------------------------------------------------------- rows


def test_row_specs_parse_and_pet_rows_share_one_run():
    r = parse_row("prompt-ft+demos-similar")
    assert (r.method, r.run, r.metric, r.settings()) == ("prompt-ft", "prompt-ft+demos-similar", "test_accuracy",
                                                         {"demos": "similar"})
    assert parse_row("zero-shot+cal-domain").settings() == {"calibrate": "domain"}
    assert parse_row("prompt-ft+auto").settings() == {"verbalizer": "auto"}
    assert (parse_row("pet").run, parse_row("pet").metric) == ("pet", "ensemble_test_accuracy")
    assert (parse_row("pet-distilled").run, parse_row("pet-distilled").metric) == ("pet", "test_accuracy")
    for bad, says in (("pett", "unknown method 'pett'"), ("prompt-ft+demo", "unknown option"),
                      ("prompt-ft+demos-random+demos-similar", "demos twice")):
        with pytest.raises(UserError, match=says):
            parse_row(bad)


def test_an_unknown_row_is_one_line_and_exit_2(tmp_path, capsys):
    from diffprompt.cli import main

    assert main(["prompting", "compare", "--rows", "prompt-ft,nope", "--out", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown method 'nope' in row 'nope'" in err[0]
