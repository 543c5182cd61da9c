"""Preference learning against the true reward: PPO's true return on a learned reward vs on the true one.

On the car, for each seed, SB3's PPO trains twice with the same steps: on the env's true reward (the
anchor), and on a reward model learned from synthetic preferences inside ``PreferenceTrainer``.
Both are scored by the true return of greedy rollouts; the script prints the ratio learned / true,
the labels used and the share of safe arrivals.

Goal (issue 6): CarDriving >= 90% safe arrivals with <= 500 labels. HalfCheetah has its own
benchmark, ``benchmarks/preferences_half_cheetah.py`` (Christiano et al.'s setting, 1M steps).

    python benchmarks/preferences.py                                   # defaults below
    python benchmarks/preferences.py --envs car --steps 50000 --seeds 0 1
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlhf_envs  # noqa: F401 - registers the envs
from rlhf_envs.preferences import SyntheticLabeler
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer
from rlhf_envs.rewards import LearnedReward, TrajectoryRewardConfig, TrajectoryRewardModel

# env id, true-reward kwargs, label budget, segment length, default PPO steps, PPO kwargs
SETUPS = {
    # Segments are whole drives (the horizon, 50): arriving safely is a property of a drive.
    "car": ("rlhf_envs/CarDriving-v0", {}, 500, 50, 50_000, {"n_steps": 256, "batch_size": 256}),
}


def score(agent: PPO, make_env, episodes: int, seed: int) -> tuple[float, float]:
    """Mean true return of greedy episodes, and the share that arrived without a collision."""
    env = make_env()
    returns, safe = [], 0
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        total, done, info = 0.0, False, {}
        while not done:
            obs, reward, terminated, truncated, info = env.step(agent.predict(obs, deterministic=True)[0])
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
        safe += bool(info.get("arrived", False)) and not bool(info.get("collided", False))
    return float(np.mean(returns)), safe / episodes


def run(name: str, steps: int, seeds: list[int], episodes: int) -> None:
    env_id, kwargs, budget, segment_length, _, ppo_kwargs = SETUPS[name]

    def make_env() -> gym.Env:
        return gym.make(env_id, **kwargs)

    for seed in seeds:
        started = time.perf_counter()
        anchor = PPO(
            "MlpPolicy", make_vec_env(make_env, n_envs=4, seed=seed), seed=seed, device="cpu", **ppo_kwargs
        )
        anchor.learn(steps)
        anchor_seconds = time.perf_counter() - started
        true_return, true_safe = score(anchor, make_env, episodes, seed=10_000)

        started = time.perf_counter()
        probe = make_env()
        model = TrajectoryRewardModel(
            probe.observation_space,
            probe.action_space,
            TrajectoryRewardConfig(epochs=30, seed=seed, device="cpu"),
        )
        agent = PPO(
            "MlpPolicy",
            make_vec_env(lambda model=model: LearnedReward(make_env(), model), n_envs=4, seed=seed),
            seed=seed,
            device="cpu",
            **ppo_kwargs,
        )
        trainer = PreferenceTrainer(
            agent,
            make_env(),
            model,
            SyntheticLabeler(beta=1.0, seed=seed),
            config=PreferenceConfig(
                total_timesteps=steps,
                num_rounds=5,
                label_budget=budget,
                segment_length=segment_length,
                rollout_steps=2_000,
                seed=seed,
            ),
        )
        reports = trainer.train()
        learned_seconds = time.perf_counter() - started
        learned_return, learned_safe = score(agent, make_env, episodes, seed=10_000)

        # A ratio of returns means something only when the anchor's is positive.
        ratio = learned_return / true_return if true_return > 0 else float("nan")
        line = (
            f"{name} seed {seed} steps {steps}: true-reward PPO return {true_return:.1f}, "
            f"learned-reward PPO return {learned_return:.1f}, ratio {ratio:.2f}, "
            f"labels {len(trainer.comparisons)}, last held-out accuracy "
            f"{reports[-1].fit.val_accuracy or float('nan'):.2f}, "
            f"time ratio learned / true {learned_seconds / anchor_seconds:.2f}, "
            f"safe arrivals {learned_safe:.0%} (true-reward PPO {true_safe:.0%})"
        )
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=sorted(SETUPS), default=sorted(SETUPS))
    parser.add_argument("--steps", type=int, help="PPO steps per run (default: per env, see SETUPS)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=100, help="evaluation episodes per policy")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small MLPs: extra threads only contend
    for name in args.envs:
        run(name, args.steps or SETUPS[name][4], args.seeds, args.episodes)


if __name__ == "__main__":
    main()
