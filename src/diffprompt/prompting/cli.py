"""`diffprompt prompting ...`: zero-shot, train, evaluate, predict, compare, export, import-peft.

Defaults come from the config classes (`run/config.py`, `comparison/config.py`) and the method registry. At import time this module loads only
argparse and those torch-free classes; the handlers import the library (torch, transformers)
when they run, so that `diffprompt --help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

from ..cli import add_command, add_group
from ..errors import UserError
from ..tracking import NO_TRACKER, TRACKERS
from .comparison.config import CompareConfig
from .methods.registry import DEMO_METHODS, METHOD_NAMES, METHODS, get_method
from .prompts.choices import CALIBRATIONS, DEMOS
from .run.config import RunConfig, RunOptions, check_demos
from .comparison.rows import BASES, OPTIONS, parse_rows

RUN = RunConfig()  # the defaults of one run
COMPARE = CompareConfig()  # the defaults of a comparison
METHODS_HELP = ", ".join(METHOD_NAMES)
COMPARE_EXAMPLE = ("  diffprompt prompting compare --datasets mr,cr,trec --rows zero-shot,prompt-ft,soft,hybrid,finetune \\\n"
                   "      --shots 16 --seeds 13,21,42,87,100 --out runs/compare")
EXAMPLES = ("  diffprompt prompting zero-shot --dataset mr\n"
            "  diffprompt prompting zero-shot --dataset mr --calibrate content-free\n"
            "  diffprompt prompting train --dataset mr --method prompt-ft --verbalizer auto --seed 13 --out runs/auto\n"
            "  diffprompt prompting train --dataset mr --method prompt-ft --shots 16 --seed 13 --out runs/pft\n"
            "  diffprompt prompting train --dataset mr --method prompt-ft --demos similar --seed 13 --out runs/demos\n"
            "  diffprompt prompting train --dataset trec --method p-tuning-v2 --seed 13 --out runs/ptv2\n"
            "  diffprompt prompting evaluate runs/pft\n"
            "  diffprompt prompting predict runs/pft --text 'a gorgeous, witty film'\n" + COMPARE_EXAMPLE + "\n"
            "  diffprompt prompting export runs/soft --to peft runs/soft-peft\n"
            "  diffprompt prompting export runs/ptv2 --to peft runs/ptv2-peft\n"
            "  diffprompt prompting import-peft runs/soft-peft --out runs/from-peft")

EXPORT_HELP = """\
Write the soft prompt of a `prompting train` run as a PEFT prompt-tuning adapter folder
(adapter_config.json, adapter_model.safetensors) that peft.PeftModel.from_pretrained(backbone, OUT)
loads; its README.md shows the call. The template must start with all its soft tokens
({soft*N} {x} ... {mask}) and the backbone must be frozen; anything else is refused with the reason.
A prefix-tuning or p-tuning-v2 run is written as a PEFT prefix-tuning (PREFIX_TUNING) adapter of
its prefixes; PeftModel takes the filled-in template as it is.

example:
  diffprompt prompting export runs/soft --to peft runs/soft-peft
  diffprompt prompting export runs/ptv2 --to peft runs/ptv2-peft
