"""Ray RLlib's PPO on our registered envs with 2 local env runners (examples/rllib_scale_out.py).

Ray is in the ``rllib`` extra (Ray's core and RLlib's imports, not ``ray[rllib]``, which pins
gymnasium 1.2.2), not in the test extra: these tests skip without it, and ``.ci/run`` runs them in a
second venv over the test venv with the ``rllib`` extra added.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip(
    "ray.rllib",
    reason="Ray RLlib is not installed: pip install -e '.[rllib]' (not ray[rllib], which pins "
    "gymnasium 1.2.2)",
)

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "rllib_scale_out.py"


def load_example():
    spec = importlib.util.spec_from_file_location("rllib_scale_out", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_rllib_ppo_on_the_car_with_2_env_runners_improves_its_return(tmp_path):
    """Each env runner makes the env by its registered name (the rlhf_envs: prefix imports the package
    in the worker); the mean episode return climbs from a random policy's towards the arrival bonus (50)."""
    returns = load_example().main(
        [
            "--env=car",
            "--num-env-runners=2",
            "--num-cpus=3",  # the driver's learner and 2 env runners on a 2-core machine
            "--num-envs-per-env-runner=4",
            "--iterations=6",
            "--train-batch-size=2000",
            f"--out={tmp_path / 'returns.json'}",
        ]
    )
    assert len(returns) == 6
    # A collision costs -1000, so one in an iteration's ~20 drives swings its mean: compare medians.
    assert np.median(returns[2:]) > returns[0] + 20.0, returns
    assert (tmp_path / "returns.json").is_file()


@pytest.mark.slow
def test_a_refitted_reward_models_weights_reach_the_remote_env_runners():
    """The 'ship the weights each iteration' route of the README: LearnedReward envs in two remote
    env runners take the driver's new state_dict."""
    import gymnasium as gym
    import ray
    import torch

    from rlhf_envs.rewards import TrajectoryRewardModel

    example = load_example()
    reference = gym.make("rlhf_envs/HalfCheetah-v0")
    reward_model = TrajectoryRewardModel(reference.observation_space, reference.action_space)
    args = example.parse_args(["--env=half_cheetah", "--num-env-runners=2", "--num-envs-per-env-runner=2"])
    ray.init(num_cpus=3, include_dashboard=False)
    try:
        algorithm = example.ppo_config(args, reward_model).build_algo()
        refitted = {name: value + 1.0 for name, value in reward_model.state_dict().items()}
        assert example.ship_reward_weights(algorithm, refitted) == [2, 2]

        def first_layer(runner):
            return (
                runner.env.unwrapped.envs[1].get_wrapper_attr("reward_model").state_dict()["layers.0.weight"]
            )

        for weights in algorithm.env_runner_group.foreach_env_runner(first_layer, local_env_runner=False):
            torch.testing.assert_close(weights, refitted["layers.0.weight"])
        algorithm.stop()
    finally:
        ray.shutdown()
