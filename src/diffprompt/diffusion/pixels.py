"""8-bit images <-> the tensors a diffusion model sees.

Data sets hold uint8 images [N, H, W, C]; the networks take float [N, C, H, W] in [-1, 1],
x = pixel / 127.5 - 1 (Ho et al.'s data scaling). The way back clips to [-1, 1] and rounds to
the nearest 8-bit value. Each function passes through input that is already on its side, so
callers may hand over either kind.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import UserError


def images_to_tensor(images) -> torch.Tensor:
    """uint8 [N, H, W, C] or [N, H, W] (numpy or torch) -> float32 [N, C, H, W] in [-1, 1].

    A float tensor is taken to be model input already (NCHW in [-1, 1]) and returned as float32.
    """
    if isinstance(images, torch.Tensor) and images.dtype.is_floating_point:
        return images.float()
    x = torch.as_tensor(np.asarray(images))
    if x.dtype != torch.uint8:
        raise UserError(f"images must be 8-bit (uint8), got {x.dtype}; scale them to 0..255 first")
    if x.ndim == 3:
        x = x[..., None]
    return x.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def tensor_to_images(x) -> np.ndarray:
    """float [N, C, H, W] in [-1, 1] -> uint8 [N, H, W, C] (clipped, rounded).

    uint8 images (numpy or torch, [N, H, W, C] or [N, H, W]) come back as a numpy [N, H, W, C].
    """
    if isinstance(x, torch.Tensor) and x.dtype.is_floating_point:
        x = ((x.detach().float().cpu().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
        return x.permute(0, 2, 3, 1).numpy()
    images = x.cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if images.dtype != np.uint8:
        raise UserError(f"expected uint8 images or a float tensor in [-1, 1], got {images.dtype}")
    return images[..., None] if images.ndim == 3 else images
