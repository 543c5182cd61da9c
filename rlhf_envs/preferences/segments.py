"""Trajectory segments and the choice of which pairs of them to ask a labeler about.

Following Christiano et al. (2017), rollouts are cut into short segments of k steps; a labeler
compares two segments, and a reward model learns from those comparisons. A ``Segment`` keeps the
true (hidden) rewards beside the observations and actions: the synthetic labeler and the
benchmarks read them, the reward model never does.

Segments never cross an episode boundary. The last piece of an episode may be shorter than k: it
is always kept when the episode terminated there (dropping it would hide exactly the steps where
an episode ends, such as a crash; a reward model counts the missing steps as paying 0, as the env
does), and kept after a truncation only if it has ``min_length`` steps.

Pairs are drawn uniformly, or actively: among many uniform candidates, those on which the members
of a reward-model ensemble disagree most about P(a ≻ b).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from rlhf_envs.rewards.bradley_terry import preference_probability
from rlhf_envs.rewards.comparisons import SEGMENT_ARRAYS, Segment

__all__ = ["collect_segments", "cut_segments", "disagreement_pairs", "uniform_pairs"]


def cut_segments(
    obs: np.ndarray,
    actions: np.ndarray,
    next_obs: np.ndarray,
    rewards: np.ndarray,
    k: int,
    *,
    episode_ends: np.ndarray | None = None,
    terminated: np.ndarray | None = None,
    frames: np.ndarray | None = None,
    min_length: int | None = None,
) -> list[Segment]:
    """Cut a rollout (T steps, one env, possibly several episodes) into segments of ``k`` steps.

    Args:
        obs, actions, next_obs, rewards: the rollout, each with T rows.
        k: the segment length.
        episode_ends: boolean [T], true where an episode ended (terminated or truncated) after that
            step; segments never cross it. ``None`` means the rollout is one episode.
        terminated: boolean [T], true where the episode terminated (not truncated) after that step;
            implies an episode end, and marks the segment ending there as ``terminated``.
        frames: optional renderings, T rows, cut along with the rest.
        min_length: the shortest piece kept at the end of a truncated episode (or of the rollout);
            ``None`` means ``k``. Pieces that end in a termination are always kept.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    min_length = k if min_length is None else min_length
    if not 1 <= min_length <= k:
        raise ValueError(f"min_length must be in [1, k={k}], got {min_length}")
    steps = len(rewards)
    ends = np.zeros(steps, dtype=bool) if episode_ends is None else np.asarray(episode_ends, dtype=bool)
    terminals = np.zeros(steps, dtype=bool) if terminated is None else np.asarray(terminated, dtype=bool)
    if ends.shape != (steps,) or terminals.shape != (steps,):
        raise ValueError(
            f"episode_ends and terminated must have shape ({steps},), got {ends.shape}, {terminals.shape}"
        )
    ends = ends | terminals
    segments = []
    start = 0
    for stop in [*(np.flatnonzero(ends) + 1), steps]:
        for first in range(start, stop, k):
            last = min(first + k, stop)
            if last - first >= min_length or terminals[last - 1]:
                piece = slice(first, last)
                segments.append(
                    Segment(
                        obs[piece],
                        actions[piece],
                        next_obs[piece],
                        rewards[piece],
                        None if frames is None else frames[piece],
                        terminated=bool(terminals[last - 1]),
                    )
                )
        start = stop
    return segments


