"""Issue 14, items 1, 3 and 9 for the control envs: every bad input gets a clear error or the right result.

Each test reproduces one finding of the issue and states the fixed behaviour: a ``ValueError`` or
``TypeError`` whose message names the argument, or the right result. The TokenEnv's are in
tests/test_bad_inputs_token.py; the fuzz suite (tests/test_fuzz.py) generalises these.
"""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import rlhf_envs  # noqa: F401  (registers the env ids)
from rlhf_envs.envs.car import CarDriving, CarDrivingConfig, CarDrivingVectorEnv
from rlhf_envs.envs.tabular import DEFAULT_R, TabularMDP, TabularMDPVectorEnv

INTEGER_DTYPES = [np.int8, np.int16, np.int32, np.uint8, np.uint16, np.uint32, np.uint64]


# -- item 1: integer actions of every dtype --------------------------------------------------------
@pytest.mark.parametrize("dtype", INTEGER_DTYPES, ids=lambda dtype: dtype.__name__)
@pytest.mark.parametrize("vector_env", [TabularMDPVectorEnv, CarDrivingVectorEnv])
def test_vector_envs_read_every_integer_dtype_as_actions(vector_env, dtype):
    """Before the fix uint8 was a boolean mask (row i got action i) and the other dtypes raised IndexError."""
    actions = np.array([1, 2, 0])
    expected_env = vector_env(num_envs=3, device="cpu")
    expected_env.reset(seed=0)
    expected = expected_env.step(actions.astype(np.int64))
    env = vector_env(num_envs=3, device="cpu")
    env.reset(seed=0)
    got = env.step(actions.astype(dtype))
    for got_part, expected_part in zip(got[:4], expected[:4], strict=True):
        np.testing.assert_array_equal(got_part, expected_part)


@pytest.mark.parametrize(
    "actions",
    [np.array([True, False, True]), np.array([1.0, 2.0, 0.0]), np.array([1, 2, np.nan]), np.array([1, 2, 3])],
    ids=["bool", "integral-float", "nan", "out-of-range"],
)
@pytest.mark.parametrize("as_tensors", [False, True], ids=["numpy", "tensors"])
def test_vector_envs_refuse_actions_that_are_not_integers_in_range(actions, as_tensors):
    env = TabularMDPVectorEnv(num_envs=3, device="cpu", as_tensors=as_tensors)
    env.reset(seed=0)
    with pytest.raises((ValueError, TypeError), match="action"):
        env.step(torch.as_tensor(actions) if as_tensors else actions)


# -- item 3: non-finite and wrongly typed values ---------------------------------------------------
@pytest.mark.parametrize("reward", ["lecture", "forward"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_half_cheetah_refuses_non_finite_actions(reward, bad):
    """Before the fix a NaN action stepped MuJoCo: NaN reward, or 1.0 under the lecture reward."""
    env = gym.make("rlhf_envs/HalfCheetah-v0", reward=reward)
    env.reset(seed=0)
    action = np.zeros(6, np.float32)
    action[2] = bad
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize("continuous_env", ["half_cheetah", "car"])
def test_continuous_envs_refuse_bool_actions(continuous_env):
    """Before the fix ``[False] * 6`` was taken as zero torques, and bools as accelerations by the car."""
    if continuous_env == "half_cheetah":
        env, action = gym.make("rlhf_envs/HalfCheetah-v0"), np.zeros(6, bool)
    else:
        env, action = CarDriving(continuous=True), np.array([True])
    env.reset(seed=0)
    with pytest.raises(TypeError, match="action"):
        env.step(action)


@pytest.mark.parametrize("env_class", [TabularMDP, TabularMDPVectorEnv])
@pytest.mark.parametrize(
    "horizon", [2.5, True, np.float64(3.0), math.nan], ids=["2.5", "True", "float64", "nan"]
)
def test_tabular_refuses_a_horizon_that_is_not_an_integer(env_class, horizon):
    """Before the fix ``horizon=2.5`` and ``horizon=True`` were accepted."""
    with pytest.raises((TypeError, ValueError), match="horizon"):
        env_class(horizon=horizon, device="cpu")


def test_tabular_never_turns_a_finite_reward_into_infinity():
    """Before the fix R = 1e300 became inf in the float32 reward table: now R is refused, naming the entry."""
    R = DEFAULT_R.copy()
    R[0, 0] = 1e300
    with pytest.raises(ValueError, match=r"R\[0, 0\]"):
        TabularMDP(R=R)


@pytest.mark.parametrize("field", ["arrival_reward", "collision_reward", "dt", "sensor_range"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, True, "1"])
def test_car_config_refuses_non_finite_or_non_real_numbers(field, bad):
    """Before the fix ``CarDrivingConfig(arrival_reward=nan)`` and ``dt=inf`` were accepted."""
    with pytest.raises((TypeError, ValueError), match=field):
        CarDrivingConfig(**{field: bad})


@pytest.mark.parametrize("num_envs", ["1", 2.5, True, 0])
def test_vector_envs_refuse_a_num_envs_that_is_not_a_positive_integer(num_envs):
    """Before the fix ``num_envs="1"`` raised a TypeError about ``<`` that did not name it."""
    with pytest.raises((TypeError, ValueError), match="num_envs"):
        CarDrivingVectorEnv(num_envs=num_envs, device="cpu")


# -- item 9: stepping a finished episode -----------------------------------------------------------
def make_tabular():
    return TabularMDP(horizon=2), 0


def make_car():
    # The lead car starts 1 m ahead at standstill: accelerating hits it in the first step.
    return CarDriving(initial_gap=(1.0, 1.0), initial_lead_speed=(0.0, 0.0)), 2


def make_half_cheetah():
    return gym.make("rlhf_envs/HalfCheetah-v0", horizon=2), np.zeros(6, np.float32)


@pytest.mark.parametrize("make", [make_tabular, make_car, make_half_cheetah])
def test_every_single_env_refuses_to_step_a_finished_episode(make):
    """One documented behaviour for all our single envs (Gymnasium leaves it undefined): stepping an
    episode that has terminated or been truncated raises ``RuntimeError`` naming ``reset()``, as the
    TokenEnv (and ``step()`` before ``reset()`` in every env) does; ``reset()`` starts a new one.

    Before the fix the car paid +50/−1000 again on every extra step, and tabular and HalfCheetah went on.
    """
    env, action = make()
    env.reset(seed=0)
    for _ in range(2):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            break
    assert terminated or truncated, "the episode did not end"
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step(action)
    env.reset(seed=1)
    env.step(action)  # a new episode steps again
