"""Running statistics that normalize observations and rewards on the device, without host syncs."""

from __future__ import annotations

import gymnasium as gym
import torch


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update), kept on ``device``.

    Mean and variance are float32 tensors (float64 is slow on most GPUs); the count depends only on
    batch sizes, so it is a host number: an update never waits on the device.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4) -> None:
        self.mean = torch.zeros(shape, device=device)
        self.var = torch.ones(shape, device=device)
        # A tiny prior count keeps the first update from dividing by zero.
        self.count = epsilon

    def update(self, batch: torch.Tensor) -> None:
        """Fold a batch of shape [B, *shape] into the statistics."""
        batch_var, batch_mean = torch.var_mean(batch.float(), dim=0, unbiased=False)
        total = self.count + batch.shape[0]
        weight = batch.shape[0] / total  # the batch's share of all samples seen
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * weight
        self.var = self.var * (1 - weight) + batch_var * weight + delta**2 * (weight * (1 - weight))
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor | float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor | float]) -> None:
        device = self.mean.device
        self.mean, self.var = (state[name].to(device, torch.float32) for name in ("mean", "var"))
        self.count = float(state["count"])


class ObservationNormalizer:
    """(obs − mean) / std, clipped to ±``clip``, with statistics from the observations seen in training."""

    def __init__(
        self, shape: tuple[int, ...], device: torch.device, clip: float = 10.0, epsilon: float = 1e-8
    ) -> None:
        self.stats = RunningMeanStd(shape, device)
        self.clip, self.epsilon = clip, epsilon

    @classmethod
    def for_space(cls, space: gym.Space, device: torch.device) -> ObservationNormalizer:
        """A normalizer for a Box observation space (a ValueError names any other space)."""
        if not isinstance(space, gym.spaces.Box):
            raise ValueError(f"normalize_observations needs a Box observation space, got {space}")
        return cls(space.shape, device)

    def __call__(self, obs: torch.Tensor, update: bool = False) -> torch.Tensor:
        obs = obs.float()
        if update:
            self.stats.update(obs)
        normalized = (obs - self.stats.mean) / torch.sqrt(self.stats.var + self.epsilon)
        return normalized.clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.stats.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict(state)


class RewardNormalizer:
    """Divides rewards by the running std of the discounted return (as SB3's ``VecNormalize``).

    Scaling by the return's spread, not the reward's, keeps the value targets O(1) whatever the
    horizon; the mean is not subtracted, so the sign of every reward is kept.
    """

    def __init__(
        self, num_envs: int, gamma: float, device: torch.device, clip: float = 10.0, epsilon: float = 1e-8
    ) -> None:
        self.stats = RunningMeanStd((), device)
        self.returns = torch.zeros(num_envs, device=device)
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon

    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Normalize one step's rewards [N] and update the statistics; ``done`` ends the returns."""
        reward = reward.float()
        self.returns = self.returns * self.gamma + reward
        self.stats.update(self.returns)
        self.returns = self.returns * ~done
        return (reward / torch.sqrt(self.stats.var + self.epsilon)).clamp(-self.clip, self.clip)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.stats.state_dict(), "returns": self.returns}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict(state)
        self.returns = state["returns"].to(self.returns.device, torch.float32)