"""
IMPORT_PEFT_HELP = """\
Turn a PEFT prompt-tuning adapter folder into a run folder of method soft, which `prompting
evaluate` and `predict` take. An adapter exported by `prompting export` comes back exactly
(template, label words and data set from its diffprompt.json); for another adapter give the
template (starting with its soft tokens), the label words and the data set. A prefix-tuning
adapter (PREFIX_TUNING) becomes a run folder of method prefix-tuning, or p-tuning-v2 when its
template has words besides the input and the mask (default: the data set's bare template).

example:
  diffprompt prompting import-peft runs/soft-peft --out runs/from-peft
  diffprompt prompting evaluate runs/from-peft --split test
"""


# ----------------------------------------------------------------------------- parsers
def register(subparsers) -> None:
    g = add_group(subparsers, "prompting", "prompt-based learning on a masked LM: hard, soft, hybrid prompts vs fine-tuning",
                  description=(
                      "Prompt-based few-shot learning (LM-BFF protocol) on a masked LM.\n\n"
                      "Methods: zero-shot (hard template, no training), prompt-ft (hard template, all parameters),\n"
                      "soft (soft tokens, frozen backbone), hybrid (hard words + soft tokens), finetune (head baseline),\n"
                      "pet (a prompt-ft model per pattern, their ensemble distilled into a fine-tuned classifier),\n"
                      "and the deep forms of soft and hybrid, key/value prefixes at every layer of the frozen backbone:\n"
                      "prefix-tuning (input and mask only; PEFT's PREFIX_TUNING) and p-tuning-v2 (hard template).\n\n"
                      "examples:\n" + EXAMPLES))
    _add_zero_shot(g)
    _add_train(g)
    _add_evaluate(g)
    _add_predict(g)
    _add_compare(g)
    _add_export(g)
    _add_import_peft(g)


def _add_zero_shot(g) -> None:
    p = add_command(g, "zero-shot", "score a hard template's label words with the pre-trained MLM (no training)",
                    description=("Zero-shot prompting: fill the template, score each label's words at the mask, predict the best.\n"
                                 "Writes a run folder (config.json, results.json, predictions.jsonl, examples.json).\n\n"
                                 "example:\n  diffprompt prompting zero-shot --dataset mr --template '{x} It was {mask}.' "
                                 "--verbalizer 'negative:bad;positive:good'"))
    _add_run_args(p)
    p.add_argument("--out", default=None, help="run folder (default: runs/prompting/zero-shot-DATASET)")
    p.set_defaults(func=cmd_run, method="zero-shot")


def _add_train(g) -> None:
    p = add_command(g, "train", "train one method on K examples per class and evaluate it on the test split",
                    description=("Train one method with the LM-BFF few-shot protocol: K examples per class from train, K more as dev\n"
                                 "(model choice: the dev-best state is kept), then the full test split. Multi-process (data parallel):\n"
                                 "`torchrun --standalone --nproc_per_node 2 -m diffprompt prompting train ...` (CPU, gloo) or\n"
                                 "`accelerate launch --num_processes 2 -m diffprompt prompting train ...` (GPUs).\n\n"
                                 "example:\n  diffprompt prompting train --dataset mr --method soft --shots 16 --seed 13 --out runs/soft"))
    _add_run_args(p)
    p.add_argument("--method", default=RUN.method, help=METHODS_HELP)
    p.add_argument("--train", default=RUN.train, choices=["all", "prompt"],
                   help="what trains: all parameters, or the prompt only (frozen backbone); default: the method's")
    p.add_argument("--prompt-encoder", default=RUN.prompt_encoder, choices=["lstm", "mlp"],
                   help="P-tuning reparameterisation of the soft tokens")
    p.add_argument("--lr", type=float, default=RUN.lr, help="AdamW learning rate; default: the method's (see `prompting compare --help`)")
    _add_loop_args(p, RUN)
    p.add_argument("--no-save", dest="save_model", action="store_false", default=argparse.SUPPRESS,
                   help="do not write the trained prompt/model into the run folder")
    p.add_argument("--out", default=None, help="run folder (default: runs/prompting/METHOD-DATASET-kK-seedS)")
    p.set_defaults(func=cmd_run)


def _add_run_args(p: argparse.ArgumentParser) -> None:
    """The options of one run that zero-shot and train share."""
    p.add_argument("--dataset", default=RUN.dataset, help="mr, cr, subj, trec, or a CSV/TSV/JSONL file with text,label[,text_b]")
    p.add_argument("--template", default=RUN.template,
                   help="e.g. '{x} It was {mask}.', '{x} {soft*4} {mask}', '{x} {soft=It was} {mask}'; default: the method's template for the data set")
    p.add_argument("--shots", type=int, default=RUN.shots, help="K examples per class (train) and K more (dev); 0: the full splits")
    p.add_argument("--seed", type=int, default=RUN.seed, help="data and training seed (LM-BFF: 13, 21, 42, 87, 100)")
    _add_shared_args(p, RUN)


def _add_shared_args(p: argparse.ArgumentParser, defaults: RunOptions) -> None:
    """The options a run and a comparison share, outside the training loop."""
    p.add_argument("--verbalizer", default=defaults.verbalizer,
                   help="label words, by label name or index, e.g. 'negative:bad;positive:good' or '0:terrible,bad;1:great,good'; "
                        "'auto': searched on the K training examples (LM-BFF), written to label_words.json; "
                        "default: each data set's own")
    p.add_argument("--auto-words", type=int, default=defaults.auto_words, help="--verbalizer auto: words kept per class")
    p.add_argument("--auto-candidates", type=int, default=defaults.auto_candidates,
                   help="--verbalizer auto: candidate verbalizers by summed log-probability")
    p.add_argument("--auto-finetune", type=int, default=defaults.auto_finetune,
                   help="--verbalizer auto: candidates (best zero-shot train accuracy first) trained briefly and judged on dev")
    p.add_argument("--auto-steps", type=int, default=defaults.auto_steps, help="--verbalizer auto: training steps per candidate")
    p.add_argument("--calibrate", default=defaults.calibrate, metavar="|".join(CALIBRATIONS),
                   help="divide the label-word probabilities by those of content-free inputs ('N/A', '', the mask) "
                        "or by their mean over unlabeled train-split texts, then renormalise (Zhao et al. 2021)")
    p.add_argument("--domain-examples", type=int, default=defaults.domain_examples,
                   help="--calibrate domain: train-split texts averaged (a fixed subset)")
    p.add_argument("--pet-unlabeled", type=int, default=defaults.pet_unlabeled,
                   help="--method pet: unlabeled train-split texts (a fixed subset, never dev or test) the pattern ensemble labels")
    p.add_argument("--pet-temperature", type=float, default=defaults.pet_temperature,
                   help="--method pet: T of the soft labels softmax(mean pattern scores / T) and of the distillation loss")
    p.add_argument("--pet-distill-steps", type=int, default=defaults.pet_distill_steps,
                   help="--method pet: optimiser steps of the distilled classifier on the soft-labeled texts")
    p.add_argument("--demos", default=defaults.demos, metavar="|".join(DEMOS),
                   help=f"follow each input with one training example per class, its label word in place of the mask "
                        f"(LM-BFF; {', '.join(DEMO_METHODS)}): random, or drawn from the most similar half of each class "
                        "(sentence embeddings); a fresh set per training step, an ensemble at test time")
    p.add_argument("--demo-sets", type=int, default=defaults.demo_sets,
                   help="--demos: demonstration sets per test input whose label probabilities are averaged")
    p.add_argument("--demo-encoder", default=defaults.demo_encoder,
                   help="the sentence encoder of --demos similar and of the embedding-logreg reference: a hub id or "
                        "folder (mean pooling); default: the packaged all-MiniLM-L6-v2")
    p.add_argument("--backbone", default=defaults.backbone, help="a Hugging Face masked LM id or folder; default: the packaged BERT-tiny")
    p.add_argument("--max-length", type=int, default=defaults.max_length, help="tokens per input; only the {x} slots are truncated")
    p.add_argument("--limit-test", type=int, default=defaults.limit_test,
                   help="evaluate on N test examples only (a fixed, class-mixed subset)")
    p.add_argument("--device", default=defaults.device, help="auto, cpu, cuda, mps")
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0: torch's default); 1 is fastest for BERT-tiny on a busy machine")
    p.add_argument("--log-with", default=defaults.log_with, choices=(NO_TRACKER, *TRACKERS),
                   help="also send every metrics.jsonl line to TensorBoard (RUN/tensorboard/) or W&B (docs/interop.md)")


def _add_loop_args(p: argparse.ArgumentParser, defaults: RunOptions) -> None:
    """The training loop's options (train and compare)."""
    p.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps; default: the method's (see `prompting compare --help`)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per optimiser step (all processes together)")
    p.add_argument("--eval-every", type=int, default=defaults.eval_every,
                   help="steps between dev evaluations (model choice); default: the method's")
    p.add_argument("--prefix-length", type=int, default=defaults.prefix_length,
                   help="prefix-tuning and p-tuning-v2: key/value prefix tokens per layer; default: the method's")
    p.add_argument("--prefix-mlp", type=int, default=defaults.prefix_mlp, metavar="HIDDEN",
                   help="prefix-tuning and p-tuning-v2: train N token vectors and an MLP (Linear-tanh-Linear, this "
                        "hidden size) that makes the prefixes, as Li & Liang and PEFT's prefix_projection; the run "
                        "saves the prefixes it makes (folded); default: train the prefixes directly")
    p.add_argument("--patience", type=int, default=defaults.patience,
                   help="stop after N dev evaluations without improvement (0: never)")
    p.add_argument("--warmup", type=float, default=defaults.warmup, help="fraction of steps of linear warm-up (then linear decay)")
    p.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="AdamW weight decay")


