"""SB3's PPO on the car: our batched ``SB3VecEnv`` against SB3's ``make_vec_env`` (DummyVecEnv), same run.

Both sides train ``stable_baselines3.PPO("MlpPolicy")`` with the same hyperparameters and seed on
``num_envs`` cars of ``rlhf_envs/CarDriving-v0``: the anchor steps one ``CarDriving`` env per car in
a Python loop (each in SB3's ``Monitor``), ours steps all cars in one batched call (under
``VecMonitor``). Training alternates between the two in chunks so that load on the machine hits both
alike. Printed: PPO steps per second of each and the ratio, then each trained policy's arrival and
collision rates and mean return over 100 seeded drives (seeds unseen in training), so the speed-up is
shown not to change what is learned. Last, PPO trains on our VecEnv alone for ``--arrival-timesteps``
(what the speed-up buys) and its cars drive the same 100 seeded drives.
Writes ``benchmarks/results/sb3_vec_env.json``.

    python benchmarks/sb3_vec_env.py --num-envs 256 --timesteps 294912 --arrival-timesteps 589824
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch
from record import write_result
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnv, VecMonitor

import rlhf_envs  # noqa: F401  (registers rlhf_envs/CarDriving-v0)
from rlhf_envs.envs.sb3 import SB3VecEnv

ENV_ID = "rlhf_envs/CarDriving-v0"
EVAL_SEED = 10_000  # evaluation drives use seeds from here on, unseen in training


def make_ppo(env: VecEnv, args: argparse.Namespace) -> PPO:
    return PPO(
        "MlpPolicy",
        env,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=args.learning_rate,
        seed=args.seed,
        device="cpu",
    )


def env_steps_per_second(env: VecEnv, seconds: float) -> float:
    """Steps per second (summed over envs) of ``env`` alone, under random actions: no policy, no update."""
    actions = np.random.default_rng(0).integers(env.action_space.n, size=(16, env.num_envs))
    env.reset()
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        env.step(actions[calls % len(actions)])
        calls += 1
    return calls * env.num_envs / (time.perf_counter() - start)


def drive(model: PPO, episodes: int) -> dict[str, float]:
    """Arrival and collision rates and mean return of the deterministic policy over seeded drives."""
    env = gym.make(ENV_ID, device="cpu")
    arrived = collided = 0
    total = 0.0
    for seed in range(EVAL_SEED, EVAL_SEED + episodes):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(model.predict(obs, deterministic=True)[0])
            total += float(reward)
            done = terminated or truncated
        arrived += bool(info["arrived"])
        collided += bool(info["collided"])
    return {"arrived": arrived / episodes, "collided": collided / episodes, "mean_return": total / episodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-envs", type=int, default=256)
    parser.add_argument("--timesteps", type=int, default=294_912, help="PPO steps per side (36 rollouts)")
    parser.add_argument("--chunks", type=int, default=9, help="alternations between the two sides")
    parser.add_argument("--n-steps", type=int, default=32, help="PPO rollout length per env")
    # Many parallel envs: large minibatches, few gradient steps per rollout (20 at 256 envs), a larger
    # learning rate to match; the same on both sides.
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--n-epochs", type=int, default=10)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--arrival-timesteps", type=int, default=589_824, help="PPO steps on ours alone")
    parser.add_argument("--episodes", type=int, default=100, help="seeded evaluation drives")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (<= 2 when shared)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    sides = {
        "SB3VecEnv": VecMonitor(SB3VecEnv(ENV_ID, num_envs=args.num_envs, device="cpu")),
        "make_vec_env": make_vec_env(
            ENV_ID, n_envs=args.num_envs, seed=args.seed, env_kwargs={"device": "cpu"}
        ),
    }
    # Where PPO's time goes: the envs alone, measured before training (alternating, as below).
    env_speed = dict.fromkeys(sides, 0.0)
    for _ in range(2):
        for name, env in sides.items():
            env_speed[name] += env_steps_per_second(env, seconds=1.0) / 2
    models = {name: make_ppo(env, args) for name, env in sides.items()}
    seconds = dict.fromkeys(sides, 0.0)
    chunk = args.timesteps // args.chunks
    for index in range(args.chunks):
        for name, model in models.items():
            start = time.perf_counter()
            model.learn(chunk, reset_num_timesteps=index == 0)
            seconds[name] += time.perf_counter() - start
        print(f"chunk {index + 1}/{args.chunks}: " + ", ".join(f"{n} {s:.0f} s" for n, s in seconds.items()))

    figures: dict = {"num_envs": args.num_envs, "env": ENV_ID, "ppo": vars(args) | {"policy": "MlpPolicy"}}
    for name, model in models.items():
        steps = model.num_timesteps
        returns = [info["r"] for info in model.ep_info_buffer]
        figures[name] = {
            "timesteps": steps,
            "seconds": round(seconds[name], 2),
            "steps_per_second": round(steps / seconds[name], 1),
            "env_alone_steps_per_second": round(env_speed[name], 1),
            "last_100_training_episodes_mean_return": round(float(np.mean(returns)), 2),
            "evaluation": drive(model, args.episodes),
        }
        print(
            f"{name:>12}: {figures[name]['steps_per_second']:8.0f} PPO steps/s; "
            f"drives: {figures[name]['evaluation']}"
        )
    ratio = figures["SB3VecEnv"]["steps_per_second"] / figures["make_vec_env"]["steps_per_second"]
    figures["ratio_steps_per_second"] = round(ratio, 2)
    env_ratio = env_speed["SB3VecEnv"] / env_speed["make_vec_env"]
    figures["ratio_env_alone_steps_per_second"] = round(env_ratio, 2)
    print(f"ratio SB3VecEnv / make_vec_env: {ratio:.2f}x PPO steps/s at {args.num_envs} envs (goal >= 5x)")
    print(f"  the envs alone (random actions, no policy): {env_ratio:.1f}x")

    model = make_ppo(VecMonitor(SB3VecEnv(ENV_ID, num_envs=args.num_envs, device="cpu")), args)
    start = time.perf_counter()
    model.learn(args.arrival_timesteps)
    figures["arrival_run"] = {
        "timesteps": model.num_timesteps,
        "seconds": round(time.perf_counter() - start, 2),
        "evaluation": drive(model, args.episodes),
    }
    print(
        f"PPO on SB3VecEnv alone, {model.num_timesteps} steps: drives {figures['arrival_run']['evaluation']}"
    )
    path = write_result(
        "sb3_vec_env",
        figures,
        notes="Evaluation: 100 seeded drives (seeds 10000-10099) of each trained policy, deterministic "
        "actions; 'arrived' is the share that reached the destination without a collision.",
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
