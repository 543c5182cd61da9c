"""HalfCheetah learns to run from preferences alone (Christiano et al., 2017).

PPO never sees the env's reward. A labeler compares pairs of 1.25-second clips (25 steps); an ensemble
of reward models learns from the labels, picks the next pairs where its members disagree most, and
pays PPO its normalized reward. Labels come at a decreasing rate: a quarter before any training, the
rest ∝ 1/round. The synthetic labeler prefers the clip that ran further forward (gymnasium's forward
reward: Boltzmann-rational, with a 10% chance of a random answer); with ``--human`` you are the
labeler: each pair is written as a side-by-side GIF and you answer l / r / e / s in the terminal.

The script prints the labels used and the true return before and after, and writes a GIF of the
cheetah before (left) and after (right) and the learning curve (true return against PPO steps).

    python examples/alignment_half_cheetah.py                  # synthetic labels, about 7 minutes
    python examples/alignment_half_cheetah.py --human --labels 200 --steps 100000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import imageio.v3 as iio
import numpy as np
import torch

import rlhf_envs  # noqa: F401 - registers the envs
from agents import PPO
from agents.rounds import LearnInRounds
from agents.train_cli import HYPERPARAMETERS
from rlhf_envs.envs.half_cheetah import run_episode
from rlhf_envs.preferences import HumanLabeler, PreferenceStore, SyntheticLabeler
from rlhf_envs.preferences.labelers import side_by_side_frames
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer, RoundReport
from rlhf_envs.rewards import TrajectoryRewardConfig, TrajectoryRewardModel, VectorLearnedReward

ENV_ID = "rlhf_envs/HalfCheetah-v0"
#: Our PPO's HalfCheetah configuration in ``rlhf-envs train``'s table (the fast one: 8 envs).
PPO_CONFIG = HYPERPARAMETERS[("ppo", ENV_ID)]


def make_env(**kwargs) -> gym.Env:
    return gym.make(ENV_ID, reward="forward", **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100_000, help="PPO steps on the learned reward")
    parser.add_argument("--labels", type=int, default=500, help="label budget")
    parser.add_argument("--rounds", type=int, default=10, help="rounds of (rollout, label, refit, train)")
    parser.add_argument("--human", action="store_true", help="label the pairs yourself")
    parser.add_argument("--store", type=Path, help="labels file (default: a new temporary folder)")
    parser.add_argument("--out", type=Path, default=Path("runs/alignment_half_cheetah"), help="GIF and curve")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)  # small networks: extra threads only contend
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)

    reference = make_env()
    reward_model = TrajectoryRewardModel(
        reference.observation_space,
        reference.action_space,
        TrajectoryRewardConfig(ensemble_size=3, epochs=20, seed=args.seed, device="cpu"),
    )
    envs = gym.vector.SyncVectorEnv(
        [make_env] * PPO_CONFIG["num_envs"], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
    )
    # Trained in rounds between refits, with the learning-rate schedule of one run of args.steps.
    agent = LearnInRounds(
        PPO(VectorLearnedReward(envs, reward_model), device="cpu", seed=args.seed, **PPO_CONFIG), args.steps
    )

    def policy(obs: np.ndarray) -> np.ndarray:
        return agent.predict(obs, deterministic=True)[0]

    # Small clips (a GIF of 480 x 480 frames would be tens of megabytes) from the camera that follows the
    # cheetah (the default one stays at the start).
    filmed = make_env(render_mode="rgb_array", width=240, height=180, camera_name="track")
    before = run_episode(filmed, policy, seed=10_000, frames=150)

    if args.human:
        labeler = HumanLabeler(output_dir=args.out / "pairs", fps=20)
        rollout_env = make_env(render_mode="rgb_array", width=240, height=180, camera_name="track")
    else:
        labeler = SyntheticLabeler(beta=1.0, error_rate=0.1, seed=args.seed)
        rollout_env = make_env()
    curve = []

    def report(round_report: RoundReport) -> None:
        true_return = run_episode(make_env(), policy, seed=10_000).forward_return
        curve.append((agent.num_timesteps, true_return))
        print(
            f"round {round_report.round}: {round_report.labels} labels, held-out accuracy "
            f"{round_report.fit.val_accuracy or float('nan'):.2f}, PPO steps {agent.num_timesteps}, "
            f"true return {true_return:.0f}",
            flush=True,
        )

    trainer = PreferenceTrainer(
        agent,
        rollout_env,  # its reward, the forward one, is the segments' hidden true return
        reward_model,
        labeler,
        store=PreferenceStore(args.store or Path(tempfile.mkdtemp()) / "preferences.jsonl"),
        config=PreferenceConfig(
            total_timesteps=args.steps,
            num_rounds=args.rounds,
            label_budget=args.labels,
            segment_length=25,
            # Rendering a frame costs a few hundred ms on a loaded CPU: people get fewer, rendered steps.
            rollout_steps=250 if args.human else 2_000,
            query="disagreement",
            render=args.human,
            seed=args.seed,
        ),
        callback=report,
    )
    trainer.train()
    after = run_episode(filmed, policy, seed=10_000, frames=150)

    scores = [run_episode(make_env(), policy, seed=10_001 + i).forward_return for i in range(3)]
    print(f"labels used: {len(trainer.comparisons)}")
    print(
        f"true return (forward reward, deterministic): before {before.forward_return:.0f}, after "
        f"{after.forward_return:.0f} (mean of 3 more episodes {np.mean(scores):.0f}); ran "
        f"{after.final_x:.1f} m in {after.steps} steps"
    )
    gif = args.out / "before_after.gif"
    fps = filmed.metadata["render_fps"]
    iio.imwrite(
        gif, side_by_side_frames(np.stack(before.frames), np.stack(after.frames)), duration=1000 / fps, loop=0
    )
    plot_curve(curve, len(trainer.comparisons), args.out / "learning_curve.png")
    print(
        f"wrote {gif} (before left, after right) and {args.out / 'learning_curve.png'}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )


def plot_curve(curve: list[tuple[int, float]], labels: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5))
    steps, returns = zip(*curve, strict=True)
    axes.plot(steps, returns, marker="o", markersize=3)
    axes.set_xlabel("PPO steps on the learned reward")
    axes.set_ylabel("true return (forward reward)")
    axes.set_title(f"HalfCheetah from {labels} preference labels")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
