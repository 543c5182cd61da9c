"""Tabular Q-learning with ε-greedy exploration, run over many episodes at once on the device."""

from __future__ import annotations

import os
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from tqdm.auto import tqdm

from agents.checkpoint import load_checkpoint, save_atomic
from agents.schedules import LinearSchedule, Schedule, value_at
from agents.vector import make_tensor_vector_env
from rlhf_envs.device import resolve_device


class QLearning:
    """Q-learning (Watkins 1989) for envs with Discrete observations and actions.

    Each step moves Q(x, a) towards the lecture's Bellman target r + γ max_a' Q(x', a'). With
    ``num_envs`` episodes stepping together, the TD errors of the samples that share a pair (x, a)
    in one step are averaged, so one batched step is one Q-learning update per visited pair;
    with ``num_envs=1`` this is the textbook algorithm. Truncated episodes bootstrap from their
    final observation; terminated ones do not.

    Args:
        env: an env id, a Gymnasium env or a vector env with Discrete observation and action spaces;
            None for an agent that only predicts (then ``q_table`` is required).
        learning_rate: step size, a constant or a :class:`LinearSchedule` over training.
        gamma: discount; defaults to the env's own ``gamma`` if it has one, else 0.99.
        exploration: ε of the ε-greedy policy, a constant or a schedule.
        num_envs: episodes stepped in parallel (ignored when ``env`` is already a vector env).
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        seed: seeds the env and the exploration; the same seed gives the same Q table.
        q_table: initial Q values, shape [S, A] (zeros by default; large values explore optimistically).
    """

    def __init__(
        self,
        env: Any,
        learning_rate: Schedule = LinearSchedule(0.5, 0.02),
        gamma: float | None = None,
        exploration: Schedule = LinearSchedule(1.0, 0.1, fraction=0.5),
        num_envs: int = 64,
        device: str | torch.device = "auto",
        seed: int = 0,
        q_table: np.ndarray | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.env = None if env is None else make_tensor_vector_env(env, num_envs, self.device)
        if self.env is not None:
            for role, space in (
                ("observation", self.env.single_observation_space),
                ("action", self.env.single_action_space),
            ):
                if not isinstance(space, gym.spaces.Discrete):
                    raise ValueError(f"QLearning needs a Discrete {role} space, got {space}")
            shape = (int(self.env.single_observation_space.n), int(self.env.single_action_space.n))
        elif q_table is None:
            raise ValueError("QLearning needs an env or a q_table to know its spaces")
        else:
            shape = np.shape(q_table)
        if q_table is not None and np.shape(q_table) != shape:
            raise ValueError(
                f"q_table must have shape [S, A] = {shape} for this env, got {np.shape(q_table)}"
            )
        self.num_states, self.num_actions = shape
        self._q = torch.zeros(shape, device=self.device)
        if q_table is not None:
            self._q.copy_(torch.as_tensor(np.asarray(q_table)))
        # A discount that belongs to the MDP (the tabular core's γ) is the one Q* is defined with.
        env_gamma = getattr(getattr(self.env, "core", None), "gamma", None)
        self.gamma = float(gamma if gamma is not None else env_gamma if env_gamma is not None else 0.99)
        if not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {self.gamma}")
        self.learning_rate = learning_rate
        self.exploration = exploration
        self.seed = seed
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        self.num_timesteps = 0

    @property
    def q_table(self) -> np.ndarray:
        """The learned Q values, shape [S, A]."""
        return self._q.cpu().numpy()

    def learn(self, total_timesteps: int, progress_bar: bool = True) -> QLearning:
        """Run ε-greedy Q-learning for ``total_timesteps`` env steps (summed over parallel envs)."""
        if self.env is None:
            raise ValueError(
                "this agent has no env to learn from; pass one to QLearning(...) or QLearning.load(...)"
            )
        num_envs = self.env.num_envs
        iterations = max(1, total_timesteps // num_envs)
        obs, _ = self.env.reset(seed=self.seed)
        flat_q = self._q.view(-1)
        with tqdm(
            total=iterations * num_envs, disable=not progress_bar, desc="Q-learning", unit="step"
        ) as bar:
            for iteration in range(iterations):
                progress = iteration / iterations
                epsilon = value_at(self.exploration, progress)
                explore = torch.rand(num_envs, generator=self._generator, device=self.device) < epsilon
                random_actions = torch.randint(
                    self.num_actions, (num_envs,), generator=self._generator, device=self.device
                )
                actions = torch.where(explore, random_actions, self._q[obs].argmax(dim=1))

                next_obs, reward, terminated, truncated, info = self.env.step(actions)
                # After an autoreset next_obs is a new episode's start; bootstrap from the old one's end.
                last_obs = torch.where(info["_final_obs"], info["final_obs"], next_obs)
                target = reward + self.gamma * (~terminated) * self._q[last_obs].max(dim=1).values
                td_error = target - self._q[obs, actions]

                pair = obs * self.num_actions + actions
                error_sum = torch.zeros_like(flat_q).index_add_(0, pair, td_error)
                visits = torch.zeros_like(flat_q).index_add_(0, pair, torch.ones_like(td_error))
                flat_q += value_at(self.learning_rate, progress) * error_sum / visits.clamp(min=1)

                obs = next_obs
                self.num_timesteps += num_envs
                bar.update(num_envs)
        return self

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Greedy actions for ``obs`` (an int or an array of ints), SB3-style ``(actions, None)``.

        With ``deterministic=False`` the action is ε-greedy with the final ε of the schedule.
        """
        obs_array = np.asarray(obs)
        if (
            not np.issubdtype(obs_array.dtype, np.integer)
            or ((obs_array < 0) | (obs_array >= self.num_states)).any()
        ):
            raise ValueError(f"observations must be integers in [0, {self.num_states}), got {obs!r}")
        actions = self.q_table[obs_array].argmax(axis=-1)
        if not deterministic:
            rng = np.random.default_rng()
            explore = rng.random(actions.shape) < value_at(self.exploration, 1.0)
            actions = np.where(explore, rng.integers(self.num_actions, size=actions.shape), actions)
        return actions, None

    def save(self, path: str | os.PathLike) -> None:
        save_atomic(
            {
                "q_table": self.q_table,
                "gamma": self.gamma,
                "learning_rate": self.learning_rate,
                "exploration": self.exploration,
                "seed": self.seed,
                "num_timesteps": self.num_timesteps,
            },
            path,
        )

    @classmethod
    def load(cls, path: str | os.PathLike, env: Any = None, device: str | torch.device = "auto") -> QLearning:
        """Load a saved agent; ``env`` is needed only to train further (any env with matching spaces)."""
        state = load_checkpoint(path)
        agent = cls(
            env,
            learning_rate=state["learning_rate"],
            gamma=state["gamma"],
            exploration=state["exploration"],
            device=device,
            seed=state["seed"],
            q_table=state["q_table"],
        )
        agent.num_timesteps = state["num_timesteps"]
        return agent
