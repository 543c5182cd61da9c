"""PPO: it solves the tabular MDP and the car env, runs on HalfCheetah, saves, loads and resumes exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_agents_common import car_arrival_rate
from tiny_lm import tiny_lm, tiny_tokenizer

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import DQN, PPO
from agents.base import CHECKPOINT_NAME
from agents.plotting import read_scalars
from agents.train_cli import HYPERPARAMETERS
from rlhf_envs.envs.tabular import DEFAULT_GAMMA, DEFAULT_P, DEFAULT_R, value_iteration
from rlhf_envs.envs.token import TokenEnv


def test_ppo_greedy_policy_is_optimal_on_the_tabular_mdp():
    agent = PPO("rlhf_envs/TabularMDP-v0", device="cpu", seed=0).learn(40_000, progress_bar=False)
    _, optimal = value_iteration(DEFAULT_P, DEFAULT_R, DEFAULT_GAMMA)
    actions, _ = agent.predict(np.arange(4))
    np.testing.assert_array_equal(actions, optimal)
    # The discount is the MDP's own, the one Q* is defined with.
    assert agent.gamma == DEFAULT_GAMMA


def test_ppo_drives_the_car_to_the_destination():
    config = HYPERPARAMETERS[("ppo", "rlhf_envs/CarDriving-v0")]
    agent = PPO("rlhf_envs/CarDriving-v0", device="cpu", seed=0, **config).learn(80_000, progress_bar=False)
    assert car_arrival_rate(agent, episodes=100, seed=123) >= 0.9


def test_ppo_runs_on_half_cheetah():
    agent = PPO("rlhf_envs/HalfCheetah-v0", device="cpu", num_envs=2, n_steps=512, batch_size=256, n_epochs=2)
    agent.learn(2048, progress_bar=False)
    assert agent.num_timesteps == 2048
    obs = np.zeros((3, 17))
    actions, _ = agent.predict(obs, deterministic=False)
    assert actions.shape == (3, 6) and (np.abs(actions) <= 1).all()


def test_save_load_round_trip(tmp_path, device):
    """Loaded on the device it was saved on, the same agent; on another (``load``'s ``device="auto"`` on
    a GPU machine), the same weights, moved."""
    agent = PPO("rlhf_envs/CarDriving-v0", device="cpu", num_envs=32, n_steps=8, normalize_observations=True)
    agent.learn(32 * 8 * 2, progress_bar=False)
    agent.save(tmp_path / "ppo.pt")
    loaded = PPO.load(tmp_path / "ppo.pt", device="cpu")
    assert loaded.env is None and loaded.config == agent.config
    obs = np.random.default_rng(0).uniform(0, 30, size=(20, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(obs)[0], agent.predict(obs)[0])
    for name, value in agent.policy.state_dict().items():
        torch.testing.assert_close(loaded.policy.state_dict()[name], value, rtol=0, atol=0)
    moved = PPO.load(tmp_path / "ppo.pt", device=device)
    for name, value in agent.policy.state_dict().items():
        torch.testing.assert_close(moved.policy.state_dict()[name].cpu(), value, rtol=0, atol=0)
    np.testing.assert_array_equal(moved.predict(obs)[0], agent.predict(obs)[0])
    with pytest.raises(ValueError, match="not a DQN one"):
        from agents import DQN

        DQN.load(tmp_path / "ppo.pt")


class Crash(Exception):
    pass


def test_resume_is_exact(tmp_path):
    """learn(N) equals learn(N) interrupted after its checkpoint at K, then load + learn(N − K)."""
    config = dict(
        num_envs=32, n_steps=16, batch_size=256, normalize_observations=True, normalize_rewards=True
    )
    rollout, total, every = 32 * 16, 32 * 16 * 6, 32 * 16 * 2
    straight = PPO("rlhf_envs/CarDriving-v0", device="cpu", seed=3, logdir=str(tmp_path / "a"), **config)
    straight.learn(total, progress_bar=False)

    interrupted = PPO(
        "rlhf_envs/CarDriving-v0",
        device="cpu",
        seed=3,
        logdir=str(tmp_path / "b"),
        checkpoint_every=every,
        **config,
    )
    checkpoint = interrupted._maybe_checkpoint

    def crash_after_checkpoint(steps_before: int) -> None:
        checkpoint(steps_before)
        # Crash one rollout after the checkpoint, so the log has a tail the resume must replace.
        if interrupted.num_timesteps == every + rollout:
            raise Crash

    interrupted._maybe_checkpoint = crash_after_checkpoint
    with pytest.raises(Crash):
        interrupted.learn(total, progress_bar=False)

    resumed = PPO.load(tmp_path / "b" / CHECKPOINT_NAME, env="rlhf_envs/CarDriving-v0", device="cpu")
    assert resumed.num_timesteps == every
    resumed.learn(total - every, progress_bar=False, reset_num_timesteps=False)

    assert resumed.num_timesteps == straight.num_timesteps == total
    for name, value in straight.policy.state_dict().items():
        torch.testing.assert_close(resumed.policy.state_dict()[name], value, rtol=0, atol=0)
    assert len(read_scalars(tmp_path / "a")[0]) >= 3
    for tag in ("rollout/episode_return", "train/value_loss", "train/approx_kl"):
        steps_a, values_a = read_scalars(tmp_path / "a", tag)
        steps_b, values_b = read_scalars(tmp_path / "b", tag)
        np.testing.assert_array_equal(steps_a, steps_b)
        np.testing.assert_array_equal(values_a, values_b)


def test_ppo_on_a_token_env_names_the_language_model_agents():
    """An MLP cannot read token observations: the error says which agents can."""
    tokenizer = tiny_tokenizer()
    env = TokenEnv(
        model=tiny_lm(tokenizer),
        tokenizer=tokenizer,
        prompts=["the cat sat", "a good day"],
        reward_model=lambda prompts, completions: torch.zeros(len(completions)),
        max_new_tokens=2,
        device="cpu",
    )
    for agent_class in (PPO, DQN):
        with pytest.raises(ValueError, match=r"agents\.TokenPPO .* agents\.TokenQLearning"):
            agent_class(env, device="cpu", num_envs=2)
