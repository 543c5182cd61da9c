"""One process of the data-parallel token PPO test (tests/test_accelerate.py), run by ``accelerate
launch`` (or plainly, as one process). Trains on a tiny LM and writes this process's parameters and
KL history to ``<out>/rank<r>.pt``.

    python tests/accelerate_token_ppo_worker.py OUT NUM_ENVS_PER_PROCESS
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from tiny_lm import tiny_lm, tiny_tokenizer

from agents.distributed import AcceleratedTokenPPO
from rlhf_envs.envs.token import TokenVectorEnv

PROMPTS = ["the cat sat", "a good day makes", "love and joy", "in the beginning"]
N_STEPS, ROLLOUTS = 6, 4


def main(out: Path, num_envs: int) -> None:
    accelerator = Accelerator(cpu=True)  # gloo processes
    tokenizer = tiny_tokenizer()

    def low_ids_share(prompts: list[str], completions: list[str]) -> torch.Tensor:
        ids = tokenizer(completions)["input_ids"]
        return torch.tensor([sum(i < 30 for i in row) / max(len(row), 1) for row in ids], dtype=torch.float)

    env = TokenVectorEnv(
        num_envs,
        model=tiny_lm(tokenizer),
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=low_ids_share,
        max_new_tokens=N_STEPS,
        stop_at_eos=False,
        device=accelerator.device,
    )
    agent = AcceleratedTokenPPO(
        env,
        accelerator,
        n_steps=N_STEPS,
        batch_size=N_STEPS * num_envs,  # one minibatch per epoch: the same data as one process's
        n_epochs=2,
        learning_rate=1e-2,
        normalize_advantage=False,  # per process minibatch: the one statistic that differs
        kl_coef=0.2,
        kl_target=1.0,
        kl_horizon=100,  # β moves every rollout
    )
    agent.learn(N_STEPS * num_envs * ROLLOUTS, progress_bar=False)
    state = {name: tensor.detach().cpu() for name, tensor in agent.policy.state_dict().items()}
    history = [(stats.kl, stats.score, stats.kl_coef) for stats in agent.kl_penalty.history]
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state": state, "history": history}, out / f"rank{accelerator.process_index}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
