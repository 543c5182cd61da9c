"""Files that must survive a kill and must not run code: atomic writes and weights-only reads.

Base layer (like :mod:`rlhf_envs.device`): the pretraining of :mod:`rlhf_envs.lm` and the agents'
checkpoints both write with :func:`save_atomic` and read with :func:`load_weights_only`.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

__all__ = ["load_weights_only", "save_atomic"]


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync it, then rename it into place:
    a kill mid-write leaves the previous file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_weights_only(path: str | os.PathLike, safe_globals: Iterable[Any] = ()) -> dict[str, Any]:
    """Read a dict written by :func:`save_atomic` with ``torch.load(weights_only=True)``: tensors,
    containers, numbers and strings, plus ``safe_globals``. Anything else a file names (the way a
    crafted pickle runs code) is refused with a ``ValueError`` before it is called."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        raise ValueError(
            f"refusing to load {path}: not a checkpoint of ours, or it holds objects that could run code "
            f"({_first_reason(str(error))})"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint of ours: it holds a {type(state).__name__}, not a dict")
    return state


def _first_reason(message: str) -> str:
    """What torch's weights-only error says was refused (its message opens with general advice)."""
    _, found, rest = message.partition("WeightsUnpickler error:")
    reason = rest.strip() if found else message.strip()
    return reason.splitlines()[0].split(". ")[0] if reason else "unreadable"
