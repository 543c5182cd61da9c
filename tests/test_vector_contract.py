"""Gymnasium 1.x's contracts, checked step by step on our control envs (issue 17).

Each test names the contract it checks: the three autoreset modes of ``VectorEnv`` (NEXT_STEP,
Gymnasium's default, SAME_STEP and DISABLED) and the vector info layout, the registration
(``max_episode_steps`` and the wrappers and make paths that rely on it), one-episode vector envs that
run the single env's episodes, ``check_env``, and agents that learn the same from every mode.
"""

from __future__ import annotations

import inspect
import os

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import rlhf_envs
from agents import DQN, PPO, QLearning
from rlhf_envs.envs.batched import CoreVectorEnv, truncates_itself
from rlhf_envs.envs.car import EGO_POSITION, CarDrivingConfig, CarDrivingVectorEnv
from rlhf_envs.envs.half_cheetah import HalfCheetah
from rlhf_envs.envs.tabular import TabularMDP, TabularMDPVectorEnv

CAR, TABULAR, CHEETAH = "rlhf_envs/CarDriving-v0", "rlhf_envs/TabularMDP-v0", "rlhf_envs/HalfCheetah-v0"
NEXT_STEP, SAME_STEP, DISABLED = AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP, AutoresetMode.DISABLED
ACCELERATE = 2
FINAL_KEYS = {"final_obs", "_final_obs", "final_info", "_final_info"}


def car_vector(mode: AutoresetMode, num_envs: int = 8, **kwargs) -> gym.vector.VectorEnv:
    """Cars that all accelerate: some crash (terminated) within the horizon of 6 steps, the others are
    truncated, so episodes end at different steps in different rows."""
    return gym.make_vec(
        CAR,
        num_envs=num_envs,
        vectorization_mode="vector_entry_point",
        autoreset_mode=mode,
        horizon=6,
        **kwargs,
    )


def test_make_vec_defaults_to_next_step_as_gymnasium():
    """Gymnasium's default autoreset mode is NEXT_STEP, declared in ``metadata["autoreset_mode"]``."""
    for env_id in (CAR, TABULAR):
        env = gym.make_vec(env_id, num_envs=8, vectorization_mode="vector_entry_point")
        assert env.metadata["autoreset_mode"] == NEXT_STEP
    assert car_vector("same_step").metadata["autoreset_mode"] == SAME_STEP  # a mode passes through make_vec
    with pytest.raises(ValueError, match="autoreset_mode"):
        car_vector("sometimes")


def test_next_step_contract_step_by_step():
    """NEXT_STEP: the step that ends an episode is an ordinary step (its observation is the episode's last);
    the next step of that row ignores the row's action and returns the new episode's first observation with
    reward 0 and terminated = truncated = False, and that row holds no step info; no final_* keys."""
    env, twin = car_vector(NEXT_STEP), car_vector(NEXT_STEP)
    env.reset(seed=0)
    twin.reset(seed=0)
    ended, restarts = np.zeros(8, bool), 0
    for _ in range(20):
        actions = np.full(8, ACCELERATE)
        twin_actions = np.where(ended, 0, actions)  # another action where it must be ignored
        obs, reward, terminated, truncated, info = env.step(actions)
        for got, expected in zip(
            (obs, reward, terminated, truncated), twin.step(twin_actions)[:4], strict=True
        ):
            np.testing.assert_array_equal(got, expected)
        assert not FINAL_KEYS & set(info)
        np.testing.assert_array_equal(obs[ended, EGO_POSITION], 0.0)  # a new episode's first observation
        assert (reward[ended] == 0).all() and not (terminated | truncated)[ended].any()
        if ended.all():
            assert "collided" not in info  # no row holds step info: the key is absent
        else:
            np.testing.assert_array_equal(info["_collided"], ~ended)
            np.testing.assert_array_equal(info["collided"][~ended], terminated[~ended])
        done = terminated | truncated
        assert (obs[done, EGO_POSITION] > 0).all()  # the ending step returns the episode's last observation
        restarts += int(ended.sum())
        ended = done
    assert restarts > 8


