"""TokenVectorEnv rollouts against the usual RLHF sampling pipeline without an env.

(A) RL rollout, as the token agents run it: the policy (:class:`agents.TokenActorCritic`, a copy of
    the reference model, its own window KV cache) samples each token and steps
    ``TokenVectorEnv(as_tensors=True)``, which scores the reference log-probs (deferred to one pass
    per finished episode, ``reference_scoring="episode_end"``) and, at the end, the reward model.
(B) Anchor: ``model.generate`` for the same batch and length, then one forward pass of the
    reference model over the whole sequences for log-probs, then the reward model.

Same model, batch, prompts and lengths (exactly ``--new-tokens`` tokens, no early EOS), in one run,
interleaved; the best of ``--repeats`` timed runs of each counts. Prints tokens/s and A/B (goal >= 0.95).

    python benchmarks/token_env.py [--model embedded|gpt2-small] [--batch 32] [--threads 1]
    python benchmarks/token_env.py --suite    # the issue's four settings -> results/token_env.json

``gpt2-small`` is a GPT-2-small-size model (12 layers x 768) with random weights built from a config
and the embedded tokenizer (no download). The machine is shared: repeat runs vary by ~10%.
"""

from __future__ import annotations

import argparse
import time

import torch
from record import write_result
from transformers import AutoModelForSequenceClassification, GPT2Config, GPT2LMHeadModel

from agents.token_policy import PackedTokenObservations, TokenActorCritic
from rlhf_envs.envs.token import TokenEnvConfig, TokenVectorEnv
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, EMBEDDED_REWARD_MODEL_DIR, load_prompts
from rlhf_envs.lm.loading import load_causal_lm, resolve_model_path
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.lm.tokens import position_ids, token_logprobs, tokenizer_sides

#: The issue's settings: (model, batch), each at 1 and 2 threads, 48 new tokens.
SUITE = (("embedded", 32), ("gpt2-small", 16))


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
    if name != "gpt2-small":
        return load_causal_lm(name, device=device)
    _, tokenizer = load_causal_lm("embedded", device=device)
    torch.manual_seed(0)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_layer=12,
        n_embd=768,
        n_head=12,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    model = GPT2LMHeadModel(config).eval().to(device if device != "auto" else "cpu")
    return load_causal_lm(model, tokenizer, device=device)


def measure(args: argparse.Namespace, model_name: str, batch: int, threads: int) -> dict[str, float]:
    """Best tokens/s of (A) and (B) over ``args.repeats`` interleaved runs, and A/B."""
    torch.set_num_threads(threads)
    reference, tokenizer = load_reference(model_name, args.device)
    policy = TokenActorCritic(reference, tokenizer).to(reference.device)
    if args.reward_model is None and (EMBEDDED_REWARD_MODEL_DIR / "config.json").is_file():
        reward_model = HFRewardModel(EMBEDDED_REWARD_MODEL_DIR, device=reference.device)
    else:
        path = args.reward_model or resolve_model_path(model_name)
        classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        reward_model = HFRewardModel(classifier, tokenizer, device=reference.device)
    prompts = load_prompts(args.prompts)
    generator = torch.Generator().manual_seed(0)
    batch_prompts = [
        prompts[i] for i in torch.randint(len(prompts), (batch * args.episodes,), generator=generator)
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
    env = PackedTokenObservations(TokenVectorEnv(batch, config, as_tensors=True, autoreset_mode="same_step"))
    policy.follow(env)  # as the token agents do: restarts read from the env's host flags

    def timed(run) -> float:
        start = time.perf_counter()
        tokens = run()
        if reference.device.type == "cuda":
            torch.cuda.synchronize()
        return tokens / (time.perf_counter() - start)

    def run_a() -> float:
        return timed(lambda: rollout_through_env(env, policy, args.episodes))

    def run_b() -> float:
        policy_model = policy.model
        return timed(
            lambda: generate_pipeline(
                policy_model,
                reference,
                tokenizer,
                reward_model,
                batch_prompts,
                args.new_tokens,
                args.episodes,
            )
        )

    run_a(), run_b()  # warm-up
    rates_a, rates_b = [], []
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        rates_a.append(run_a())
        rates_b.append(run_b())
    best_a, best_b = max(rates_a), max(rates_b)
    print(
        f"{model_name:10s} batch {batch:3d} threads {threads} on {reference.device}: "
        f"(A) env {best_a:8.0f} tok/s  (B) generate+ref+reward {best_b:8.0f} tok/s  "
        f"A/B = {best_a / best_b:.3f}",
        flush=True,
    )
    return {"a_tokens_per_s": best_a, "b_tokens_per_s": best_b, "ratio": best_a / best_b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="embedded, gpt2-small, or an HF id / folder")
    parser.add_argument(
        "--reward-model", default=None, help="default: the embedded one, else a head on --model"
    )
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS_FILE), help="text or JSONL file of prompts")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--episodes", type=int, default=2, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    parser.add_argument("--device", default="auto")
    # One thread by default: on a shared CPU a second thread makes every small op wait for a busy core.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch")
    parser.add_argument(
        "--suite", action="store_true", help="the issue's settings; writes results/token_env.json"
    )
    args = parser.parse_args()
    if not args.suite:
        measure(args, args.model, args.batch, args.threads)
        return
    figures = {
        f"{model}_batch{batch}_threads{threads}": measure(args, model, batch, threads)
        for model, batch in SUITE
        for threads in (1, 2)
    }
    path = write_result(
        "token_env",
        figures | {"new_tokens": args.new_tokens, "repeats": args.repeats, "episodes": args.episodes},
        notes="A/B of tokens/s, best of the repeats, A and B interleaved; the machine is shared with other "
        "jobs, so figures vary from run to run",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
