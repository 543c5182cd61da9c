"""``rlhf-envs train --preset``: named configurations of an agent on an env (PPO on HalfCheetah)."""

from __future__ import annotations

import pytest

from agents import PPO
from agents.train_cli import HYPERPARAMETERS, PRESETS, hyperparameters
from rlhf_envs.cli import main

CHEETAH = "rlhf_envs/HalfCheetah-v0"


def test_half_cheetah_ppo_defaults_to_the_fast_preset_and_keeps_the_zoo_one():
    assert hyperparameters("ppo", CHEETAH) == hyperparameters("ppo", CHEETAH, "fast")
    assert hyperparameters("ppo", CHEETAH) == HYPERPARAMETERS[("ppo", CHEETAH)]
    zoo = hyperparameters("ppo", CHEETAH, "zoo")
    # rl-baselines3-zoo's hyperparams/ppo.yml for HalfCheetah-v3.
    assert (zoo["num_envs"], zoo["n_steps"], zoo["batch_size"], zoo["n_epochs"]) == (1, 512, 64, 20)
    assert zoo["learning_rate"] == pytest.approx(2.0633e-05)
    fast = hyperparameters("ppo", CHEETAH, "fast")
    assert fast["num_envs"] > 1 and fast["batch_size"] > zoo["batch_size"]
    # A copy: changing it leaves the table alone.
    zoo["n_steps"] = 1
    assert PRESETS[("ppo", CHEETAH)]["zoo"]["n_steps"] == 512


def test_unknown_preset_is_a_clear_error():
    with pytest.raises(ValueError, match="--preset turbo .* choose one of \\['fast', 'zoo'\\]"):
        hyperparameters("ppo", CHEETAH, "turbo")
    with pytest.raises(ValueError, match="--preset fast .* it has none"):
        hyperparameters("ppo", "rlhf_envs/CarDriving-v0", "fast")


def test_cli_trains_with_the_chosen_preset(tmp_path):
    path = tmp_path / "agent.pt"
    args = ["train", "--agent", "ppo", "--env", CHEETAH, "--device", "cpu", "--save", str(path)]
    assert main([*args, "--preset", "zoo", "--steps", "512"]) == 0
    agent = PPO.load(path)
    assert (agent.config.num_envs, agent.config.n_steps, agent.config.batch_size) == (1, 512, 64)
    assert agent.num_timesteps == 512
