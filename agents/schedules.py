"""Schedules for hyperparameters that change over training (ε, learning rates)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LinearSchedule:
    """Goes linearly from ``start`` to ``end`` over the first ``fraction`` of training, then holds."""

    start: float
    end: float
    fraction: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must lie in (0, 1], got {self.fraction}")

    def __call__(self, progress: float) -> float:
        """Value at ``progress`` ∈ [0, 1], the share of training done."""
        return self.start + (self.end - self.start) * min(progress / self.fraction, 1.0)


Schedule = float | LinearSchedule


def value_at(schedule: Schedule, progress: float) -> float:
    """A constant is its own schedule."""
    return schedule(progress) if isinstance(schedule, LinearSchedule) else float(schedule)
