"""One batched core per MDP, two faces over it.

A :class:`BatchedCore` holds an MDP's dynamics as tensor functions that step B episodes at once
on one device. :class:`CoreEnv` (a ``gymnasium.Env``, B = 1, numpy in and out) and
:class:`CoreVectorEnv` (a ``gymnasium.vector.VectorEnv``, numpy or device tensors in and out) are
the only two faces; no MDP writes its dynamics twice.
"""

from __future__ import annotations

import abc
import copy
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from rlhf_envs.device import resolve_device

TensorDict = dict[str, torch.Tensor]


class BatchedCore(abc.ABC):
    """The dynamics of one MDP for B episodes at once, on ``self.device``.

    Subclasses set ``observation_space`` and ``action_space`` (of one episode), ``horizon`` (the N
    decision epochs after which an episode is truncated) and implement :meth:`reset` and
    :meth:`step`. Randomness comes only from the ``generator`` passed in, so a seed fixes a run.
    """

    observation_space: gym.Space
    action_space: gym.Space
    horizon: int

    def __init__(self, device: str | torch.device = "cpu") -> None:
        self.device = resolve_device(device)

    @abc.abstractmethod
    def reset(self, num_envs: int, generator: torch.Generator) -> torch.Tensor:
        """Start states of ``num_envs`` episodes, shape [B, ...]."""

    @abc.abstractmethod
    def step(
        self, state: torch.Tensor, action: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, TensorDict]:
        """Advance every episode one step: ``(next_state, reward[B], terminated[B], info)``.

        ``info`` maps names to [B] tensors (e.g. what the reward was made of).
        """

    def to(self, device: str | torch.device) -> BatchedCore:
        """A copy of this core whose tensors live on ``device``."""
        moved = copy.copy(self)
        moved.device = resolve_device(device)
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(moved, name, value.to(moved.device))
        return moved

    def observe(self, state: torch.Tensor) -> torch.Tensor:
        """The observation of each episode's state; the state itself unless overridden."""
        return state

    def render(self, state: torch.Tensor, mode: str) -> np.ndarray | str | None:
        """Draw one episode's state (shape [...], no batch axis) in ``mode``."""
        raise NotImplementedError(f"{type(self).__name__} has no render modes")


def _check_render_mode(render_mode: str | None, metadata: dict[str, Any]) -> None:
    if render_mode is not None and render_mode not in metadata["render_modes"]:
        raise ValueError(
            f"render_mode must be one of {metadata['render_modes']} or None, got {render_mode!r}"
        )


def _validate_numpy_actions(actions: Any, space: gym.Space) -> np.ndarray:
    array = np.asarray(actions)
    if isinstance(space, gym.spaces.Discrete | gym.spaces.MultiDiscrete):
        if not np.issubdtype(array.dtype, np.integer):
            raise ValueError(f"actions must be integers for {space}, got dtype {array.dtype}")
    if array.shape != space.shape:
        raise ValueError(f"actions must have shape {space.shape} for {space}, got {array.shape}")
    if not space.contains(array.astype(space.dtype)):
        raise ValueError(f"action {actions!r} is outside the action space {space}")
    return array


