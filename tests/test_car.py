"""The car-driving MDP: spaces, dynamics, rewards, faces, rendering and learnability."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import rlhf_envs  # noqa: F401  (registers the env ids)
from rlhf_envs.envs.car import (
    EGO_POSITION,
    EGO_SPEED,
    LEAD_POSITION,
    LEAD_SPEED,
    RGB_SHAPE,
    CarDriving,
    CarDrivingConfig,
    CarDrivingCore,
    CarDrivingVectorEnv,
)

ENV_ID = "rlhf_envs/CarDriving-v0"
DECELERATE, KEEP, ACCELERATE = 0, 1, 2
CONFIG = CarDrivingConfig()


def rollout_rates(policy, num_envs: int = 1000, seed: int = 0, **config) -> dict[str, float]:
    """Arrival and collision rates and mean returns of ``policy(obs) -> actions`` over one episode each."""
    env = CarDrivingVectorEnv(num_envs, device="cpu", as_tensors=True, **config)
    obs, _ = env.reset(seed=seed)
    done = torch.zeros(num_envs, dtype=torch.bool)
    arrived, collided = torch.zeros_like(done), torch.zeros_like(done)
    returns, lecture_returns = torch.zeros(num_envs), torch.zeros(num_envs)
    for _ in range(env.core.horizon):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        live = ~done
        arrived |= info["arrived"] & live
        collided |= info["collided"] & live
        returns += reward * live
        lecture_returns += info["lecture_reward"] * live
        done |= terminated | truncated
    assert bool(done.all())
    return {
        "arrived": arrived.float().mean().item(),
        "collided": collided.float().mean().item(),
        "return": returns.mean().item(),
        "lecture_return": lecture_returns.mean().item(),
    }


def constant(action: int):
    return lambda obs: torch.full((obs.shape[0],), action)


def keep_distance(obs: torch.Tensor) -> torch.Tensor:
    """A hand-written safe driver: accelerate while the gap after accelerating stays above ~a car's speed."""
    _, speed, gap, lead_speed = obs.unbind(1)
    faster = speed + CONFIG.acceleration
    accelerate = gap + lead_speed - faster > faster + 4.0
    keep = gap + lead_speed - speed > speed + 4.0
    return torch.where(accelerate, ACCELERATE, torch.where(keep, KEEP, DECELERATE))


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"continuous": True},
        {"discrete_observation": True},
        {"reward": "speed", "render_mode": "rgb_array"},
    ],
)
def test_check_env(kwargs):
    check_env(gym.make(ENV_ID, **kwargs).unwrapped, skip_render_check=False)
    sb3_check_env(CarDriving(**kwargs))


def test_spaces():
    env = gym.make(ENV_ID)
    assert env.action_space == gym.spaces.Discrete(3)
    assert env.observation_space.shape == (4,) and env.observation_space.dtype == np.float32
    np.testing.assert_allclose(env.observation_space.high, [215.0, 15.0, 60.0, 10.0])
    continuous = gym.make(ENV_ID, continuous=True)
    assert continuous.action_space == gym.spaces.Box(-3.0, 2.0, (1,), np.float32)
    discrete = gym.make(ENV_ID, discrete_observation=True)
    assert discrete.observation_space == gym.spaces.Discrete(8 * 6 * 10)


def test_make_vec_uses_the_batched_core():
    envs = gym.make_vec(ENV_ID, num_envs=5, vectorization_mode="vector_entry_point", device="cpu", horizon=7)
    assert isinstance(envs, CarDrivingVectorEnv) and envs.core.horizon == 7
    obs, _ = envs.reset(seed=0)
    assert obs.shape == (5, 4) and obs.dtype == np.float32
    obs, reward, terminated, truncated, info = envs.step(np.full(5, ACCELERATE))
    assert reward.shape == terminated.shape == truncated.shape == (5,)
    assert set(info) == {"arrived", "collided", "lecture_reward", "_arrived", "_collided", "_lecture_reward"}


