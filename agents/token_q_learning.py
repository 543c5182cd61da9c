"""Token-level soft Q-learning on the TokenEnv: the language model's logits read as Q-values.

With the env's KL term in the reward, r_n = β log π_pt(t_n | s_n) (+ r_φ(x, y) on the last token),
maximizing E[Σ_n r_n + β H(π(· | s_n))] is maximizing E[r_φ] − β KL(π ‖ π_pt) (see the TokenEnv's
docstring), and its solution is soft Q-learning's (Haarnoja et al. 2017):

    Q(s, a) = r(s, a) + V(s'),   V(s) = β log Σ_a exp(Q(s, a) / β),   π(a | s) = exp((Q(s, a) − V(s)) / β).

The Q-head is the policy LM itself, Q_θ(s, a) = β log_softmax(logits_θ(s))_a + V_θ(s) with V_θ a
value head: the logits are the Q-values up to the per-state constant V, and the soft-greedy policy
is the LM's own softmax. Initialised from the reference LM with V = 0, this is the exact soft
Q-function of a zero reward model (π = π_pt, KL = 0). Training regresses Q(s_t, a_t) on soft
λ-returns computed with a Polyak-averaged target network (π', V'), from a replay buffer of rollouts:

    G_t = r_t + (1 − λ) V'(s_{t+1}) + λ (G_{t+1} − β log π'(a_{t+1} | s_{t+1}))   (0 after the end),

where G_{t+1} − β log π'(a_{t+1} | s_{t+1}) estimates V(s_{t+1}) along the path actually taken. In a
deterministic MDP such as decoding, the soft-optimal V and π satisfy this path consistency for
any actions (Nachum et al. 2017), so multi-step targets stay unbiased off-policy; λ = 0 is the
one-step soft TD target r + V'(s'), whose final reward needs N target updates to reach the first token.
"""

from __future__ import annotations

import copy
import random
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from agents.base import BaseAlgorithm
from agents.policies import observation_batch
from agents.token_policy import PackedTokenObservations, TokenActorCritic, token_vector_env

__all__ = ["TokenQConfig", "TokenQLearning"]


