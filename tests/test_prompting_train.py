"""The prompting training loop: a short prompt-ft run learns, soft training leaves the backbone alone,
model choice on the few-shot dev set, and the run folder's files."""

from __future__ import annotations

import json

import pytest
import torch

from diffprompt.errors import UserError
from diffprompt.prompting.backbone import fresh_backbone
from diffprompt.prompting.build import build_verbalizer
from diffprompt.prompting.config import RunConfig
from diffprompt.prompting.methods import METHODS, default_template, default_verbalizer_spec
from diffprompt.prompting.run_data import load_data
from diffprompt.prompting.training import train_run


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


def test_soft_training_moves_only_the_soft_tokens(mr):
    torch.set_num_threads(1)
    bb, tok = fresh_backbone(None)
    before = {k: v.clone() for k, v in bb.state_dict().items()}
    cfg = RunConfig(dataset="mr", method="soft", shots=4, seed=21, steps=6, eval_every=3, limit_test=16, lr=0.1)
    res = train_run(cfg, None, ds=mr, backbone=(bb, tok), quiet=True)
    assert res["trainable_parameters"] == 2 * bb.config.hidden_size  # {soft=It was}: two soft tokens
    for k, v in bb.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert res["train_loss_after"] != res["train_loss_before"]


def test_finetune_and_zero_shot_run(mr):
    torch.set_num_threads(1)
    z = train_run(RunConfig(dataset="mr", method="zero-shot", shots=4, seed=13, limit_test=24), None, ds=mr, quiet=True)
    assert z["trainable_parameters"] == 0 and z["best_step"] == 0 and "train_loss_before" not in z
    f = train_run(RunConfig(dataset="mr", method="finetune", shots=4, seed=13, steps=4, eval_every=2, limit_test=24),
                  None, ds=mr, quiet=True)
    assert f["template"] is None and 0.0 <= f["test_accuracy"] <= 1.0
    assert f["train_loss_after"] < f["train_loss_before"]


def test_default_templates_and_verbalizers_cover_the_named_sets():
    for name in ("mr", "cr", "subj", "trec"):
        ds = load_data(name)
        spec = default_verbalizer_spec(name, ds.label_names)
        assert spec is not None and set(spec) == set(ds.label_names)
        for style in ("hard", "soft", "hybrid"):
            assert "{mask}" in default_template(name, style) and "{x}" in default_template(name, style)
    assert default_template("mytask.csv", "hard", pair=True) == "{x} ? {mask} , {x2}"


def test_verbalizer_lacking_a_label_and_bad_method_settings():
    with pytest.raises(UserError, match="lacks label"):
        build_verbalizer(RunConfig(dataset="mr", verbalizer="negative:bad"), ["negative", "positive"])
    with pytest.raises(UserError, match="prompt-ft trains every parameter"):
        RunConfig(method="prompt-ft", train="prompt").resolved()
    with pytest.raises(UserError, match="unknown method"):
        RunConfig(method="prefix").resolved()


DIST_SCRIPT = """
import hashlib, json, sys, torch
from diffprompt.prompting.backbone import fresh_backbone
from diffprompt.prompting.config import RunConfig
from diffprompt.prompting.distributed import get_accelerator
from diffprompt.prompting.training import train_run
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
