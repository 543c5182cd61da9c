"""Steps per second of the car's batched core against gymnasium's SyncVectorEnv of the same env.

Both sides step ``num_envs`` cars with random actions and autoreset in the same step; the anchor
runs the single ``CarDriving`` env once per car in a Python loop, as gymnasium would for any env.
Printed is the ratio batched / anchor (how many times more steps per second), for the batched
core with tensors kept on the device and with numpy in and out (what SyncVectorEnv returns).

    python benchmarks/car.py --num-envs 256 1024 --device auto
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AutoresetMode, SyncVectorEnv, VectorEnv

import rlhf_envs  # noqa: F401  (registers rlhf_envs/CarDriving-v0)
from rlhf_envs.device import resolve_device
from rlhf_envs.envs.car import CarDrivingVectorEnv

ENV_ID = "rlhf_envs/CarDriving-v0"


def steps_per_second(env: VectorEnv, actions: Any, min_seconds: float, sync: Callable[[], None]) -> float:
    """Env steps per second (summed over cars) of ``env``, cycling through ``actions`` [T, B]."""
    env.reset(seed=0)
    for t in range(3):  # warm-up
        env.step(actions[t])
    sync()
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < min_seconds:
        for _ in range(10):
            env.step(actions[calls % len(actions)])
            calls += 1
        sync()
    return calls * env.num_envs / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--device", default="auto", help="device of the batched core")
    parser.add_argument("--min-seconds", type=float, default=2.0, help="least time per measurement")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (<= 2 when shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else lambda: None
    rng = np.random.default_rng(0)

    print(f"device {device}, torch threads {torch.get_num_threads()}")
    print(f"{'num_envs':>8}  {'batched tensors / sync':>22}  {'batched numpy / sync':>20}")
    for num_envs in args.num_envs:
        actions = rng.integers(3, size=(64, num_envs))
        anchor = SyncVectorEnv([lambda: gym.make(ENV_ID)] * num_envs, autoreset_mode=AutoresetMode.SAME_STEP)
        anchor_rate = steps_per_second(anchor, actions, args.min_seconds, lambda: None)
        tensors = CarDrivingVectorEnv(num_envs, device=device, as_tensors=True)
        tensor_actions = torch.as_tensor(actions, device=device)
        tensor_rate = steps_per_second(tensors, tensor_actions, args.min_seconds, sync)
        numpy_env = CarDrivingVectorEnv(num_envs, device=device)
        numpy_rate = steps_per_second(numpy_env, actions, args.min_seconds, sync)
        print(f"{num_envs:>8}  {tensor_rate / anchor_rate:>21.1f}x  {numpy_rate / anchor_rate:>19.1f}x")


if __name__ == "__main__":
    main()
