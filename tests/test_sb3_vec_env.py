"""SB3VecEnv: Stable-Baselines3's VecEnv contract over the batched cores (tabular, car)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecMonitor, VecNormalize

import rlhf_envs  # noqa: F401  (registers the envs)
from rlhf_envs.envs.sb3 import SB3VecEnv

CAR = "rlhf_envs/CarDriving-v0"
TABULAR = "rlhf_envs/TabularMDP-v0"

# Action a always leads to state a + 1: the state after a step is known, so is each terminal observation.
STEP_TO_ACTION_PLUS_ONE = np.zeros((4, 3, 4))
for _action in range(3):
    STEP_TO_ACTION_PLUS_ONE[:, _action, _action + 1] = 1.0
START_AT_ZERO = [1.0, 0.0, 0.0, 0.0]


def check_vec_env_step(venv: VecEnv, actions: np.ndarray) -> tuple:
    """SB3's VecEnv step contract: batched observations in the space, float32 rewards, bool dones,
    one info dict per env, and a terminal observation in the space for every env that is done."""
    observations, rewards, dones, infos = venv.step(actions)
    n = venv.num_envs
    assert observations.shape == (n, *venv.observation_space.shape)
    assert all(venv.observation_space.contains(observation) for observation in observations)
    assert rewards.shape == (n,) and rewards.dtype == np.float32
    assert dones.shape == (n,) and dones.dtype == bool
    assert isinstance(infos, list) and len(infos) == n and all(isinstance(info, dict) for info in infos)
    for index in range(n):
        assert ("terminal_observation" in infos[index]) == dones[index]
        assert ("TimeLimit.truncated" in infos[index]) == dones[index]
        if dones[index]:
            assert venv.observation_space.contains(infos[index]["terminal_observation"])
    return observations, rewards, dones, infos


@pytest.mark.parametrize("env_id", [CAR, TABULAR])
def test_the_vec_env_contract(env_id):
    venv = SB3VecEnv(env_id, num_envs=6)
    assert isinstance(venv, VecEnv) and venv.num_envs == 6
    observations = venv.reset()
    assert observations.shape == (6, *venv.observation_space.shape)
    assert venv.reset_infos == [{}] * 6
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(120):
        ended += check_vec_env_step(venv, rng.integers(venv.action_space.n, size=6))[2].sum()
    assert ended > 0  # the horizons (car 50, tabular 100) were crossed: episodes ended and restarted


def test_truncation_gives_the_last_observation_and_the_time_limit_flag():
    """SB3: an episode cut by its horizon is done with TimeLimit.truncated=True and its last
    observation in terminal_observation (SB3 bootstraps from it); the returned one is the next start."""
    venv = SB3VecEnv(
        TABULAR, num_envs=3, P=STEP_TO_ACTION_PLUS_ONE, initial_state_distribution=START_AT_ZERO, horizon=2
    )
    np.testing.assert_array_equal(venv.reset(), [0, 0, 0])
    observations, _, dones, _ = venv.step(np.array([0, 1, 2]))
    np.testing.assert_array_equal(observations, [1, 2, 3])
    assert not dones.any()
    observations, rewards, dones, infos = venv.step(np.array([2, 0, 1]))
    assert dones.all()
    np.testing.assert_array_equal(observations, [0, 0, 0])
    assert [info["terminal_observation"] for info in infos] == [3, 1, 2]
    assert all(info["TimeLimit.truncated"] for info in infos)


def test_termination_keeps_the_episode_keys_and_is_not_a_time_limit():
    """An arrival terminates: TimeLimit.truncated=False, the ending step's own keys (arrived...) are
    in that env's info as a single env gives them, and the next observation starts a new drive."""
    venv = SB3VecEnv(CAR, num_envs=64, destination=20.0, lead_brake_probability=0.0)
    venv.seed(0)
    venv.reset()
    accelerate = np.full(64, 2)
    for _ in range(20):
        observations, rewards, dones, infos = check_vec_env_step(venv, accelerate)
        arrivals = [i for i in np.flatnonzero(dones) if infos[i]["arrived"]]
        if arrivals:
            break
    index = arrivals[0]
    assert infos[index]["TimeLimit.truncated"] is False
    assert infos[index]["terminal_observation"][0] >= 20.0  # the ego's position at the end
    assert observations[index][0] < 20.0  # a new drive
    assert rewards[index] == 50.0 and infos[index]["lecture_reward"] == 50.0
    assert set(infos[index]) >= {"arrived", "collided", "lecture_reward"}
    running = int(np.flatnonzero(~dones)[0])
    assert infos[running]["arrived"] is False and "terminal_observation" not in infos[running]