def test_same_step_contract_step_by_step():
    """SAME_STEP: the step that ends an episode returns the new episode's first observation; the ended
    one's last observation and step info are in ``final_obs`` / ``final_info`` (an object array with None
    elsewhere, a dict with ``_key`` masks) with ``_final_obs`` / ``_final_info`` masks, all only on steps
    where an episode ended; the top-level step keys hold the other rows (``_key`` masks)."""
    env = car_vector(SAME_STEP)
    env.reset(seed=0)
    steps_with_an_end = 0
    for _ in range(20):
        obs, reward, terminated, truncated, info = env.step(np.full(8, ACCELERATE))
        done = terminated | truncated
        if not done.any():
            assert not FINAL_KEYS & set(info) and info["_collided"].all()
            continue
        steps_with_an_end += 1
        assert FINAL_KEYS <= set(info)
        np.testing.assert_array_equal(info["_final_obs"], done)
        np.testing.assert_array_equal(info["_final_info"], done)
        final_info = info["final_info"]
        np.testing.assert_array_equal(final_info["_collided"], done)
        np.testing.assert_array_equal(
            final_info["collided"][done], terminated[done]
        )  # accelerating ends in crashes
        for row in range(8):
            if done[row]:
                assert env.single_observation_space.contains(info["final_obs"][row])
                assert info["final_obs"][row][EGO_POSITION] > 0 and obs[row, EGO_POSITION] == 0
            else:
                assert info["final_obs"][row] is None
        if "_collided" in info:
            np.testing.assert_array_equal(info["_collided"], ~done)
        else:
            assert done.all()
    assert steps_with_an_end >= 2


def test_disabled_contract_step_by_step():
    """DISABLED: nothing restarts by itself; ``reset(options={"reset_mask": mask})`` starts new episodes in
    the masked rows and leaves the others as they are; an ended row must not be stepped before that."""
    env = car_vector(DISABLED)
    env.reset(seed=0)
    done = np.zeros(8, bool)
    while not done.any():
        obs, _, terminated, truncated, info = env.step(np.full(8, ACCELERATE))
        done = terminated | truncated
        assert not FINAL_KEYS & set(info)
    assert (obs[done, EGO_POSITION] > 0).all()  # not restarted
    with pytest.raises(RuntimeError, match="reset_mask"):
        env.step(np.full(8, ACCELERATE))
    restarted, _ = env.reset(options={"reset_mask": done})
    np.testing.assert_array_equal(restarted[done, EGO_POSITION], 0.0)
    np.testing.assert_array_equal(restarted[~done], obs[~done])
    env.step(np.full(8, ACCELERATE))
    with pytest.raises(ValueError, match="reset_mask"):
        env.reset(options={"reset_mask": np.ones(3, bool)})


@pytest.mark.parametrize("mode", [NEXT_STEP, SAME_STEP, DISABLED])
def test_tensor_faces_keep_every_key_on_every_step(mode):
    """The tensor faces follow the same contract with device tensors; a key that comes and goes would cost
    a host sync, so every key and mask is there on every step (SAME_STEP: final_obs is [B, ...], valid
    where ``_final_obs``)."""
    env = car_vector(mode, as_tensors=True, device="cpu")
    env.reset(seed=0)
    keys = {"arrived", "collided", "lecture_reward", "_arrived", "_collided", "_lecture_reward"}
    keys |= FINAL_KEYS if mode == SAME_STEP else set()
    for _ in range(5):
        obs, reward, terminated, truncated, info = env.step(torch.full((8,), ACCELERATE))
        done = terminated | truncated
        assert set(info) == keys
        if mode == SAME_STEP:
            assert torch.equal(info["_final_obs"], done) and torch.equal(
                info["final_info"]["_collided"], done
            )
            assert torch.equal(info["_collided"], ~done)
            assert bool((obs[done, EGO_POSITION] == 0).all()) and info["final_obs"].shape == obs.shape


@pytest.mark.parametrize("mode", [SAME_STEP, DISABLED])
@pytest.mark.parametrize(("env_id", "action_count"), [(CAR, 3), (TABULAR, 3)])
def test_one_episode_vector_env_runs_the_single_envs_episodes(env_id, action_count, mode):
    """A vector env of one episode and the single env, under one seed and the same actions, run the same
    episodes (the vector env's start draws do not consume random numbers the single env does not)."""
    single = gym.make(env_id, horizon=6)
    vector = gym.make_vec(
        env_id, num_envs=1, vectorization_mode="vector_entry_point", horizon=6, autoreset_mode=mode
    )
    single_obs, _ = single.reset(seed=3)
    vector_obs, _ = vector.reset(seed=3)
    actions, episodes = np.random.default_rng(0).integers(action_count, size=60), 0
    for action in actions:
        np.testing.assert_array_equal(vector_obs[0], single_obs)
        single_obs, reward, terminated, truncated, _ = single.step(int(action))
        vector_obs, vector_reward, vector_terminated, vector_truncated, info = vector.step(np.array([action]))
        assert (reward, terminated, truncated) == (
            vector_reward[0],
            vector_terminated[0],
            vector_truncated[0],
        )
        if terminated or truncated:
            episodes += 1
            if mode == SAME_STEP:
                np.testing.assert_array_equal(info["final_obs"][0], single_obs)
            else:
                np.testing.assert_array_equal(vector_obs[0], single_obs)
                vector_obs, _ = vector.reset(options={"reset_mask": np.array([True])})
            single_obs, _ = single.reset()
    assert episodes >= 5