def test_seeded_determinism():
    def trajectory(seed: int) -> list:
        env = gym.make(ENV_ID)
        obs, _ = env.reset(seed=seed)
        steps = [obs]
        rng = np.random.default_rng(0)
        for _ in range(CONFIG.horizon):
            obs, reward, terminated, truncated, info = env.step(int(rng.integers(3)))
            steps += [obs, reward, info]
            if terminated or truncated:
                break
        return steps

    first, again, other = trajectory(3), trajectory(3), trajectory(4)
    np.testing.assert_equal(first, again)
    assert not np.array_equal(first[0], other[0])

    def vector_run(seed: int) -> np.ndarray:
        envs = CarDrivingVectorEnv(16, device="cpu")
        observations = [envs.reset(seed=seed)[0]]
        for _ in range(60):  # past the horizon, through autoresets
            observations.append(envs.step(np.full(16, ACCELERATE))[0])
        return np.stack(observations)

    np.testing.assert_array_equal(vector_run(1), vector_run(1))


STATES = st.tuples(
    st.floats(0.0, CONFIG.destination, exclude_max=True, width=32),
    st.floats(0.0, CONFIG.max_speed, width=32),
    st.floats(0.5, 100.0, width=32),
    st.floats(0.0, CONFIG.lead_cruise_speed, width=32),
)


@settings(max_examples=60, deadline=None)
@given(
    states=st.lists(STATES, min_size=1, max_size=32),
    actions=st.lists(st.integers(0, 2), min_size=32, max_size=32),
    seed=st.integers(0, 2**31),
)
def test_dynamics_properties(states, actions, seed):
    core = CarDrivingCore(CarDrivingConfig())
    rows = [(x, v, x + gap, lead_v) for x, v, gap, lead_v in states]
    state = torch.tensor(rows, dtype=torch.float32)
    action = torch.tensor(actions[: len(rows)])
    generator = torch.Generator().manual_seed(seed)
    next_state, reward, terminated, info = core.step(state, action, generator)

    # Speeds stay within bounds, and at non-negative speed nobody moves backwards.
    assert bool(
        (next_state[:, EGO_SPEED] >= 0).all() and (next_state[:, EGO_SPEED] <= CONFIG.max_speed).all()
    )
    assert bool((next_state[:, LEAD_SPEED] >= 0).all())
    assert bool((next_state[:, LEAD_SPEED] <= CONFIG.lead_cruise_speed).all())
    assert bool((next_state[:, EGO_POSITION] >= state[:, EGO_POSITION]).all())
    assert bool((next_state[:, LEAD_POSITION] >= state[:, LEAD_POSITION]).all())
    # The ego's speed moves by the chosen acceleration unless a bound stops it.
    change = torch.tensor([-CONFIG.deceleration, 0.0, CONFIG.acceleration])[action]
    expected_speed = (state[:, EGO_SPEED] + change * CONFIG.dt).clamp(0.0, CONFIG.max_speed)
    torch.testing.assert_close(next_state[:, EGO_SPEED], expected_speed)
    # A collision is flagged exactly when the gap reaches zero.
    gap = next_state[:, LEAD_POSITION] - next_state[:, EGO_POSITION]
    assert torch.equal(info["collided"], gap <= 0)
    assert torch.equal(info["arrived"], (next_state[:, EGO_POSITION] >= CONFIG.destination) & (gap > 0))
    assert torch.equal(terminated, info["arrived"] | info["collided"])
    expected = torch.where(info["arrived"], 50.0, torch.where(info["collided"], -1000.0, 0.0))
    assert torch.equal(reward, expected) and torch.equal(info["lecture_reward"], expected)


@settings(max_examples=40, deadline=None)
@given(state=STATES, acceleration=st.floats(-10.0, 10.0, width=32), seed=st.integers(0, 2**31))
def test_continuous_acceleration_is_clipped_to_its_bounds(state, acceleration, seed):
    core = CarDrivingCore(CarDrivingConfig(continuous=True))
    x, v, gap, lead_v = state
    start = torch.tensor([[x, v, x + gap, lead_v]], dtype=torch.float32)
    next_state, *_ = core.step(start, torch.tensor([[acceleration]]), torch.Generator().manual_seed(seed))
    clipped = min(max(acceleration, -CONFIG.deceleration), CONFIG.acceleration)
    expected = torch.tensor(v + clipped * CONFIG.dt).clamp(0.0, CONFIG.max_speed)
    torch.testing.assert_close(next_state[0, EGO_SPEED], expected.to(torch.float32))


