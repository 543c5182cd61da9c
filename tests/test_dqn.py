"""DQN: it drives the car, runs on HalfCheetah with per-joint heads, saves, loads and resumes exactly."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from test_agents_common import car_arrival_rate

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import DQN
from agents.base import CHECKPOINT_NAME
from agents.dqn import BoxBins, DiscretizeActions
from agents.plotting import read_scalars
from agents.train_cli import HYPERPARAMETERS
from agents.vector import make_tensor_vector_env


def test_dqn_drives_the_car_to_the_destination():
    config = HYPERPARAMETERS[("dqn", "rlhf_envs/CarDriving-v0")]
    agent = DQN("rlhf_envs/CarDriving-v0", device="cpu", seed=0, **config).learn(100_000, progress_bar=False)
    assert car_arrival_rate(agent, episodes=100, seed=123) >= 0.9


def test_dqn_runs_on_half_cheetah_with_one_head_per_joint():
    agent = DQN(
        "rlhf_envs/HalfCheetah-v0",
        device="cpu",
        num_envs=2,
        learning_starts=500,
        batch_size=64,
        action_bins=3,
    )
    # Six heads of three bins, not 3^6 = 729 joint actions.
    assert (agent.num_branches, agent.num_bins) == (6, 3)
    agent.learn(2000, progress_bar=False)
    assert agent.replay.size == 2000
    actions, _ = agent.predict(np.zeros((4, 17)))
    assert actions.shape == (4, 6) and set(np.unique(actions)) <= {-1.0, 0.0, 1.0}
    assert agent.q_values(np.zeros(17)).shape == (1, 6, 3)


def test_discretize_actions_maps_bins_to_evenly_spaced_values():
    env = make_tensor_vector_env("rlhf_envs/CarDriving-v0", 2, torch.device("cpu"))
    continuous = make_tensor_vector_env(
        gym.make("rlhf_envs/CarDriving-v0", continuous=True), 2, torch.device("cpu")
    )
    wrapped = DiscretizeActions(continuous, BoxBins(continuous.single_action_space, 5, torch.device("cpu")))
    assert wrapped.single_action_space == gym.spaces.MultiDiscrete([5])
    np.testing.assert_allclose(wrapped.actions(torch.tensor([[0], [4]])).numpy(), [[-3.0], [2.0]])
    with pytest.raises(ValueError, match="bounded Box"):
        BoxBins(env.single_action_space, 3, torch.device("cpu"))


def test_save_load_round_trip(tmp_path, device):
    """Exact on the device it was saved on; on another (a GPU's matmuls round differently), close."""
    agent = DQN("rlhf_envs/CarDriving-v0", device="cpu", num_envs=16, learning_starts=64, batch_size=32)
    agent.learn(512, progress_bar=False)
    agent.save(tmp_path / "dqn.pt")
    loaded = DQN.load(tmp_path / "dqn.pt", device="cpu")
    obs = np.random.default_rng(0).uniform(0, 30, size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.q_values(obs), agent.q_values(obs))
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    moved = DQN.load(tmp_path / "dqn.pt", device=device)
    np.testing.assert_allclose(moved.q_values(obs), agent.q_values(obs), rtol=1e-5, atol=1e-6)


class Crash(Exception):
    pass


def test_resume_is_exact(tmp_path):
    """learn(N) equals learn(N) interrupted after its checkpoint at K, then load + learn(N − K)."""
    config = dict(num_envs=16, learning_starts=128, batch_size=32, target_update_interval=96, log_interval=64)
    total, every = 16 * 96, 16 * 32
    straight = DQN("rlhf_envs/CarDriving-v0", device="cpu", seed=5, logdir=str(tmp_path / "a"), **config)
    straight.learn(total, progress_bar=False)

    interrupted = DQN(
        "rlhf_envs/CarDriving-v0",
        device="cpu",
        seed=5,
        logdir=str(tmp_path / "b"),
        checkpoint_every=every,
        **config,
    )
    checkpoint = interrupted._maybe_checkpoint

    def crash_after_checkpoint(steps_before: int) -> None:
        checkpoint(steps_before)
        if interrupted.num_timesteps == every + 16 * 5:
            raise Crash

    interrupted._maybe_checkpoint = crash_after_checkpoint
    with pytest.raises(Crash):
        interrupted.learn(total, progress_bar=False)

    resumed = DQN.load(tmp_path / "b" / CHECKPOINT_NAME, env="rlhf_envs/CarDriving-v0", device="cpu")
    resumed.learn(total - every, progress_bar=False, reset_num_timesteps=False)

    for name, value in straight.q_net.state_dict().items():
        torch.testing.assert_close(resumed.q_net.state_dict()[name], value, rtol=0, atol=0)
    for tag in ("rollout/episode_return", "train/loss"):
        np.testing.assert_array_equal(
            read_scalars(tmp_path / "a", tag)[1], read_scalars(tmp_path / "b", tag)[1]
        )
