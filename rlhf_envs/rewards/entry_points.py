"""Entry points of registered envs whose ``reward=`` may be a reward model.

The env itself (in :mod:`rlhf_envs.envs`) knows only its named rewards; putting a reward model in
its place is the rewards layer's job (:class:`~rlhf_envs.rewards.LearnedReward`), so the factory
that ``gym.make`` calls lives here, above both.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from rlhf_envs.envs.half_cheetah import REWARDS, HalfCheetah, RewardName
from rlhf_envs.rewards.learned import LearnedReward
from rlhf_envs.rewards.protocols import ControlRewardModel

__all__ = ["make_half_cheetah"]


def make_half_cheetah(reward: RewardName | ControlRewardModel = "lecture", **kwargs: Any) -> gym.Env:
    """Entry point of ``rlhf_envs/HalfCheetah-v0``: a :class:`HalfCheetah`, in ``LearnedReward`` for a model.

    With a reward model the env's own reward is the lecture's, kept as ``info["true_reward"]``.
    """
    if isinstance(reward, str):
        return HalfCheetah(reward=reward, **kwargs)
    if not callable(reward):
        raise TypeError(
            f"reward must be one of {REWARDS} or a callable reward model, got {type(reward).__name__}"
        )
    return LearnedReward(HalfCheetah(reward="lecture", **kwargs), reward)


# `gym.make` reads the render modes from its entry point before building the env.
make_half_cheetah.metadata = HalfCheetah.metadata  # type: ignore[attr-defined]
