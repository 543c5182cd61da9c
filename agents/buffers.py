"""Storage for the agents' experience, as tensors on the training device.

:class:`RolloutBuffer` holds one PPO rollout (T steps × N envs) and computes GAE(λ);
:class:`ReplayBuffer` is DQN's ring buffer of transitions.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import gymnasium as gym
import torch


class RolloutBuffer:
    """One on-policy rollout: ``num_steps`` × ``num_envs`` transitions and their advantages.

    ``rewards`` already include the bootstrap γ V(final obs) of truncated episodes, so ``dones``
    (terminated or truncated) simply cut the return at every episode end.
    """

    def __init__(
        self,
        num_steps: int,
        num_envs: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        action_shape: tuple[int, ...],
        action_dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.num_steps, self.num_envs = num_steps, num_envs
        shape = (num_steps, num_envs)
        self.obs = torch.zeros(shape + obs_shape, dtype=obs_dtype, device=device)
        self.actions = torch.zeros(shape + action_shape, dtype=action_dtype, device=device)
        self.logprobs = torch.zeros(shape, device=device)
        self.rewards = torch.zeros(shape, device=device)
        self.dones = torch.zeros(shape, device=device)
        self.values = torch.zeros(shape, device=device)
        self.advantages = torch.zeros(shape, device=device)
        self.returns = torch.zeros(shape, device=device)

    @classmethod
    def for_spaces(
        cls,
        num_steps: int,
        num_envs: int,
        observation_space: gym.Space,
        action_space: gym.Space,
        device: torch.device,
    ) -> RolloutBuffer:
        """A buffer for one env's spaces: Box observations and actions as floats, others as integers."""
        continuous = isinstance(action_space, gym.spaces.Box)
        return cls(
            num_steps,
            num_envs,
            obs_shape=observation_space.shape,
            obs_dtype=torch.float32 if isinstance(observation_space, gym.spaces.Box) else torch.long,
            action_shape=(math.prod(action_space.shape),) if continuous else (),
            action_dtype=torch.float32 if continuous else torch.long,
            device=device,
        )

    def add(
        self,
        step: int,
        obs: torch.Tensor,
        action: torch.Tensor,
        logprob: torch.Tensor,
        reward: torch.Tensor,
        done: torch.Tensor,
        value: torch.Tensor,
    ) -> None:
        self.obs[step] = obs
        self.actions[step] = action
        self.logprobs[step] = logprob
        self.rewards[step] = reward
        self.dones[step] = done.float()
        self.values[step] = value

    def compute_advantages(self, last_value: torch.Tensor, gamma: float, gae_lambda: float) -> None:
        """GAE(λ) (Schulman et al. 2016): A_t = Σ_k (γλ)^k δ_{t+k}, δ_t = r_t + γ V(x_{t+1}) − V(x_t).

        ``last_value`` is V of the observation after the last step; returns = advantages + values.
        """
        advantage = torch.zeros_like(last_value)
        next_value = last_value
        for t in reversed(range(self.num_steps)):
            not_done = 1.0 - self.dones[t]
            delta = self.rewards[t] + gamma * next_value * not_done - self.values[t]
            advantage = delta + gamma * gae_lambda * not_done * advantage
            self.advantages[t] = advantage
            next_value = self.values[t]
        self.returns = self.advantages + self.values

    FIELDS = ("obs", "actions", "logprobs", "values", "advantages", "returns", "dones")

    def minibatches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch over the rollout in random minibatches of ``batch_size`` (flattened over T × N)."""
        total = self.num_steps * self.num_envs
        flat = {
            name: getattr(self, name).reshape(total, *getattr(self, name).shape[2:]) for name in self.FIELDS
        }
        order = torch.randperm(total, device=self.obs.device)
        for start in range(0, total, batch_size):
            index = order[start : start + batch_size]
            yield {name: tensor[index] for name, tensor in flat.items()}


class ColumnRolloutBuffer(RolloutBuffer):
    """A :class:`RolloutBuffer` whose minibatches are whole env columns, [T, m] with their dones.

    A language-model policy scores all steps of an episode in one forward pass over its last
    window; it needs the steps of each episode together and in order.
    """

    #: Actions not taken, scored by a critic that can ([T, N, k] tensors under the keys ``actions``,
    #: ``logprobs`` (log π_old) and ``advantages``), or None. Set after :meth:`compute_advantages`; the
    #: minibatches' fields of those names are then [T, m, 1 + k], the action taken first.
    alternatives: dict[str, torch.Tensor] | None = None

    def minibatches(self, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch in minibatches of ``m`` random env columns, ``m * num_steps`` ≈ ``batch_size``."""
        fields = {name: getattr(self, name) for name in self.FIELDS}
        for name, others in (self.alternatives or {}).items():
            fields[name] = torch.cat([fields[name][..., None], others], dim=-1)
        envs_per_batch = max(1, batch_size // self.num_steps)
        for columns in torch.randperm(self.num_envs, device=self.obs.device).split(envs_per_batch):
            yield {name: tensor[:, columns] for name, tensor in fields.items()}


class ReplayBuffer:
    """A ring buffer of ``capacity`` transitions (obs, action, reward, next_obs, terminated).

    ``next_obs`` is the true next observation, the final one of an episode that just ended, and
    ``terminated`` excludes truncation, so truncated episodes bootstrap as they should.
    Positions are host integers that advance by a known batch size: adding never syncs.
    """

    def __init__(
        self,
        capacity: int,
        obs_shape: tuple[int, ...],
        obs_dtype: torch.dtype,
        action_shape: tuple[int, ...],
        device: torch.device,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        self.capacity, self.device = capacity, device
        self.obs = torch.zeros((capacity, *obs_shape), dtype=obs_dtype, device=device)
        self.next_obs = torch.zeros_like(self.obs)
        self.actions = torch.zeros((capacity, *action_shape), dtype=torch.long, device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminated = torch.zeros(capacity, device=device)
        self.position = 0
        self.size = 0

    def add(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        next_obs: torch.Tensor,
        terminated: torch.Tensor,
    ) -> None:
        """Store a batch of transitions, one per env, overwriting the oldest when full."""
        index = (self.position + torch.arange(obs.shape[0], device=self.device)) % self.capacity
        self.obs[index] = obs
        self.actions[index] = action
        self.rewards[index] = reward.float()
        self.next_obs[index] = next_obs
        self.terminated[index] = terminated.float()
        self.position = (self.position + obs.shape[0]) % self.capacity
        self.size = min(self.size + obs.shape[0], self.capacity)

    def sample(self, batch_size: int) -> dict[str, torch.Tensor]:
        index = torch.randint(self.size, (batch_size,), device=self.device)
        names = ("obs", "actions", "rewards", "next_obs", "terminated")
        return {name: getattr(self, name)[index] for name in names}

    def state_dict(self) -> dict[str, object]:
        names = ("obs", "next_obs", "actions", "rewards", "terminated")
        return {"position": self.position, "size": self.size, **{name: getattr(self, name) for name in names}}

    def load_state_dict(self, state: dict[str, object]) -> None:
        self.position, self.size = int(state["position"]), int(state["size"])
        for name in ("obs", "next_obs", "actions", "rewards", "terminated"):
            getattr(self, name).copy_(state[name])
