"""Agents that train on every rlhf_envs environment, on the GPU when there is one."""

from agents.q_learning import QLearning
from agents.schedules import LinearSchedule

__all__ = ["LinearSchedule", "QLearning"]
