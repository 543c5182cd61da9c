"""Moved to :mod:`rlhf_envs.lm.reward_model`; this name is kept until every caller imports from there."""

from rlhf_envs.lm.reward_model import (
    HFRewardModel,
    RewardModelSpec,
    TextRewardFn,
    check_scores,
    encode_texts,
    resolve_reward_model,
)

__all__ = [
    "HFRewardModel",
    "RewardModelSpec",
    "TextRewardFn",
    "check_scores",
    "encode_texts",
    "resolve_reward_model",
]
