"""Configuration of a DDPM training run: one flat dataclass, a TOML file, command-line overrides.

Resolution order (later wins):

1. the defaults of `TrainConfig` (a quick CPU run: tiny U-Net, MNIST 5k, 200 steps);
2. a preset shipped in `diffprompt/configs/` (`--config ddpm-cifar10`) or any TOML file (`--config`);
3. `--set key=value` pairs (dotted keys reach into the U-Net table: `--set model.base_channels=32`);
4. explicit flags such as `--steps` and `--batch-size`.

A TOML file holds top-level keys of `TrainConfig` and an optional `[model]` table with
`UNetConfig` overrides, for example::

    dataset = "mnist5k"
    unet_preset = "tiny"
    steps = 2000
    lr = 1e-3
    [model]
    base_channels = 32

The resolved config is saved as `config.json` in the run folder (with `"kind": "diffusion-train"`).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import UserError
from ..tracking import NO_TRACKER, check_tracker
from .choices import COND_DROP_PROB, MIN_SNR_GAMMA, MIXED_PRECISION, P2_GAMMA, P2_K, SAMPLER_NAMES, VLB_WEIGHT

if TYPE_CHECKING:  # the methods that build the process and the U-Net import torch when they run
    from .process import GaussianDiffusion
    from .unet import UNetConfig

OLD_KEYS = {"loss": "loss_type", "timesteps": "num_timesteps"}  # still read from older run folders and TOML files


@dataclass
class TrainConfig:
    """Everything that defines a training run. Field names are the `--set` keys."""

    # data
    dataset: str = "mnist5k"          # a name known to `diffprompt data list`, or a path
    hflip: bool = False               # random horizontal flips (off: digits are not symmetric)
    # model
    unet_preset: str = "tiny"         # `UNetConfig.preset` name
    model: dict = field(default_factory=dict)  # UNetConfig overrides, e.g. {"base_channels": 32}
    conditional: bool = False         # a class embedding (classes: the data set's), for classifier-free guidance
    cond_drop_prob: float = COND_DROP_PROB  # share of labels replaced by the null class in training
    # diffusion: what `GaussianDiffusion` takes (see process.py)
    schedule: str = "linear"
    num_timesteps: int = 1000         # T
    prediction: str = "eps"
    variance: str = "fixed_small"
    loss_type: str = "simple"         # simple, vlb or hybrid
    loss_weighting: str = "none"      # none, min_snr or p2
    min_snr_gamma: float = MIN_SNR_GAMMA
    p2_gamma: float = P2_GAMMA        # P2's weight 1 / (p2_k + SNR)^p2_gamma on the eps-MSE
    p2_k: float = P2_K
    vlb_weight: float = VLB_WEIGHT    # lambda of the hybrid loss
    # optimisation
    steps: int = 200
    batch_size: int = 32              # global batch (split across processes)
    lr: float = 1e-3
    warmup_steps: int = 50
    lr_decay: str = "constant"        # after the warm-up: constant, or linear / cosine down to 0 at `steps`
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    grad_clip: float = 1.0            # max global grad norm; 0 turns clipping off
    ema_decay: float = 0.999
    ema_warmup: bool = True           # decay = min(ema_decay, (1+n)/(10+n)) at update n
    # run
    seed: int = 0
    device: str = "auto"
    mixed_precision: str = "no"
    ckpt_every: int = 0               # 0: only at the end
    log_every: int = 10
    # end-of-run pictures
    sample_n: int = 36
    sample_sampler: str = "ddim"
    sample_steps: int = 25
    time_budget_s: float = 0.0        # >0: stop early once this many seconds of training passed
    log_with: str = NO_TRACKER        # also send metrics.jsonl's lines and the samples to "tensorboard" or "wandb"

    def validate(self) -> "TrainConfig":
        from .parameterization import Prediction
        from .process import LossType, LossWeighting, VarianceType
        from ..training_setup import DECAYS
        from .schedule import SCHEDULES

        def choose(name: str, value: str, options) -> None:
            options = [getattr(o, "value", o) for o in options]
            if value not in options:
                raise UserError(f"unknown {name} {value!r}; choose one of: {', '.join(options)}")

        choose("schedule", self.schedule, SCHEDULES)
        choose("prediction", self.prediction, Prediction)
        choose("variance", self.variance, VarianceType)
        choose("loss type", self.loss_type, LossType)
        choose("loss weighting", self.loss_weighting, LossWeighting)
        choose("mixed precision", self.mixed_precision, MIXED_PRECISION)
        choose("sampler", self.sample_sampler, SAMPLER_NAMES)
        choose("lr decay", self.lr_decay, DECAYS)
        for name in ("steps", "batch_size", "num_timesteps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise UserError(f"lr must be positive, got {self.lr}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise UserError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.warmup_steps < 0 or self.ckpt_every < 0 or self.grad_clip < 0:
            raise UserError("warmup_steps, ckpt_every and grad_clip must be >= 0")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise UserError(f"cond_drop_prob must be in [0, 1], got {self.cond_drop_prob}")
        if "num_classes" in self.model:
            raise UserError("the number of classes comes from the data set: drop model.num_classes and pass --conditional")
        if self.sample_steps < 1 or self.sample_steps > self.num_timesteps:
            raise UserError(f"sample_steps must be in 1..{self.num_timesteps} (num_timesteps, the number of diffusion "
                            f"steps T), got {self.sample_steps}")
        self.make_diffusion()  # the process checks its own numbers (min_snr_gamma, p2_gamma, p2_k, vlb_weight, T)
        check_tracker(self.log_with)
        return self

    def make_diffusion(self) -> GaussianDiffusion:
        """The `GaussianDiffusion` this run trains."""
        from .process import GaussianDiffusion
        from .schedule import NoiseSchedule

        return GaussianDiffusion(NoiseSchedule.from_name(self.schedule, self.num_timesteps), prediction=self.prediction,
                                 variance=self.variance, loss_type=self.loss_type, loss_weighting=self.loss_weighting,
                                 min_snr_gamma=self.min_snr_gamma, vlb_weight=self.vlb_weight,
                                 p2_gamma=self.p2_gamma, p2_k=self.p2_k)

    def make_unet_config(self, channels: int, size: int, num_classes: int = 0) -> UNetConfig:
        """The U-Net for images of `channels` x `size` x `size`: the preset, then the `model` overrides;
        twice the channels out when the diffusion learns its variance; a class embedding for
        `num_classes` classes when the run is conditional."""
        from .unet import UNetConfig

        if self.conditional and num_classes < 1:
            raise UserError("--conditional needs a data set with class labels (image folders: a sub-folder per class)")
        overrides = dict(self.model, num_classes=num_classes if self.conditional else 0)
        overrides.setdefault("in_channels", channels)
        overrides.setdefault("image_size", size)
        overrides.setdefault("out_channels", self.make_diffusion().model_output_channels(channels))
        return UNetConfig.preset(self.unet_preset, **overrides)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        data = {k: v for k, v in renamed_keys(data).items() if k not in ("kind", "derived")}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(known))}")
        cfg = cls()
        for k, v in data.items():
            setattr(cfg, k, _coerce(k, v, getattr(cfg, k)))
        return cfg


def renamed_keys(data: dict[str, Any]) -> dict[str, Any]:
    """`data` with the keys of configs written before a rename (`OLD_KEYS`) under their new names."""
    return {OLD_KEYS.get(k, k): v for k, v in data.items()}


def _coerce(key: str, value: Any, default: Any) -> Any:
    """Convert `value` to the type of the field's default (strings from `--set` included)."""
    if isinstance(default, dict):
        if not isinstance(value, dict):
            raise UserError(f"config key {key!r} must be a table, got {value!r}")
        return dict(value)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise UserError(f"config key {key!r} takes true or false, got {value!r}")
    if isinstance(default, int):
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key {key!r} takes an integer, got {value!r}") from None
        if f != int(f):
            raise UserError(f"config key {key!r} takes an integer, got {value!r}")
        return int(f)
    if isinstance(default, float):
        try:
            return float(value)
        except (TypeError, ValueError):
            raise UserError(f"config key {key!r} takes a number, got {value!r}") from None
    return str(value)


