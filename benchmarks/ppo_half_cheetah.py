"""Our PPO against Stable-Baselines3's PPO on HalfCheetah, same env, hyperparameters, steps and seeds.

Both use rl-baselines3-zoo's tuned HalfCheetah-v3 hyperparameters (hyperparams/ppo.yml: 1 env,
n_steps 512, batch 64, 20 epochs, lr 2.0633e-5, γ 0.98, λ 0.92, clip 0.1, observation and
reward normalization, 256-256 ReLU networks, log-std −2). The zoo reports 5819 ± 664 for SB3's
PPO on HalfCheetah-v3 at 1M steps. The env is gymnasium's forward reward through
``rlhf_envs/HalfCheetah-v0`` (``reward="forward"``). Each trained agent is evaluated
deterministically on ``--eval-episodes`` episodes; the script prints both mean final returns,
their ratio (ours / SB3) and the wall-time ratio (ours / SB3), all measured in this process.

    python benchmarks/ppo_half_cheetah.py --steps 1000000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import PPO
from agents.train_cli import HYPERPARAMETERS

ENV_ID = "rlhf_envs/HalfCheetah-v0"
ENV_KWARGS = dict(reward="forward")


def train_ours(steps: int, seed: int) -> tuple[PPO, float]:
    config = HYPERPARAMETERS[("ppo", ENV_ID)]
    start = time.perf_counter()
    agent = PPO(gym.make(ENV_ID, **ENV_KWARGS), device="cpu", seed=seed, **config)
    agent.learn(steps, progress_bar=False)
    return agent, time.perf_counter() - start


def train_sb3(steps: int, seed: int):
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    start = time.perf_counter()
    env = VecNormalize(make_vec_env(ENV_ID, n_envs=1, seed=seed, env_kwargs=ENV_KWARGS), gamma=0.98)
    agent = SB3PPO(
        "MlpPolicy",
        env,
        n_steps=512,
        batch_size=64,
        n_epochs=20,
        learning_rate=2.0633e-05,
        gamma=0.98,
        gae_lambda=0.92,
        clip_range=0.1,
        ent_coef=0.000401762,
        vf_coef=0.58096,
        max_grad_norm=0.8,
        policy_kwargs=dict(
            log_std_init=-2,
            ortho_init=False,
            activation_fn=torch.nn.ReLU,
            net_arch=dict(pi=[256, 256], vf=[256, 256]),
        ),
        seed=seed,
        device="cpu",
    )
    agent.learn(steps)
    return agent, time.perf_counter() - start


def evaluate(predict, episodes: int, seed: int) -> float:
    """Mean undiscounted return of ``predict(obs) -> action`` over ``episodes`` full episodes."""
    env = gym.make(ENV_ID, **ENV_KWARGS)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(predict(obs))
            total += reward
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


def sb3_predictor(agent):
    normalizer = agent.get_env()

    def predict(obs):
        return agent.predict(normalizer.normalize_obs(obs[None]), deterministic=True)[0][0]

    return predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the same for both)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows = []
    for seed in args.seeds:
        ours, ours_time = train_ours(args.steps, seed)
        ours_return = evaluate(lambda obs, agent=ours: agent.predict(obs)[0], args.eval_episodes, seed)
        sb3, sb3_time = train_sb3(args.steps, seed)
        sb3_return = evaluate(sb3_predictor(sb3), args.eval_episodes, seed)
        rows.append((ours_return, sb3_return, ours_time, sb3_time))
        print(
            f"seed {seed}: return ours {ours_return:.1f} / SB3 {sb3_return:.1f}; "
            f"wall time ours/SB3 {ours_time / sb3_time:.3f}",
            flush=True,
        )
    ours_returns, sb3_returns, ours_times, sb3_times = map(np.array, zip(*rows, strict=True))
    print(f"steps {args.steps}, seeds {args.seeds}, {args.eval_episodes} evaluation episodes each")
    print(
        f"mean final return: ours {ours_returns.mean():.1f} ± {ours_returns.std():.1f}, "
        f"SB3 {sb3_returns.mean():.1f} ± {sb3_returns.std():.1f}"
    )
    ratio = ours_returns.mean() / sb3_returns.mean() if sb3_returns.mean() != 0 else float("nan")
    print(f"return ratio ours/SB3: {ratio:.3f} (goal >= 1; anchor: zoo SB3 5819 ± 664 at 1M steps)")
    print(f"wall-time ratio ours/SB3: {ours_times.sum() / sb3_times.sum():.3f} (goal <= 1)")


if __name__ == "__main__":
    main()
