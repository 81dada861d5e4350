"""A run directory: the resolved config (JSON), a metrics log (JSONL), and files beside them."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from .checkpoint import atomic_write_bytes
from .errors import UserError

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
DONE_FILE = "DONE"


def read_run_config(path: str | Path, kind: str, hint: str) -> dict[str, Any]:
    """The `config.json` of a run folder of `kind` (its "kind" entry, e.g. "diffusion-train"), whole.

    A folder without one, or with another kind, is a one-line `UserError` that ends in `hint`,
    the fix (e.g. "pass the folder `diffprompt diffusion train --out` wrote").
    """
    path = Path(path)
    try:
        config = json.loads((path / CONFIG_FILE).read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is not a run folder (no {CONFIG_FILE}); {hint}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"{path / CONFIG_FILE} cannot be read ({e}); {hint}") from None
    if not isinstance(config, dict) or config.get("kind") != kind:
        found = config.get("kind") if isinstance(config, dict) else None
        raise UserError(f"{path} holds a {found!r} run, not a {kind} run; {hint}")
    return config


def _jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _jsonable(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        try:
            return obj.item()
        except (ValueError, RuntimeError):
            pass
    return obj


class RunDir:
    """A folder for one run. Only the main process should write (pass `enabled=False` elsewhere)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.tracker = None  # a tracking.Tracker that gets every metrics line too (tracking.start_tracking)
        if enabled:
            self.path.mkdir(parents=True, exist_ok=True)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def save_config(self, config: Any) -> None:
        if self.enabled:
            data = json.dumps(_jsonable(config), indent=2, sort_keys=True).encode()
            atomic_write_bytes(self.path / CONFIG_FILE, data)

    def log_metrics(self, step: int | None = None, **metrics: Any) -> None:
        """Append one JSON line with a wall-clock time stamp."""
        if not self.enabled:
            return
        record = {"time": round(time.time(), 3)}
        if step is not None:
            record["step"] = int(step)
        record.update(_jsonable(metrics))
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.tracker is not None:
            self.tracker.log(record)

    def read_metrics(self) -> list[dict]:
        p = self.path / METRICS_FILE
        if not p.exists():
            return []
        return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]

    def save_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        if self.enabled:
            atomic_write_bytes(p, json.dumps(_jsonable(obj), indent=2).encode())
        return p

    def mark_done(self) -> None:
        """Mark the run finished (a report refuses runs still in progress)."""
        if self.enabled:
            atomic_write_bytes(self.path / DONE_FILE, time.strftime("%Y-%m-%dT%H:%M:%S").encode())

    def mark_not_done(self) -> None:
        """Take the mark away again (a resumed run is in progress)."""
        if self.enabled:
            (self.path / DONE_FILE).unlink(missing_ok=True)

    @property
    def done(self) -> bool:
        return (self.path / DONE_FILE).exists()