def _parse_scalar(text: str) -> Any:
    """A `--set` value: TOML syntax when it parses (numbers, true/false, lists), else a string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def preset_names() -> list[str]:
    try:
        folder = resources.files("diffprompt") / "configs"
        return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
    except (FileNotFoundError, ModuleNotFoundError):
        return []


def read_toml(path_or_preset: str) -> dict[str, Any]:
    """Read a TOML file, or a shipped preset by name (`ddpm-tiny-mnist`)."""
    p = Path(path_or_preset)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise UserError(f"config file {p} does not exist; pass a TOML file or a preset: {', '.join(preset_names())}")
        text = p.read_text()
    else:
        res = resources.files("diffprompt") / "configs" / f"{path_or_preset}.toml"
        if not res.is_file():
            raise UserError(f"unknown preset {path_or_preset!r}; choose one of: {', '.join(preset_names())}, or pass a .toml file")
        text = res.read_text()
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"config {path_or_preset} is not valid TOML ({e})") from None


def apply_overrides(data: dict[str, Any], pairs: list[str] | None) -> dict[str, Any]:
    """Apply `key=value` strings; `model.KEY=VALUE` goes into the U-Net table."""
    data = json.loads(json.dumps(data))  # deep copy
    for pair in pairs or []:
        if "=" not in pair:
            raise UserError(f"--set takes key=value, got {pair!r}; example: --set lr=2e-4")
        key, value = pair.split("=", 1)
        key = key.strip().replace("-", "_")
        key = OLD_KEYS.get(key, key)
        parsed = _parse_scalar(value.strip())
        if "." in key:
            table, sub = key.split(".", 1)
            if table != "model":
                raise UserError(f"only model.KEY reaches into a table, got {key!r}; example: --set model.base_channels=32")
            data.setdefault("model", {})[sub] = parsed
        else:
            data[key] = parsed
    return data


def resolve_config(config: str | None = None, sets: list[str] | None = None, base: dict[str, Any] | None = None,
                   **flags: Any) -> TrainConfig:
    """Defaults (or `base`, a saved config) <- TOML file or preset <- `--set` pairs <- explicit flags.

    A flag whose value is None counts as not given.
    """
    data: dict[str, Any] = TrainConfig().to_dict()
    if base:
        data.update({k: v for k, v in renamed_keys(base).items() if k not in ("kind", "derived")})
    if config:
        file_data = renamed_keys(read_toml(config))
        model = {**data.get("model", {}), **file_data.pop("model", {})}
        data.update(file_data)
        data["model"] = model
    data = apply_overrides(data, sets)
    for k, v in flags.items():
        if v is not None:
            data[k] = v
    return TrainConfig.from_dict(data).validate()
