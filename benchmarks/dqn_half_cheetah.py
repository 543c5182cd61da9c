"""DQN with one Q-head per joint (action branching) on HalfCheetah, beside PPO's return.

DQN trains with ``rlhf-envs train``'s HalfCheetah row on gymnasium's forward reward
(``rlhf_envs/HalfCheetah-v0``, ``reward="forward"``), each of the 6 joints choosing among
``action_bins`` torques. It writes ``--logdir/checkpoint.pt`` every ``--checkpoint-every`` env
steps and, started again with the same ``--logdir``, continues from there to ``--steps`` (a killed
run resumes). The trained agent is evaluated deterministically on ``--eval-episodes`` episodes
(the seeds of ``benchmarks/ppo_half_cheetah.py``) and the return, beside our PPO's from
``benchmarks/results/ppo_half_cheetah.json`` when present, goes to
``benchmarks/results/dqn_half_cheetah.json``.

    python benchmarks/dqn_half_cheetah.py --steps 1000000 --logdir runs/dqn_half_cheetah
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import gymnasium as gym
import torch
from ppo_half_cheetah import ENV_ID, ENV_KWARGS, evaluate, jsonable
from record import RESULTS_DIR, write_result

from agents import DQN
from agents.base import CHECKPOINT_NAME
from agents.train_cli import hyperparameters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--logdir", type=Path, default=Path("runs/dqn_half_cheetah"))
    parser.add_argument("--checkpoint-every", type=int, default=50_000)
    parser.add_argument("--eval-episodes", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    env = gym.make(ENV_ID, **ENV_KWARGS)
    logging = dict(logdir=str(args.logdir), checkpoint_every=args.checkpoint_every)
    checkpoint = args.logdir / CHECKPOINT_NAME
    config = hyperparameters("dqn", ENV_ID)
    start = time.perf_counter()
    if checkpoint.exists():
        agent = DQN.load(checkpoint, env=env, device=args.device, **logging)
        print(f"resuming from {checkpoint} at {agent.num_timesteps} env steps", flush=True)
    else:
        agent = DQN(env, device=args.device, seed=args.seed, **config, **logging)
    resumed_at = agent.num_timesteps
    if agent.num_timesteps < args.steps:
        agent.learn(args.steps - agent.num_timesteps, progress_bar=False, reset_num_timesteps=False)
        agent.save(checkpoint)
    train_seconds = time.perf_counter() - start

    final_return = evaluate(lambda obs: agent.predict(obs)[0], args.eval_episodes, args.seed)
    figures = {
        "steps": agent.num_timesteps,
        "seed": args.seed,
        "env": ENV_ID,
        "env_kwargs": ENV_KWARGS,
        "config": jsonable(config),
        "final_return": final_return,
        "eval_episodes": args.eval_episodes,
        "train_seconds_this_call": train_seconds,
        "resumed_at_step": resumed_at,
    }
    print(f"DQN (one Q-head per joint), {agent.num_timesteps} steps: return {final_return:.1f}")
    ppo_results = RESULTS_DIR / "ppo_half_cheetah.json"
    if ppo_results.exists():
        ours = json.loads(ppo_results.read_text())["figures"].get("ours")
        if ours:
            figures["ppo_final_return_mean"] = ours["final_return_mean"]
            ratio = figures["return_ratio_dqn_over_ppo"] = final_return / ours["final_return_mean"]
            print(f"PPO (fast preset): {ours['final_return_mean']:.1f}; return ratio DQN/PPO {ratio:.2f}")
    print(f"results: {write_result('dqn_half_cheetah', figures)}")


if __name__ == "__main__":
    main()