class CoreEnv(gym.Env):
    """The single-episode Gymnasium face of a :class:`BatchedCore` (B = 1, numpy in and out).

    It runs on the CPU by default: a Gymnasium env hands numpy to the caller every step, so a GPU
    would only add a copy per step. Use :class:`CoreVectorEnv` to run many episodes on a GPU.
    Subclasses list their render modes in the class attribute ``metadata``.
    """

    metadata: dict[str, Any] = {"render_modes": [], "render_fps": 10}

    def __init__(self, core: BatchedCore, render_mode: str | None = None) -> None:
        _check_render_mode(render_mode, self.metadata)
        self.core = core
        self.observation_space = core.observation_space
        self.action_space = core.action_space
        self.render_mode = render_mode
        self._generator = torch.Generator(device=core.device)
        self._state: torch.Tensor | None = None
        self._elapsed = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        # The torch generator follows gymnasium's np_random, so reset(seed=s) fixes the episode.
        self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
        self._state = self.core.reset(1, self._generator)
        self._elapsed = 0
        return self._observation(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        action = _validate_numpy_actions(action, self.action_space)
        action_tensor = torch.as_tensor(action, device=self.core.device).unsqueeze(0)
        self._state, reward, terminated, info = self.core.step(self._state, action_tensor, self._generator)
        self._elapsed += 1
        terminated_flag = bool(terminated[0])
        truncated = self._elapsed >= self.core.horizon and not terminated_flag
        step_info = {name: value[0].item() for name, value in info.items()}
        return self._observation(), float(reward[0]), terminated_flag, truncated, step_info

    def render(self) -> np.ndarray | str | None:
        if self.render_mode is None or self._state is None:
            return None
        return self.core.render(self._state[0], self.render_mode)

    def _observation(self) -> Any:
        observation = self.core.observe(self._state)[0].cpu().numpy()
        if isinstance(self.observation_space, gym.spaces.Discrete):
            return int(observation)
        return observation.astype(self.observation_space.dtype)


class CoreVectorEnv(VectorEnv):
    """B episodes of a :class:`BatchedCore` stepped together on the core's device.

    With ``as_tensors=True`` actions, observations, rewards and flags are torch tensors on the
    device and nothing is copied to the host; otherwise they are numpy arrays, as in gymnasium's
    own vector envs. Finished episodes restart in the same step (gymnasium's ``SAME_STEP``
    autoreset): ``info["final_obs"]`` holds every episode's last observation, valid where
    ``info["_final_obs"]`` is true.
    """

    metadata: dict[str, Any] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": [],
        "render_fps": 10,
    }

    def __init__(
        self,
        core: BatchedCore,
        num_envs: int,
        as_tensors: bool = False,
        render_mode: str | None = None,
    ) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        _check_render_mode(render_mode, self.metadata)
        self.core = core
        self.device = core.device
        self.num_envs = num_envs
        self.as_tensors = as_tensors
        self.render_mode = render_mode
        self.single_observation_space = core.observation_space
        self.single_action_space = core.action_space
        self.observation_space = batch_space(core.observation_space, num_envs)
        self.action_space = batch_space(core.action_space, num_envs)
        self._generator = torch.Generator(device=self.device)
        self._state: torch.Tensor | None = None
        self._elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        self._generator.manual_seed(int(self.np_random.integers(2**63 - 1)))
        self._state = self.core.reset(self.num_envs, self._generator)
        self._elapsed.zero_()
        return self._output(self.core.observe(self._state)), {}

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, dict]:
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        state, reward, terminated, info = self.core.step(
            self._state, self._action_tensor(actions), self._generator
        )
        self._elapsed += 1
        truncated = (self._elapsed >= self.core.horizon) & ~terminated
        done = terminated | truncated
        final_obs = self.core.observe(state)
        # Branch-free autoreset keeps the step free of host syncs: every row draws a fresh start
        # and only the finished rows take it.
        fresh = self.core.reset(self.num_envs, self._generator)
        self._state = torch.where(done.view(-1, *([1] * (state.dim() - 1))), fresh, state)
        self._elapsed = torch.where(done, 0, self._elapsed)
        info = dict(info, final_obs=final_obs, _final_obs=done)
        return (
            self._output(self.core.observe(self._state)),
            self._output(reward),
            self._output(terminated),
            self._output(truncated),
            {name: self._output(value) for name, value in info.items()},
        )

    def render(self) -> tuple[Any, ...] | None:
        if self.render_mode is None or self._state is None:
            return None
        return tuple(self.core.render(row, self.render_mode) for row in self._state)

    def _action_tensor(self, actions: Any) -> torch.Tensor:
        if isinstance(actions, torch.Tensor):
            expected = self.action_space.shape
            if tuple(actions.shape) != expected:
                raise ValueError(f"actions must have shape {expected}, got {tuple(actions.shape)}")
            # A range check on a GPU tensor would sync with the host every step; there the
            # core's indexing asserts instead.
            if actions.device.type == "cpu":
                _validate_numpy_actions(actions.numpy(), self.action_space)
            return actions.to(self.device)
        return torch.as_tensor(_validate_numpy_actions(actions, self.action_space), device=self.device)

    def _output(self, value: torch.Tensor) -> Any:
        return value if self.as_tensors else value.cpu().numpy()
