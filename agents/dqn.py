"""Deep Q-learning (Mnih et al. 2015) with double-Q targets (van Hasselt et al. 2016).

The lecture's Q-function Q(x, a) = r + γ E[max_a' Q(x', a')], with the table replaced by a
network fitted to the Bellman targets of transitions drawn from a replay buffer; a periodically
copied target network keeps the targets still while the network chases them.

Box actions go through :class:`DiscretizeActions`: each action dimension takes ``action_bins``
evenly spaced values. The Q-network then has one head per dimension (action branching,
Tavakoli et al. 2018) instead of one output per joint action: HalfCheetah's 6 joints with 3 bins
would need 3^6 = 729 joint outputs, each seen rarely, where 6 heads of 3 need 18, each trained
on every sample. Each head picks its own joint's value greedily, and all heads share one TD
target, built from the mean over heads of the next state's values. A single Discrete action is
the one-head case, which is ordinary double DQN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import VectorActionWrapper, VectorEnv
from torch import nn

from agents.base import BaseAlgorithm
from agents.buffers import ReplayBuffer
from agents.policies import BranchingQNetwork, observation_batch, observation_size
from agents.schedules import LinearSchedule, Schedule, value_at


class BoxBins:
    """Bin indices [B, D] (each in [0, bins)) as the evenly spaced Box actions they stand for, [B, *shape]:
    bin i of a dimension is ``low + i (high − low) / (bins − 1)``. The bounds are on ``device`` once.
    """

    def __init__(self, space: gym.spaces.Box, bins: int, device: torch.device) -> None:
        bounded = (
            isinstance(space, gym.spaces.Box)
            and np.isfinite(space.low).all()
            and np.isfinite(space.high).all()
        )
        if not bounded:
            raise ValueError(f"discretizing actions needs a bounded Box action space, got {space}")
        if bins < 2:
            raise ValueError(f"action_bins must be >= 2, got {bins}")
        self.shape, self.bins = space.shape, bins
        self.low = torch.as_tensor(space.low, dtype=torch.float32, device=device).reshape(-1)
        high = torch.as_tensor(space.high, dtype=torch.float32, device=device).reshape(-1)
        self.step = (high - self.low) / (bins - 1)

    def __call__(self, indices: torch.Tensor) -> torch.Tensor:
        return (self.low + indices.float() * self.step).reshape(indices.shape[0], *self.shape)


def action_heads(space: gym.Space, bins: int) -> tuple[int, int]:
    """``(heads, choices per head)`` of the Q-network for an action space (see the module docstring)."""
    if isinstance(space, gym.spaces.Discrete):
        return 1, int(space.n)
    if (
        isinstance(space, gym.spaces.MultiDiscrete)
        and space.nvec.size
        and (space.nvec == space.nvec.flat[0]).all()
    ):
        return int(space.nvec.size), int(space.nvec.flat[0])
    if isinstance(space, gym.spaces.Box):
        return math.prod(space.shape), bins
    raise ValueError(
        f"DQN needs a Discrete, MultiDiscrete (equal choices per dimension) or bounded Box "
        f"action space, got {space}"
    )


class DiscretizeActions(VectorActionWrapper):
    """A Box-action vector env as a ``MultiDiscrete([bins] * D)`` one, the bins given by :class:`BoxBins`:
    the bounds and (for odd ``bins``) their midpoint are actions."""

    def __init__(self, env: VectorEnv, bins: BoxBins) -> None:
        super().__init__(env)
        self.bins = bins
        self.single_action_space = gym.spaces.MultiDiscrete([bins.bins] * math.prod(bins.shape))

    def actions(self, actions: torch.Tensor) -> torch.Tensor:
        return self.bins(actions)


@dataclass
class DQNConfig:
    """Hyperparameters of :class:`DQN`; each can be passed to ``DQN(env, **config)``.

    Args:
        num_envs: envs stepped in parallel (ignored when the env is already a vector env).
        buffer_size: transitions the replay buffer holds.
        learning_starts: env steps of pure ε-greedy collection before the first update.
        batch_size: transitions per gradient step.
        learning_rate: Adam's step size, a constant or a :class:`LinearSchedule`.
        gamma: discount; None takes the env's own ``gamma`` if it has one, else 0.99.
        train_frequency: vector steps (of all ``num_envs`` envs) between training phases.
        gradient_steps: gradient steps per training phase.
        target_update_interval: env steps between target-network updates.
        tau: target ← τ online + (1 − τ) target at each update (1: a hard copy).
        exploration: ε of the ε-greedy policy, a constant or a schedule over training.
        reward_scale: rewards are multiplied by this before they are stored: the Huber loss is
            quadratic only for TD errors below 1, so rewards in the hundreds (the car's −1000)
            train in its linear, slow regime unless scaled down. Logged returns stay unscaled.
        double_q: choose the next action with the online network and value it with the target one.
        max_grad_norm: the global gradient norm is clipped to this.
        action_bins: values per dimension of a Box action (see :class:`DiscretizeActions`).
        net_arch: hidden layer widths of the Q-network.
        activation: ``"relu"`` or ``"tanh"``.
        log_interval: env steps between TensorBoard records.
        logdir: TensorBoard logs and checkpoints go here (None: neither).
        checkpoint_every: write ``logdir/checkpoint.pt`` every this many env steps (0: never).
    """

    num_envs: int = 128
    buffer_size: int = 100_000
    learning_starts: int = 4_096
    batch_size: int = 512
    learning_rate: Schedule = 1e-3
    gamma: float | None = None
    train_frequency: int = 1
    gradient_steps: int = 2
    target_update_interval: int = 1_024
    tau: float = 1.0
    exploration: Schedule = LinearSchedule(1.0, 0.02, fraction=0.3)
    reward_scale: float = 1.0
    double_q: bool = True
    max_grad_norm: float = 10.0
    action_bins: int = 3
    net_arch: tuple[int, ...] = (64, 64)
    activation: str = "relu"
    log_interval: int = 5_000
    logdir: str | None = None
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        for name in ("num_envs", "buffer_size", "batch_size", "train_frequency", "target_update_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.gamma is not None and not 0.0 <= self.gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if self.checkpoint_every and self.logdir is None:
            raise ValueError("checkpoint_every needs a logdir to write the checkpoint to")
        self.net_arch = tuple(self.net_arch)


class DQN(BaseAlgorithm):
    """Double DQN with a replay buffer, a target network, the Huber loss and an ε schedule.

    Action spaces: Discrete, MultiDiscrete with equal choices per dimension, and bounded Box
    (discretized, one Q-head per dimension; see the module docstring).

    Args:
        env: an env id, a Gymnasium env, or a vector env (gymnasium's with ``SAME_STEP`` autoreset,
            or our batched cores, which stay on the device); None for an agent that only predicts.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        seed: seeds the network initialization, the env resets and every sample.
        spaces: ``(observation_space, action_space)``, needed only without an env.
        **config: fields of :class:`DQNConfig`.
    """

    config_class = DQNConfig

    def __init__(
        self,
        env: Any,
        device: str | torch.device = "auto",
        seed: int = 0,
        spaces: tuple[gym.Space, gym.Space] | None = None,
        **config: Any,
    ) -> None:
        super().__init__(env, device, seed, config, spaces)
        cfg = self.config
        self.num_branches, self.num_bins = action_heads(self.action_space, cfg.action_bins)
        self.box_bins = None
        if isinstance(self.action_space, gym.spaces.Box):
            self.box_bins = BoxBins(self.action_space, cfg.action_bins, self.device)
            if self.env is not None:
                self.env = DiscretizeActions(self.env, self.box_bins)
        observation_size(self.observation_space)  # raises a ValueError naming an unsupported space
        self.gamma = self._discount(cfg.gamma)

        def q_network() -> BranchingQNetwork:
            return BranchingQNetwork(
                self.observation_space, self.num_branches, self.num_bins, cfg.net_arch, cfg.activation
            ).to(self.device)

        self.q_net = q_network()
        self.target_net = q_network()
        self.target_net.load_state_dict(self.q_net.state_dict())
        self.target_net.requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.q_net.parameters(), lr=value_at(cfg.learning_rate, 0.0))
        self.replay = None
        if self.env is not None:
            self.replay = ReplayBuffer(
                cfg.buffer_size,
                obs_shape=self.observation_space.shape,
                obs_dtype=torch.float32 if isinstance(self.observation_space, gym.spaces.Box) else torch.long,
                action_shape=(self.num_branches,),
                device=self.device,
            )
        # Loss and mean Q summed since the last log record, and how many gradient steps made them.
        self._train_totals = torch.zeros(3, device=self.device)

    def learn(self, total_timesteps: int, progress_bar: bool = True, reset_num_timesteps: bool = True) -> DQN:
        """Train for ``total_timesteps`` env steps (summed over parallel envs).

        With ``reset_num_timesteps=False`` training continues where the last call (or the loaded
        checkpoint) stopped, and the schedules run to the new total.
        """
        cfg = self.config
        logger = self._start_learn(total_timesteps, reset_num_timesteps, progress_bar, desc="DQN")
        num_envs = self.env.num_envs
        try:
            while self.num_timesteps < self._target_timesteps:
                steps_before = self.num_timesteps
                progress = self.num_timesteps / self._target_timesteps
                epsilon = value_at(cfg.exploration, progress)

                obs = self._last_obs
                actions = self._epsilon_greedy(obs, epsilon)
                next_obs, reward, terminated, truncated, info = self.env.step(self._env_actions(actions))
                done = terminated | truncated
                self.tracker.update(reward, done)
                next_obs = self._prepare_observation(next_obs, update=False)
                # An episode that just ended is followed by its final observation, not the reset one.
                final_obs = self._prepare_observation(info["final_obs"], update=False)
                true_next = torch.where(done.view(-1, *[1] * (obs.dim() - 1)), final_obs, next_obs)
                self.replay.add(obs, actions, reward * cfg.reward_scale, true_next, terminated)
                self._last_obs = next_obs
                self.num_timesteps += num_envs
                logger.advance(num_envs)

                iteration = self.num_timesteps // num_envs
                if self.num_timesteps >= cfg.learning_starts and iteration % cfg.train_frequency == 0:
                    for group in self.optimizer.param_groups:
                        group["lr"] = value_at(cfg.learning_rate, progress)
                    for _ in range(cfg.gradient_steps):
                        self._train_step()
                if (
                    self.num_timesteps // cfg.target_update_interval
                    > steps_before // cfg.target_update_interval
                ):
                    self._update_target()
                if self.num_timesteps // cfg.log_interval > steps_before // cfg.log_interval:
                    logger.record(self.num_timesteps, self._log_scalars(epsilon))
                self._maybe_checkpoint(steps_before)
        finally:
            logger.close()
        return self

    def _epsilon_greedy(self, obs: torch.Tensor, epsilon: float) -> torch.Tensor:
        """Per head: a uniformly random bin with probability ε, else the greedy one. Shape [N, heads]."""
        with torch.no_grad():
            greedy = self.q_net(obs).argmax(-1)
        random_actions = torch.randint(self.num_bins, greedy.shape, device=self.device)
        explore = torch.rand(greedy.shape, device=self.device) < epsilon
        return torch.where(explore, random_actions, greedy)

    def _train_step(self) -> None:
        """One gradient step of the Huber loss between Q(x, a) and the double-Q target."""
        cfg = self.config
        batch = self.replay.sample(cfg.batch_size)
        q = self.q_net(batch["obs"]).gather(2, batch["actions"].unsqueeze(-1)).squeeze(-1)  # [B, heads]
        with torch.no_grad():
            next_q_target = self.target_net(batch["next_obs"])
            if cfg.double_q:
                next_actions = self.q_net(batch["next_obs"]).argmax(-1, keepdim=True)
                next_q = next_q_target.gather(2, next_actions).squeeze(-1)
            else:
                next_q = next_q_target.max(-1).values
            not_terminated = 1.0 - batch["terminated"]
            target = batch["rewards"] + self.gamma * not_terminated * next_q.mean(-1)
        loss = nn.functional.smooth_l1_loss(q, target.unsqueeze(-1).expand_as(q))
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q_net.parameters(), cfg.max_grad_norm)
        self.optimizer.step()
        self._train_totals += torch.stack(
            [loss.detach(), q.detach().mean(), torch.ones((), device=self.device)]
        )

    def _update_target(self) -> None:
        with torch.no_grad():
            for target, online in zip(self.target_net.parameters(), self.q_net.parameters(), strict=True):
                target.lerp_(online, self.config.tau)

    def _log_scalars(self, epsilon: float) -> dict[str, float]:
        """Episode statistics and training means since the last record: the one host sync per record."""
        scalars = {f"rollout/{name}": value for name, value in self.tracker.summary().items()}
        loss_sum, q_sum, steps = self._train_totals.tolist()
        self._train_totals.zero_()
        if steps:
            scalars.update({"train/loss": loss_sum / steps, "train/q_mean": q_sum / steps})
        return {**scalars, "train/epsilon": epsilon}

    def _env_actions(self, actions: torch.Tensor) -> torch.Tensor:
        """Head choices [N, heads] as the env's actions (the wrapper maps Box bins to values)."""
        if isinstance(self.action_space, gym.spaces.Discrete):
            return actions[:, 0] + int(self.action_space.start)
        return actions

    def _prepare_observation(self, obs: torch.Tensor, update: bool) -> torch.Tensor:
        return obs.float() if isinstance(self.observation_space, gym.spaces.Box) else obs

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Greedy actions (ε-greedy with the final ε if not ``deterministic``): ``(actions, None)``."""
        obs_tensor, single = observation_batch(obs, self.observation_space, self.device)
        epsilon = 0.0 if deterministic else value_at(self.config.exploration, 1.0)
        actions = self._epsilon_greedy(self._prepare_observation(obs_tensor, update=False), epsilon)
        if self.box_bins is not None:
            actions = self.box_bins(actions)
        else:
            actions = self._env_actions(actions)
        actions = actions.cpu().numpy()
        return (actions[0] if single else actions), None

    def q_values(self, obs: Any) -> np.ndarray:
        """Q-values of ``obs``: [B, heads, bins] (heads = 1 for a Discrete action space)."""
        obs_tensor, _ = observation_batch(obs, self.observation_space, self.device)
        with torch.no_grad():
            return self.q_net(self._prepare_observation(obs_tensor, update=False)).cpu().numpy()

    def _state_dict(self) -> dict[str, Any]:
        return {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": None if self.replay is None else self.replay.state_dict(),
            "train_totals": self._train_totals,
        }

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.replay is not None and state["replay"] is not None:
            self.replay.load_state_dict(state["replay"])
        self._train_totals.copy_(state["train_totals"])