def _add_evaluate(g) -> None:
    p = _run_folder_command(g, "evaluate", "evaluate a trained run folder on a split of a data set",
                            "Rebuild the model of a `prompting train` run folder and evaluate it; writes\n"
                            "evaluate-DATASET-SPLIT.json into the folder.\n\n"
                            "example:\n  diffprompt prompting evaluate runs/pft --split test",
                            "a folder written by `diffprompt prompting train --out`")
    p.add_argument("--dataset", default=None, help="default: the run's data set")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N examples (a fixed, class-mixed subset)")
    p.set_defaults(func=cmd_evaluate)


def _add_predict(g) -> None:
    p = _run_folder_command(g, "predict", "classify new texts with a trained (or zero-shot) run folder",
                            "Predict labels for texts given with --text, or one per line in a UTF-8 file (--input;\n"
                            "a tab separates a second text for pair tasks). Prints label, score and text.\n\n"
                            "example:\n  diffprompt prompting predict runs/pft --text 'a gorgeous, witty film' "
                            "--text 'dull and slow'",
                            "a folder written by `diffprompt prompting train` or `zero-shot`")
    p.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    p.add_argument("--input", default=None, help="a UTF-8 file, one text per line")
    p.add_argument("--output", default=None, help="write JSON lines here instead of printing")
    p.set_defaults(func=cmd_predict)


