"""rlhf_envs/HalfCheetah-v0: lecture reward on set states, Gymnasium parity, rendering, reward models."""

from __future__ import annotations

import copy
import inspect
import math
import pickle

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import rlhf_envs  # noqa: F401  (registers the ids)
from rlhf_envs.envs.batched import truncates_itself
from rlhf_envs.envs.half_cheetah import HalfCheetah, run_episode
from rlhf_envs.rewards import LearnedReward

ENV_ID = "rlhf_envs/HalfCheetah-v0"
ZERO = np.zeros(6, dtype=np.float32)


def place(env: HalfCheetah, x: float = 0.0, pitch: float = 0.0) -> None:
    """Put the cheetah at root x `x`, torso pitch `pitch`, high enough to be clear of the floor, at rest."""
    qpos = env.init_qpos.copy()
    qpos[0], qpos[1], qpos[2] = x, 0.5, pitch
    env.set_state(qpos, np.zeros(env.model.nv))


@pytest.mark.parametrize("reward", ["lecture", "forward"])
def test_check_env_gymnasium_and_sb3(reward: str) -> None:
    gym_check_env(HalfCheetah(reward=reward), skip_render_check=True)
    sb3_check_env(HalfCheetah(reward=reward))
    sb3_check_env(gym.make(ENV_ID, reward=lambda obs, action, next_obs: next_obs[8]))


@pytest.mark.parametrize("n", [1, 7, 20])
def test_exit_bonus_is_ten_times_remaining_steps(n: int) -> None:
    env = HalfCheetah(horizon=20, frame_width=4.0)
    env.reset(seed=0)
    for _ in range(n - 1):
        place(env, x=0.0)
        assert env.step(ZERO)[1] == 1.0
    place(env, x=2.5)  # past the right edge at frame_width / 2 = 2 m
    _, reward, terminated, truncated, info = env.step(ZERO)
    assert reward == 10.0 * (20 - n)
    assert terminated and info["exited"] and info["step"] == n
    assert truncated == (n == 20)
    assert info["x_position"] > 2.0


@pytest.mark.parametrize(
    ("pitch", "upright"),
    [(0.0, True), (0.8, True), (-0.8, True), (math.pi, False), (-math.pi / 2, False), (2 * math.pi, True)],
)
def test_upright_reward_follows_torso_pitch(pitch: float, upright: bool) -> None:
    env = HalfCheetah(max_torso_angle=1.0)
    env.reset(seed=0)
    place(env, pitch=pitch)
    _, reward, terminated, _, info = env.step(ZERO)
    assert info["upright"] is upright and not info["exited"] and not terminated
    assert reward == (1.0 if upright else 0.0)


def test_leaving_left_neither_pays_nor_ends() -> None:
    env = HalfCheetah(frame_width=4.0)
    env.reset(seed=0)
    place(env, x=-3.0, pitch=math.pi)
    _, reward, terminated, _, info = env.step(ZERO)
    assert (reward, terminated, info["exited"]) == (0.0, False, False)


def test_forward_reward_matches_gymnasium() -> None:
    ours = gym.make(ENV_ID, reward="forward")
    theirs = gym.make("HalfCheetah-v5")
    lecture = gym.make(ENV_ID)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(60, 6)).astype(np.float32)
    obs_a, _ = ours.reset(seed=3)
    obs_b, _ = theirs.reset(seed=3)
    lecture.reset(seed=3)
    assert np.array_equal(obs_a, obs_b)
    for action in actions:
        obs_a, reward_a, terminated, _, info = ours.step(action)
        obs_b, reward_b, _, _, info_b = theirs.step(action)
        assert reward_a == reward_b and np.array_equal(obs_a, obs_b)
        assert info["forward_reward"] == reward_b == info_b["reward_forward"] + info_b["reward_ctrl"]
        assert lecture.step(action)[4]["forward_reward"] == reward_b
        assert not terminated


def test_forward_reward_reports_exit_without_terminating() -> None:
    env = HalfCheetah(reward="forward", frame_width=4.0)
    env.reset(seed=0)
    place(env, x=2.5)
    _, _, terminated, _, info = env.step(ZERO)
    assert info["exited"] and info["lecture_reward"] == 10.0 * (1000 - 1) and not terminated


def test_info_carries_components_under_every_reward() -> None:
    keys = {"exited", "upright", "x_position", "forward_reward", "lecture_reward", "step"}
    for env in (
        gym.make(ENV_ID),
        gym.make(ENV_ID, reward="forward"),
        gym.make(ENV_ID, reward=lambda o, a, n: 0.0),
    ):
        env.reset(seed=0)
        assert keys <= env.step(env.action_space.sample())[4].keys()


def test_a_horizon_given_to_gym_make_truncates_once_at_that_n() -> None:
    env = gym.make(ENV_ID, horizon=5)
    env.reset(seed=0)
    ends = [env.step(ZERO)[3] for _ in range(5)]
    assert ends == [False] * 4 + [True]
    assert env.unwrapped.horizon == 5  # the N of the exit bonus


def test_default_horizon_is_the_registered_time_limit_which_alone_truncates() -> None:
    assert gym.spec(ENV_ID).max_episode_steps == inspect.signature(HalfCheetah).parameters["horizon"].default
    assert not truncates_itself(gym.make(ENV_ID).unwrapped)


