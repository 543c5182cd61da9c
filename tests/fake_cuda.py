"""Fake CUDA on a CPU-only PyTorch build: tensors that say ``cuda:0``, compute on the CPU, and fail
where a real GPU would.

What PyTorch's own ``FakeTensorMode`` can and cannot do here (torch 2.13.0+cpu, checked by hand):

* works: ``FakeTensorMode(allow_non_fake_inputs=False)`` as a context; factories with
  ``device="cuda"`` or ``"cuda:0"`` (``torch.zeros``, ``torch.tensor``, ``torch.rand``,
  ``torch.randint``) give ``FakeTensor`` s on ``cuda:0``; ``cuda + cpu`` raises
  ``FakeTensorDeviceMismatchError`` (a CPU 0-dim tensor is allowed, as on a GPU); ``.item()``,
  ``bool()``, ``.tolist()`` raise ``DataDependentOutputException``; ``.numpy()`` and
  ``np.asarray`` raise ``RuntimeError(".numpy() is not supported for tensor subclasses")``;
  ``.cpu()`` gives a fake CPU tensor; ``mode.from_tensor(t)`` fakes one real tensor;
  ``torch.nn.Linear(...).to("cuda")`` inside the mode fakes a module's weights.
* does not work: ``torch.as_tensor(numpy_array, device="cuda")``, indexing a fake CUDA tensor with
  a CPU index tensor or a boolean mask, ``nonzero`` (all: "PyTorch is not linked with support for
  cuda devices", raised by the CUDA meta kernels' device guard); ``torch.Generator(device="cuda")``
  ("Cannot get CUDA generator without ATen_cuda library"); and, fatally, **autograd**: the first
  op that records a ``grad_fn`` for a CUDA-device tensor builds an ``InputMetadata`` that asks
  for the CUDA device guard, which throws inside a ``noexcept`` path: the process aborts
  (``terminate called after throwing an instance of 'c10::Error'``), so no PPO/DQN update can
  run. The same holds for any tensor subclass that reports ``device=cuda``.
* and by design: fake tensors hold no values, so nothing data-dependent runs (sampling a token
  and checking it for EOS, ``.item()`` of a loss for a log, ``nonzero`` of finished rows). A
  rollout is all data-dependent control flow.

So ``FakeTensorMode`` can check one pure tensor function for device and shape errors, but it
cannot run one rollout + update of any of our agents. This harness therefore keeps real CPU
tensors (values and autograd work) and fakes the *device*, in a ``TorchFunctionMode``:

* a tensor is "on CUDA" when it carries the marker attribute ``_fake_cuda``; its ``.device``
  reads ``cuda:0`` and ``.is_cuda`` ``True``, so device comparisons behave as on a GPU
  (``torch.device("cuda") != torch.device("cuda:0")``);
* factories with ``device="cuda"`` (any index), ``Tensor.to/.cuda`` and ``nn.Module.to/.cuda``
  produce marked tensors; every op with a marked input marks its tensor outputs; gradients of
  marked tensors are marked when read;
* an op that mixes marked tensors with CPU tensors of one element or more raises CUDA's
  ``RuntimeError("Expected all tensors to be on the same device ...")``; indices of ``t[...]``
  may be CPU tensors, as on a GPU; a generator must be on the op's device;
* ``.numpy()`` and ``np.asarray`` of a marked tensor raise CUDA's ``TypeError("can't convert
  cuda:0 device type tensor to numpy ...")``; ``.item()``, ``.tolist()``, ``bool()``, ``.cpu()``,
  boolean-mask indexing, ``nonzero`` and host-to-device copies work and are recorded in
  :attr:`FakeCuda.syncs` (what ``torch.cuda.set_sync_debug_mode`` would report);
* ``torch.cuda.is_available()`` is ``True``; ``torch.Generator(device="cuda")`` is a CPU
  generator whose ``.device`` reads ``cuda:0`` (the stand-in for the CUDA generator);
  ``torch.cuda.{get,set}_rng_state``, ``manual_seed(_all)`` and ``synchronize`` work on a stand-in.

Not modelled: CUDA kernels' own numerics and nondeterminism, device-side asserts (an
out-of-range index raises the CPU's ``IndexError`` instead), streams, memory. Ops that C++ runs
without passing through Python (inside autograd's backward, ``torch.compile``) are not checked.

Usage::

    with FakeCuda() as cuda:
        agent = PPO("rlhf_envs/CarDriving-v0", device="cuda", ...)
        agent.learn(...)
    cuda.syncs  # ["Tensor.item", ...]
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten, tree_map

CUDA0 = torch.device("cuda", 0)
_MARK = "_fake_cuda"
_REAL_GENERATOR = torch.Generator
_TORCH_DIR = os.path.dirname(torch.__file__)


#: Calls that read a device tensor's values on the host (a sync on a GPU); their results are host values.
_HOST_READS = ("tolist", "item", "__bool__", "__int__", "__float__", "__index__")


def is_fake_cuda(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and getattr(value, _MARK, False)


def _mark(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and not getattr(value, _MARK, False):
        setattr(value, _MARK, True)
    return value


def _is_cuda_device(device: Any) -> bool:
    if device is None:
        return False
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return False  # an int means an index of the current (here: CPU) device type


class FakeCudaGenerator(_REAL_GENERATOR):
    """The stand-in for ``torch.Generator(device="cuda")``: a CPU generator that says ``cuda:0``."""

    def __new__(cls, device: Any = "cpu") -> _REAL_GENERATOR:
        if _is_cuda_device(device):
            return super().__new__(cls)
        return _REAL_GENERATOR(device)

    def __init__(self, device: Any = "cpu") -> None:
        super().__init__()

    @property
    def device(self) -> torch.device:
        return CUDA0


def _module_to(original):
    """``nn.Module.to`` that keeps every tensor on the CPU and marks them when the target is CUDA."""

    def to(module: nn.Module, *args: Any, **kwargs: Any) -> nn.Module:
        device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args, **kwargs)
        tensors = [*module.parameters(), *module.buffers()]
        was_cuda = bool(tensors) and all(is_fake_cuda(tensor) for tensor in tensors)
        options = {
            key: value for key, value in {"dtype": dtype, "memory_format": memory_format}.items() if value
        }
        if options:
            with torch._C.DisableTorchFunction():  # a plain cast on the CPU, unseen by the mode
                original(module, non_blocking=non_blocking, **options)
        cuda = _is_cuda_device(device) or (device is None and was_cuda)
        for tensor in [*module.parameters(), *module.buffers()]:  # a cast may have replaced buffers
            if cuda:
                _mark(tensor)
            elif is_fake_cuda(tensor):
                delattr(tensor, _MARK)
        return module

    return to


def _parameter_new(original):
    def new(cls, data: torch.Tensor | None = None, requires_grad: bool = True) -> nn.Parameter:
        parameter = original(cls, data, requires_grad)
        return _mark(parameter) if is_fake_cuda(data) else parameter

    return staticmethod(new)


def _parameter_deepcopy(original):
    def deepcopy(parameter: nn.Parameter, memo: dict) -> nn.Parameter:
        copied = original(parameter, memo)
        return _mark(copied) if is_fake_cuda(parameter) else copied

    return deepcopy


class FakeCuda(TorchFunctionMode):
    """A context in which ``device="cuda"`` works on the CPU and CUDA's device errors are raised.

    See the module docstring. ``syncs`` lists, in order, the operations that would make the host
    wait for the GPU.
    """

    def __init__(self) -> None:
        super().__init__()
        #: "what at file:line" for each operation that would make the host wait for the GPU.
        self.syncs: list[str] = []
        self._patches = contextlib.ExitStack()
        self._cpu_rng = _REAL_GENERATOR()

    # -- entering and leaving: the torch.cuda stand-ins ------------------------------------------
    def __enter__(self) -> FakeCuda:
        patches = self._patches
        cuda = torch.cuda
        for name, replacement in {
            "is_available": lambda: True,
            "device_count": lambda: 1,
            "current_device": lambda: 0,
            "synchronize": lambda device=None: None,
            "get_rng_state": lambda device="cuda": self._cpu_rng.get_state(),
            "set_rng_state": lambda state, device="cuda": self._cpu_rng.set_state(state),
            "manual_seed": lambda seed: self._cpu_rng.manual_seed(seed),
            "manual_seed_all": lambda seed: self._cpu_rng.manual_seed(seed),
        }.items():
            patches.enter_context(_patched(cuda, name, replacement))
        patches.enter_context(_patched(torch, "Generator", FakeCudaGenerator))
        patches.enter_context(_patched(nn.Module, "to", _module_to(nn.Module.to)))
        patches.enter_context(_patched(nn.Module, "cuda", lambda module, device=None: module.to(CUDA0)))
        # A Parameter is a new Python object around its data: it lives where the data does.
        patches.enter_context(_patched(nn.Parameter, "__new__", _parameter_new(nn.Parameter.__new__)))
        patches.enter_context(
            _patched(nn.Parameter, "__deepcopy__", _parameter_deepcopy(nn.Parameter.__deepcopy__))
        )
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        self._patches.close()

    # -- every torch function ------------------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        if name == "__get__":  # a property of a tensor: Tensor.device, .is_cuda, .grad...
            prop = getattr(getattr(func, "__self__", None), "__name__", "")
            value = func(*args, **kwargs)
            if not is_fake_cuda(args[0]):
                return value
            # Tensors a property returns (.grad, .data, .T...) live where their tensor does; .grad is
            # made by autograd in C++, so it is marked here, when it is read.
            return {"device": CUDA0, "is_cuda": True, "is_cpu": False}.get(prop, _mark(value))
        if name in ("numpy", "__array__") and is_fake_cuda(args[0]):
            raise TypeError(
                "can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() to copy the tensor "
                "to host memory first."
            )
        if name in ("to", "cuda", "cpu"):
            return self._move(name, func, args, kwargs)
        if name == "get_device" and is_fake_cuda(args[0]):
            return 0

        flat, _ = tree_flatten((args, kwargs))
        tensors = [value for value in flat if isinstance(value, torch.Tensor)]
        any_fake = any(is_fake_cuda(tensor) for tensor in tensors)
        device_kwarg = kwargs.get("device")
        # An explicit device= decides where the result lives (zeros_like(x, device="cpu")); else the inputs.
        on_cuda = _is_cuda_device(device_kwarg) if device_kwarg is not None else any_fake
        self._check_devices(name, args, tensors, on_cuda)
        generator = kwargs.get("generator")
        if generator is not None and isinstance(generator, FakeCudaGenerator) != on_cuda:
            expected, found = ("cuda", "cpu") if on_cuda else ("cpu", "cuda")
            raise RuntimeError(f"Expected a '{expected}' device type for generator but found '{found}'")
        self._record_sync(name, args, kwargs, any_fake, device_kwarg)

        if _is_cuda_device(device_kwarg):
            kwargs = dict(kwargs, device="cpu")
        result = func(*args, **kwargs)
        if _is_cuda_device(device_kwarg) and any(
            result is tensor and not is_fake_cuda(tensor) for tensor in tensors
        ):
            result = (
                result.clone()
            )  # as_tensor(cpu_tensor, device="cuda") is a copy, never the CPU tensor itself
        if on_cuda and name not in _HOST_READS:
            tree_map(_mark, result)
        return result

    def _move(self, name: str, func, args, kwargs):
        tensor, rest = args[0], {}
        if name == "cpu":
            device = torch.device("cpu")
        elif name == "cuda":
            device = CUDA0
        else:
            # _parse_to knows Tensor.to's arguments but copy= (transformers' generate passes it).
            to_kwargs = {key: value for key, value in kwargs.items() if key != "copy"}
            device, dtype, non_blocking, memory_format = torch._C._nn._parse_to(*args[1:], **to_kwargs)
            if device is None and len(args) > 1 and is_fake_cuda(args[1]):
                device = CUDA0  # tensor.to(other) takes the other's device
            options = {"dtype": dtype, "non_blocking": non_blocking or None, "memory_format": memory_format}
            rest = {key: value for key, value in options.items() if value is not None}
            if kwargs.get("copy"):
                rest["copy"] = True
        fake = is_fake_cuda(tensor)
        moved = torch.Tensor.to(tensor, **rest)
        if device is None or (_is_cuda_device(device) and fake):
            return _mark(moved) if fake else moved
        if _is_cuda_device(device):
            if tensor.numel() > 1:
                self._record("to (host-to-device copy)")
            return _mark(moved.clone() if moved is tensor else moved)
        if fake:  # to the host: a copy, unmarked
            self._record(f"{name} (device-to-host copy)")
            return moved.clone() if moved is tensor else moved
        return moved

    @staticmethod
    def _check_devices(name: str, args, tensors: list[torch.Tensor], on_cuda: bool) -> None:
        if not on_cuda or name in ("copy_", "__getitem__", "as_tensor", "tensor", "asarray"):
            return  # copies cross devices; indices may live on the CPU; factories copy their data over
        if name == "__setitem__":  # the indices may live on the CPU, the value may not
            tensors = [t for t in (args[0], args[2]) if isinstance(t, torch.Tensor)]
        fake = [t for t in tensors if is_fake_cuda(t)]
        cpu = [t for t in tensors if not is_fake_cuda(t) and t.dim() > 0]
        if cpu and (
            fake or name not in ("full", "zeros", "ones", "empty", "arange", "rand", "randn", "randint")
        ):
            raise RuntimeError(
                f"{name}: Expected all tensors to be on the same device, but found at least two devices, "
                "cuda:0 and cpu!"
            )

    def _record_sync(self, name: str, args, kwargs, any_fake: bool, device_kwarg: Any) -> None:
        if any_fake and (name in _HOST_READS or name in ("nonzero", "masked_select", "unique", "argwhere")):
            self._record(name)
        elif any_fake and name == "__getitem__" and _has_bool_index(args[1:]):
            self._record("__getitem__ (boolean mask)")
        elif name in ("as_tensor", "tensor", "asarray") and _is_cuda_device(device_kwarg):
            data = args[0] if args else kwargs.get("data")
            if not is_fake_cuda(data) and not _is_scalar(data):
                self._record(f"{name} (host-to-device copy)")

    def _record(self, what: str) -> None:
        """Note a sync, with the first caller outside torch and this file (the line to fix)."""
        frame = sys._getframe(1)
        while frame is not None and (
            frame.f_code.co_filename.startswith(_TORCH_DIR) or frame.f_code.co_filename == __file__
        ):
            frame = frame.f_back
        where = "?" if frame is None else f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno}"
        self.syncs.append(f"{what} at {where}")


def _has_bool_index(index: Any) -> bool:
    flat, _ = tree_flatten(index)
    return any(isinstance(item, torch.Tensor) and item.dtype == torch.bool for item in flat)


def _is_scalar(data: Any) -> bool:
    return isinstance(data, int | float | bool) or (isinstance(data, torch.Tensor) and data.dim() == 0)


@contextlib.contextmanager
def _patched(owner: Any, name: str, value: Any):
    original = getattr(owner, name)
    setattr(owner, name, value)
    try:
        yield
    finally:
        setattr(owner, name, original)
