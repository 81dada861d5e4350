"""The checkpoints of a diffusion training run: writing them, resuming from them, sampling from them.

* `last.safetensors` (+ `.json`): everything needed to resume, under key prefixes: `model.`,
  `ema.`, `optim.state.` (the optimizer's tensors; its other state in the sidecar), `data.`
  (the data-order generator and permutation) and `rng.` (torch's RNG states; Python's and
  numpy's in the sidecar); the sidecar adds the step, the configs and the diffusion's spec;
* `ckpt-STEP.safetensors` (+ `.json`): the same, kept every `ckpt_every` steps;
* `model.safetensors` (+ `.json`): the EMA weights alone with the U-Net config and the diffusion's
  spec: what `diffprompt diffusion sample/evaluate/visualize` load (`load_model`).

A class-conditional model's U-Net config holds its number of classes (`num_classes`), and every
sidecar its `class_names`; a checkpoint without them is unconditional.

The sidecar's "diffusion" is `GaussianDiffusion.to_dict()`, every argument of the process (schedule,
prediction, variance, loss type and weighting). A shorter entry (the schedule's name, `timesteps`,
prediction and variance) takes the loss settings from the training config beside it, else the
defaults (`diffusion_from_spec`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..checkpoint import (
    check_state_dict_compatible,
    flatten_optimizer_state,
    load_checkpoint,
    save_checkpoint,
    sidecar_path,
    strip_prefix,
    unflatten_optimizer_state,
    with_prefix,
)
from ..errors import UserError
from ..rundir import read_run_config
from ..seeding import get_rng_state
from .config import TrainConfig, renamed_keys
from .interop.diffusers_import import diffusers_source, is_hub_id, load_diffusers
from .ema import EMA, unwrap
from .process import GaussianDiffusion
from .unet import UNet, UNetConfig

LAST = "last.safetensors"
MODEL = "model.safetensors"
TRAIN_RUN = "diffusion-train"  # the "kind" of a training run's config.json


def save_training_checkpoint(out: Path, step: int, model, ema: EMA, optimizer, order, cfg: TrainConfig,
                             diffusion: GaussianDiffusion, keep_copy: bool = False,
                             class_names: list[str] | None = None) -> None:
    """Write last.safetensors (and ckpt-STEP.safetensors with `keep_copy`) and model.safetensors;
    `class_names` go into the sidecars of a conditional model."""
    bare = unwrap(model)
    opt_tensors, opt_meta = flatten_optimizer_state(getattr(optimizer, "optimizer", optimizer).state_dict())
    data_tensors, data_meta = order.state()
    rng_tensors, rng_meta = get_rng_state(cuda=next(bare.parameters()).is_cuda)
    tensors = {**with_prefix("model.", bare.state_dict()), **with_prefix("ema.", ema.state_dict()), **opt_tensors,
               **with_prefix("data.", data_tensors), **with_prefix("rng.", rng_tensors)}
    described = {"step": step, "config": cfg.to_dict(), "unet": bare.config.to_dict(), "diffusion": diffusion.to_dict(),
                 **({"class_names": list(class_names)} if class_names is not None else {})}
    meta = {"kind": "diffusion-train-checkpoint", **described, "ema_updates": ema.num_updates,
            "optim": opt_meta, "data": data_meta, "rng": rng_meta}
    if keep_copy:
        save_checkpoint(out / f"ckpt-{step:07d}.safetensors", tensors, meta)
    save_checkpoint(out / LAST, tensors, meta)
    save_checkpoint(out / MODEL, ema.state_dict(), {"kind": "diffusion-model", **described, "weights": "ema",
                                                    "dataset": cfg.dataset, "seed": cfg.seed})


def restore_training_checkpoint(path: Path, model, ema: EMA, optimizer,
                                order) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load a training checkpoint into the model, EMA, optimizer and data order (all before
    `accelerator.prepare`); return its RNG tensors and its sidecar, for the caller to restore."""
    tensors, meta = load_checkpoint(path)
    weights = strip_prefix(tensors, "model.")
    check_state_dict_compatible(model.state_dict(), weights, what=f"checkpoint {path}")
    model.load_state_dict(weights)
    ema.load_state_dict(strip_prefix(tensors, "ema."), meta["ema_updates"])
    optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optim"]))
    order.load(strip_prefix(tensors, "data."), meta["data"])
    return strip_prefix(tensors, "rng."), meta


