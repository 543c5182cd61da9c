"""RLHF on the demo's task: our PPO on the TokenEnv against TRL's RLOO and GRPO, at matched KL.

The task is ``rlhf-envs demo``'s: the embedded LM (or ``--model``), a reward model r_φ fitted to
synthetic VADER-sentiment preferences (or ``--reward-model``), the demo's prompts (or ``--prompts``),
some held out. Every trainer gets
the same number of sampled completions (``--iterations`` × ``--batch``) of ``--new-tokens`` tokens,
sampled as each trains: temperature 1 from the full vocabulary (TRL's ``top_k=0, top_p=1``), and
one gradient pass over each batch (TRL's ``num_iterations=1``, our ``--ppo-epochs 1``). TRL runs in
float32 without gradient checkpointing, as ours (TRL's defaults, bf16 autocast and checkpointing,
are for big models on GPUs and cost time here).

How a trained policy π is measured, the same for every method: ``--samples`` continuations of each
held-out prompt, sampled from π with its training settings; the oracle (VADER) and r_φ score them;
KL(π ‖ π_pt) is exact per token, Σ_v π(v|s) (log π(v|s) − log π_pt(v|s)) from both full
distributions at every sampled prefix s, summed over the continuation (through its EOS). That sum
is never negative. (A one-sample estimate Σ log π(t) − log π_pt(t) is, per continuation, and its
mean over few continuations can be: ``k1_kl`` in the JSON shows it beside the exact one.)

Protocol (the same tuning budget for each method):

1. each TRL method trains once per pair of ``--learning-rates`` × ``--trl-betas``; its best run
   (oracle gain) fixes its KL;
2. ours trains per learning rate (``--our-learning-rates``, by default TRL's) with a fixed KL weight
   β, searched until the exact KLs agree within 10% (at most ``--match-attempts`` runs: from
   ``--beta``, then β × KL_ours / KL_TRL, then the secant of log KL over log β); the best matched
   run counts. (An adaptive controller's target does not
   calibrate a short run: its β moves at most 20% per horizon, whatever the target.)
3. the matched pair trains ``--timing-repeats`` times more, alternately (TRL's, then ours), timed only
   (the same seed trains the same policy); the time ratios are of the least times of each, as
   timings on a shared machine err only upward.

Printed: a table (method, KL, oracle and reward-model gains, each ± the standard error of the
policy's held-out mean, wall and CPU time of the training) and, per TRL method, ours against it at
matched KL (goals: oracle gain ≥ TRL's, wall time ≤ 0.8 × TRL's; on a shared machine compare the CPU
times, as the runs meet different loads), with the difference of the oracle means ± its standard
error (a difference within two standard errors is noise). Every run's figures
go to ``WORK/runs.jsonl`` as it finishes, so a stopped benchmark continues where it stopped; the
table to ``benchmarks/results/rlhf_text.json``.

    python benchmarks/rlhf_text.py [--model embedded] [--iterations 60] [--batch 64] [--new-tokens 24]
        [--learning-rates 3e-5 1e-4] [--trl-betas 0.05] [--work runs/rlhf_text]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import transformers
from record import write_result
from transformers import GenerationConfig, PreTrainedModel, PrinterCallback

from agents.token_ppo import CRITICS
from rlhf_envs.lm.assets import EVALUATIVE_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.lm.tokens import position_ids, tokenizer_sides
from rlhf_envs.pipeline import DemoConfig, collect_labels, fit_reward_model, make_token_ppo, split_prompts
from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.preferences.text_labelers import SyntheticTextLabeler, VaderSentiment

TRL_METHODS = ("rloo", "grpo")
#: Completions per prompt in TRL's groups (RLOO's leave-one-out baseline, GRPO's group statistics).
NUM_GENERATIONS = 4
#: Matched KL: the exact KLs of two runs agree within this fraction.
KL_TOLERANCE = 0.10


@dataclass
class Evaluation:
    """A policy's held-out figures: means over the sampled continuations."""

    oracle: float
    reward: float
    kl: float  # exact Σ_n KL(π(·|s_n) ‖ π_pt(·|s_n)) per continuation
    k1_kl: float  # the one-sample estimate Σ_n log π(t_n|s_n) − log π_pt(t_n|s_n)
    oracle_se: float  # standard error of ``oracle`` (std over continuations / √count)
    reward_se: float


