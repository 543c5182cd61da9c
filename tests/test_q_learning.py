"""Tabular Q-learning converges to Q* on the lecture's MDP."""

import numpy as np
import pytest
import torch

import rlhf_envs  # noqa: F401
from agents import LinearSchedule, QLearning
from agents.checkpoint import load_checkpoint
from rlhf_envs.checkpoints import save_atomic
from rlhf_envs.envs.tabular import TabularMDP, value_iteration


@pytest.fixture(scope="module")
def trained():
    return QLearning("rlhf_envs/TabularMDP-v0", device="cpu", seed=0).learn(20_000, progress_bar=False)


def test_converges_to_q_star_and_the_optimal_policy(trained):
    env = TabularMDP()
    q_star, optimal = value_iteration(env.P, env.R, env.gamma)
    assert np.abs(trained.q_table - q_star).max() <= 0.01 * np.abs(q_star).max()
    np.testing.assert_array_equal(trained.q_table.argmax(axis=1), optimal)
    actions, _ = trained.predict(np.arange(4))
    np.testing.assert_array_equal(actions, optimal)


def test_same_seed_same_q_table(trained):
    again = QLearning("rlhf_envs/TabularMDP-v0", device="cpu", seed=0).learn(20_000, progress_bar=False)
    np.testing.assert_array_equal(trained.q_table, again.q_table)
    other = QLearning("rlhf_envs/TabularMDP-v0", device="cpu", seed=1).learn(20_000, progress_bar=False)
    assert not np.array_equal(trained.q_table, other.q_table)


def test_single_env_and_plain_gymnasium_env():
    # A single env is run on its batched core; a non-core env (FrozenLake) through SyncVectorEnv.
    QLearning(TabularMDP(), num_envs=8, device="cpu").learn(800, progress_bar=False)
    import gymnasium as gym

    agent = QLearning(
        gym.make("FrozenLake-v1", is_slippery=False),
        num_envs=4,
        device="cpu",
        gamma=0.95,
        exploration=LinearSchedule(1.0, 0.05),
    )
    agent.learn(4_000, progress_bar=False)
    env = gym.make("FrozenLake-v1", is_slippery=False)
    obs, _ = env.reset(seed=0)
    for _ in range(20):
        obs, reward, terminated, truncated, _ = env.step(int(agent.predict(obs)[0]))
        if terminated or truncated:
            break
    assert reward == 1.0


def test_save_load_round_trip(trained, tmp_path, device):
    """On any device: a CPU checkpoint loads on a GPU (``load``'s ``device="auto"``) and trains on."""
    trained.save(tmp_path / "q.pt")
    loaded = QLearning.load(tmp_path / "q.pt", device=device)
    np.testing.assert_array_equal(loaded.q_table, trained.q_table)
    assert loaded.gamma == trained.gamma
    with pytest.raises(ValueError, match="no env"):
        loaded.learn(10)
    QLearning.load(tmp_path / "q.pt", env="rlhf_envs/TabularMDP-v0", device=device).learn(
        64, progress_bar=False
    )


def test_a_checkpoint_from_a_gpu_loads_on_the_cpu(trained, tmp_path):
    """A CUDA generator's state (16 bytes) does not fit a CPU generator: the exploration stream is
    seeded from it instead, the same one on every load."""
    trained.save(tmp_path / "q.pt")
    state = load_checkpoint(tmp_path / "q.pt")
    save_atomic(
        state | {"generator": torch.arange(16, dtype=torch.uint8), "generator_device": "cuda"},
        tmp_path / "gpu.pt",
    )
    runs = [
        QLearning.load(tmp_path / "gpu.pt", env="rlhf_envs/TabularMDP-v0", device="cpu").learn(
            256, progress_bar=False
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(runs[0].q_table, runs[1].q_table)


def test_rejects_non_discrete_spaces_and_bad_observations(trained):
    with pytest.raises(ValueError, match="Discrete observation space"):
        QLearning("CartPole-v1", device="cpu")
    with pytest.raises(ValueError, match="observations must be integers"):
        trained.predict(7)
    with pytest.raises(ValueError, match="total_timesteps must be >= 1, got -5"):
        QLearning("rlhf_envs/TabularMDP-v0", device="cpu").learn(-5, progress_bar=False)


def test_cli_reports_q_table_beside_q_star(capsys):
    from rlhf_envs.cli import main

    assert (
        main(["train", "--env", "rlhf_envs/TabularMDP-v0", "--agent", "q-learning", "--steps", "5000"]) == 0
    )
    out = capsys.readouterr().out
    assert "Q*" in out and "greedy policy optimal in 4/4 states" in out


def test_resumed_run_equals_a_straight_run(tmp_path):
    """Constant schedules, so that the interrupted run's first half trains as the straight run's."""
    options = dict(device="cpu", seed=2, num_envs=16, learning_rate=0.1, exploration=0.3)
    straight = QLearning("rlhf_envs/TabularMDP-v0", **options).learn(1600, progress_bar=False)
    first = QLearning("rlhf_envs/TabularMDP-v0", **options).learn(800, progress_bar=False)
    first.save(tmp_path / "q.pt")
    resumed = QLearning.load(tmp_path / "q.pt", env="rlhf_envs/TabularMDP-v0", device="cpu")
    resumed.learn(800, progress_bar=False, reset_num_timesteps=False)
    assert resumed.num_timesteps == straight.num_timesteps == 1600
    np.testing.assert_array_equal(resumed.q_table, straight.q_table)
