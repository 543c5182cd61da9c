"""Device selection shared by envs and agents."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return a torch device; ``"auto"`` picks CUDA when it is available, else the CPU.

    A CUDA device always carries its index (``"auto"`` and ``"cuda"`` give ``cuda:<current device>``),
    because that is the device a tensor or model placed there reports, and ``torch.device("cuda") !=
    torch.device("cuda:0")``: device checks between an env's model and an agent compare equal.
    """
    if isinstance(device, str) and device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not isinstance(device, str | torch.device):
        raise TypeError(f"device must be a str or torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:  # torch's message lists every backend it knows; ours names the choices
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:<index>'") from error
    if resolved.type != "cuda":
        return resolved
    if not torch.cuda.is_available():
        raise ValueError(f"device={str(device)!r} was requested but CUDA is not available")
    return resolved if resolved.index is not None else torch.device("cuda", torch.cuda.current_device())
