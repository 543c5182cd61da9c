"""Put any control reward model into any environment, keeping the true reward in ``info``."""

from __future__ import annotations

from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from rlhf_envs.rewards.protocols import ControlRewardModel, RewardLike


def validate_reward(value: RewardLike, batch_size: int | None) -> torch.Tensor:
    """Check a reward model's output and return it as a float tensor (on the device it came on).

    Args:
        value: what the reward model returned: a number, a NumPy array or a torch tensor.
        batch_size: ``None`` for one transition (shape ``()`` or ``(1,)``), else ``B`` (shape ``(B,)``).

    Raises:
        TypeError: the output is not numeric.
        ValueError: the output has the wrong shape or holds NaN or infinity.
    """
    try:
        reward = value.detach() if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value))
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(
            f"reward model returned {type(value).__name__}, which is not numeric: {error}"
        ) from None
    if reward.dtype == torch.bool or reward.is_complex():
        raise TypeError(f"reward model returned dtype {reward.dtype}; expected a real number")
    shape = tuple(reward.shape)
    if batch_size is None:
        if shape not in ((), (1,)):
            raise ValueError(f"reward model returned shape {shape} for one transition; expected () or (1,)")
    elif shape != (batch_size,):
        raise ValueError(
            f"reward model returned shape {shape} for a batch of {batch_size}; expected ({batch_size},)"
        )
    reward = reward if reward.is_floating_point() else reward.to(torch.get_default_dtype())
    if not bool(torch.isfinite(reward).all()):
        problem = "NaN" if bool(torch.isnan(reward).any()) else "infinity"
        raise ValueError(f"reward model returned {problem}: {reward.tolist()}")
    return reward


class LearnedReward(gym.Wrapper):
    """Replace an env's reward with a reward model's, keeping the env's own as ``info["true_reward"]``.

    Works on any single (non-vector) Gymnasium env. At every step the model is called once, without
    gradients, on the transition ``(obs, action, next_obs)`` exactly as the env produced it (unbatched);
    its output must be a finite scalar (shape ``()`` or ``(1,)``), else a ``ValueError`` says what is wrong.

    The wrapper keeps a reference to the last observation, so the env must not modify returned
    observations in place (Gymnasium envs return fresh arrays).

    Example:
        >>> import gymnasium as gym, rlhf_envs
        >>> env = LearnedReward(gym.make("rlhf_envs/HalfCheetah-v0"), lambda obs, act, nxt: nxt[8])
        >>> obs, info = env.reset(seed=0)
        >>> obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        >>> sorted(k for k in info if k.endswith("reward"))  # the model's reward is `reward`
        ['forward_reward', 'lecture_reward', 'true_reward']

    Args:
        env: the environment whose reward is replaced.
        reward_model: any :class:`~rlhf_envs.rewards.ControlRewardModel` (a function, a ``torch.nn.Module``).
    """

    def __init__(self, env: gym.Env, reward_model: ControlRewardModel) -> None:
        if isinstance(env, VectorEnv):
            raise TypeError("LearnedReward wraps a single env; use VectorLearnedReward for a vector env")
        if not callable(reward_model):
            raise TypeError(
                f"reward_model must be callable as (obs, action, next_obs), got {type(reward_model)}"
            )
        super().__init__(env)
        self.reward_model = reward_model
        self._obs: Any = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._obs = obs
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded(
                "call reset() before step(): the reward model needs the previous observation"
            )
        next_obs, true_reward, terminated, truncated, info = self.env.step(action)
        with torch.no_grad():
            reward = float(validate_reward(self.reward_model(self._obs, action, next_obs), batch_size=None))
        self._obs = next_obs
        info["true_reward"] = true_reward
        return next_obs, reward, terminated, truncated, info


