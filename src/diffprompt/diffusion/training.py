"""Training a DDPM: Ho et al.'s Algorithm 1 with AdamW, warm-up, gradient clipping, EMA, exact resume.

    from diffprompt.diffusion.config import resolve_config
    from diffprompt.diffusion.training import train
    run = train(resolve_config(steps=200), out="runs/ddpm")

The same code runs on one CPU, on a GPU with mixed precision, or in several processes under
`accelerate launch` / `torchrun` (gloo on CPUs, NCCL on GPUs). The global batch is split across
processes; every process draws the same data order from one seeded generator and takes its own
slice, and DDP averages the gradients, so the replicas stay identical. Only the main process
writes files.

A run folder holds `config.json` (the resolved config, `"kind": "diffusion-train"`),
`metrics.jsonl` (loss, learning rate, grad norm, images/s every `log_every` steps), the
checkpoints described in checkpoints.py (`last.safetensors` to resume, `model.safetensors` with
the EMA weights to sample), and at the end `loss.png`, `samples.png` (EMA weights), `real.png`,
`train_summary.json` and `DONE`. With `log_with` set, the metrics lines and the samples also go
to TensorBoard (`tensorboard/`) or W&B (tracking.py).

`resume` continues bit for bit on CPU: N steps, then N more after a resume, give the same
weights as 2N steps in one go.

With `conditional`, the U-Net gets a class embedding for the data set's classes and each
training label is replaced by the null class with probability `cond_drop_prob` (guidance.py),
drawn from the data-order generator, so a resume repeats those draws too; `samples.png` then has
a row per class.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from ..checkpoint import weights_sha256
from ..data import ImageDataset, load_images
from ..data.images import stratified_subset
from ..errors import UserError
from ..progress import bars_enabled, log, progress
from ..rundir import RunDir
from ..seeding import seed_everything, set_rng_state
from ..tracking import end_tracking, start_tracking
from ..training_setup import BatchOrder, get_accelerator, lr_factor, process_share
from .checkpoints import (
    LAST,
    MODEL,
    TRAIN_RUN,
    restore_training_checkpoint,
    resumable_run_config,
    save_training_checkpoint,
    saved_unet_config,
)
from .config import TrainConfig, resolve_config
from .ema import EMA, unwrap
from .generate import class_rows, generate
from .guidance import drop_labels
from .pixels import images_to_tensor
from .process import GaussianDiffusion
from .unet import UNet
from .visualize import plot_loss, save_grid


class NonFiniteLoss(UserError):
    """The loss became NaN or inf."""


# ---------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, out: str | Path | None = None, resume: str | Path | None = None,
          data: ImageDataset | None = None, on_step: Callable[["TrainingRun"], None] | None = None) -> Path:
    """Train (or resume) a DDPM as configured; return the run folder.

    `data` may pass an already loaded `ImageDataset`; otherwise `cfg.dataset` is loaded. `on_step`, if
    given, is called with the run after every optimizer step and EMA update (e.g. to track more averages
    of the weights); it must not change the run.
    """
    cfg.validate()
    data = data if data is not None else load_images(cfg.dataset)
    run = setup(cfg, out, resume, data)
    model, optimizer, accelerator = run.model, run.optimizer, run.accelerator
    bar = progress(range(run.step, cfg.steps), total=cfg.steps, initial=run.step, desc="train",
                   disable=not (accelerator.is_main_process and bars_enabled()))
    window, grad_norm, stopped_early = LogWindow(), math.nan, False
    t_start = time.perf_counter()
    model.train()
    for _ in bar:
        x0, cond = run.next_batch()  # x0 ~ q(x0), with its (dropped) class label when conditional
        lr = set_learning_rate(optimizer, cfg.lr * lr_factor(run.step, cfg.steps, cfg.warmup_steps, cfg.lr_decay))
        with accelerator.autocast():  # t ~ Uniform({1..T}), eps ~ N(0, I), the configured loss (L_simple: eq. 14)
            loss = run.diffusion.training_loss(model, x0, model_kwargs=cond)["loss"].float().mean()
        window.add(gather_finite_loss(accelerator, loss, run))
        accelerator.backward(loss)  # take a gradient descent step
        if cfg.grad_clip > 0:
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ema_decay = run.ema.update(model)
        run.step += 1
        if on_step is not None:
            on_step(run)
        if run.step % cfg.log_every == 0 or run.step == cfg.steps:
            run.log(window, bar, lr=lr, grad_norm=grad_norm, ema_decay=ema_decay)
        if cfg.ckpt_every and run.step % cfg.ckpt_every == 0 and run.step < cfg.steps:
            run.save(keep_copy=True)
        if out_of_time(accelerator, t_start, cfg.time_budget_s):
            stopped_early = run.step < cfg.steps
            break
    bar.close()
    seconds = time.perf_counter() - t_start
    if window.losses:
        run.log(window, bar, lr=lr, grad_norm=grad_norm, ema_decay=ema_decay)
    run.save(keep_copy=bool(cfg.ckpt_every))
    finish(run, data, seconds, stopped_early)
    return run.out


def train_or_resume(config: str | None = None, sets: list[str] | None = None, out: str | Path | None = None,
                    resume: str | Path | None = None, **flags: Any) -> Path:
    """`diffprompt diffusion train`: a new run configured by the layers of `resolve_config` (TOML file or
    preset `config`, `sets`, `flags`), or the run `resume` continued with its saved config (which `sets`
    and `flags` may change, e.g. steps) and no `config`."""
    if resume is None:
        return train(resolve_config(config, sets, **flags), out=out)
    if config:
        raise UserError("--resume continues a run with its saved config; drop --config (use --set/flags to change e.g. --steps)")
    return train(resolve_config(sets=sets, base=resumable_run_config(resume), **flags), resume=resume)


def set_learning_rate(optimizer, lr: float) -> float:
    """Set every parameter group's learning rate to `lr` (linear warm-up, then constant: `lr_factor`); return it."""
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def gather_finite_loss(accelerator: Accelerator, loss: torch.Tensor, run: "TrainingRun") -> float:
    """The loss averaged over processes; a `NonFiniteLoss` if any process's is NaN or inf."""
    losses = accelerator.gather(loss.detach()[None])
    if not bool(torch.isfinite(losses).all()):
        lr = run.cfg.lr
        raise NonFiniteLoss(
            f"the loss became {float(losses[~torch.isfinite(losses)][0])} at step {run.step + 1}; "
            f"the last good checkpoint is kept in {run.out}; lower the learning rate (now {lr:g}, e.g. "
            f"--set lr={lr / 4:g}), keep gradient clipping on, and check that the data is finite")
    return float(losses.mean())


