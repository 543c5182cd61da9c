"""Agents that train on every rlhf_envs environment, on the GPU when there is one."""

from agents.dqn import DQN, DQNConfig
from agents.plotting import plot_learning_curve
from agents.ppo import PPO, PPOConfig
from agents.q_learning import QLearning
from agents.schedules import LinearSchedule

__all__ = ["DQN", "DQNConfig", "LinearSchedule", "PPO", "PPOConfig", "QLearning", "plot_learning_curve"]
