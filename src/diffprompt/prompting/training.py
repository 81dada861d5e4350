"""One prompting run: few-shot draw, training with model choice on the few-shot dev set, test.

`train_run(RunConfig, out)` does, for one data set, method, K and seed:

1. load the data set and draw K examples per class for training and K more for dev
   (`fewshot.sample_few_shot`; `shots=0` uses the whole train and dev splits);
2. build the model: a `PromptClassifier` (zero-shot, prompt-ft, soft, hybrid) or a
   `FineTuneClassifier` (finetune) on a fresh copy of the backbone;
3. train with AdamW (linear warm-up then linear decay) for `steps` optimiser steps, sampling
   batches by epochs over the few-shot set; every `eval_every` steps (and before the first step)
   the dev accuracy is measured, and the best state so far is kept in memory (ties keep the
   earlier state); `patience` stops early;
4. restore the best state, evaluate on the test split, and write the run folder:
   `config.json` ("kind": "prompting-train"), `metrics.jsonl`, `predictions.jsonl`,
   `results.json`, `examples.json`, the trained prompt or model, and `DONE`.

Multi-process training goes through Accelerate (`torchrun --standalone --nproc_per_node 2 -m
diffprompt prompting train ...` on CPUs with gloo, `accelerate launch --num_processes N -m ...` on
GPUs; `accelerate launch --cpu` starts a single process): each process takes its share of every global batch and the gradients are averaged
across processes before each step (an explicit all-reduce, so the model's own methods can be
called rather than a DDP `forward`). Only the main process writes.
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

from ..errors import UserError
from ..progress import log, progress
from ..rundir import RunDir
from .fewshot import FewShotSplit, check_training_set, majority_baseline, sample_few_shot
from .methods import RunConfig, default_verbalizer_spec, get_method

PROMPT_FILE = "prompt.safetensors"
MODEL_FILE = "model.safetensors"

_ACCELERATOR = None
_BACKBONES: dict = {}


# ----------------------------------------------------------------------------- helpers
def get_accelerator(device: str = "auto"):
    """One Accelerator per process (Accelerate keeps a process-wide state anyway)."""
    global _ACCELERATOR
    if _ACCELERATOR is None:
        from accelerate import Accelerator

        from ..device import choose_device

        dev = choose_device(device)
        _ACCELERATOR = Accelerator(cpu=dev.type == "cpu")
    return _ACCELERATOR


def fresh_backbone(name: str | None):
    """A fresh copy of the backbone (model, tokenizer); the loaded original is cached per process."""
    from .backbone import load_backbone

    key = name or "default"
    if key not in _BACKBONES:
        _BACKBONES[key] = load_backbone(name)
    model, tok = _BACKBONES[key]
    fresh = copy.deepcopy(model)
    for attr in ("_diffprompt_backbone_id",):
        if hasattr(model, attr):
            setattr(fresh, attr, getattr(model, attr))
    return fresh, tok


def limit_examples(examples: Sequence[Any], n: int | None, salt: str = "limit-test") -> list:
    """A deterministic, class-mixed subsample of n examples (all of them when n is None)."""
    examples = list(examples)
    if n is None or n >= len(examples):
        return examples
    if n < 1:
        raise UserError(f"--limit-test must be at least 1, got {n}")
    order = list(range(len(examples)))
    random.Random(salt).shuffle(order)
    return [examples[i] for i in sorted(order[:n])]


def _texts(examples):
    texts = [ex.text for ex in examples]
    pair = any(getattr(ex, "text_b", None) is not None for ex in examples)
    texts_b = [getattr(ex, "text_b", None) or "" for ex in examples] if pair else None
    return texts, texts_b


def load_data(dataset: str):
    from ..data import load_text

    return load_text(dataset)


def _split(ds, name):
    try:
        return ds.split(name)
    except (KeyError, ValueError) as e:  # a file without that split
        if isinstance(e, UserError):
            raise
        return None


def label_names_of(ds) -> list[str]:
    return [str(n) for n in ds.label_names]


def build_verbalizer(cfg: RunConfig, label_names: list[str]):
    """The verbalizer for a run: `--verbalizer` text (labels by name or index), the data set's
    default words, or `Verbalizer.default_for(label_names)`. A data label it lacks is a UserError."""
    from .verbalizer import Verbalizer

    if cfg.verbalizer:
        return Verbalizer.from_string(cfg.verbalizer, label_names=label_names)
    spec = default_verbalizer_spec(cfg.dataset, label_names)
    return Verbalizer(spec, label_names=label_names) if spec else Verbalizer.default_for(label_names)


def build_model(cfg: RunConfig, backbone, tokenizer, label_names: list[str]):
    """The classifier for a resolved config on a (fresh) backbone."""
    method = get_method(cfg.method)
    if method.kind == "finetune":
        from .finetune import FineTuneClassifier

        return FineTuneClassifier(backbone, tokenizer, len(label_names), max_length=cfg.max_length)
    from .model import PromptClassifier
    from .template import Template

    template = Template(cfg.template)
    verbalizer = build_verbalizer(cfg, label_names)
    train = cfg.train if cfg.train is not None else "all"  # zero-shot: nothing is trained either way
    return PromptClassifier(backbone, tokenizer, template, verbalizer, train=train, prompt_encoder=cfg.prompt_encoder,
                            max_length=cfg.max_length)


def trainable_parameters(model) -> list:
    return [p for p in model.trainable_parameters() if p.requires_grad]


def _scores_fn(model):
    return model.scores


def score(model, examples, batch_size: int = 64, desc: str | None = None):
    """[N, num_labels] scores (label-word log-probabilities, or head logits) in eval mode."""
    import torch

    fn = _scores_fn(model)
    was_training = model.training
    model.eval()
    out = []
    with torch.no_grad():
        starts = range(0, len(examples), batch_size)
        for s in progress(starts, desc=desc, total=len(starts)) if desc else starts:
            texts, texts_b = _texts(examples[s : s + batch_size])
            out.append(fn(texts, texts_b).float().cpu())
    model.train(was_training)
    if not out:
        return torch.zeros(0, 0)
    return torch.cat(out)


def train_set_loss(model, examples, batch_size: int = 64) -> float:
    """Mean cross-entropy over `examples`, in eval mode, without gradients."""
    import torch
    import torch.nn.functional as F

    sc = score(model, examples, batch_size)
    return float(F.cross_entropy(sc, torch.tensor([ex.label for ex in examples], dtype=torch.long)))


def accuracy(scores, labels) -> float:
    if len(labels) == 0:
        return float("nan")
    pred = scores.argmax(-1).tolist()
    return sum(int(p == y) for p, y in zip(pred, labels)) / len(labels)


def macro_f1(pred: Sequence[int], gold: Sequence[int], num_labels: int) -> float:
    f1s = []
    for c in range(num_labels):
        tp = sum(1 for p, g in zip(pred, gold) if p == c and g == c)
        fp = sum(1 for p, g in zip(pred, gold) if p == c and g != c)
        fn = sum(1 for p, g in zip(pred, gold) if p != c and g == c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / max(1, len(f1s))


def check_labels(examples, label_names: list[str], what: str) -> None:
    bad = sorted({ex.label for ex in examples if not (isinstance(ex.label, int) and 0 <= ex.label < len(label_names))}, key=str)
    if bad:
        raise UserError(f"the {what} has labels {bad[:5]} outside the data set's {len(label_names)} classes {label_names}")


def render_prompts(model, examples, max_length: int = 128) -> list[str]:
    """The input as the model saw it: the template filled in and truncated, decoded with the
    tokenizer's own mask token; soft tokens are shown as [SOFT]."""
    texts, texts_b = _texts(examples)
    tok = model.tokenizer
    if not hasattr(model, "template"):
        enc = tok(texts, texts_b, truncation=True, max_length=max_length) if texts_b else tok(texts, truncation=True, max_length=max_length)
        return [tok.decode(ids) for ids in enc["input_ids"]]
    enc = model.template.encode(tok, texts, texts_b, max_length=getattr(model, "max_length", max_length))
    out = []
    for i in range(len(texts)):
        n = int(enc["attention_mask"][i].sum())
        toks = tok.convert_ids_to_tokens(enc["input_ids"][i, :n].tolist())
        for j in enc["soft_positions"][i].tolist():
            toks[j] = "[SOFT]"
        out.append(tok.convert_tokens_to_string(toks))
    return out