def out_of_time(accelerator: Accelerator, t_start: float, budget_s: float) -> bool:
    """Whether any process has trained for more than `budget_s` seconds (0: no budget)."""
    if budget_s <= 0:
        return False
    over = torch.tensor([time.perf_counter() - t_start > budget_s], device=accelerator.device)
    return bool(accelerator.gather(over).any())


@dataclass
class LogWindow:
    """The losses since the last metrics line, and when that window began."""

    losses: list[float] = field(default_factory=list)
    start: float = field(default_factory=time.perf_counter)

    def add(self, loss: float) -> None:
        self.losses.append(loss)

    def close(self, batch_size: int) -> dict[str, float]:
        """Mean loss and images/s over the window; a new window begins."""
        seconds = time.perf_counter() - self.start
        summary = {"loss": float(np.mean(self.losses)), "images_per_s": len(self.losses) * batch_size / max(seconds, 1e-9)}
        self.losses, self.start = [], time.perf_counter()
        return summary


# ---------------------------------------------------------------------------------------------
# Setting up a run, resuming it, saving it


@dataclass
class TrainingRun:
    """What a training run carries from step to step."""

    cfg: TrainConfig
    out: Path
    files: RunDir
    accelerator: Accelerator
    model: torch.nn.Module
    ema: EMA
    optimizer: torch.optim.Optimizer
    diffusion: GaussianDiffusion
    order: BatchOrder
    images: torch.Tensor  # the train split, float [N, C, H, W] in [-1, 1]
    labels: torch.Tensor | None  # its class labels [N] when the run is conditional
    derived: dict[str, Any]
    step: int = 0

    def next_batch(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """This process's slice of the next global batch, on its device, and the model's keyword
        arguments: {} or {"class_labels": labels, each dropped to the null class with cond_drop_prob}."""
        # Every draw is for the global batch, from the data-order generator: every process draws the same.
        idx = self.order.next()
        gen, size = self.order.generator, self.cfg.batch_size
        flip = (torch.rand(size, generator=gen) < 0.5) if self.cfg.hflip else torch.zeros(size, dtype=torch.bool)
        cond = {}
        if self.labels is not None:
            null = self.derived["num_classes"]
            cond["class_labels"] = drop_labels(self.labels[idx], self.cfg.cond_drop_prob, null, gen)
        idx, flip = process_share(idx, self.accelerator), process_share(flip, self.accelerator)
        cond = {k: process_share(v, self.accelerator).to(self.accelerator.device) for k, v in cond.items()}
        x0 = self.images[idx.to(self.images.device)]
        if self.cfg.hflip and bool(flip.any()):
            x0 = torch.where(flip.to(x0.device)[:, None, None, None], x0.flip(3), x0)
        return x0.to(self.accelerator.device, non_blocking=True), cond

    def log(self, window: LogWindow, bar, **values: float) -> None:
        """One line of metrics.jsonl for the window, and the progress bar's figures."""
        summary = window.close(self.cfg.batch_size)
        self.files.log_metrics(self.step, **summary, **values, epoch=self.order.epoch)
        bar.set_postfix(loss=f"{summary['loss']:.4f}", img_s=f"{summary['images_per_s']:.0f}")

    def save(self, keep_copy: bool) -> None:
        """The checkpoints of this step (written by the main process; the others wait)."""
        if self.accelerator.is_main_process:
            save_training_checkpoint(self.out, self.step, self.model, self.ema, self.optimizer, self.order, self.cfg,
                                     self.diffusion, keep_copy, self.derived.get("class_names"))
        self.accelerator.wait_for_everyone()


def setup(cfg: TrainConfig, out: str | Path | None, resume: str | Path | None, data: ImageDataset) -> TrainingRun:
    """Processes, run folder, data, model, EMA and optimizer, resumed from `resume` when given.

    Model, EMA and optimizer are identical on every process (same seed); then each process seeds
    its own noise and timesteps, or restores them from the checkpoint.
    """
    accelerator = _accelerator(cfg)
    out = _run_folder(cfg, out, resume)
    images = _train_images(data)
    n, channels, size = images.shape[0], images.shape[1], images.shape[2]
    unet_cfg = ((saved_unet_config(out, cfg) if resume is not None else None)
                or cfg.make_unet_config(channels, size, data.num_classes))
    torch.manual_seed(cfg.seed)
    model = UNet(unet_cfg).to(accelerator.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2),
                                  weight_decay=cfg.weight_decay)
    derived = {"unet": unet_cfg.to_dict(), "parameters": model.num_parameters(), "image_shape": [channels, size, size],
               "train_images": n, "world_size": accelerator.num_processes, "mixed_precision": cfg.mixed_precision}
    labels = None
    if unet_cfg.num_classes:
        labels = torch.as_tensor(data.split("train").labels, dtype=torch.long)
        derived.update(num_classes=unet_cfg.num_classes, class_names=list(data.class_names))
    run = TrainingRun(cfg, out, RunDir(out, enabled=accelerator.is_main_process), accelerator, model,
                      EMA(model, decay=cfg.ema_decay, warmup=cfg.ema_warmup), optimizer,
                      cfg.make_diffusion().to(accelerator.device), BatchOrder(n, cfg.batch_size, cfg.seed),
                      images if accelerator.device.type == "cpu" else images.to(accelerator.device), labels, derived)
    if resume is not None:
        _resume(run)
    else:  # different noise and timesteps on every process; the weights are already equal
        seed_everything(cfg.seed + accelerator.process_index)
    run.files.save_config({"kind": TRAIN_RUN, **cfg.to_dict(), "derived": derived})
    start_tracking(run.files, cfg.log_with)
    run.model, run.optimizer = accelerator.prepare(model, optimizer)
    if accelerator.is_main_process:
        conditioned = f", conditioned on {unet_cfg.num_classes} classes," if unet_cfg.num_classes else ""
        log(f"training a {derived['parameters'] / 1e6:.2f} M-parameter U-Net{conditioned} on {n} images of {channels}x{size}x{size} "
            f"({cfg.dataset}) for {cfg.steps} steps, batch {cfg.batch_size}, on {accelerator.device} x "
            f"{accelerator.num_processes} -> {out}")
    return run


