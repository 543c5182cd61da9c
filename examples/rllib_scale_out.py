"""Scale out with Ray RLlib: its PPO trains on our registered envs with several env runners (processes).

Each env runner makes its envs by name, ``"rlhf_envs:rlhf_envs/CarDriving-v0"``: the ``rlhf_envs:``
prefix makes Gymnasium import the package, which registers every env, in each worker process, on this
machine or on any node of a cluster. The car's env runners can step its batched core
(``--vectorize vector_entry_point``: one vector env per runner, Gymnasium's NEXT_STEP autoreset, as
RLlib's sampler expects) or one env per copy (``sync``, RLlib's default; HalfCheetah has no batched core).

Locally (Ray starts on this machine)::

    python examples/rllib_scale_out.py --env car --num-env-runners 2 --iterations 10

On a Ray cluster, from any machine that reaches it (``ray start --head`` on one node, ``ray start
--address=<head>:6379`` on the others), the same script: ``--address auto`` on a node of the cluster,
or ``--address ray://<head>:10001``; ``--ship-package`` sends this package to nodes that lack it::

    python examples/rllib_scale_out.py --env half_cheetah --address auto --num-env-runners 64 --ship-package

Needs ``pip install 'rlhf-envs[rllib]'`` (Ray pins its own Gymnasium: install it in its own environment).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import ray
from ray.rllib.algorithms.ppo import PPOConfig

import rlhf_envs

ENVS = {
    "car": "rlhf_envs:rlhf_envs/CarDriving-v0",
    "half_cheetah": "rlhf_envs:rlhf_envs/HalfCheetah-v0",
}


def ppo_config(args: argparse.Namespace, reward_model: Any = None) -> PPOConfig:
    """RLlib's PPO on one of our envs, made by name in every env runner; with ``reward_model`` (a control
    reward model, HalfCheetah) each runner's envs pay its reward, in ``LearnedReward``."""
    env_config: dict[str, Any] = {"device": "cpu"} if args.env == "car" else {}
    if reward_model is not None:
        if args.env != "half_cheetah":
            raise ValueError(
                "a reward model is taken by rlhf_envs/HalfCheetah-v0's reward= (use --env half_cheetah)"
            )
        env_config["reward"] = reward_model  # pickled to every env runner with the config
    return (
        PPOConfig()
        .environment(ENVS[args.env], env_config=env_config)
        .env_runners(
            num_env_runners=args.num_env_runners,
            num_envs_per_env_runner=args.num_envs_per_env_runner,
            gym_env_vectorize_mode=args.vectorize,
            num_cpus_per_env_runner=args.cpus_per_env_runner,
        )
        .training(
            lr=args.lr,
            train_batch_size_per_learner=args.train_batch_size,
            minibatch_size=args.minibatch_size,
            num_epochs=args.num_epochs,
        )
        .debugging(seed=args.seed)
    )


def ship_reward_weights(algorithm: Any, weights: dict[str, Any]) -> list[int]:
    """Load a refitted reward model's ``state_dict`` into the ``LearnedReward`` envs of every env runner
    (remote workers included); returns how many envs each runner updated."""

    def load(runner: Any) -> int:
        envs = runner.env.unwrapped.envs  # RLlib's vector env over gymnasium's SyncVectorEnv
        for env in envs:
            env.get_wrapper_attr("reward_model").load_state_dict(weights)
        return len(envs)

    return algorithm.env_runner_group.foreach_env_runner(load, local_env_runner=False)


def train(args: argparse.Namespace) -> list[float]:
    """Train for ``args.iterations`` iterations; returns the mean episode return after each."""
    runtime_env = {"py_modules": [rlhf_envs]} if args.ship_package else None
    ray.init(address=args.address, num_cpus=args.num_cpus, runtime_env=runtime_env, include_dashboard=False)
    algorithm = ppo_config(args).build_algo()
    returns = []
    try:
        for iteration in range(args.iterations):
            result = algorithm.train()
            returns.append(float(result["env_runners"]["episode_return_mean"]))
            steps = result["env_runners"]["num_env_steps_sampled_lifetime"]
            print(f"iteration {iteration + 1}: {steps} env steps, mean episode return {returns[-1]:.2f}")
    finally:
        algorithm.stop()
        ray.shutdown()
    return returns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", choices=sorted(ENVS), default="car")
    parser.add_argument(
        "--address", default=None, help="a Ray cluster ('auto', 'ray://host:10001'); local if unset"
    )
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs a local Ray may use (default: all)")
    parser.add_argument("--ship-package", action="store_true", help="send rlhf_envs to the cluster's nodes")
    parser.add_argument("--num-env-runners", type=int, default=2)
    parser.add_argument("--num-envs-per-env-runner", type=int, default=8)
    parser.add_argument("--cpus-per-env-runner", type=float, default=1.0)
    parser.add_argument("--vectorize", choices=["sync", "vector_entry_point"], default="sync")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--train-batch-size", type=int, default=4000)
    parser.add_argument("--minibatch-size", type=int, default=256)
    parser.add_argument("--num-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="write the returns per iteration to this JSON file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[float]:
    args = parse_args(argv)
    returns = train(args)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"env": ENVS[args.env], "returns": returns}, handle)
    return returns


if __name__ == "__main__":
    main()