def label_words(model, label_names) -> list[str]:
    verb = getattr(model, "verbalizer", None)
    if verb is None:
        return list(label_names)
    return ["/".join(ws) for ws in verb.words]


# ----------------------------------------------------------------------------- the run
def prepare_data(cfg: RunConfig, ds=None):
    """(few-shot split, test examples, label names, pair?) for a config."""
    ds = ds if ds is not None else load_data(cfg.dataset)
    label_names = label_names_of(ds)
    train_split = _split(ds, "train")
    test_split = _split(ds, "test")
    train = list(train_split.examples) if train_split is not None else []
    if test_split is None or len(test_split.examples) == 0:
        raise UserError(f"data set {cfg.dataset!r} has no test examples; give a file with enough rows for a test split")
    test = limit_examples(test_split.examples, cfg.limit_test)
    check_labels(train, label_names, "training split")
    if cfg.shots > 0:
        fs = sample_few_shot(train, cfg.shots, cfg.seed, label_names=label_names)
    else:
        check_training_set(train, "training split")
        dev_split = _split(ds, "dev")
        fs = FewShotSplit(k=0, seed=cfg.seed, train=train, dev=list(dev_split.examples) if dev_split else [])
    pair = any(getattr(ex, "text_b", None) is not None for ex in train + test)
    return fs, test, label_names, pair


