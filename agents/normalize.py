"""Running statistics that normalize observations and rewards on the device, without host syncs."""

from __future__ import annotations

import gymnasium as gym
import torch


class RunningMeanStd:
    """Mean and variance of a stream of batches (Chan et al.'s parallel update), kept on ``device``.

    The count is a tensor too, so an update never waits on the host.
    """

    def __init__(self, shape: tuple[int, ...], device: torch.device, epsilon: float = 1e-4) -> None:
        self.mean = torch.zeros(shape, dtype=torch.float64, device=device)
        self.var = torch.ones(shape, dtype=torch.float64, device=device)
        # A tiny prior count keeps the first update from dividing by zero.
        self.count = torch.full((), epsilon, dtype=torch.float64, device=device)

    def update(self, batch: torch.Tensor) -> None:
        """Fold a batch of shape [B, *shape] into the statistics."""
        batch = batch.to(torch.float64)
        batch_var, batch_mean = torch.var_mean(batch, dim=0, unbiased=False)
        batch_count = batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean = self.mean + delta * batch_count / total
        self.var = (
            self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total
        ) / total
        self.count = total

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        device = self.mean.device
        self.mean, self.var, self.count = (state[name].to(device) for name in ("mean", "var", "count"))


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
        return normalized.clamp(-self.clip, self.clip).float()

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
        self.returns = torch.zeros(num_envs, dtype=torch.float64, device=device)
        self.gamma, self.clip, self.epsilon = gamma, clip, epsilon

    def __call__(self, reward: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """Normalize one step's rewards [N] and update the statistics; ``done`` ends the returns."""
        self.returns = self.returns * self.gamma + reward
        self.stats.update(self.returns)
        self.returns = self.returns * ~done
        return (reward / torch.sqrt(self.stats.var + self.epsilon)).clamp(-self.clip, self.clip).float()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**self.stats.state_dict(), "returns": self.returns}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.stats.load_state_dict(state)
        self.returns = state["returns"].to(self.returns.device)
