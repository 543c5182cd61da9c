"""What PPO and DQN share: space checks, the CLI, logging and learning curves."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import DQN, PPO, plot_learning_curve
from agents.checkpoint import load_checkpoint
from agents.plotting import read_scalars
from rlhf_envs.cli import main
from rlhf_envs.envs.car import CarDrivingVectorEnv


def car_arrival_rate(agent, episodes: int = 100, seed: int = 0) -> float:
    """Share of ``episodes`` seeded car episodes that reach the destination without a collision."""
    env = CarDrivingVectorEnv(num_envs=episodes, device="cpu")
    obs, _ = env.reset(seed=seed)
    arrived = np.zeros(episodes, dtype=bool)
    running = np.ones(episodes, dtype=bool)
    while running.any():
        actions, _ = agent.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = env.step(actions)
        # A collision wins over an arrival in the same step, so `arrived` already excludes it.
        arrived |= running & info["arrived"]
        running &= ~(terminated | truncated)
    return float(arrived.mean())


class MultiBinaryActions(gym.Env):
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.MultiBinary(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


@pytest.mark.parametrize("agent_class", [PPO, DQN])
def test_unsupported_action_space_names_it(agent_class):
    with pytest.raises(ValueError, match=r"MultiBinary\(3\)"):
        agent_class(MultiBinaryActions(), device="cpu")


@pytest.mark.parametrize("agent_class", [PPO, DQN])
def test_unknown_option_is_rejected(agent_class):
    with pytest.raises(ValueError, match="unknown .* option.*'n_step'"):
        agent_class("rlhf_envs/TabularMDP-v0", device="cpu", n_step=3)


def test_learn_needs_an_env():
    agent = PPO(None, device="cpu", spaces=(gym.spaces.Discrete(4), gym.spaces.Discrete(3)))
    with pytest.raises(ValueError, match="no env to learn from"):
        agent.learn(10)


def test_ppo_logs_the_training_scalars_and_plots_them(tmp_path):
    logdir = tmp_path / "run"
    PPO("rlhf_envs/TabularMDP-v0", device="cpu", num_envs=16, n_steps=16, logdir=str(logdir)).learn(
        16 * 16 * 8, progress_bar=False
    )
    steps, returns = read_scalars(logdir)
    assert len(steps) >= 1 and np.isfinite(returns).all()
    # Episodes last 100 steps, so only some rollouts end one; every rollout logs its update.
    assert len(read_scalars(logdir, "rollout/episode_length")[1]) == len(steps)
    for tag in ("train/approx_kl", "train/entropy", "train/value_loss", "time/fps"):
        assert len(read_scalars(logdir, tag)[1]) == 8
    png = plot_learning_curve(logdir, tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no scalar 'train/nothing'"):
        read_scalars(logdir, "train/nothing")


def test_dqn_logs_losses_and_epsilon(tmp_path):
    logdir = tmp_path / "run"
    DQN(
        "rlhf_envs/TabularMDP-v0",
        device="cpu",
        num_envs=16,
        learning_starts=256,
        log_interval=512,
        logdir=str(logdir),
    ).learn(2048, progress_bar=False)
    for tag in ("rollout/episode_return", "train/loss", "train/q_mean", "train/epsilon"):
        assert len(read_scalars(logdir, tag)[1]) >= 1


@pytest.mark.parametrize("agent", ["ppo", "dqn", "q-learning"])
def test_cli_trains_and_resumes_to_the_total(tmp_path, agent, capsys):
    logdir = tmp_path / agent
    args = [
        "train",
        "--env",
        "rlhf_envs/TabularMDP-v0",
        "--agent",
        agent,
        "--device",
        "cpu",
        "--logdir",
        str(logdir),
    ]
    assert main([*args, "--steps", "16384"]) == 0
    assert (logdir / "checkpoint.pt").is_file() and (logdir / "learning_curve.png").is_file()
    assert main([*args, "--steps", "24576", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "16384 env steps" in out and "24576 env steps" in out
    saved = load_checkpoint(logdir / "checkpoint.pt")
    assert saved["num_timesteps"] == 24576
