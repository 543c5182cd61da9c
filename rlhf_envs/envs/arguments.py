"""Checks of constructor arguments, shared by every env so that a bad value gets the same kind of message.

Each returns the value as a plain Python number or bool, or raises ``TypeError`` (wrong kind of
value) or ``ValueError`` (right kind, outside its range) with a message that names the argument.
A bool is never a number here, although Python counts it as one: ``horizon=True`` is a mistake.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode

__all__ = ["autoreset_mode_from", "boolean", "positive_int", "real"]


def positive_int(name: str, value: Any) -> int:
    """``value`` as an int ≥ 1: Python and NumPy integers, not bools or floats (even 2.0)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def real(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """``value`` as a finite float in [low, high] (an end excluded when ``low_open``/``high_open``)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {value}")
    too_low = low is not None and (number <= low if low_open else number < low)
    too_high = high is not None and (number >= high if high_open else number > high)
    if too_low or too_high:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        interval = f"{left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"
        raise ValueError(f"{name} must be in {interval}, got {value}")
    return number


def boolean(name: str, value: Any) -> bool:
    """``value`` as a bool; ``True``/``False`` (or NumPy's) only, not 0 or 1."""
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def autoreset_mode_from(value: Any) -> AutoresetMode:
    """An ``AutoresetMode``, or its name in any case (``"next_step"``) or its value (``"NextStep"``)."""
    if isinstance(value, AutoresetMode):
        return value
    if isinstance(value, str):
        for mode in AutoresetMode:
            if value.upper() == mode.name or value == mode.value:
                return mode
    names = ", ".join(mode.name.lower() for mode in AutoresetMode)
    raise ValueError(
        f"autoreset_mode must be a gymnasium.vector.AutoresetMode or one of {names}, got {value!r}"
    )