class VectorLearnedReward(VectorWrapper):
    """The vector form of :class:`LearnedReward`: one reward-model call per batched step.

    The model gets ``[B, ...]`` observations and actions as the vector env returns them (NumPy arrays, or
    torch tensors left on their device) and must return shape ``(B,)``; the rewards come back in the env's
    own type (a tensor on the env's device, or a NumPy array); the env's are kept in ``info["true_reward"]``.
    Validation is :func:`validate_reward`, the single env's; its finiteness check reads one value back from
    the device per step.

    Autoreset, in the env's mode: with ``SAME_STEP`` an episode that ends is scored on its real last
    observation, ``info["final_obs"]``, not on the next episode's start; with ``NEXT_STEP`` (gymnasium's
    default and our batched envs') the reset step after an episode ends is no transition and scores 0,
    as the env's own reward does; with ``DISABLED`` every step is a transition, and
    ``reset(options={"reset_mask": mask})`` starts new episodes in the masked rows (in any mode).

    Args:
        env: the vector environment whose reward is replaced.
        reward_model: any batched :class:`~rlhf_envs.rewards.ControlRewardModel`.
    """

    def __init__(self, env: VectorEnv, reward_model: ControlRewardModel) -> None:
        if not isinstance(env, VectorEnv):
            raise TypeError("VectorLearnedReward wraps a vector env; use LearnedReward for a single env")
        if not callable(reward_model):
            raise TypeError(
                f"reward_model must be callable as (obs, action, next_obs), got {type(reward_model)}"
            )
        mode = AutoresetMode(env.metadata.get("autoreset_mode", AutoresetMode.NEXT_STEP))
        super().__init__(env)
        self.reward_model = reward_model
        self._next_step_autoreset = mode == AutoresetMode.NEXT_STEP
        self._obs: Any = None
        self._ended: Any = None

    def reset(
        self, *, seed: int | list[int | None] | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        reset_mask = None if options is None else options.get("reset_mask")  # gymnasium's envs pop it
        obs, info = self.env.reset(seed=seed, options=options)
        # Rows reset here start afresh; with a reset_mask the others keep a pending NEXT_STEP reset.
        self._ended = None if reset_mask is None or self._ended is None else self._ended & ~reset_mask
        self._obs = obs
        return obs, info

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict[str, Any]]:
        if self._obs is None:
            raise gym.error.ResetNeeded(
                "call reset() before step(): the reward model needs the previous observation"
            )
        next_obs, true_reward, terminated, truncated, info = self.env.step(actions)
        with torch.no_grad():
            reward = validate_reward(
                self.reward_model(self._obs, actions, _last_observations(next_obs, info)),
                batch_size=self.num_envs,
            )
            if isinstance(true_reward, torch.Tensor):
                dtype = true_reward.dtype if true_reward.is_floating_point() else torch.float32
                reward = reward.to(device=true_reward.device, dtype=dtype)
                if self._ended is not None:
                    reward = reward.masked_fill(self._ended, 0.0)
            else:
                reward = reward.cpu().numpy().astype(np.float64)
                if self._ended is not None:
                    reward[np.asarray(self._ended)] = 0.0
        if self._next_step_autoreset:
            self._ended = terminated | truncated
        self._obs = next_obs
        every_row = (
            torch.ones_like(terminated) if isinstance(terminated, torch.Tensor) else np.ones_like(terminated)
        )
        info |= {"true_reward": true_reward, "_true_reward": every_row}
        return next_obs, reward, terminated, truncated, info


def _last_observations(next_obs: Any, info: dict[str, Any]) -> Any:
    """Each transition's real next observation: ``info["final_obs"]`` where a SAME_STEP reset hid it."""
    if "_final_obs" not in info:
        return next_obs
    ended, final_obs = info["_final_obs"], info["final_obs"]
    if isinstance(next_obs, torch.Tensor):
        return torch.where(ended.view(-1, *([1] * (next_obs.dim() - 1))), final_obs, next_obs)
    ended = np.asarray(ended)
    if not ended.any():
        return next_obs
    last = np.array(next_obs, copy=True)
    # gymnasium keeps final observations in an object array with entries only where ended.
    last[ended] = np.stack(list(np.asarray(final_obs)[ended]))
    return last
