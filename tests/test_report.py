"""`diffprompt report`: self-contained HTML from run folders, with numbers read from their JSON."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from diffprompt.cli import main
from diffprompt.report import format_value, json_tables, render_report
from diffprompt.rundir import RunDir


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
    # Self-contained: no external resources at all.
    assert not re.search(r'(src|href)="(?!data:)', page)
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


def test_report_cli_out(tmp_path):
    run = make_run(tmp_path / "r")
    assert main(["report", str(run), "--out", str(tmp_path / "x.html")]) == 0
    assert (tmp_path / "x.html").stat().st_size > 1000