def collect_segments(
    env: gym.Env,
    policy: Callable[[Any], Any] | None,
    num_steps: int,
    k: int,
    *,
    seed: int | None = None,
    min_length: int | None = None,
    render: bool = False,
) -> list[Segment]:
    """Roll ``policy`` out in ``env`` for ``num_steps`` steps and cut the rollout into segments.

    Args:
        env: a single (not vector) Gymnasium env; reset as episodes end.
        policy: maps one observation to one action (for an SB3 model:
            ``lambda obs: model.predict(obs)[0]``); ``None`` samples random actions.
        num_steps: the number of env steps.
        k, min_length: see ``cut_segments``.
        seed: seeds the first reset and the random actions.
        render: keep ``env.render()`` of every step as the segments' frames (``render_mode`` must be
            ``"rgb_array"`` or ``"ansi"``).

    The true reward of a step is ``info["true_reward"]`` when the env reports one (a
    ``LearnedReward`` wrapper does), else the env's reward.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    if render and env.render_mode not in ("rgb_array", "ansi"):
        raise ValueError(
            f"render=True needs render_mode 'rgb_array' or 'ansi', the env has {env.render_mode!r}"
        )
    if policy is None:
        env.action_space.seed(seed)
    columns: dict[str, list[Any]] = {name: [] for name in (*SEGMENT_ARRAYS, "ends", "terminated", "frames")}
    observation, _ = env.reset(seed=seed)
    for _ in range(num_steps):
        if render:
            columns["frames"].append(env.render())
        action = env.action_space.sample() if policy is None else policy(observation)
        next_observation, reward, terminated, truncated, info = env.step(action)
        columns["obs"].append(observation)
        columns["actions"].append(action)
        columns["next_obs"].append(next_observation)
        columns["rewards"].append(float(info.get("true_reward", reward)))
        columns["ends"].append(terminated or truncated)
        columns["terminated"].append(terminated)
        observation = env.reset()[0] if terminated or truncated else next_observation
    stacked = {name: np.asarray(values) for name, values in columns.items()}
    return cut_segments(
        stacked["obs"],
        stacked["actions"],
        stacked["next_obs"],
        stacked["rewards"],
        k,
        episode_ends=stacked["ends"],
        terminated=stacked["terminated"],
        frames=stacked["frames"] if render else None,
        min_length=min_length,
    )


def uniform_pairs(num_segments: int, num_pairs: int, rng: np.random.Generator) -> np.ndarray:
    """``num_pairs`` index pairs [P, 2] of two different segments, drawn uniformly."""
    if num_segments < 2:
        raise ValueError(f"need at least 2 segments to make a pair, got {num_segments}")
    first = rng.integers(num_segments, size=num_pairs)
    # Drawing the second from the other num_segments - 1 indices keeps the pair uniform and distinct.
    second = (first + rng.integers(1, num_segments, size=num_pairs)) % num_segments
    return np.stack([first, second], axis=1)


def disagreement_pairs(
    member_returns: np.ndarray,
    num_pairs: int,
    rng: np.random.Generator,
    *,
    oversample: int = 10,
) -> np.ndarray:
    """Active queries: the pairs on which an ensemble disagrees most (Christiano et al., 2017).

    Draws ``oversample * num_pairs`` uniform candidate pairs and keeps the (at most) ``num_pairs``
    distinct ones with the largest variance across members of the predicted P(a ≻ b).

    Args:
        member_returns: [M, N], each ensemble member's predicted return of each of N segments.
        num_pairs: how many pairs to return ([num_pairs, 2] indices).
        rng: the random generator.
        oversample: candidates drawn per returned pair.
    """
    member_returns = np.asarray(member_returns, dtype=np.float64)
    if member_returns.ndim != 2 or member_returns.shape[0] < 2:
        raise ValueError(f"member_returns must be [members >= 2, segments], got {member_returns.shape}")
    if oversample < 1:
        raise ValueError(f"oversample must be >= 1, got {oversample}")
    candidates = uniform_pairs(member_returns.shape[1], oversample * num_pairs, rng)
    # The same pair drawn twice (in either order) would be asked twice.
    candidates = np.unique(np.sort(candidates, axis=1), axis=0)
    returns = torch.from_numpy(member_returns)
    probabilities = preference_probability(returns[:, candidates[:, 0]], returns[:, candidates[:, 1]])
    disagreement = probabilities.var(dim=0).numpy()
    return candidates[np.argsort(-disagreement, kind="stable")[:num_pairs]]
