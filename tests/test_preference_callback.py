"""PreferenceTrainer as an SB3 callback: model.learn(..., callback=trainer.as_callback()) refits and
relabels while SB3 trains."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DQN, PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

import rlhf_envs  # noqa: F401  (registers the envs)
from rlhf_envs.preferences import PreferenceStore, SyntheticLabeler
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer, label_schedule
from rlhf_envs.rewards import LearnedReward, TrajectoryRewardConfig, TrajectoryRewardModel

CAR = "rlhf_envs/CarDriving-v0"


def make_trainer(agent_factory, tmp_path, total_timesteps: int, reports: list) -> PreferenceTrainer:
    reference = gym.make(CAR)
    reward_model = TrajectoryRewardModel(
        reference.observation_space, reference.action_space, TrajectoryRewardConfig(epochs=2, seed=0)
    )
    agent = agent_factory(reward_model)
    config = PreferenceConfig(
        total_timesteps=total_timesteps,
        num_rounds=3,
        label_budget=30,
        segment_length=10,
        rollout_steps=100,
        seed=0,
    )
    store = PreferenceStore(tmp_path / "labels.jsonl")
    return PreferenceTrainer(
        agent, gym.make(CAR), reward_model, SyntheticLabeler(seed=0), store, config, reports.append
    )


def test_sb3_ppo_on_the_car_runs_the_rounds_from_its_learn(tmp_path):
    reports = []

    def ppo(reward_model):
        env = make_vec_env(lambda: LearnedReward(gym.make(CAR), reward_model), n_envs=4, seed=0)
        return PPO("MlpPolicy", env, n_steps=64, batch_size=256, n_epochs=1, seed=0, device="cpu")

    trainer = make_trainer(ppo, tmp_path, 2048, reports)
    callback = trainer.as_callback()
    assert isinstance(callback, BaseCallback)
    weights_before = [p.detach().clone() for p in trainer.reward_model.parameters()]
    trainer.agent.learn(2048, callback=callback)
    # Rounds due at 0, 683 and 1365 steps run at the end of the 256-step rollout that crosses them.
    assert [r.round for r in reports] == [0, 1, 2]
    assert [r.timesteps for r in reports] == [0, 768, 1536]
    assert [r.labels for r in reports] == np.cumsum(label_schedule(30, 3, 0.25)).tolist()
    assert len(PreferenceStore(tmp_path / "labels.jsonl")) == 30
    # The reward model the env reads was refitted in place.
    changed = any(
        not torch.allclose(a, b.detach())
        for a, b in zip(weights_before, trainer.reward_model.parameters(), strict=True)
    )
    assert changed and trainer.agent.num_timesteps == 2048


def test_an_off_policy_replay_buffer_is_relabelled_with_the_refitted_reward(tmp_path):
    reports = []

    def dqn(reward_model):
        env = LearnedReward(gym.make(CAR), reward_model)
        return DQN("MlpPolicy", env, learning_starts=100, buffer_size=5000, seed=0, device="cpu")

    trainer = make_trainer(dqn, tmp_path, 600, reports)
    trainer.agent.learn(600, callback=trainer.as_callback())
    assert len(reports) == 3
    # The transitions stored before the last refit were paid by earlier fits; now they hold the last one's.
    buffer, before_last_refit = trainer.agent.replay_buffer, reports[-1].timesteps
    assert 0 < before_last_refit < buffer.pos
    expected = trainer.reward_model(
        buffer.observations[:before_last_refit, 0],
        buffer.actions[:before_last_refit, 0],
        buffer.next_observations[:before_last_refit, 0],
    )
    np.testing.assert_allclose(buffer.rewards[:before_last_refit, 0], expected, rtol=1e-5, atol=1e-6)


def test_the_callback_needs_the_trainers_own_agent(tmp_path):
    trainer = make_trainer(
        lambda reward_model: PPO("MlpPolicy", gym.make(CAR), n_steps=64, device="cpu"), tmp_path, 128, []
    )
    other = PPO("MlpPolicy", gym.make(CAR), n_steps=64, device="cpu")
    with pytest.raises(ValueError, match="agent must be the SB3 model"):
        other.learn(64, callback=trainer.as_callback())
