"""Reward alignment on the lecture's car, end to end (Christiano et al., 2017, on CarDriving).

1. The misspecified proxy: PPO on ``reward="speed"`` (paid for driving faster than the traffic)
   learns to tailgate, and crashes.
2. Preferences instead: a synthetic labeler compares pairs of whole drives by the lecture's
   outcome (+50 for arriving, −1000 for a crash); an ensemble reward model learns from those
   labels, and PPO trains on the learned reward while more labels arrive.
3. The car trained on the learned reward arrives without colliding.

    python examples/alignment_car.py               # ~50k PPO steps per policy, a few minutes
    python examples/alignment_car.py --steps 20000 --labels 300
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlhf_envs  # noqa: F401 - registers the envs
from rlhf_envs.preferences import PreferenceStore, SyntheticLabeler
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer
from rlhf_envs.rewards import LearnedReward, TrajectoryRewardConfig, TrajectoryRewardModel

CAR = "rlhf_envs/CarDriving-v0"


def make_ppo(env_fn, seed: int) -> PPO:
    env = make_vec_env(env_fn, n_envs=4, seed=seed)
    return PPO("MlpPolicy", env, n_steps=256, batch_size=256, seed=seed, device="cpu", verbose=0)


def drive(agent: PPO, episodes: int, seed: int) -> dict[str, float]:
    """Arrival and collision rates and the lecture's mean return, greedy actions."""
    env = gym.make(CAR)
    arrived = collided = 0
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.predict(obs, deterministic=True)[0])
            total += float(reward)
            done = terminated or truncated
        arrived += bool(info["arrived"])
        collided += bool(info["collided"])
        returns.append(total)
    return {"arrived": arrived / episodes, "collided": collided / episodes, "return": float(np.mean(returns))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50_000, help="PPO steps per policy")
    parser.add_argument("--labels", type=int, default=500, help="label budget")
    parser.add_argument("--episodes", type=int, default=200, help="evaluation episodes")
    parser.add_argument("--store", help="labels file (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small MLPs: extra threads only contend

    proxy = make_ppo(lambda: gym.make(CAR, reward="speed"), args.seed)
    proxy.learn(args.steps)
    print("PPO on the speed proxy:      ", drive(proxy, args.episodes, seed=10_000))

    reference = gym.make(CAR)
    reward_model = TrajectoryRewardModel(
        reference.observation_space, reference.action_space, TrajectoryRewardConfig(epochs=30, seed=args.seed)
    )
    agent = make_ppo(lambda: LearnedReward(gym.make(CAR), reward_model), args.seed)
    trainer = PreferenceTrainer(
        agent,
        env=gym.make(CAR),  # segments' true reward: the lecture's
        reward_model=reward_model,
        labeler=SyntheticLabeler(beta=1.0, seed=args.seed),
        store=PreferenceStore(args.store or Path(tempfile.mkdtemp()) / "preferences.jsonl"),
        config=PreferenceConfig(
            total_timesteps=args.steps,
            num_rounds=5,
            label_budget=args.labels,
            # Whole drives (the horizon): the outcome, arriving safely, is a property of a drive, and
            # only whole drives tell the model that arriving beats cruising until the time runs out.
            segment_length=reference.unwrapped.config.horizon,
            rollout_steps=2_000,
            seed=args.seed,
        ),
        callback=lambda r: print(
            f"round {r.round}: {r.labels} labels, held-out accuracy {r.fit.val_accuracy or float('nan'):.2f}"
        ),
    )
    trainer.train()
    print(
        "PPO on the learned reward:   ",
        drive(agent, args.episodes, seed=10_000),
        f"({len(trainer.comparisons)} labels)",
    )


if __name__ == "__main__":
    main()
