"""Networks for the agents: an actor-critic for PPO and Q-networks for DQN.

A PPO policy is any ``nn.Module`` with the interface of :class:`ActorCriticPolicy` (``act``,
``evaluate``, ``value``, ``deterministic_action``, ``env_action``); PPO never looks inside it, so
a language model with a value head is another policy, not another PPO.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Categorical, Distribution, Normal

ACTIVATIONS: dict[str, type[nn.Module]] = {"tanh": nn.Tanh, "relu": nn.ReLU}


def observation_size(space: gym.Space) -> int:
    """Width of the flat float vector :class:`ObservationEncoder` makes of an observation of ``space``."""
    if isinstance(space, gym.spaces.Discrete):
        return int(space.n)
    if isinstance(space, gym.spaces.Box):
        return math.prod(space.shape)
    hint = ""
    if isinstance(space, gym.spaces.Dict) and "input_ids" in space.spaces:
        hint = (
            "; token observations (input_ids, attention_mask) need the language model as the policy: "
            "use agents.TokenPPO (PPO + KL) or agents.TokenQLearning"
        )
    raise ValueError(f"observations must come from a Discrete or Box space, got {space}{hint}")


class ObservationEncoder(nn.Module):
    """A batch [B, ...] of observations as floats [B, D]: one-hot for Discrete, flattened for Box.

    Box dimensions with finite bounds are rescaled to [-1, 1], so observations measured in
    hundreds of metres (the car's position) enter the network on the same scale as the rest.
    """

    def __init__(self, space: gym.Space) -> None:
        super().__init__()
        self.space, self.size = space, observation_size(space)
        if isinstance(space, gym.spaces.Box):
            low = torch.as_tensor(space.low, dtype=torch.float32).reshape(-1)
            high = torch.as_tensor(space.high, dtype=torch.float32).reshape(-1)
            bounded = torch.isfinite(low) & torch.isfinite(high) & (high > low)
            self.register_buffer("center", torch.where(bounded, (high + low) / 2, 0.0))
            self.register_buffer("half_range", torch.where(bounded, (high - low) / 2, 1.0))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if isinstance(self.space, gym.spaces.Discrete):
            return nn.functional.one_hot((obs - self.space.start).long(), self.size).float()
        return (obs.reshape(obs.shape[0], -1).float() - self.center) / self.half_range


def observation_batch(obs: Any, space: gym.Space, device: torch.device) -> tuple[torch.Tensor, bool]:
    """``obs`` as a batch on ``device``, and whether it was a single observation; checks it fits ``space``.

    ``obs`` may be an array, a list or a tensor on any device: a tensor is checked where it lives
    (never copied to numpy, which a CUDA tensor cannot be) and moved to ``device``.
    """
    tensor = (
        obs.to(device) if isinstance(obs, torch.Tensor) else torch.as_tensor(np.asarray(obs), device=device)
    )
    if isinstance(space, gym.spaces.Discrete):
        integer = not (
            tensor.dtype.is_floating_point or tensor.dtype.is_complex or tensor.dtype == torch.bool
        )
        # int64 before comparing: torch's unsigned 16/32/64-bit types lack comparison kernels.
        if not integer or ((tensor.long() < space.start) | (tensor.long() >= space.start + space.n)).any():
            raise ValueError(f"observations must be integers in {space}, got {obs!r}")
        single = tensor.ndim == 0
    elif isinstance(space, gym.spaces.Box | gym.spaces.MultiDiscrete):
        shape = tuple(tensor.shape)
        single = shape == space.shape
        if not single and shape[1:] != space.shape:
            raise ValueError(
                f"observations must have shape {space.shape} or [B, *{space.shape}], got {shape}"
            )
    else:
        raise ValueError(f"predict needs a Discrete, Box or MultiDiscrete observation space, got {space}")
    return (tensor.unsqueeze(0) if single else tensor), single


def mlp(
    sizes: list[int], activation: str, output_gain: float | None = None, ortho_init: bool = True
) -> nn.Sequential:
    """Linear layers of ``sizes`` with ``activation`` between them (none after the last).

    With ``ortho_init`` the weights are orthogonal (gain √2 inside, ``output_gain`` on the last
    layer) and biases zero, the initialization PPO implementations share.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}")
    layers: list[nn.Module] = []
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        linear = nn.Linear(fan_in, fan_out)
        if ortho_init:
            last = index == len(sizes) - 2
            nn.init.orthogonal_(
                linear.weight, output_gain if last and output_gain is not None else math.sqrt(2)
            )
            nn.init.zeros_(linear.bias)
        layers.append(linear)
        if index < len(sizes) - 2:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class ActorCriticPolicy(nn.Module):
    """Separate MLP actor and critic for Discrete or Box observations and actions.

    Discrete actions follow a categorical distribution; Box actions a diagonal Gaussian whose
    log-std is a learned parameter that does not depend on the state. Gaussian samples are
    unbounded (their log-probability stays exact); :meth:`env_action` clips them to the bounds.

    Args:
        observation_space: of one env (Discrete or Box).
        action_space: of one env (Discrete or Box).
        net_arch: hidden layer widths, the same for actor and critic.
        activation: ``"tanh"`` or ``"relu"``.
        log_std_init: initial log-std of the Gaussian (Box actions only).
        ortho_init: orthogonal initialization (output gains 0.01 for the actor, 1 for the critic).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        action_space: gym.Space,
        net_arch: tuple[int, ...] = (64, 64),
        activation: str = "tanh",
        log_std_init: float = 0.0,
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        if isinstance(action_space, gym.spaces.Discrete):
            action_size = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            action_size = math.prod(action_space.shape)
        else:
            raise ValueError(f"PPO's MLP policy needs a Discrete or Box action space, got {action_space}")
        self.observation_space, self.action_space = observation_space, action_space
        self.encoder = ObservationEncoder(observation_space)
        obs_size = self.encoder.size
        self.actor = mlp(
            [obs_size, *net_arch, action_size], activation, output_gain=0.01, ortho_init=ortho_init
        )
        self.critic = mlp([obs_size, *net_arch, 1], activation, output_gain=1.0, ortho_init=ortho_init)
        self.continuous = isinstance(action_space, gym.spaces.Box)
        if self.continuous:
            self.log_std = nn.Parameter(torch.full((action_size,), float(log_std_init)))
            self.register_buffer("action_low", torch.as_tensor(action_space.low, dtype=torch.float32))
            self.register_buffer("action_high", torch.as_tensor(action_space.high, dtype=torch.float32))

    def distribution(self, obs: torch.Tensor) -> Distribution:
        output = self.actor(self.encoder(obs))
        if self.continuous:
            return Normal(output, self.log_std.exp().expand_as(output), validate_args=False)
        return Categorical(logits=output, validate_args=False)

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        """V(obs), shape [B]."""
        return self.critic(self.encoder(obs)).squeeze(-1)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample an action: ``(action, log π(action | obs), V(obs))``."""
        distribution = self.distribution(obs)
        action = distribution.sample()
        return action, self._log_prob(distribution, action), self.value(obs)

    def evaluate(
        self, obs: torch.Tensor, action: torch.Tensor, dones: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(log π(action | obs), entropy of π(· | obs), V(obs))`` under the current parameters.

        ``dones`` (where episodes end) are part of the policy interface for policies that score an
        episode's steps together; an MLP scores each step on its own and does not need them.
        """
        distribution = self.distribution(obs)
        entropy = distribution.entropy()
        if self.continuous:
            entropy = entropy.sum(-1)
        return self._log_prob(distribution, action), entropy, self.value(obs)

    def deterministic_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The mode of π(· | obs): the most likely category or the Gaussian's mean."""
        distribution = self.distribution(obs)
        return distribution.mean if self.continuous else distribution.probs.argmax(-1)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """What the env receives for a sampled ``action``: Gaussian samples clipped to the Box."""
        if self.continuous:
            return torch.maximum(torch.minimum(action, self.action_high), self.action_low).reshape(
                action.shape[0], *self.action_space.shape
            )
        return action

    def _log_prob(self, distribution: Distribution, action: torch.Tensor) -> torch.Tensor:
        log_prob = distribution.log_prob(action)
        return log_prob.sum(-1) if self.continuous else log_prob


class BranchingQNetwork(nn.Module):
    """Q-values for ``num_branches`` action dimensions of ``num_bins`` choices each, from one torso.

    Output shape [B, num_branches, num_bins]. One branch is the usual DQN head over a Discrete
    action set; several are action branching (Tavakoli et al. 2018): one head per action dimension,
    so the output grows as branches × bins, not bins ** branches.
    """

    def __init__(
        self,
        observation_space: gym.Space,
        num_branches: int,
        num_bins: int,
        net_arch: tuple[int, ...] = (64, 64),
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.encoder = ObservationEncoder(observation_space)
        self.num_branches, self.num_bins = num_branches, num_bins
        sizes = [self.encoder.size, *net_arch, num_branches * num_bins]
        self.net = mlp(sizes, activation, ortho_init=False)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        q = self.net(self.encoder(obs))
        return q.view(-1, self.num_branches, self.num_bins)
