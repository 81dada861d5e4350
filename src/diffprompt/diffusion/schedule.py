"""Noise schedules: the variances beta_t of the forward process q(x_t | x_{t-1}).

Timesteps are 0-based: index ``t`` in ``[0, T)`` is the paper's step t+1 (as in
improved-diffusion and diffusers). So ``betas[0]`` is Ho et al.'s beta_1 and
``alphas_cumprod[T-1]`` is alpha-bar_T, the signal left at the last step.

Every tensor here is float64 on the CPU; `GaussianDiffusion` derives its constants
from them in float64 and only then casts to float32.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from diffprompt.errors import UserError

# Nichol & Dhariwal (2021) clip the cosine schedule's betas here to avoid a singularity at t = T.
COSINE_MAX_BETA = 0.999


def linear_betas(num_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Ho et al. (2020): betas evenly spaced from `beta_start` to `beta_end` (float64)."""
    return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)


def cosine_alpha_bar(u: torch.Tensor | float, s: float = 0.008):
    """The cosine schedule's f(u) = cos^2(pi/2 * (u + s) / (1 + s)), u = t/T in [0, 1] (not yet divided by f(0))."""
    if isinstance(u, torch.Tensor):
        return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2
    return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = COSINE_MAX_BETA) -> torch.Tensor:
    """Nichol & Dhariwal (2021): alpha-bar_t = f(t)/f(0), betas_t = 1 - alpha-bar_t/alpha-bar_{t-1}, clipped at `max_beta`."""
    u = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
    f = cosine_alpha_bar(u, s)
    alpha_bar = f / f[0]  # paper steps 0..T
    betas = 1.0 - alpha_bar[1:] / alpha_bar[:-1]
    return betas.clamp(max=max_beta)


@dataclass(frozen=True, eq=False)
class NoiseSchedule:
    """The betas of a forward process, and the products derived from them (all float64).

    Build one with `NoiseSchedule.linear(...)`, `NoiseSchedule.cosine(...)` or
    `NoiseSchedule.from_name(name, T)`. `to_dict()` gives the JSON-able recipe, and
    `NoiseSchedule.from_dict(d)` rebuilds it.
    """

    betas: torch.Tensor
    name: str = "custom"
    params: dict = field(default_factory=dict)

    def __post_init__(self):
        betas = torch.as_tensor(self.betas, dtype=torch.float64).detach().cpu().reshape(-1)
        if betas.numel() < 2:
            raise UserError(f"a noise schedule needs at least 2 steps, got T={betas.numel()}; use T >= 2")
        if not torch.all((betas > 0) & (betas < 1)):
            raise UserError("every beta of a noise schedule must lie in (0, 1); check beta_start/beta_end")
        object.__setattr__(self, "betas", betas)

    # --- constructors -------------------------------------------------------------------------
    @classmethod
    def linear(cls, num_timesteps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "NoiseSchedule":
        """Ho et al.'s linear schedule: betas from `beta_start` to `beta_end` over `T` steps."""
        num_timesteps = _check_num_timesteps(num_timesteps)
        if not 0 < beta_start <= beta_end < 1:
            raise UserError(
                f"linear schedule needs 0 < beta_start <= beta_end < 1, got {beta_start}, {beta_end}; "
                "the paper uses 1e-4 and 0.02"
            )
        return cls(linear_betas(num_timesteps, beta_start, beta_end), "linear",
                   {"num_timesteps": num_timesteps, "beta_start": float(beta_start), "beta_end": float(beta_end)})

    @classmethod
    def linear_scaled(cls, num_timesteps: int = 1000) -> "NoiseSchedule":
        """improved-diffusion's "linear" for any T: the paper's endpoints scaled by 1000/T.

        With few steps (T = 100, say) this keeps alpha-bar_T near zero, as T = 1000 does
        with the unscaled schedule; plain `linear(T=100)` leaves alpha-bar_T ~ 0.36.
        """
        num_timesteps = _check_num_timesteps(num_timesteps)
        scale = 1000.0 / num_timesteps
        beta_end = min(0.02 * scale, 0.999)
        s = cls.linear(num_timesteps, 1e-4 * scale, beta_end)
        return cls(s.betas, "linear_scaled", {"num_timesteps": num_timesteps})

    @classmethod
    def cosine(cls, num_timesteps: int = 1000, s: float = 0.008) -> "NoiseSchedule":
        """Nichol & Dhariwal's cosine schedule, alpha-bar_t = f(t)/f(0), betas clipped at 0.999."""
        num_timesteps = _check_num_timesteps(num_timesteps)
        if not s >= 0:
            raise UserError(f"cosine schedule offset s must be >= 0, got {s}; the paper uses 0.008")
        return cls(cosine_betas(num_timesteps, s), "cosine", {"num_timesteps": num_timesteps, "s": float(s)})

    @classmethod
    def from_name(cls, name: str, num_timesteps: int = 1000, **kwargs) -> "NoiseSchedule":
        """A schedule by name: one of `SCHEDULES` ("linear", "linear_scaled", "cosine")."""
        key = str(name).lower().replace("-", "_")
        if key not in SCHEDULES:
            raise UserError(f"unknown noise schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
        try:
            return getattr(cls, key)(num_timesteps, **kwargs)
        except TypeError as e:
            raise UserError(f"bad options for the {key} schedule: {e}") from None

    @classmethod
    def from_dict(cls, d: dict) -> "NoiseSchedule":
        """Rebuild a schedule from `to_dict()` output."""
        d = dict(d)
        name = d.pop("name", None)
        if name is None:
            raise UserError("a schedule config needs a 'name' field (linear, linear_scaled or cosine)")
        num_timesteps = d.pop("num_timesteps", d.pop("T", 1000))  # "T": the key before the rename (shipped assets)
        return cls.from_name(name, num_timesteps, **d)

    def to_dict(self) -> dict:
        """The recipe (JSON-able): name, num_timesteps and the schedule's own parameters."""
        return {"name": self.name, **self.params, "num_timesteps": self.num_timesteps}

    # --- derived quantities -------------------------------------------------------------------
    @property
    def num_timesteps(self) -> int:
        return int(self.betas.numel())

    @property
    def alphas(self) -> torch.Tensor:
        """alpha_t = 1 - beta_t."""
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """alpha-bar_t = prod_{s <= t} alpha_s: the signal variance kept at step t."""
        return torch.cumprod(self.alphas, dim=0)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """alpha-bar_{t-1}, with alpha-bar before the first step = 1 (x_0 itself)."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @property
    def snr(self) -> torch.Tensor:
        """Signal-to-noise ratio alpha-bar_t / (1 - alpha-bar_t)."""
        ab = self.alphas_cumprod
        return ab / (1.0 - ab)

    def __repr__(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.params.items() if k != "num_timesteps")
        return f"NoiseSchedule.{self.name}(num_timesteps={self.num_timesteps}{', ' + extra if extra else ''})"


SCHEDULES = ("linear", "linear_scaled", "cosine")


def _check_num_timesteps(num_timesteps) -> int:
    if isinstance(num_timesteps, bool) or int(num_timesteps) != num_timesteps or int(num_timesteps) < 2:
        raise UserError(f"the number of diffusion steps T must be an integer >= 2, got {num_timesteps!r}")
    return int(num_timesteps)
