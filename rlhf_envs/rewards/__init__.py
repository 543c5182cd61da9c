"""Reward models and the wrapper that puts any reward model into any env."""

from rlhf_envs.rewards.learned import LearnedReward, VectorLearnedReward, validate_reward
from rlhf_envs.rewards.protocols import ControlRewardModel
from rlhf_envs.rewards.trajectory import TrajectoryRewardConfig, TrajectoryRewardModel

__all__ = [
    "ControlRewardModel",
    "LearnedReward",
    "TrajectoryRewardConfig",
    "TrajectoryRewardModel",
    "VectorLearnedReward",
    "validate_reward",
]
