"""Experiment tracking: a run's metrics lines also go to TensorBoard or Weights & Biases.

`metrics.jsonl` stays the record of every run. With `log_with="tensorboard"` (or `"wandb"`) each
line it gets goes through Accelerate's tracker API as well: every number and string of the line
under its own name, at the line's `step` (the line's `time` is left out: a tracker stamps its
own). The run's `config.json` becomes the run's hyper-parameters; pictures (the diffusion samples)
become images.

TensorBoard writes its event files to `RUN_DIR/tensorboard/` (`tensorboard --logdir runs/`);
W&B logs to the project "diffprompt", the run named after its folder. Neither package is a
dependency: naming one that is not installed is a `UserError` with its pip install line.

Torch-free at import time: the command-line modules import `TRACKERS` from here.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from .errors import UserError
from .rundir import CONFIG_FILE

NO_TRACKER = "none"
TRACKERS = ("tensorboard", "wandb")
# init_trackers' project_name: the subfolder TensorBoard writes to, the project W&B logs to
PROJECT = {"tensorboard": "tensorboard", "wandb": "diffprompt"}
NOT_LOGGED = ("step", "time")  # fields of a metrics line that are not values


def check_tracker(name: str) -> str:
    """`name` when it is "none" or an installed tracker; otherwise a `UserError` saying what to do."""
    if name == NO_TRACKER:
        return name
    if name not in TRACKERS:
        raise UserError(f"unknown tracker {name!r}; use --log-with {' or '.join(TRACKERS)} (or none: metrics.jsonl only)")
    if importlib.util.find_spec(name) is None:
        raise UserError(f"--log-with {name} needs the {name} package, which is not installed; run `pip install {name}`, "
                        "or leave --log-with out (metrics.jsonl is written either way)")
    return name


def hparams(config: dict, prefix: str = "") -> dict:
    """A config as flat {key: bool, int, float, str or None}, what TensorBoard's hyper-parameters take:
    nested tables get dotted keys, lists become JSON text."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(hparams(value, f"{prefix}{key}."))
        elif value is None or isinstance(value, (bool, int, float, str)):
            out[f"{prefix}{key}"] = value
        else:
            out[f"{prefix}{key}"] = json.dumps(value)
    return out


def logged_values(record: dict) -> dict:
    """The values of one metrics line that a tracker logs: its numbers and strings but step and time."""
    return {k: v for k, v in record.items()
            if k not in NOT_LOGGED and isinstance(v, (int, float, str)) and not isinstance(v, bool)}


class Tracker:
    """The trackers of one run folder, started through an Accelerator made for them.

    It is made after the run's own Accelerator and so shares its process state; several runs in
    one process (the prompting grid) each get their own.
    """

    def __init__(self, kind: str, folder: Path, config: dict):
        from accelerate import Accelerator

        self.accelerator = Accelerator(log_with=kind, project_dir=str(folder))
        self.accelerator.init_trackers(PROJECT[kind], config=hparams(config),
                                       init_kwargs={"wandb": {"name": folder.name, "dir": str(folder)}})

    def log(self, record: dict) -> None:
        """One metrics line."""
        self.accelerator.log(logged_values(record), step=record.get("step"))

    def log_image(self, name: str, path: Path, step: int) -> None:
        """A picture of the run (a PNG file) under `name`."""
        import numpy as np
        from PIL import Image

        with Image.open(path) as im:
            pixels = np.asarray(im.convert("RGB"))
        for tracker in self.accelerator.trackers:
            if tracker.name == "tensorboard":
                tracker.log_images({name: pixels[None]}, step=step, dataformats="NHWC")
            elif tracker.name == "wandb":
                tracker.log_images({name: [pixels]}, step=step)

    def end(self) -> None:
        """Flush and close the trackers. (Not `Accelerator.end_training`: it would also end the
        process group that the run's own Accelerator goes on using.)"""
        for tracker in self.accelerator.trackers:
            tracker.finish()
        self.accelerator.trackers.clear()


def start_tracking(run, kind: str) -> None:
    """Send every metrics line of the run folder `run` (a `RunDir`, after its config.json is
    written) to a tracker of `kind` too; nothing for "none", no folder, or a process that does not write."""
    if run is None or not run.enabled or check_tracker(kind) == NO_TRACKER:
        return
    config = json.loads((run / CONFIG_FILE).read_text(encoding="utf-8"))
    run.tracker = Tracker(kind, run.path, config)


def end_tracking(run) -> None:
    """Close the run folder's tracker, if it has one."""
    if run is not None and run.tracker is not None:
        run.tracker.end()
        run.tracker = None
