"""A per-step reward model for control envs, learned from segment comparisons.

``TrajectoryRewardModel`` is an ensemble of MLPs r(obs, action) (Christiano et al., 2017). A
segment's score is the sum of r over its steps; each member is fitted on its own bootstrap resample
of the comparisons with the Bradley–Terry loss −log σ(r(winner) − r(loser)) (ties count half each
way). After fitting, every member's per-step output is scaled to standard deviation ``reward_std``
over the training steps, and the model's reward is the members' mean.

In an env whose episodes end early (a crash, an arrival) the level of r decides whether the policy
wants an episode to go on. After a termination the env pays nothing, so a segment that ends in one
is scored as if its remaining time (up to the segment length) paid r = 0, and the raw zero of r is
kept as the zero of the output; comparisons of such shorter segments with longer ones are what
pins that level down. Without terminated segments (Bradley–Terry alone sees only differences) the
output is shifted to mean 0 over the training steps.

Called as ``model(obs, action, next_obs)`` on a batch ([B, ...] in, [B] out; numpy in, numpy out;
torch in, torch out on the input's device) it is a control reward model, ready for
``LearnedReward``. ``next_obs`` is accepted for the protocol and not used.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from rlhf_envs.device import resolve_device
from rlhf_envs.rewards.bradley_terry import bradley_terry_loss, preference_probability
from rlhf_envs.rewards.comparisons import Comparison, Segment

__all__ = ["FitResult", "TrajectoryRewardConfig", "TrajectoryRewardModel"]


@dataclass
class TrajectoryRewardConfig:
    """Hyperparameters of ``TrajectoryRewardModel``.

    Args:
        ensemble_size: the number of MLPs; their disagreement picks active queries.
        hidden_sizes: hidden layer widths of each MLP.
        learning_rate: AdamW learning rate.
        weight_decay: AdamW weight decay (the regularisation Christiano et al. rely on against overfitting).
        batch_size: comparisons per gradient step.
        epochs: passes over the training comparisons per ``fit`` call (fits continue from the current
            weights, so refitting as labels arrive is cheap).
        holdout_fraction: the share of comparisons kept out of training to measure accuracy.
        bootstrap: fit each member on its own bootstrap resample of the training comparisons.
        reward_std: the standard deviation of the normalized per-step reward.
        seed: seeds the initial weights, the split, the resamples and the batch order.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``...
    """

    ensemble_size: int = 3
    hidden_sizes: tuple[int, ...] = (64, 64)
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    epochs: int = 20
    holdout_fraction: float = 0.2
    bootstrap: bool = True
    reward_std: float = 1.0
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be >= 1, got {self.ensemble_size}")
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError(f"batch_size must be >= 1 and epochs >= 0, got {self.batch_size}, {self.epochs}")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError(f"holdout_fraction must be in [0, 1), got {self.holdout_fraction}")
        if not self.reward_std > 0:
            raise ValueError(f"reward_std must be > 0, got {self.reward_std}")


@dataclass
class FitResult:
    """What one ``fit`` call reached; accuracy ignores ties, and is ``None`` without held-out pairs."""

    train_loss: float
    val_loss: float | None
    val_accuracy: float | None
    num_train: int
    num_val: int


class _Padded(NamedTuple):
    """Segments padded with zeros to a common length L: features [.., N, L, F], mask [.., N, L] and
    whether each segment ended in a termination [.., N]."""

    features: torch.Tensor
    mask: torch.Tensor
    terminated: torch.Tensor

    def select(self, index: torch.Tensor | np.ndarray) -> _Padded:
        return _Padded(*(tensor[index] for tensor in self))


class _EnsembleLinear(nn.Module):
    """M independent linear layers applied at once: [M, N, in] -> [M, N, out]."""

    def __init__(self, members: int, inputs: int, outputs: int, generator: torch.Generator) -> None:
        super().__init__()
        bound = 1 / math.sqrt(inputs)
        self.weight = nn.Parameter(
            torch.empty(members, inputs, outputs).uniform_(-bound, bound, generator=generator)
        )
        self.bias = nn.Parameter(
            torch.empty(members, 1, outputs).uniform_(-bound, bound, generator=generator)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.baddbmm(self.bias, x, self.weight)


def _space_size(space: gym.Space, name: str) -> int:
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return int(np.prod(space.shape))
    raise TypeError(f"{name} must be a Box or Discrete space, got {type(space).__name__}")


class TrajectoryRewardModel(nn.Module):
    """An ensemble of MLPs r(obs, action), fitted to segment comparisons with the Bradley–Terry loss.

    Args:
        observation_space: the env's observation space (Box, or Discrete: one-hot encoded).
        action_space: the env's action space (Box, or Discrete: one-hot encoded).
        config: hyperparameters; ``TrajectoryRewardConfig()`` by default.

    ``fit(comparisons)`` trains on a sequence of ``Comparison`` (a ``PreferenceStore`` is one) and
    returns held-out accuracy; ``model(obs, action, next_obs)`` is the normalized per-step reward.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        config: TrajectoryRewardConfig | None = None,
    ) -> None:
        super().__init__()
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config or TrajectoryRewardConfig()
        self.device = resolve_device(self.config.device)
        inputs = _space_size(observation_space, "observation_space") + _space_size(
            action_space, "action_space"
        )
        generator = torch.Generator().manual_seed(self.config.seed)
        sizes = [inputs, *self.config.hidden_sizes, 1]
        self.layers = nn.ModuleList(
            _EnsembleLinear(self.config.ensemble_size, a, b, generator) for a, b in itertools.pairwise(sizes)
        )
        # Per-member normalization (x - offset) / scale, set by fit(); identity until then.
        self.register_buffer("offset", torch.zeros(self.config.ensemble_size, 1))
        self.register_buffer("scale", torch.ones(self.config.ensemble_size, 1))
        self.rng = np.random.default_rng(self.config.seed)
        self.optimizer = torch.optim.AdamW(
            self.parameters(), lr=self.config.learning_rate, weight_decay=self.config.weight_decay
        )
        self.to(self.device)

    # -- encoding -------------------------------------------------------------------------------
    def _encode_part(self, values: torch.Tensor, space: gym.Space, batch_dims: int) -> torch.Tensor:
        if isinstance(space, gym.spaces.Discrete):
            return F.one_hot(
                (values.long() - space.start).reshape(values.shape[:batch_dims]), int(space.n)
            ).float()
        return values.float().reshape(*values.shape[:batch_dims], -1)

    def encode(self, obs: torch.Tensor, action: torch.Tensor, batch_dims: int = 1) -> torch.Tensor:
        """Features [*batch, F] on the model's device of (obs, action) pairs (tensors on any device, or
        arrays) whose first ``batch_dims`` dims are batch dims."""
        obs, action = (torch.as_tensor(values, device=self.device) for values in (obs, action))
        return torch.cat(
            [
                self._encode_part(obs, self.observation_space, batch_dims),
                self._encode_part(action, self.action_space, batch_dims),
            ],
            dim=-1,
        )

    def member_rewards(self, features: torch.Tensor) -> torch.Tensor:
        """Each member's raw reward: features [N, F] (shared) or [M, N, F] (one set per member) -> [M, N]."""
        features = features.to(self.device)
        x = features.expand(self.config.ensemble_size, *features.shape) if features.ndim == 2 else features
        for layer in self.layers[:-1]:
            x = F.relu(layer(x))
        return self.layers[-1](x).squeeze(-1)

    # -- the reward-model protocol --------------------------------------------------------------
    def forward(self, obs, action, next_obs=None):  # noqa: ANN001, ANN201 - numpy or torch, see class docs
        """The normalized reward of a batch of steps: [B, ...] in, [B] out (one step in, a scalar out)."""
        as_numpy = not isinstance(obs, torch.Tensor)
        out_device = None if as_numpy else obs.device
        obs_t = torch.as_tensor(np.asarray(obs) if as_numpy else obs, device=self.device)
        action_t = torch.as_tensor(np.asarray(action) if not isinstance(action, torch.Tensor) else action)
        action_t = action_t.to(self.device)
        single = obs_t.ndim == len(self.observation_space.shape)
        if single:
            obs_t, action_t = obs_t.unsqueeze(0), action_t.unsqueeze(0)
        with torch.no_grad():
            rewards = self.normalized_rewards(self.encode(obs_t, action_t)).mean(dim=0)
        rewards = rewards[0] if single else rewards
        return rewards.cpu().numpy() if as_numpy else rewards.to(out_device)

    def normalized_rewards(self, features: torch.Tensor) -> torch.Tensor:
        """Each member's normalized reward [M, N]."""
        return (self.member_rewards(features) - self.offset) / self.scale * self.config.reward_std

    # -- segments -------------------------------------------------------------------------------
    def _pad(self, segments: Sequence[Segment]) -> _Padded:
        """Segments padded to the longest; padded steps count 0 (the absorbing state's reward)."""
        longest = max(len(segment) for segment in segments)
        features, mask = [], torch.zeros(len(segments), longest, device=self.device)
        for i, segment in enumerate(segments):
            obs = torch.as_tensor(segment.obs, device=self.device)
            actions = torch.as_tensor(segment.actions, device=self.device)
            features.append(F.pad(self.encode(obs, actions), (0, 0, 0, longest - len(segment))))
            mask[i, : len(segment)] = 1
        terminated = torch.tensor([segment.terminated for segment in segments], device=self.device)
        return _Padded(torch.stack(features), mask, terminated)

    def _segment_scores(self, padded: _Padded) -> torch.Tensor:
        """Raw returns [M, N] of padded segments, shared ([N, L, F]) or one set per member ([M, N, L, F])."""
        *batch, length, width = padded.features.shape
        flat = padded.features.reshape(*batch[:-1], batch[-1] * length, width)
        return (self.member_rewards(flat).reshape(-1, batch[-1], length) * padded.mask).sum(-1)

    def member_returns(self, segments: Sequence[Segment]) -> np.ndarray:
        """Each member's raw predicted return of each segment, [M, N]: the input of ``disagreement_pairs``."""
        with torch.no_grad():
            return self._segment_scores(self._pad(segments)).cpu().numpy()

    def preference_probability(
        self, segment_a: Sequence[Segment], segment_b: Sequence[Segment]
    ) -> np.ndarray:
        """The ensemble's mean P(a ≻ b) for paired lists of segments, [N]."""
        returns = torch.as_tensor(self.member_returns([*segment_a, *segment_b]))
        count = len(segment_a)
        return preference_probability(returns[:, :count], returns[:, count:]).mean(0).numpy()

    # -- training -------------------------------------------------------------------------------
    def fit(self, comparisons: Sequence[Comparison]) -> FitResult:
        """Fit on ``comparisons`` (continuing from the current weights) and re-normalize the output."""
        if len(comparisons) < 2:
            raise ValueError(f"need at least 2 comparisons to fit, got {len(comparisons)}")
        comparisons = list(comparisons)
        config = self.config
        padded_a = self._pad([c.segment_a for c in comparisons])
        padded_b = self._pad([c.segment_b for c in comparisons])
        labels = torch.tensor([c.label for c in comparisons], dtype=torch.float32, device=self.device)
        order = self.rng.permutation(len(comparisons))
        num_val = int(round(config.holdout_fraction * len(comparisons)))
        val, train = order[:num_val], order[num_val:]

        members = config.ensemble_size
        epoch_losses = []
        self.train()
        for _ in range(config.epochs):
            # Each member walks its own resample in its own order; [M, n_train] indices.
            if config.bootstrap:
                sample = train[self.rng.integers(len(train), size=(members, len(train)))]
            else:
                sample = np.stack([self.rng.permutation(train) for _ in range(members)])
            losses = []
            for start in range(0, len(train), config.batch_size):
                index = torch.as_tensor(sample[:, start : start + config.batch_size], device=self.device)
                score_a = self._segment_scores(padded_a.select(index))
                score_b = self._segment_scores(padded_b.select(index))
                # Mean over members and pairs: each member's gradient is its own loss / M.
                loss = bradley_terry_loss(score_a, score_b, labels[index])
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                losses.append(loss.item())
            epoch_losses.append(float(np.mean(losses)))
        self.eval()
        self._normalize(padded_a.select(train), padded_b.select(train))
        val_loss, val_accuracy = self._evaluate(padded_a.select(val), padded_b.select(val), labels[val])
        return FitResult(
            train_loss=epoch_losses[-1] if epoch_losses else math.nan,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            num_train=len(train),
            num_val=num_val,
        )

    @torch.no_grad()
    def _normalize(self, padded_a: _Padded, padded_b: _Padded) -> None:
        features = torch.cat(
            [padded_a.features[padded_a.mask.bool()], padded_b.features[padded_b.mask.bool()]]
        )
        rewards = self.member_rewards(features)
        if rewards.shape[1] > 1:
            self.scale.copy_(rewards.std(dim=1, keepdim=True).clamp_min(1e-8))
        # Terminated segments fixed the zero level (see the module docs); else it is arbitrary.
        if padded_a.terminated.any() or padded_b.terminated.any():
            self.offset.zero_()
        else:
            self.offset.copy_(rewards.mean(dim=1, keepdim=True))

    @torch.no_grad()
    def _evaluate(
        self, padded_a: _Padded, padded_b: _Padded, labels: torch.Tensor
    ) -> tuple[float | None, float | None]:
        if len(labels) == 0:
            return None, None
        score_a = self._segment_scores(padded_a)
        score_b = self._segment_scores(padded_b)
        loss = bradley_terry_loss(score_a, score_b, labels.expand_as(score_a)).item()
        decided = labels != 0.5
        if not decided.any():
            return loss, None
        predicted_a = preference_probability(score_a, score_b).mean(0) > 0.5
        accuracy = (predicted_a[decided] == (labels[decided] == 1)).float().mean().item()
        return loss, accuracy