def _accelerator(cfg: TrainConfig) -> Accelerator:
    """The process's Accelerator; the global batch must split evenly over the processes."""
    accelerator = get_accelerator(cfg.device, cfg.mixed_precision)
    world = accelerator.num_processes
    if cfg.batch_size % world:
        raise UserError(f"batch size {cfg.batch_size} does not split evenly over {world} processes; "
                        f"use a multiple of {world}")
    return accelerator


def _run_folder(cfg: TrainConfig, out: str | Path | None, resume: str | Path | None) -> Path:
    if resume is not None:
        return Path(resume)
    if out is None:
        name = Path(cfg.dataset).name if Path(cfg.dataset).exists() else cfg.dataset
        return Path("runs") / f"ddpm-{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = Path(out)
    if (out / LAST).exists():
        raise UserError(f"{out} already holds a training run; continue it with --resume {out}, or pass another --out")
    return out


def _train_images(data: ImageDataset) -> torch.Tensor:
    """The train split, in memory, as float [N, C, H, W] in [-1, 1]."""
    x = images_to_tensor(data.split("train").images)
    if x.shape[2] != x.shape[3]:
        raise UserError(f"images are {x.shape[2]}x{x.shape[3]}; the U-Net takes square images, resize them")
    return x


def _resume(run: TrainingRun) -> None:
    """Continue from the run's last checkpoint: weights, EMA, optimizer, data order, step and RNGs."""
    cfg, accelerator = run.cfg, run.accelerator
    rng_tensors, meta = restore_training_checkpoint(run.out / LAST, run.model, run.ema, run.optimizer, run.order)
    run.step = int(meta["step"])
    if run.step >= cfg.steps:
        raise UserError(f"run {run.out} is already at step {run.step}; to train longer pass --steps larger than {run.step}")
    run.files.mark_not_done()
    if accelerator.is_main_process:  # the checkpoint holds the main process's random streams
        set_rng_state(rng_tensors, meta["rng"], cuda=accelerator.device.type == "cuda")
    else:
        seed_everything(cfg.seed * 1_000_003 + run.step * 1009 + accelerator.process_index)
    log(f"resuming {run.out} at step {run.step} of {cfg.steps}")


