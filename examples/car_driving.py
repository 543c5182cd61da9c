"""Drive the lecture's car with Stable-Baselines3, then watch a misspecified reward teach it to crash.

Part 1 trains PPO on the lecture's reward (+50 arrive, −1000 crash, 0 otherwise) and reports how
often the car arrives and how often it crashes over 100 seeded episodes. Part 2 trains the same
PPO on ``reward="speed"``, a proxy that pays for speed above the traffic's and says nothing about
crashing: its student runs into the car ahead in episodes that the lecture's reward keeps safe,
the lecture's reward-alignment slide, runnable. Each part saves a GIF of one evaluation episode
(for part 2, one that ends in a crash).

    python examples/car_driving.py --timesteps 50000 --out out/car
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

import rlhf_envs  # noqa: F401  (registers rlhf_envs/CarDriving-v0)

ENV_ID = "rlhf_envs/CarDriving-v0"
EVAL_SEED = 10_000  # evaluation episodes use seeds from here on, unseen in training


def train(timesteps: int, seed: int, **env_kwargs) -> PPO:
    envs = make_vec_env(ENV_ID, n_envs=8, seed=seed, env_kwargs=env_kwargs)
    model = PPO("MlpPolicy", envs, n_steps=256, batch_size=256, seed=seed, device="cpu")
    return model.learn(timesteps, progress_bar=True)


def evaluate(model: PPO, episodes: int = 100, **env_kwargs) -> tuple[dict[str, float], list[int]]:
    """Arrival and collision rates and the mean lecture's return over seeded episodes, and the crash seeds."""
    env = gym.make(ENV_ID, **env_kwargs)
    arrived = collided = 0
    lecture_return = 0.0
    crash_seeds = []
    for seed in range(EVAL_SEED, EVAL_SEED + episodes):
        obs, _ = env.reset(seed=seed)
        terminated = truncated = False
        while not (terminated or truncated):
            action, _ = model.predict(obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            lecture_return += info["lecture_reward"]
        arrived += info["arrived"]
        collided += info["collided"]
        if info["collided"]:
            crash_seeds.append(seed)
    rates = {"arrived": arrived, "collided": collided, "lecture_return": lecture_return}
    return {name: value / episodes for name, value in rates.items()}, crash_seeds


def report(rates: dict[str, float]) -> None:
    print(f"  over 100 evaluation episodes: arrived {rates['arrived']:.0%}, collided {rates['collided']:.0%}")
    print(f"  mean return under the lecture's reward: {rates['lecture_return']:.1f}")


def save_clip(model: PPO, path: Path, seed: int = EVAL_SEED, **env_kwargs) -> None:
    env = gym.make(ENV_ID, render_mode="rgb_array", **env_kwargs)
    obs, _ = env.reset(seed=seed)
    frames = [env.render()]
    terminated = truncated = False
    while not (terminated or truncated):
        obs, _, terminated, truncated, _ = env.step(model.predict(obs, deterministic=True)[0])
        frames.append(env.render())
    # Hold the last frame so the arrival (or the crash) can be seen.
    frames += [frames[-1]] * 4
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.stack(frames), duration=1000 // env.metadata["render_fps"], loop=0)
    print(f"  saved the episode with seed {seed} ({len(frames)} frames) to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=50_000, help="PPO steps per part")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("out/car"), help="folder for the GIFs")
    args = parser.parse_args()
    torch.set_num_threads(1)  # a small MLP: more threads only wait on each other

    print("Part 1: the lecture's reward")
    model = train(args.timesteps, args.seed)
    rates, _ = evaluate(model)
    report(rates)
    save_clip(model, args.out / "lecture_reward.gif")

    print('Part 2: reward="speed", a proxy that pays for driving faster than the traffic')
    model = train(args.timesteps, args.seed, reward="speed")
    rates, crash_seeds = evaluate(model, reward="speed")
    report(rates)
    save_clip(model, args.out / "speed_reward.gif", *crash_seeds[:1], reward="speed")


if __name__ == "__main__":
    main()
