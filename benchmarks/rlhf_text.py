"""RLHF on the demo's task: our PPO on the TokenEnv against TRL's RLOO, in one run.

The task is ``rlhf-envs demo``'s: the embedded LM (or ``--model``), a reward model fitted to
synthetic VADER-sentiment preferences (or ``--reward-model``), held-out prompts. Each trainer gets
the same number of sampled completions; afterwards both policies are scored on the same held-out
prompts: the oracle (VADER) gain over the reference, the reward-model gain and KL(π ‖ π_pt).
Printed: each run's figures and the ratios ours/TRL of oracle gain, of gain per nat of KL and of
wall time (goal: gain ≥ TRL's, wall time below).

TRL is optional (``pip install trl``; TRL 1.x offers RLOO, its PPO trainer was removed). Without it
the script says so and compares what it can: the rollout throughput of the TokenEnv against the
``generate`` pipeline of ``benchmarks/token_env.py``.

    python benchmarks/rlhf_text.py [--model embedded] [--iterations 40] [--batch 64] [--new-tokens 24]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import tempfile
import time
from pathlib import Path

import torch
import transformers

from agents import TokenQLearning
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.pipeline import (
    DemoConfig,
    collect_labels,
    demo_token_env,
    evaluate_samples,
    fit_reward_model,
    make_token_ppo,
    split_prompts,
)
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import SyntheticTextLabeler, VaderSentiment


def fit_vader_reward_model(
    model: str, reference, tokenizer, prompts: list[str], config: DemoConfig, seed: int, work: Path
):
    """The demo's steps 1–3: sample pairs, label them with the VADER labeler, fit the reward model."""
    store = TextPreferenceStore(work / "preferences.jsonl")
    labeler = SyntheticTextLabeler(VaderSentiment(), beta=config.labeler_beta, seed=seed)
    collect_labels(store, labeler, reference, tokenizer, prompts, config, seed)
    fit = fit_reward_model(model, tokenizer, store, config, seed, reference.device)
    print(f"reward model: held-out accuracy {fit.metrics['eval_accuracy']:.1%}")
    return fit.reward_model


def run_ours(reference, tokenizer, prompts, reward_model, config: DemoConfig, device, seed: int):
    agent = make_token_ppo(reference, tokenizer, prompts, reward_model, config, device, seed)
    start = time.perf_counter()
    agent.learn(config.iterations * config.batch * config.new_tokens)
    return agent.policy.model, time.perf_counter() - start


def run_q_learning(
    reference, tokenizer, prompts, reward_model, config: DemoConfig, device, seed: int, beta: float
):
    """Token-level soft Q-learning (agents.TokenQLearning) with the same completions budget."""
    env = demo_token_env(reference, tokenizer, prompts, reward_model, config, device, kl_coef=beta)
    agent = TokenQLearning(
        env, device=device, seed=seed, n_steps=config.new_tokens, learning_rate=config.learning_rate
    )
    start = time.perf_counter()
    agent.learn(config.iterations * config.batch * config.new_tokens)
    return agent.q_net.model, time.perf_counter() - start


