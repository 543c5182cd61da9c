"""Tabular Q-learning with ε-greedy exploration, run over many episodes at once on the device."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from agents.base import BaseAlgorithm
from agents.policies import observation_batch
from agents.schedules import LinearSchedule, Schedule, value_at


@dataclass
class QLearningConfig:
    """Hyperparameters of :class:`QLearning`; each can be passed to ``QLearning(env, **config)``.

    Args:
        num_envs: episodes stepped in parallel (ignored when the env is already a vector env).
        learning_rate: step size, a constant or a :class:`LinearSchedule` over training.
        gamma: discount; None takes the env's own ``gamma`` if it has one, else 0.99.
        exploration: ε of the ε-greedy policy, a constant or a schedule.
        log_interval: env steps between TensorBoard records.
        logdir: TensorBoard logs and checkpoints go here (None: neither).
        checkpoint_every: write ``logdir/checkpoint.pt`` every this many env steps (0: never).
    """

    num_envs: int = 64
    learning_rate: Schedule = LinearSchedule(0.5, 0.02)
    gamma: float | None = None
    exploration: Schedule = LinearSchedule(1.0, 0.1, fraction=0.5)
    log_interval: int = 5_000
    logdir: str | None = None
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        for name in ("num_envs", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gamma is not None and not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {self.gamma}")
        if self.checkpoint_every and self.logdir is None:
            raise ValueError("checkpoint_every needs a logdir to write the checkpoint to")


class QLearning(BaseAlgorithm):
    """Q-learning (Watkins 1989) for envs with Discrete observations and actions.

    Each step moves Q(x, a) towards the lecture's Bellman target r + γ max_a' Q(x', a'). With
    ``num_envs`` episodes stepping together, the TD errors of the samples that share a pair (x, a)
    in one step are averaged, so one batched step is one Q-learning update per visited pair;
    with ``num_envs=1`` this is the textbook algorithm. Truncated episodes bootstrap from their
    final observation; terminated ones do not.

    Args:
        env: an env id, a Gymnasium env or a vector env with Discrete observation and action spaces;
            None for an agent that only predicts (then ``q_table`` or ``spaces`` is required).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        seed: seeds the env and the exploration; the same seed gives the same Q table.
        q_table: initial Q values, shape [S, A] (zeros by default; large values explore optimistically).
        spaces: ``(observation_space, action_space)``, needed only without an env and a ``q_table``.
        **config: fields of :class:`QLearningConfig`.
    """

    config_class = QLearningConfig

    def __init__(
        self,
        env: Any,
        device: str | torch.device = "auto",
        seed: int = 0,
        q_table: np.ndarray | None = None,
        spaces: tuple[gym.Space, gym.Space] | None = None,
        **config: Any,
    ) -> None:
        if env is None and spaces is None and q_table is not None:
            spaces = tuple(gym.spaces.Discrete(size) for size in np.shape(q_table))
        super().__init__(env, device, seed, config, spaces)
        for role, space in (("observation", self.observation_space), ("action", self.action_space)):
            if not isinstance(space, gym.spaces.Discrete):
                raise ValueError(f"QLearning needs a Discrete {role} space, got {space}")
        shape = (int(self.observation_space.n), int(self.action_space.n))
        if q_table is not None and np.shape(q_table) != shape:
            raise ValueError(
                f"q_table must have shape [S, A] = {shape} for this env, got {np.shape(q_table)}"
            )
        self.num_states, self.num_actions = shape
        self._q = torch.zeros(shape, device=self.device)
        if q_table is not None:
            self._q.copy_(torch.as_tensor(np.asarray(q_table)))
        # A discount that belongs to the MDP (the tabular core's γ) is the one Q* is defined with.
        self.gamma = self._discount(self.config.gamma)
        self._generator = torch.Generator(device=self.device).manual_seed(seed)

    @property
    def q_table(self) -> np.ndarray:
        """The learned Q values, shape [S, A]."""
        return self._q.cpu().numpy()

    def learn(
        self, total_timesteps: int, progress_bar: bool = True, reset_num_timesteps: bool = True
    ) -> QLearning:
        """Run ε-greedy Q-learning for ``total_timesteps`` env steps (summed over parallel envs,
        rounded down to whole batched steps, at least one).

        With ``reset_num_timesteps=False`` training continues where the last call (or the loaded
        checkpoint) stopped, and the schedules run to the new total.
        """
        batch = 1 if self.env is None else self.env.num_envs
        if total_timesteps >= 1:  # a count below 1 is refused by _start_learn, not rounded up
            total_timesteps = max(1, total_timesteps // batch) * batch
        logger = self._start_learn(total_timesteps, reset_num_timesteps, progress_bar, desc="Q-learning")
        cfg, flat_q = self.config, self._q.view(-1)
        try:
            while self.num_timesteps < self._target_timesteps:
                steps_before, obs = self.num_timesteps, self._last_obs
                progress = self.num_timesteps / self._target_timesteps
                epsilon = value_at(cfg.exploration, progress)
                explore = torch.rand(batch, generator=self._generator, device=self.device) < epsilon
                random_actions = torch.randint(
                    self.num_actions, (batch,), generator=self._generator, device=self.device
                )
                actions = torch.where(explore, random_actions, self._q[obs].argmax(dim=1))

                next_obs, reward, terminated, truncated, info = self.env.step(actions)
                self.tracker.update(reward, terminated | truncated)
                # After an autoreset next_obs is a new episode's start; bootstrap from the old one's end.
                last_obs = torch.where(info["_final_obs"], info["final_obs"], next_obs)
                target = reward + self.gamma * (~terminated) * self._q[last_obs].max(dim=1).values
                td_error = target - self._q[obs, actions]

                pair = obs * self.num_actions + actions
                error_sum = torch.zeros_like(flat_q).index_add_(0, pair, td_error)
                visits = torch.zeros_like(flat_q).index_add_(0, pair, torch.ones_like(td_error))
                flat_q += value_at(cfg.learning_rate, progress) * error_sum / visits.clamp(min=1)

                self._last_obs = next_obs
                self.num_timesteps += batch
                logger.advance(batch)
                if self.num_timesteps // cfg.log_interval > steps_before // cfg.log_interval:
                    episodes = {f"rollout/{name}": value for name, value in self.tracker.summary().items()}
                    logger.record(self.num_timesteps, {**episodes, "train/epsilon": epsilon})
                self._maybe_checkpoint(steps_before)
        finally:
            logger.close()
        return self

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Greedy actions for ``obs`` (an int or an array of ints), SB3-style ``(actions, None)``.

        With ``deterministic=False`` the action is ε-greedy with the final ε of the schedule.
        """
        obs_tensor, single = observation_batch(obs, self.observation_space, self.device)
        actions = self._q[obs_tensor - self.observation_space.start].argmax(dim=-1).cpu().numpy()
        actions = actions[0] if single else actions
        if not deterministic:
            rng = np.random.default_rng()
            explore = rng.random(actions.shape) < value_at(self.config.exploration, 1.0)
            actions = np.where(explore, rng.integers(self.num_actions, size=actions.shape), actions)
        return actions, None

    def _state_dict(self) -> dict[str, Any]:
        generator = {
            "generator": self._generator.get_state(),
            "generator_device": self._generator.device.type,
        }
        return {"q_table": self._q, **generator}

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self._q.copy_(state["q_table"])
        if state.get("generator_device", self._generator.device.type) == self._generator.device.type:
            self._generator.set_state(state["generator"])
        else:  # a CPU generator's state does not fit a CUDA one: a stream seeded from the saved state
            digest = hashlib.blake2b(state["generator"].numpy().tobytes(), digest_size=8).digest()
            self._generator.manual_seed(int.from_bytes(digest, "little"))
