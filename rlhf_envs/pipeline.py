"""The lecture's RLHF pipeline in named stages, each a function to call on its own.

1. :func:`split_prompts`: training prompts and held-out ones;
2. :func:`collect_labels`: pairs of continuations sampled from π_pt, labelled into a preference store;
3. :func:`fit_reward_model`: r_φ fitted to the labels (Bradley–Terry), with its held-out accuracy;
4. :func:`make_token_ppo` then ``agent.learn``: PPO on the TokenEnv, reward r_φ on the last token and
   a KL penalty against π_pt on every token, β fixed (or steered by the adaptive controller);
5. :func:`evaluate_samples`: oracle score, r_φ's score and KL(π ‖ π_pt) of a policy on held-out prompts.

``rlhf-envs demo`` (:mod:`rlhf_envs.demo`) runs them in order and reports; ``benchmarks/rlhf_text.py``
runs the same stages against other trainers. :class:`DemoConfig` is the budget they share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from agents.schedules import LinearSchedule, Schedule
from agents.token_ppo import CRITICS, TokenPPO, reward_model_critic_problem
from rlhf_envs.envs.token import TokenVectorEnv
from rlhf_envs.lm.reward_model import HFRewardModel, TextRewardFn
from rlhf_envs.lm.tokens import position_ids, token_logprobs, tokenizer_sides
from rlhf_envs.preferences.reward_trainer import (
    RewardModelTrainer,
    RewardTrainerConfig,
    sample_continuation_pairs,
)
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import (
    SyntheticTextLabeler,
    TextLabeler,
    VaderSentiment,
    collect_text_preferences,
)

__all__ = [
    "DemoConfig",
    "RewardModelFit",
    "SampleReport",
    "collect_labels",
    "cut_prompts",
    "demo_token_env",
    "evaluate_samples",
    "fit_reward_model",
    "make_token_ppo",
    "oracle_agreement",
    "split_prompts",
]


@dataclass
class DemoConfig:
    """The pipeline's budget; the defaults fit 5 minutes on a 2-core CPU, ``quick()`` a few seconds.

    The defaults are sized for the embedded Brown model and the demo's evaluative prompts ("The food
    was"): 12-token continuations hold the evaluation the prompt asks for and halve the cost of every
    stage against 24 (r_φ's held-out accuracy is no lower: 66% against 64% on 3,000 pairs). A fresh
    score head learns at lr 1e-3 (64% at 24 tokens, against 58% at 2e-4); the pretrained embedded
    reward model is fine-tuned gently (1 epoch at 1e-4: 2 epochs at 1e-3 took a 76% start down to 67%).

    PPO: 40 iterations of 64 episodes, one pass over each rollout, lr 4e-4 annealed linearly to 0, a
    fixed KL weight β = 0.3, an entropy bonus of 0.01, r_φ of the text so far as the critic (each token's
    advantage is the change of r_φ it made, less its KL penalty) and 8 extra tokens per visited state
    drawn from π_old and credited by r_φ (``TokenPPOConfig.extra_actions``). Chosen on validation
    prompts by rules written before their runs: 64 of the demo's training prompts held out of PPO (which
    trained on the other 156, on the demo's r_φ), 4 continuations each, the demo's held-out prompts never
    scored; seeds 0 and 1; admissible with at most 230 s of one-thread PPO CPU and a validation KL ≤ 5.0
    nats on both seeds; the highest mean gain, adopted only at ≥ +0.55. With a constant lr 2e-4, β 0.3
    at 40 iterations passed (+0.567 at 4.90 nats, +0.536 at 4.84) but its shipped run landed at 6.16
    nats: a fixed β's KL lands within about a nat. Annealing the learning rate quiets the last updates,
    whose noise adds KL without gain: from 4e-4, +0.554 at 4.72 and +0.560 at 4.52 (from 3e-4: +0.549
    at 4.40, +0.528 at 4.13). The value head of the earlier defaults (70 iterations, β 0.15) gains about
    0.17–0.21 per √nat on validation, the r_φ critic 0.22, with the extra tokens 0.24–0.26: credit per
    token, and per state for 9 tokens instead of one. The adaptive controller (``kl_target``) is too
    slow for a run this short: it lowers β while the KL is under its target, the KL then overshoots,
    and β pulls it back late, the oracle's gain with it.
    """

    pairs: int = 3000
    pair_tokens: int = 12
    labeler_beta: float = 10.0
    # The synthetic labeler answers "equal" when neither continuation is outside VADER's neutral band
    # (or both score alike); None: it always picks one, flipping a coin between two neutral texts.
    labeler_tie_below: float | None = VaderSentiment.NEUTRAL
    rm_epochs: int = 2
    rm_batch_size: int = 32
    rm_learning_rate: float = 1e-3
    rm_finetune_epochs: int = 1
    rm_finetune_learning_rate: float = 1e-4
    # The demo's r_φ for the embedded LM's sentiment task starts from the embedded reward model (a
    # preference model pretrained on synthetic labels of other prompts) and is fine-tuned on the run's
    # labels; False: from the LM's backbone with a fresh score head.
    pretrained_reward_model: bool = True
    batch: int = 64
    new_tokens: int = 12
    iterations: int = 40
    ppo_epochs: int = 1
    ppo_batch_size: int = 384
    learning_rate: Schedule = LinearSchedule(4e-4, 0.0)
    kl_coef: float = 0.3
    entropy_coef: float = 0.01
    kl_target: float | None = None
    kl_horizon: int = 2_000
    # V(s): r_φ of the text so far ("reward_model", when r_φ scores every token of the LM's ids, else the
    # value head) or a value head on the policy ("value_head"); see TokenPPOConfig.
    critic: str = "reward_model"
    # Tokens more per visited state, sampled from π_old and credited by the r_φ critic
    # (TokenPPOConfig.extra_actions); 0 with the value head, which can score only the token taken.
    extra_actions: int = 8
    eval_prompts: int = 64
    # Continuations per held-out prompt: a mean of 64 oracle scores has a standard error of ~0.05,
    # of 4 × 64 ~0.025.
    eval_samples: int = 4
    table_rows: int = 6

    @classmethod
    def quick(cls) -> DemoConfig:
        """A smoke test of every stage: 16 pairs, without ties (a tiny or random model's pairs are
        mostly ties, which would leave too few decisive labels to fit r_φ and hold some out)."""
        return cls(
            pairs=16,
            pair_tokens=8,
            labeler_tie_below=None,
            rm_epochs=1,
            rm_batch_size=8,
            batch=8,
            new_tokens=8,
            iterations=2,
            ppo_epochs=1,
            ppo_batch_size=64,
            eval_prompts=8,
            eval_samples=1,
            table_rows=3,
        )

    def __post_init__(self) -> None:
        for name in (
            "pairs",
            "pair_tokens",
            "rm_epochs",
            "batch",
            "new_tokens",
            "iterations",
            "eval_prompts",
            "eval_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.critic not in CRITICS:
            raise ValueError(f"critic must be one of {list(CRITICS)}, got {self.critic!r}")
        if self.extra_actions < 0 or (self.extra_actions and self.critic != "reward_model"):
            raise ValueError(
                f"extra_actions must be >= 0, and 0 unless the critic is the reward model; got "
                f"{self.extra_actions} with critic {self.critic!r}"
            )

    def synthetic_labeler(self, oracle: Callable[[str, str], float], seed: int) -> SyntheticTextLabeler:
        """The Boltzmann-rational labeler of this budget (rationality, ties) with ``oracle``'s score."""
        return SyntheticTextLabeler(
            oracle, beta=self.labeler_beta, seed=seed, tie_below=self.labeler_tie_below
        )

    def reward_trainer_config(
        self, seed: int, device: torch.device, finetune: bool = False
    ) -> RewardTrainerConfig:
        """The reward model's training settings of this budget: a fresh score head's, or with
        ``finetune`` a trained reward model's."""
        return RewardTrainerConfig(
            learning_rate=self.rm_finetune_learning_rate if finetune else self.rm_learning_rate,
            num_epochs=self.rm_finetune_epochs if finetune else self.rm_epochs,
            batch_size=self.rm_batch_size,
            seed=seed,
            device=str(device),
        )


def cut_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], max_tokens: int
) -> tuple[list[str], int]:
    """``(prompts, how many were cut)``: each prompt longer than ``max_tokens`` tokens keeps its last
    ones (a TL;DR prompt its post's end and ``TL;DR:``), so that every stage reads the same text."""
    with tokenizer_sides(tokenizer, truncation="left"):
        encoded = tokenizer(prompts, truncation=True, max_length=max_tokens)["input_ids"]
    full_lengths = [len(ids) for ids in tokenizer(prompts)["input_ids"]]
    cut = [index for index, length in enumerate(full_lengths) if length > max_tokens]
    kept = list(prompts)
    for index in cut:
        kept[index] = tokenizer.decode(encoded[index])
    return kept, len(cut)


