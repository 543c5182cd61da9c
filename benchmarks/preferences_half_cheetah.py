"""HalfCheetah from preferences (Christiano et al., 2017): PPO's true return, learned reward vs true.

A synthetic labeler compares 1.25-second segments (25 steps of 0.05 s) by a hidden score, their true
return under gymnasium's forward reward (``--score forward``) or the lecture's (``--score lecture``):
Boltzmann-rational (β = 1) with a 10% chance of a random answer. An ensemble of 3 reward predictors
learns from the labels; queries are the candidate pairs the ensemble disagrees on most; labels are
spread over training at a decreasing rate (a quarter before any training, the rest ∝ 1/round); the
learned reward is normalized (each member to standard deviation 1 over the labelled steps) and PPO
normalizes rewards again by the running return's scale. PPO trains on the learned reward only.

Runs (``--runs``): ``learned`` (PPO on the learned reward) and ``true`` (the anchor: the same PPO with
the same steps and seeds on the hidden score itself); ``--agent ours`` is ``agents.PPO`` with the fast
HalfCheetah configuration, ``--agent sb3`` Stable-Baselines3's PPO with rl-zoo3's HalfCheetah
hyperparameters. Each run is evaluated on 10 deterministic episodes of the hidden score, and on 2 every
round for the learning curve. On the forward reward the anchor is ``benchmarks/ppo_half_cheetah.py``'s
record of the same agent, configuration, steps and seed when there is one (the same evaluation
episodes; its curve has a point every 50k steps): it is not run again. Every record holds the PPO
configuration it trained with, and learned and true runs are compared only within one configuration.

Each finished run is written to ``benchmarks/results/preferences_half_cheetah/`` and skipped when its
record is there, so a killed job resumes where it stopped; after every run the
summary ``benchmarks/results/preferences_half_cheetah.json`` is rewritten from all records (the ratio
learned / true per agent and score, over the seeds both have), and ``--plot`` draws the curves.

    python benchmarks/preferences_half_cheetah.py --steps 1000000 --seeds 0 1 2
    python benchmarks/preferences_half_cheetah.py --score lecture --seeds 0 --runs learned
    python benchmarks/preferences_half_cheetah.py --plot docs/images/preferences_half_cheetah.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ppo_half_cheetah import SB3_ZOO, jsonable, sb3_zoo_policy_kwargs

import rlhf_envs  # noqa: F401 - registers the envs
from agents import PPO
from agents.rounds import LearnInRounds
from agents.train_cli import HYPERPARAMETERS
from rlhf_envs.envs.half_cheetah import run_episode
from rlhf_envs.preferences import SyntheticLabeler
from rlhf_envs.preferences.trainer import PreferenceConfig, PreferenceTrainer, RoundReport
from rlhf_envs.rewards import (
    LearnedReward,
    TrajectoryRewardConfig,
    TrajectoryRewardModel,
    VectorLearnedReward,
)

ENV_ID = "rlhf_envs/HalfCheetah-v0"
RESULTS = Path(__file__).parent / "results"
RECORDS = RESULTS / "preferences_half_cheetah"
SUMMARY = RESULTS / "preferences_half_cheetah.json"
#: benchmarks/ppo_half_cheetah.py's records: its true-reward runs of our PPO are the anchor when their
#: configuration, steps and seed are ours.
PPO_RECORDS = RESULTS / "ppo_half_cheetah"

#: Our PPO: its HalfCheetah row in ``rlhf-envs train``'s table (the fast configuration).
OURS = HYPERPARAMETERS[("ppo", ENV_ID)]

PREFERENCES = dict(
    label_budget=1_000,
    num_rounds=40,
    initial_label_fraction=0.25,
    segment_length=25,  # 1.25 s
    rollout_steps=2_000,
    query="disagreement",
    oversample=10,
)
LABELER = dict(beta=1.0, error_rate=0.1)
REWARD_MODEL = dict(ensemble_size=3, hidden_sizes=(64, 64), epochs=20)

EVAL_EPISODES = 10
CURVE_EPISODES = 2


def ppo_config(agent_name: str) -> dict[str, Any]:
    """The agent's PPO configuration as its records hold it (JSON values)."""
    return json.loads(json.dumps(jsonable(OURS if agent_name == "ours" else SB3_ZOO)))


