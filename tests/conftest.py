"""Fixtures shared by several test files."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """One intra-op thread: far faster than two when the cores are shared with other jobs."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
