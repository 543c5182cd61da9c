"""Checkpoints written atomically, and read without running code.

A crash mid-write never leaves a broken file behind (a temporary file renamed into place). Reading
unpickles with ``torch.load(weights_only=True)``: tensors, containers, numbers and strings, plus
the few plain types our checkpoints hold (:data:`SAFE_GLOBALS`). Anything else a file names — the
way a crafted pickle runs code — is refused with a ``ValueError`` before it is called.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.kl_control import KLStats
from agents.schedules import LinearSchedule


def _numpy_globals() -> list[Any]:
    """What pickles of numpy arrays, scalars and random generators (inside gym spaces) call: taken
    from the objects' own ``__reduce__``, so the names match whatever numpy version wrote them."""
    rng = np.random.default_rng(0)
    bit_generator = rng.bit_generator
    return [
        np.ndarray,
        np.dtype,
        np.zeros(0).__reduce__()[0],  # numpy's array _reconstruct
        np.float32(0).__reduce__()[0],  # numpy's scalar constructor
        rng.__reduce__()[0],
        bit_generator.__reduce__()[0],
        type(bit_generator),
        type(bit_generator.seed_seq),
        bit_generator.seed_seq.__reduce__()[0],
        # numpy >= 1.25 pickles a dtype's class (numpy.dtypes.Float32DType...) with it.
        *{type(np.dtype(kind)) for kind in "?bhilqBHILQefdg"},
    ]


#: Types besides tensors and Python's builtins that a checkpoint may name: config values, the
#: agent's spaces, the KL controller's history, numpy arrays and generators.
SAFE_GLOBALS: list[Any] = [
    LinearSchedule,
    KLStats,
    gym.spaces.Box,
    gym.spaces.Discrete,
    gym.spaces.MultiDiscrete,
    *_numpy_globals(),
]


def save_atomic(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, fsync it, then rename it into place."""
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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomic`; a ``ValueError`` names a file that is not one,
    or that would run code or build objects other than :data:`SAFE_GLOBALS` when unpickled."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
        reason = _first_reason(str(error))
        raise ValueError(
            f"refusing to load {path}: not a checkpoint of ours, or it holds objects that could run code "
            f"({reason})"
        ) from error
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a checkpoint of ours: it holds a {type(state).__name__}, not a dict")
    return state


def _first_reason(message: str) -> str:
    """What torch's weights-only error says was refused (its message opens with general advice)."""
    _, found, rest = message.partition("WeightsUnpickler error:")
    reason = rest.strip() if found else message.strip()
    return reason.splitlines()[0].split(". ")[0] if reason else "unreadable"
