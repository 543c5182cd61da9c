"""The property the fuzz suites check (tests/test_fuzz*.py), and the strategies that draw its inputs.

The property, for actions and for constructor arguments alike: the env either does the right thing
(a step equal to the step of the action the input stands for, with an observation in the
observation space, a finite float reward and bool flags; a constructed env that resets and steps)
or raises ``ValueError``/``TypeError`` naming the argument. Never a silently wrong result, never
another exception type. A refused step leaves no trace: the next valid step is the one a fresh
episode would take.

What an action input "stands for": for a ``Discrete`` space, integers of any numpy or torch integer
dtype (or a Python int) of the right shape within the space; bools, floats (even 2.0) and complex
numbers are refused. For a ``Box``, real numbers of any int or float dtype of the right shape; NaN
and infinities are refused; finite values outside the bounds are either refused or clipped to them
(MuJoCo clips its controls, so both are defensible), and nothing else.

Hypothesis runs derandomized (the same examples every run, as CI needs) without a database: about
40 s on one CPU thread when every property holds (longer while failures are shrunk).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st


@dataclass
class Case:
    """How to make one env, and whether it is a vector env speaking numpy or tensors."""

    name: str
    make: Callable[[], Any]
    num_envs: int | None = None  # None: a single env
    as_tensors: bool = False

    def __repr__(self) -> str:
        return self.name


# Derandomized: the same examples in every run, as CI needs; no example database on disk.
FUZZ_ACTIONS = settings(
    max_examples=80,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ_ARGUMENTS = settings(FUZZ_ACTIONS, max_examples=40)

NUMPY_DTYPES = [
    *(np.dtype(name) for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")),
    *(np.dtype(name) for name in ("float16", "float32", "float64", "bool")),
]
TORCH_DTYPES = [
    torch.int8,
    torch.int16,
    torch.int32,
    torch.int64,
    torch.uint8,
    torch.float16,
    torch.bfloat16,
    torch.float32,
    torch.float64,
    torch.bool,
]


class Envs:
    """One env under test and one reference env per case, made once (construction is the slow part)."""

    def __init__(self) -> None:
        self._made: dict[str, tuple[Any, Any]] = {}

    def __call__(self, case: Case) -> tuple[Any, Any]:
        if case.name not in self._made:
            self._made[case.name] = (case.make(), case.make())
        return self._made[case.name]


ENVS = Envs()


def single_action_space(env: Any, case: Case) -> gym.Space:
    return env.single_action_space if case.num_envs else env.action_space


# -- what an action input stands for ---------------------------------------------------------------
def as_array(value: Any) -> np.ndarray:
    """The numbers in ``value`` (numpy, torch or Python) as a numpy array, keeping the kind of number."""
    if isinstance(value, torch.Tensor):
        return value.to(torch.float64).numpy() if value.dtype == torch.bfloat16 else value.numpy()
    return np.asarray(value)


def intended_action(value: Any, space: gym.Space, shape: tuple[int, ...]) -> tuple[str, np.ndarray | None]:
    """``("valid", action)``, ``("clip", clipped action)`` (refuse or clip) or ``("invalid", None)``."""
    array = as_array(value)
    if array.shape != shape or array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        return "invalid", None
    if np.issubdtype(array.dtype, np.complexfloating):
        return "invalid", None
    if isinstance(space, gym.spaces.Discrete):
        if not np.issubdtype(array.dtype, np.integer):
            return "invalid", None
        exact = array.astype(object)  # Python ints: no uint64 overflow in the comparison
        inside = ((exact >= space.start) & (exact < space.start + space.n)).all()
        return ("valid", array.astype(np.int64)) if inside else ("invalid", None)
    real = array.astype(np.float64)
    if not np.isfinite(real).all():
        return "invalid", None
    low, high = np.broadcast_to(space.low, shape), np.broadcast_to(space.high, shape)
    if ((real < low) | (real > high)).any():
        return "clip", np.clip(real, low, high)
    return "valid", real


@st.composite
def action_inputs(draw: st.DrawFn, space: gym.Space, batch: int | None) -> Any:
    """Numbers of every dtype in every container: Python, numpy scalars and arrays, torch; some of the
    wrong shape, out of range, NaN or infinite."""
    expected = ((batch,) if batch else ()) + space.shape
    shape = draw(st.sampled_from([expected] * 6 + [(), (1,), (*expected, 1), (2, *expected)]))
    container = draw(st.sampled_from(["python", "numpy", "torch"]))
    if container == "torch":
        dtype = draw(st.sampled_from(TORCH_DTYPES))
        kind = "bool" if dtype == torch.bool else "float" if dtype.is_floating_point else "int"
    elif container == "numpy":
        dtype = draw(st.sampled_from(NUMPY_DTYPES))
        kind = {"b": "bool", "f": "float"}.get(dtype.kind, "int")
    else:
        dtype, kind = None, draw(st.sampled_from(["bool", "float", "int"]))
    if isinstance(space, gym.spaces.Discrete):
        int_range, float_range = (-2, int(space.n) + 2), (-2.0, float(space.n) + 2)
    else:
        int_range, float_range = (-2, 2), (float(space.low.min()) - 1, float(space.high.max()) + 1)
    if kind == "int":
        low, high = int_range
        if container != "python":  # stay inside the dtype: numpy refuses to cast 300 to int8
            info = torch.iinfo(dtype) if container == "torch" else np.iinfo(dtype)
            low, high = max(low, info.min), min(high, info.max)
        elements = st.integers(low, high)
    elif kind == "float":
        # Values the dtype holds exactly (numpy and torch dtypes print alike, bar the "torch." prefix).
        width = {"float16": 16, "float32": 32}.get(str(dtype).removeprefix("torch."), 64)
        elements = st.one_of(
            st.floats(*float_range, width=width),
            st.integers(*int_range).map(float),
            st.sampled_from([math.nan, math.inf, -math.inf]),
        )
    else:
        elements = st.booleans()
    values = np.array(draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape))))
    values = values.reshape(shape)
    if container == "python":
        return values.tolist() if shape else values.item()
    if container == "numpy":
        array = values.astype(dtype)
        return array[()] if shape == () and draw(st.booleans()) else array  # a numpy scalar or a 0-d array
    return torch.tensor(values.tolist(), dtype=dtype)


def numpy_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: numpy_tree(item) for key, item in value.items()}
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else value


def assert_steps_equal(got: tuple, expected: tuple) -> None:
    got_obs, expected_obs = numpy_tree(got[0]), numpy_tree(expected[0])
    if isinstance(got_obs, dict):
        for key in expected_obs:
            np.testing.assert_array_equal(got_obs[key], expected_obs[key])
    else:
        np.testing.assert_array_equal(got_obs, expected_obs)
    for got_part, expected_part in zip(got[1:4], expected[1:4], strict=True):
        np.testing.assert_array_equal(numpy_tree(got_part), numpy_tree(expected_part))


def assert_well_formed(env: Any, case: Case, step: tuple) -> None:
    obs, reward, terminated, truncated, info = (numpy_tree(part) for part in step)
    assert env.observation_space.contains(obs), f"observation {obs!r} outside {env.observation_space}"
    if case.num_envs:
        assert np.issubdtype(reward.dtype, np.floating) and np.isfinite(reward).all()
        assert terminated.dtype == truncated.dtype == bool
    else:
        assert isinstance(reward, float | np.floating) and math.isfinite(reward)
        assert isinstance(terminated, bool | np.bool_) and isinstance(truncated, bool | np.bool_)


def default_action(env: Any, case: Case) -> Any:
    space = single_action_space(env, case)
    single = np.zeros(space.shape, space.dtype) if isinstance(space, gym.spaces.Box) else np.int64(1)
    if not case.num_envs:
        return single
    batch = np.stack([single] * case.num_envs)
    return torch.as_tensor(batch) if case.as_tensors else batch


def check_action(case: Case, value: Any) -> None:
    env, reference = ENVS(case)
    space = single_action_space(env, case)
    expected_shape = ((case.num_envs,) if case.num_envs else ()) + space.shape
    verdict, intended = intended_action(value, space, expected_shape)
    env.reset(seed=0)
    try:
        step = env.step(value)
    except (ValueError, TypeError) as error:
        assert "action" in str(error).lower(), f"the error does not name the action: {error}"
        assert verdict != "valid", f"refused the valid action {value!r} ({verdict}): {error}"
        # A refused step leaves no trace: the episode goes on as if it had not been tried.
        reference.reset(seed=0)
        assert_steps_equal(env.step(default_action(env, case)), reference.step(default_action(env, case)))
        return
    assert verdict != "invalid", f"accepted the invalid action {value!r}"
    assert_well_formed(env, case, step)
    reference.reset(seed=0)
    # Discrete actions as int64; Box actions as float64, so that MuJoCo gets the very same controls.
    canonical = intended.astype(space.dtype) if isinstance(space, gym.spaces.Discrete) else intended
    assert_steps_equal(step, reference.step(torch.as_tensor(canonical) if case.as_tensors else canonical))


def is_real(value: Any) -> bool:
    number = isinstance(value, int | float | np.integer | np.floating)
    return number and not isinstance(value, bool | np.bool_) and math.isfinite(value)


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_) and value >= 1


ARGUMENT_VALUES = st.one_of(
    st.integers(-3, 120),
    st.integers(-3, 120).map(np.int64),
    st.floats(-1e3, 1e3, allow_subnormal=False),
    st.floats(0, 1).map(np.float32),
    st.sampled_from([math.nan, math.inf, -math.inf, np.float64("nan")]),
    st.booleans(),
    st.sampled_from(["1", "", None, [1], (0.5,)]),
)


@dataclass
class Argument:
    """One constructor argument of one env, and which of its values are valid."""

    name: str
    make: Callable[..., Any]  # make(**{name: value}) -> env
    valid: Callable[[Any], bool]

    def __repr__(self) -> str:
        return f"{self.make.__name__}-{self.name}"


def check_argument(argument: Argument, value: Any) -> None:
    """``argument.make(name=value)`` builds an env that resets and steps, or refuses ``value`` by name."""
    try:
        env = argument.make(**{argument.name: value})
    except (ValueError, TypeError) as error:
        assert argument.name in str(error), f"the error does not name {argument.name}: {error}"
        assert not argument.valid(value), f"refused the valid {argument.name}={value!r}: {error}"
        return
    assert argument.valid(value), f"accepted {argument.name}={value!r}"
    env.reset(seed=0)
    vector = isinstance(env, gym.vector.VectorEnv)
    case = Case(repr(argument), argument.make, num_envs=env.num_envs if vector else None)
    step = env.step(env.action_space.sample())
    assert_well_formed(env, case, step)
