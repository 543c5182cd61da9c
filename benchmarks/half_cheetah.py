"""Steps per second of ``rlhf_envs/HalfCheetah-v0`` against bare Gymnasium ``HalfCheetah-v5``, as a ratio.

Both envs come from ``gym.make`` with their default wrappers and step the same pre-drawn random actions.
Rounds alternate between the two so that load on the machine hits both alike; the median round counts.
The lecture reward's bookkeeping should cost under 10% (a ratio above 0.90).

    python benchmarks/half_cheetah.py --steps 5000 --rounds 7
"""

from __future__ import annotations

import argparse
import statistics
import time

import gymnasium as gym
import numpy as np

import rlhf_envs  # noqa: F401  (registers the ids)


def steps_per_second(env: gym.Env, actions: np.ndarray) -> float:
    env.reset(seed=0)
    start = time.perf_counter()
    for action in actions:
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
    return len(actions) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000, help="steps per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per env")
    args = parser.parse_args()

    actions = np.random.default_rng(0).uniform(-1, 1, size=(args.steps, 6)).astype(np.float32)
    envs = {
        "rlhf_envs/HalfCheetah-v0 (lecture)": gym.make("rlhf_envs/HalfCheetah-v0"),
        "rlhf_envs/HalfCheetah-v0 (forward)": gym.make("rlhf_envs/HalfCheetah-v0", reward="forward"),
        "HalfCheetah-v5": gym.make("HalfCheetah-v5"),
    }
    for env in envs.values():  # warm up: first steps pay for allocation and caching
        steps_per_second(env, actions[:500])
    rounds: dict[str, list[float]] = {name: [] for name in envs}
    for _ in range(args.rounds):
        for name, env in envs.items():
            rounds[name].append(steps_per_second(env, actions))
    anchor = statistics.median(rounds["HalfCheetah-v5"])
    for name in envs:
        if name != "HalfCheetah-v5":
            ratio = statistics.median(rounds[name]) / anchor
            print(f"{name} / HalfCheetah-v5 steps per second: {ratio:.3f} (overhead {1 - ratio:+.1%})")


if __name__ == "__main__":
    main()
