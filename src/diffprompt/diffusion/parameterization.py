"""What the network predicts, and how to turn one prediction into another.

With signal scale ``alpha = sqrt(alpha-bar_t)`` and noise scale ``sigma = sqrt(1 - alpha-bar_t)``
(so alpha^2 + sigma^2 = 1) the forward process is

    x_t = alpha * x0 + sigma * eps,

and the three targets a network may predict are ``eps`` (Ho et al.), ``x0`` and
``v = alpha * eps - sigma * x0`` (Salimans & Ho 2022). Every function here is pure: it takes
the scales as tensors broadcastable to ``x_t`` (GaussianDiffusion precomputes them in float64
and casts, which keeps sigma accurate where alpha-bar is close to 1).
"""

from __future__ import annotations

from enum import Enum

import torch

from diffprompt.errors import UserError


class Prediction(str, Enum):
    """What the network outputs: the noise eps (Ho et al.), x0 itself, or v = alpha*eps - sigma*x0."""

    EPS = "eps"
    X0 = "x0"
    V = "v"


def predict_x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """x0 = (x_t - sigma * eps) / alpha."""
    return (x_t - sigma * eps) / alpha


def predict_eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """eps = (x_t - alpha * x0) / sigma."""
    return (x_t - alpha * x0) / sigma


def predict_v(x0: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """v = alpha * eps - sigma * x0."""
    return alpha * eps - sigma * x0


def predict_x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """x0 = alpha * x_t - sigma * v   (uses alpha^2 + sigma^2 = 1)."""
    return alpha * x_t - sigma * v


def predict_eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """eps = sigma * x_t + alpha * v   (uses alpha^2 + sigma^2 = 1)."""
    return sigma * x_t + alpha * v


def check_prediction(prediction: str | Prediction) -> Prediction:
    """The `Prediction` a name (or the enum itself) stands for, or a UserError listing the known ones."""
    try:
        return Prediction(str(getattr(prediction, "value", prediction)).lower())
    except ValueError:
        known = ", ".join(p.value for p in Prediction)
        raise UserError(f"unknown prediction type {prediction!r}; choose one of: {known}") from None


def x0_from_model_output(prediction: str | Prediction, output: torch.Tensor, x_t: torch.Tensor, alpha,
                         sigma) -> torch.Tensor:
    """The network's estimate of x0, whatever it predicts (the one path every caller uses)."""
    p = check_prediction(prediction)
    if p is Prediction.EPS:
        return predict_x0_from_eps(x_t, output, alpha, sigma)
    if p is Prediction.X0:
        return output
    return predict_x0_from_v(x_t, output, alpha, sigma)


def training_target(prediction: str | Prediction, x0: torch.Tensor, eps: torch.Tensor, alpha,
                    sigma) -> torch.Tensor:
    """What the network should output for (x0, eps): eps, x0 or v."""
    p = check_prediction(prediction)
    if p is Prediction.EPS:
        return eps
    if p is Prediction.X0:
        return x0
    return predict_v(x0, eps, alpha, sigma)
