"""Best-of-n from π_pt on the demo's held-out prompts: the KL frontier that PPO's is compared against.

For each of the demo's held-out prompts (the same split and seed as ``rlhf-envs demo``), ``--samples``
continuations are sampled from the pretrained LM π_pt (temperature 1, as the demo samples) and scored
by the reward model r_φ and by the oracle (VADER). Best-of-n keeps, out of each group of n of a
prompt's continuations, the one r_φ scores highest; its oracle gain over π_pt's mean is the gain a
policy that picked per sample would reach. Its KL from π_pt is at most log n − (n − 1)/n (Stiennon et
al. 2020), so c = gain / √KL computed with that bound is a lower bound on best-of-n's c, the figure
the README compares PPO's settings by. The same with the oracle as the selector shows what r_φ's
errors cost.

    rlhf-envs demo                                       # writes rlhf_demo/reward_model, the run's r_φ
    python benchmarks/best_of_n.py --reward-model rlhf_demo/reward_model
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from record import write_result

from rlhf_envs.device import resolve_device
from rlhf_envs.lm.assets import EMBEDDED_REWARD_MODEL_DIR, EVALUATIVE_PROMPTS_FILE, load_prompts
from rlhf_envs.lm.loading import load_causal_lm
from rlhf_envs.lm.reward_model import HFRewardModel
from rlhf_envs.pipeline import DemoConfig, evaluate_samples, split_prompts
from rlhf_envs.preferences.text_labelers import VaderSentiment


def best_of_n(selector: np.ndarray, oracle: np.ndarray, n: int) -> np.ndarray:
    """The oracle scores of the continuations that ``selector`` ranks first in each group of ``n``:
    both arrays are [samples, prompts]; the groups are consecutive samples of one prompt."""
    groups = selector.shape[0] // n
    selector = selector[: groups * n].reshape(n, groups, -1)
    oracle = oracle[: groups * n].reshape(n, groups, -1)
    return np.take_along_axis(oracle, selector.argmax(0)[None], 0)[0].ravel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embedded", help="'embedded', a Hugging Face id or a path")
    parser.add_argument("--reward-model", default=str(EMBEDDED_REWARD_MODEL_DIR), help="r_φ (id or path)")
    parser.add_argument("--samples", type=int, default=64, help="continuations per prompt (the largest n)")
    parser.add_argument("--new-tokens", type=int, default=DemoConfig.new_tokens)
    parser.add_argument("--seed", type=int, default=0, help="the demo's --seed: its split and its sampling")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    torch.set_num_threads(1)

    device = resolve_device(args.device)
    reference, tokenizer = load_causal_lm(args.model, device=device)
    _, prompts = split_prompts(load_prompts(EVALUATIVE_PROMPTS_FILE), DemoConfig.eval_prompts, args.seed)
    reward_model = HFRewardModel(args.reward_model, device=device)
    scored: list[torch.Tensor] = []  # r_φ of every continuation, as evaluate_samples scores them

    def recording_reward_model(prompts: list[str], completions: list[str]) -> torch.Tensor:
        scored.append(reward_model(prompts, completions))
        return scored[-1]

    report = evaluate_samples(
        reference,
        reference,
        tokenizer,
        prompts,
        None,
        recording_reward_model,
        args.new_tokens,
        args.seed,
        args.samples,
    )
    shape = (args.samples, len(prompts))
    rewards = scored[0].cpu().numpy().reshape(shape)
    oracle = VaderSentiment()
    every_prompt = list(prompts) * args.samples
    oracle_scores = np.array([oracle(p, c) for p, c in zip(every_prompt, report.completions, strict=True)])
    oracle_scores = oracle_scores.reshape(shape)
    base = float(oracle_scores.mean())
    print(f"π_pt: oracle {base:+.3f} over {oracle_scores.size} continuations ({len(prompts)} prompts)")

    rows = []
    n = 1
    while n <= args.samples:
        kl_bound = math.log(n) - (n - 1) / n
        row = {"n": n, "kl_bound": kl_bound}
        for name, selector in (("by_reward_model", rewards), ("by_oracle", oracle_scores)):
            picked = best_of_n(selector, oracle_scores, n)
            gain = float(picked.mean()) - base
            row[name] = {
                "oracle": float(picked.mean()),
                "gain": gain,
                "oracle_se": float(picked.std(ddof=1) / math.sqrt(picked.size)),
                "c_lower_bound": gain / math.sqrt(kl_bound) if n > 1 else None,
            }
        rows.append(row)
        by_rm, by_oracle = row["by_reward_model"], row["by_oracle"]
        c = "" if n == 1 else f", c ≥ {by_rm['c_lower_bound']:.2f}"
        print(
            f"best of {n:3d}: KL ≤ {kl_bound:.2f} nats; picked by r_φ: oracle gain {by_rm['gain']:+.3f} "
            f"± {by_rm['oracle_se']:.3f}{c}; picked by the oracle: {by_oracle['gain']:+.3f}"
        )
        n *= 2
    figures = {
        "model": args.model,
        "reward_model": args.reward_model,
        "prompts": len(prompts),
        "samples_per_prompt": args.samples,
        "new_tokens": args.new_tokens,
        "seed": args.seed,
        "base_oracle": base,
        "best_of_n": rows,
    }
    notes = (
        "Best-of-n from the pretrained LM on the demo's held-out prompts; KL is the bound log n - (n-1)/n, "
        "so c = gain / sqrt(KL) is a lower bound."
    )
    print(f"results: {write_result('best_of_n', figures, notes=notes, device=device)}")


if __name__ == "__main__":
    main()
