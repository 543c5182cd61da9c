"""Reward models and the wrapper that puts any reward model into any env."""

from rlhf_envs.rewards.learned import LearnedReward, VectorLearnedReward, validate_reward
from rlhf_envs.rewards.protocols import ControlRewardModel

__all__ = [
    "ControlRewardModel",
    "LearnedReward",
    "VectorLearnedReward",
    "validate_reward",
]
