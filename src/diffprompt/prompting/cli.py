"""`diffprompt prompting ...`: zero-shot, train, evaluate, predict, compare.

Heavy imports (torch, transformers) happen inside the handlers so that `--help` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..cli import add_command, add_group
from ..errors import UserError

METHODS_HELP = "zero-shot, prompt-ft, soft, hybrid, finetune"


def _int_list(text: str, what: str) -> list[int]:
    try:
        vals = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise UserError(f"--{what} takes comma-separated integers, e.g. 13,21,42; got {text!r}") from None
    return vals


def _str_list(text: str) -> list[str]:
    return [s.strip() for s in str(text).split(",") if s.strip()]


def _per_method(text: str | None, what: str, cast=float) -> dict:
    """`1e-4` (every method) or `prompt-ft=1e-4,soft=3e-2`."""
    from .methods import METHOD_NAMES, get_method

    if text is None:
        return {}
    out = {}
    for part in _str_list(text):
        if "=" in part:
            name, _, value = part.partition("=")
            get_method(name.strip())
            names = [name.strip()]
        else:
            value, names = part, list(METHOD_NAMES)
        try:
            v = cast(value.strip())
        except ValueError:
            raise UserError(f"--{what}: cannot read {value!r}; write a value or METHOD=VALUE pairs, e.g. prompt-ft=1e-4,soft=3e-2") from None
        for n in names:
            out[n] = v
    return out


def _add_model_args(p: argparse.ArgumentParser, method: bool = True) -> None:
    p.add_argument("--dataset", default="mr", help="mr, cr, subj, trec, or a CSV/TSV/JSONL file with text,label[,text_b]")
    if method:
        p.add_argument("--method", default="prompt-ft", help=METHODS_HELP)
    p.add_argument("--template", default=None,
                   help="e.g. '{x} It was {mask}.', '{x} {soft*4} {mask}', '{x} {soft=It was} {mask}'; default: the method's template for the data set")
    p.add_argument("--verbalizer", default=None,
                   help="label words, by label name or index, e.g. 'negative:bad;positive:good' or '0:terrible,bad;1:great,good'")
    p.add_argument("--backbone", default=None, help="a Hugging Face masked LM id or folder; default: the packaged BERT-tiny")
    p.add_argument("--max-length", type=int, default=128, help="tokens per input; only the {x} slots are truncated")
    p.add_argument("--limit-test", type=int, default=None, help="evaluate on N test examples only (a fixed, class-mixed subset)")
    p.add_argument("--shots", type=int, default=16, help="K examples per class (train) and K more (dev); 0: the full splits")
    p.add_argument("--seed", type=int, default=42, help="data and training seed (LM-BFF: 13, 21, 42, 87, 100)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    _add_threads(p)


def _add_threads(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=0,
                   help="CPU threads for torch (0: torch's default); 1 is fastest for BERT-tiny on a busy machine")


def _set_threads(args) -> None:
    n = getattr(args, "threads", 0) or 0
    if n < 0:
        raise UserError(f"--threads must be >= 0, got {n}")
    if n:
        import torch

        torch.set_num_threads(n)


def register(subparsers) -> None:
    g = add_group(subparsers, "prompting", "prompt-based learning on a masked LM: hard, soft, hybrid prompts vs fine-tuning",
                  description=(
                      "Prompt-based few-shot learning (LM-BFF protocol) on a masked LM.\n\n"
                      "Methods: zero-shot (hard template, no training), prompt-ft (hard template, all parameters),\n"
                      "soft (soft tokens, frozen backbone), hybrid (hard words + soft tokens), finetune (head baseline).\n\n"
                      "examples:\n"
                      "  diffprompt prompting zero-shot --dataset mr\n"
                      "  diffprompt prompting train --dataset mr --method prompt-ft --shots 16 --seed 13 --out runs/pft\n"
                      "  diffprompt prompting evaluate runs/pft\n"
                      "  diffprompt prompting predict runs/pft --text 'a gorgeous, witty film'\n"
                      "  diffprompt prompting compare --datasets mr,cr,trec --methods zero-shot,prompt-ft,soft,hybrid,finetune \\\n"
                      "      --shots 16 --seeds 13,21,42,87,100 --out runs/compare"))

    p = add_command(g, "zero-shot", "score a hard template's label words with the pre-trained MLM (no training)",
                    description=("Zero-shot prompting: fill the template, score each label's words at the mask, predict the best.\n"
                                 "Writes a run folder (config.json, results.json, predictions.jsonl, examples.json).\n\n"
                                 "example:\n  diffprompt prompting zero-shot --dataset mr --template '{x} It was {mask}.' "
                                 "--verbalizer 'negative:bad;positive:good'"))
    _add_model_args(p, method=False)
    p.add_argument("--out", default=None, help="run folder (default: runs/prompting/zero-shot-DATASET)")
    p.set_defaults(func=cmd_zero_shot)

    p = add_command(g, "train", "train one method on K examples per class and evaluate it on the test split",
                    description=("Train one method with the LM-BFF few-shot protocol: K examples per class from train, K more as dev\n"
                                 "(model choice: the dev-best state is kept), then the full test split. Multi-process (data parallel):\n"
                                 "`torchrun --standalone --nproc_per_node 2 -m diffprompt prompting train ...` (CPU, gloo) or\n"
                                 "`accelerate launch --num_processes 2 -m diffprompt prompting train ...` (GPUs).\n\n"
                                 "example:\n  diffprompt prompting train --dataset mr --method soft --shots 16 --seed 13 --out runs/soft"))
    _add_model_args(p)
    p.add_argument("--train", default=None, choices=["all", "prompt"],
                   help="what trains: all parameters, or the prompt only (frozen backbone); default: the method's")
    p.add_argument("--prompt-encoder", default=None, choices=["lstm", "mlp"], help="P-tuning reparameterisation of the soft tokens")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate; default: the method's (see `prompting compare --help`)")
    p.add_argument("--steps", type=int, default=80, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=10, help="steps between dev evaluations (model choice)")
    p.add_argument("--patience", type=int, default=0, help="stop after N dev evaluations without improvement (0: never)")
    p.add_argument("--warmup", type=float, default=0.0, help="fraction of steps of linear warm-up (then linear decay)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--no-save", action="store_true", help="do not write the trained prompt/model into the run folder")
    p.add_argument("--out", default=None, help="run folder (default: runs/prompting/METHOD-DATASET-kK-seedS)")
    p.set_defaults(func=cmd_train)

    p = add_command(g, "evaluate", "evaluate a trained run folder on a split of a data set",
                    description=("Rebuild the model of a `prompting train` run folder and evaluate it; writes\n"
                                 "evaluate-DATASET-SPLIT.json into the folder.\n\n"
                                 "example:\n  diffprompt prompting evaluate runs/pft --split test"))
    p.add_argument("run_dir", help="a folder written by `diffprompt prompting train --out`")
    p.add_argument("--dataset", default=None, help="default: the run's data set")
    p.add_argument("--split", default="test", choices=["train", "dev", "test"])
    p.add_argument("--limit", type=int, default=None, help="first N examples (a fixed, class-mixed subset)")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_evaluate)

    p = add_command(g, "predict", "classify new texts with a trained (or zero-shot) run folder",
                    description=("Predict labels for texts given with --text, or one per line in a UTF-8 file (--input;\n"
                                 "a tab separates a second text for pair tasks). Prints label, score and text.\n\n"
                                 "example:\n  diffprompt prompting predict runs/pft --text 'a gorgeous, witty film' --text 'dull and slow'"))
    p.add_argument("run_dir", help="a folder written by `diffprompt prompting train` or `zero-shot`")
    p.add_argument("--text", action="append", default=[], help="a text to classify (repeatable)")
    p.add_argument("--input", default=None, help="a UTF-8 file, one text per line")
    p.add_argument("--output", default=None, help="write JSON lines here instead of printing")
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=cmd_predict)

    p = add_command(g, "compare", "the grid: data sets x methods x seeds at K shots, table + bar chart + learning curve",
                    description=("Run every method on every data set for every seed (LM-BFF protocol), then write\n"
                                 "compare.json, compare.md (mean (std) over seeds, majority-class row), compare.png (bars with\n"
                                 "error bars), and learning_curve.{json,png} (accuracy vs K for --curve-datasets).\n"
                                 "Finished cells in OUT are reused, so an interrupted grid resumes.\n\n"
                                 "Default learning rates (tuned on the MR dev split): prompt-ft 1e-3, finetune 1e-3, soft 1e-1, hybrid 3e-2.\n\n"
                                 "example:\n  diffprompt prompting compare --datasets mr,cr,trec --methods zero-shot,prompt-ft,soft,hybrid,finetune \\\n"
                                 "      --shots 16 --seeds 13,21,42,87,100 --out runs/compare"))
    p.add_argument("--datasets", default="mr,cr,trec", help="comma-separated: mr, cr, subj, trec, or files")
    p.add_argument("--methods", default="zero-shot,prompt-ft,soft,hybrid,finetune", help=METHODS_HELP)
    p.add_argument("--shots", type=int, default=16, help="K per class")
    p.add_argument("--seeds", default="13,21,42,87,100", help="comma-separated seeds")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=10)
    p.add_argument("--patience", type=int, default=0)
    p.add_argument("--lr", default=None, help="one value for all methods, or METHOD=LR pairs: prompt-ft=1e-4,soft=3e-2")
    p.add_argument("--train", default=None, help="METHOD=all|prompt pairs, e.g. hybrid=all")
    p.add_argument("--template", action="append", default=[], metavar="METHOD=TEMPLATE",
                   help="override a method's template (repeatable), e.g. --template 'soft={x} {soft*4} {mask}'")
    p.add_argument("--verbalizer", default=None, help="label words for every data set (default: each set's own)")
    p.add_argument("--backbone", default=None)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--limit-test", type=int, default=None, help="evaluate on N test examples only (quick runs)")
    p.add_argument("--no-curve", action="store_true", help="skip the learning curve")
    p.add_argument("--curve-datasets", default=None, help="default: mr if in --datasets, else the first data set")
    p.add_argument("--curve-shots", default="4,8,16,32")
    p.add_argument("--curve-methods", default=None, help="default: --methods")
    p.add_argument("--device", default="auto")
    _add_threads(p)
    p.add_argument("--out", default="runs/compare")
    p.set_defaults(func=cmd_compare)


# ----------------------------------------------------------------------------- handlers
def _run_config(args, method: str):
    from .methods import RunConfig, get_method

    get_method(method)
    return RunConfig(
        dataset=args.dataset, method=method, shots=args.shots, seed=args.seed, template=args.template,
        verbalizer=args.verbalizer, backbone=args.backbone, train=getattr(args, "train", None),
        prompt_encoder=getattr(args, "prompt_encoder", None), lr=getattr(args, "lr", None),
        steps=getattr(args, "steps", 80), batch_size=getattr(args, "batch_size", 8),
        eval_every=getattr(args, "eval_every", 10), patience=getattr(args, "patience", 0),
        warmup=getattr(args, "warmup", 0.0), weight_decay=getattr(args, "weight_decay", 0.0),
        max_length=args.max_length, limit_test=args.limit_test, device=args.device,
        save_model=not getattr(args, "no_save", False),
    )


def _dataset_tag(dataset: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(dataset).stem)


def _print_results(res: dict, out) -> None:
    from .training import get_accelerator

    if not get_accelerator().is_main_process:
        return
    print(f"{res['method']} on {res['dataset']}: test accuracy {100 * res['test_accuracy']:.2f} % "
          f"({res['num_test']} examples; majority class {100 * res['majority_accuracy']:.2f} %)")
    print(f"run folder: {out}")


def cmd_zero_shot(args) -> int:
    _set_threads(args)
    from .training import train_run

    cfg = _run_config(args, "zero-shot")
    out = args.out or f"runs/prompting/zero-shot-{_dataset_tag(args.dataset)}"
    res = train_run(cfg, out)
    _print_results(res, out)
    return 0


def cmd_train(args) -> int:
    _set_threads(args)
    from .training import train_run

    cfg = _run_config(args, args.method)
    out = args.out or f"runs/prompting/{args.method}-{_dataset_tag(args.dataset)}-k{args.shots}-seed{args.seed}"
    res = train_run(cfg, out)
    _print_results(res, out)
    return 0


def cmd_evaluate(args) -> int:
    from ..rundir import RunDir
    from .training import _split, accuracy, label_names_of, limit_examples, load_data, load_run_model, macro_f1, score

    model, conf = load_run_model(args.run_dir, args.device)
    dataset = args.dataset or conf["dataset"]
    ds = load_data(dataset)
    names = label_names_of(ds)
    if names != list(conf["label_names"]):
        raise UserError(f"data set {dataset!r} has labels {names} but the run was trained on {conf['label_names']}; "
                        "evaluate on a data set with the same labels")
    split = _split(ds, args.split)
    if split is None or not split.examples:
        raise UserError(f"data set {dataset!r} has no {args.split} examples")
    examples = limit_examples(split.examples, args.limit, salt="limit-test")
    scores = score(model, examples, 64, desc=f"evaluate {args.split}")
    gold = [ex.label for ex in examples]
    res = {"dataset": dataset, "split": args.split, "n": len(examples), "accuracy": accuracy(scores, gold),
           "macro_f1": macro_f1(scores.argmax(-1).tolist(), gold, len(names)), "run": str(args.run_dir)}
    RunDir(args.run_dir).save_json(f"evaluate-{_dataset_tag(dataset)}-{args.split}.json", res)
    print(f"{conf['method']} run {args.run_dir} on {dataset} {args.split} ({len(examples)} examples): "
          f"accuracy {100 * res['accuracy']:.2f} %, macro-F1 {100 * res['macro_f1']:.2f} %")
    return 0


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


def cmd_predict(args) -> int:
    from .training import _scores_fn, load_run_model

    texts = list(args.text)
    if args.input:
        texts += read_utf8_lines(args.input)
    if not texts:
        raise UserError("nothing to classify; pass --text 'some text' (repeatable) or --input FILE")
    model, conf = load_run_model(args.run_dir, args.device)
    names = conf["label_names"]
    pair = any("\t" in t for t in texts)
    a = [t.split("\t", 1)[0] for t in texts]
    b = [t.split("\t", 1)[1] if "\t" in t else "" for t in texts] if pair else None
    import torch

    fn = _scores_fn(model)
    rows = []
    with torch.no_grad():
        for s in range(0, len(a), 64):
            sc = fn(a[s:s + 64], b[s:s + 64] if b else None).float().cpu()
            for i, row in enumerate(sc):
                j = int(row.argmax())
                rows.append({"text": texts[s + i], "label": names[j], "score": round(float(row[j]), 4),
                             "scores": {n: round(float(v), 4) for n, v in zip(names, row.tolist())}})
    if args.output:
        Path(args.output).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        print(f"wrote {len(rows)} predictions to {args.output}")
    else:
        for r in rows:
            print(f"{r['label']}\t{r['score']:.4f}\t{r['text']}")
    return 0


def cmd_compare(args) -> int:
    _set_threads(args)
    from .experiments import CompareConfig, run_compare
    from .methods import get_method, parse_methods

    templates = {}
    for item in args.template:
        if "=" not in item:
            raise UserError(f"--template takes METHOD=TEMPLATE, e.g. 'soft={{x}} {{soft*4}} {{mask}}'; got {item!r}")
        name, _, t = item.partition("=")
        get_method(name.strip())
        templates[name.strip()] = t
    train = _per_method(args.train, "train", cast=str)
    for m, v in train.items():
        if v not in ("all", "prompt"):
            raise UserError(f"--train {m}={v}: use all or prompt")
    cc = CompareConfig(
        datasets=_str_list(args.datasets), methods=parse_methods(args.methods), shots=args.shots,
        seeds=_int_list(args.seeds, "seeds"), steps=args.steps, batch_size=args.batch_size,
        eval_every=args.eval_every, patience=args.patience, lr=_per_method(args.lr, "lr"), train=train,
        templates=templates, verbalizer=args.verbalizer, backbone=args.backbone, max_length=args.max_length,
        limit_test=args.limit_test, device=args.device, curve=not args.no_curve,
        curve_datasets=_str_list(args.curve_datasets) if args.curve_datasets else None, curve_shots=_int_list(args.curve_shots, "curve-shots"),
        curve_methods=parse_methods(args.curve_methods) if args.curve_methods else None,
    )
    summary = run_compare(cc, args.out)
    print((Path(args.out) / "compare.md").read_text(encoding="utf-8"))
    print(f"results in {args.out}: compare.json, compare.md, compare.png"
          + (", learning_curve.json, learning_curve.png" if cc.curve else "") + f" ({summary.get('seconds', 0)} s)")
    return 0

