"""TokenVectorEnv rollouts against the usual RLHF sampling pipeline without an env.

(A) RL rollout: a policy LM (a copy of the reference model) samples with its own KV cache and feeds
    its tokens to ``TokenVectorEnv(as_tensors=True)``, which adds the reference log-probs (its own
    KV cache) and, at the end, the reward model's scores.
(B) Anchor: ``model.generate`` for the same batch and length, then one forward pass of the
    reference model over the whole sequences for log-probs, then the reward model.

Same model, batch, prompts and lengths (exactly ``--new-tokens`` tokens, no early EOS), in one run.
Prints tokens/s of each and the ratio A/B (goal: >= 0.9).

    python benchmarks/token_env.py [--model embedded] [--batch 64] [--new-tokens 48] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from transformers import AutoModelForSequenceClassification, DynamicCache

from rlhf_envs.envs.token import TokenVectorEnv
from rlhf_envs.lm.assets import DEFAULT_PROMPTS_FILE, EMBEDDED_REWARD_MODEL_DIR, load_prompts
from rlhf_envs.lm.loading import load_causal_lm, resolve_model_path
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.lm.tokens import position_ids, token_logprobs, tokenizer_sides


@torch.inference_mode()
def rollout_through_env(env: TokenVectorEnv, policy, new_tokens: int, episodes: int) -> int:
    """(A): ``episodes`` batches of B episodes; returns the number of generated tokens."""
    obs, _ = env.reset(seed=0)
    tokens = 0
    for _ in range(episodes):
        # All episodes start together: prefill the policy on the prompt columns of the observation.
        live = obs["attention_mask"].bool().any(0)
        ids, mask = obs["input_ids"][:, live], obs["attention_mask"][:, live].long()
        positions = position_ids(mask)
        cache = DynamicCache()
        # Only the last position's logits, as generate's prefill does.
        out = policy(
            input_ids=ids,
            attention_mask=mask,
            position_ids=positions,
            cache=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        next_position = positions[:, -1] + 1
        for _ in range(new_tokens):
            action = torch.multinomial(out.logits[:, -1].float().softmax(-1), 1)[:, 0]
            obs, reward, terminated, truncated, info = env.step(action)
            tokens += env.num_envs
            if bool(truncated[0]):
                break
            mask = torch.nn.functional.pad(mask, (0, 1), value=1)
            out = policy(
                input_ids=action[:, None],
                attention_mask=mask,
                position_ids=next_position[:, None],
                cache=out.cache,
                use_cache=True,
            )
            next_position += 1
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded")
    parser.add_argument(
        "--reward-model", default=None, help="default: the embedded one, else a head on --model"
    )
    parser.add_argument("--prompts", default=str(DEFAULT_PROMPTS_FILE), help="text or JSONL file of prompts")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--episodes", type=int, default=3, help="batches per timed run")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each; the best counts")
    parser.add_argument("--device", default="auto")
    # One thread by default: on a shared CPU a second thread makes every small op wait for a busy core.
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch (at most 2 here)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    reference, tokenizer = load_causal_lm(args.model, device=args.device)
    policy = copy.deepcopy(reference)
    if args.reward_model is None and (EMBEDDED_REWARD_MODEL_DIR / "config.json").is_file():
        reward_model = HFRewardModel(EMBEDDED_REWARD_MODEL_DIR, device=reference.device)
    else:
        path = args.reward_model or resolve_model_path(args.model)
        classifier = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
        reward_model = HFRewardModel(classifier, tokenizer, device=reference.device)
    prompts = load_prompts(args.prompts)
    generator = torch.Generator().manual_seed(0)
    batch_prompts = [
        prompts[i] for i in torch.randint(len(prompts), (args.batch * args.episodes,), generator=generator)
    ]
    env = TokenVectorEnv(
        args.batch,
        model=reference,
        tokenizer=tokenizer,
        prompts=batch_prompts,
        reward_model=reward_model,
        max_new_tokens=args.new_tokens,
        stop_at_eos=False,
        device=reference.device,
        as_tensors=True,
    )

    def timed(run) -> float:
        start = time.perf_counter()
        tokens = run()
        if reference.device.type == "cuda":
            torch.cuda.synchronize()
        return tokens / (time.perf_counter() - start)

    def run_a() -> float:
        return timed(lambda: rollout_through_env(env, policy, args.new_tokens, args.episodes))

    def run_b() -> float:
        return timed(
            lambda: generate_pipeline(
                policy, reference, tokenizer, reward_model, batch_prompts, args.new_tokens, args.episodes
            )
        )

    run_a(), run_b()  # warm-up
    rates_a, rates_b = [], []
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        rates_a.append(run_a())
        rates_b.append(run_b())
    best_a, best_b = max(rates_a), max(rates_b)
    print(f"model {args.model} on {reference.device}, batch {args.batch}, {args.new_tokens} new tokens")
    print(f"(A) TokenVectorEnv rollout      : {best_a:10.0f} tokens/s")
    print(f"(B) generate + ref pass + reward: {best_b:10.0f} tokens/s")
    print(f"A/B = {best_a / best_b:.3f} (goal >= 0.9)")


if __name__ == "__main__":
    main()
