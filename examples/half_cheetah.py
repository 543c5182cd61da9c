"""Train SB3's PPO on HalfCheetah with the lecture's reward for a short budget, then record a clip.

The lecture's reward pays +1 per upright step and 10 (N - n) for leaving the frame to the right at step n.
Whatever reward PPO trains on, ``info`` carries the components of both the lecture's and Gymnasium's
forward reward, so both returns are reported before and after training. Rendering is headless (EGL).

    python examples/half_cheetah.py --timesteps 20000 --clip runs/half_cheetah/ppo.gif
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch
from stable_baselines3 import PPO

import rlhf_envs  # noqa: F401  (registers the ids)
from rlhf_envs.device import resolve_device


def rollout(model: PPO, env: gym.Env, seed: int, frames: int) -> tuple[dict[str, object], list[np.ndarray]]:
    """One deterministic episode: its lecture and forward returns, how far it got, and its first frames."""
    obs, _ = env.reset(seed=seed)
    totals = {"lecture return": 0.0, "forward return": 0.0}
    images = [env.render()] if frames else []
    done = False
    while not done:
        action, _ = model.predict(obs, deterministic=True)
        obs, _, terminated, truncated, info = env.step(action)
        totals["lecture return"] += info["lecture_reward"]
        totals["forward return"] += info["forward_reward"]
        if len(images) < frames:
            images.append(env.render())
        done = terminated or truncated
    summary = {**totals, "final x (m)": info["x_position"], "exited": info["exited"], "steps": info["step"]}
    return summary, images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=20_000, help="PPO training budget in env steps")
    parser.add_argument("--reward", choices=["lecture", "forward"], default="lecture", help="PPO's reward")
    parser.add_argument("--clip", type=Path, default=Path("runs/half_cheetah/ppo.gif"), help="GIF to write")
    parser.add_argument("--clip-steps", type=int, default=150, help="frames in the clip (one per env step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="torch device for PPO; auto picks CUDA when present")
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))  # shared small machines

    env = gym.make("rlhf_envs/HalfCheetah-v0", reward=args.reward)
    # The clip's env renders small frames: a GIF of 480 x 480 frames would be tens of megabytes.
    eval_env = gym.make("rlhf_envs/HalfCheetah-v0", render_mode="rgb_array", width=320, height=240)
    model = PPO("MlpPolicy", env, seed=args.seed, device=resolve_device(args.device), verbose=0)

    before, _ = rollout(model, eval_env, args.seed, frames=0)
    model.learn(total_timesteps=args.timesteps, progress_bar=True)
    after, frames = rollout(model, eval_env, args.seed, frames=args.clip_steps)

    print(f"PPO on reward={args.reward!r} for {args.timesteps} steps, one deterministic episode:")

    def show(value: object) -> str:
        return f"{value:.2f}" if isinstance(value, float) else str(value)

    for key in before:
        print(f"  {key:>15}: before {show(before[key]):>9}   after {show(after[key]):>9}")
    args.clip.parent.mkdir(parents=True, exist_ok=True)
    fps = eval_env.metadata["render_fps"]
    iio.imwrite(args.clip, np.stack(frames), duration=1000 / fps, loop=0)
    print(f"clip of {len(frames)} frames at {fps} fps written to {args.clip}")


if __name__ == "__main__":
    main()