# -- registration: max_episode_steps is the horizon ------------------------------------------------
DEFAULT_HORIZONS = {
    TABULAR: inspect.signature(TabularMDP).parameters["horizon"].default,
    CAR: CarDrivingConfig.horizon,
    CHEETAH: inspect.signature(HalfCheetah).parameters["horizon"].default,
}


@pytest.mark.parametrize("env_id", list(DEFAULT_HORIZONS))
def test_registered_max_episode_steps_is_the_default_horizon(env_id):
    """Gymnasium's wrappers and tools read an env's episode length from ``spec.max_episode_steps``; an env
    made by ``gym.make`` is truncated by the ``TimeLimit`` it adds, not by itself as well."""
    assert gym.spec(env_id).max_episode_steps == DEFAULT_HORIZONS[env_id]
    env = gym.make(env_id)
    assert env.spec.max_episode_steps == DEFAULT_HORIZONS[env_id] and not truncates_itself(env.unwrapped)


def test_truncation_happens_once_at_max_episode_steps():
    """TimeLimit truncates at ``max_episode_steps``; without it (``max_episode_steps=-1``) the env made by
    gym.make does not truncate at its horizon on its own."""
    env = gym.make(TABULAR)
    env.reset(seed=0)
    assert [env.step(0)[3] for _ in range(100)] == [False] * 99 + [True]
    unlimited = gym.make(TABULAR, max_episode_steps=-1)
    unlimited.reset(seed=0)
    assert not any(unlimited.step(0)[3] for _ in range(101))
    shorter = gym.make(CAR, max_episode_steps=7)
    shorter.reset(seed=0)
    assert [shorter.step(0)[3] for _ in range(7)] == [False] * 6 + [True]  # decelerating never ends a drive


def test_record_episode_statistics_and_time_aware_observation():
    """RecordEpisodeStatistics reports each episode's length and return; TimeAwareObservation needs the
    spec's (or a TimeLimit's) max_episode_steps."""
    env = gym.wrappers.RecordEpisodeStatistics(gym.make(TABULAR))
    env.reset(seed=0)
    rewards = []
    for _ in range(100):
        _, reward, _, truncated, info = env.step(0)
        rewards.append(reward)
    assert truncated and info["episode"]["l"] == 100 and info["episode"]["r"] == pytest.approx(sum(rewards))
    timed = gym.wrappers.TimeAwareObservation(gym.make(CAR))
    obs, _ = timed.reset(seed=0)
    obs, *_ = timed.step(0)
    assert obs.shape == (5,) and obs[-1] == 1


@pytest.mark.parametrize("env_id", [TABULAR, CAR])
def test_make_from_a_spec_round_trips(env_id):
    """``gym.make(env.spec)`` makes the same env (same spec, same seeded episode); ``gym.make_vec`` takes a
    spec as well as an id, and a vector env's spec makes it again."""
    env = gym.make(env_id, horizon=9)
    again = gym.make(env.spec)
    assert again.spec == env.spec
    for made in (env, again):
        made.reset(seed=4)
    for _ in range(12):
        first, second = env.step(1), again.step(1)
        np.testing.assert_array_equal(first[0], second[0])
        assert first[1:4] == second[1:4]
        if first[2] or first[3]:
            env.reset(seed=5)
            again.reset(seed=5)
    for mode in ("vector_entry_point", "sync"):
        vector = gym.make_vec(gym.spec(env_id), num_envs=3, vectorization_mode=mode)
        vector.reset(seed=0)
        assert vector.num_envs == 3
    vector = gym.make_vec(env_id, num_envs=3, vectorization_mode="vector_entry_point", horizon=9)
    remade = gym.make_vec(vector.spec)
    assert type(remade) is type(vector) and remade.unwrapped.core.horizon == 9


