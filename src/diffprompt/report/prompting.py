"""Prompting runs on the page: the comparison grid (`compare.json`, `learning_curve.json`), a
single training run (`results.json`), a PET run (`pet.json`), and test examples as the model saw them.

`compare.json` is written by `prompting.grid`: per data set and row the test accuracy of every
seed with its mean and sample std, each row's mean over the data sets (`averages`), and the
majority-class accuracy of each test set. Fine-tuning is the baseline the prompting methods are
measured against. `pet.json` (prompting.pet) holds each pattern's dev and test accuracy, the
ensemble's and the distilled model's; a grid's PET cells are summed up over their seeds.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from .generic import flatten, rows_table
from .markup import fold, paragraph, table
from .numbers import DASH, count, fixed, is_number, percent, percent_pm, points, seconds
from .view import Headline, RunView, read_json

BASELINE = "finetune"
EXAMPLES_PER_GROUP = 4


def view(run: Path, cfg: dict) -> RunView:
    v = RunView()
    cmp = read_json(run, "compare.json")
    if has_rows(cmp, "table", ("dataset", "method", "mean", "std", "n")) and "shots" in cmp and "seeds" in cmp:
        v.headlines.append(compare_headline(cmp, cfg))
        v.parts.append(("Test accuracy by method", accuracy_table(cmp, cfg)))
        if len(cmp["seeds"]) > 1:
            v.parts.append(("Accuracy of every seed", seeds_table(cmp)))
        v.used.add("compare.json")
    curve = read_json(run, "learning_curve.json")
    if has_rows(curve, "curves", ("dataset", "method", "shots", "mean", "std", "n")):
        v.parts += [(f"Learning curve on {d.upper()}", html) for d, html in curve_tables(curve)]
        v.used.add("learning_curve.json")
    res = read_json(run, "results.json")
    if isinstance(res, dict) and is_number(res.get("test_accuracy")):
        v.headlines.append(results_headline(res))
        v.parts.append(("Results", results_table(res)))
        v.used.add("results.json")
    pet = read_json(run, "pet.json")
    if is_pet(pet):
        v.parts.append(("PET: each pattern, the ensemble, the distilled model", pet_table(pet)))
        v.used.add("pet.json")
    if isinstance(cmp, dict) and "shots" in cmp:
        grid_pet = pet_grid_table(run, cmp["shots"])
        if grid_pet:
            v.parts.append((f"PET at K = {cmp['shots']}: each pattern, the ensemble, the distilled model", grid_pet))
    words = read_json(run, "label_words.json")
    if isinstance(words, dict) and isinstance(words.get("chosen"), dict) and isinstance(words.get("candidates"), list):
        v.parts.append(("Label words chosen automatically", label_words_table(words)))
        v.used.add("label_words.json")
    examples = examples_html(run)
    if examples:
        v.parts.append(("Test examples as the model saw them", examples))
        v.used.add("examples.json")
    for name, caption in (("compare.png", compare_caption(cmp, cfg)), ("learning_curve.png", curve_caption(curve))):
        if (run / name).exists():
            v.figure_row((name, caption))
    return v


def has_rows(obj, key: str, fields: tuple[str, ...]) -> bool:
    """Whether obj[key] is a non-empty list of rows with these fields (else the file is shown as a plain table)."""
    rows = obj.get(key) if isinstance(obj, dict) else None
    return isinstance(rows, list) and bool(rows) and all(isinstance(r, dict) and all(f in r for f in fields)
                                                         for r in rows)


def _test_set(cfg: dict) -> str:
    limit = cfg.get("limit_test")
    return f"the first {limit} test examples of each data set" if limit else "each data set's full test split"


def _seeds(seeds: list) -> str:
    return f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))})"


# ---------------------------------------------------------------------------------------------
# compare.json


def _datasets(cmp: dict) -> list[str]:
    return list(dict.fromkeys(r["dataset"] for r in cmp["table"]))


def best_prompting(cmp: dict, dataset: str) -> dict | None:
    """The prompting method (anything but the fine-tuning baseline) with the highest mean accuracy."""
    rows = [r for r in cmp["table"] if r["dataset"] == dataset and r["method"] != BASELINE]
    return max(rows, key=lambda r: r["mean"]) if rows else None


def compare_headline(cmp: dict, cfg: dict) -> Headline:
    by = {(r["dataset"], r["method"]): r for r in cmp["table"]}
    majority = {m["dataset"]: m["accuracy"] for m in cmp.get("majority", [])}
    methods = list(dict.fromkeys(r["method"] for r in cmp["table"]))
    sentences = [f"{len(methods)} methods ({', '.join(methods)}) compared at K = {cmp['shots']} training examples "
                 f"per class with {_seeds(cmp['seeds'])}; test accuracy on {_test_set(cfg)}."]
    rows = []
    for d in _datasets(cmp):
        best, ft = best_prompting(cmp, d), by.get((d, BASELINE))
        if best is None:
            continue
        rows.append([d.upper(), best["method"], percent_pm(best["mean"], best["std"], best["n"]),
                     percent_pm(ft["mean"], ft["std"], ft["n"]) if ft else DASH, percent(majority.get(d))])
        sentences.append(dataset_sentence(d, best, ft, majority.get(d)))
    return Headline(title="Prompting: the methods compared", sentences=sentences,
                    columns=["Data set", "Best prompting method", "Accuracy (%)", "Fine-tuning (%)",
                             "Majority class (%)"], rows=rows, kinds="llnnn")


def dataset_sentence(dataset: str, best: dict, ft: dict | None, majority: float | None) -> str:
    against = []
    if ft:
        against.append(f"{points(best['mean'] - ft['mean'])} points against fine-tuning ({percent(ft['mean'])} %)")
    if is_number(majority):
        against.append(f"{points(best['mean'] - majority)} against the majority class ({percent(majority)} %)")
    tail = f": {' and '.join(against)}" if against else ""
    return (f"On {dataset.upper()} the best prompting method is {best['method']}, at "
            f"{percent(best['mean'])} %{tail}.")


def accuracy_table(cmp: dict, cfg: dict) -> str:
    datasets = _datasets(cmp)
    by = {(r["dataset"], r["method"]): r for r in cmp["table"]}
    methods = [m for m in cfg.get("rows", cfg.get("methods", [])) if any((d, m) in by for d in datasets)]
    methods += [r["method"] for r in cmp["table"] if r["method"] not in methods]
    methods = list(dict.fromkeys(methods))
    averages = {a["method"]: a["mean"] for a in cmp.get("averages", []) if isinstance(a, dict) and "method" in a}
    rows = [[m, *[percent_pm(by[(d, m)]["mean"], by[(d, m)]["std"], by[(d, m)]["n"]) if (d, m) in by else DASH
                  for d in datasets]] for m in methods]
    majority = {m["dataset"]: m["accuracy"] for m in cmp.get("majority", [])}
    rows.append(["majority class", *[percent(majority.get(d)) for d in datasets]])
    note = (f"Test accuracy in %, mean ± sample std over {_seeds(cmp['seeds'])}, K = {cmp['shots']} examples per "
            f"class; {_test_set(cfg)}. The last row always predicts the most frequent test label.")
    columns = ["Method", *[f"{d.upper()} (%)" for d in datasets]]
    if averages:  # each row's mean over the data sets, where it has all of them
        floor = statistics.fmean(majority[d] for d in datasets) if all(d in majority for d in datasets) else None
        rows = [r + [percent(averages.get(r[0]) if j < len(methods) else floor)] for j, r in enumerate(rows)]
        columns.append("Mean (%)")
        note += " Mean: the row's mean accuracy over the data sets (a dash where a data set is missing)."
    return table(columns, rows, row_classes=[""] * len(methods) + ["floor"]) + paragraph(note, "muted")


def seeds_table(cmp: dict) -> str:
    seeds = cmp["seeds"]
    rows = [[r["dataset"].upper(), r["method"], *[percent(a) for a in r["accuracies"]]]
            for r in cmp["table"] if len(r.get("accuracies", [])) == len(seeds)]
    return table(["Data set", "Method", *[f"Seed {s} (%)" for s in seeds]], rows, kinds="ll" + "n" * len(seeds))


def compare_caption(cmp: dict | None, cfg: dict) -> str:
    if not isinstance(cmp, dict) or "shots" not in cmp:
        return "Prompting methods compared"
    return (f"Test accuracy of each method, K = {cmp['shots']} examples per class, mean ± std over "
            f"{_seeds(cmp['seeds'])}; the dashed line is the majority class. Test set: {_test_set(cfg)}.")


# ---------------------------------------------------------------------------------------------
# learning_curve.json


def curve_tables(curve: dict) -> list[tuple[str, str]]:
    majority = {m["dataset"]: m["accuracy"] for m in curve.get("majority", [])}
    out = []
    for d in dict.fromkeys(c["dataset"] for c in curve["curves"]):
        lines = [c for c in curve["curves"] if c["dataset"] == d]
        shots = lines[0]["shots"]
        rows = [[c["method"], *[percent_pm(m, s, n) for m, s, n in zip(c["mean"], c["std"], c["n"])]] for c in lines]
        rows.append(["majority class", *[percent(majority.get(d))] * len(shots)])
        out.append((d, table(["Method", *[f"K = {k} (%)" for k in shots]], rows,
                             row_classes=[""] * len(lines) + ["floor"])))
    return out


def curve_caption(curve: dict | None) -> str:
    if not isinstance(curve, dict) or "seeds" not in curve:
        return "Accuracy against K (training examples per class)"
    return (f"Test accuracy against K, the training examples per class, mean ± std over {_seeds(curve['seeds'])}; "
            "dashed: the majority class.")


# ---------------------------------------------------------------------------------------------
# results.json of one training run


def results_headline(res: dict) -> Headline:
    text = (f"{res.get('method')} on {str(res.get('dataset')).upper()} with K = {res.get('shots')} examples per class "
            f"(seed {res.get('seed')}) reaches {percent(res['test_accuracy'])} % test accuracy "
            f"(macro-F1 {percent(res.get('test_macro_f1'))} %); the majority class scores "
            f"{percent(res.get('majority_accuracy'))} %.")
    return Headline(title="Prompting: one training run", sentences=[text])


def results_table(res: dict) -> str:
    columns = ["Test accuracy (%)", "Macro-F1 (%)", "Dev accuracy (%)", "Majority class (%)", "Train / dev / test",
               "Trainable parameters", "Training (s)"]
    split = " / ".join(count(res.get(k)) for k in ("num_train", "num_dev", "num_test"))
    row = [percent(res["test_accuracy"]), percent(res.get("test_macro_f1")), percent(res.get("dev_accuracy")),
           percent(res.get("majority_accuracy")), split, count(res.get("trainable_parameters")),
           seconds(res.get("train_seconds"))]
    note = f"Template {res['template']!r}." if res.get("template") else ""
    return table(columns, [row], kinds="n" * len(columns)) + (paragraph(note, "muted") if note else "")


def label_words_table(words: dict) -> str:
    """--verbalizer auto: the chosen word per class, then the candidates tried with their scores."""
    chosen = table(["Class", "Label word"], [[str(k), str(w)] for k, w in words["chosen"].items()], kinds="ll")
    rows = [["/".join(map(str, c.get("words", []))), fixed(c.get("score"), 2), percent(c.get("train_accuracy")),
             percent(c.get("dev_accuracy")) if "dev_accuracy" in c else DASH] for c in words["candidates"]]
    note = ("Candidates: one word per class, ranked by zero-shot accuracy on the K training examples; the summed "
            "score is the sum over classes of the summed log-probabilities at the mask. The chosen words had the best "
            "few-shot dev accuracy after a short training run (LM-BFF's automatic label words).")
    return chosen + table(["Candidate words", "Summed log-probability", "Train accuracy, zero-shot (%)",
                           "Dev accuracy (%)"], rows, kinds="lnnn") + paragraph(note, "muted")


# ---------------------------------------------------------------------------------------------
# pet.json: one PET run, and a grid's PET cells


def is_pet(pet) -> bool:
    return (isinstance(pet, dict) and isinstance(pet.get("patterns"), list) and bool(pet["patterns"])
            and all(isinstance(p, dict) for p in pet["patterns"])
            and isinstance(pet.get("ensemble"), dict) and isinstance(pet.get("distilled"), dict))


def pet_models(pet: dict) -> list[tuple[str, dict]]:
    """(name, its numbers) for each pattern model, the ensemble and the distilled model, in that order."""
    named = [(f"pattern {i + 1}: {p.get('template', '?')}", p) for i, p in enumerate(pet["patterns"])]
    return named + [("ensemble of the patterns", pet["ensemble"]), ("distilled classifier", pet["distilled"])]


def pet_table(pet: dict) -> str:
    rows = [[name, percent(m.get("test_accuracy")), percent(m.get("dev_accuracy")) if "dev_accuracy" in m else DASH,
             "/".join(map(str, m.get("label_words", []))) or DASH] for name, m in pet_models(pet)]
    unlabeled = pet.get("unlabeled") if isinstance(pet.get("unlabeled"), dict) else {}
    note = (f"The ensemble averages the pattern models' label probabilities; the distilled classifier learns it "
            f"(temperature {fixed(pet.get('temperature'), 1)}) on {count(unlabeled.get('n'))} unlabeled texts "
            f"({unlabeled.get('from', 'the train split')}).")
    return (table(["Model", "Test accuracy (%)", "Dev accuracy (%)", "Label words"], rows, kinds="lnnl")
            + paragraph(note, "muted"))


def pet_grid_table(run: Path, shots) -> str:
    """A grid's PET cells at K = `shots`: per data set, each model's test accuracy, mean ± std over the seeds."""
    rows = []
    for folder in sorted(run.glob(f"cells/*/k{shots}/pet")):
        pets = [pet for pet in (read_json(p.parent, "pet.json") for p in sorted(folder.glob("seed*/pet.json")))
                if is_pet(pet)]
        if not pets or len({len(pet["patterns"]) for pet in pets}) != 1:
            continue
        for j, (name, _) in enumerate(pet_models(pets[0])):
            accs = [pet_models(pet)[j][1].get("test_accuracy") for pet in pets]
            accs = [a for a in accs if is_number(a)]
            std = statistics.stdev(accs) if len(accs) > 1 else 0.0
            rows.append([folder.parts[-3].upper(), name, percent_pm(statistics.fmean(accs), std, len(accs))
                         if accs else DASH, str(len(accs))])
    if not rows:
        return ""
    note = "Test accuracy in %, mean ± sample std over the seeds of each data set's PET cells (their pet.json)."
    return table(["Data set", "Model", "Test accuracy (%)", "Seeds"], rows, kinds="llnn") + paragraph(note, "muted")


# ---------------------------------------------------------------------------------------------
# examples.json


def example_files(run: Path) -> list[tuple[str, Path]]:
    """examples.json of this run, or of each cell of a comparison grid (its first seed per method)."""
    if (run / "examples.json").exists():
        return [("", run / "examples.json")]
    found, seen = [], set()
    for p in sorted(run.glob("cells/*/*/*/*/examples.json")):
        dataset, shots, method = p.parts[-5], p.parts[-4], p.parts[-3]
        if (dataset, shots, method) not in seen:
            seen.add((dataset, shots, method))
            found.append((f"{method} on {dataset.upper()}, K = {shots[1:]} ({p.parts[-2].replace('seed', 'seed ')})", p))
    return found


def examples_html(run: Path) -> str:
    """Each group of examples folded under its title (one method of a grid); a single run's shown open."""
    blocks = []
    for title, path in example_files(run):
        rows = read_json(path.parent, path.name)
        if isinstance(rows, list) and rows:
            shown = rows[:EXAMPLES_PER_GROUP] if title else rows
            blocks.append(fold(f"{title or 'This run'}: {len(shown)} test examples", examples_table(shown),
                               open_=not title))
    return "\n".join(blocks)


def examples_table(rows: list) -> str:
    """Prompts with their label scores, prediction and gold label; the scores spread into a column each."""
    flat = [{k.removeprefix("scores."): v for k, v in flatten(r).items() if k != "score_kind"}
            if isinstance(r, dict) else {"example": r} for r in rows]
    kind = next((r.get("score_kind") for r in rows if isinstance(r, dict) and r.get("score_kind")), None)
    note = paragraph(f"Scores: {kind}.", "muted") if kind else ""
    return rows_table(flat) + note

