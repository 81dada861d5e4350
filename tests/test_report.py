"""`diffprompt report`: self-contained HTML from run folders, with numbers read from their JSON."""

import json
import re
import statistics

import numpy as np
import pytest
from PIL import Image

from diffprompt.cli import main
from diffprompt.report import format_value, json_tables, render_report
from diffprompt.report.numbers import DASH
from diffprompt.rundir import RunDir
from report_page import check_diffusion_headline, check_prompting_headline, headline_tables, numbers, shows, shows_pm, tables


def make_run(path, kind="diffusion-train", done=True):
    run = RunDir(path)
    run.save_config({"kind": kind, "lr": 0.0002, "steps": 10})
    for s in range(1, 6):
        run.log_metrics(s, loss=1.0 / s)
    rng = np.random.default_rng(0)
    for name in ("samples.png", "real.png", "forward.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path / name)
    frames = [Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)) for _ in range(3)]
    frames[0].save(path / "reverse.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    run.save_json("eval.json", {"ddpm": {"fid": 12.3456, "kid": 0.00123}, "ddim:50": {"fid": 13.5, "kid": 0.002}})
    run.save_json("examples.json", [{"prompt": "great movie . It was [MASK] .", "great": -1.2, "prediction": "positive"}])
    if done:
        run.mark_done()
    return path


def test_report_inlines_everything_and_shows_json_numbers(tmp_path):
    run = make_run(tmp_path / "run")
    out = render_report([run])
    page = out.read_text()
    assert out == run / "report.html"
    # Self-contained: no external resources at all (links to the page's own sections are fine).
    assert not re.search(r'(src|href)="(?!data:|#)', page)
    assert page.count("data:image/png;base64,") >= 4 and "data:image/gif;base64," in page
    for v in (12.3456, 0.00123, 13.5, 0.002):
        assert f">{format_value(v)}<" in page
    assert "It was [MASK]" in page and "Resolved config" in page


def test_json_tables_shapes():
    [(title, rows)] = json_tables({"ddpm": {"fid": 1.0}, "ddim": {"fid": 2.0}})
    assert rows == [{"": "ddpm", "fid": 1.0}, {"": "ddim", "fid": 2.0}]
    tables = json_tables({"accuracy": 0.8, "per_seed": [{"seed": 13, "acc": 0.7}]})
    assert ("", [{"name": "accuracy", "value": 0.8}]) in tables and ("per_seed", [{"seed": 13, "acc": 0.7}]) in tables


def test_format_value():
    assert format_value(0.123456) == "0.1235" and format_value(3) == "3" and format_value(1e-5) == "1.000e-05"


def test_report_nested_runs(tmp_path):
    parent = RunDir(tmp_path / "demo")
    parent.save_config({"kind": "demo"})
    make_run(tmp_path / "demo" / "diffusion")
    make_run(tmp_path / "demo" / "prompting", kind="prompting-compare")
    parent.mark_done()
    page = render_report([tmp_path / "demo"]).read_text()
    assert "prompting-compare" in page and "diffusion-train" in page


def test_report_refuses_non_runs_and_runs_in_progress(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a diffprompt run" in capsys.readouterr().err
    make_run(tmp_path / "busy", done=False)
    assert main(["report", str(tmp_path / "busy")]) == 2
    assert "still in progress" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "busy"), "--allow-incomplete"]) == 0


