"""`diffprompt diffusion export RUN_OR_CKPT --to diffusers OUT/`: a model trained here as a diffusers
pipeline folder that `diffusers.DDPMPipeline.from_pretrained(OUT)` loads.

    OUT/model_index.json                        DDPMPipeline = UNet2DModel + DDPMScheduler
    OUT/unet/config.json                        the UNet2DModel (diffusers_unet.diffusers_unet_config)
    OUT/unet/diffusion_pytorch_model.safetensors    the EMA weights under UNet2DModel's names
    OUT/scheduler/scheduler_config.json         the betas, prediction and variance (diffusers_scheduler)

model_index.json also holds, under "_diffprompt" (a private key diffusers skips), our recipe of the
process and the run it came from (data set, step, seed), so that loading the folder back here gives
the same `GaussianDiffusion` and the same defaults for `evaluate` and `visualize`. Writing needs
neither diffusers nor a network; a part of the U-Net UNet2DModel cannot express is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from ...checkpoint import atomic_write_bytes
from ...errors import UserError
from ..checkpoints import load_model
from .diffusers_import import NOTE, WEIGHTS
from .diffusers_scheduler import scheduler_config
from .diffusers_unet import diffusers_unet_config, to_diffusers_state_dict
from ..unet import UNet

MODEL_INDEX = {"_class_name": "DDPMPipeline", "scheduler": ["diffusers", "DDPMScheduler"],
               "unet": ["diffusers", "UNet2DModel"]}


def export_diffusers(source: str | Path, out: str | Path) -> Path:
    """Write the model of a run folder or checkpoint as a DDPMPipeline folder `out`; return `out`."""
    from safetensors.torch import save

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} exists and is not an empty folder; pass a new folder to export into")
    model, diffusion, meta = load_model(source)
    if not isinstance(model, UNet):
        raise UserError(f"{source} is a diffusers network that our U-Net cannot express: "
                        "it is already in diffusers' format")
    unet = diffusers_unet_config(model.config)
    weights = to_diffusers_state_dict(model.config, model.state_dict())
    note = {"diffusion": diffusion.to_dict(), "source": meta["path"],
            **{k: meta[k] for k in ("dataset", "step", "seed", "class_names") if meta.get(k) is not None}}
    _write_json(out / "unet" / "config.json", unet)
    blob = save({k: v.contiguous() for k, v in weights.items()}, metadata={"format": "pt"})
    atomic_write_bytes(out / "unet" / WEIGHTS, blob)
    _write_json(out / "scheduler" / "scheduler_config.json", scheduler_config(diffusion))
    _write_json(out / "model_index.json", {**MODEL_INDEX, NOTE: note})  # last: a folder that has it is complete
    return out


def _write_json(path: Path, data: dict) -> None:
    atomic_write_bytes(path, (json.dumps(data, indent=2) + "\n").encode())
