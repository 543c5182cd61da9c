"""Training in rounds keeps the schedules of one run (agents.rounds)."""

from __future__ import annotations

import gymnasium as gym
import pytest
import torch

from agents import PPO, LinearSchedule
from agents.rounds import LearnInRounds, schedule_for_call


def make_ppo() -> PPO:
    return PPO(
        gym.make("CartPole-v1"), device="cpu", seed=0, num_envs=2, n_steps=32, batch_size=64, n_epochs=1
    )


def parameters(agent: PPO) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in agent.policy.parameters()])


def test_rounds_train_as_one_learn_call() -> None:
    whole = make_ppo().learn(320, progress_bar=False)
    rounds = LearnInRounds(make_ppo(), total_timesteps=320)
    for steps in (64, 128, 64, 64):
        rounds.learn(steps)
    assert rounds.num_timesteps == whole.num_timesteps == 320
    assert torch.equal(parameters(rounds.agent), parameters(whole))
    # Plain continued learn() calls decay the learning rate to 0 at each call's end: another run.
    plain = make_ppo()
    for steps in (64, 128, 64, 64):
        plain.learn(steps, progress_bar=False, reset_num_timesteps=False)
    assert not torch.equal(parameters(plain), parameters(whole))


@pytest.mark.parametrize("fraction", [1.0, 0.3])
def test_schedule_for_call_matches_the_whole_runs_schedule(fraction: float) -> None:
    schedule, total = LinearSchedule(1.0, 0.1, fraction), 1000
    for target in (100, 250, 300, 700, 1000):
        call = schedule_for_call(schedule, target, total)
        for t in range(0, target + 1, 50):
            assert call(t / target) == pytest.approx(schedule(t / total))
    with pytest.raises(ValueError, match="total_timesteps"):
        LearnInRounds(make_ppo(), 0)
