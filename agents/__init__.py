"""Agents that train on every rlhf_envs environment, on the GPU when there is one."""

from agents.dqn import DQN, DQNConfig
from agents.kl_control import AdaptiveKLController, FixedKLController
from agents.plotting import plot_learning_curve
from agents.ppo import PPO, PPOConfig
from agents.q_learning import QLearning, QLearningConfig
from agents.schedules import LinearSchedule
from agents.token_policy import TokenActorCritic
from agents.token_ppo import TokenPPO, TokenPPOConfig
from agents.token_q_learning import TokenQConfig, TokenQLearning

__all__ = [
    "AdaptiveKLController",
    "DQN",
    "DQNConfig",
    "FixedKLController",
    "LinearSchedule",
    "PPO",
    "PPOConfig",
    "QLearning",
    "QLearningConfig",
    "TokenActorCritic",
    "TokenPPO",
    "TokenPPOConfig",
    "TokenQConfig",
    "TokenQLearning",
    "plot_learning_curve",
]