def config_key(record: dict[str, Any]) -> str:
    return json.dumps(record["config"], sort_keys=True)


def make_env(score: str) -> gym.Env:
    return gym.make(ENV_ID, reward=score)


def evaluate(policy: Callable[[np.ndarray], Any], score: str, episodes: int, seed: int) -> dict[str, Any]:
    """Deterministic episodes scored by the hidden score; exits (how often, how soon) for the lecture's."""
    env = make_env(score)
    reports = [run_episode(env, policy, seed=10_000 + 100 * seed + i) for i in range(episodes)]
    returns = [r.lecture_return if score == "lecture" else r.forward_return for r in reports]
    exits = [r.exit_step for r in reports if r.exited]
    return {
        "return": float(np.mean(returns)),
        "returns": returns,
        "forward_return": float(np.mean([r.forward_return for r in reports])),
        "exit_rate": len(exits) / episodes,
        "mean_exit_step": float(np.mean(exits)) if exits else None,
        "final_x": float(np.mean([r.final_x for r in reports])),
    }


def what_the_reward_pays(
    reward_model: TrajectoryRewardModel, score: str, policy: Callable, seed: int
) -> dict:
    """What the learned reward follows: its correlation, over 1,000 steps each of random actions and of the
    trained policy (sampling), with the forward velocity and with being upright, and its mean per step
    upright and not (the lecture's +1)."""
    env = make_env(score)
    env.action_space.seed(seed)
    obs_rows, actions, velocity, upright = [], [], [], []
    for act in (lambda obs: env.action_space.sample(), policy):
        obs, _ = env.reset(seed=20_000 + seed)
        for _ in range(1_000):
            action = act(obs)
            obs_rows.append(obs)
            actions.append(action)
            obs, _, terminated, truncated, info = env.step(action)
            velocity.append(info["x_velocity"])
            upright.append(info["upright"])
            if terminated or truncated:
                obs, _ = env.reset()
    reward = reward_model(np.array(obs_rows), np.array(actions))
    velocity, upright = np.array(velocity), np.array(upright, dtype=float)

    def correlation(values: np.ndarray) -> float | None:
        return float(np.corrcoef(reward, values)[0, 1]) if values.std() > 0 else None

    return {
        "correlation_with_forward_velocity": correlation(velocity),
        "correlation_with_upright": correlation(upright),
        "mean_reward_upright": float(reward[upright == 1].mean()) if upright.any() else None,
        "mean_reward_not_upright": float(reward[upright == 0].mean()) if (upright == 0).any() else None,
        "upright_share": float(upright.mean()),
    }


class OursAgent:
    """``agents.PPO`` (fast configuration) on HalfCheetahs paying ``reward_model`` or the true score,
    trained in rounds with the learning-rate schedule of one ``learn(steps)`` call."""

    def __init__(self, score: str, seed: int, reward_model: TrajectoryRewardModel | None, steps: int) -> None:
        envs = gym.vector.SyncVectorEnv(
            [lambda: make_env(score)] * OURS["num_envs"], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP
        )
        if reward_model is not None:
            envs = VectorLearnedReward(envs, reward_model)
        self.model = LearnInRounds(PPO(envs, device="cpu", seed=seed, **OURS), steps)

    def policy(self, obs: np.ndarray) -> np.ndarray:
        return self.model.predict(obs, deterministic=True)[0]

    def learn_with(self, trainer: PreferenceTrainer) -> None:
        trainer.train()

    def learn(self, steps: int) -> None:
        self.model.learn(steps)


