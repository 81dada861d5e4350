"""The shared layer: seeding, device choice, run folders, atomic checkpoints, progress, CLI."""

import json
import random
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from diffprompt import checkpoint as ckpt
from diffprompt.cli import main
from diffprompt.device import choose_device
from diffprompt.errors import UserError
from diffprompt.progress import progress
from diffprompt.rundir import RunDir, read_run_config
from diffprompt.seeding import get_rng_state, make_generator, seed_everything, set_rng_state


def _draw():
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def test_seed_everything_makes_all_rngs_repeat():
    seed_everything(123)
    a = _draw()
    seed_everything(123)
    assert _draw() == a
    seed_everything(124)
    assert _draw() != a


def test_rng_state_roundtrip_resumes_the_same_stream():
    seed_everything(5)
    tensors, meta = get_rng_state()
    meta = json.loads(json.dumps(meta))  # what a checkpoint's JSON sidecar keeps
    first = _draw()
    set_rng_state(tensors, meta)
    assert _draw() == first


def test_explicit_generator_is_independent_of_global_state():
    g1, g2 = make_generator(7), make_generator(7)
    x = torch.randn(4, generator=g1)
    torch.manual_seed(999)  # global state must not matter
    assert torch.equal(x, torch.randn(4, generator=g2))


def test_device_choice():
    assert choose_device("cpu").type == "cpu"
    with pytest.raises(UserError, match="unknown device"):
        choose_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="--device cpu"):
            choose_device("cuda")


@pytest.mark.parametrize("cuda", [True, False])
@pytest.mark.parametrize("mps", [True, False])
def test_auto_device_is_cuda_exactly_when_cuda_is_available_then_mps_then_cpu(monkeypatch, cuda, mps):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: mps)
    expected = "cuda" if cuda else "mps" if mps else "cpu"
    assert choose_device("auto") == torch.device(expected)
    assert choose_device(None) == torch.device(expected)  # no choice given means auto
    if not cuda:
        with pytest.raises(UserError, match="no CUDA GPU is visible; use --device cpu"):
            choose_device("cuda:0")
    if not mps:
        with pytest.raises(UserError, match="MPS is not available; use --device cpu"):
            choose_device("mps")


def test_rundir_writes_config_and_metrics(tmp_path):
    run = RunDir(tmp_path / "run")
    run.save_config({"kind": "test", "lr": 1e-3, "path": tmp_path, "t": torch.tensor(2.5)})
    run.log_metrics(1, loss=0.5)
    run.log_metrics(2, loss=np.float32(0.25))
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg == {"kind": "test", "lr": 1e-3, "path": str(tmp_path), "t": 2.5}
    rows = run.read_metrics()
    assert [r["step"] for r in rows] == [1, 2] and rows[1]["loss"] == 0.25
    assert not run.done
    run.mark_done()
    assert run.done


def test_rundir_disabled_writes_nothing(tmp_path):
    run = RunDir(tmp_path / "rank1", enabled=False)
    run.save_config({"a": 1})
    run.log_metrics(1, loss=1.0)
    assert not (tmp_path / "rank1").exists()


def test_read_run_config_names_the_problem_and_the_fix(tmp_path):
    RunDir(tmp_path / "run").save_config({"kind": "diffusion-train", "steps": 3})
    assert read_run_config(tmp_path / "run", "diffusion-train", "pass a run") == {"kind": "diffusion-train", "steps": 3}
    with pytest.raises(UserError, match=r"is not a run folder \(no config.json\); pass a run$"):
        read_run_config(tmp_path, "diffusion-train", "pass a run")
    with pytest.raises(UserError, match="holds a 'diffusion-train' run, not a prompting-train run; pass a run"):
        read_run_config(tmp_path / "run", "prompting-train", "pass a run")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{not json")
    with pytest.raises(UserError, match="cannot be read"):
        read_run_config(tmp_path / "bad", "diffusion-train", "pass a run")


def test_checkpoint_roundtrip(tmp_path):
    t = {"w": torch.randn(3, 4), "step": torch.tensor(7)}
    p = ckpt.save_checkpoint(tmp_path / "c.safetensors", t, {"config": {"a": 1}})
    tensors, meta = ckpt.load_checkpoint(p)
    assert torch.equal(tensors["w"], t["w"]) and int(tensors["step"]) == 7
    assert meta == {"config": {"a": 1}}
    assert not list(tmp_path.glob("*.tmp"))


def test_crash_between_write_and_rename_keeps_old_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.safetensors"
    old = {"w": torch.zeros(5)}
    ckpt.save_checkpoint(path, old, {"step": 1})

    def crash(tmp, final):
        raise RuntimeError("simulated crash mid-write")

    monkeypatch.setattr(ckpt, "_before_rename", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ckpt.save_checkpoint(path, {"w": torch.ones(5)}, {"step": 2})
    monkeypatch.undo()
    tensors, meta = ckpt.load_checkpoint(path)
    assert torch.equal(tensors["w"], old["w"]) and meta == {"step": 1}
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def test_corrupt_or_missing_checkpoint_is_a_user_error(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file at all")
    with pytest.raises(UserError, match="not a readable safetensors"):
        ckpt.load_checkpoint(bad)
    with pytest.raises(UserError, match="does not exist"):
        ckpt.load_checkpoint(tmp_path / "nope.safetensors")


def test_state_dict_mismatch_names_the_keys():
    model = {"a": torch.zeros(2), "b": torch.zeros(3)}
    loaded = {"a": torch.zeros(4), "c": torch.zeros(1)}
    with pytest.raises(UserError) as e:
        ckpt.check_state_dict_compatible(model, loaded)
    msg = str(e.value)
    assert "a: checkpoint (4,) vs model (2,)" in msg and "missing keys: b" in msg and "unexpected keys: c" in msg
    ckpt.check_state_dict_compatible(model, dict(model))  # no error


def test_progress_is_quiet_off_a_terminal(capsys):
    assert list(progress(range(3))) == [0, 1, 2]
    assert capsys.readouterr().err == ""


COMMANDS = ("data", "diffusion", "prompting", "demo", "report")


def test_version_is_the_installed_package_version(capsys):
    import importlib.metadata
    import tomllib
    from pathlib import Path

    import diffprompt

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    version = pyproject["project"]["version"]
    assert diffprompt.__version__ == importlib.metadata.version("diffprompt") == version
    assert capsys.readouterr().out == f"diffprompt {version}\n"


def test_help_lists_every_command_and_an_unknown_group_command_exits_2(capsys):
    assert main([]) == 0
    listed = re.findall(r"^    (\w+)\b", capsys.readouterr().out.split("positional arguments:")[1], flags=re.M)
    assert tuple(listed) == COMMANDS
    assert main(["diffusion"]) == 2  # a group without its command: the group's help, exit 2
    assert "train" in capsys.readouterr().out


def test_console_script_help_does_not_import_torch():
    """`python -m diffprompt --help` lists the commands without importing torch (it stays fast)."""
    code = ("import runpy, sys; sys.argv = ['diffprompt', '--help']\n"
            "try:\n    runpy.run_module('diffprompt', run_name='__main__')\n"
            "except SystemExit as e:\n    print('exit', e.code)\n"
            "print('heavy', sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert all(f"    {c}" in out.stdout for c in COMMANDS)
    assert out.stdout.splitlines()[-2:] == ["exit 0", "heavy []"]