def _lr_at(step: int, total: int, warmup: int) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train_run(
    cfg: RunConfig,
    out: str | Path | None,
    ds=None,
    backbone=None,
    quiet: bool = False,
    extra_config: dict | None = None,
) -> dict:
    """Run one config and return its results dict (also written to `out/results.json`).

    `ds`: a loaded TextDataset to reuse; `backbone`: a fresh (model, tokenizer) to train (it is
    modified); both are loaded when None.
    """
    import torch

    from ..seeding import seed_everything

    t0 = time.time()
    method = get_method(cfg.method)
    fs, test, label_names, pair = prepare_data(cfg, ds)
    cfg = cfg.resolved(label_names, pair=pair)
    acc = get_accelerator(cfg.device)
    main = acc.is_main_process
    run = RunDir(out, enabled=main) if out is not None else None
    config = {**asdict(cfg), "kind": "prompting-train", "label_names": label_names,
              "num_train": len(fs.train), "num_dev": len(fs.dev), "num_test": len(test), "pair": pair,
              "method_summary": method.summary, "paper": method.paper,
              "description": f"{cfg.method} on {cfg.dataset}, K={cfg.shots}, seed {cfg.seed}"}
    if extra_config:
        config.update(extra_config)
    seed_everything(cfg.seed)
    model_bb, tok = backbone if backbone is not None else fresh_backbone(cfg.backbone)
    model = build_model(cfg, model_bb, tok, label_names)
    from .backbone import backbone_id

    config["backbone_id"] = backbone_id(model_bb)
    if run is not None and main:
        if (run / "DONE").exists():
            (run / "DONE").unlink()
        if (run / "metrics.jsonl").exists():
            (run / "metrics.jsonl").unlink()
        run.save_config(config)
    model.to(acc.device)
    params = trainable_parameters(model)
    n_params = sum(p.numel() for p in params)
    train_y = [ex.label for ex in fs.train]
    dev_y = [ex.label for ex in fs.dev]

    history = []
    best = {"step": 0, "dev_accuracy": float("nan")}
    if method.trains:
        if not params:
            raise UserError(f"method {cfg.method} has no trainable parameters with template {cfg.template!r}; "
                            "add {soft} tokens or use --train all")
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        warmup = int(round(cfg.warmup * cfg.steps))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_at(s, cfg.steps, warmup))
        gen = random.Random(f"batches-{cfg.seed}")
        order: list[int] = []
        world, rank = acc.num_processes, acc.process_index

        def dev_eval():
            if not fs.dev:
                return float("nan")
            return accuracy(score(model, fs.dev, cfg.eval_batch_size), dev_y)

        loss_before = train_set_loss(model, fs.train, cfg.eval_batch_size)
        best_acc = dev_eval()
        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best = {"step": 0, "dev_accuracy": best_acc}
        if run is not None:
            run.log_metrics(0, dev_accuracy=best_acc)
        bad_evals = 0
        running, n_running = 0.0, 0
        model.train()
        steps = range(1, cfg.steps + 1)
        bar = steps if quiet else progress(steps, desc=f"{cfg.method} {cfg.dataset} K={cfg.shots} s={cfg.seed}")
        for step in bar:
            # The global batch (same on every process), then this process's share of it.
            idx = []
            while len(idx) < cfg.batch_size:
                if not order:
                    order = list(range(len(fs.train)))
                    gen.shuffle(order)
                idx.append(order.pop())
            mine = idx[rank::world] or idx[:1]
            batch = [fs.train[i] for i in mine]
            texts, texts_b = _texts(batch)
            labels = torch.tensor([train_y[i] for i in mine], dtype=torch.long, device=acc.device)
            loss = model.loss(texts, labels, texts_b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    p.grad = acc.reduce(p.grad, reduction="mean")
            opt.step()
            sched.step()
            running += float(loss.detach())
            n_running += 1
            if step % cfg.eval_every == 0 or step == cfg.steps:
                dev_acc = dev_eval()
                model.train()
                rec = {"loss": running / n_running, "dev_accuracy": dev_acc, "lr": sched.get_last_lr()[0]}
                history.append({"step": step, **rec})
                if run is not None:
                    run.log_metrics(step, **rec)
                running, n_running = 0.0, 0
                if dev_acc > best_acc or (math.isnan(best_acc) and not math.isnan(dev_acc)):
                    best_acc = dev_acc
                    best = {"step": step, "dev_accuracy": dev_acc}
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if cfg.patience and bad_evals >= cfg.patience:
                        break
        loss_after = train_set_loss(model, fs.train, cfg.eval_batch_size)
        model.load_state_dict(best_state)
        del best_state
    else:
        if fs.dev:
            best = {"step": 0, "dev_accuracy": accuracy(score(model, fs.dev, cfg.eval_batch_size), dev_y)}
        if run is not None:
            run.log_metrics(0, dev_accuracy=best["dev_accuracy"])
    model.eval()
    train_time = time.time() - t0

    # Test.
    t1 = time.time()
    test_scores = score(model, test, cfg.eval_batch_size, desc=None if quiet else "test")
    test_y = [ex.label for ex in test]
    pred = test_scores.argmax(-1).tolist()
    test_acc = accuracy(test_scores, test_y)
    results = {
        "dataset": cfg.dataset, "method": cfg.method, "shots": cfg.shots, "seed": cfg.seed,
        "test_accuracy": test_acc, "test_macro_f1": macro_f1(pred, test_y, len(label_names)),
        "dev_accuracy": best["dev_accuracy"], "best_step": best["step"],
        "majority_accuracy": majority_baseline(test)["accuracy"],
        "num_train": len(fs.train), "num_dev": len(fs.dev), "num_test": len(test),
        "trainable_parameters": n_params if method.trains else 0,
        "train_seconds": round(train_time, 2), "test_seconds": round(time.time() - t1, 2),
        "template": cfg.template, "label_words": label_words(model, label_names),
    }
    if method.trains:
        # loss on the whole few-shot training set, eval mode: before training, after the last step
        results["train_loss_before"] = loss_before
        results["train_loss_after"] = loss_after
    if run is not None and main:
        _write_outputs(run, model, cfg, test, test_scores, label_names, results)
    if not quiet:
        log(f"{cfg.method} on {cfg.dataset} (K={cfg.shots}, seed {cfg.seed}): test accuracy {test_acc:.4f} "
            f"(dev {best['dev_accuracy']:.3f} at step {best['step']})")
    acc.wait_for_everyone()
    return results


def _write_outputs(run: RunDir, model, cfg: RunConfig, test, test_scores, label_names, results) -> None:
    pred = test_scores.argmax(-1).tolist()
    lines = []
    for i, (ex, p) in enumerate(zip(test, pred)):
        lines.append(json.dumps({"index": i, "text": ex.text, **({"text_b": ex.text_b} if getattr(ex, "text_b", None) else {}),
                                 "label": label_names[ex.label], "prediction": label_names[p],
                                 "correct": p == ex.label,
                                 "scores": [round(float(s), 5) for s in test_scores[i].tolist()]}))
    from ..checkpoint import atomic_write_bytes

    atomic_write_bytes(run / "predictions.jsonl", ("\n".join(lines) + "\n").encode())
    run.save_json("examples.json", make_examples(model, test, test_scores, label_names, cfg.num_examples))
    if cfg.save_model and get_method(cfg.method).trains:
        save_trained(model, run)
    run.save_json("results.json", results)
    run.mark_done()


def make_examples(model, test, test_scores, label_names, n: int) -> list[dict]:
    """A few test examples (classes mixed): the prompt as the model saw it, the scores, the prediction."""
    if n <= 0 or not test:
        return []
    chosen = limit_examples(list(range(len(test))), n, salt="examples")
    exs = [test[i] for i in chosen]
    prompts = render_prompts(model, exs)
    words = label_words(model, label_names)
    kind = model.score_kind
    rows = []
    for i, ex, prompt in zip(chosen, exs, prompts):
        sc = test_scores[i].tolist()
        p = int(test_scores[i].argmax())
        rows.append({
            "prompt": prompt,
            "scores": {f"{label_names[j]} ({words[j]})": round(float(s), 4) for j, s in enumerate(sc)},
            "score_kind": kind,
            "prediction": label_names[p],
            "label": label_names[ex.label],
            "correct": p == ex.label,
        })
    return rows


def save_trained(model, run: RunDir) -> Path:
    from .model import PromptClassifier

    path = run / (PROMPT_FILE if isinstance(model, PromptClassifier) else MODEL_FILE)
    model.save(path)
    return path


def load_run_model(run_dir: str | Path, device: str = "cpu"):
    """(model, config dict) rebuilt from a run folder, with its trained prompt or weights loaded."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.json"
    if not cfg_path.exists():
        raise UserError(f"{run_dir} is not a prompting run folder (no config.json); pass a folder written by "
                        "`diffprompt prompting train --out DIR`")
    conf = json.loads(cfg_path.read_text())
    if conf.get("kind") != "prompting-train":
        raise UserError(f"{run_dir} holds a {conf.get('kind')!r} run, not a prompting-train run")
    fields = {k: conf[k] for k in RunConfig.__dataclass_fields__ if k in conf}
    cfg = RunConfig(**fields)
    label_names = conf["label_names"]
    model_bb, tok = fresh_backbone(cfg.backbone)

    from ..seeding import seed_everything

    seed_everything(cfg.seed)
    model = build_model(cfg, model_bb, tok, label_names)
    if get_method(cfg.method).trains:
        from .model import PromptClassifier

        path = run_dir / (PROMPT_FILE if isinstance(model, PromptClassifier) else MODEL_FILE)
        if not path.exists():
            raise UserError(f"run {run_dir} has no {path.name}; it was trained with save_model off, retrain it")
        model.load(path)
    model.eval()
    from ..device import choose_device

    model.to(choose_device(device))
    return model, conf
