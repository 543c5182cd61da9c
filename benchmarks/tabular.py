"""Env steps per second: the tabular MDP's batched core against gymnasium's SyncVectorEnv.

Both step the same MDP with the same number of envs and random actions, in one process; the
printed figure is the ratio (batched / SyncVectorEnv). Goal: >= 50x on the CPU.

    python benchmarks/tabular.py [--num-envs 256 1024] [--steps 200] [--device auto]
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from rlhf_envs.device import resolve_device
from rlhf_envs.envs.tabular import TabularMDP, TabularMDPVectorEnv


def steps_per_second(env: gym.vector.VectorEnv, actions: list, steps: int) -> float:
    env.reset(seed=0)
    env.step(actions[0])  # warm-up
    if isinstance(actions[0], torch.Tensor) and actions[0].is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for step in range(steps):
        env.step(actions[step % len(actions)])
    if isinstance(actions[0], torch.Tensor) and actions[0].is_cuda:
        torch.cuda.synchronize()
    return steps * env.num_envs / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    # SyncVectorEnv steps on one thread; so does the batched core here, for a like-for-like ratio
    # on a shared CPU (intra-op threads only pay off for far larger batches).
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    print(f"device: {device}")
    for num_envs in args.num_envs:
        numpy_actions = [rng.integers(3, size=num_envs) for _ in range(16)]
        tensor_actions = [torch.as_tensor(a, device=device) for a in numpy_actions]
        batched = TabularMDPVectorEnv(num_envs=num_envs, device=device, as_tensors=True)
        anchor = gym.vector.SyncVectorEnv([TabularMDP] * num_envs)
        ours = steps_per_second(batched, tensor_actions, args.steps)
        theirs = steps_per_second(anchor, numpy_actions, max(1, args.steps // 10))
        print(f"num_envs={num_envs:5d}: batched core / SyncVectorEnv = {ours / theirs:7.1f}x")


if __name__ == "__main__":
    main()
