"""PPO on the TokenEnv: RLHF's fine-tuning step (Stiennon et al. 2020), as :class:`agents.PPO` configured.

:class:`TokenPPO` is :class:`agents.PPO` with what the TokenEnv needs and nothing else changed: the
env adapted to packed tensor observations, the language model with a value head as the policy
(:class:`~agents.token_policy.TokenActorCritic`), minibatches of whole env columns, and the LM
fine-tuning defaults of :data:`TOKEN_ENV_PPO_DEFAULTS`, under which each token's reward carries the
KL penalty −β (log π − log π_pt) and β follows the adaptive controller (:mod:`agents.kl_control`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import torch
from torch import nn

from agents.buffers import ColumnRolloutBuffer
from agents.kl_control import KL_ESTIMATORS
from agents.ppo import PPO, PPOConfig
from agents.token_policy import (
    PackedTokenObservations,
    TokenActorCritic,
    autocast,
    column_segments,
    packed_model_inputs,
    per_length_bucket,
    token_vector_env,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["CRITICS", "TOKEN_ENV_PPO_DEFAULTS", "TokenPPO", "TokenPPOConfig", "reward_model_critic_problem"]


@dataclass
class TokenPPOConfig(PPOConfig):
    """:class:`agents.PPOConfig` and the options only an LM policy has.

    Args:
        kl_estimator: the per-token KL estimate of the penalty and of the measured KL, ``"k1"``
            (log π − log π_pt, the default and the demo's) or ``"k3"`` (see :mod:`agents.kl_control`).
        lora_rank: None trains a full copy of the reference LM; r > 0 trains rank-r LoRA adapters
            on the reference's own weights instead (one copy of the LM in memory, see
            :class:`~agents.token_policy.TokenActorCritic`).
        lora_alpha: LoRA's scale α (the update is α / r · BA); None: 2r.
        lora_target_modules: names of the modules that get adapters; None: peft's default for the
            model's architecture (GPT-2: the attention's ``c_attn``).
        bf16: run the policy's and the reference's forward passes under bfloat16 autocast (for a
            GPU); weights, gradients and Adam's moments stay float32.
        critic: what V(s) is. ``"value_head"``: a linear head on the policy's last hidden state,
            trained with the value loss (the default). ``"reward_model"``: the env's reward model on
            the text so far, V(s_t) = r_φ(prompt, first t tokens) in the whitened reward's units, read
            for every step of a rollout in one forward pass (:meth:`HFRewardModel.token_scores
            <rlhf_envs.lm.reward_model.HFRewardModel.token_scores>`: a decoder-only reward model with
            the env's vocabulary); nothing is trained for it, so ``vf_coef`` defaults to 0, and with
            ``gae_lambda`` 0 (its default too) each token's advantage is the change of r_φ it made,
            r_φ(s_{t+1}) − r_φ(s_t), less its KL penalty: credit per token instead of one score
            shared by the episode's tokens.
        extra_actions: k > 0 (with the ``"reward_model"`` critic and λ = 0): at every state of a
            rollout k more tokens are drawn from π_old, each credited like the token taken, with
            r̂_φ(s + a) − β (log π_old − log π_pt)(a | s) − r̂_φ(s) (r̂_φ: r_φ in the whitened reward's
            units; an EOS leaves the text, so r̂_φ(s)), and the PPO loss averages over the k + 1
            tokens of each state. The critic is a function of the text, so a token not taken is
            scored without stepping the env (the "vine" of Schulman et al. 2015, one step deep): k + 1
            samples per state instead of one, read in one more pass of r_φ and of π_pt over the
            rollout (:meth:`HFRewardModel.next_token_scores
            <rlhf_envs.lm.reward_model.HFRewardModel.next_token_scores>`).
    """

    kl_estimator: str = "k1"
    lora_rank: int | None = None
    lora_alpha: float | None = None
    lora_target_modules: tuple[str, ...] | None = None
    bf16: bool = False
    critic: str = "value_head"
    extra_actions: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.critic not in CRITICS:
            raise ValueError(f"critic must be one of {list(CRITICS)}, got {self.critic!r}")
        if self.extra_actions < 0:
            raise ValueError(f"extra_actions must be >= 0, got {self.extra_actions}")
        if self.extra_actions and (self.critic != "reward_model" or self.gae_lambda != 0):
            raise ValueError(
                "extra_actions needs critic='reward_model' with gae_lambda=0 (one-step advantages, which "
                f"r_φ gives for tokens not taken); got critic={self.critic!r}, gae_lambda={self.gae_lambda}"
            )
        if self.extra_actions and self.kl_coef is None:
            # Tokens not taken are charged the agent's own KL penalty; an env's reaches only the taken one.
            raise ValueError("extra_actions needs the agent's KL penalty (kl_coef not None)")
        if self.lora_rank is not None and self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1 (or None for a full copy), got {self.lora_rank}")
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(
                f"kl_estimator must be one of {sorted(KL_ESTIMATORS)}, got {self.kl_estimator!r}"
            )


#: What V(s) can be (see :class:`TokenPPOConfig`), with the PPO options each changes from the defaults below.
CRITICS: dict[str, dict[str, Any]] = {
    "value_head": {},
    "reward_model": {"vf_coef": 0.0, "gae_lambda": 0.0},
}

#: PPO options for the TokenEnv where they differ from the control envs' defaults (the user's win).
#: γ = 1 and no bootstrap at truncation: the episode ends at N tokens, where r_φ scores the text;
#: the small constant learning rate, value weight and gradient clip of LM fine-tuning (as in TRL);
#: the KL penalty with the adaptive controller of Ziegler et al. (2019).
TOKEN_ENV_PPO_DEFAULTS: dict[str, Any] = {
    "num_envs": 64,
    "n_steps": 32,
    "batch_size": 512,
    "n_epochs": 4,
    "learning_rate": 1e-5,
    "gamma": 1.0,
    "gae_lambda": 0.95,
    "clip_range_vf": 0.2,
    "vf_coef": 0.1,
    "max_grad_norm": 1.0,
    "kl_coef": 0.2,
    "kl_target": 6.0,
    "kl_horizon": 10_000,
    "whiten_rewards": True,
    "bootstrap_truncated": False,
}


def reward_model_critic_problem(reward_model: Any, tokenizer: PreTrainedTokenizerBase) -> str | None:
    """Why ``reward_model`` cannot be the critic of a TokenEnv with ``tokenizer`` (None if it can): it
    must score every token (:meth:`HFRewardModel.token_scores
    <rlhf_envs.lm.reward_model.HFRewardModel.token_scores>`) of the env's own token ids."""
    if not getattr(reward_model, "scores_every_token", False):
        return (
            f"the reward model {reward_model!r} does not score every token (an HFRewardModel of a "
            "decoder-only model does)"
        )
    if reward_model.tokenizer.get_vocab() != tokenizer.get_vocab():
        return "the reward model's tokenizer and the env's have different vocabularies"
    return None


class TokenPPO(PPO):
    """PPO with a KL penalty that fine-tunes the TokenEnv's reference LM (a copy of it).

    Args:
        env: ``"rlhf_envs/TokenEnv-v0"``, a :class:`~rlhf_envs.envs.token.TokenEnv` (its settings, on
            ``num_envs`` batched episodes) or a :class:`~rlhf_envs.envs.token.TokenVectorEnv`; built
            with ``kl_coef=0``: the agent applies the KL penalty itself.
        device, seed, spaces: as for :class:`agents.PPO` (``spaces`` only travels with a loaded checkpoint).
        policy: default: a :class:`TokenActorCritic` copy of the env's reference model.
        **config: fields of :class:`TokenPPOConfig`; unset ones take :data:`TOKEN_ENV_PPO_DEFAULTS`.

    :meth:`save` writes a checkpoint that resumes exactly (``TokenPPO.load(path, env)``);
    :meth:`save_pretrained` writes a Hugging Face model folder::

        agent = TokenPPO(TokenVectorEnv(64, reward_model=my_reward_model), kl_target=3.0).learn(100_000)
        agent.save_pretrained("fine-tuned")  # AutoModelForCausalLM.from_pretrained("fine-tuned")
    """

    config_class = TokenPPOConfig
    rollout_buffer_class = ColumnRolloutBuffer

    def __init__(
        self,
        env: Any,
        device: str | torch.device = "auto",
        seed: int = 0,
        policy: nn.Module | None = None,
        spaces: tuple[gym.Space, gym.Space] | None = None,
        **config: Any,
    ) -> None:
        if env is None:
            raise ValueError("a TokenPPO policy is a copy of the env's reference LM: pass the env")
        # A critic's own defaults; an unknown critic fails in the config's check.
        critic_defaults = CRITICS.get(config.get("critic", "value_head"), {})
        super().__init__(
            env, device, seed, policy, spaces, **{**TOKEN_ENV_PPO_DEFAULTS, **critic_defaults, **config}
        )
        if self.config.critic == "reward_model":
            self._check_reward_model_critic()

    def _check_reward_model_critic(self) -> None:
        token_env = self.env.unwrapped
        problem = reward_model_critic_problem(token_env.reward_model, token_env.tokenizer)
        if problem is not None:
            raise ValueError(f"critic='reward_model': {problem}; use critic='value_head'")

    def _make_env(self, env: Any) -> PackedTokenObservations:
        env = token_vector_env(env, self.config.num_envs, self.device)
        env.autocast_dtype = self._autocast_dtype()
        if self.config.kl_coef is not None and env.unwrapped.kl_coef:
            raise ValueError(
                "the env already adds β·log π_pt to its rewards (its kl_coef > 0): build it with "
                "kl_coef=0 for PPO's KL penalty, or pass kl_coef=None to PPO"
            )
        return env

    def _default_policy(self) -> TokenActorCritic:
        token_env = self.env.unwrapped
        policy = TokenActorCritic(
            token_env.reference_model,
            token_env.tokenizer,
            lora=self._lora_config(),
            autocast_dtype=self._autocast_dtype(),
        )
        policy.follow(self.env)
        return policy

    def _autocast_dtype(self) -> torch.dtype | None:
        return torch.bfloat16 if self.config.bf16 else None

    def _lora_config(self) -> Any:
        """The ``peft.LoraConfig`` the config asks for, None for a full copy."""
        cfg = self.config
        if cfg.lora_rank is None:
            return None
        from peft import LoraConfig

        return LoraConfig(
            r=cfg.lora_rank,
            lora_alpha=2 * cfg.lora_rank if cfg.lora_alpha is None else cfg.lora_alpha,
            target_modules=None if cfg.lora_target_modules is None else list(cfg.lora_target_modules),
            lora_dropout=0.0,  # dropout stays off: the PPO ratio compares one function with itself
        )

    def _bootstrap_value(self, obs: torch.Tensor, done: torch.Tensor) -> torch.Tensor:
        return self.policy.bootstrap_value(obs, done)

    def _compute_advantages(self, obs: torch.Tensor, done: torch.Tensor) -> None:
        if self.config.critic == "value_head":
            super()._compute_advantages(obs, done)
            return
        # V = r_φ of each step's window and of the window after the last step (its token appended),
        # for all steps in one pass over each episode segment of the rollout.
        buffer = self.buffer
        sequences, segment, position = column_segments(buffer.obs, buffer.actions, buffer.dones)
        reward_model = self.env.unwrapped.reward_model
        mean, std = (0.0, 1.0) if self.kl_penalty is None else self.kl_penalty.reward_scale
        alternatives = None
        if self.config.extra_actions:
            logprobs = self.policy.next_token_logprobs(buffer.obs, buffer.actions, buffer.dones)
            tokens = self.policy.sample_tokens(logprobs, self.config.extra_actions)  # [T, N, k]
            inputs = packed_model_inputs(sequences)
            scores, token_scores = reward_model.next_token_scores(
                inputs["input_ids"],
                inputs["attention_mask"],
                segment.flatten(),
                position.flatten(),
                tokens.flatten(0, 1),
            )
            scores = scores.to(self.device)
            alternatives = {"actions": tokens, "logprobs": logprobs.gather(-1, tokens)}
            next_values = (token_scores.to(self.device).view(tokens.shape) - mean) / std
        else:
            scores = per_length_bucket(self._reward_model_token_scores, sequences)
        values = (scores - mean) / std
        buffer.values = values[segment, position]
        last_value = values[segment[-1], position[-1] + 1]
        buffer.compute_advantages(last_value, self.gamma, self.config.gae_lambda)
        if alternatives is not None:
            alternatives["advantages"] = self._alternative_advantages(
                sequences, segment, position, alternatives, next_values
            )
        buffer.alternatives = alternatives

    def _reward_model_token_scores(self, packed: torch.Tensor) -> torch.Tensor:
        inputs = packed_model_inputs(packed)
        scores = self.env.unwrapped.reward_model.token_scores(inputs["input_ids"], inputs["attention_mask"])
        return scores.to(self.device)

    def _alternative_advantages(
        self,
        sequences: torch.Tensor,
        segment: torch.Tensor,
        position: torch.Tensor,
        alternatives: dict[str, torch.Tensor],
        next_values: torch.Tensor,
    ) -> torch.Tensor:
        """One-step advantages [T, N, k] of the tokens not taken: r̂_φ(s + a) − β KL(a | s) − r̂_φ(s)."""
        token_env = self.env.unwrapped
        tokens, values = alternatives["actions"], self.buffer.values[..., None]
        # An EOS ends the episode on the text as it is: the env scores it without the EOS.
        next_values = torch.where(tokens == token_env.tokenizer.eos_token_id, values, next_values)
        reference = token_env.reference_model

        def reference_hidden(packed: torch.Tensor) -> torch.Tensor:
            return reference.base_model(**packed_model_inputs(packed)).last_hidden_state

        with torch.no_grad(), autocast(self.device, self._autocast_dtype()):
            hidden = per_length_bucket(reference_hidden, sequences)[segment, position]
            logits = reference.get_output_embeddings()(hidden).float()
        ref_logprobs = logits.log_softmax(-1).gather(-1, tokens)
        kl = KL_ESTIMATORS[self.kl_penalty.estimator](alternatives["logprobs"] - ref_logprobs)
        # The β that shaped this rollout's rewards (the controller has moved on since).
        return next_values - self.kl_penalty.history[-1].kl_coef * kl - values

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """The fine-tuned LM as a Hugging Face model folder, with its tokenizer and value head."""
        self.policy.save_pretrained(path)