def _run_folder_command(g, name: str, summary: str, description: str, run_dir_help: str) -> argparse.ArgumentParser:
    """A command that loads the model of a run folder: its RUN_DIR and --device."""
    p = add_command(g, name, summary, description=description)
    p.add_argument("run_dir", help=run_dir_help)
    p.add_argument("--device", default="cpu", help="where the model runs: cpu, cuda, mps or auto")
    return p


def _add_compare(g) -> None:
    budgets = ", ".join(f"{m.name} {m.steps} steps at {m.lr:g}, dev every {m.eval_every}" for m in METHODS.values()
                        if m.trains and m.kind != "embedding")
    p = add_command(g, "compare", "data sets x rows x seeds at K shots: table, bar chart, learning curve",
                    description=("Run every row (a method plus options) on every data set for every seed (LM-BFF protocol), then write\n"
                                 "compare.json, compare.md (mean (std) over seeds, majority-class row), compare.png (bars with\n"
                                 "error bars), and learning_curve.{json,png} (accuracy vs K for --curve-datasets).\n"
                                 "Finished cells in OUT are reused, so an interrupted comparison resumes.\n\n"
                                 f"Default budgets (chosen on dev splits; docs/prompting.md): {budgets}.\n\n"
                                 "example:\n" + COMPARE_EXAMPLE))
    p.add_argument("--datasets", default=",".join(COMPARE.datasets), help="comma-separated: mr, cr, subj, trec, or files")
    p.add_argument("--rows", default=",".join(COMPARE.rows),
                   help=f"METHOD[+OPTION...], METHOD one of {', '.join(BASES)}, OPTION one of {', '.join(OPTIONS)}; "
                        "e.g. prompt-ft+demos-similar,prompt-ft+auto,pet,pet-distilled,zero-shot+cal-domain "
                        "(pet and pet-distilled: the ensemble and the distilled model of one PET run)")
    p.add_argument("--shots", type=int, default=COMPARE.shots, help="K per class")
    p.add_argument("--seeds", default=",".join(map(str, COMPARE.seeds)), help="comma-separated seeds")
    _add_loop_args(p, COMPARE)
    p.add_argument("--lr", default=None, help="one value for all methods, or METHOD=LR pairs: prompt-ft=1e-4,soft=3e-2")
    p.add_argument("--train", default=None, help="METHOD=all|prompt pairs, e.g. hybrid=all")
    p.add_argument("--template", action="append", default=[], metavar="METHOD=TEMPLATE",
                   help="override a method's template (repeatable), e.g. --template 'soft={x} {soft*4} {mask}'")
    _add_shared_args(p, COMPARE)
    p.add_argument("--no-curve", action="store_true", help="skip the learning curve")
    p.add_argument("--curve-datasets", default=None, help="default: mr if in --datasets, else the first data set")
    p.add_argument("--curve-shots", default=",".join(map(str, COMPARE.curve_shots)), help="the K values of the learning curve")
    p.add_argument("--curve-rows", default=None, help="the learning curve's rows; default: --rows")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="run only the I-th of N shares of the cells (0-based) and write no table: N processes fill one "
                        "--out in parallel, then a run without --shard reuses every cell and writes the tables")
    p.add_argument("--out", default="runs/compare")
    p.set_defaults(func=cmd_compare)