class SB3Agent:
    """SB3's PPO (rl-zoo3's hyperparameters, observation and reward normalization) on one HalfCheetah."""

    def __init__(self, score: str, seed: int, reward_model: TrajectoryRewardModel | None, steps: int) -> None:
        from stable_baselines3 import PPO as SB3PPO
        from stable_baselines3.common.env_util import make_vec_env
        from stable_baselines3.common.vec_env import VecNormalize

        def env_fn() -> gym.Env:
            return make_env(score) if reward_model is None else LearnedReward(make_env(score), reward_model)

        self.normalizer = VecNormalize(make_vec_env(env_fn, n_envs=1, seed=seed), gamma=SB3_ZOO["gamma"])
        self.model = SB3PPO(
            "MlpPolicy",
            self.normalizer,
            policy_kwargs=sb3_zoo_policy_kwargs(),
            seed=seed,
            device="cpu",
            **SB3_ZOO,
        )

    def policy(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        normalized = self.normalizer.normalize_obs(obs[None])
        return self.model.predict(normalized, deterministic=deterministic)[0][0]

    def learn_with(self, trainer: PreferenceTrainer) -> None:
        self.model.learn(trainer.config.total_timesteps, callback=trainer.as_callback())

    def learn(self, steps: int) -> None:
        self.model.learn(steps, reset_num_timesteps=False)


AGENTS = {"ours": OursAgent, "sb3": SB3Agent}


def run(agent_name: str, kind: str, score: str, steps: int, seed: int) -> dict[str, Any]:
    """One training run; returns its record (final evaluation, learning curve, labels, wall time)."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    probe = make_env(score)
    reward_model = None
    if kind == "learned":
        reward_model = TrajectoryRewardModel(
            probe.observation_space,
            probe.action_space,
            TrajectoryRewardConfig(seed=seed, device="cpu", **REWARD_MODEL),
        )
    agent = AGENTS[agent_name](score, seed, reward_model, steps)
    curve: list[dict[str, Any]] = []

    def point(timesteps: int, report: RoundReport | None) -> None:
        scores = evaluate(agent.policy, score, CURVE_EPISODES, seed)
        entry = {"timesteps": int(timesteps), "return": scores["return"], "exit_rate": scores["exit_rate"]}
        if report is not None:
            entry |= {"labels": report.labels, "val_accuracy": report.fit.val_accuracy}
        curve.append(entry)
        print(f"  {agent_name} {kind} {score} seed {seed}: {entry}", flush=True)

    config = PreferenceConfig(total_timesteps=steps, seed=seed, **PREFERENCES)
    labels, extra = 0, {}
    if kind == "learned":
        trainer = PreferenceTrainer(
            agent.model,
            make_env(score),
            reward_model,
            SyntheticLabeler(seed=seed, **LABELER),
            config=config,
            callback=lambda report: point(agent.model.num_timesteps, report),
            # SB3's model acts on VecNormalize's observations: roll it out through them (sampling).
            rollout_policy=partial(agent.policy, deterministic=False) if agent_name == "sb3" else None,
        )
        agent.learn_with(trainer)
        labels = len(trainer.comparisons)
        extra = {"learned_reward": what_the_reward_pays(reward_model, score, trainer.policy, seed)}
    else:
        # The anchor is evaluated at the same points as the learned runs' rounds.
        ends = np.linspace(0, steps, config.num_rounds + 1)[1:].round().astype(int)
        for end in ends:
            if end > agent.model.num_timesteps:
                agent.learn(int(end - agent.model.num_timesteps))
            point(agent.model.num_timesteps, None)
    wall = time.perf_counter() - started
    final = evaluate(agent.policy, score, EVAL_EPISODES, seed)
    return {
        "agent": agent_name,
        "reward": kind,
        "score": score,
        "seed": seed,
        "steps": steps,
        "timesteps": int(agent.model.num_timesteps),
        "config": ppo_config(agent_name),
        "labels": labels,
        "final": final,
        "curve": curve,
        "wall_s": round(wall, 1),
        "load_average": os.getloadavg(),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        **extra,
    }


def record_path(agent_name: str, kind: str, score: str, steps: int, seed: int) -> Path:
    return RECORDS / f"{agent_name}-{kind}-{score}-{steps}-seed{seed}.json"


def ppo_benchmark_anchor(
    agent_name: str, steps: int, seed: int, config: dict[str, Any]
) -> dict[str, Any] | None:
    """benchmarks/ppo_half_cheetah.py's run of the agent on the forward reward with ``config`` (JSON
    values), ``steps`` and ``seed`` (evaluated on the same episodes), as this script's record; None if
    there is none."""
    path = PPO_RECORDS / f"{agent_name}_seed{seed}.json"
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    # SB3's record also names its policy and normalization, the same as SB3Agent's.
    if record["steps"] != steps or any(record["config"].get(key) != value for key, value in config.items()):
        return None
    return {
        "agent": agent_name,
        "reward": "true",
        "score": "forward",
        "seed": seed,
        "steps": steps,
        "config": config,
        "labels": 0,
        "final": {"return": record["final_return"], "exit_rate": None, "mean_exit_step": None},
        "curve": [{"timesteps": step, "return": value} for step, value in record["curve"]["points"]],
        "wall_s": record["train_seconds"],
        "source": str(path.relative_to(RESULTS.parent.parent)),
    }


def all_records() -> list[dict[str, Any]]:
    """This script's records, and ppo_half_cheetah.py's anchors (same configuration) for the forward
    runs that have none here."""
    records = [json.loads(path.read_text()) for path in sorted(RECORDS.glob("*.json"))]
    own_anchors = {
        (r["agent"], r["steps"], r["seed"], config_key(r))
        for r in records
        if (r["reward"], r["score"]) == ("true", "forward")
    }
    learned_runs = {
        (r["agent"], r["steps"], r["seed"], config_key(r)): r["config"]
        for r in records
        if (r["reward"], r["score"]) == ("learned", "forward")
    }
    for (agent_name, steps, seed, key), config in sorted(learned_runs.items()):
        if (agent_name, steps, seed, key) not in own_anchors:
            anchor = ppo_benchmark_anchor(agent_name, steps, seed, config)
            records += [anchor] if anchor is not None else []
    return records


def summarize(command: str) -> dict[str, Any]:
    """The summary of every record: per agent, score, steps and PPO configuration, learned vs true
    over common seeds."""
    records = all_records()
    groups: dict[tuple[str, str, int, str], dict[str, dict[int, dict]]] = {}
    for record in records:
        key = (record["agent"], record["score"], record["steps"], config_key(record))
        groups.setdefault(key, {"learned": {}, "true": {}})[record["reward"]][record["seed"]] = record
    comparisons = []
    for (agent_name, score, steps, key), runs in sorted(groups.items()):
        seeds = sorted(set(runs["learned"]) & set(runs["true"]))
        entry: dict[str, Any] = {
            "agent": agent_name,
            "score": score,
            "steps": steps,
            "config": json.loads(key),
        }
        for kind in ("learned", "true"):
            finals = [runs[kind][s]["final"]["return"] for s in sorted(runs[kind])]
            entry[kind] = {
                "seeds": sorted(runs[kind]),
                "returns": finals,
                "mean": float(np.mean(finals)) if finals else None,
                "std": float(np.std(finals)) if finals else None,
                "exit_rate": [runs[kind][s]["final"]["exit_rate"] for s in sorted(runs[kind])],
                "mean_exit_step": [runs[kind][s]["final"]["mean_exit_step"] for s in sorted(runs[kind])],
                "wall_s": [runs[kind][s]["wall_s"] for s in sorted(runs[kind])],
                "records": [
                    runs[kind][s].get(
                        "source",
                        str(
                            record_path(agent_name, kind, score, steps, s).relative_to(RESULTS.parent.parent)
                        ),
                    )
                    for s in sorted(runs[kind])
                ],
            }
        entry["labels"] = [runs["learned"][s]["labels"] for s in sorted(runs["learned"])]
        entry["learned_reward"] = [runs["learned"][s].get("learned_reward") for s in sorted(runs["learned"])]
        entry["commands"] = sorted(
            {r["command"] for kind in runs.values() for r in kind.values() if "command" in r}
        )
        entry["common_seeds"] = seeds
        if seeds:
            learned = np.mean([runs["learned"][s]["final"]["return"] for s in seeds])
            true = np.mean([runs["true"][s]["final"]["return"] for s in seeds])
            # A ratio of returns means something only when the anchor's is positive.
            entry["ratio"] = float(learned / true) if true > 0 else None
        comparisons.append(entry)
    return {
        "benchmark": "HalfCheetah from preferences: PPO's true return on a learned reward / on the true one",
        "goal": "ratio >= 0.8 with <= 1,000 labels, 3 seeds (issue 16)",
        "settings": {
            "preferences": PREFERENCES,
            "labeler": LABELER,
            "reward_model": REWARD_MODEL,
            "eval_episodes": EVAL_EPISODES,
            "ppo": "each comparison's config: the PPO configuration of all its runs, learned and true",
        },
        "comparisons": comparisons,
        "summary_command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}, torch "
        f"{torch.__version__}, 1 torch thread",
        "load": "a shared machine: each run's 1/5/15-minute load averages at its end are in its record "
        "(wall times are not comparable across runs)",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def plot(path: Path, steps: int, score: str) -> None:
    """Learning curves (mean ± std over seeds) of every agent's learned and true runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.2))
    runs: dict[tuple[str, str, str], list[dict]] = {}
    for record in all_records():
        if (record["score"], record["steps"]) == (score, steps):
            runs.setdefault((record["agent"], record["reward"], config_key(record)), []).append(record)
    for (agent_name, kind, _), records in sorted(runs.items()):
        length = min(len(r["curve"]) for r in records)
        x = np.array([p["timesteps"] for p in records[0]["curve"][:length]])
        y = np.array([[p["return"] for p in r["curve"][:length]] for r in records])
        seeds = f"{len(records)} seed{'s' if len(records) > 1 else ''}"
        labels = f", {max(r['labels'] for r in records)} labels" if kind == "learned" else ""
        name = f"{'our' if agent_name == 'ours' else 'SB3'} PPO, {kind} reward ({seeds}{labels})"
        axes.plot(x, y.mean(0), label=name)
        axes.fill_between(x, y.mean(0) - y.std(0), y.mean(0) + y.std(0), alpha=0.2)
    axes.set_xlabel("PPO steps")
    axes.set_ylabel(f"true return ({score} reward), deterministic")
    axes.set_title("HalfCheetah: PPO on a reward learned from preferences")
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    print(f"curves written to {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agent", choices=sorted(AGENTS), nargs="+", default=["ours"])
    parser.add_argument("--runs", choices=["learned", "true"], nargs="+", default=["learned", "true"])
    parser.add_argument("--score", choices=["forward", "lecture"], default="forward", help="the hidden score")
    parser.add_argument("--steps", type=int, default=1_000_000, help="PPO steps per run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--plot", type=Path, help="draw the curves of --score and --steps to this PNG, run nothing"
    )
    parser.add_argument("--summarize", action="store_true", help="only rewrite the summary from the records")
    args = parser.parse_args()
    command = "python " + shlex.join(sys.argv)
    if args.plot:
        plot(args.plot, args.steps, args.score)
        return
    if args.summarize:
        SUMMARY.write_text(json.dumps(summarize(command), indent=1) + "\n")
        return
    torch.set_num_threads(1)  # small networks: extra threads only contend
    RECORDS.mkdir(parents=True, exist_ok=True)
    # Every learned run first: the anchors may come from benchmarks/ppo_half_cheetah.py meanwhile.
    for kind in args.runs:
        for seed in args.seeds:
            for agent_name in args.agent:
                path = record_path(agent_name, kind, args.score, args.steps, seed)
                if path.exists():
                    print(f"{path.name}: done before, skipped")
                    continue
                if (kind, args.score) == ("true", "forward") and ppo_benchmark_anchor(
                    agent_name, args.steps, seed, ppo_config(agent_name)
                ):
                    print(f"{path.name}: the anchor is benchmarks/ppo_half_cheetah.py's run, skipped")
                    continue
                record = run(agent_name, kind, args.score, args.steps, seed) | {"command": command}
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(record, indent=1) + "\n")
                tmp.replace(path)
                print(
                    f"{path.name}: return {record['final']['return']:.1f}, {record['wall_s']} s", flush=True
                )
                SUMMARY.write_text(json.dumps(summarize(command), indent=1) + "\n")


if __name__ == "__main__":
    main()