@pytest.mark.parametrize(
    ("env_id", "kwargs"),
    [
        (TABULAR, {}),
        (CAR, {}),
        (CAR, {"continuous": True}),
        (CAR, {"discrete_observation": True}),
        (CHEETAH, {}),
    ],
)
def test_every_env_passes_gymnasiums_and_sb3s_check_env(env_id, kwargs):
    """Both checkers, with every declared render mode made from the spec; HalfCheetah's "human" needs a
    display (without one it is refused, see below), so a headless machine checks its other modes only."""
    headless = not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    gym_check_env(gym.make(env_id, **kwargs).unwrapped, skip_render_check=headless and env_id == CHEETAH)
    sb3_check_env(gym.make(env_id, **kwargs))
    if env_id == CHEETAH:
        frame = gym.make(env_id, render_mode="rgb_array", width=32, height=24)
        frame.reset(seed=0)
        assert frame.render().shape == (24, 32, 3)


def test_human_rendering_without_a_display_is_refused_clearly(monkeypatch):
    """MuJoCo's window needs a display; without one its viewer aborts the interpreter: refused first."""
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(ValueError, match="display"):
        gym.make(CHEETAH, render_mode="human")
    monkeypatch.setenv("DISPLAY", ":0")
    monkeypatch.setenv("MUJOCO_GL", "egl")
    with pytest.raises(ValueError, match="off-screen"):
        gym.make(CHEETAH, render_mode="human")


# -- agents learn from every mode ------------------------------------------------------------------
def learned_car(mode: AutoresetMode) -> rlhf_envs.VectorLearnedReward:
    core = CarDrivingVectorEnv(4, device="cpu", as_tensors=True, horizon=5, autoreset_mode=mode)
    return rlhf_envs.VectorLearnedReward(core, lambda obs, action, next_obs: next_obs[:, 1])


def learned_tabular(mode: AutoresetMode) -> rlhf_envs.VectorLearnedReward:
    core = TabularMDPVectorEnv(4, device="cpu", as_tensors=True, horizon=5, autoreset_mode=mode)
    return rlhf_envs.VectorLearnedReward(core, lambda obs, action, next_obs: next_obs.float())


def cartpoles(mode: AutoresetMode) -> gym.vector.SyncVectorEnv:
    return gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * 2, autoreset_mode=mode)


def parameters(agent) -> list[torch.Tensor]:
    if isinstance(agent, QLearning):
        return [torch.as_tensor(agent.q_table)]
    network = agent.policy if isinstance(agent, PPO) else agent.q_net
    return [parameter.detach().clone() for parameter in network.parameters()]


@pytest.mark.parametrize("mode", [NEXT_STEP, DISABLED])
@pytest.mark.parametrize(
    ("agent_class", "make_env", "config"),
    [
        (PPO, learned_car, {"num_envs": 4, "n_steps": 8, "batch_size": 16, "n_epochs": 1}),
        (PPO, cartpoles, {"num_envs": 2, "n_steps": 32, "batch_size": 32, "n_epochs": 1}),
        (DQN, learned_car, {"num_envs": 4, "learning_starts": 16, "batch_size": 16, "train_frequency": 1}),
        (QLearning, learned_tabular, {"num_envs": 4}),
    ],
    ids=["PPO-learned-car", "PPO-cartpole", "DQN-learned-car", "QLearning-learned-tabular"],
)
def test_agents_learn_the_same_from_every_autoreset_mode(agent_class, make_env, config, mode):
    """Agents learn from real transitions only: on a NEXT_STEP env the step after an episode's end (its
    action ignored, reward 0, from the old episode's last observation to the new one's first) is no
    transition. agents/vector.py restarts ended rows right away through ``reset_mask``, so an agent
    trained on a NEXT_STEP or DISABLED env ends exactly as one trained on the SAME_STEP env."""
    trained = [
        agent_class(make_env(each), device="cpu", seed=0, **config).learn(128, progress_bar=False)
        for each in (SAME_STEP, mode)
    ]
    for reference, other in zip(*(parameters(agent) for agent in trained), strict=True):
        torch.testing.assert_close(other, reference, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("make_kwargs", "length"), [({}, 50), ({"max_episode_steps": 5}, 5), ({"horizon": 4}, 4)]
)
def test_agents_keep_the_episode_length_gym_make_gave(make_kwargs, length):
    """An agent given a made env steps episodes of the length that env has: on the batched core when that is
    its horizon, else as the env is (a shorter ``max_episode_steps`` is not dropped)."""
    agent = PPO(gym.make(CAR, **make_kwargs), device="cpu", num_envs=2, n_steps=8, batch_size=16)
    env = agent.env
    assert isinstance(env.unwrapped, CoreVectorEnv) == (length != 5)  # the core unless the limit is shorter
    env.reset(seed=0)
    truncations = [bool(env.step(torch.zeros(2, dtype=torch.long))[3].any()) for _ in range(length)]
    assert truncations == [False] * (length - 1) + [True]  # decelerating: no drive ends otherwise