@pytest.mark.parametrize("env_id", [CAR, TABULAR])
def test_one_episode_steps_as_sb3s_dummy_vec_env_over_the_single_env(env_id):
    """Under one seed and the same actions, SB3VecEnv with one env gives what SB3's make_vec_env
    (DummyVecEnv over the gym.make'd env) gives: observations, float32 rewards, dones, and every info
    key of every step, terminal_observation and TimeLimit.truncated included (Monitor's episode aside)."""
    ours = SB3VecEnv(env_id, num_envs=1)
    # make_vec_env asks for rgb_array renders by default; the tabular MDP renders text only.
    anchor = make_vec_env(env_id, n_envs=1, env_kwargs={"device": "cpu", "render_mode": None})
    ours.seed(7)
    anchor.seed(7)
    np.testing.assert_array_equal(ours.reset(), anchor.reset())
    actions = np.random.default_rng(0).integers(3, size=(600, 1))
    for action in actions:
        (obs, reward, done, (info,)), (obs_a, reward_a, done_a, (info_a,)) = (
            ours.step(action),
            anchor.step(action),
        )
        np.testing.assert_array_equal(obs, obs_a)
        assert reward.dtype == reward_a.dtype and (reward == reward_a).all() and (done == done_a).all()
        info_a.pop("episode", None)
        if not done_a[0]:  # DummyVecEnv writes False on every step; SB3 reads the flag where done only
            assert info_a.pop("TimeLimit.truncated") is False
        assert info.keys() == info_a.keys()
        for key, value in info.items():
            np.testing.assert_array_equal(value, info_a[key], err_msg=key)
    assert ours.step(actions[0])  # SB3's vec envs reset themselves: stepping goes on


def test_seed_get_attr_set_attr_and_env_method():
    venv = SB3VecEnv(TABULAR, num_envs=8)
    assert venv.seed(7) == list(range(7, 15))  # SB3 gives env i the seed s + i; the batch follows s
    first = venv.reset()
    steps = [venv.step(np.arange(8) % 3)[0] for _ in range(5)]
    venv.seed(7)
    np.testing.assert_array_equal(venv.reset(), first)
    for expected in steps:
        np.testing.assert_array_equal(venv.step(np.arange(8) % 3)[0], expected)

    assert venv.get_attr("gamma") == [0.9] * 8
    assert venv.get_attr("gamma", indices=[1, 2]) == [0.9, 0.9]
    states = venv.env_method("state_dict", indices=3)
    assert len(states) == 1 and states[0]["num_envs"] == 8
    venv.set_attr("gamma_note", "shared")
    assert venv.get_attr("gamma_note", indices=[0]) == ["shared"]
    with pytest.raises(ValueError, match="share one core"):
        venv.set_attr("gamma_note", "one", indices=[0])
    with pytest.raises(IndexError):
        venv.get_attr("gamma", indices=[8])
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * 8


def test_only_batched_core_envs_are_taken():
    with pytest.raises(TypeError, match="batched-core"):
        SB3VecEnv(gym.make("CartPole-v1"))
    with pytest.raises(TypeError, match="only with an env id"):
        SB3VecEnv(gym.make(CAR), num_envs=2, destination=10.0)


def test_sb3_wrappers_and_ppo_on_1024_cars():
    """SB3's VecNormalize (which normalizes terminal observations too) and VecMonitor stack on it, and
    PPO trains on 1,024 cars stepped in one call each."""
    venv = VecNormalize(VecMonitor(SB3VecEnv(CAR, num_envs=1024)))
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=2048, n_epochs=1, seed=0, device="cpu")
    model.learn(8192)
    assert model.num_timesteps == 8192
    assert (model.rollout_buffer.buffer_size, model.rollout_buffer.n_envs) == (8, 1024)  # steps × cars