def resumable_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The saved `TrainConfig` fields of a training run folder that can be resumed (for `--resume`)."""
    hint = "pass the folder a `diffprompt diffusion train --out` wrote"
    if not (Path(run_dir) / LAST).exists():
        raise UserError(f"{run_dir} is not a resumable training run (no {LAST}); {hint}")
    data = read_run_config(run_dir, TRAIN_RUN, hint)
    return {k: v for k, v in data.items() if k not in ("kind", "derived")}


def saved_unet_config(run_dir: Path, cfg: TrainConfig) -> UNetConfig | None:
    """The U-Net config in a run's last checkpoint, unless `cfg` changes the model settings.

    A resumed run keeps the architecture its checkpoint holds even if the preset has changed
    since; an explicit change of the model settings is built anew (and refused on loading).
    """
    saved = resumable_run_config(run_dir)
    side = sidecar_path(run_dir / LAST)
    settings = (saved.get("unet_preset"), saved.get("model"), saved.get("conditional", False))
    if settings != (cfg.unet_preset, cfg.model, cfg.conditional) or not side.exists():
        return None
    return UNetConfig.from_dict(json.loads(side.read_text())["unet"])


def diffusion_from_spec(spec: dict[str, Any], config: dict[str, Any] | None = None) -> GaussianDiffusion:
    """The `GaussianDiffusion` of a sidecar's "diffusion" entry.

    An old entry (schedule as a name, with "timesteps") lacks the loss settings: they come from
    the training `config` beside it when there is one, else the defaults.
    """
    spec = dict(spec)
    if isinstance(spec.get("schedule"), str):
        spec["schedule"] = {"name": spec["schedule"], "num_timesteps": spec.pop("timesteps")}
        loss_type = renamed_keys(config or {}).get("loss_type")
        if loss_type is not None:
            spec.setdefault("loss_type", loss_type)
    return GaussianDiffusion.from_dict(spec)


def output_folder(path: str | Path) -> Path:
    """Where a command writes by default: the run folder, the checkpoint's folder, or for a hub id
    runs/OWNER--NAME (the id names no folder here)."""
    if Path(path).is_dir():
        return Path(path)
    return Path("runs") / str(path).replace("/", "--") if is_hub_id(path) else Path(path).parent


def _checkpoint_in(path: Path) -> Path:
    if not path.is_dir():
        return path
    for name in (MODEL, LAST):
        if (path / name).exists():
            return path / name
    raise UserError(f"{path} holds no {MODEL} or {LAST}; pass a training run folder, a .safetensors checkpoint or a diffusers folder")


def load_model(path: str | Path, device: str | torch.device = "cpu",
               weights: str = "ema") -> tuple[torch.nn.Module, GaussianDiffusion, dict[str, Any]]:
    """(EMA model, diffusion, sidecar + "path") from a run folder, `model.safetensors`, or a training checkpoint;
    or (model, diffusion, meta) from a diffusers folder or hub id (`interop.diffusers_import.load_diffusers`).
    `weights="raw"`: a training checkpoint's optimised weights instead of their EMA (to measure what the EMA buys).

    meta["unet"] holds at least in_channels and image_size; meta.get("dataset") and meta.get("step") may be None.
    """
    if weights not in ("ema", "raw"):
        raise UserError(f"weights must be ema or raw, got {weights!r}")
    if diffusers_source(path):
        if weights == "raw":
            raise UserError(f"{path} is a diffusers model: it holds one set of weights; drop --weights raw")
        return load_diffusers(path, device)
    path = _checkpoint_in(Path(path))
    tensors, meta = load_checkpoint(path)
    if "unet" not in meta or "diffusion" not in meta:
        raise UserError(f"{path} has no U-Net/diffusion config in its JSON sidecar ({sidecar_path(path).name}); "
                        "pass a checkpoint written by `diffprompt diffusion train`")
    if weights == "raw":
        if not any(k.startswith("model.") for k in tensors):
            raise UserError(f"{path} holds only the EMA weights; for the raw ones pass a training checkpoint "
                            "(last.safetensors or ckpt-STEP.safetensors in the run folder)")
        tensors = strip_prefix(tensors, "model.")
    elif any(k.startswith("ema.") for k in tensors):
        tensors = strip_prefix(tensors, "ema.")
    model = UNet(UNetConfig.from_dict(meta["unet"]))
    check_state_dict_compatible(model.state_dict(), tensors, what=f"checkpoint {path}")
    model.load_state_dict(tensors)
    model.to(device).eval()
    diffusion = diffusion_from_spec(meta["diffusion"], meta.get("config")).to(device)
    dataset = meta.get("dataset") or meta.get("config", {}).get("dataset")  # a training checkpoint names it in its config
    return model, diffusion, dict(meta, path=str(path), dataset=dataset)
