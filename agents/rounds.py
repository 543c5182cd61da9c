"""Train an agent in rounds with the schedules of one run.

``agent.learn(steps, reset_num_timesteps=False)`` continues training, but its schedules (a
:class:`~agents.schedules.LinearSchedule` learning rate, DQN's exploration) run to the end of each
call: progress is ``num_timesteps / target`` with the call's own target. A loop that trains in rounds
(the preference-learning loop refits its reward model between them) would see the learning rate decay
to its end value at every round. :class:`LearnInRounds` rescales each schedule before every call so
that, within it, the schedule takes the values one ``learn(total_timesteps)`` call would have taken.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agents.base import BaseAlgorithm
from agents.schedules import LinearSchedule

__all__ = ["LearnInRounds"]


def schedule_for_call(schedule: LinearSchedule, target: int, total: int) -> LinearSchedule:
    """The schedule whose value at a call's progress p = t / target is ``schedule``'s at t / total.

    ``schedule`` reaches ``end`` at t = fraction · total; within the call that is p = fraction · total /
    target, or beyond the call (p > 1), where the call's schedule only goes part of the way.
    """
    reach = schedule.fraction * total / target
    if reach <= 1:
        return LinearSchedule(schedule.start, schedule.end, reach)
    return LinearSchedule(schedule.start, schedule.start + (schedule.end - schedule.start) / reach)


class LearnInRounds:
    """An agent that learns ``total_timesteps`` in several ``learn`` calls, its schedules as in one.

    Args:
        agent: an algorithm of :mod:`agents` (``PPO``, ``DQN``...), trained from step 0.
        total_timesteps: the steps all calls add up to; the schedules run over them.

    ``learn(steps)`` trains ``steps`` more; ``predict`` and ``num_timesteps`` are the agent's.
    """

    def __init__(self, agent: BaseAlgorithm, total_timesteps: int) -> None:
        if total_timesteps < 1:
            raise ValueError(f"total_timesteps must be >= 1, got {total_timesteps}")
        self.agent = agent
        self.total_timesteps = total_timesteps
        self._schedules = {
            field.name: getattr(agent.config, field.name)
            for field in dataclasses.fields(agent.config)
            if isinstance(getattr(agent.config, field.name), LinearSchedule)
        }

    @property
    def num_timesteps(self) -> int:
        return self.agent.num_timesteps

    def learn(self, total_timesteps: int, progress_bar: bool = False) -> LearnInRounds:
        """Train ``total_timesteps`` more steps (the agent's ``learn`` with ``reset_num_timesteps=False``)."""
        target = self.agent.num_timesteps + total_timesteps
        for name, schedule in self._schedules.items():
            setattr(self.agent.config, name, schedule_for_call(schedule, target, self.total_timesteps))
        self.agent.learn(total_timesteps, progress_bar=progress_bar, reset_num_timesteps=False)
        return self

    def predict(self, observation: Any, deterministic: bool = True) -> tuple[Any, Any]:
        return self.agent.predict(observation, deterministic=deterministic)