def run_trl(reference, tokenizer, prompts, reward_model, config: DemoConfig, device, seed: int, beta: float):
    """TRL's RLOO with the same completions budget, completion length, sampling and learning rate."""
    from datasets import Dataset
    from trl import RLOOConfig, RLOOTrainer

    def reward(prompts: list[str], completions: list[str], **_: object) -> list[float]:
        return reward_model(list(prompts), list(completions)).tolist()

    with tempfile.TemporaryDirectory() as output_dir:
        args = RLOOConfig(
            output_dir=output_dir,
            per_device_train_batch_size=config.batch,
            num_generations=4,
            max_completion_length=config.new_tokens,
            max_steps=config.iterations,
            learning_rate=config.learning_rate,
            beta=beta,
            temperature=1.0,
            top_k=0,
            use_cpu=device.type == "cpu",
            report_to="none",
            save_strategy="no",
            logging_steps=max(1, config.iterations // 4),
            seed=seed,
            disable_tqdm=False,
        )
        trainer = RLOOTrainer(
            model=copy.deepcopy(reference),
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
        )
        start = time.perf_counter()
        trainer.train()
        return trainer.model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoConfig()
    parser.add_argument("--model", default="embedded")
    parser.add_argument("--reward-model", default=None, help="a trained reward model; default: fit one")
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--new-tokens", type=int, default=defaults.new_tokens)
    parser.add_argument(
        "--ppo-epochs", type=int, default=defaults.ppo_epochs, help="our PPO's epochs per rollout"
    )
    parser.add_argument("--trl-beta", type=float, default=0.05, help="RLOO's KL coefficient")
    parser.add_argument(
        "--q-learning-beta",
        type=float,
        default=None,
        help="also run token-level soft Q-learning with this β (its temperature and KL weight)",
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    transformers.utils.logging.set_verbosity_error()
    config = DemoConfig(
        iterations=args.iterations, batch=args.batch, new_tokens=args.new_tokens, ppo_epochs=args.ppo_epochs
    )

    reference, tokenizer = load_causal_lm(args.model, device=args.device)
    device = reference.device
    train_prompts, eval_prompts = split_prompts(
        load_prompts(DEFAULT_PROMPTS_FILE), config.eval_prompts, args.seed
    )
    with tempfile.TemporaryDirectory() as work:
        if args.reward_model is None:
            reward_model = fit_vader_reward_model(
                args.model, reference, tokenizer, train_prompts, config, args.seed, Path(work)
            )
        else:
            reward_model = HFRewardModel(args.reward_model, device=device)
    oracle = VaderSentiment()

    def score(model):
        return evaluate_samples(
            model, reference, tokenizer, eval_prompts, oracle, reward_model, config.new_tokens, args.seed
        )

    before = score(reference)
    results = {}
    ours, wall = run_ours(reference, tokenizer, train_prompts, reward_model, config, device, args.seed)
    results["ours: PPO on TokenEnv"] = (score(ours), wall)
    if args.q_learning_beta is not None:
        q_model, wall = run_q_learning(
            reference, tokenizer, train_prompts, reward_model, config, device, args.seed, args.q_learning_beta
        )
        results["ours: token Q-learning"] = (score(q_model), wall)
    if importlib.util.find_spec("trl") is None:
        print("TRL is not installed (`pip install trl`): no TRL run. Rollout throughput against the")
        print("generate pipeline instead: python benchmarks/token_env.py --new-tokens", config.new_tokens)
    else:
        trl_model, wall = run_trl(
            reference, tokenizer, train_prompts, reward_model, config, device, args.seed, args.trl_beta
        )
        results["TRL RLOO"] = (score(trl_model), wall)

    episodes = config.iterations * config.batch
    print(
        f"\nmodel {args.model} on {device}; {episodes} completions of {config.new_tokens} tokens each; "
        f"{len(eval_prompts)} held-out prompts"
    )
    print(f"before: oracle {before.oracle:+.3f}  reward model {before.reward:+.3f}")
    gains = {}
    for name, (report, wall) in results.items():
        gain = report.oracle - before.oracle
        gains[name] = (gain, report.kl, wall)
        print(
            f"{name:24s} oracle gain {gain:+.3f}  reward-model gain {report.reward - before.reward:+.3f}  "
            f"KL {report.kl:.2f} nats"
        )
    if "TRL RLOO" in gains:
        (ours_gain, ours_kl, ours_wall), (trl_gain, trl_kl, trl_wall) = (
            gains["ours: PPO on TokenEnv"],
            gains["TRL RLOO"],
        )
        # The KL estimate (64 samples) can come out <= 0 for a policy close to π_pt: no ratio then.
        positive = min(ours_kl, trl_kl, trl_gain) > 0
        per_nat = (ours_gain / ours_kl) / (trl_gain / trl_kl) if positive else float("nan")
        gain_ratio = ours_gain / trl_gain if trl_gain else float("nan")
        print(
            f"ours/TRL: oracle gain {gain_ratio:.2f}, gain per nat of KL {per_nat:.2f}, "
            f"wall time {ours_wall / trl_wall:.2f} (goal: gain >= 1 at a similar KL, wall time < 1)"
        )


if __name__ == "__main__":
    sys.exit(main())
