"""A diffusers DDPM as a model and a `GaussianDiffusion`: what `load_model` does with a diffusers
folder or a Hugging Face hub id.

Accepted: a pipeline folder (`model_index.json`, `unet/`, `scheduler/`, as `save_pretrained` and
`diffprompt diffusion export` write), a flat folder (`config.json` of a UNet2DModel beside
`scheduler_config.json`, as google/ddpm-cifar10-32 on the hub), a `unet/` folder alone, or a hub id
(`owner/name`, downloaded once into the hub cache; offline, only an id already cached loads). A
folder without a scheduler config gets DDPMScheduler's defaults, and the log says so.

The network: where its UNet2DModel config is one ours can express (every export of ours is), the
weights move into our `UNet` bit for bit; otherwise diffusers' network runs, wrapped as
`model(x_t, t) -> tensor`. The scheduler config becomes a `GaussianDiffusion` (diffusers_scheduler).
Weights load from safetensors only: a pickled `.bin` is refused, never opened.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...errors import UserError
from ...progress import log
from .diffusers_scheduler import diffusion_from_scheduler
from .diffusers_unet import from_diffusers_state_dict, unet_config_from_diffusers
from ..process import GaussianDiffusion
from ..unet import UNet

HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
NOTE = "_diffprompt"  # our key in model_index.json: the process's recipe and the run it came from
WEIGHTS = "diffusion_pytorch_model.safetensors"
HUB_FILES = ["*.json", f"*{WEIGHTS}"]


class DiffusersUNet(nn.Module):
    """A diffusers UNet2DModel called as our samplers call a network: model(x_t, t) -> tensor."""

    def __init__(self, unet: nn.Module):
        super().__init__()
        self.unet = unet

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        return self.unet(x, t.expand(x.shape[0]) if t.ndim == 0 else t).sample


def is_hub_id(path: str | Path) -> bool:
    """`owner/name` that is not a path here."""
    return bool(HUB_ID.fullmatch(str(path))) and not Path(path).exists() and Path(path).suffix != ".safetensors"


def diffusers_source(path: str | Path) -> bool:
    """Whether `path` names a diffusers folder or a hub id (rather than one of our runs or checkpoints)."""
    p = Path(path)
    return is_hub_id(path) or (p.is_dir() and _unet_folder(p) is not None)


def load_diffusers(source: str | Path,
                   device: str | torch.device = "cpu") -> tuple[nn.Module, GaussianDiffusion, dict[str, Any]]:
    """(model, diffusion, meta) of a diffusers folder or hub id.

    meta: kind "diffusers", path, folder, unet (our config, or in_channels, image_size, out_channels and
    the diffusers config), diffusion (`to_dict()`), scheduler (its full config), and for an export of
    ours the data set, step, seed and source it recorded.
    """
    _diffusers()  # a missing diffusers is said before any download
    folder = _download(str(source)) if is_hub_id(source) else Path(source)
    unet_dir = _unet_folder(folder)
    if unet_dir is None:
        raise UserError(f"{source} holds no UNet2DModel (no unet/config.json or config.json of a UNet2DModel)")
    root = _root(folder, unet_dir)
    note = _read_json(root / "model_index.json").get(NOTE, {}) if (root / "model_index.json").exists() else {}
    scheduler = _scheduler_config(root)
    diffusion = diffusion_from_scheduler(scheduler, note.get("diffusion"))
    model, unet_meta = _network(_load_unet(unet_dir), diffusion)
    run = {k: v for k, v in note.items() if k != "diffusion"}  # data set, step, seed, source of an export of ours
    meta = {"kind": "diffusers", "path": str(source), "folder": str(folder), "unet": unet_meta,
            "diffusion": diffusion.to_dict(), "scheduler": scheduler, **run}
    return model.to(device).eval(), diffusion.to(device), meta


def _unet_folder(folder: Path) -> Path | None:
    """The folder holding the UNet2DModel's config.json: `unet/` of a pipeline, or `folder` itself."""
    for candidate in (folder / "unet", folder):
        config = candidate / "config.json"
        if config.is_file() and _read_json(config).get("_class_name") == "UNet2DModel":
            return candidate
    return None


def _root(folder: Path, unet_dir: Path) -> Path:
    """Where the scheduler and model_index.json are: the pipeline folder (the parent of a `unet/` passed alone)."""
    alone = unet_dir == folder and not (folder / "scheduler_config.json").exists()
    if alone and (folder.parent / "model_index.json").exists():
        return folder.parent
    return folder


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path} is not a readable JSON file ({e})") from None


def _diffusers():
    try:
        import diffusers
    except ImportError:
        raise UserError("loading a diffusers model needs the diffusers package: pip install diffusers") from None
    return diffusers


def _download(repo_id: str) -> Path:
    """The hub repository's configs and safetensors weights, from the cache or the hub."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=HUB_FILES))
    except Exception as e:  # offline, no such repository, gated, HTTP errors: each its own type
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{repo_id} is not a local path, and the Hugging Face hub could not give it ({reason}); "
                        "pass a run folder, a checkpoint or a diffusers folder, or run once online to cache the id") from None


def _scheduler_config(root: Path) -> dict:
    """The DDPMScheduler config of the pipeline (every argument, diffusers filling the defaults)."""
    Scheduler = _diffusers().DDPMScheduler
    for path in (root / "scheduler" / "scheduler_config.json", root / "scheduler_config.json"):
        if path.is_file():
            try:
                return dict(Scheduler.from_config(_read_json(path)).config)
            except (NotImplementedError, ValueError, TypeError) as e:
                raise UserError(f"{path}: diffusers cannot build its scheduler ({e})") from None
    log(f"{root} has no scheduler config: using DDPMScheduler's defaults")
    return dict(Scheduler().config)


def _load_unet(unet_dir: Path) -> nn.Module:
    if not (unet_dir / WEIGHTS).is_file():
        raise UserError(f"{unet_dir} has no {WEIGHTS}; only safetensors weights load here "
                        "(a diffusion_pytorch_model.bin is a pickle, which is never opened)")
    try:
        return _diffusers().UNet2DModel.from_pretrained(unet_dir, use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"diffusers could not load the UNet2DModel in {unet_dir} ({e})") from None


def _network(unet: nn.Module, diffusion: GaussianDiffusion) -> tuple[nn.Module, dict[str, Any]]:
    """Our UNet with the same weights where ours expresses the network, else the wrapped UNet2DModel;
    and meta["unet"] (our config, or the sizes the commands need)."""
    config = dict(unet.config)
    size, channels = config["sample_size"], config["in_channels"]
    ours = unet_config_from_diffusers(config)
    classes = config.get("class_embed_type") or config.get("num_class_embeds")
    if not isinstance(size, int) or (classes and ours is None):  # a class embedding only in our layout
        raise UserError("only UNet2DModels with square images, unconditional or with our class embedding, load here "
                        f"(sample_size {size}, class_embed_type {config.get('class_embed_type')})")
    if config["out_channels"] != diffusion.model_output_channels(channels):
        raise UserError(f"the UNet2DModel returns {config['out_channels']} channels for {channels}-channel images, "
                        f"but the scheduler's variance {diffusion.variance.value} needs "
                        f"{diffusion.model_output_channels(channels)}")
    if ours is None:
        return DiffusersUNet(unet), {"in_channels": channels, "image_size": size, "out_channels": config["out_channels"],
                                     "diffusers": {k: v for k, v in config.items() if not k.startswith("_")}}
    model = UNet(ours)
    model.load_state_dict(from_diffusers_state_dict(ours, unet.state_dict()))
    return model, ours.to_dict()
