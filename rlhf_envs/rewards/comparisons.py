"""What a control reward model learns from: trajectory segments and labelled comparisons of two.

Following Christiano et al. (2017), rollouts are cut into short segments; a labeler compares two
segments, and a reward model learns from those comparisons. The types live in the rewards layer
because both the reward models (which fit on them) and the preference stores and labelers (which
make and keep them, one layer up) use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["LABELS", "SEGMENT_ARRAYS", "Comparison", "Segment"]

#: Labels of a control comparison: P(a ≻ b), i.e. 1 = a preferred, 0 = b preferred, 0.5 = equal.
LABELS = (0.0, 0.5, 1.0)

#: The per-step arrays of a segment, each with one row per step.
SEGMENT_ARRAYS = ("obs", "actions", "next_obs", "rewards")


@dataclass(frozen=True, eq=False)
class Segment:
    """A piece of one episode: ``obs[t], actions[t] -> next_obs[t]`` with true reward ``rewards[t]``.

    Attributes:
        obs: observations, shape [T, *obs_shape].
        actions: actions, shape [T, *action_shape] (integers for discrete actions).
        next_obs: the observation after each action, shape [T, *obs_shape].
        rewards: the true rewards, shape [T]; hidden from reward models.
        frames: optional renderings of the T steps for a human: uint8 images [T, H, W, 3], or
            strings (an array of T texts) for a terminal view.
        terminated: the last step terminated the episode (not a truncation): nothing follows it, so
            a reward model may treat the rest of the segment's time as spent in an absorbing state.
    """

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray
    rewards: np.ndarray
    frames: np.ndarray | None = None
    terminated: bool = False

    def __post_init__(self) -> None:
        for name in SEGMENT_ARRAYS:
            object.__setattr__(self, name, np.asarray(getattr(self, name)))
        object.__setattr__(self, "rewards", self.rewards.astype(np.float64, copy=False))
        length = len(self.rewards) if self.rewards.ndim == 1 else -1
        if length < 1:
            raise ValueError(f"rewards must be a non-empty 1-D array, got shape {self.rewards.shape}")
        for name in ("obs", "actions", "next_obs"):
            if getattr(self, name).ndim == 0 or len(getattr(self, name)) != length:
                raise ValueError(
                    f"{name} must have {length} rows like rewards, got shape {getattr(self, name).shape}"
                )
        if self.obs.shape != self.next_obs.shape:
            raise ValueError(f"obs {self.obs.shape} and next_obs {self.next_obs.shape} differ in shape")
        if self.frames is not None:
            frames = np.asarray(self.frames)
            if len(frames) != length:
                raise ValueError(f"frames must have {length} entries, got {len(frames)}")
            object.__setattr__(self, "frames", frames)

    def __len__(self) -> int:
        return len(self.rewards)

    @property
    def true_return(self) -> float:
        """The sum of the segment's true rewards."""
        return float(self.rewards.sum())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The segment as named arrays (for ``np.savez``)."""
        arrays = {name: getattr(self, name) for name in SEGMENT_ARRAYS}
        if self.frames is not None:
            arrays["frames"] = self.frames
        arrays["terminated"] = np.array(self.terminated)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> Segment:
        """Inverse of ``to_arrays``."""
        missing = set(SEGMENT_ARRAYS) - arrays.keys()
        if missing:
            raise ValueError(f"segment arrays lack {sorted(missing)}")
        fields = {name: arrays[name] for name in (*SEGMENT_ARRAYS, "frames") if name in arrays}
        return cls(**fields, terminated=bool(arrays.get("terminated", False)))


@dataclass(eq=False)
class Comparison:
    """Two segments and a label: P(a ≻ b), 1 = a preferred, 0 = b preferred, 0.5 = equal."""

    segment_a: Segment
    segment_b: Segment
    label: float
    meta: dict[str, Any] = field(default_factory=dict)
