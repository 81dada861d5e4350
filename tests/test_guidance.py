"""Classifier-free guidance in isolation: which network is conditional, the label-dropout rule, and the
guided wrapper's contract (defaults, null class, timestep shapes, devices, learned-variance channels).

The formula itself, against GaussianDiffusion, is checked in test_diffusion_conditional.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from diffprompt.diffusion.guidance import drop_labels, guided, num_classes
from diffprompt.errors import UserError

K = 3


class Toy(nn.Module):
    """out = a[y] * x + t / 100 per channel (and, with `learned`, C more channels holding c[y]);
    it records the labels and timesteps of every call, which must be on x's device."""

    def __init__(self, learned: bool = False, k: int = K):
        super().__init__()
        self.config = SimpleNamespace(num_classes=k)
        self.a, self.c = torch.tensor([0.5, -1.0, 2.0, 0.3]), torch.tensor([-0.5, 0.2, 0.9, 0.0])
        self.learned, self.calls = learned, []

    def forward(self, x, t, class_labels=None):
        assert class_labels.device == t.device == x.device  # as a real network's embeddings need
        self.calls.append((class_labels.clone(), t.clone()))
        a, c = self.a.to(x.device)[class_labels], self.c.to(x.device)[class_labels]
        out = a.view(-1, 1, 1, 1) * x + t.reshape(-1, 1, 1, 1) / 100
        return torch.cat([out, c.view(-1, 1, 1, 1).expand_as(x)], 1) if self.learned else out


def test_num_classes_is_the_configs_and_zero_for_any_other_network():
    assert num_classes(Toy(k=5)) == 5
    assert num_classes(Toy(k=0)) == 0
    assert num_classes(nn.Identity()) == 0  # no config at all
    plain = nn.Identity()
    plain.config = SimpleNamespace(channels=3)  # a config without num_classes
    assert num_classes(plain) == 0
    plain.config = SimpleNamespace(num_classes=None)
    assert num_classes(plain) == 0


def test_a_label_is_dropped_exactly_when_its_uniform_is_below_p():
    """One uniform u per label from the generator; u < p drops it, so u == p keeps it."""
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    u = torch.rand(8, generator=torch.Generator().manual_seed(5))
    p = u[3].item()  # the fourth label's own draw, exactly
    out = drop_labels(labels, p, K, torch.Generator().manual_seed(5))
    assert torch.equal(out, torch.where(u < p, torch.full_like(labels, K), labels))
    assert out[3] == 0 and (out == K).sum() == int((u < p).sum())


def test_drops_drawn_on_the_cpu_follow_the_labels_to_their_device():
    """The generator is a CPU one; the labels may live elsewhere ("meta" stands in for a GPU here)."""
    labels = torch.tensor([0, 1, 2], device="meta")
    out = drop_labels(labels, 0.5, K, torch.Generator().manual_seed(0))
    assert out.device.type == "meta" and out.shape == (3,)


def test_guided_defaults_to_the_plain_conditional_model_and_the_models_null_class():
    toy = Toy()
    x, t, labels = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(1)), torch.tensor([4, 9]), [2, 0]
    plain = guided(toy, labels)
    assert plain.w == 0.0 and plain.null_class == K
    assert torch.equal(plain(x, t), toy(x, t, class_labels=torch.tensor(labels)))
    assert [sent.tolist() for sent, _ in toy.calls] == [[2, 0], [2, 0]]  # one call of batch B, no null half


def test_an_explicit_null_class_is_the_one_sent_for_the_unconditional_half():
    toy = Toy()
    x, t = torch.randn(2, 1, 2, 2, generator=torch.Generator().manual_seed(2)), torch.tensor([4, 9])
    out = guided(toy, [2, 0], 1.5, null_class=1)(x, t)
    (sent, _), = toy.calls
    assert sent.tolist() == [2, 0, 1, 1]
    cond, null = toy(x, t, torch.tensor([2, 0])), toy(x, t, torch.tensor([1, 1]))
    assert torch.allclose(out, 2.5 * cond - 1.5 * null, atol=1e-6)


def test_a_scalar_timestep_is_broadcast_and_per_sample_timesteps_pass_through():
    x = torch.randn(3, 1, 2, 2, generator=torch.Generator().manual_seed(3))
    toy = Toy()
    model = guided(toy, [0, 1, 2], 2.0)
    by_scalar = model(x, 7)
    assert toy.calls[-1][1].tolist() == [7] * 6
    assert torch.equal(by_scalar, model(x, torch.tensor(7)))
    assert torch.equal(by_scalar, model(x, torch.full((3,), 7)))
    column = torch.tensor([[1], [5], [9]])  # a [B, 1] timestep is the model's business: doubled, not reshaped
    model(x, column)
    assert torch.equal(toy.calls[-1][1], torch.cat([column, column]))


def test_timesteps_and_labels_follow_x_to_its_device():
    """"meta" stands in for an accelerator: a CPU timestep or label would not mix with it."""
    x = torch.zeros(2, 1, 2, 2, device="meta")
    for w, t in [(0.0, torch.full((2,), 5, device="meta")), (2.0, 5)]:
        out = guided(Toy(), [0, 1], w)(x, t)
        assert out.device.type == "meta" and out.shape == (2, 1, 2, 2)


def test_learned_variance_channels_are_kept_for_any_image_size():
    """2C output channels -> C guided plus C conditional variance channels, even when H, W <= C."""
    toy = Toy(learned=True)
    x, t = torch.randn(2, 3, 2, 2, generator=torch.Generator().manual_seed(4)), torch.tensor([3, 8])
    out = guided(toy, [1, 2], 2.0)(x, t)
    cond, null = toy(x, t, torch.tensor([1, 2])), toy(x, t, torch.tensor([K, K]))
    assert out.shape == (2, 6, 2, 2)
    assert torch.allclose(out[:, :3], 3.0 * cond[:, :3] - 2.0 * null[:, :3], atol=1e-6)
    assert torch.equal(out[:, 3:], cond[:, 3:])


def test_refusals_say_what_is_wrong():
    with pytest.raises(UserError, match=r"^this model is unconditional: it was not trained with --conditional, "
                                        r"so it takes no class$"):
        guided(Toy(k=0), [0], 1.0)
    with pytest.raises(UserError, match=r"^class 3 is out of range: the model knows classes 0\.\.2$"):
        guided(Toy(), [0, 3], 1.0)
    with pytest.raises(UserError, match=r"^class -1 is out of range"):
        guided(Toy(), [-1], 1.0)
    with pytest.raises(UserError, match=r"^2 class labels for a batch of 3: give one label per sample$"):
        guided(Toy(), [0, 1], 1.0)(torch.zeros(3, 1, 2, 2), torch.tensor([1, 2, 3]))
