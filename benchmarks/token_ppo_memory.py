"""Peak memory of the TokenEnv + token PPO at GPT-2-small size: a full-copy policy against LoRA.

Each design runs in its own process (peak RSS is per process): a GPT-2-small-size model (12 layers ×
768, random weights from a config, the embedded tokenizer: no download) is the env's reference; PPO
trains a full copy of it, or rank-r LoRA adapters on its own weights (one copy of the LM). A short
run: two rollouts and updates. Peak RSS on the CPU, ``torch.cuda.max_memory_allocated`` on a GPU.
Goal: LoRA ≤ 0.6 × full copy. Writes ``benchmarks/results/token_ppo_memory.json``.

    python benchmarks/token_ppo_memory.py [--device cpu] [--lora-rank 8]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch

DESIGNS = ("full", "lora")


def measure(design: str, args: argparse.Namespace) -> dict[str, float]:
    """Run the short PPO training of ``design`` in this process; its peak memory in MiB."""
    from gpt2_small import random_gpt2_small

    from agents import TokenPPO
    from rlhf_envs.envs.token import TokenVectorEnv

    torch.set_num_threads(args.threads)
    model, tokenizer = random_gpt2_small(args.device)

    def length_reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
        return torch.tensor([float(len(text)) for text in completions])

    env = TokenVectorEnv(
        args.batch,
        model=model,
        tokenizer=tokenizer,
        reward_model=length_reward,
        max_new_tokens=args.new_tokens,
        stop_at_eos=False,
        device=args.device,
        max_prompt_tokens=64,
    )
    lora = {"lora_rank": args.lora_rank} if design == "lora" else {}
    agent = TokenPPO(
        env,
        device=args.device,
        n_steps=args.new_tokens,
        batch_size=args.batch * args.new_tokens // 2,
        n_epochs=1,
        **lora,
    )
    agent.learn(2 * args.batch * args.new_tokens, progress_bar=False)
    trained = sum(p.numel() for p in agent.policy.parameters() if p.requires_grad)
    figures = {"peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.device(args.device).type == "cuda":
        figures["cuda_max_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return figures | {"trained_parameters": trained, "model_parameters": model.num_parameters()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--lora-rank", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--design", choices=DESIGNS, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.design is not None:
        print(json.dumps(measure(args.design, args)))
        return

    from record import write_result

    results = {}
    for design in DESIGNS:
        child = [sys.executable, __file__, *sys.argv[1:], "--design", design]
        output = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        results[design] = json.loads(output.strip().splitlines()[-1])
        print(f"{design:5s}: {results[design]}")
    key = "cuda_max_allocated_mib" if "cuda_max_allocated_mib" in results["full"] else "peak_rss_mib"
    ratio = results["lora"][key] / results["full"][key]
    print(f"LoRA / full copy ({key}) = {ratio:.3f} (goal <= 0.6)")
    path = write_result(
        "token_ppo_memory",
        {**results, "ratio": ratio, "measure": key},
        notes="peak RSS of the whole process (interpreter and libraries included) in both designs",
        device=args.device,
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