@dataclass
class TokenQConfig:
    """Hyperparameters of :class:`TokenQLearning`.

    Args:
        num_envs: episodes sampled in parallel (ignored when the env is already a vector env).
        n_steps: steps of every env per rollout; a rollout is ``n_steps * num_envs`` transitions.
        kl_coef: β, the soft-Q temperature and the env's KL weight (used when the env is built here;
            a given env's own ``kl_coef`` is used otherwise).
        buffer_rollouts: rollouts kept in the replay buffer.
        batch_envs: env columns (n_steps transitions each) per gradient step.
        gradient_steps: gradient steps after each rollout.
        learning_rate: Adam's step size.
        tau: target ← τ online + (1 − τ) target after every gradient step.
        td_lambda: λ of the soft λ-return targets (0: one-step TD).
        max_grad_norm: the global gradient norm is clipped to this.
        logdir: TensorBoard logs and checkpoints go here (None: neither).
        checkpoint_every: write ``logdir/checkpoint.pt`` every this many env steps, at the end of
            the rollout that crosses it (0: never).
    """

    num_envs: int = 64
    n_steps: int = 32
    kl_coef: float = 0.1
    buffer_rollouts: int = 4
    batch_envs: int = 16
    gradient_steps: int = 8
    learning_rate: float = 1e-5
    tau: float = 0.1
    td_lambda: float = 0.9
    max_grad_norm: float = 1.0
    logdir: str | None = None
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        for name in ("num_envs", "n_steps", "buffer_rollouts", "batch_envs", "gradient_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.kl_coef <= 0:
            raise ValueError(f"kl_coef must be > 0: it is soft Q-learning's temperature, got {self.kl_coef}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {self.tau}")
        if not 0.0 <= self.td_lambda <= 1.0:
            raise ValueError(f"td_lambda must lie in [0, 1], got {self.td_lambda}")
        if self.checkpoint_every and self.logdir is None:
            raise ValueError("checkpoint_every needs a logdir to write the checkpoint to")


class TokenQLearning(BaseAlgorithm):
    """Soft Q-learning of a language model on the TokenEnv, from replay, with a target network.

    Args:
        env: ``"rlhf_envs/TokenEnv-v0"``, a :class:`~rlhf_envs.envs.token.TokenEnv` or a
            :class:`~rlhf_envs.envs.token.TokenVectorEnv`; its reference LM is copied into the Q-head.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``.
        seed: seeds the value head, the env resets and every sample.
        spaces: only travels with a loaded checkpoint (the env is required).
        **config: fields of :class:`TokenQConfig`.

    :meth:`save` writes a checkpoint that resumes exactly (``TokenQLearning.load(path, env)``);
    :meth:`save_pretrained` the fine-tuned LM as a Hugging Face model folder.
    """

    config_class = TokenQConfig

    def __init__(
        self,
        env: Any,
        device: str | torch.device = "auto",
        seed: int = 0,
        spaces: tuple[gym.Space, gym.Space] | None = None,
        **config: Any,
    ) -> None:
        if env is None:
            raise ValueError("the Q-head is a copy of the env's reference LM: pass the env")
        super().__init__(env, device, seed, config, spaces)
        token_env = self.env.unwrapped
        self.beta = token_env.kl_coef
        if self.beta <= 0:
            raise ValueError("the env's kl_coef is soft Q-learning's temperature β and must be > 0")
        self.q_net = TokenActorCritic(token_env.reference_model, token_env.tokenizer).to(self.device)
        nn.init.zeros_(self.q_net.value_head.weight)  # V = 0: Q starts as the zero-reward soft Q-function
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.q_net.follow(self.env)
        self.optimizer = torch.optim.Adam(self.q_net.parameters(), lr=self.config.learning_rate)
        self.replay: deque[dict[str, torch.Tensor]] = deque(maxlen=self.config.buffer_rollouts)
        self.history: list[dict[str, float]] = []
        self._rng = random.Random(seed)

    def _make_env(self, env: Any) -> PackedTokenObservations:
        return token_vector_env(env, self.config.num_envs, self.device, kl_coef=self.config.kl_coef)

    def q_values(self, net: TokenActorCritic, block: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
        """Q(s_t, a_t), log π(a_t | s_t) and V(s_t), each [T, m], of a block of env columns."""
        logprob, _, value = net.evaluate(block["obs"], block["actions"], block["dones"])
        return self.beta * logprob + value, logprob, value

    def learn(
        self, total_timesteps: int, progress_bar: bool = True, reset_num_timesteps: bool = True
    ) -> TokenQLearning:
        """Collect rollouts and train on replay for ``total_timesteps`` env steps (whole rollouts).

        With ``reset_num_timesteps=False`` training continues where the last call (or the loaded
        checkpoint) stopped.
        """
        cfg = self.config
        logger = self._start_learn(
            total_timesteps, reset_num_timesteps, progress_bar, desc="token Q-learning"
        )
        rollout_size = cfg.n_steps * self.env.num_envs
        try:
            while self.num_timesteps < self._target_timesteps:
                steps_before = self.num_timesteps
                stats = self._collect_rollout()
                losses = [self._train_step() for _ in range(cfg.gradient_steps)]
                stats["loss"] = float(torch.stack(losses).mean())
                self.num_timesteps += rollout_size
                self.history.append({"step": self.num_timesteps, **stats})
                episodes = {f"rollout/{name}": value for name, value in self.tracker.summary().items()}
                logger.record(
                    self.num_timesteps,
                    {
                        **episodes,
                        "rollout/score": stats["score"],
                        "rollout/kl": stats["kl"],
                        "train/loss": stats["loss"],
                    },
                )
                logger.advance(rollout_size)
                self._maybe_checkpoint(steps_before)
        finally:
            logger.close()
        return self

    @torch.no_grad()
    def _collect_rollout(self) -> dict[str, float]:
        """Add ``n_steps`` steps of every env to the replay; returns the mean score and KL per episode."""
        obs = self._last_obs
        steps = {name: [] for name in ("obs", "actions", "rewards", "dones", "kl", "scores")}
        for _ in range(self.config.n_steps):
            action, logprob, _ = self.q_net.act(obs)
            next_obs, reward, terminated, truncated, info = self.env.step(action)
            done = terminated | truncated
            self.tracker.update(reward, done)
            steps["obs"].append(obs)
            steps["actions"].append(action)
            steps["rewards"].append(reward.float())
            steps["dones"].append(done)
            steps["kl"].append(logprob - info["ref_logprob"])
            scores = torch.zeros_like(logprob)
            if "final_info" in info:
                scores = torch.where(done, info["final_info"]["score"], 0.0)
            steps["scores"].append(scores)
            obs = next_obs
        block = {name: torch.stack(values) for name, values in steps.items()}
        block["next_obs"] = obs
        self.replay.append(block)
        self._last_obs = obs
        finished = block["dones"].sum().clamp(min=1)
        kl, score = (block["kl"].sum() / finished).item(), (block["scores"].sum() / finished).item()
        return {"score": score, "kl": kl}

    def _train_step(self) -> torch.Tensor:
        """One gradient step of the Huber loss between Q(s, a) and the soft λ-return on replayed columns."""
        block = self._rng.choice(self.replay)
        num_envs = block["actions"].shape[1]
        columns = torch.randperm(num_envs, device=self.device)[: self.config.batch_envs]
        batch = {name: block[name][:, columns] for name in ("obs", "actions", "rewards", "dones")}
        with torch.no_grad():
            _, target_logprob, target_value = self.q_values(self.target_net, batch)
            # The episode ends at EOS or at N tokens (r_φ has scored it): nothing follows either.
            alive = ~batch["dones"].bool()
            lam = self.config.td_lambda
            targets = torch.empty_like(target_value)
            following = self.target_net.value(block["next_obs"][columns])  # V' after the block
            for step in range(len(targets) - 1, -1, -1):
                targets[step] = batch["rewards"][step] + alive[step] * following
                following = (1 - lam) * target_value[step] + lam * (
                    targets[step] - self.beta * target_logprob[step]
                )
        q, _, _ = self.q_values(self.q_net, batch)
        loss = nn.functional.smooth_l1_loss(q, targets)
        self.optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(self.q_net.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        with torch.no_grad():
            for target_param, param in zip(
                self.target_net.parameters(), self.q_net.parameters(), strict=True
            ):
                target_param.lerp_(param, self.config.tau)
        return loss.detach()

    def predict(self, obs: Any, deterministic: bool = True) -> tuple[np.ndarray, None]:
        """Next tokens for packed observations (:func:`~agents.token_policy.pack_observation`), SB3-style
        ``(actions, None)``: the greedy ones, or samples of the soft-greedy policy π = softmax(Q / β)."""
        obs_tensor, single = observation_batch(obs, self.observation_space, self.device)
        with torch.no_grad():
            action = (
                self.q_net.deterministic_action(obs_tensor)
                if deterministic
                else self.q_net.act(obs_tensor)[0]
            )
        action = action.cpu().numpy()
        return (action[0] if single else action), None

    def save_pretrained(self, path: str | Path) -> None:
        """The fine-tuned LM as a Hugging Face model folder (``from_pretrained`` loads it)."""
        self.q_net.save_pretrained(path)

    def _state_dict(self) -> dict[str, Any]:
        return {
            "q_net": self.q_net.state_dict(),
            "target_net": self.target_net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "replay": list(self.replay),
            "history": self.history,
            "replay_rng": self._rng.getstate(),
        }

    def _load_state_dict(self, state: dict[str, Any]) -> None:
        self.q_net.load_state_dict(state["q_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.replay.extend(
            {name: tensor.to(self.device) for name, tensor in block.items()} for block in state["replay"]
        )
        self.history = list(state["history"])
        self._rng.setstate(state["replay_rng"])