def split_prompts(prompts: list[str], eval_prompts: int, seed: int) -> tuple[list[str], list[str]]:
    """``(training, held-out)`` prompts in a seeded random order; at most half are held out."""
    if len(prompts) < 2:
        raise ValueError(f"the pipeline needs at least 2 prompts (some are held out), got {len(prompts)}")
    order = np.random.default_rng(seed).permutation(len(prompts))
    held_out = min(eval_prompts, len(prompts) // 2)
    return [prompts[i] for i in order[held_out:]], [prompts[i] for i in order[:held_out]]


def sample_missing_pairs(
    store: TextPreferenceStore,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: DemoConfig,
    seed: int,
    queued: int = 0,
) -> tuple[list[str], list[str], list[str]]:
    """``(prompts, continuations a, continuations b)`` of the pairs that ``store``'s labels and the
    ``queued`` pairs (waiting for people to label them) lack to reach ``config.pairs``."""
    missing = config.pairs - len(store) - queued
    if missing <= 0:
        return [], [], []
    return sample_continuation_pairs(
        reference,
        tokenizer,
        prompts=prompts,
        num_pairs=missing,
        max_new_tokens=config.pair_tokens,
        seed=seed + len(store) + queued,
        device=reference.device,
    )


def collect_labels(
    store: TextPreferenceStore,
    labeler: TextLabeler,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    config: DemoConfig,
    seed: int,
) -> int:
    """Sample the pairs ``store`` still lacks to hold ``config.pairs`` and label them; returns how many
    were added. Each label is on disk as soon as it is given, so a rerun continues where one stopped."""
    pair_prompts, first, second = sample_missing_pairs(store, reference, tokenizer, prompts, config, seed)
    return collect_text_preferences(store, labeler, pair_prompts, first, second)


@dataclass
class RewardModelFit:
    """A fitted reward model, its held-out metrics and the pairs they were measured on."""

    reward_model: HFRewardModel
    metrics: dict[str, float]
    eval_pairs: dict[str, list[str]]


def fit_reward_model(
    model: str | Path,
    tokenizer: PreTrainedTokenizerBase,
    comparisons: TextPreferenceStore | Dataset,
    config: DemoConfig,
    seed: int,
    device: torch.device,
    save_to: Path | None = None,
    finetune: bool = False,
) -> RewardModelFit:
    """r_φ: a scalar head on ``model``'s backbone fitted to the comparisons (a store's labels, or a
    ``Dataset`` of ``prompt``, ``chosen``, ``rejected``) with the Bradley–Terry loss.

    A store's ties prefer neither completion: r_φ is fitted to, and its held-out accuracy
    (``eval_accuracy``) measured on, the decisive pairs, a held-out share of them as of all. The metrics
    also give ``tie_fraction`` (of all labels), ``accuracy_all_pairs``, the accuracy with the ties in
    that proportion counted half right (whichever completion r_φ prefers, a tie agrees half), and
    ``start_accuracy``, the held-out accuracy before fitting (of a pretrained reward model ``model``: what
    the fit adds; of an LM's fresh head: chance). ``finetune``: ``model`` is a trained reward model, fitted
    with the budget's fine-tuning settings."""
    labels, ties = len(comparisons), 0
    if isinstance(comparisons, TextPreferenceStore):
        ties = comparisons.ties
        comparisons = comparisons.to_dataset()
    if len(comparisons) < 2:
        raise ValueError(
            f"{len(comparisons)} of {labels} labels prefer one completion (the rest are ties): a reward "
            "model needs at least 2 (one to fit, one held out); label more pairs"
        )
    trainer = RewardModelTrainer(
        model,
        tokenizer,
        train_dataset=comparisons,
        config=config.reward_trainer_config(seed, device, finetune),
    )
    start_accuracy = trainer.evaluate()["accuracy"]
    metrics = trainer.train()
    tie_fraction = ties / labels
    metrics |= {
        "start_accuracy": start_accuracy,
        "tie_fraction": tie_fraction,
        "accuracy_all_pairs": metrics["eval_accuracy"] * (1 - tie_fraction) + 0.5 * tie_fraction,
    }
    if save_to is not None:
        trainer.save(save_to, half=False)
    return RewardModelFit(
        HFRewardModel(trainer.model, tokenizer, device=device), metrics, trainer.eval_dataset
    )


def demo_token_env(
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward_model: TextRewardFn,
    config: DemoConfig,
    device: torch.device,
    **options: Any,
) -> TokenVectorEnv:
    """The pipeline's ``TokenVectorEnv``: ``config.batch`` episodes of ``config.new_tokens`` tokens as device
    tensors; ``options`` are further :class:`~rlhf_envs.envs.token.TokenEnvConfig` fields (``kl_coef``,
    ``truncation``)."""
    return TokenVectorEnv(
        config.batch,
        model=reference,
        tokenizer=tokenizer,
        prompts=prompts,
        reward_model=reward_model,
        max_new_tokens=config.new_tokens,
        device=device,
        as_tensors=True,
        **options,
    )


def make_token_ppo(
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward_model: TextRewardFn,
    config: DemoConfig,
    device: torch.device,
    seed: int,
    truncation: str = "error",
) -> TokenPPO:
    """PPO + KL on a ``TokenVectorEnv`` of ``config.batch`` episodes, one rollout per episode length;
    ``agent.learn(config.iterations * config.batch * config.new_tokens)`` trains it. ``truncation``:
    the env's, for prompts longer than the model's context leaves (``"error"``, ``"left"``, ``"right"``).
    The critic is ``config.critic``, but a value head (without extra actions) when it asks for the
    reward model and ``reward_model`` cannot score every token of the LM's ids (a user's encoder reward
    model)."""
    env = demo_token_env(reference, tokenizer, prompts, reward_model, config, device, truncation=truncation)
    critic, extra_actions = config.critic, config.extra_actions
    if critic == "reward_model" and reward_model_critic_problem(reward_model, tokenizer) is not None:
        critic, extra_actions = "value_head", 0
    return TokenPPO(
        env,
        device=device,
        seed=seed,
        n_steps=config.new_tokens,
        batch_size=config.ppo_batch_size,
        n_epochs=config.ppo_epochs,
        learning_rate=config.learning_rate,
        ent_coef=config.entropy_coef,
        kl_coef=config.kl_coef,
        kl_target=config.kl_target,
        kl_horizon=config.kl_horizon,
        critic=critic,
        extra_actions=extra_actions,
    )


@dataclass
class SampleReport:
    """Continuations of a set of prompts and what they score."""

    completions: list[str]  # the prompts' first continuations, then their second ones, ...
    oracle: float | None  # None without an oracle
    reward: float
    kl: float
    oracle_se: float | None = None  # the oracle mean's standard error; None without an oracle


@torch.no_grad()
def evaluate_samples(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    oracle: Callable[[str, str], float] | None,
    reward_model: TextRewardFn,
    max_new_tokens: int,
    seed: int,
    samples: int = 1,
    batch_size: int = 64,
    desc: str = "sampling",
) -> SampleReport:
    """Sample ``samples`` continuations per prompt from ``model`` (temperature 1, as in training) and
    report the mean oracle score (None when ``oracle`` is None) with its standard error, the mean
    reward-model score and the KL estimate E[Σ_n log π − log π_pt], all over every continuation.

    The prompts are sampled in turn, then again, ``samples`` times: the first ``len(prompts)``
    completions, one per prompt, are those of ``samples=1`` (same seed, same batches)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    prompts = list(prompts) * samples
    torch.manual_seed(seed)
    completions, kls = [], []
    with tokenizer_sides(tokenizer, padding="left"):
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            encoded = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            encoded = encoded.to(model.device)
            sequences = model.generate(
                **encoded,
                do_sample=True,
                top_k=0,
                max_new_tokens=max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            width = encoded["input_ids"].shape[1]
            response = sequences[:, width:]
            # Tokens after the first EOS are padding; the EOS itself was a choice of the policy.
            after_eos = (response == tokenizer.eos_token_id).long().cumsum(-1) - (
                response == tokenizer.eos_token_id
            ).long()
            response_mask = after_eos == 0
            completions += tokenizer.batch_decode(response, skip_special_tokens=True)
            if model is reference:  # π_pt against itself: the KL is 0, no forward pass needed
                kls.append(torch.zeros(len(response), device=response.device))
                continue
            mask = torch.cat([encoded["attention_mask"], response_mask.long()], dim=1)
            positions = position_ids(mask)
            logprobs = []
            for lm in (model, reference):
                logits = lm(input_ids=sequences, attention_mask=mask, position_ids=positions).logits
                logprobs.append(token_logprobs(logits[:, width - 1 : -1].float(), response))
            kls.append(((logprobs[0] - logprobs[1]) * response_mask).sum(-1))
    oracle_score = oracle_se = None
    if oracle is not None:
        scores = np.array(
            [oracle(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)]
        )
        oracle_score = float(scores.mean())
        oracle_se = float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else None
    rewards = reward_model(prompts, completions)
    return SampleReport(
        completions=completions,
        oracle=oracle_score,
        reward=float(rewards.float().mean()),
        kl=float(torch.cat(kls).mean()),
        oracle_se=oracle_se,
    )


def oracle_agreement(reward_model: TextRewardFn, oracle: Callable[[str, str], float], pairs) -> float | None:
    """Share of ``pairs`` (prompt, chosen, rejected) that the oracle scores differently on which the
    reward model orders the two completions as the oracle does: its accuracy without label noise.
    None when the oracle scores every pair alike (the share is undefined)."""
    prompts, chosen, rejected = pairs["prompt"], pairs["chosen"], pairs["rejected"]
    oracle_diff = np.array(
        [oracle(p, a) - oracle(p, b) for p, a, b in zip(prompts, chosen, rejected, strict=True)]
    )
    model_diff = (reward_model(prompts, chosen) - reward_model(prompts, rejected)).cpu().numpy()
    separated = oracle_diff != 0
    if not separated.any():
        return None
    return float(np.mean((model_diff > 0)[separated] == (oracle_diff > 0)[separated]))