def test_task_is_non_trivial():
    flat_out = rollout_rates(constant(ACCELERATE))
    assert flat_out["collided"] >= 0.9
    for action in (DECELERATE, KEEP):  # crawling, or keeping the slow starting speed
        assert rollout_rates(constant(action))["arrived"] == 0.0
    safe = rollout_rates(keep_distance)
    assert safe["arrived"] >= 0.99 and safe["collided"] == 0.0


def test_speed_reward_prefers_crashing():
    # The proxy ranks flat out (which crashes) above safe driving; the lecture's reward the other way.
    flat_out = rollout_rates(constant(ACCELERATE), reward="speed")
    safe = rollout_rates(keep_distance, reward="speed")
    assert flat_out["collided"] >= 0.9 and safe["collided"] == 0.0
    assert flat_out["return"] > safe["return"]
    assert flat_out["lecture_return"] < safe["lecture_return"]


def test_touching_is_a_collision_and_beats_arriving():
    # The lead car always brakes, so it stands still at 12 m; the ego ends the step at 12 m in the
    # first row (gap exactly 0), short of it in the second, and on the destination in the third.
    core = CarDrivingCore(CarDrivingConfig(lead_brake_probability=1.0, destination=12.0))
    state = torch.tensor([[0.0, 10.0, 12.0, 0.0], [0.0, 9.0, 12.0, 0.0], [0.0, 10.0, 13.0, 0.0]])
    _, reward, terminated, info = core.step(
        state, torch.tensor([ACCELERATE, KEEP, ACCELERATE]), torch.Generator()
    )
    assert info["collided"].tolist() == [True, False, False]
    assert info["arrived"].tolist() == [False, False, True]
    assert reward.tolist() == [-1000.0, 0.0, 50.0] and terminated.tolist() == [True, False, True]


def test_speed_reward_values():
    core = CarDrivingCore(CarDrivingConfig(reward="speed"))
    state = torch.tensor([[0.0, 9.0, 100.0, 10.0], [0.0, 14.0, 100.0, 10.0], [0.0, 3.0, 100.0, 10.0]])
    _, reward, _, info = core.step(state, torch.tensor([ACCELERATE] * 3), torch.Generator().manual_seed(0))
    torch.testing.assert_close(reward, torch.tensor([1.0 / 5.0, 1.0, 0.0]))
    assert torch.equal(info["lecture_reward"], torch.zeros(3))


def test_discrete_observation_bins():
    core = CarDrivingCore(CarDrivingConfig(discrete_observation=True))
    # (ego speed, lead speed, gap) -> (bin, bin, bin) with bins [edge[i-1], edge[i]).
    state = torch.tensor(
        [
            [0.0, 0.0, 0.5, 0.0],  # lowest bins
            [10.0, 15.0, 110.0, 10.0],  # highest bins; the gap beyond the sensor range
            [5.0, 3.0, 11.0, 2.0],  # speed 3 -> bin 2, lead 2 -> bin 1, gap 6 -> bin 2
        ]
    )
    expected = torch.tensor([0, (7 * 6 + 5) * 10 + 9, (2 * 6 + 1) * 10 + 2])
    assert torch.equal(core.observe(state), expected)
    env = gym.make(ENV_ID, discrete_observation=True)
    obs, _ = env.reset(seed=0)
    assert isinstance(obs, int) and env.observation_space.contains(obs)


def test_info_always_carries_the_outcome():
    env = gym.make(ENV_ID, reward="speed", continuous=True)
    env.reset(seed=0)
    _, _, _, _, info = env.step(np.array([0.5], np.float32))
    assert set(info) == {"arrived", "collided", "lecture_reward"}
    assert isinstance(info["arrived"], bool) and isinstance(info["collided"], bool)