def test_report_cli_out_shows_the_runs_json_values(tmp_path, capsys):
    run = make_run(tmp_path / "r")
    assert main(["report", str(run), "--out", str(tmp_path / "x.html")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "x.html") and not (run / "report.html").exists()
    page = (tmp_path / "x.html").read_text()
    for sampler, scores in json.loads((run / "eval.json").read_text()).items():
        assert f">{sampler}<" in page
        for v in scores.values():
            assert f">{format_value(v)}<" in page, v
    for key, value in json.loads((run / "config.json").read_text()).items():
        assert f"&quot;{key}&quot;: {json.dumps(value).replace(chr(34), '&quot;')}" in page, key
    assert "Incomplete run" not in page


def test_report_allow_incomplete_renders_the_run_and_says_it_is_incomplete(tmp_path):
    run = make_run(tmp_path / "busy", done=False)
    assert main(["report", str(run), "--allow-incomplete"]) == 0
    page = (run / "report.html").read_text()
    assert "Incomplete run: no DONE marker" in page
    assert f">{format_value(12.3456)}<" in page and "It was [MASK]" in page


def make_eval_run(path, kid_unit=1e-5):
    """A diffusion run as `diffusion evaluate` writes it: three samplers, the floor, bits/dim.

    KID values are multiples of `kid_unit`: small as evaluate writes them, or large as older
    evaluations on unnormalised features did (kid_unit=1).
    """
    run = RunDir(path)
    run.save_config({"kind": "diffusion-demo", "dataset": "mnist5k", "diffusion": {"timesteps": 1000, "schedule": "linear"},
                     "samples": {"sampler": "DDIM-50", "n": 64, "seed": 7}, "real": {"n": 64, "split": "test"},
                     "chain": {"sampler": "DDPM-1000", "n": 8}, "model_step": 12000})
    rng = np.random.default_rng(0)
    for name in ("samples.png", "real.png", "reverse.png"):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(path / name)

    def quality(fid, kid, kid_std, share, precision, recall):
        return {"fid": fid, "fid_biased": True, "kid": kid * kid_unit, "kid_std": kid_std * kid_unit,
                "precision": precision, "recall": recall, "confident_share": share,
                "class_histogram": [26, 25, 25, 26, 25, 26, 25, 26, 25, 27], "n": 256}

    samplers = [("DDPM-1000", 1000, 9.613, quality(61.37, 140.27, 21.9, 0.6875, 0.713, 0.652)),
                ("DDIM-10", 10, 0.0791, quality(112.79, 361.5993, 53.72, 0.33, 0.412, 0.598)),
                ("DDIM-50", 50, 0.3772, quality(68.47, 164.7351, 30.08, 0.40, 0.655, 0.634))]
    run.save_json("eval.json", {
        "kind": "diffusion-eval", "dataset": "mnist5k", "step": 12000, "n_samples": 256,
        "reference": "test split (1000 images)",
        "classifier": {"test_accuracy": 0.965, "feature_dim": 128, "confidence_threshold": 0.9,
                       "test_confident_share": 0.91},
        "class_names": [str(i) for i in range(10)],
        "real_floor": {**quality(12.27, 8.31, 4.02, 0.906, 0.781, 0.776), "what": "256 train images vs the test split"},
        "samplers": [{"sampler": name, "spec": name.lower(), "steps": steps, "eta": 0.0, "spacing": "linspace", **q,
                      "seconds_per_image": s, "model_calls_per_image": steps} for name, steps, s, q in samplers],
        "nll": {"bpd": 2.1093, "bpd_stderr": 0.0481, "prior_bpd": 2.7e-5, "decoder_bpd": 1.07, "images": 8,
                "split": "test", "timesteps": 1000, "exact": True, "seconds": 41.2},
        "device": "cpu", "machine": {"cpu_model": "test CPU", "cpu_count": 2, "torch": "2", "torch_threads": 2}, "seed": 0})
    run.mark_done()
    return path


def make_compare_run(path):
    """A prompting grid as `prompting compare` writes it: two data sets, three seeds."""
    run = RunDir(path)
    run.save_config({"kind": "prompting-compare", "datasets": ["mr", "trec"], "shots": 16, "seeds": [13, 21, 42],
                     "methods": ["zero-shot", "prompt-ft", "finetune"], "limit_test": None})
    accs = {("mr", "zero-shot"): [0.593, 0.593, 0.593], ("mr", "prompt-ft"): [0.612, 0.655, 0.634],
            ("mr", "finetune"): [0.532, 0.571, 0.549], ("trec", "zero-shot"): [0.318, 0.318, 0.318],
            ("trec", "prompt-ft"): [0.702, 0.655, 0.688], ("trec", "finetune"): [0.744, 0.701, 0.766]}
    table = [{"dataset": d, "method": m, "mean": statistics.fmean(a), "std": statistics.stdev(a), "n": 3,
              "accuracies": a, "train_seconds": 3.2} for (d, m), a in accs.items()]
    run.save_json("compare.json", {"kind": "prompting-compare-results", "shots": 16, "seeds": [13, 21, 42],
                                   "metric": "test accuracy", "table": table,
                                   "majority": [{"dataset": "mr", "accuracy": 0.5}, {"dataset": "trec", "accuracy": 0.188}]})
    run.mark_done()
    return path


@pytest.mark.parametrize("kid_unit", [1.0, 1e-5])
def test_headline_table_numbers_equal_the_eval_json(tmp_path, kid_unit):
    run = make_eval_run(tmp_path / "ddpm", kid_unit)
    page = render_report([run]).read_text()
    [table] = headline_tables(page)
    check_diffusion_headline(table, json.loads((run / "eval.json").read_text()))
    assert ("KID × 10³" in table[0]) == (kid_unit < 1)
    # The page opens with the findings: the headline comes before any run's section.
    assert page.index("What this run shows") < page.index('<section id="run-')


def test_headline_table_numbers_equal_the_compare_json(tmp_path):
    run = make_compare_run(tmp_path / "compare")
    page = render_report([run]).read_text()
    [table] = headline_tables(page)
    check_prompting_headline(table, json.loads((run / "compare.json").read_text()))
    # TREC: fine-tuning beats every prompting method, and the sentence says so with a negative margin.
    assert "On TREC the best prompting method is prompt-ft" in page and "-5.5 points against fine-tuning" in page


def test_report_reads_like_a_results_page(tmp_path):
    demo = RunDir(tmp_path / "demo")
    demo.save_config({"kind": "demo", "sections": ["ddpm", "compare"], "description": "a demo"})
    make_eval_run(tmp_path / "demo" / "ddpm")
    make_compare_run(tmp_path / "demo" / "compare")
    demo.mark_done()
    page = render_report([tmp_path / "demo"]).read_text()
    # Human names with units; rounded numbers; the floor beside the samplers it bounds.
    for text in ("FID (n = 256)", "KID × 10³", "s / image", "Speed-up vs DDPM-1000", "Bits/dim (bound)",
                 ">2.109 ± 0.048<", ">3.62 ± 0.54<", ">0.41<", ">121.5×<", ">59.3 ± 0.0<",
                 "Real images: 256 train images vs the test split", "At n = 256 FID is biased upwards"):
        assert text in page, text
    assert "kid_std" not in page.split('<section id="appendix">')[0]  # raw keys only in the raw JSON
    assert not re.search(r"<h\d>[^<]*\.json", page)  # no file names as headings
    # Captions say how each picture was made (read from the run's config).
    assert "Samples: 64 images drawn with DDIM-50 by the model at training step 12000, seed 7" in page
    assert "Real images: 64 test images of mnist5k, a stratified sample" in page and "Reverse chain with DDPM-1000: 8 samples" in page
    assert "against the network calls each image cost" in page  # the FID-against-calls plot
    # Contents first, configs and raw JSON collapsed at the end.
    assert page.index("<nav>") < page.index('id="summary"') < page.index('id="appendix"')
    assert page.count("<details><summary>Raw JSON") == 2 and "Resolved config: demo/ddpm" in page


def make_conditional_eval_run(path, fid_w2: float, confident_w2: float):
    """`make_eval_run` turned into the demo's conditional stage: DDIM-50 at w = 0 and 2, each with its
    conditional accuracy, and a grid of 10 per class with DDIM-50 at w = 2."""
    make_eval_run(path, kid_unit=1e-5)
    ev = json.loads((path / "eval.json").read_text())
    ddim = next(s for s in ev["samplers"] if s["sampler"] == "DDIM-50")
    ev["samplers"] = [{**ddim, "sampler": "DDIM-50-w0", "guidance": 0.0, "conditional_accuracy": 0.8125},
                      {**ddim, "sampler": "DDIM-50-w2", "guidance": 2.0, "fid": fid_w2,
                       "confident_share": confident_w2, "conditional_accuracy": 0.96875}]
    ev["conditional"] = {"num_classes": 10, "guidance": [0.0, 2.0], "requested": "evenly"}
    RunDir(path).save_json("eval.json", ev)
    cfg = json.loads((path / "config.json").read_text())
    rows = {"per_class": 10, "classes": 10, "class_names": [str(i) for i in range(10)]}
    cfg.update(checkpoint="/x/ddpm-tiny-mnist5k-cond.safetensors", eval_guidance=[0.0, 2.0],
               samples={"sampler": "DDIM-50", "spec": "ddim:50", "n": 100, "seed": 7, "guidance": 2.0, **rows},
               real={"n": 100, "split": "test", **rows})
    RunDir(path).save_config(cfg)
    return path


@pytest.mark.parametrize("fid_w2, confident_w2, verdict", [(30.0, 0.88, "close"), (40.0, 0.88, "still short"),
                                                           (30.0, 0.85, "still short")])
def test_conditional_report_reads_the_eval_json(tmp_path, fid_w2, confident_w2, verdict):
    """The quality table gains w and conditional accuracy (floor: the classifier's test accuracy); one
    sentence compares the grid's samples with real data (floor FID 12.27, real confident share 0.91)."""
    run = make_conditional_eval_run(tmp_path / "ddpm", fid_w2, confident_w2)
    ev = json.loads((run / "eval.json").read_text())
    page = render_report([run]).read_text()
    [quality] = [t for t in tables(page) if "Conditional accuracy (%)" in t[0]]
    header, *rows = quality
    assert header[:3] == ["Sampler", "Steps", "w"] and len(rows) == 3
    acc = header.index("Conditional accuracy (%)")
    for s, row in zip(ev["samplers"], rows):
        assert row[0] == s["sampler"] and numbers(row[2]) == [s["guidance"]] and shows(row[acc], s["conditional_accuracy"], 100)
    assert rows[-1][2] == "—" and shows(rows[-1][acc], ev["classifier"]["test_accuracy"], 100)
    ratio = f"{fid_w2 / 12.27:.1f}×"
    assert (f"Against real data the DDIM-50 samples at guidance w = 2 are {verdict}: the classifier is confident on "
            f"{100 * confident_w2:.0f} % of them against 91 % of real test images, gives 97 % of them the class asked "
            f"for (real test images: 96 %), and their FID is {ratio} the real-data floor ({fid_w2:.1f} against 12.3).") in page
    assert ("Samples: 10 of each class, a row per class (row = class 0..9), drawn with DDIM-50 and classifier-free "
            "guidance w = 2 by the model at training step 12000 of ddpm-tiny-mnist5k-cond.safetensors, seed 7") in page
    assert "Real images: the first 10 test images of each class of mnist5k, a row per class (row = class 0..9)" in page


PET_ACCS = {"patterns": [0.612, 0.587, 0.655, 0.604], "ensemble": 0.671, "distilled": 0.648}


def write_pet(run: RunDir, shift: float = 0.0) -> dict:
    """pet.json as prompting.pet writes it, its test accuracies PET_ACCS + shift."""
    pet = {"patterns": [{"template": f"{{x}} pattern {i}", "label_words": ["terrible", "great"], "dev_accuracy": 0.5 + i / 40,
                         "test_accuracy": a + shift} for i, a in enumerate(PET_ACCS["patterns"])],
           "ensemble": {"test_accuracy": PET_ACCS["ensemble"] + shift},
           "distilled": {"test_accuracy": PET_ACCS["distilled"] + shift, "dev_accuracy": 0.625, "best_step": 80, "steps": 160},
           "unlabeled": {"n": 2000, "from": "train split, without labels"}, "temperature": 2.0}
    run.save_json("pet.json", pet)
    return pet


def test_a_pet_run_shows_each_pattern_the_ensemble_and_the_distilled_model(tmp_path):
    run = RunDir(tmp_path / "pet")
    run.save_config({"kind": "prompting-train", "method": "pet", "dataset": "mr"})
    run.save_json("results.json", {"method": "pet", "dataset": "mr", "shots": 16, "seed": 13, "test_accuracy": 0.648})
    pet = write_pet(run)
    run.mark_done()
    page = render_report([tmp_path / "pet"]).read_text()
    [found] = [t for t in tables(page) if t[0][:3] == ["Model", "Test accuracy (%)", "Dev accuracy (%)"]]
    models = [(f"pattern {i + 1}: {p['template']}", p["test_accuracy"]) for i, p in enumerate(pet["patterns"])]
    models += [("ensemble of the patterns", pet["ensemble"]["test_accuracy"]),
               ("distilled classifier", pet["distilled"]["test_accuracy"])]
    assert [row[0] for row in found[1:]] == [name for name, _ in models]
    for row, (_, acc) in zip(found[1:], models):
        assert shows(row[1], acc, 100), (row, acc)
    assert all(shows(row[2], p["dev_accuracy"], 100) for row, p in zip(found[1:], pet["patterns"]))
    assert shows(found[-1][2], 0.625, 100) and found[-2][2] == DASH


def test_compare_shows_the_new_rows_the_mean_column_and_the_pet_cells(tmp_path):
    run = RunDir(make_compare_run(tmp_path / "compare"))
    cmp = json.loads((run.path / "compare.json").read_text())
    cmp["table"] += [{"dataset": d, "method": m, "mean": a, "std": 0.01, "n": 2, "accuracies": [a - 0.01, a + 0.01]}
                     for d, m, a in (("mr", "prompt-ft+demos-similar", 0.66), ("trec", "prompt-ft+demos-similar", 0.71),
                                     ("mr", "pet-distilled", 0.63))]
    cmp["averages"] = [{"method": m, "mean": statistics.fmean(r["mean"] for r in cmp["table"] if r["method"] == m)}
                       for m in ("zero-shot", "prompt-ft", "finetune", "prompt-ft+demos-similar")]
    run.save_json("compare.json", cmp)
    for seed, shift in ((13, 0.0), (21, 0.02)):
        write_pet(RunDir(tmp_path / "compare" / "cells" / "mr" / "k16" / "pet" / f"seed{seed}"), shift)
    page = render_report([tmp_path / "compare"]).read_text()
    [acc] = [t for t in tables(page) if t[0] == ["Method", "MR (%)", "TREC (%)", "Mean (%)"]]
    means = {a["method"]: a["mean"] for a in cmp["averages"]}
    by_row = {row[0]: row for row in acc[1:]}
    for m, mean in means.items():
        assert shows(by_row[m][3], mean, 100), (m, by_row[m])
    assert by_row["pet-distilled"][2] == by_row["pet-distilled"][3] == DASH  # TREC missing: no mean
    assert shows(by_row["majority class"][3], (0.5 + 0.188) / 2, 100)
    [grid] = [t for t in tables(page) if t[0] == ["Data set", "Model", "Test accuracy (%)", "Seeds"]]
    assert len(grid) == 1 + 4 + 2 and all(row[0] == "MR" and row[3] == "2" for row in grid[1:])
    for row, acc in zip(grid[1:], PET_ACCS["patterns"] + [PET_ACCS["ensemble"], PET_ACCS["distilled"]]):
        assert shows_pm(row[2], acc + 0.01, statistics.stdev([acc, acc + 0.02]), 100), (row, acc)