# ---------------------------------------------------------------------------------------------
# The end of a run: replicas checked, pictures, summary


def finish(run: TrainingRun, data: ImageDataset, seconds: float, stopped_early: bool) -> None:
    """Check that the replicas agree; the main process draws the pictures and writes the summary."""
    accelerator = run.accelerator
    hashes = [weights_sha256(unwrap(run.model))]  # DDP keeps the replicas identical: check it
    if accelerator.num_processes > 1:
        hashes = gather_object(hashes)
        if len(set(hashes)) != 1 and accelerator.is_main_process:
            log(f"warning: the {accelerator.num_processes} replicas ended with different weights: {hashes}")
    run.derived["replica_weight_sha256"] = hashes
    if accelerator.is_main_process:
        sample_seconds = _pictures(run, data)
        _summary(run, seconds, stopped_early, sample_seconds)
        end_tracking(run.files)
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _pictures(run: TrainingRun, data: ImageDataset) -> float:
    """loss.png, real.png and samples.png (EMA weights); return the seconds per sample."""
    cfg = run.cfg
    metrics = run.files.read_metrics()
    if metrics:
        plot_loss(metrics, run.files / "loss.png")
    save_grid(stratified_subset(data.reference_split(), cfg.sample_n, cfg.seed), run.files / "real.png")
    labels, per_row = _sample_labels(run)
    n = cfg.sample_n if labels is None else len(labels)
    samples, seconds = generate(run.ema.model, run.diffusion, n, tuple(run.derived["image_shape"]),
                                cfg.sample_sampler, None if cfg.sample_sampler == "ddpm" else cfg.sample_steps, 0.0,
                                cfg.seed, n, run.accelerator.device, class_labels=labels)
    save_grid(samples, run.files / "samples.png", nrow=per_row)
    if run.files.tracker is not None:
        run.files.tracker.log_image("samples", run.files / "samples.png", run.step)
    return seconds / n


def _sample_labels(run: TrainingRun) -> tuple[torch.Tensor | None, int | None]:
    """The classes of samples.png (a row per class, sample_n // K per row) and the row length; (None, None)
    for an unconditional run."""
    k = run.derived.get("num_classes", 0)
    if not k:
        return None, None
    per_row = max(1, run.cfg.sample_n // k)
    return class_rows(k, per_row), per_row


def _summary(run: TrainingRun, seconds: float, stopped_early: bool, sample_seconds_per_image: float) -> None:
    cfg, step, derived = run.cfg, run.step, run.derived
    metrics = run.files.read_metrics()
    steps_label = cfg.num_timesteps if cfg.sample_sampler == "ddpm" else cfg.sample_steps
    labels, per_row = _sample_labels(run)
    run.files.save_json("train_summary.json", {
        "steps": step, "stopped_early_by_time_budget": stopped_early, "train_seconds": round(seconds, 2),
        "images_seen": step * cfg.batch_size, "images_per_s": step * cfg.batch_size / max(seconds, 1e-9),
        "final_loss": metrics[-1].get("loss") if metrics else None, "parameters": derived["parameters"],
        "device": str(run.accelerator.device), "world_size": derived["world_size"],
        "replica_weight_sha256": derived["replica_weight_sha256"],
        "samples": f"{cfg.sample_n if labels is None else len(labels)} x {cfg.sample_sampler}-{steps_label}"
                   + ("" if labels is None else f", {per_row} per class (a row each)"),
        "sample_seconds_per_image": sample_seconds_per_image,
    })
    run.files.mark_done()
    log(f"done: {step} steps in {seconds:.0f} s; EMA weights in {run.files / MODEL}, "
        f"samples in {run.files / 'samples.png'}")
