"""TokenVectorEnv rollouts against the usual RLHF sampling pipeline without an env.

(A) RL rollout, as the token agents run it: the policy (:class:`agents.TokenActorCritic`, a copy of
    the reference model, its own window KV cache) samples each token and steps
    ``TokenVectorEnv(as_tensors=True)``, which scores the reference log-probs (deferred to one pass
    per finished episode: ``reference_scoring="episode_end"``, the default with ``kl_coef=0``) and,
    at the end, the reward model.
(B) Anchor: ``model.generate`` for the same batch and length, then one forward pass of the
    reference model over the whole sequences for log-probs, then the reward model.

Same model, batch, prompts and lengths (exactly ``--new-tokens`` tokens, no early EOS), in one run.
The timed runs alternate A B B A A B ... (so that a change of the machine's load hits both alike);
the best of ``--repeats`` runs of each counts. Prints tokens/s and A/B (goal >= 0.95), and records
the load: the 1-minute load average and the CPU share each side got (CPU seconds of this process
per wall second: the thread count on an idle machine, less when other jobs take the cores), and
A/B per CPU second (tokens per CPU second of each side's best run): the cost, whatever the load.

    python benchmarks/token_env.py [--model embedded|gpt2-small] [--batch 32] [--threads 1]
    OMP_WAIT_POLICY=PASSIVE python benchmarks/token_env.py --suite [--suite-threads 1 2] [--suite-models ...]

``--suite`` measures the issue's four settings and writes each to ``results/token_env.json`` as it
is done (a later run of some of them replaces those and keeps the others). ``gpt2-small`` is a
GPT-2-small-size model (12 layers x 768) with random weights built from a config and the embedded
tokenizer (no download). On a loaded machine set ``OMP_WAIT_POLICY=PASSIVE``: two threads that spin
at every barrier while other jobs hold the cores run many times slower (both sides, but unevenly).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from datetime import datetime, timezone

import torch
from gpt2_small import random_gpt2_small
from record import result_path, write_result
from transformers import AutoModelForSequenceClassification

from agents.token_policy import PackedTokenObservations, TokenActorCritic, autocast
from rlhf_envs.device import resolve_device
from rlhf_envs.envs.token import TokenEnvConfig, TokenVectorEnv
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, EMBEDDED_REWARD_MODEL_DIR, load_prompts
from rlhf_envs.lm.loading import load_causal_lm, resolve_model_path
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.lm.tokens import position_ids, token_logprobs, tokenizer_sides

#: The issue's settings: (model, batch, batches of episodes per timed run), each at 1 and 2 threads,
#: 48 new tokens; a timed run of the GPT-2-small-size model takes ~25 s on one CPU thread.
SUITE = (("embedded", 32, 2), ("gpt2-small", 16, 1))


@torch.inference_mode()
def rollout_through_env(env: PackedTokenObservations, policy: TokenActorCritic, episodes: int) -> int:
    """(A): ``episodes`` batches of B episodes (each exactly N tokens); returns the generated tokens."""
    obs, _ = env.reset(seed=0)
    tokens = 0
    for _ in range(episodes * env.unwrapped.config.max_new_tokens):
        action, _, _ = policy.act(obs)
        obs, *_ = env.step(action)
        tokens += env.num_envs
    return tokens


@torch.inference_mode()
def generate_pipeline(
    policy, reference, tokenizer, reward_model, prompts, new_tokens: int, episodes: int
) -> int:
    """(B): generate, one reference forward pass for log-probs, reward model; returns generated tokens."""
    tokens = 0
    with tokenizer_sides(tokenizer, padding="left"):
        for episode in range(episodes):
            batch = prompts[episode * len(prompts) // episodes :][: len(prompts) // episodes]
            encoded = tokenizer(batch, return_tensors="pt", padding=True).to(policy.device)
            sequences = policy.generate(
                **encoded,
                do_sample=True,
                top_k=0,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )
            mask = torch.nn.functional.pad(encoded["attention_mask"], (0, new_tokens), value=1)
            positions = position_ids(mask)
            # The LM head only where a response token is predicted, as lean as (A)'s env.
            logits = reference(
                input_ids=sequences,
                attention_mask=mask,
                position_ids=positions,
                logits_to_keep=new_tokens + 1,
            ).logits
            response = sequences[:, -new_tokens:]
            ref_logprob = token_logprobs(logits[:, -new_tokens - 1 : -1].float(), response)
            completions = tokenizer.batch_decode(response, skip_special_tokens=True)
            scores = reward_model(batch, completions)
            torch.cuda.synchronize() if policy.device.type == "cuda" else (
                ref_logprob.sum() + scores.sum()
            ).item()
            tokens += response.numel()
    return tokens


def load_reference(name: str, device: str):
    """The reference LM and tokenizer: ``gpt2-small`` is GPT-2-small's shape with random weights."""
    return random_gpt2_small(device) if name == "gpt2-small" else load_causal_lm(name, device=device)


