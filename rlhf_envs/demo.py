"""``rlhf-envs demo``: the lecture's RLHF pipeline end to end, on the embedded language model by default.

1. sample pairs of continuations of prompts from the pretrained LM π_pt;
2. label them: a synthetic, Boltzmann-rational labeler whose hidden score is VADER's sentiment (the
   "oracle"), or a person in the terminal (``--human``);
3. fit a reward model r_φ to the labels (Bradley–Terry) and report its held-out accuracy;
4. fine-tune the LM with PPO on the TokenEnv, reward r_φ on the last token and a KL penalty
   against π_pt on every token, β set by the adaptive controller;
5. report the oracle score, r_φ's score and KL(π ‖ π_pt) before and after on held-out prompts, a
   table of before/after samples for the same prompts, plots of reward and KL over training, and
   save the fine-tuned model (a Hugging Face folder) to ``--out``.

The defaults fit in 10 minutes on a 2-core CPU; a GPU is used when present.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import transformers
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlhf_envs.device import resolve_device
from rlhf_envs.envs.token import TokenVectorEnv
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.preferences.reward_trainer import (
    RewardModelTrainer,
    RewardTrainerConfig,
    sample_continuation_pairs,
)
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import (
    SyntheticTextLabeler,
    TerminalTextLabeler,
    VaderSentiment,
    collect_text_preferences,
)
from rlhf_envs.rewards.text import HFRewardModel, TextRewardFn

if TYPE_CHECKING:
    from agents.ppo import PPO

__all__ = ["DemoConfig", "add_arguments", "evaluate_samples", "oracle_agreement", "run", "run_demo"]


@dataclass
class DemoConfig:
    """The demo's budget; the defaults fit 10 minutes on a 2-core CPU, ``quick()`` a few seconds."""

    pairs: int = 4000
    pair_tokens: int = 24
    labeler_beta: float = 10.0
    rm_epochs: int = 2
    rm_batch_size: int = 32
    rm_learning_rate: float = 2e-4
    batch: int = 64
    new_tokens: int = 24
    iterations: int = 60
    ppo_epochs: int = 2
    ppo_batch_size: int = 384
    learning_rate: float = 1e-4
    kl_coef: float = 0.1
    kl_target: float | None = 6.0
    kl_horizon: int = 5_000
    eval_prompts: int = 64
    table_rows: int = 6

    @classmethod
    def quick(cls) -> DemoConfig:
        return cls(
            pairs=16,
            pair_tokens=8,
            rm_epochs=1,
            rm_batch_size=8,
            batch=8,
            new_tokens=8,
            iterations=2,
            ppo_epochs=1,
            ppo_batch_size=64,
            eval_prompts=8,
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
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    def reward_trainer_config(self, seed: int, device: torch.device) -> RewardTrainerConfig:
        """The reward model's training settings of this budget."""
        return RewardTrainerConfig(
            learning_rate=self.rm_learning_rate,
            num_epochs=self.rm_epochs,
            batch_size=self.rm_batch_size,
            seed=seed,
            device=str(device),
        )


@dataclass
class SampleReport:
    """Continuations of a set of prompts and what they score."""

    completions: list[str]
    oracle: float
    reward: float
    kl: float


@torch.no_grad()
def evaluate_samples(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    oracle: Callable[[str, str], float],
    reward_model: TextRewardFn,
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
    desc: str = "sampling",
) -> SampleReport:
    """Sample one continuation per prompt from ``model`` (temperature 1, as in training) and report
    the mean oracle score, mean reward-model score and the KL estimate E[Σ_n log π − log π_pt]."""
    torch.manual_seed(seed)
    completions, kls = [], []
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
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
            mask = torch.cat([encoded["attention_mask"], response_mask.long()], dim=1)
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            logprobs = []
            for lm in (model, reference):
                logits = lm(input_ids=sequences, attention_mask=mask, position_ids=positions).logits
                logits = logits[:, width - 1 : -1].float()
                logprobs.append(logits.gather(-1, response[..., None])[..., 0] - logits.logsumexp(-1))
            kls.append(((logprobs[0] - logprobs[1]) * response_mask).sum(-1))
            completions += tokenizer.batch_decode(response, skip_special_tokens=True)
    finally:
        tokenizer.padding_side = padding_side
    oracle_scores = [
        oracle(prompt, completion) for prompt, completion in zip(prompts, completions, strict=True)
    ]
    rewards = reward_model(prompts, completions)
    return SampleReport(
        completions=completions,
        oracle=float(np.mean(oracle_scores)),
        reward=float(rewards.float().mean()),
        kl=float(torch.cat(kls).mean()),
    )


def make_rlhf_ppo(
    reference: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    reward_model: TextRewardFn,
    config: DemoConfig,
    device: torch.device,
    seed: int,
) -> PPO:
    """PPO + KL on a ``TokenVectorEnv`` of ``config.batch`` episodes, one rollout per episode length."""
    from agents.ppo import PPO  # agents depend on rlhf_envs, not the reverse: imported when run

    env = TokenVectorEnv(
        config.batch,
        model=reference,
        tokenizer=tokenizer,
        prompts=prompts,
        reward_model=reward_model,
        max_new_tokens=config.new_tokens,
        device=device,
        as_tensors=True,
    )
    return PPO(
        env,
        device=device,
        seed=seed,
        n_steps=config.new_tokens,
        batch_size=config.ppo_batch_size,
        n_epochs=config.ppo_epochs,
        learning_rate=config.learning_rate,
        kl_coef=config.kl_coef,
        kl_target=config.kl_target,
        kl_horizon=config.kl_horizon,
    )


def oracle_agreement(reward_model: TextRewardFn, oracle: Callable[[str, str], float], pairs) -> float:
    """Share of ``pairs`` (prompt, chosen, rejected) that the oracle scores differently on which the
    reward model orders the two completions as the oracle does: its accuracy without label noise."""
    prompts, chosen, rejected = pairs["prompt"], pairs["chosen"], pairs["rejected"]
    oracle_diff = np.array(
        [oracle(p, a) - oracle(p, b) for p, a, b in zip(prompts, chosen, rejected, strict=True)]
    )
    model_diff = (reward_model(prompts, chosen) - reward_model(prompts, rejected)).cpu().numpy()
    separated = oracle_diff != 0
    if not separated.any():
        return float("nan")
    return float(np.mean((model_diff > 0)[separated] == (oracle_diff > 0)[separated]))


class RecordingRewardModel:
    """The reward model the env calls, also scoring each finished episode with the oracle (for the plots)."""

    def __init__(self, reward_model: TextRewardFn, oracle: Callable[[str, str], float]) -> None:
        self.reward_model, self.oracle = reward_model, oracle
        #: The index of the rollout in progress (set to read the agent's count once there is an agent).
        self.rollout_index: Callable[[], int] = lambda: 0
        self.records: list[tuple[int, float, float]] = []  # (rollout, r_φ, oracle) per episode

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        scores = self.reward_model(prompts, completions)
        for prompt, completion, score in zip(prompts, completions, scores.tolist(), strict=True):
            self.records.append((self.rollout_index(), score, self.oracle(prompt, completion)))
        return scores

    def per_rollout(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        records = np.array(self.records).reshape(-1, 3)
        rollouts = np.unique(records[:, 0])
        means = np.array([records[records[:, 0] == r, 1:].mean(0) for r in rollouts]).reshape(-1, 2)
        return rollouts, means[:, 0], means[:, 1]


def _shorten(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _save_plots(out: Path, recorder: RecordingRewardModel, history: list, rollout_size: int) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rollouts, rewards, oracles = recorder.per_rollout()
    steps = (rollouts + 1) * rollout_size
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, rewards, label="reward model r_φ")
    ax.plot(steps, oracles, label="oracle (VADER)")
    ax.set(xlabel="env steps (tokens)", ylabel="mean score of finished episodes", title="Reward over PPO")
    ax.legend()
    fig.tight_layout()
    reward_path = out / "reward.png"
    fig.savefig(reward_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    kl_steps = (np.arange(len(history)) + 1) * rollout_size
    ax.plot(kl_steps, [stats.kl for stats in history], label="KL(π ‖ π_pt) per episode")
    ax.set(xlabel="env steps (tokens)", ylabel="nats", title="KL over PPO")
    beta_axis = ax.twinx()
    beta_axis.plot(kl_steps, [stats.kl_coef for stats in history], color="tab:red", label="β")
    beta_axis.set_ylabel("β", color="tab:red")
    ax.legend(loc="upper left")
    fig.tight_layout()
    kl_path = out / "kl.png"
    fig.savefig(kl_path, dpi=100)
    plt.close(fig)
    return [reward_path, kl_path]


def run_demo(
    model: str = "embedded",
    reward_model: str | None = None,
    out: str | Path = "rlhf_demo",
    config: DemoConfig | None = None,
    human: bool = False,
    prompts: str | Path | None = None,
    device: str = "auto",
    seed: int = 0,
    console: Console | None = None,
) -> dict[str, object]:
    """Run the demo (see the module docstring); returns its figures, also saved to ``summary.json``."""
    config = config or DemoConfig()
    console = console or Console()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(device)
    timings: dict[str, float] = {}
    start = time.perf_counter()

    def lap(name: str) -> None:
        timings[name] = time.perf_counter() - start - sum(timings.values())

    reference, tokenizer = load_causal_lm(model, device=device)
    all_prompts = load_prompts(DEFAULT_PROMPTS_FILE if prompts is None else prompts)
    if len(all_prompts) < 2:
        raise ValueError(f"the demo needs at least 2 prompts (some are held out), got {len(all_prompts)}")
    order = np.random.default_rng(seed).permutation(len(all_prompts))
    held_out = min(config.eval_prompts, len(all_prompts) // 2)
    eval_prompts = [all_prompts[i] for i in order[:held_out]]
    train_prompts = [all_prompts[i] for i in order[held_out:]]
    console.rule(f"[bold]RLHF demo[/]: model {model!r} on {device}")
    console.print(
        f"{len(train_prompts)} training prompts, {len(eval_prompts)} held-out prompts; "
        f"outputs in {out.resolve()}"
    )
    oracle = VaderSentiment()
    summary: dict[str, object] = {"model": model, "device": str(device), "config": vars(config).copy()}

    if reward_model is None:
        # (1) + (2): pairs of continuations, labelled; a label is on disk as soon as it is given.
        store = TextPreferenceStore(out / "preferences.jsonl")
        missing = config.pairs - len(store)
        if len(store):
            console.print(f"reusing {len(store)} labels from {store.path}")
        if missing > 0:
            pair_prompts, first, second = sample_continuation_pairs(
                reference,
                tokenizer,
                prompts=train_prompts,
                num_pairs=missing,
                max_new_tokens=config.pair_tokens,
                seed=seed + len(store),
                device=device,
            )
            lap("sample pairs")
            console.print(f"[1] sampled {missing} pairs of {config.pair_tokens}-token continuations")
            if human:
                labeler = TerminalTextLabeler()
            else:
                synthetic = SyntheticTextLabeler(oracle, beta=config.labeler_beta, seed=seed)
                bar = tqdm(total=missing, desc="labelling (synthetic, VADER)", leave=False)

                def labeler(prompt: str, a: str, b: str) -> float:
                    bar.update()
                    return synthetic(prompt, a, b)

            added = collect_text_preferences(store, labeler, pair_prompts, first, second)
            if not human:
                bar.close()
            who = "you" if human else f"the synthetic labeler (VADER, β={config.labeler_beta})"
            console.print(f"[2] {added} pairs labelled by {who} -> {store.path}")
            lap("label")
        # (3) the reward model: a scalar head on the LM's backbone, Bradley–Terry loss.
        rm_config = config.reward_trainer_config(seed, device)
        trainer = RewardModelTrainer(model, tokenizer, train_dataset=store.to_dataset(), config=rm_config)
        metrics = trainer.train()
        trainer.save(out / "reward_model", half=False)
        rm = HFRewardModel(trainer.model, tokenizer, device=device)
        agreement = oracle_agreement(rm, oracle, trainer.eval_dataset)
        console.print(
            f"[3] reward model: held-out accuracy [bold]{metrics['eval_accuracy']:.1%}[/] on "
            f"{len(trainer.eval_dataset)} labelled pairs (loss {metrics['eval_loss']:.3f}); agrees with the "
            f"oracle on {agreement:.1%} of those it tells apart -> {out / 'reward_model'}"
        )
        summary["reward_model"] = {
            "eval_accuracy": metrics["eval_accuracy"],
            "eval_loss": metrics["eval_loss"],
            "oracle_agreement": agreement,
        }
        lap("reward model")
    else:
        rm = HFRewardModel(reward_model, device=device)
        console.print(f"[1-3] using the reward model {reward_model!r}")
        summary["reward_model"] = {"name": reward_model}

    # (4) PPO with the KL penalty on the TokenEnv.
    before = evaluate_samples(
        reference, reference, tokenizer, eval_prompts, oracle, rm, config.new_tokens, seed, desc="before"
    )
    lap("evaluate before")
    recorder = RecordingRewardModel(rm, oracle)
    agent = make_rlhf_ppo(reference, tokenizer, train_prompts, recorder, config, device, seed)
    # The KL penalty's history grows by one per rollout: it numbers the rollouts for the plots.
    recorder.rollout_index = lambda: len(agent.kl_penalty.history)
    rollout_size = config.batch * config.new_tokens
    console.print(
        f"[4] PPO + KL: {config.iterations} iterations of {config.batch} episodes "
        f"× {config.new_tokens} tokens"
    )
    agent.learn(config.iterations * rollout_size)
    lap("PPO")

    # (5) before / after.
    after = evaluate_samples(
        agent.policy.model,
        reference,
        tokenizer,
        eval_prompts,
        oracle,
        rm,
        config.new_tokens,
        seed,
        desc="after",
    )
    lap("evaluate after")
    table = Table(title=f"Before / after PPO on {len(eval_prompts)} held-out prompts (means)")
    for column in ("", "before (π_pt)", "after (PPO)", "change"):
        table.add_column(column, justify="right" if column else "left")
    for name, key in (
        ("oracle score (VADER)", "oracle"),
        ("reward model r_φ", "reward"),
        ("KL(π ‖ π_pt), nats", "kl"),
    ):
        b, a = getattr(before, key), getattr(after, key)
        table.add_row(name, f"{b:+.3f}", f"{a:+.3f}", f"{a - b:+.3f}")
    console.print(table)
    samples = Table(title="Samples for the same prompts", show_lines=True)
    samples.add_column("prompt")
    samples.add_column("before")
    samples.add_column("after")
    for index in range(min(config.table_rows, len(eval_prompts))):
        samples.add_row(
            _shorten(eval_prompts[index], 40),
            _shorten(before.completions[index]),
            _shorten(after.completions[index]),
        )
    console.print(samples)

    plots = _save_plots(out, recorder, agent.kl_penalty.history, rollout_size)
    agent.save(out / "model")
    lap("report")
    total = time.perf_counter() - start
    console.print(
        f"[5] saved to {out}: plots {', '.join(p.name for p in plots)}, summary.json, the fine-tuned "
        "model in model/ (AutoModelForCausalLM.from_pretrained loads it)"
    )
    console.print(
        "time: "
        + ", ".join(f"{name} {seconds:.0f}s" for name, seconds in timings.items())
        + f"; total {total:.0f}s"
    )
    summary |= {
        "before": {key: getattr(before, key) for key in ("oracle", "reward", "kl")},
        "after": {key: getattr(after, key) for key in ("oracle", "reward", "kl")},
        "final_kl_coef": agent.kl_penalty.controller.value,
        "timings_s": timings,
        "total_s": total,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = DemoConfig()
    parser.add_argument(
        "--model", default="embedded", help="causal LM: 'embedded', a Hugging Face id or a path"
    )
    parser.add_argument(
        "--reward-model",
        default=None,
        help="a trained sequence-classification reward model (id or path): skips steps 1-3",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("rlhf_demo"), help="folder for labels, plots and models"
    )
    parser.add_argument("--human", action="store_true", help="label the pairs yourself in the terminal")
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds), for tests")
    parser.add_argument(
        "--prompts", default=None, help="text or JSONL file of prompts (default: the embedded LM's)"
    )
    parser.add_argument(
        "--pairs", type=int, default=None, help=f"pairs to label (default {defaults.pairs}, 20 with --human)"
    )
    parser.add_argument(
        "--iterations", type=int, default=None, help=f"PPO iterations (default {defaults.iterations})"
    )
    parser.add_argument(
        "--batch", type=int, default=None, help=f"episodes per PPO iteration (default {defaults.batch})"
    )
    parser.add_argument(
        "--new-tokens", type=int, default=None, help=f"tokens per episode (default {defaults.new_tokens})"
    )
    parser.add_argument(
        "--kl-target", type=float, default=defaults.kl_target, help="KL per episode the controller aims at"
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for torch")


def run(args: argparse.Namespace) -> int:
    torch.set_num_threads(max(1, args.threads))
    # The demo draws its own bars: transformers' weight-loading bars and load reports are noise here.
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    config = DemoConfig.quick() if args.quick else DemoConfig()
    config.kl_target = args.kl_target
    if args.pairs is not None or args.human:
        config.pairs = args.pairs if args.pairs is not None else 20
    for name in ("iterations", "batch", "new_tokens"):
        if getattr(args, name) is not None:
            setattr(config, name, getattr(args, name))
    config.__post_init__()
    run_demo(
        model=args.model,
        reward_model=args.reward_model,
        out=args.out,
        config=config,
        human=args.human,
        prompts=args.prompts,
        device=args.device,
        seed=args.seed,
        # Off a terminal (a log file, a pipe) rich would wrap at 80 columns: the sample table needs more.
        console=Console(width=None if sys.stdout.isatty() else 150),
    )
    return 0
