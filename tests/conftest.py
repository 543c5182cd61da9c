"""Shared test set-up."""

import pytest
import torch
from fake_cuda import FakeCuda
from tiny_lm import tiny_lm, tiny_tokenizer

#: The devices the ``device`` fixture runs a test on: the CPU always, CUDA when this machine has it.
DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The tests' tensors and networks are small: on a shared 2-core machine a second intra-op
    thread only adds waiting (measured 10–100x slower under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny byte-level tokenizer of ``tests/tiny_lm.py`` (one per test module)."""
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def lm(tokenizer):
    """A tiny GPT-2 over ``tokenizer``, built from a config (one per test module)."""
    return tiny_lm(tokenizer)


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """A device to run on: each test that takes it runs on the CPU, and on CUDA when present."""
    return request.param


@pytest.fixture
def fake_cuda():
    """CUDA faked on the CPU (``tests/fake_cuda.py``): ``device="auto"`` is ``cuda:0`` inside, and CUDA's
    device errors are raised; ``fake_cuda.syncs`` lists the host syncs a GPU would make."""
    with FakeCuda() as cuda:
        yield cuda


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need a real CUDA device (e.g. ``torch.cuda.set_sync_debug_mode``)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
