"""`diffprompt demo --quick` end to end: stages, resume after Ctrl-C, and its report in a real browser."""

import json
from pathlib import Path

import pytest

from browser import load_page, require_browser
from diffprompt import demo
from diffprompt.cli import main
from diffprompt.report.numbers import one_decimal, percent, plus_minus
from report_page import check_diffusion_headline, check_prompting_headline, headline_tables, kid_scale

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """Run the quick demo, interrupted by Ctrl-C in its last stage, then started again."""
    out = tmp_path_factory.mktemp("demo") / "run"
    mp = pytest.MonkeyPatch()
    mp.setenv("DIFFPROMPT_CACHE", str(out.parent / "cache"))
    real_stage = demo.stage_prompting

    def interrupted(cfg, path):
        raise KeyboardInterrupt

    mp.setattr(demo, "stage_prompting", interrupted)
    first = main(["demo", "--quick", "--out", str(out)])
    stamps = {p: p.stat().st_mtime_ns for p in (out / "ddpm" / "eval.json", out / "ddpm-train" / "model.safetensors")}
    mp.setattr(demo, "stage_prompting", real_stage)
    second = main(["demo", "--quick", "--out", str(out)])
    yield {"out": out, "codes": (first, second), "stamps": stamps}
    mp.undo()


def test_demo_resumes_after_ctrl_c_without_redoing_finished_stages(demo_run):
    out = demo_run["out"]
    assert demo_run["codes"] == (130, 0)
    for path, stamp in demo_run["stamps"].items():
        assert path.stat().st_mtime_ns == stamp, f"{path} was rewritten: a finished stage was redone"
    stages = json.loads((out / "stages.json").read_text())
    assert stages["ddpm"]["skipped_last_run"] and not stages["prompting"]["skipped_last_run"]


def test_demo_writes_every_stage(demo_run):
    out = demo_run["out"]
    for name in ("data/mnist5k.png", "ddpm-train/loss.png", "ddpm-train/model.safetensors", "ddpm/eval.json",
                 "ddpm/samples.png", "ddpm/real.png", "ddpm/forward.png", "ddpm/reverse.gif", "ddpm/pred_x0.png",
                 "prompting/compare.json", "prompting/compare.png", "report.html", "DONE"):
        assert (out / name).is_file(), name
    ev = json.loads((out / "ddpm" / "eval.json").read_text())
    assert ev["samplers"] and ev["nll"]["bpd"] > 0
    table = json.loads((out / "prompting" / "compare.json").read_text())["table"]
    assert {r["method"] for r in table} == {"zero-shot", "prompt-ft", "soft", "hybrid", "finetune"}
    for row in table:  # each mean is the mean of its cells' own test accuracies, recounted here
        cells = sorted((out / "prompting" / "cells").glob(f"{row['dataset']}/k*/{row['method']}/seed*/results.json"))
        accs = [json.loads(c.read_text())["test_accuracy"] for c in cells]
        assert cells and row["mean"] == pytest.approx(sum(accs) / len(accs), abs=1e-12), row["method"]


def test_demo_report_in_a_browser(demo_run):
    require_browser()
    out = demo_run["out"]
    page = load_page(out / "report.html", screenshot=ARTIFACTS / "demo-report.png")
    assert page["image_widths"] and all(w > 0 for w in page["image_widths"]), page["image_widths"]
    assert not [m for m in page["console"] if m[0] in ("error", "warning")], page["console"]
    assert not page["errors"]
    network = [u for u in page["requests"] if not u.startswith(("file:", "data:"))]
    assert not network, f"the report made network requests: {network}"
    assert not page["broken_words"], f"words split over two lines: {page['broken_words']}"
    # The report's own formats (FID to one decimal, KID ± std, shares and accuracies in %).
    cells = set(page["cells"])
    ev = json.loads((out / "ddpm" / "eval.json").read_text())
    scale = kid_scale(ev)
    for row in ev["samplers"]:
        for shown in (one_decimal(row["fid"]), plus_minus(row["kid"] * scale, row["kid_std"] * scale),
                      percent(row["confident_share"], 0)):
            assert shown in cells, (shown, row)
    assert plus_minus(ev["nll"]["bpd"], ev["nll"]["bpd_stderr"]) in cells
    compare = json.loads((out / "prompting" / "compare.json").read_text())
    for row in compare["table"]:
        assert percent(row["mean"]) in cells, row
    assert (ARTIFACTS / "demo-report.png").stat().st_size > 10_000


def test_demo_report_opens_with_headlines_that_equal_the_json(demo_run):
    out = demo_run["out"]
    page = (out / "report.html").read_text()
    assert page.index("What this run shows") < page.index('<section id="run-')
    diffusion, prompting = headline_tables(page)
    check_diffusion_headline(diffusion, json.loads((out / "ddpm" / "eval.json").read_text()))
    check_prompting_headline(prompting, json.loads((out / "prompting" / "compare.json").read_text()))
