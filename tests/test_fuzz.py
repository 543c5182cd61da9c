"""Issue 14: a property-based fuzz suite over the control envs, single and vector, numpy and tensor.

The property and the inputs are in :mod:`fuzzing`: every action input or constructor argument gives
the right step (or a working env) or a ``ValueError``/``TypeError`` naming it, nothing else. The
TokenEnv's fuzz suite is tests/test_fuzz_token.py.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import gymnasium as gym
import pytest
from fuzzing import (
    ARGUMENT_VALUES,
    ENVS,
    FUZZ_ACTIONS,
    FUZZ_ARGUMENTS,
    Argument,
    Case,
    action_inputs,
    check_action,
    check_argument,
    is_positive_int,
    is_real,
    single_action_space,
)
from hypothesis import given
from hypothesis import strategies as st

import rlhf_envs  # noqa: F401  (registers the env ids)
from rlhf_envs.envs.car import CarDriving, CarDrivingVectorEnv
from rlhf_envs.envs.half_cheetah import HalfCheetah
from rlhf_envs.envs.tabular import TabularMDP, TabularMDPVectorEnv

SINGLE = [
    Case("TabularMDP", lambda: gym.make("rlhf_envs/TabularMDP-v0")),
    Case("CarDriving", lambda: gym.make("rlhf_envs/CarDriving-v0")),
    Case("CarDriving-continuous", lambda: gym.make("rlhf_envs/CarDriving-v0", continuous=True)),
    Case("HalfCheetah", lambda: gym.make("rlhf_envs/HalfCheetah-v0")),
]
VECTOR_ENVS = {
    "TabularMDPVectorEnv": lambda tensors: TabularMDPVectorEnv(3, device="cpu", as_tensors=tensors),
    "CarDrivingVectorEnv": lambda tensors: CarDrivingVectorEnv(3, device="cpu", as_tensors=tensors),
    "CarDrivingVectorEnv-continuous": lambda tensors: CarDrivingVectorEnv(
        3, device="cpu", as_tensors=tensors, continuous=True
    ),
}
VECTOR = [
    Case(
        f"{name}-{form}", functools.partial(make, form == "tensors"), num_envs=3, as_tensors=form == "tensors"
    )
    for form in ("numpy", "tensors")
    for name, make in VECTOR_ENVS.items()
]


@pytest.mark.parametrize("case", SINGLE + VECTOR, ids=repr)
@FUZZ_ACTIONS
@given(data=st.data())
def test_any_action_input_steps_correctly_or_is_refused_naming_the_action(case, data):
    env, _ = ENVS(case)
    value = data.draw(action_inputs(single_action_space(env, case), case.num_envs))
    check_action(case, value)


def tabular(**kwargs: Any) -> Any:
    return TabularMDP(**kwargs)


def tabular_vector(**kwargs: Any) -> Any:
    return TabularMDPVectorEnv(**{"device": "cpu"} | kwargs)


def car(**kwargs: Any) -> Any:
    return CarDriving(**kwargs)


def car_vector(**kwargs: Any) -> Any:
    return CarDrivingVectorEnv(**{"device": "cpu"} | kwargs)


def half_cheetah(**kwargs: Any) -> Any:
    return HalfCheetah(**kwargs)


ARGUMENTS = [
    Argument("horizon", tabular, is_positive_int),
    Argument("gamma", tabular, lambda value: is_real(value) and 0 <= value < 1),
    Argument("num_envs", tabular_vector, is_positive_int),
    Argument(
        "horizon", tabular_vector, lambda value: value is None or is_positive_int(value)
    ),  # None: default
    Argument("max_episode_steps", tabular_vector, lambda value: value is None or is_positive_int(value)),
    Argument("horizon", car, is_positive_int),
    Argument("dt", car, lambda value: is_real(value) and value > 0),
    Argument("arrival_reward", car, is_real),
    Argument("collision_reward", car, is_real),
    Argument("lead_brake_probability", car, lambda value: is_real(value) and 0 <= value <= 1),
    Argument("sensor_range", car, lambda value: is_real(value) and value > 0),
    Argument("num_envs", car_vector, is_positive_int),
    Argument("horizon", half_cheetah, is_positive_int),
    Argument("frame_width", half_cheetah, lambda value: is_real(value) and value > 0),
    Argument("max_torso_angle", half_cheetah, lambda value: is_real(value) and 0 < value < math.pi),
]


@pytest.mark.parametrize("argument", ARGUMENTS, ids=repr)
@FUZZ_ARGUMENTS
@given(value=ARGUMENT_VALUES)
def test_any_constructor_argument_builds_a_working_env_or_is_refused_by_name(argument, value):
    check_argument(argument, value)
