"""Our PPO (fast preset) against Stable-Baselines3's PPO (rl-zoo3's hyperparameters) on HalfCheetah.

SB3 runs rl-baselines3-zoo's tuned HalfCheetah-v3 hyperparameters (hyperparams/ppo.yml: 1 env,
n_steps 512, batch 64, 20 epochs, lr 2.0633e-5, γ 0.98, λ 0.92, clip 0.1, observation and
reward normalization, 256-256 ReLU networks, log-std −2; the zoo reports 5819 ± 664 at 1M
steps); ours runs ``--preset`` of ``rlhf-envs train`` (``fast`` by default, ``zoo`` for the
like-for-like run). The env is gymnasium's forward reward through ``rlhf_envs/HalfCheetah-v0``
(``reward="forward"``), the same steps and seeds for both.

Each (method, seed) run is written to ``--records/<method>_seed<k>.json`` as soon as it ends:
the final return (deterministic, ``--eval-episodes`` episodes), the wall time of training alone,
and the learning curve (deterministic evaluation of ``--curve-episodes`` episodes every
``--eval-every`` env steps, its time excluded from the wall time for both methods); beside the
wall time, the process's CPU time of training, which other jobs on the machine inflate far less.
Runs whose record exists are skipped, so a killed benchmark resumes where it stopped. Then the script prints
mean ± std of both methods and the ratios (return ours / SB3, wall time ours / SB3), writes them
to ``benchmarks/results/ppo_half_cheetah.json`` and plots both curves (mean ± std over seeds).

    python benchmarks/ppo_half_cheetah.py --steps 1000000 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from record import RESULTS_DIR, write_result

import rlhf_envs  # noqa: F401  (registers the env ids)
from agents import PPO
from agents.train_cli import HALF_CHEETAH_ZOO_PPO, hyperparameters
from rlhf_envs.device import resolve_device

ENV_ID = "rlhf_envs/HalfCheetah-v0"
ENV_KWARGS = dict(reward="forward")
METHODS = ("ours", "sb3")
FIGURE = Path(__file__).resolve().parent.parent / "docs" / "images" / "ppo_half_cheetah.png"

Predict = Callable[[np.ndarray], np.ndarray]


def evaluate(predict: Predict, episodes: int, seed: int) -> float:
    """Mean undiscounted return of ``predict(obs) -> action`` over ``episodes`` full episodes."""
    env = gym.make(ENV_ID, **ENV_KWARGS)
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed * 100 + episode)
        total, done = 0.0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(predict(obs))
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


class LearningCurve:
    """Deterministic evaluations every ``every`` env steps, timed (wall and CPU) apart from training."""

    def __init__(self, every: int, episodes: int, seed: int) -> None:
        self.every, self.episodes, self.seed = every, episodes, seed
        self.points: list[tuple[int, float]] = []
        self.eval_seconds = self.eval_cpu_seconds = 0.0
        self._next = 0

    def maybe_evaluate(self, step: int, predict: Predict) -> None:
        """Evaluate once ``step`` reached the next multiple of ``every`` (step 0 included)."""
        if step >= self._next:
            self.add(step, predict, self.episodes)
            self._next = (step // self.every + 1) * self.every

    def add(self, step: int, predict: Predict, episodes: int) -> float:
        start, cpu_start = time.perf_counter(), time.process_time()
        mean_return = evaluate(predict, episodes, self.seed)
        self.eval_seconds += time.perf_counter() - start
        self.eval_cpu_seconds += time.process_time() - cpu_start
        self.points.append((step, mean_return))
        return mean_return


class CurvePPO(PPO):
    """Our PPO, evaluated on the learning curve before each rollout."""

    def __init__(self, *args: Any, curve: LearningCurve, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.curve = curve

    def _collect_rollout(self) -> None:
        self.curve.maybe_evaluate(self.num_timesteps, lambda obs: self.predict(obs)[0])
        super()._collect_rollout()


def train_ours(config: dict[str, Any], steps: int, seed: int, device: str, curve: LearningCurve) -> Predict:
    agent = CurvePPO(gym.make(ENV_ID, **ENV_KWARGS), device=device, seed=seed, curve=curve, **config)
    agent.learn(steps, progress_bar=False)
    return lambda obs: agent.predict(obs)[0]


#: rl-baselines3-zoo's hyperparams/ppo.yml for HalfCheetah-v3 (normalize: true, n_envs: 1): the zoo preset's
#: values under the names SB3's PPO takes (the rest are its policy kwargs and VecNormalize, below).
SB3_ZOO = {
    key: HALF_CHEETAH_ZOO_PPO[key]
    for key in (
        "n_steps",
        "batch_size",
        "n_epochs",
        "learning_rate",
        "gamma",
        "gae_lambda",
        "clip_range",
        "ent_coef",
        "vf_coef",
        "max_grad_norm",
    )
}


def sb3_zoo_policy_kwargs() -> dict[str, Any]:
    """rl-zoo3's HalfCheetah policy for SB3's ``MlpPolicy`` (a new dict each call)."""
    return dict(
        log_std_init=-2,
        ortho_init=False,
        activation_fn=torch.nn.ReLU,
        net_arch=dict(pi=[256, 256], vf=[256, 256]),
    )


SB3_ZOO_POLICY = dict(
    policy="256-256 ReLU actor and critic, log_std_init -2, ortho_init False",
    normalization="VecNormalize(gamma=0.98): observations and rewards",
)


def train_sb3(steps: int, seed: int, device: str, curve: LearningCurve) -> Predict:
    from stable_baselines3 import PPO as SB3PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    def predictor(agent: SB3PPO) -> Predict:
        normalizer = agent.get_env()  # VecNormalize: normalize_obs reads its statistics, never updates them
        return lambda obs: agent.predict(normalizer.normalize_obs(obs[None]), deterministic=True)[0][0]

    class CurveCallback(BaseCallback):
        def _on_rollout_start(self) -> None:
            curve.maybe_evaluate(self.num_timesteps, predictor(self.model))

        def _on_step(self) -> bool:
            return True

    env = VecNormalize(make_vec_env(ENV_ID, n_envs=1, seed=seed, env_kwargs=ENV_KWARGS), gamma=0.98)
    agent = SB3PPO(
        "MlpPolicy",
        env,
        **SB3_ZOO,
        policy_kwargs=sb3_zoo_policy_kwargs(),
        seed=seed,
        device=device,
    )
    agent.learn(steps, callback=CurveCallback())
    return predictor(agent)


def jsonable(value: Any) -> Any:
    """Config values as JSON: schedules as their fields, tuples as lists."""
    if dataclasses.is_dataclass(value):
        return {"schedule": type(value).__name__, **dataclasses.asdict(value)}
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, tuple | list):
        return [jsonable(item) for item in value]
    return value


def run_record(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Train and evaluate one (method, seed) run; its record."""
    curve = LearningCurve(args.eval_every, args.curve_episodes, seed)
    load_before = os.getloadavg()
    start, cpu_start = time.perf_counter(), time.process_time()
    if method == "ours":
        config = hyperparameters("ppo", ENV_ID, args.preset)
        predict = train_ours(config, args.steps, seed, args.device, curve)
        settings = {"preset": args.preset, "config": jsonable(config)}
    else:
        predict = train_sb3(args.steps, seed, args.device, curve)
        settings = {"preset": "rl-zoo3", "config": SB3_ZOO | SB3_ZOO_POLICY}
    train_seconds = time.perf_counter() - start - curve.eval_seconds
    train_cpu_seconds = time.process_time() - cpu_start - curve.eval_cpu_seconds
    final_return = curve.add(args.steps, predict, args.eval_episodes)
    return {
        "method": method,
        "seed": seed,
        "steps": args.steps,
        "device": str(resolve_device(args.device)),
        "threads": args.threads,
        **settings,
        "final_return": final_return,
        "eval_episodes": args.eval_episodes,
        "train_seconds": train_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "curve": {"episodes": args.curve_episodes, "points": curve.points},
        "load_average_1min": {"start": load_before[0], "end": os.getloadavg()[0]},
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def load_or_run(method: str, seed: int, args: argparse.Namespace) -> dict[str, Any] | None:
    """The run's record: read back if written earlier, else trained now (None with ``--no-train``)."""
    path = args.records / f"{method}_seed{seed}.json"
    if path.exists():
        record = json.loads(path.read_text())
        if record["steps"] != args.steps:
            raise ValueError(
                f"{path} is a {record['steps']}-step run, not {args.steps}: pass another --records folder"
            )
        if method == "ours" and record["config"] != jsonable(hyperparameters("ppo", ENV_ID, args.preset)):
            raise ValueError(
                f"{path} ran preset {record['preset']!r} with another configuration than --preset "
                f"{args.preset}'s now: move it away to run it again"
            )
        return record
    if args.no_train:
        return None
    record = run_record(method, seed, args)
    args.records.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.tmp")
    partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(partial, path)  # a killed run leaves no half-written record behind
    print(
        f"{method} seed {seed}: return {record['final_return']:.1f}, "
        f"training {record['train_seconds']:.0f} s",
        flush=True,
    )
    return record


def summary(records: list[dict[str, Any]]) -> dict[str, Any]:
    returns = np.array([record["final_return"] for record in records])
    seconds = np.array([record["train_seconds"] for record in records])
    return {
        "seeds": [record["seed"] for record in records],
        "final_return_mean": float(returns.mean()),
        "final_return_std": float(returns.std()),
        "final_returns": returns.tolist(),
        "train_seconds_mean": float(seconds.mean()),
        "train_seconds_std": float(seconds.std()),
        "train_seconds": seconds.tolist(),
        # Records written before CPU time was kept have None.
        "train_cpu_seconds": [record.get("train_cpu_seconds") for record in records],
    }


def plot_curves(records: dict[str, list[dict[str, Any]]], path: Path, steps: int, preset: str) -> Path:
    """Both methods' evaluation curves, mean ± std over seeds, into one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {"ours": f"ours ({preset} preset)", "sb3": "SB3 (rl-zoo3 hyperparameters)"}
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for method, runs in records.items():
        if not runs:
            continue
        length = min(len(run["curve"]["points"]) for run in runs)
        points = np.array([run["curve"]["points"][:length] for run in runs])  # (seeds, points, 2)
        x, returns = points[0, :, 0], points[:, :, 1]
        mean, std = returns.mean(0), returns.std(0)
        axes.plot(x, mean, label=f"{labels[method]}, {len(runs)} seeds")
        axes.fill_between(x, mean - std, mean + std, alpha=0.25)
    axes.set_xlabel("env steps")
    axes.set_ylabel("return (deterministic evaluation)")
    axes.set_title(f"HalfCheetah, forward reward, {steps:,} steps")
    axes.grid(alpha=0.3)
    axes.legend(loc="upper left")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--preset", default="fast", help="our PPO's preset in rlhf-envs train's table")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes of the final evaluation")
    parser.add_argument("--eval-every", type=int, default=50_000, help="env steps between curve points")
    parser.add_argument("--curve-episodes", type=int, default=3, help="episodes per curve point")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (both methods)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the same for both)")
    parser.add_argument(
        "--records", type=Path, default=RESULTS_DIR / "ppo_half_cheetah", help="one JSON per finished run"
    )
    parser.add_argument("--no-train", action="store_true", help="only summarize the records written so far")
    parser.add_argument("--figure", type=Path, default=FIGURE, help="the learning curves' PNG")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    # Ours first, seed by seed, then SB3: the cheap runs finish before the long ones.
    records: dict[str, list[dict[str, Any]]] = {method: [] for method in args.methods}
    for method in args.methods:
        for seed in args.seeds:
            record = load_or_run(method, seed, args)
            if record is not None:
                records[method].append(record)

    figures: dict[str, Any] = {"steps": args.steps, "env": ENV_ID, "env_kwargs": ENV_KWARGS}
    figures |= {"eval_episodes": args.eval_episodes, "curve_every": args.eval_every}
    figures["complete"] = all(len(records[method]) == len(args.seeds) for method in args.methods)
    for method, runs in records.items():
        if runs:
            figures[method] = summary(runs)
            print(
                f"{method}: final return {figures[method]['final_return_mean']:.1f} ± "
                f"{figures[method]['final_return_std']:.1f}, training "
                f"{figures[method]['train_seconds_mean']:.0f} ± {figures[method]['train_seconds_std']:.0f} s "
                f"({len(runs)} seeds)"
            )
    if records.get("ours") and records.get("sb3"):
        ours, sb3 = figures["ours"], figures["sb3"]
        figures["return_ratio"] = ours["final_return_mean"] / sb3["final_return_mean"]
        figures["wall_time_ratio"] = ours["train_seconds_mean"] / sb3["train_seconds_mean"]
        print(f"return ratio ours/SB3: {figures['return_ratio']:.3f} (goal >= 1)")
        print(f"wall-time ratio ours/SB3: {figures['wall_time_ratio']:.3f} (goal <= 0.5)")
    figures["versions"] = {name: version(name) for name in ("stable-baselines3", "gymnasium", "mujoco")}
    figures["versions"]["torch"] = torch.__version__
    notes = (
        "Wall time: training only, the curve's evaluations excluded. Runs one at a time, 1 torch thread, "
        "on a machine shared with other sessions' jobs whose load varied during the runs: each record "
        "holds the 1-minute load average at its start and end, and the runs recorded since CPU time was "
        "kept hold the CPU time of training (train_cpu_seconds; null before), which load inflates far less."
    )
    path = write_result("ppo_half_cheetah", figures, notes=notes, device=resolve_device(args.device))
    print(f"results: {path}")
    if any(records.values()):
        print(f"learning curves: {plot_curves(records, args.figure, args.steps, args.preset)}")


if __name__ == "__main__":
    main()
