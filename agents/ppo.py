"""Proximal Policy Optimization (Schulman et al. 2017), readable top to bottom.

The lecture's learning problem, max_Θ E[Σ_n r(x_{n+1})] with a_n ~ π_Θ(· | x_n), solved by
alternating two phases:

1. rollout: step ``num_envs`` envs ``n_steps`` times with the current policy, storing observations,
   actions, log-probabilities, rewards and values on the device (:meth:`PPO._collect_rollout`);
2. update: GAE(λ) advantages, then ``n_epochs`` passes of minibatch gradient steps on the clipped
   surrogate, the (clipped) value loss and an entropy bonus (:meth:`PPO._update`).

The policy is a pluggable module (see :mod:`agents.policies`): an MLP actor-critic by default,
any module with ``act``/``evaluate``/``value``/``deterministic_action``/``env_action`` otherwise.
Envs that report the reference policy's log-probability of each action (the TokenEnv) can have each
step's reward carry the KL penalty −β (log π − log π_ref), β set by a controller
(:mod:`agents.kl_control`). :class:`agents.TokenPPO` is this PPO configured for the TokenEnv.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import BaseAlgorithm
from agents.buffers import RolloutBuffer
from agents.kl_control import KLPenalty
from agents.normalize import ObservationNormalizer, RewardNormalizer
from agents.policies import ActorCriticPolicy, observation_batch
from agents.schedules import LinearSchedule, Schedule, value_at


@dataclass
class PPOConfig:
    """Hyperparameters of :class:`PPO`; each can be passed to ``PPO(env, **config)``.

    Args:
        num_envs: envs stepped in parallel (ignored when the env is already a vector env).
        n_steps: steps per env in one rollout; a rollout is ``n_steps * num_envs`` transitions.
        batch_size: transitions per minibatch gradient step.
        n_epochs: passes over each rollout.
        learning_rate: Adam's step size, a constant or a :class:`LinearSchedule` over training
            (the default decays linearly to 0).
        gamma: discount; None takes the env's own ``gamma`` if it has one (the tabular MDP's), else 0.99.
        gae_lambda: λ of GAE(λ): 0 is the one-step TD advantage, 1 the Monte Carlo one.
        clip_range: ε of the clipped surrogate, min(ρA, clip(ρ, 1 − ε, 1 + ε)A).
        clip_range_vf: clip of the value update around the rollout's values; None for a plain MSE.
        normalize_advantage: standardize advantages within each minibatch.
        ent_coef: weight of the entropy bonus.
        vf_coef: weight of the value loss.
        max_grad_norm: the global gradient norm is clipped to this.
        target_kl: stop the epochs early once the approximate KL to the rollout policy exceeds
            1.5 × this (None: never; checking costs one host sync per minibatch).
        normalize_observations: standardize Box observations with running statistics.
        normalize_rewards: divide rewards by the running std of the discounted return.
        net_arch: hidden layer widths of actor and critic (MLP policy).
        activation: ``"tanh"`` or ``"relu"`` (MLP policy).
        log_std_init: initial log-std of the Gaussian policy for Box actions.
        ortho_init: orthogonal initialization of the MLP policy.
        logdir: TensorBoard logs and checkpoints go here (None: neither).
        checkpoint_every: write ``logdir/checkpoint.pt`` every this many env steps, at the end of
            the rollout that crosses it (0: never).
        kl_coef: β of the per-step KL penalty −β (log π − log π_ref) for envs that report the
            reference's log-probability of each action (the TokenEnv), each step in
            ``info["ref_logprob"]`` or, deferred, at the episode's end (see
            :class:`agents.kl_control.KLPenalty`); None: no penalty.
        kl_target: adapt β so that the KL per episode approaches this (Ziegler et al. 2019); None: β fixed.
        kl_horizon: env steps over which the adaptive controller changes β by a factor e^0.2 at most.
        whiten_rewards: with ``kl_coef``, standardize the rewards of the steps that end an episode
            within each rollout (the reward model's scores on the TokenEnv).
        bootstrap_truncated: add γ V(final observation) to the reward of truncated episodes; False
            where the time limit is part of the task (the TokenEnv scores the text at N tokens).

    :class:`agents.TokenPPO` starts from :data:`agents.token_ppo.TOKEN_ENV_PPO_DEFAULTS` instead of
    these defaults (γ = 1, the KL penalty with the adaptive controller, LM learning rates).
    """

    num_envs: int = 64
    n_steps: int = 32
    batch_size: int = 512
    n_epochs: int = 4
    learning_rate: Schedule = LinearSchedule(1e-3, 0.0)
    gamma: float | None = None
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    clip_range_vf: float | None = 0.2
    normalize_advantage: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None
    normalize_observations: bool = False
    normalize_rewards: bool = False
    net_arch: tuple[int, ...] = (64, 64)
    activation: str = "tanh"
    log_std_init: float = 0.0
    ortho_init: bool = True
    logdir: str | None = None
    checkpoint_every: int = 0
    kl_coef: float | None = None
    kl_target: float | None = None
    kl_horizon: int = 10_000
    whiten_rewards: bool = False
    bootstrap_truncated: bool = True

    def __post_init__(self) -> None:
        for name in ("num_envs", "n_steps", "batch_size", "n_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        # γ = 1 is for episodes of bounded length (the TokenEnv's N tokens).
        if self.gamma is not None and not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma must lie in [0, 1], got {self.gamma}")
        if self.kl_coef is not None and self.kl_coef < 0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_target is not None and (self.kl_coef is None or self.kl_target <= 0):
            raise ValueError(f"kl_target needs kl_coef > 0 and must be > 0, got {self.kl_target}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda must lie in [0, 1], got {self.gae_lambda}")
        if not self.clip_range > 0:
            raise ValueError(f"clip_range must be > 0, got {self.clip_range}")
        if self.checkpoint_every and self.logdir is None:
            raise ValueError("checkpoint_every needs a logdir to write the checkpoint to")
        self.net_arch = tuple(self.net_arch)


class PPO(BaseAlgorithm):
    """PPO with a clipped surrogate, for Discrete or Box actions, on any env of this suite.

    Args:
        env: an env id, a Gymnasium env, or a vector env (gymnasium's with ``SAME_STEP`` autoreset,
            or our batched cores, which stay on the device); None for an agent that only predicts.
        device: ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
        seed: seeds the network initialization, the env resets and every sample; on the CPU the
            same seed gives the same run.
        policy: a policy module (default: :class:`ActorCriticPolicy` built from the config).
        spaces: ``(observation_space, action_space)``, needed only without an env.
        **config: fields of :class:`PPOConfig`.

    Example::

        agent = PPO("rlhf_envs/CarDriving-v0", normalize_rewards=True).learn(200_000)
        action, _ = agent.predict(obs)

    On the TokenEnv use :class:`agents.TokenPPO`, whose actor is a copy of the env's reference LM.
    """

    config_class = PPOConfig
    #: How the rollout is stored and cut into minibatches (whole env columns for an LM policy).
    rollout_buffer_class: ClassVar[type[RolloutBuffer]] = RolloutBuffer

    def __init__(
        self,
        env: Any,
        device: str | torch.device = "auto",
        seed: int = 0,
        policy: nn.Module | None = None,
        spaces: tuple[gym.Space, gym.Space] | None = None,
        **config: Any,
    ) -> None:
        super().__init__(env, device, seed, config, spaces)
        cfg = self.config
        self.gamma = self._discount(cfg.gamma)
        self.policy = (policy if policy is not None else self._default_policy()).to(self.device)
        # fused: one kernel over all parameters (on the CPU 5x faster than foreach's op per step of
        # Adam, which is itself faster than the default's Python loop).
        self.optimizer = torch.optim.Adam(
            self.policy.parameters(), lr=value_at(cfg.learning_rate, 0.0), eps=1e-5, fused=True
        )
        self.obs_normalizer = None
        if cfg.normalize_observations:
            self.obs_normalizer = ObservationNormalizer.for_space(self.observation_space, self.device)
        self.reward_normalizer, self.kl_penalty, self.buffer = None, None, None
        if self.env is None:
            return  # an agent that only predicts
        num_envs = self.env.num_envs
        if cfg.normalize_rewards:
            self.reward_normalizer = RewardNormalizer(num_envs, self.gamma, self.device)
        if cfg.kl_coef is not None:
            self.kl_penalty = KLPenalty.from_config(cfg, num_envs, self.device)
        self.buffer = self.rollout_buffer_class.for_spaces(
            cfg.n_steps, num_envs, self.observation_space, self.action_space, self.device
        )

    def _default_policy(self) -> nn.Module:
        cfg = self.config
        return ActorCriticPolicy(
            self.observation_space,
            self.action_space,
            net_arch=cfg.net_arch,
            activation=cfg.activation,
            log_std_init=cfg.log_std_init,
            ortho_init=cfg.ortho_init,
        )

    def learn(self, total_timesteps: int, progress_bar: bool = True, reset_num_timesteps: bool = True) -> PPO:
        """Train for ``total_timesteps`` env steps (summed over parallel envs, rounded up to whole rollouts).

        With ``reset_num_timesteps=False`` training continues where the last call (or the loaded
        checkpoint) stopped, and the schedules run to the new total.
        """
        logger = self._start_learn(total_timesteps, reset_num_timesteps, progress_bar, desc="PPO")
        rollout_size = self.config.n_steps * self.env.num_envs
        try:
            while self.num_timesteps < self._target_timesteps:
                steps_before = self.num_timesteps
                learning_rate = value_at(
                    self.config.learning_rate, self.num_timesteps / self._target_timesteps
                )
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate
                self._collect_rollout()
                train_stats = self._update()
                self.num_timesteps += rollout_size
                episodes = {f"rollout/{name}": value for name, value in self.tracker.summary().items()}
                if self.kl_penalty is not None:
                    kl_stats = self.kl_penalty.history[-1]
                    episodes |= {"rollout/kl": kl_stats.kl, "train/kl_coef": kl_stats.kl_coef}
                logger.record(
                    self.num_timesteps, {**episodes, **train_stats, "train/learning_rate": learning_rate}
                )
                logger.advance(rollout_size)
                self._maybe_checkpoint(steps_before)
        finally:
            logger.close()
        return self

    def _collect_rollout(self) -> None:
        """Fill the buffer with ``n_steps`` steps of every env, then compute advantages."""
        obs = self._last_obs
        final_observations, truncations = [], []
        for step in range(self.config.n_steps):
            with torch.no_grad():
                action, logprob, value = self.policy.act(obs)
            next_obs, reward, terminated, truncated, info = self.env.step(self.policy.env_action(action))
            done = terminated | truncated
            self.tracker.update(reward, done)
            next_obs = self._prepare_observation(next_obs, update=True)
            reward = self.reward_normalizer(reward, done) if self.reward_normalizer else reward.float()
            if self.kl_penalty is not None:
                self.kl_penalty.record(step, logprob, info)
            if self.config.bootstrap_truncated:
                final_observations.append(self._prepare_observation(info["final_obs"], update=False))
                truncations.append(truncated)
            self.buffer.add(step, obs, action, logprob, reward, done, value)
            obs = next_obs
        if self.config.bootstrap_truncated:
            # A truncated episode did not end in the MDP: bootstrap its value from its last
            # observation, for the whole rollout in one forward pass.
            with torch.no_grad():
                final_values = self.policy.value(torch.cat(final_observations))
            truncated = torch.stack(truncations)
            self.buffer.rewards += self.gamma * final_values.view(truncated.shape) * truncated
        if self.kl_penalty is not None:
            # Deferred reference scoring: the env scores the episodes still running now, in one pass.
            running_info = self.env.running_info() if self.kl_penalty.deferred else None
            rewards, dones = self.buffer.rewards, self.buffer.dones
            self.buffer.rewards = self.kl_penalty.penalize(rewards, dones, running_info)
        self._compute_advantages(obs, done)
        self._last_obs = obs

    def _compute_advantages(self, obs: torch.Tensor, done: torch.Tensor) -> None:
        """GAE over the filled buffer, bootstrapped from V(``obs``), the observation after its last step."""
        with torch.no_grad():
            last_value = self._bootstrap_value(obs, done)
        self.buffer.compute_advantages(last_value, self.gamma, self.config.gae_lambda)

    def _bootstrap_value(self, obs: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        """V(``obs``), the observation after the rollout's last step; GAE multiplies it by 1 − ``done``
        (an episode that ended at that step is not bootstrapped)."""
        return self.policy.value(obs)

    def _update(self) -> dict[str, float]:
        """``n_epochs`` passes of minibatch steps on the PPO loss; returns the logged means."""
        cfg = self.config
        # policy loss, value loss, entropy, approximate KL, clip fraction: summed on the device.
        totals = torch.zeros(5, device=self.device)
        num_minibatches = 0
        for _ in range(cfg.n_epochs):
            for batch in self.buffer.minibatches(cfg.batch_size):
                logprob, entropy, value = self.policy.evaluate(batch["obs"], batch["actions"], batch["dones"])
                log_ratio = logprob - batch["logprobs"]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    # The low-variance estimator of KL(π_old ‖ π) (Schulman's k3).
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                if cfg.target_kl is not None and approx_kl.item() > 1.5 * cfg.target_kl:
                    break

                advantages = batch["advantages"]
                if cfg.normalize_advantage and advantages.numel() > 1:
                    advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
                clipped_ratio = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                policy_loss = torch.max(-advantages * ratio, -advantages * clipped_ratio).mean()

                returns = batch["returns"]
                if cfg.clip_range_vf is None:
                    value_loss = (value - returns).pow(2).mean()
                else:
                    value_clipped = batch["values"] + (value - batch["values"]).clamp(
                        -cfg.clip_range_vf, cfg.clip_range_vf
                    )
                    value_loss = torch.max((value - returns).pow(2), (value_clipped - returns).pow(2)).mean()

                entropy_mean = entropy.mean()
                loss = policy_loss + cfg.vf_coef * value_loss
                if cfg.ent_coef:  # else the entropy is only logged: no gradient pass through it
                    loss = loss - cfg.ent_coef * entropy_mean
                self.optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.max_grad_norm)
                self.optimizer.step()

                clip_fraction = ((ratio - 1).abs() > cfg.clip_range).float().mean()
                totals += torch.stack(
                    [policy_loss, value_loss, entropy_mean, approx_kl, clip_fraction]
                ).detach()
                num_minibatches += 1
            else:
                continue
            break  # target_kl was reached: stop the epochs too

        values, returns = self.buffer.values.flatten(), self.buffer.returns.flatten()
        explained_variance = 1 - (returns - values).var() / returns.var().clamp(min=1e-8)
        means = (totals / max(num_minibatches, 1)).tolist()
        stats = dict(
            zip(("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction"), means, strict=True)
        )
        stats["explained_variance"] = explained_variance.item()
        if isinstance(getattr(self.policy, "log_std", None), torch.Tensor):
            stats["std"] = self.policy.log_std.exp().mean().item()
        return {f"train/{name}": value for name, value in stats.items()}

    def _prepare_observation(self, obs: torch.Tensor, update: bool) -> torch.Tensor:
        if self.obs_normalizer is not None:
            return self.obs_normalizer(obs, update=update)
        return obs.float() if isinstance(self.observation_space, gym.spaces.Box) else obs

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Actions for one observation or a batch of them, SB3-style ``(actions, None)``."""
        obs_tensor, single = observation_batch(obs, self.observation_space, self.device)
        with torch.no_grad():
            x = self._prepare_observation(obs_tensor, update=False)
            action = self.policy.deterministic_action(x) if deterministic else self.policy.act(x)[0]
            action = self.policy.env_action(action).cpu().numpy()
        return (action[0] if single else action), None

    def _state_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_normalizer": None if self.obs_normalizer is None else self.obs_normalizer.state_dict(),
            "reward_normalizer": None
            if self.reward_normalizer is None
            else self.reward_normalizer.state_dict(),
            "kl_penalty": None if self.kl_penalty is None else self.kl_penalty.state_dict(),
        }

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.obs_normalizer is not None:
            self.obs_normalizer.load_state_dict(state["obs_normalizer"])
        if self.reward_normalizer is not None and state["reward_normalizer"] is not None:
            self.reward_normalizer.load_state_dict(state["reward_normalizer"])
        if self.kl_penalty is not None and state["kl_penalty"] is not None:
            self.kl_penalty.load_state_dict(state["kl_penalty"])
