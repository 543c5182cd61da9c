"""Issue 18: the CUDA paths, checked on a CPU-only build with fake CUDA tensors (see ``fake_cuda.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fake_cuda import is_fake_cuda

CUDA0 = torch.device("cuda", 0)


def on_cuda(module: torch.nn.Module) -> bool:
    return all(is_fake_cuda(tensor) for tensor in [*module.parameters(), *module.buffers()])


# -- the harness itself ----------------------------------------------------------------------------
def test_the_harness_fails_where_cuda_fails(fake_cuda):
    x = torch.ones(3, device="cuda")
    assert x.device == CUDA0 and x.is_cuda and torch.cuda.is_available()
    with pytest.raises(RuntimeError, match="same device"):
        x + torch.ones(3)
    with pytest.raises(TypeError, match="can't convert cuda:0 device type tensor to numpy"):
        np.asarray(x * 2)
    with pytest.raises(RuntimeError, match="generator"):
        torch.rand(3, device="cuda", generator=torch.Generator())
    assert (x + torch.tensor(1.0)).device == CUDA0  # a CPU scalar tensor is fine, as on a GPU
    assert x[torch.tensor([0, 2])].device == CUDA0  # so are CPU indices
    np.testing.assert_array_equal(x.cpu().numpy(), [1.0, 1.0, 1.0])
    assert x.sum().item() == 3.0
    assert [sync.split(" at ")[0] for sync in fake_cuda.syncs] == ["cpu (device-to-host copy)", "item"]
    assert " at test_fake_cuda.py:" in fake_cuda.syncs[-1]  # each sync names the line that made it

    layer = torch.nn.Linear(3, 2).to("cuda")
    assert on_cuda(layer) and layer.weight.device == CUDA0
    layer(x[None]).sum().backward()
    assert layer.weight.grad.device == CUDA0
    generator = torch.Generator(device="cuda").manual_seed(0)
    assert generator.device == CUDA0 and torch.rand(2, device="cuda", generator=generator).device == CUDA0
