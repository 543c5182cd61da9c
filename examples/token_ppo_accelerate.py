"""Token PPO on 1, 2 or 8 processes: the TokenEnv's episodes split over them, gradients averaged (DDP).

Each process steps ``--num-envs`` episodes of the embedded TokenEnv on its own device (its GPU, or
the CPU with gloo when there is none); the KL controller sees all processes' KL, and the main process
writes the logs, the checkpoint and the fine-tuned model.

    python examples/token_ppo_accelerate.py                                        # one process
    accelerate launch --multi_gpu --num_processes 2 examples/token_ppo_accelerate.py
    accelerate launch --multi_gpu --num_processes 8 examples/token_ppo_accelerate.py --lora-rank 16
"""

from __future__ import annotations

import argparse

import rlhf_envs  # noqa: F401 - registers the envs
from agents.distributed import AcceleratedTokenPPO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=4096, help="env steps of each process")
    parser.add_argument("--num-envs", type=int, default=32, help="episodes of each process")
    parser.add_argument("--lora-rank", type=int, default=None, help="LoRA adapters instead of a full copy")
    parser.add_argument("--logdir", default="runs/token_ppo_accelerate")
    parser.add_argument("--out", default="runs/token_ppo_accelerate/model")
    args = parser.parse_args()

    agent = AcceleratedTokenPPO(
        "rlhf_envs/TokenEnv-v0",
        num_envs=args.num_envs,
        batch_size=args.num_envs * 8,
        lora_rank=args.lora_rank,
        logdir=args.logdir,
        checkpoint_every=args.steps // 2,
    )
    agent.learn(args.steps)
    agent.save_pretrained(args.out)
    if agent.accelerator.is_main_process:
        history = agent.kl_penalty.history
        print(
            f"{agent.accelerator.num_processes} process(es): score {history[0].score:.3f} -> "
            f"{history[-1].score:.3f}, KL {history[-1].kl:.2f} nats, beta {history[-1].kl_coef:.4f}"
        )


if __name__ == "__main__":
    main()