class Stopwatch:
    """Wall and CPU seconds (this process, all threads) of a ``with`` block. On a shared machine the
    CPU seconds are the fairer cost: runs made at different times meet different loads."""

    def __enter__(self) -> Stopwatch:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


@torch.no_grad()
def evaluate(
    model: PreTrainedModel,
    reference: PreTrainedModel,
    tokenizer,
    prompts: list[str],
    oracle,
    reward_model,
    args,
) -> Evaluation:
    """Sample ``args.samples`` continuations of each prompt from ``model`` at temperature 1 over the full
    vocabulary (every method's training setting) and score them (see the module docstring)."""
    torch.manual_seed(args.seed)
    sampling = GenerationConfig(  # explicit: a model's own generation config cannot change it
        do_sample=True,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        max_new_tokens=args.new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    eos = tokenizer.eos_token_id
    repeated = [prompt for prompt in prompts for _ in range(args.samples)]
    completions, kls, k1_kls = [], [], []
    with tokenizer_sides(tokenizer, padding="left"):
        for start in range(0, len(repeated), 64):
            encoded = tokenizer(repeated[start : start + 64], return_tensors="pt", padding=True).to(
                model.device
            )
            sequences = model.generate(**encoded, generation_config=sampling)
            width = encoded["input_ids"].shape[1]
            response = sequences[:, width:]
            # The continuation runs through its first EOS; what follows is padding.
            is_eos = (response == eos).long()
            response_mask = (is_eos.cumsum(-1) - is_eos) == 0
            mask = torch.cat([encoded["attention_mask"], response_mask.long()], dim=1)
            inputs = {"input_ids": sequences, "attention_mask": mask, "position_ids": position_ids(mask)}
            policy_logprobs, reference_logprobs = (
                lm(**inputs).logits[:, width - 1 : -1].float().log_softmax(-1) for lm in (model, reference)
            )
            per_token = (policy_logprobs.exp() * (policy_logprobs - reference_logprobs)).sum(-1)
            kls.append((per_token * response_mask).sum(-1))
            log_ratio = (policy_logprobs - reference_logprobs).gather(-1, response[..., None])[..., 0]
            k1_kls.append((log_ratio * response_mask).sum(-1))
            completions += tokenizer.batch_decode(response, skip_special_tokens=True)
    oracle_scores = np.array(
        [oracle(prompt, completion) for prompt, completion in zip(repeated, completions, strict=True)]
    )
    rewards = reward_model(repeated, completions).float().numpy(force=True)
    return Evaluation(
        oracle=float(oracle_scores.mean()),
        reward=float(rewards.mean()),
        kl=float(torch.cat(kls).mean()),
        k1_kl=float(torch.cat(k1_kls).mean()),
        oracle_se=standard_error(oracle_scores),
        reward_se=standard_error(rewards),
    )


def standard_error(values: np.ndarray) -> float:
    """The standard error of the mean of ``values``."""
    return float(values.std(ddof=1) / np.sqrt(len(values)))


def train_ours(reference, tokenizer, prompts, reward_model, config: DemoConfig, seed: int):
    """``rlhf-envs demo``'s PPO + adaptive KL on the TokenEnv (deferred reference scoring)."""
    agent = make_token_ppo(reference, tokenizer, prompts, reward_model, config, reference.device, seed)
    with Stopwatch() as clock:
        agent.learn(config.iterations * config.batch * config.new_tokens, progress_bar=False)
    return agent.policy.model, clock


def train_trl(
    method: str, reference, tokenizer, prompts, reward_model, config: DemoConfig, beta: float, seed: int
):
    """TRL's RLOO or GRPO with the same completions budget, length, sampling and learning rate."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer, RLOOConfig, RLOOTrainer

    config_class, trainer_class = {"rloo": (RLOOConfig, RLOOTrainer), "grpo": (GRPOConfig, GRPOTrainer)}[
        method
    ]

    def reward(prompts: list[str], completions: list[str], **_: object) -> list[float]:
        return reward_model(list(prompts), list(completions)).tolist()

    with tempfile.TemporaryDirectory() as output_dir:
        args = config_class(
            output_dir=output_dir,
            per_device_train_batch_size=config.batch,
            num_generations=NUM_GENERATIONS,
            max_completion_length=config.new_tokens,
            max_steps=config.iterations,
            learning_rate=config.learning_rate,
            beta=beta,
            temperature=1.0,
            top_k=0,
            top_p=1.0,
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=reference.device.type == "cpu",
            report_to="none",
            save_strategy="no",
            logging_steps=max(1, config.iterations // 4),
            seed=seed,
            disable_tqdm=True,
        )
        trainer = trainer_class(
            model=copy.deepcopy(reference),
            reward_funcs=reward,
            args=args,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)  # its per-step log lines; the benchmark prints its own
        with Stopwatch() as clock:
            trainer.train()
        return trainer.model.eval(), clock


class RunLog:
    """Each finished run's figures, one JSON line each in ``path``: a rerun skips what is done."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.runs: dict[str, dict] = {}
        if path.is_file():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                self.runs[record["key"]] = record

    def get_or_run(self, key: str, run) -> dict:
        if key not in self.runs:
            record = {"key": key, **run()}
            with self.path.open("a") as file:
                file.write(json.dumps(record) + "\n")
                file.flush()
            self.runs[key] = record
        return self.runs[key]


def fitted_reward_model(args, reference, tokenizer, prompts: list[str], config: DemoConfig, work: Path):
    """The demo's steps 1–3 (sample pairs, label them with the VADER labeler, fit r_φ), kept in ``work``."""
    if args.reward_model is not None:
        return HFRewardModel(args.reward_model, device=reference.device)
    folder = work / "reward_model"
    if not (folder / "config.json").is_file():
        store = TextPreferenceStore(work / "preferences.jsonl", repair=True)
        labeler = SyntheticTextLabeler(VaderSentiment(), beta=config.labeler_beta, seed=args.seed)
        collect_labels(store, labeler, reference, tokenizer, prompts, config, args.seed)
        fit = fit_reward_model(
            args.model, tokenizer, store, config, args.seed, reference.device, save_to=folder
        )
        print(f"reward model: held-out accuracy {fit.metrics['eval_accuracy']:.1%}", flush=True)
    return HFRewardModel(folder, device=reference.device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    defaults = DemoConfig()
    parser.add_argument("--model", default="embedded")
    parser.add_argument(
        "--prompts",
        type=Path,
        default=EVALUATIVE_PROMPTS_FILE,
        help="the task's prompts (default: the demo's)",
    )
    parser.add_argument(
        "--reward-model", default=None, help="a trained reward model; default: fit the demo's"
    )
    parser.add_argument("--iterations", type=int, default=defaults.iterations)
    parser.add_argument("--batch", type=int, default=defaults.batch)
    parser.add_argument("--new-tokens", type=int, default=defaults.new_tokens)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[3e-5, 1e-4])
    parser.add_argument(
        "--our-learning-rates", type=float, nargs="+", help="ours' (default: --learning-rates, TRL's)"
    )
    parser.add_argument("--trl-betas", type=float, nargs="+", default=[0.05], help="RLOO's and GRPO's KL β")
    parser.add_argument("--trl-methods", nargs="+", default=list(TRL_METHODS), choices=TRL_METHODS)
    parser.add_argument(
        "--match-attempts", type=int, default=4, help="our runs per learning rate to match KL"
    )
    parser.add_argument("--beta", type=float, default=0.5, help="our first KL weight of the search")
    parser.add_argument("--ppo-epochs", type=int, default=1, help="our PPO's passes over each rollout")
    # Pinned to the demo's settings of 905215d, which the demo's later budgets need not keep.
    parser.add_argument("--ppo-batch-size", type=int, default=384, help="our PPO's tokens per minibatch")
    # TRL's RLOO and GRPO add no entropy bonus; the demo's 0.01 is its own choice.
    parser.add_argument("--entropy-coef", type=float, default=0.0, help="our PPO's entropy bonus")
    # The critic measured so far; the demo's reward-model critic (DemoConfig.critic) is its own choice.
    parser.add_argument("--critic", default="value_head", choices=CRITICS, help="our PPO's V(s)")
    parser.add_argument(
        "--extra-actions", type=int, default=0, help="with the r_φ critic: tokens more per state in our loss"
    )
    parser.add_argument("--eval-prompts", type=int, default=64, help="prompts held out for evaluation")
    parser.add_argument("--samples", type=int, default=4, help="continuations per held-out prompt")
    parser.add_argument("--work", type=Path, default=Path("runs/rlhf_text"), help="labels, r_φ, runs.jsonl")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--timing-repeats", type=int, default=2, help="trainings more of each matched pair, timed only"
    )
    parser.add_argument("--beside", default="", help="what else ran on the machine (goes to the JSON)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.utils.logging.set_verbosity_error()
    config = DemoConfig(
        iterations=args.iterations,
        batch=args.batch,
        new_tokens=args.new_tokens,
        ppo_epochs=args.ppo_epochs,
        ppo_batch_size=args.ppo_batch_size,
        entropy_coef=args.entropy_coef,
        critic=args.critic,
        extra_actions=args.extra_actions,
        eval_prompts=args.eval_prompts,
    )
    args.work.mkdir(parents=True, exist_ok=True)

    reference, tokenizer = load_causal_lm(args.model, device=args.device)
    train_prompts, eval_prompts = split_prompts(load_prompts(args.prompts), config.eval_prompts, args.seed)
    reward_model = fitted_reward_model(args, reference, tokenizer, train_prompts, config, args.work)
    oracle = VaderSentiment()
    # The task and budget every run of the log shares (a rerun with other settings starts new runs).
    budget = (
        f"{args.model}|{args.prompts.name}|rm:{args.reward_model or 'fitted'}|i{args.iterations}"
        f"|b{args.batch}|n{args.new_tokens}|s{args.samples}|seed{args.seed}"
    )
    log = RunLog(args.work / "runs.jsonl")

    def train(method: str, learning_rate: float, beta: float):
        """One training run (``beta``: TRL's or our KL weight): the trained model and its clock."""
        run_config = dataclasses.replace(config, learning_rate=learning_rate)
        if method == "ours":
            run_config = dataclasses.replace(run_config, kl_coef=beta, kl_target=None)
            return train_ours(reference, tokenizer, train_prompts, reward_model, run_config, args.seed)
        return train_trl(
            method, reference, tokenizer, train_prompts, reward_model, run_config, beta, args.seed
        )

    def run_key(method: str, learning_rate: float, beta: float) -> str:
        ppo = f"|epochs{args.ppo_epochs}|mb{args.ppo_batch_size}" if method == "ours" else ""
        if method == "ours" and args.entropy_coef:
            ppo += f"|ent{args.entropy_coef:g}"
        if method == "ours" and args.critic != "value_head":
            ppo += f"|critic:{args.critic}"
        if method == "ours" and args.extra_actions:
            ppo += f"|extra{args.extra_actions}"
        return f"{budget}|{method}|lr{learning_rate:g}|beta{beta:g}{ppo}"

    def measured(method: str, learning_rate: float, beta: float) -> dict:
        """One training run and its held-out figures (from the log when it is there)."""

        def run() -> dict:
            model, clock = train(method, learning_rate, beta)
            figures = evaluate(model, reference, tokenizer, eval_prompts, oracle, reward_model, args)
            print(f"{method} lr {learning_rate:g} β {beta:g}: {figures} in {clock.wall:.0f} s", flush=True)
            run_info = {"method": method, "learning_rate": learning_rate, "beta": beta}
            if method == "ours":
                run_info |= {
                    "ppo_epochs": args.ppo_epochs,
                    "ppo_batch_size": args.ppo_batch_size,
                    "entropy_coef": args.entropy_coef,
                }
            run_info |= {"wall_s": clock.wall, "cpu_s": clock.cpu}
            return run_info | dataclasses.asdict(figures)

        return log.get_or_run(run_key(method, learning_rate, beta), run)

    def retimed(run: dict, repeat: int) -> dict:
        """``run``'s training once more, timed only (the same seed trains the same policy)."""

        def timing() -> dict:
            _, clock = train(run["method"], run["learning_rate"], run["beta"])
            print(f"{run['method']} lr {run['learning_rate']:g} β {run['beta']:g} again: {clock.wall:.0f} s")
            return {"wall_s": clock.wall, "cpu_s": clock.cpu}

        return log.get_or_run(
            f"{run_key(run['method'], run['learning_rate'], run['beta'])}|timing{repeat}", timing
        )

    before = log.get_or_run(
        f"{budget}|reference",
        lambda: dataclasses.asdict(
            evaluate(reference, reference, tokenizer, eval_prompts, oracle, reward_model, args)
        ),
    )
    rows, comparisons = [], {}
    for method in args.trl_methods:
        trl_runs = [
            measured(method, learning_rate, beta)
            for learning_rate in args.learning_rates
            for beta in args.trl_betas
        ]
        trl_best = max(trl_runs, key=lambda run: run["oracle"])
        matched = []
        for learning_rate in args.our_learning_rates or args.learning_rates:
            tried: list[tuple[float, float]] = []  # (β, KL)
            beta = args.beta
            for _ in range(args.match_attempts):
                ours = measured("ours", learning_rate, beta)
                if abs(ours["kl"] / trl_best["kl"] - 1) <= KL_TOLERANCE:
                    matched.append(ours)
                    break
                tried.append((beta, ours["kl"]))
                beta = next_beta(tried, trl_best["kl"])
        ours_best = max(matched, key=lambda run: run["oracle"]) if matched else None
        rows += [trl_best] + ([ours_best] if ours_best else [])
        # The matched pair trained again, alternately, for its times: the least of each counts.
        trl_times, ours_times = [trl_best], [ours_best]
        for repeat in range(1, args.timing_repeats + 1 if ours_best else 1):
            trl_times.append(retimed(trl_best, repeat))
            ours_times.append(retimed(ours_best, repeat))
        comparisons[method] = {
            "trl": trl_best,
            "ours": ours_best,
            "trl_runs": len(trl_runs),
            "oracle_gain_ratio": None if ours_best is None else gain_ratio(ours_best, trl_best, before),
            # Ours − TRL's held-out oracle mean, and its standard error (independent samples).
            "oracle_difference": None if ours_best is None else ours_best["oracle"] - trl_best["oracle"],
            "oracle_difference_se": None
            if ours_best is None
            else float(np.hypot(ours_best["oracle_se"], trl_best["oracle_se"])),
            "trl_wall_s": [run["wall_s"] for run in trl_times],
            "trl_cpu_s": [run["cpu_s"] for run in trl_times],
            "ours_wall_s": None if ours_best is None else [run["wall_s"] for run in ours_times],
            "ours_cpu_s": None if ours_best is None else [run["cpu_s"] for run in ours_times],
            "wall_ratio": None
            if ours_best is None
            else least(ours_times, "wall_s") / least(trl_times, "wall_s"),
            "cpu_ratio": None
            if ours_best is None
            else least(ours_times, "cpu_s") / least(trl_times, "cpu_s"),
        }

    print(
        f"\nmodel {args.model} on {reference.device}; {config.iterations * config.batch} completions of "
        f"{config.new_tokens} tokens to train; {len(eval_prompts)} held-out prompts x {args.samples}"
    )
    print(f"reference: oracle {before['oracle']:+.3f}  reward model {before['reward']:+.3f}")
    print(
        f"(± one standard error of the policy's held-out mean; the reference's is {before['oracle_se']:.3f})"
    )
    header = ("method", "lr", "β", "KL", "oracle gain", "r_φ gain", "wall s", "CPU s")
    print("{:8s} {:>7s} {:>8s} {:>6s} {:>15s} {:>15s} {:>7s} {:>7s}".format(*header))
    for row in rows:
        oracle_gain, reward_gain = row["oracle"] - before["oracle"], row["reward"] - before["reward"]
        print(
            f"{row['method']:8s} {row['learning_rate']:7.0e} {row['beta']:8.3g} {row['kl']:6.2f} "
            f"{oracle_gain:+8.3f} ± {row['oracle_se']:.3f} {reward_gain:+8.3f} ± {row['reward_se']:.3f} "
            f"{row['wall_s']:7.0f} {row['cpu_s']:7.0f}"
        )
    for method, comparison in comparisons.items():
        if comparison["ours"] is None:
            print(f"ours vs {method}: no run of ours matched its KL within {KL_TOLERANCE:.0%}")
            continue
        gains = comparison["oracle_gain_ratio"]
        print(
            f"ours vs {method} at KL {comparison['ours']['kl']:.2f} vs {comparison['trl']['kl']:.2f}: "
            f"oracle gain ratio {'n/a (TRL gained nothing)' if gains is None else f'{gains:.2f}'} "
            f"(goal >= 1; oracle difference {comparison['oracle_difference']:+.3f} ± "
            f"{comparison['oracle_difference_se']:.3f}), "
            f"wall time ratio {comparison['wall_ratio']:.2f} (goal <= 0.8), "
            f"CPU time ratio {comparison['cpu_ratio']:.2f} "
            f"(least times of {len(comparison['trl_cpu_s'])} runs each)"
        )
    path = write_result(
        "rlhf_text",
        {
            "model": args.model,
            "device": str(reference.device),
            "completions": config.iterations * config.batch,
            "new_tokens": config.new_tokens,
            "eval_continuations": len(eval_prompts) * args.samples,
            "prompts": str(args.prompts),
            "reward_model": str(args.reward_model or args.work / "reward_model"),
            "demo_config": dataclasses.asdict(config),  # ours: PPO's settings; kl_coef / kl_target per run
            "beside": args.beside,
            "reference": before,
            "comparisons": comparisons,
            "runs": [run for key, run in log.runs.items() if key.startswith(budget)],
        },
        notes="KL: exact per-token KL(π ‖ π_pt) from both full distributions on continuations sampled at "
        "temperature 1 (every method's training setting), summed per continuation; k1_kl is the one-sample "
        "log-ratio estimate on the same continuations. Wall time: training only, on the shared CPU.",
        device=reference.device,
    )
    print(f"wrote {path}")


def next_beta(tried: list[tuple[float, float]], kl: float) -> float:
    """The next β to try for an exact KL of ``kl``, from the (β, KL) pairs tried: the secant of log KL
    over log β through the last two, or KL ∝ 1/β from one (or when the two do not fall with β);
    a step changes β by a factor of 10 at most."""
    (beta, beta_kl), slope = tried[-1], -1.0
    if len(tried) > 1:
        (previous, previous_kl) = tried[-2]
        secant = (np.log(beta_kl) - np.log(previous_kl)) / (np.log(beta) - np.log(previous))
        slope = secant if secant < 0 else slope
    step = (np.log(kl) - np.log(max(beta_kl, 1e-6))) / slope
    return float(beta * np.exp(np.clip(step, -np.log(10), np.log(10))))


def least(runs: list[dict], field: str) -> float:
    """The least of ``runs``' times ``field``: on a shared machine, timings err only upward."""
    return min(run[field] for run in runs)


def gain_ratio(ours: dict, trl: dict, before: dict) -> float | None:
    """Our oracle gain over TRL's (None when TRL's is not positive: no meaningful ratio)."""
    trl_gain = trl["oracle"] - before["oracle"]
    return (ours["oracle"] - before["oracle"]) / trl_gain if trl_gain > 0 else None


if __name__ == "__main__":
    sys.exit(main())
