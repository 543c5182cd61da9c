"""Reward models and the wrapper that puts any reward model into any env (layer 3: imports lm and envs).

Control reward models (:mod:`~rlhf_envs.rewards.trajectory`) and what they learn from
(:mod:`~rlhf_envs.rewards.comparisons`, :mod:`~rlhf_envs.rewards.bradley_terry`) live here, below the
preference stores and labelers that use them too. Text reward models live one layer lower, in
:mod:`rlhf_envs.lm.reward_model`: the TokenEnv's default reward is the embedded one.
"""

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
