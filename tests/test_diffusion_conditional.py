"""Class-conditional DDPM with classifier-free guidance (Ho & Salimans 2022): the class embedding,
label dropout, the guidance formula for eps-, v- and x0-prediction, one batched network call per
step, conditional training and resume, sampling and evaluation commands, diffusers export; and the
shipped unconditional checkpoint unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffprompt.diffusion.checkpoints import load_model
from diffprompt.diffusion.generate import generate

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "diffprompt" / "assets" / "ddpm-tiny-mnist5k.safetensors"

pytestmark = pytest.mark.usefixtures("one_thread")


# --- the shipped unconditional checkpoint ------------------------------------------------------


def test_shipped_checkpoint_loads_and_samples_as_before_conditioning_existed():
    """Numbers computed with the code before the class embedding was added (1 thread, float32);
    1e-4 absorbs summation order, a changed network or process would move them by far more."""
    model, diffusion, meta = load_model(SHIPPED)
    assert model.config.num_classes == 0 and "class_embed.weight" not in model.state_dict()
    x = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(123))
    with torch.no_grad():
        out = model(x, torch.tensor([10, 700]))
    expected = [1.3667173385620117, 0.10761938989162445, 0.07445487380027771, 0.2771068215370178, 0.7190982103347778]
    assert torch.allclose(out.flatten()[[0, 100, 500, 1000, 1500]], torch.tensor(expected), atol=1e-4)
    assert out.double().sum().item() == pytest.approx(218.0235190745443, abs=1e-2)
    assert out.double().abs().sum().item() == pytest.approx(1413.4201659355313, abs=1e-2)
    samples, _ = generate(model, diffusion, 2, (1, 28, 28), "ddim", 5, 0.0, 0, 2, "cpu")
    expected = [-0.9977331161499023, 1.0, 0.6266862154006958, 0.011301764287054539, -1.0]
    assert torch.allclose(samples.flatten()[[0, 300, 400, 1000, 1200]], torch.tensor(expected), atol=1e-4)
    assert samples.double().sum().item() == pytest.approx(-705.3046784233302, abs=1e-2)