def _add_export(g) -> None:
    p = add_command(g, "export", "write a run's soft prompt (or deep prompt) as a PEFT adapter", description=EXPORT_HELP)
    p.add_argument("run_dir", help="a folder written by `diffprompt prompting train` (method soft, hybrid, "
                                   "prefix-tuning or p-tuning-v2)")
    p.add_argument("--to", default="peft", choices=["peft"], help="the format to write")
    p.add_argument("out", help="the adapter folder to write")
    p.set_defaults(func=cmd_export)


def _add_import_peft(g) -> None:
    p = add_command(g, "import-peft", "a PEFT prompt-tuning (soft tokens) or prefix-tuning (deep prompt) adapter as a "
                    "run folder to evaluate and predict",
                    description=IMPORT_PEFT_HELP)
    p.add_argument("adapter", help="a folder with adapter_config.json and adapter_model.safetensors")
    p.add_argument("--out", default=None, help="run folder (default: runs/prompting/peft-ADAPTER)")
    p.add_argument("--dataset", default=None, help="the labels' data set; default: the adapter's, else " + RUN.dataset)
    p.add_argument("--template", default=None, help="default: the adapter's, else {soft*M} and the data set's hard template")
    p.add_argument("--verbalizer", default=None, help="label words; default: the adapter's, else the data set's")
    p.add_argument("--backbone", default=None, help="default: the adapter's base model")
    p.set_defaults(func=cmd_import_peft)