def test_no_step_goes_past_the_horizon() -> None:
    env = HalfCheetah(horizon=3)
    env.reset(seed=0)
    assert [env.step(ZERO)[3] for _ in range(3)] == [False, False, True]
    with pytest.raises(RuntimeError, match=r"horizon N=3.*reset\(\)|reset\(\).*horizon"):
        env.step(ZERO)


def test_rgb_array_rendering_has_documented_size() -> None:
    env = gym.make(ENV_ID, render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (480, 480, 3) and frame.dtype == np.uint8 and frame.std() > 0
    small = gym.make(ENV_ID, render_mode="rgb_array", width=64, height=48)
    small.reset(seed=0)
    assert small.render().shape == (48, 64, 3)


def test_reward_model_plugs_in_and_true_reward_is_kept() -> None:
    def model(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
        return float(next_obs[8] - obs[8]) + 0.5 * float(action[0])

    learned = gym.make(ENV_ID, reward=model)
    plain = gym.make(ENV_ID)
    assert isinstance(learned.unwrapped, HalfCheetah)
    obs, _ = learned.reset(seed=1)
    plain.reset(seed=1)
    for action in np.random.default_rng(1).uniform(-1, 1, size=(30, 6)).astype(np.float32):
        next_obs, reward, _, _, info = learned.step(action)
        _, true_reward, _, _, _ = plain.step(action)
        assert reward == pytest.approx(model(obs, action, next_obs))
        assert info["true_reward"] == true_reward == info["lecture_reward"]
        obs = next_obs


def test_learned_reward_composes_with_any_named_reward() -> None:
    """``LearnedReward(HalfCheetah(reward="forward"), model)``: the model's reward, the forward one kept."""

    def model(obs: np.ndarray, action: np.ndarray, next_obs: np.ndarray) -> float:
        return float(next_obs[0]) - 2.0

    env = LearnedReward(HalfCheetah(reward="forward"), model)
    env.reset(seed=2)
    for action in np.random.default_rng(2).uniform(-1, 1, size=(10, 6)).astype(np.float32):
        next_obs, reward, terminated, _, info = env.step(action)
        assert reward == pytest.approx(float(next_obs[0]) - 2.0)
        assert info["true_reward"] == info["forward_reward"] != reward
        assert not terminated


def test_bad_arguments_name_the_problem() -> None:
    with pytest.raises(ValueError, match="reward must be one of"):
        HalfCheetah(reward="sideways")
    with pytest.raises(TypeError, match="gym.make"):
        HalfCheetah(reward=lambda o, a, n: 0.0)
    with pytest.raises(TypeError, match="callable reward model"):
        gym.make(ENV_ID, reward=3)
    with pytest.raises(ValueError, match="horizon"):
        HalfCheetah(horizon=0)
    with pytest.raises(ValueError, match="frame_width"):
        HalfCheetah(frame_width=-1.0)
    with pytest.raises(ValueError, match="max_torso_angle"):
        HalfCheetah(max_torso_angle=4.0)


def test_copies_keep_the_arguments() -> None:
    env = HalfCheetah(reward="forward", horizon=7, frame_width=3.0, ctrl_cost_weight=0.5)
    for clone in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        assert (clone.reward_name, clone.horizon, clone.frame_width) == ("forward", 7, 3.0)
        assert clone._ctrl_cost_weight == 0.5


class Gait:
    """An open-loop gait: each joint a sine of period 6 steps, the front leg half a cycle behind (it runs
    about 3 m forward in 100 steps)."""

    def __init__(self) -> None:
        self.step = 0

    def __call__(self, obs: np.ndarray) -> np.ndarray:
        self.step += 1
        phase = 2 * np.pi * self.step / 6 - np.array([0, 1, 2, np.pi, np.pi + 1, np.pi + 2])
        return np.sin(phase).astype(np.float32)


def test_run_episode_reports_both_returns_and_the_exit_under_any_reward() -> None:
    """A running cheetah exits the frame: under the lecture's reward the episode ends there with the
    bonus, under the forward reward it goes on, and both reports agree on when it exited."""
    lecture = gym.make(ENV_ID, horizon=100, frame_width=2.0)
    forward = gym.make(ENV_ID, reward="forward", horizon=100, frame_width=2.0)
    ended, went_on = (run_episode(env, Gait(), seed=3) for env in (lecture, forward))
    assert ended.exited and ended.exit_step == went_on.exit_step == ended.steps < 100
    assert went_on.steps == 100 and went_on.final_x > ended.final_x > 1.0
    # The bonus 10 (N - n), plus at most 1 per earlier upright step.
    assert 10 * (100 - ended.steps) <= ended.lecture_return <= 10 * (100 - ended.steps) + ended.steps - 1
    assert ended.forward_return > 0
    still = run_episode(gym.make(ENV_ID, horizon=20), lambda obs: ZERO, seed=0)
    assert not still.exited and still.exit_step is None and still.lecture_return == 20.0
    with pytest.raises(ValueError, match="rgb_array"):
        run_episode(lecture, lambda obs: ZERO, frames=2)


def test_run_episode_keeps_the_first_frames() -> None:
    env = gym.make(ENV_ID, horizon=5, render_mode="rgb_array", width=32, height=24)
    report = run_episode(env, lambda obs: ZERO, seed=0, frames=3)
    assert len(report.frames) == 3 and report.frames[0].shape == (24, 32, 3)