def measure(args: argparse.Namespace, model_name: str, batch: int, threads: int, episodes: int) -> dict:
    """Best tokens/s of (A) and (B) over ``args.repeats`` interleaved runs, A/B, and the load."""
    torch.set_num_threads(threads)
    reference, tokenizer = load_reference(model_name, args.device)
    # bf16: both sides' forward passes under bfloat16 autocast (the token agents' bf16 option).
    autocast_dtype = torch.bfloat16 if args.bf16 else None
    policy = TokenActorCritic(reference, tokenizer, autocast_dtype=autocast_dtype).to(reference.device)
    if args.reward_model is None and (EMBEDDED_REWARD_MODEL_DIR / "config.json").is_file():
        reward_model = HFRewardModel(EMBEDDED_REWARD_MODEL_DIR, device=reference.device)
    else:
        path = args.reward_model or resolve_model_path(model_name)
        classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        reward_model = HFRewardModel(classifier, tokenizer, device=reference.device)
    prompts = load_prompts(args.prompts)
    generator = torch.Generator().manual_seed(0)
    batch_prompts = [
        prompts[i] for i in torch.randint(len(prompts), (batch * episodes,), generator=generator)
    ]
    config = TokenEnvConfig(
        model=reference,
        tokenizer=tokenizer,
        prompts=batch_prompts,
        reward_model=reward_model,
        max_new_tokens=args.new_tokens,
        stop_at_eos=False,
        device=reference.device,
        reference_scoring="episode_end",
    )
    vector = TokenVectorEnv(batch, config, as_tensors=True, autoreset_mode="same_step")
    env = PackedTokenObservations(vector, autocast_dtype=autocast_dtype)
    policy.follow(env)  # as the token agents do: restarts read from the env's host flags

    def timed(run, dtype: torch.dtype | None = None) -> tuple[float, float]:
        """Tokens/s of ``run`` (under autocast to ``dtype``) and the CPU share it got (CPU s per wall s)."""
        wall, cpu = time.perf_counter(), time.process_time()
        with autocast(reference.device, dtype):
            tokens = run()
        if reference.device.type == "cuda":
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return tokens / wall, cpu / wall

    sides = {
        "a": lambda: timed(lambda: rollout_through_env(env, policy, episodes)),
        "b": lambda: timed(
            lambda: generate_pipeline(
                policy.model, reference, tokenizer, reward_model, batch_prompts, args.new_tokens, episodes
            ),
            autocast_dtype,
        ),
    }
    sides["a"](), sides["b"]()  # warm-up
    load_before = os.getloadavg()[0]
    runs: dict[str, list[tuple[float, float]]] = {"a": [], "b": []}
    for repeat in range(args.repeats):  # A B, B A, A B...: a drift in the load hits both sides alike
        for side in "ab" if repeat % 2 == 0 else "ba":
            runs[side].append(sides[side]())
    best = {side: max(results) for side, results in runs.items()}  # (tokens/s, its CPU share)
    ratio = best["a"][0] / best["b"][0]
    # Tokens per CPU second of the best runs: the cost, whatever share of the cores each run got.
    cpu_ratio = (best["a"][0] / best["a"][1]) / (best["b"][0] / best["b"][1])
    paired = [a[0] / b[0] for a, b in zip(runs["a"], runs["b"], strict=True)]
    print(
        f"{model_name:10s} batch {batch:3d} threads {threads} on {reference.device}: "
        f"(A) env {best['a'][0]:8.0f} tok/s  (B) generate+ref+reward {best['b'][0]:8.0f} tok/s  "
        f"A/B = {ratio:.3f} (paired runs: {', '.join(f'{r:.3f}' for r in paired)}; "
        f"CPU share A {best['a'][1]:.2f} B {best['b'][1]:.2f}; A/B per CPU second {cpu_ratio:.3f})",
        flush=True,
    )
    return {
        "a_tokens_per_s": best["a"][0],
        "b_tokens_per_s": best["b"][0],
        "ratio": ratio,
        "paired_ratios": paired,
        "median_paired_ratio": statistics.median(paired),
        "ratio_per_cpu_second": cpu_ratio,
        "a_cpu_share": best["a"][1],
        "b_cpu_share": best["b"][1],
        "load_average_1min": [load_before, os.getloadavg()[0]],
        # PASSIVE: a thread waiting at a barrier sleeps instead of spinning on a core others need.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "episodes_per_run": episodes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded, gpt2-small, or an HF id / folder")
    parser.add_argument(
        "--reward-model", default=None, help="default: the embedded one, else a head on --model"
    )
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS_FILE), help="text or JSONL file of prompts")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument(
        "--episodes", type=int, help="batches of episodes per timed run (default 2; the suite's: per model)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    parser.add_argument("--device", default="auto")
    # One thread by default: on a shared CPU a second thread makes every small op wait for a busy core.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument(
        "--suite", action="store_true", help="the issue's settings; writes results/token_env.json"
    )
    parser.add_argument(
        "--suite-threads", type=int, nargs="+", default=[1, 2], help="thread counts of the suite"
    )
    parser.add_argument(
        "--suite-models", nargs="+", default=[row[0] for row in SUITE], help="models of the suite"
    )
    parser.add_argument("--load-note", default="", help="what else ran on the machine (for the JSON)")
    parser.add_argument("--bf16", action="store_true", help="both sides under bfloat16 autocast (a GPU's)")
    args = parser.parse_args()
    if not args.suite:
        measure(args, args.model, args.batch, args.threads, args.episodes or 2)
        return
    # Each setting is written as soon as it is measured, beside the file's other settings: a suite run
    # in parts (the thread counts when the machine allows) keeps them all, each with its date and load.
    device = resolve_device(args.device)
    results = result_path("token_env", device)
    figures = json.loads(results.read_text())["figures"] if results.is_file() else {}
    for model, batch, episodes in (row for row in SUITE if row[0] in args.suite_models):
        for threads in args.suite_threads:
            # A GPU runs a batch in a fraction of a second: --episodes lengthens each timed run.
            setting = measure(args, model, batch, threads, args.episodes or episodes)
            setting |= {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            name = f"{model}_batch{batch}_threads{threads}{'_bf16' if args.bf16 else ''}"
            figures[name] = setting | {"load_note": args.load_note}
            path = write_result(
                "token_env",
                figures | {"new_tokens": args.new_tokens, "repeats": args.repeats},
                notes="A/B of tokens/s, best of the repeats of each side, A and B alternating (A B, B A, "
                "A B). The load: load_average_1min (before, after) and each best run's CPU share (CPU s "
                "per wall s; the thread count on an idle machine), and what else ran (load_note).",
                device=device,
            )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
