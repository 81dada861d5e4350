"""Checkpoints: tensors in safetensors plus a JSON sidecar, both written atomically.

Write to a temporary file in the same folder, fsync it, then `os.replace` it over the
target. A crash at any point before the rename leaves the previous checkpoint intact.
Loading never unpickles anything, so state that is not a tensor goes into the sidecar:
`flatten_optimizer_state` splits an optimizer's state dict that way, and several parts share
one file under key prefixes (`with_prefix` / `strip_prefix`).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UserError

if TYPE_CHECKING:  # torch is imported where tensors are handled, so the CLI starts fast
    import torch


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write `data` to `path` atomically: temp file, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _before_rename(tmp, path)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _before_rename(tmp: str, final: Path) -> None:
    """Hook between writing and renaming; tests patch it to simulate a crash."""


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of a model's state dict (in sorted order)."""
    import torch  # only here: this module is imported when the CLI starts

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def sidecar_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name.removesuffix(".safetensors") + ".json")


def save_checkpoint(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> Path:
    """Save `tensors` to `path` (.safetensors) and `meta` to the JSON sidecar beside it.

    The sidecar is written first and names the tensor file's keys, so a reader can check that
    the two belong together.
    """
    from safetensors.torch import save

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    blob = save(flat, metadata={"format": "pt"})
    meta = dict(meta or {})
    atomic_write_bytes(path, blob)
    atomic_write_bytes(sidecar_path(path), json.dumps(meta, indent=2, sort_keys=True).encode())
    return path


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load tensors and sidecar metadata. Errors name the file and what to do."""
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder; pass the checkpoint file (*.safetensors) inside it")
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist; check the path or train a model first")
    try:
        tensors = load_file(str(path), device=str(device))
    except Exception as e:  # safetensors raises its own error types
        raise UserError(f"checkpoint {path} is not a readable safetensors file ({e}); it may be corrupt or from another tool") from None
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.exists():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"checkpoint sidecar {side} is not valid JSON ({e})") from None
    return tensors, meta


def with_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """{prefix + key: tensor}: one part of a checkpoint that holds several."""
    return {prefix + k: v for k, v in tensors.items()}


def strip_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The part of a checkpoint saved under `prefix`, with the prefix taken off its keys."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def flatten_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict -> tensors `optim.state.PID.NAME` + JSON for everything else."""
    import torch  # only here: this module is imported when the CLI starts

    tensors: dict[str, torch.Tensor] = {}
    other: dict[str, dict[str, Any]] = {}
    for pid, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.state.{pid}.{name}"] = value
            else:
                other.setdefault(str(pid), {})[name] = value
    groups = json.loads(json.dumps(sd["param_groups"], default=lambda o: list(o) if isinstance(o, tuple) else str(o)))
    return tensors, {"param_groups": groups, "other": other}


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """The state dict `flatten_optimizer_state` split (other tensors in `tensors` are ignored)."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in strip_prefix(tensors, "optim.state.").items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, extra in meta.get("other", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    groups = [dict(g) for g in meta["param_groups"]]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def check_state_dict_compatible(model_state: dict[str, torch.Tensor], loaded: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """Raise a `UserError` naming missing, unexpected and mis-shaped keys."""
    missing = sorted(set(model_state) - set(loaded))
    unexpected = sorted(set(loaded) - set(model_state))
    shapes = sorted(
        f"{k}: checkpoint {tuple(loaded[k].shape)} vs model {tuple(model_state[k].shape)}"
        for k in set(model_state) & set(loaded)
        if tuple(model_state[k].shape) != tuple(loaded[k].shape)
    )
    if missing or unexpected or shapes:
        parts = []
        if shapes:
            parts.append("shape mismatch: " + "; ".join(shapes[:8]) + (" ..." if len(shapes) > 8 else ""))
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else ""))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else ""))
        raise UserError(f"{what} was made with another model config ({'; '.join(parts)}); "
                        "use the config saved beside the checkpoint, or start a new run")