# ----------------------------------------------------------------------------- argument values
def _int_list(text: str, what: str) -> list[int]:
    try:
        return [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--{what} takes comma-separated integers, e.g. 13,21,42; got {text!r}") from None


def _str_list(text: str) -> list[str]:
    return [s.strip() for s in str(text).split(",") if s.strip()]


def _per_method(text: str | None, what: str, cast=float) -> dict:
    """`1e-4` (every method) or `prompt-ft=1e-4,soft=3e-2`."""
    out = {}
    for part in _str_list(text) if text is not None else []:
        name, _, value = part.rpartition("=")
        names = [get_method(name.strip()).name] if name else list(METHOD_NAMES)
        try:
            out.update({n: cast(value.strip()) for n in names})
        except ValueError:
            raise UserError(f"--{what}: cannot read {value!r}; write a value or METHOD=VALUE pairs, e.g. prompt-ft=1e-4,soft=3e-2") from None
    return out


def _templates(items: list[str]) -> dict[str, str]:
    """--template METHOD=TEMPLATE items as {method: template}."""
    out = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--template takes METHOD=TEMPLATE, e.g. 'soft={{x}} {{soft*4}} {{mask}}'; got {item!r}")
        name, _, t = item.partition("=")
        out[get_method(name.strip()).name] = t
    return out


def _given(args, cls) -> dict:
    """The parsed arguments that are fields of the dataclass `cls`, by name."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in vars(args).items() if k in names}


def run_config(args) -> RunConfig:
    get_method(args.method)
    cfg = RunConfig(**_given(args, RunConfig))
    check_demos(cfg, cfg.method)  # before the data set loads
    return cfg


def compare_config(args) -> CompareConfig:
    train = _per_method(args.train, "train", cast=str)
    for m, v in train.items():
        if v not in ("all", "prompt"):
            raise UserError(f"--train {m}={v}: use all or prompt")
    return CompareConfig(
        **_given(args, RunOptions), datasets=_str_list(args.datasets), rows=parse_rows(args.rows),
        seeds=_int_list(args.seeds, "seeds"), lr=_per_method(args.lr, "lr"), train=train,
        templates=_templates(args.template), curve=not args.no_curve,
        curve_datasets=_str_list(args.curve_datasets) if args.curve_datasets else None,
        curve_shots=_int_list(args.curve_shots, "curve-shots"),
        curve_rows=parse_rows(args.curve_rows) if args.curve_rows else None,
    )


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """--shard I/N as (I, N), 0 <= I < N."""
    if text is None:
        return None
    i, _, n = str(text).partition("/")
    if not (i.strip().isdigit() and n.strip().isdigit() and int(i) < int(n)):
        raise UserError(f"--shard takes I/N with 0 <= I < N, e.g. 0/2; got {text!r}")
    return int(i), int(n)


def read_utf8_lines(path: str) -> list[str]:
    p = Path(path)
    if not p.is_file():
        raise UserError(f"input file {path} does not exist; give a UTF-8 text file with one text per line")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text (byte 0x{raw[e.start]:02x} at offset {e.start}); convert it, "
                        f"e.g. `iconv -f latin1 -t utf-8 {path} > fixed.txt`") from None
    return [line for line in text.splitlines() if line.strip()]


def _set_threads(args) -> None:
    if args.threads < 0:
        raise UserError(f"--threads must be >= 0, got {args.threads}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


# ----------------------------------------------------------------------------- handlers
def cmd_run(args) -> int:
    """`prompting zero-shot` and `prompting train`: one run, then its test accuracy."""
    _set_threads(args)
    from ..training_setup import get_accelerator
    from .run.training import train_run

    cfg = run_config(args)
    out = args.out or cfg.default_folder()
    res = train_run(cfg, out)
    if get_accelerator().is_main_process:
        print(f"{res['method']} on {res['dataset']}: test accuracy {100 * res['test_accuracy']:.2f} % "
              f"({res['num_test']} examples; majority class {100 * res['majority_accuracy']:.2f} %)")
        print(f"run folder: {out}")
    return 0


def cmd_evaluate(args) -> int:
    from .run.scoring import evaluate_run

    res = evaluate_run(args.run_dir, args.dataset, args.split, args.limit, args.device)
    print(f"{res['method']} run {args.run_dir} on {res['dataset']} {args.split} ({res['n']} examples): "
          f"accuracy {100 * res['accuracy']:.2f} %, macro-F1 {100 * res['macro_f1']:.2f} %")
    return 0


def cmd_predict(args) -> int:
    texts = list(args.text) + (read_utf8_lines(args.input) if args.input else [])
    if not texts:
        raise UserError("nothing to classify; pass --text 'some text' (repeatable) or --input FILE")
    from .run.scoring import predict_texts
    from .run.folder import load_run_model

    model, conf = load_run_model(args.run_dir, args.device)
    rows = predict_texts(model, texts, conf["class_names"])
    if args.output:
        Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} predictions to {args.output}")
    else:
        for r in rows:
            print(f"{r['label']}\t{r['score']:.4f}\t{r['text']}")
    return 0


def cmd_compare(args) -> int:
    _set_threads(args)
    from .comparison.compare import run_compare

    cc = compare_config(args)
    shard = parse_shard(args.shard)
    summary = run_compare(cc, args.out, shard=shard)
    if shard is not None:
        print(f"shard {shard[0]}/{shard[1]} of the cells done in {args.out}; run the command without --shard for the tables")
        return 0
    print((Path(args.out) / "compare.md").read_text(encoding="utf-8"))
    print(f"results in {args.out}: compare.json, compare.md, compare.png"
          + (", learning_curve.json, learning_curve.png" if cc.curve else "") + f" ({summary.get('seconds', 0)} s)")
    return 0


def cmd_export(args) -> int:
    from .peft_io import export_run

    out = export_run(args.run_dir, args.out)
    kind = json.loads((out / "adapter_config.json").read_text())["peft_type"]
    readme = " (its README.md shows the call)" if (out / "README.md").exists() else ""
    print(f"PEFT {kind} adapter in {out}: peft.PeftModel.from_pretrained(backbone, {str(out)!r}) loads it{readme}")
    return 0


def cmd_import_peft(args) -> int:
    from .peft_io import import_run

    out = import_run(args.adapter, args.out or f"runs/prompting/peft-{Path(args.adapter).name}", args.dataset,
                     args.template, args.verbalizer, args.backbone)
    print(f"run folder: {out} (evaluate it: diffprompt prompting evaluate {out})")
    return 0