def test_vector_env_tensors_and_autoreset():
    envs = CarDrivingVectorEnv(64, device="cpu", as_tensors=True, horizon=50, autoreset_mode="SameStep")
    obs, _ = envs.reset(seed=0)
    for _ in range(20):
        obs, reward, terminated, truncated, info = envs.step(torch.full((64,), ACCELERATE))
        if terminated.any():
            break
    assert bool(terminated.any()) and bool(info["collided"][terminated].all())
    assert torch.equal(info["_final_obs"], terminated | truncated)
    # Collided episodes end touching the lead car and restart at position 0.
    assert bool((info["final_obs"][terminated, 2] == 0).all())
    assert bool((obs[terminated, EGO_POSITION] == 0).all())
    moved = envs.core.to("cpu")
    assert moved.observe(envs._state).shape == (64, 4)


def test_rgb_array_render():
    env = gym.make(ENV_ID, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == RGB_SHAPE and frame.dtype == np.uint8
    colours = {tuple(pixel) for pixel in frame.reshape(-1, 3)}
    assert {(40, 110, 230), (220, 50, 40), (250, 250, 250)} <= colours  # ego, lead, finish line
    # The ego car's pixels move right as it drives.
    ego_columns = np.flatnonzero((frame == (40, 110, 230)).all(axis=2).any(axis=0))
    for _ in range(5):
        env.step(ACCELERATE)
    later = np.flatnonzero((env.render() == (40, 110, 230)).all(axis=2).any(axis=0))
    assert later.min() > ego_columns.min()


def test_ansi_render():
    env = gym.make(ENV_ID, render_mode="ansi")
    env.reset(seed=0)
    line = env.render()
    assert "\n" not in line and line.startswith("E") and "L" in line and "gap" in line
    envs = CarDrivingVectorEnv(3, device="cpu", render_mode="ansi")
    envs.reset(seed=0)
    assert len(envs.render()) == 3


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"reward": "fast"}, "reward must be one of"),
        ({"max_speed": 8.0}, "max_speed"),
        ({"dt": 0.0}, r"dt must be in \(0"),
        ({"horizon": 0}, "horizon"),
        ({"lead_brake_probability": 1.5}, "lead_brake_probability"),
        ({"initial_gap": (0.0, 5.0)}, "initial_gap"),
        ({"initial_lead_speed": (5.0, 12.0)}, "initial_lead_speed"),
        ({"gap_bins": (5.0, 3.0)}, "gap_bins"),
        ({"render_mode": "human"}, "render_mode"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CarDriving(**kwargs)


def test_bad_action_raises():
    env = CarDriving()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the action space"):
        env.step(3)
    with pytest.raises(TypeError):
        CarDriving(speed_limit=3.0)


@pytest.mark.parametrize("algorithm", [PPO, DQN])
def test_sb3_runs(algorithm):
    kwargs = {"n_steps": 64, "batch_size": 64} if algorithm is PPO else {"learning_starts": 32}
    model = algorithm("MlpPolicy", gym.make(ENV_ID), seed=0, device="cpu", **kwargs)
    model.learn(256)
    action, _ = model.predict(gym.make(ENV_ID).reset(seed=0)[0], deterministic=True)
    assert gym.make(ENV_ID).action_space.contains(int(action))


def test_q_learning_arrives_safely():
    from agents import LinearSchedule, QLearning

    env = gym.make(ENV_ID, discrete_observation=True)
    agent = QLearning(
        env,
        learning_rate=LinearSchedule(0.5, 0.05),
        gamma=0.99,
        exploration=LinearSchedule(1.0, 0.02, fraction=0.6),
        num_envs=512,
        device="cpu",
        seed=0,
    )
    agent.learn(150_000, progress_bar=False)
    safe_arrivals = 0
    for episode in range(100):
        obs, _ = env.reset(seed=10_000 + episode)
        terminated = truncated = False
        while not (terminated or truncated):
            action, _ = agent.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(int(action))
        safe_arrivals += info["arrived"] and not info["collided"]
    assert safe_arrivals >= 90
