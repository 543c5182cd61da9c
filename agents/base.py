"""What every agent shares: env and device setup, the learn-call bookkeeping, checkpoints that resume exactly.

A checkpoint is taken between iterations and holds everything the next iteration reads: the
networks, optimizer, normalizers, the KL controller's β, the torch RNG, the observation the agent
acts on next, the episodes in progress and, for our envs (the batched cores and the TokenEnv), the
env's own ``state_dict()``. Resuming from it on the CPU therefore repeats the uninterrupted run bit
for bit. Envs stepped on the host (gymnasium's, MuJoCo's) cannot be snapshotted in general: after a
load they restart their episodes from a reset seeded by the step count, so such a resume is
reproducible but not identical.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import torch
from gymnasium.vector import VectorEnv

from agents.checkpoint import load_checkpoint, save_atomic
from agents.logger import EpisodeTracker, Logger
from agents.vector import ResumableEnv, env_gamma, make_tensor_vector_env
from rlhf_envs.device import resolve_device

CHECKPOINT_NAME = "checkpoint.pt"


def build_config(config_class: type, overrides: dict[str, Any]) -> Any:
    """``config_class(**overrides)``, with a ValueError listing the valid fields for an unknown one."""
    names = {field.name for field in dataclasses.fields(config_class)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {config_class.__name__} option(s) {unknown}; valid: {sorted(names)}")
    return config_class(**overrides)


class BaseAlgorithm:
    """Owns the vector env, device, seed and step counters; subclasses own networks and the update.

    Subclasses set ``config_class`` and implement ``_state_dict`` / ``_load_state_dict`` (their
    networks, optimizers, buffers) and may override ``_prepare_observation`` (e.g. normalization)
    and ``_make_env`` (how a given env is adapted).
    """

    config_class: ClassVar[type]

    def __init__(
        self,
        env: Any,
        device: str | torch.device,
        seed: int,
        config: dict[str, Any],
        spaces: tuple[gym.Space, gym.Space] | None = None,
    ) -> None:
        self.config = build_config(self.config_class, config)
        self.device = resolve_device(device)
        self.seed = seed
        # One seed fixes the network initialization and every sample the agent draws.
        torch.manual_seed(seed)
        self.env = None if env is None else self._make_env(env)
        self.gamma: float | None = None  # the discount, for the agents that have one
        self.num_timesteps = 0
        self._target_timesteps = 0
        self._last_obs: torch.Tensor | None = None
        self.tracker = None if self.env is None else EpisodeTracker(self.env.num_envs, self.device)
        if self.env is not None:
            spaces = (self.env.single_observation_space, self.env.single_action_space)
        elif spaces is None:
            raise ValueError(
                f"{type(self).__name__} needs an env or spaces=(observation_space, action_space)"
            )
        self.observation_space, self.action_space = spaces

    def _make_env(self, env: Any) -> VectorEnv:
        """The vector env the agent steps: tensors in and out on its device."""
        return make_tensor_vector_env(env, self.config.num_envs, self.device)

    def _discount(self, configured: float | None) -> float:
        """γ: the configured one, else the env's own (the tabular MDP's), else 0.99."""
        if configured is not None:
            return float(configured)
        own = None if self.env is None else env_gamma(self.env)
        return 0.99 if own is None else float(own)

    def _start_learn(
        self, total_timesteps: int, reset_num_timesteps: bool, progress_bar: bool, desc: str
    ) -> Logger:
        """Set the step target and make sure there is an observation to act on."""
        if self.env is None:
            name = type(self).__name__
            raise ValueError(
                f"this agent has no env to learn from; pass one to {name}(...) or {name}.load(...)"
            )
        if total_timesteps < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
        if reset_num_timesteps:
            self.num_timesteps, self._last_obs = 0, None
        self._target_timesteps = self.num_timesteps + total_timesteps
        if self._last_obs is None:
            obs, _ = self.env.reset(seed=self.seed + self.num_timesteps)
            self._last_obs = self._prepare_observation(obs, update=True)
            self.tracker.reset()
        return Logger(self.config.logdir, self._target_timesteps, self.num_timesteps, desc, progress_bar)

    def _maybe_checkpoint(self, steps_before: int) -> None:
        """Write ``logdir/checkpoint.pt`` when this iteration crossed a multiple of ``checkpoint_every``."""
        every = self.config.checkpoint_every
        if every and self.num_timesteps // every > steps_before // every:
            self.save(Path(self.config.logdir) / CHECKPOINT_NAME)

    def _prepare_observation(self, obs: torch.Tensor, update: bool) -> torch.Tensor:
        return obs

    def _state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, path: str | os.PathLike) -> None:
        """Write all it takes to predict, or to continue training exactly, atomically to ``path``."""
        env = None if self.env is None else self.env.unwrapped
        started = self._last_obs is not None  # the env has been reset: there are episodes to save
        env_state = env.state_dict() if started and isinstance(env, ResumableEnv) else None
        state = {
            "algorithm": type(self).__name__,
            # Field by field, not dataclasses.asdict: schedules must stay LinearSchedule objects.
            "config": {f.name: getattr(self.config, f.name) for f in dataclasses.fields(self.config)},
            "gamma": self.gamma,
            "spaces": (self.observation_space, self.action_space),
            "seed": self.seed,
            "num_timesteps": self.num_timesteps,
            "target_timesteps": self._target_timesteps,
            "last_obs": self._last_obs,
            "tracker": None if self.tracker is None else self.tracker.state_dict(),
            "env": env_state,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            **self._state_dict(),
        }
        save_atomic(state, path)

    @classmethod
    def load(
        cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto", **overrides: Any
    ):
        """Load a saved agent; ``env`` is needed only to train further (an env with the same spaces).

        ``overrides`` replace saved config options (e.g. ``logdir``). On the kind of device it was saved
        on, training resumes exactly; on another (``"auto"`` picks a GPU when there is one), the weights
        move and training goes on, its episodes restarted and the random streams that cannot move
        (a CPU generator's state does not fit a CUDA generator) seeded from the saved ones.
        """
        state = load_checkpoint(path)
        if state.get("algorithm") != cls.__name__:
            raise ValueError(f"{path} holds a {state.get('algorithm')} checkpoint, not a {cls.__name__} one")
        config = {**state["config"], **overrides}
        agent = cls(
            env,
            device=device,
            seed=state["seed"],
            spaces=None if env is not None else state["spaces"],
            **config,
        )
        agent._load_state_dict(state)
        if state["gamma"] is not None:  # as resolved from the env it trained on
            agent.gamma = state["gamma"]
        agent.num_timesteps = state["num_timesteps"]
        agent._target_timesteps = state["target_timesteps"]
        env = None if agent.env is None else agent.env.unwrapped
        if state["env"] is not None and isinstance(env, ResumableEnv):
            try:
                env.load_state_dict(state["env"])
            except ValueError:
                pass  # another episode count or device: the episodes restart from a seeded reset
            else:  # continue the episodes where they were
                agent._last_obs = state["last_obs"].to(agent.device)
                agent.tracker.load_state_dict(state["tracker"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and agent.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], agent.device)
        return agent
