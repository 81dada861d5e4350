"""The training set-up both loops share: batch order, process shares, the accelerator, the lr factor."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from diffprompt.errors import UserError
from diffprompt.training_setup import BatchOrder, get_accelerator, lr_factor, process_share


def processes(world: int) -> list[SimpleNamespace]:
    """Stand-ins for the Accelerators of `world` processes (all process_share reads)."""
    return [SimpleNamespace(process_index=rank, num_processes=world) for rank in range(world)]


def test_every_index_comes_once_per_epoch_and_a_batch_never_spans_two():
    order = BatchOrder(n=10, batch_size=3, seed=0)
    for epoch in range(4):
        drawn = torch.cat([order.next() for _ in range(3)])  # 3 batches of 3: the 10th index waits
        assert order.epoch == epoch and len(set(drawn.tolist())) == 9 and drawn.max() < 10
    assert order.next().numel() == 3 and order.epoch == 4


def test_a_full_epoch_is_a_permutation():
    order = BatchOrder(n=12, batch_size=4, seed=3)
    assert sorted(torch.cat([order.next() for _ in range(3)]).tolist()) == list(range(12))


def test_the_seed_fixes_the_order():
    a, b, c = BatchOrder(50, 5, seed=1), BatchOrder(50, 5, seed=1), BatchOrder(50, 5, seed=2)
    first = [a.next() for _ in range(25)]
    assert all(torch.equal(x, b.next()) for x in first)
    assert not all(torch.equal(x, c.next()) for x in first)


def test_a_saved_state_resumes_the_same_sequence_and_generator():
    order = BatchOrder(n=17, batch_size=4, seed=5)
    for _ in range(6):  # into the second epoch
        order.next()
    torch.rand(3, generator=order.generator)  # a loop's own draw (flips, label dropout)
    tensors, meta = order.state()
    expected = [order.next() for _ in range(10)]
    expected_draw = torch.rand(4, generator=order.generator)
    resumed = BatchOrder(n=17, batch_size=4, seed=999)
    resumed.load(tensors, meta)
    assert all(torch.equal(x, resumed.next()) for x in expected)
    assert torch.equal(torch.rand(4, generator=resumed.generator), expected_draw)
    assert (resumed.pos, resumed.epoch) == (order.pos, order.epoch)


@pytest.mark.parametrize("n,batch_size", [(10, 4), (3, 8), (8, 8)])
def test_without_drop_last_batches_run_on_across_epochs_and_draw_every_example_equally(n, batch_size):
    order = BatchOrder(n=n, batch_size=batch_size, seed=7, drop_last=False)
    batches = [order.next() for _ in range(3 * n)]  # 3 * batch_size epochs' worth
    assert all(len(b) == batch_size for b in batches)
    drawn = torch.cat(batches)
    for e in range(len(drawn) // n):  # each run of n consecutive draws is one epoch: a permutation
        assert sorted(drawn[e * n:(e + 1) * n].tolist()) == list(range(n))
    tensors, meta = order.state()
    resumed = BatchOrder(n=n, batch_size=batch_size, seed=0, drop_last=False)
    resumed.load(tensors, meta)
    assert all(torch.equal(order.next(), resumed.next()) for _ in range(5))


def test_a_batch_larger_than_the_data_is_refused():
    with pytest.raises(UserError, match="fewer than the batch size"):
        BatchOrder(n=3, batch_size=4, seed=0)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_the_process_shares_partition_a_batch(world):
    batch = torch.arange(12) * 7
    shares = [process_share(batch, acc) for acc in processes(world)]
    assert sorted(torch.cat(shares).tolist()) == sorted(batch.tolist())
    assert all(len(s) == 12 // world for s in shares)
    lists = [process_share(list(range(12)), acc) for acc in processes(world)]
    assert sorted(sum(lists, [])) == list(range(12))


def test_a_share_is_never_empty_with_at_least_one():
    accs = processes(4)
    assert [process_share([5, 6], acc) for acc in accs] == [[5], [6], [], []]
    assert [process_share([5, 6], acc, at_least_one=True) for acc in accs] == [[5], [6], [5], [5]]


def test_one_accelerator_per_process():
    assert get_accelerator("cpu") is get_accelerator("cpu")
    assert get_accelerator("cpu").device.type == "cpu"
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        get_accelerator("cpu", "fp16")


def test_lr_factor_warms_up_linearly_then_holds_or_decays():
    assert [lr_factor(s, 10, 4) for s in (0, 1, 3, 4, 9, 20)] == [0.25, 0.5, 1.0, 1.0, 1.0, 1.0]
    assert [lr_factor(s, 10, 4, decay="linear") for s in (0, 3, 4, 7, 10, 12)] == [0.25, 1.0, 1.0, 0.5, 0.0, 0.0]
    assert lr_factor(0, 10, 0) == 1.0 and lr_factor(0, 10, 0, decay="linear") == 1.0
    assert lr_factor(5, 10, 0, decay="linear") == 0.5
    cosine = [lr_factor(s, 10, 2, decay="cosine") for s in (0, 2, 4, 6, 8, 10)]
    assert cosine == pytest.approx([0.5, 1.0, 0.5 + 0.5 * math.cos(math.pi / 4), 0.5, 0.5 - 0.5 * math.cos(math.pi / 4), 0.0])
    with pytest.raises(ValueError, match="decay"):
        lr_factor(0, 10, 4, decay="exponential")
