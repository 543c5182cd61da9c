"""Shared test set-up."""

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests' tensors and networks are small: on a shared 2-core machine a second intra-op
    thread only adds waiting (measured 10–100x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
