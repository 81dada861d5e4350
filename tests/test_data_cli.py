"""`diffprompt data list/show/stats` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from diffprompt.cli import main
from diffprompt.data import IMAGE_SETS, TEXT_SETS


def test_data_list_table(capsys):
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "KIND", "INSTALLED", "SIZE", "SPLITS", "CLASSES", "INSTALL"]
    for name in list(IMAGE_SETS) + list(TEXT_SETS):
        row = next(line for line in lines if line.split()[:1] == [name])
        info = (IMAGE_SETS | TEXT_SETS)[name]
        assert row.split()[2] == ("yes" if info.installed() else "no")
        if not info.installed():
            assert row.rstrip().endswith(info.install)
    mnist = next(line for line in lines if line.startswith("mnist5k"))
    assert "5000 x 28x28x1" in mnist and "4000/1000" in mnist
    mr = next(line for line in lines if line.startswith("mr "))
    assert "12751" in mr and "9751/1000/2000" in mr and "negative, positive" in mr


def test_data_list_json(capsys):
    assert main(["data", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {r["name"]: r for r in rows}
    assert set(by) == set(IMAGE_SETS) | set(TEXT_SETS)
    assert by["trec"]["classes"] == ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"] and by["trec"]["installed"]
    assert by["mnist5k"]["splits"] == {"train": 4000, "test": 1000}


def test_data_show_images(tmp_path, capsys):
    out = tmp_path / "prev" / "mnist.png"
    assert main(["data", "show", "mnist5k", "--out", str(out), "--n", "16", "--split", "test"]) == 0
    assert "wrote" in capsys.readouterr().out
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] >= 300


def test_data_show_text_png_and_markdown(tmp_path):
    png = tmp_path / "cr.png"
    assert main(["data", "show", "cr", "--out", str(png), "--per-class", "2"]) == 0
    with Image.open(png) as im:
        assert im.format == "PNG"
    md = tmp_path / "trec.md"
    assert main(["data", "show", "trec", "--out", str(md), "--split", "dev", "--per-class", "1"]) == 0
    body = md.read_text()
    assert "trec [dev]" in body and body.count("\n| ") == 8  # header, separator, 6 classes


def test_data_show_folder_and_csv(tmp_path, capsys):
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8 + i, 8), (i * 40, 0, 0)).save(tmp_path / "imgs" / cls / f"{i}.png")
    (tmp_path / "imgs" / "a" / "junk.txt").write_text("x")
    # Mixed sizes: refused without --size, fine with it; the skipped file is reported as a warning.
    assert main(["data", "show", str(tmp_path / "imgs"), "--out", str(tmp_path / "f.png")]) == 2
    err = capsys.readouterr().err
    assert "diffprompt: error: images in" in err and "--size" in err and "Traceback" not in err
    assert main(["data", "show", str(tmp_path / "imgs"), "--out", str(tmp_path / "f.png"), "--size", "8"]) == 0
    err = capsys.readouterr().err
    assert "diffprompt: warning: skipped 1 file(s)" in err
    assert (tmp_path / "f.png").is_file()
    csv = tmp_path / "t.csv"
    csv.write_text("text,label\n" + "".join(f"line {i},{i % 2}\n" for i in range(20)))
    assert main(["data", "show", str(csv), "--out", str(tmp_path / "t.md")]) == 0
    assert "| 0 | line 0 |" in (tmp_path / "t.md").read_text()


def test_data_show_errors_exit_2(tmp_path, capsys):
    assert main(["data", "show", "nosuchset", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "unknown data set 'nosuchset'; known: mnist5k" in err and "trec" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("sentence,y\na,1\n")
    assert main(["data", "show", str(bad), "--out", str(tmp_path / "x.md")]) == 2
    assert "columns found: sentence, y" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["data", "show", str(tmp_path / "empty"), "--out", str(tmp_path / "x.png")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["data", "show", "mnist5k", "--out", str(tmp_path / "x.png"), "--split", "dev"]) == 2
    assert "train and test splits only" in capsys.readouterr().err


def test_data_stats_markdown(capsys):
    assert main(["data", "stats", "cr", "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| negative | 851 | 122 | 243 | 1216 |" in out
    assert "| **total** | 2054 | 294 | 587 | 2935 |" in out


def test_console_script_bad_name_exit_2_without_traceback(tmp_path):
    exe = Path(sys.executable).parent / "diffprompt"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "diffprompt"]
    r = subprocess.run(cmd + ["data", "show", "nosuchset", "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "Traceback" not in r.stderr and "unknown data set 'nosuchset'" in r.stderr
