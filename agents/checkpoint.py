"""Checkpoints written atomically, and read without running code.

A crash mid-write never leaves a broken file behind (a temporary file renamed into place). Reading
unpickles with ``torch.load(weights_only=True)``: tensors, containers, numbers and strings, plus
the few plain types our checkpoints hold (:data:`SAFE_GLOBALS`). Anything else a file names — the
way a crafted pickle runs code — is refused with a ``ValueError`` before it is called.
"""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np

from agents.kl_control import KLStats
from agents.schedules import LinearSchedule
from rlhf_envs.checkpoints import load_weights_only, save_atomic

__all__ = ["SAFE_GLOBALS", "load_checkpoint", "save_atomic"]


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


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_atomic`; a ``ValueError`` names a file that is not one,
    or that would run code or build objects other than :data:`SAFE_GLOBALS` when unpickled."""
    return load_weights_only(path, SAFE_GLOBALS)
