"""Training a DDPM: AdamW with warm-up, gradient clipping, EMA, exact resume, Accelerate.

    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train
    run = train(resolve_config(steps=200), out="runs/ddpm")

The same code runs on one CPU, on a GPU with mixed precision, or in several processes under
`accelerate launch` / `torchrun` (gloo on CPUs, NCCL on GPUs). The global batch is split across
processes; every process draws the same data order from one seeded generator and takes its own
slice, and DDP averages the gradients, so the replicas stay identical. Only the main process
writes files.

A run folder holds:

* `config.json` — the resolved config (`"kind": "diffusion-train"`);
* `metrics.jsonl` — loss, learning rate, grad norm, images/s every `log_every` steps;
* `last.safetensors` (+ `.json`) — everything needed to resume: model, EMA, optimizer state
  (flattened into tensors, the rest in JSON), step, RNG states of Python, numpy, torch and the
  data-order generator, the current data permutation and position;
* `ckpt-STEP.safetensors` — the same, every `ckpt_every` steps;
* `model.safetensors` (+ `.json`) — the EMA weights alone with the U-Net and diffusion config,
  what `diffprompt diffusion sample/evaluate/visualize` load;
* `loss.png`, `samples.png` (EMA weights), `real.png`, `train_summary.json`, and `DONE`.

`resume` continues bit for bit on CPU: N steps, then N more after a resume, give the same
weights as 2N steps in one go.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import check_state_dict_compatible, load_checkpoint, save_checkpoint, sidecar_path
from ..device import choose_device
from ..errors import UserError
from ..progress import log, progress
from ..rundir import RunDir
from .config import TrainConfig
from .ema import EMA, unwrap

LAST = "last.safetensors"
MODEL = "model.safetensors"
DIFFUSION_KEYS = ("schedule", "timesteps", "prediction", "variance")


# ---------------------------------------------------------------------------------------------
# Building blocks shared with sampling and evaluation


def images_to_tensor(images) -> torch.Tensor:
    """uint8 [N, H, W, C] -> float32 [N, C, H, W] scaled to [-1, 1] (x / 127.5 - 1)."""
    x = torch.as_tensor(np.asarray(images))
    if x.ndim == 3:
        x = x[..., None]
    if x.dtype != torch.uint8:
        raise UserError(f"images must be 8-bit (uint8), got {x.dtype}; scale them to 0..255 first")
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def random_subset(images, n: int, seed: int = 0):
    """`n` images drawn without replacement (seeded): splits are stored class by class, so the
    first `n` would all be one class."""
    idx = np.random.default_rng(seed).permutation(len(images))[: min(n, len(images))]
    return images[np.sort(idx)]


def tensor_to_images(x: torch.Tensor) -> np.ndarray:
    """float [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] (rounded, clipped)."""
    x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def unet_config_for(cfg: TrainConfig, channels: int, size: int):
    """The `UNetConfig` of a run: preset, data shape, output channels for the variance, overrides."""
    from .unet import UNetConfig

    overrides = dict(cfg.model)
    overrides.setdefault("in_channels", channels)
    overrides.setdefault("image_size", size)
    if "out_channels" not in overrides:
        overrides["out_channels"] = channels * (2 if cfg.variance == "learned_range" else 1)
    return UNetConfig.preset(cfg.unet_preset, **overrides)


def build_diffusion(spec: dict[str, Any]):
    """`GaussianDiffusion` from a dict with schedule, timesteps, prediction, variance."""
    from .process import GaussianDiffusion  # noqa: I001
    from .schedule import NoiseSchedule

    schedule = NoiseSchedule.from_name(spec["schedule"], int(spec["timesteps"]))
    return GaussianDiffusion(schedule, prediction=spec["prediction"], variance=spec["variance"])


def load_image_data(name: str):
    from ..data import load_images

    return load_images(name)


# ---------------------------------------------------------------------------------------------
# Checkpoint (de)serialisation


def flatten_optimizer_state(sd: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state dict -> tensors `optim.state.PID.NAME` + JSON for everything else."""
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
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim.state."):
            pid, name = key[len("optim.state."):].split(".", 1)
            state.setdefault(int(pid), {})[name] = value
    for pid, extra in meta.get("other", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def python_rng_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def python_rng_from_json(data) -> tuple:
    return (data[0], tuple(data[1]), data[2])


def numpy_rng_to_json(state) -> list:
    name, keys, pos, has_gauss, cached = state
    return [name, np.asarray(keys).tolist(), int(pos), int(has_gauss), float(cached)]


def numpy_rng_from_json(data) -> tuple:
    return (data[0], np.asarray(data[1], dtype=np.uint32), data[2], data[3], data[4])


# ---------------------------------------------------------------------------------------------
# Data order: one seeded generator, the same on every process


class BatchOrder:
    """Epochs of random permutations of N indices, drawn from a seeded CPU generator.

    Every process draws the same global batches; `take(rank, world)` keeps its slice. The state
    (generator, permutation, position) goes into the checkpoint.
    """

    def __init__(self, n: int, batch_size: int, seed: int, hflip: bool):
        if n < batch_size:
            raise UserError(f"the data set has {n} training images, fewer than the batch size {batch_size}; "
                            "lower --batch-size")
        self.n, self.batch_size, self.hflip = n, batch_size, hflip
        self.gen = torch.Generator().manual_seed(int(seed))
        self.perm = torch.randperm(n, generator=self.gen)
        self.pos = 0
        self.epoch = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(self.n, generator=self.gen)
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        flip = (torch.rand(self.batch_size, generator=self.gen) < 0.5) if self.hflip else torch.zeros(self.batch_size, dtype=torch.bool)
        return idx, flip

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        return ({"data.gen": self.gen.get_state(), "data.perm": self.perm.clone()},
                {"pos": self.pos, "epoch": self.epoch})

    def load(self, tensors: dict[str, torch.Tensor], meta: dict[str, int]) -> None:
        self.gen.set_state(tensors["data.gen"].to(torch.uint8).cpu())
        self.perm = tensors["data.perm"].long().cpu()
        self.pos, self.epoch = int(meta["pos"]), int(meta["epoch"])


# ---------------------------------------------------------------------------------------------
# The run


def _accelerator(cfg: TrainConfig):
    from accelerate import Accelerator

    device = choose_device(cfg.device)
    if device.type == "cpu" and cfg.mixed_precision == "fp16":
        raise UserError("mixed precision fp16 needs a GPU; on a CPU use --mixed-precision bf16 or no")
    return Accelerator(cpu=device.type == "cpu", mixed_precision=cfg.mixed_precision)


def _default_out(cfg: TrainConfig) -> Path:
    name = Path(cfg.dataset).name if Path(cfg.dataset).exists() else cfg.dataset
    return Path("runs") / f"ddpm-{name}-{time.strftime('%Y%m%d-%H%M%S')}"


def read_run_config(run_dir: str | Path) -> dict[str, Any]:
    """The saved `TrainConfig` fields of a training run folder (for `--resume`)."""
    run_dir = Path(run_dir)
    cfg_file = run_dir / "config.json"
    if not cfg_file.exists() or not (run_dir / LAST).exists():
        raise UserError(f"{run_dir} is not a resumable training run (it needs config.json and {LAST}); "
                        "pass the folder a `diffprompt diffusion train --out` wrote")
    data = json.loads(cfg_file.read_text())
    if data.get("kind") != "diffusion-train":
        raise UserError(f"{run_dir} holds a {data.get('kind')!r} run, not a diffusion training run")
    return {k: v for k, v in data.items() if k not in ("kind", "derived")}


class NonFiniteLoss(UserError):
    """The loss became NaN or inf."""


def train(cfg: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None, data=None) -> Path:
    """Train (or resume) a DDPM as configured; return the run folder.

    `data` may pass an already loaded `ImageDataset`; otherwise `cfg.dataset` is loaded.
    """
    from .unet import UNet

    cfg.validate()
    accelerator = _accelerator(cfg)
    rank, world = accelerator.process_index, accelerator.num_processes
    main = accelerator.is_main_process
    if cfg.batch_size % world:
        raise UserError(f"batch size {cfg.batch_size} does not split evenly over {world} processes; "
                        f"use a multiple of {world}")
    if resume is not None:
        out = Path(resume)
    out = Path(out) if out is not None else _default_out(cfg)
    if resume is None and (out / LAST).exists():
        raise UserError(f"{out} already holds a training run; continue it with --resume {out}, or pass another --out")
    run = RunDir(out, enabled=main)
    device = accelerator.device

    # Data: the train split, in memory, scaled to [-1, 1].
    if data is None:
        data = load_image_data(cfg.dataset)
    train_split = data.split("train")
    x_all = images_to_tensor(train_split.images)
    n, channels, size = x_all.shape[0], x_all.shape[1], x_all.shape[2]
    if x_all.shape[2] != x_all.shape[3]:
        raise UserError(f"images are {x_all.shape[2]}x{x_all.shape[3]}; the U-Net takes square images, resize them")

    # Model, EMA, optimizer: identical on every process (same seed), before any noise is drawn.
    unet_cfg = unet_config_for(cfg, channels, size)
    if resume is not None:
        # The run's architecture is what its checkpoint holds, even if the preset has changed since;
        # only an explicit change of the model settings is checked against it (and refused).
        saved = read_run_config(out)
        side = sidecar_path(out / LAST)
        if (saved.get("unet_preset"), saved.get("model")) == (cfg.unet_preset, cfg.model) and side.exists():
            from .unet import UNetConfig

            unet_cfg = UNetConfig.from_dict(json.loads(side.read_text())["unet"])
    torch.manual_seed(cfg.seed)
    model = UNet(unet_cfg).to(device)
    diffusion = build_diffusion({k: getattr(cfg, k) for k in DIFFUSION_KEYS}).to(device)
    ema = EMA(model, decay=cfg.ema_decay, warmup=cfg.ema_warmup)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    order = BatchOrder(n, cfg.batch_size, cfg.seed, cfg.hflip)
    step = 0

    derived = {"unet": unet_cfg.to_dict(), "parameters": model.num_parameters(), "image_shape": [channels, size, size],
               "train_images": n, "world_size": world, "mixed_precision": cfg.mixed_precision}
    if resume is not None:
        tensors, meta = load_checkpoint(out / LAST)
        model_sd = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        check_state_dict_compatible(model.state_dict(), model_sd, what=f"checkpoint {out / LAST}")
        model.load_state_dict(model_sd)
        ema.load_state_dict({k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}, meta["ema_updates"])
        optimizer.load_state_dict(unflatten_optimizer_state(tensors, meta["optim"]))
        order.load(tensors, meta["data"])
        step = int(meta["step"])
        if step >= cfg.steps:
            raise UserError(f"run {out} is already at step {step}; to train longer pass --steps larger than {step}")
        if main and (out / "DONE").exists():
            (out / "DONE").unlink()
        random.setstate(python_rng_from_json(meta["rng"]["python"]))
        np.random.set_state(numpy_rng_from_json(meta["rng"]["numpy"]))
        if rank == 0:
            torch.set_rng_state(tensors["rng.torch"].to(torch.uint8).cpu())
            if device.type == "cuda" and "rng.cuda" in tensors:
                torch.cuda.set_rng_state(tensors["rng.cuda"].to(torch.uint8).cpu())
        else:
            torch.manual_seed(cfg.seed * 1_000_003 + step * 1009 + rank)
        log(f"resuming {out} at step {step} of {cfg.steps}")
    else:
        # Different noise and timesteps on every process; the weights are already equal.
        torch.manual_seed(cfg.seed + rank)
        random.seed(cfg.seed + rank)
        np.random.seed((cfg.seed + rank) % 2**32)
    run.save_config({"kind": "diffusion-train", **cfg.to_dict(), "derived": derived})

    model, optimizer = accelerator.prepare(model, optimizer)
    x_all = x_all.to(device) if device.type != "cpu" else x_all
    per_rank = cfg.batch_size // world

    def save(tag_step: int, scheduled: bool) -> None:
        if main:
            _save_checkpoint(out, tag_step, model, ema, optimizer, order, cfg, unet_cfg, scheduled)
        accelerator.wait_for_everyone()

    if main:
        log(f"training a {derived['parameters'] / 1e6:.2f} M-parameter U-Net on {n} images of {channels}x{size}x{size} "
            f"({cfg.dataset}) for {cfg.steps} steps, batch {cfg.batch_size}, on {device} x {world} -> {out}")
    t_start = time.perf_counter()
    window_losses: list[float] = []
    window_t, window_steps = time.perf_counter(), 0
    grad_norm = float("nan")
    bar_kw = {} if main else {"disable": True}
    bar = progress(range(step, cfg.steps), total=cfg.steps, initial=step, desc="train", **bar_kw)
    stopped_early = False
    model.train()
    for _ in bar:
        idx, flip = order.next()
        idx, flip = idx[rank::world], flip[rank::world]
        x0 = x_all[idx.to(x_all.device)]
        if cfg.hflip and bool(flip.any()):
            x0 = torch.where(flip.to(x0.device)[:, None, None, None], x0.flip(3), x0)
        x0 = x0.to(device, non_blocking=True)
        lr = cfg.lr * min(1.0, (step + 1) / cfg.warmup_steps) if cfg.warmup_steps else cfg.lr
        for group in optimizer.param_groups:
            group["lr"] = lr
        with accelerator.autocast():
            terms = diffusion.training_loss(model, x0, kind=cfg.loss)
        loss = terms["loss"].float().mean()
        all_losses = accelerator.gather(loss.detach()[None])
        if not bool(torch.isfinite(all_losses).all()):
            raise NonFiniteLoss(
                f"the loss became {float(all_losses[~torch.isfinite(all_losses)][0])} at step {step + 1}; "
                f"the last good checkpoint is kept in {out}; lower the learning rate (now {cfg.lr:g}, e.g. "
                f"--set lr={cfg.lr / 4:g}), keep gradient clipping on, and check that the data is finite")
        accelerator.backward(loss)
        if cfg.grad_clip > 0:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_decay = ema.update(model)
        step += 1
        loss_value = float(all_losses.mean())
        window_losses.append(loss_value)
        window_steps += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            dt = time.perf_counter() - window_t
            ips = window_steps * cfg.batch_size / max(dt, 1e-9)
            run.log_metrics(step, loss=float(np.mean(window_losses)), lr=lr, grad_norm=grad_norm,
                            images_per_s=ips, ema_decay=ema_decay, epoch=order.epoch)
            bar.set_postfix(loss=f"{np.mean(window_losses):.4f}", img_s=f"{ips:.0f}")
            window_losses, window_t, window_steps = [], time.perf_counter(), 0
        if cfg.ckpt_every and step % cfg.ckpt_every == 0 and step < cfg.steps:
            save(step, scheduled=True)
        if cfg.time_budget_s > 0:
            over = torch.tensor([time.perf_counter() - t_start > cfg.time_budget_s], device=device)
            if bool(accelerator.gather(over).any()):
                stopped_early = step < cfg.steps
                break
    bar.close()
    train_seconds = time.perf_counter() - t_start
    if window_steps:
        dt = time.perf_counter() - window_t
        run.log_metrics(step, loss=float(np.mean(window_losses)), lr=lr, grad_norm=grad_norm,
                        images_per_s=window_steps * cfg.batch_size / max(dt, 1e-9), ema_decay=ema.current_decay(),
                        epoch=order.epoch)
    save(step, scheduled=bool(cfg.ckpt_every))

    # Every replica hashes its weights; they must agree (DDP keeps them identical).
    hashes = [weights_sha256(unwrap(model))]
    if world > 1:
        from accelerate.utils import gather_object

        hashes = gather_object(hashes)
        if len(set(hashes)) != 1 and main:
            log(f"warning: the {world} replicas ended with different weights: {hashes}")
    derived["replica_weight_sha256"] = hashes
    if main:
        _finish(run, cfg, ema.model, diffusion, train_split, data, step, train_seconds, stopped_early, derived, device)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return out


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over the names and bytes of a model's state dict (in sorted order)."""
    import hashlib

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _save_checkpoint(out: Path, step: int, model, ema: EMA, optimizer, order: BatchOrder, cfg: TrainConfig,
                     unet_cfg, scheduled: bool) -> None:
    bare = unwrap(model)
    tensors: dict[str, torch.Tensor] = {f"model.{k}": v for k, v in bare.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
    opt_tensors, opt_meta = flatten_optimizer_state(opt.state_dict())
    tensors.update(opt_tensors)
    data_tensors, data_meta = order.state()
    tensors.update(data_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and next(bare.parameters()).is_cuda:
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    spec = {k: getattr(cfg, k) for k in DIFFUSION_KEYS}
    meta = {
        "kind": "diffusion-train-checkpoint", "step": step, "ema_updates": ema.num_updates,
        "config": cfg.to_dict(), "unet": unet_cfg.to_dict(), "diffusion": spec,
        "optim": opt_meta, "data": data_meta,
        "rng": {"python": python_rng_to_json(random.getstate()), "numpy": numpy_rng_to_json(np.random.get_state())},
    }
    if scheduled:
        save_checkpoint(out / f"ckpt-{step:07d}.safetensors", tensors, meta)
    save_checkpoint(out / LAST, tensors, meta)
    model_meta = {"kind": "diffusion-model", "step": step, "weights": "ema", "unet": unet_cfg.to_dict(),
                  "diffusion": spec, "dataset": cfg.dataset, "seed": cfg.seed, "config": cfg.to_dict()}
    save_checkpoint(out / MODEL, dict(ema.state_dict()), model_meta)


def _finish(run: RunDir, cfg: TrainConfig, ema_model, diffusion, train_split, data, step: int, seconds: float,
            stopped_early: bool, derived: dict, device) -> None:
    from ..seeding import make_generator
    from .visualize import plot_loss, save_grid

    metrics = run.read_metrics()
    if metrics:
        plot_loss(metrics, run / "loss.png")
    try:
        real = data.split("test").images
    except Exception:  # a data set without a test split shows train images
        real = train_split.images
    save_grid(random_subset(real, cfg.sample_n, cfg.seed), run / "real.png")
    c, s = derived["image_shape"][0], derived["image_shape"][1]
    t0 = time.perf_counter()
    with torch.no_grad():
        samples = diffusion.sample(ema_model, (cfg.sample_n, c, s, s), sampler=cfg.sample_sampler,
                                   steps=cfg.sample_steps if cfg.sample_sampler == "ddim" else None, eta=0.0,
                                   generator=make_generator(cfg.seed, device), device=device)
    sample_seconds = time.perf_counter() - t0
    save_grid(samples, run / "samples.png")
    last = metrics[-1] if metrics else {}
    run.save_json("train_summary.json", {
        "steps": step, "stopped_early_by_time_budget": stopped_early, "train_seconds": round(seconds, 2),
        "images_seen": step * cfg.batch_size, "images_per_s": step * cfg.batch_size / max(seconds, 1e-9),
        "final_loss": last.get("loss"), "parameters": derived["parameters"], "device": str(device),
        "world_size": derived["world_size"], "replica_weight_sha256": derived["replica_weight_sha256"],
        "samples": f"{cfg.sample_n} x {cfg.sample_sampler}"
        + (f"-{cfg.sample_steps}" if cfg.sample_sampler == "ddim" else f"-{cfg.timesteps}"),
        "sample_seconds_per_image": sample_seconds / cfg.sample_n,
    })
    run.mark_done()
    log(f"done: {step} steps in {seconds:.0f} s; EMA weights in {run / MODEL}, samples in {run / 'samples.png'}")


# ---------------------------------------------------------------------------------------------
# Loading a trained model for sampling


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """(EMA model, diffusion, meta) from a run folder, `model.safetensors`, or a training checkpoint."""
    from .unet import UNet, UNetConfig

    path = Path(path)
    if path.is_dir():
        if (path / MODEL).exists():
            path = path / MODEL
        elif (path / LAST).exists():
            path = path / LAST
        else:
            raise UserError(f"{path} holds no {MODEL} or {LAST}; pass a training run folder or a .safetensors checkpoint")
    tensors, meta = load_checkpoint(path)
    if "unet" not in meta or "diffusion" not in meta:
        raise UserError(f"{path} has no U-Net/diffusion config in its JSON sidecar ({path.with_suffix('.json').name}); "
                        "pass a checkpoint written by `diffprompt diffusion train`")
    if any(k.startswith("ema.") for k in tensors):
        tensors = {k[len("ema."):]: v for k, v in tensors.items() if k.startswith("ema.")}
    model = UNet(UNetConfig.from_dict(meta["unet"]))
    check_state_dict_compatible(model.state_dict(), tensors, what=f"checkpoint {path}")
    model.load_state_dict(tensors)
    model.to(device).eval()
    diffusion = build_diffusion(meta["diffusion"]).to(device)
    meta = dict(meta, path=str(path))
    return model, diffusion, meta

