"""A prompting run folder: what a run writes, and the trained model rebuilt from it.

A run folder holds `config.json` ("kind": "prompting-train"), `metrics.jsonl`,
`predictions.jsonl`, `examples.json`, `results.json`, the trained prompt (`prompt.safetensors`,
prompt methods) or model (`model.safetensors`, fine-tuning) with its JSON sidecar, and `DONE`;
with `--verbalizer auto`, `label_words.json` (the chosen words, the candidates and their scores),
and with `--calibrate`, `calibration.json` (the reference distribution `evaluate` and `predict` apply).
A method may add files of its own (the registry's `files`): PET's `pet.json`, with each
pattern's, the ensemble's and the distilled model's accuracy (pet.py).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from ...checkpoint import atomic_write_bytes
from ...device import choose_device
from ...errors import UserError
from ...rundir import DONE_FILE, METRICS_FILE, RunDir, read_run_config
from ...seeding import seed_everything
from ..methods.registry import METHODS, get_method
from ..models.backbone import backbone_id, fresh_backbone
from ..models.classifier import TextClassifier
from ..prompts.calibration import FILE as CALIBRATION_FILE, load_calibration
from ..prompts.choices import AUTO
from .classifier_factory import build_model
from .config import RunConfig
from .data import RunData, prepare_data, saved_class_names
from .fewshot import majority_baseline
from .metrics import accuracy, macro_f1
from .test_examples import make_examples

MODEL_FILES = {"prompt": "prompt.safetensors", "finetune": "model.safetensors",
               "embedding": "logreg.safetensors"}  # by method kind
LABEL_WORDS_FILE = "label_words.json"  # --verbalizer auto: the chosen words and the candidates
RUN_KIND = "prompting-train"  # config.json's "kind"


def model_file(run_dir: str | Path, method: str) -> Path:
    """Where a run of `method` keeps its trained prompt or model."""
    return Path(run_dir) / MODEL_FILES[get_method(method).kind]


def start_run_folder(out: str | Path | None, cfg: RunConfig, data: RunData, backbone, extra: dict | None = None,
                     enabled: bool = True) -> RunDir | None:
    """Create the run folder and write config.json (None when there is no folder or this process
    does not write); a previous run's DONE and metrics are removed."""
    if out is None or not enabled:
        return None
    run = RunDir(out)
    for name in (DONE_FILE, METRICS_FILE, LABEL_WORDS_FILE, CALIBRATION_FILE, *(f for m in METHODS.values() for f in m.files)):
        (run / name).unlink(missing_ok=True)
    method = get_method(cfg.method)
    run.save_config({**asdict(cfg), "class_names": data.class_names, "num_train": len(data.few_shot.train),
                     "num_dev": len(data.few_shot.dev), "num_test": len(data.test), "pair": data.pair,
                     "method_summary": method.summary, "paper": method.paper,
                     "description": f"{cfg.method} on {cfg.dataset}, K={cfg.shots}, seed {cfg.seed}",
                     **(extra or {}), "backbone_id": backbone_id(backbone)})
    return run


def write_outputs(run: RunDir, model: TextClassifier, cfg: RunConfig, data: RunData, test_scores, results: dict) -> None:
    """predictions.jsonl, examples.json, the trained model (when asked), results.json, then DONE."""
    names = data.class_names
    lines = []
    for i, (ex, p) in enumerate(zip(data.test, test_scores.argmax(-1).tolist())):
        lines.append(json.dumps({"index": i, "text": ex.text, **({"text_b": ex.text_b} if getattr(ex, "text_b", None) else {}),
                                 "label": names[ex.label], "prediction": names[p], "correct": p == ex.label,
                                 "scores": [round(float(s), 5) for s in test_scores[i].tolist()]}))
    atomic_write_bytes(run / "predictions.jsonl", ("\n".join(lines) + "\n").encode())
    run.save_json("examples.json", make_examples(model, data.test, test_scores, names, cfg.num_examples))
    if cfg.save_model and get_method(cfg.method).trains:
        model.save(model_file(run.path, cfg.method))
    run.save_json("results.json", results)
    run.mark_done()


def load_run_model(run_dir: str | Path, device: str = "cpu") -> tuple[TextClassifier, dict]:
    """(model, config dict) rebuilt from a run folder, with its trained prompt or weights loaded."""
    run_dir = Path(run_dir)
    conf = read_run_config(run_dir, RUN_KIND, "pass a folder written by `diffprompt prompting train --out DIR`")
    conf["class_names"] = saved_class_names(conf)
    cfg = RunConfig(**{k: conf[k] for k in RunConfig.__dataclass_fields__ if k in conf})
    cfg.prefix_mlp = None  # a saved deep prompt holds its prefixes folded: the model is rebuilt without the MLP
    if cfg.verbalizer == AUTO:
        cfg.verbalizer = chosen_label_words(run_dir)
    # the embedding reference has its own encoder and no masked LM
    model_bb, tok = fresh_backbone(cfg.backbone) if get_method(cfg.method).kind != "embedding" else (None, None)
    seed_everything(cfg.seed)
    pool = prepare_data(cfg).few_shot.train if cfg.demos != "none" else None  # --demos: the run's K examples again
    model = build_model(cfg, model_bb, tok, conf["class_names"], pool)
    if get_method(cfg.method).trains:
        path = model_file(run_dir, cfg.method)
        if not path.exists():
            raise UserError(f"run {run_dir} has no {path.name}; it was trained with save_model off, retrain it")
        model.load(path)
    model.eval()
    model.to(choose_device(device))
    if get_method(cfg.method).kind == "prompt":
        load_calibration(run_dir, model)
    return model, conf


def chosen_label_words(run_dir: Path) -> str:
    """The verbalizer a --verbalizer auto run chose (its label_words.json)."""
    path = run_dir / LABEL_WORDS_FILE
    if not path.exists():
        raise UserError(f"run {run_dir} was trained with --verbalizer auto but has no {LABEL_WORDS_FILE}; retrain it")
    return json.loads(path.read_text())["verbalizer"]


def run_results(cfg: RunConfig, data: RunData, model: TextClassifier, test_scores, best, extra: dict) -> dict:
    """results.json: test accuracy and macro-F1, the chosen dev state (`best`, a `loop.BestOnDev`), the
    majority class, sizes."""
    pred = test_scores.argmax(-1).tolist()
    gold = [ex.label for ex in data.test]
    return {
        "dataset": cfg.dataset, "method": cfg.method, "shots": cfg.shots, "seed": cfg.seed,
        "test_accuracy": accuracy(pred, gold), "test_macro_f1": macro_f1(pred, gold, len(data.class_names)),
        "dev_accuracy": best.accuracy, "best_step": best.step,
        "majority_accuracy": majority_baseline(data.test)["accuracy"],
        "num_train": len(data.few_shot.train), "num_dev": len(data.few_shot.dev), "num_test": len(data.test),
        "template": cfg.template, "label_words": model.label_descriptions(data.class_names), **extra,
    }
