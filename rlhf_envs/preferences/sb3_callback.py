"""The preference-learning loop inside SB3's ``learn``: :class:`PreferenceCallback`.

``model.learn(config.total_timesteps, callback=trainer.as_callback())`` runs the rounds of a
:class:`~rlhf_envs.preferences.trainer.PreferenceTrainer` while SB3 trains: round 0 (the share of the
labels asked before any policy training) when training starts, round r once the model has taken
r · total_timesteps / num_rounds steps, always between two rollouts. A round rolls the model out,
asks the labeler, and refits the reward model in place, so the env's ``LearnedReward`` pays the new
reward from the next rollout on. An off-policy model's replay buffer is relabelled with the refitted
reward, so old transitions are not trained on with a reward the model no longer gives.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback

if TYPE_CHECKING:
    from rlhf_envs.preferences.trainer import PreferenceTrainer, RoundReport

__all__ = ["PreferenceCallback"]


class PreferenceCallback(BaseCallback):
    """Runs a ``PreferenceTrainer``'s rounds from SB3's training loop (see the module docstring).

    Args:
        trainer: the loop; its ``agent`` is the SB3 model this callback is given to, and that model's
            env wraps the trainer's ``reward_model`` (``LearnedReward``).
        verbose: SB3's verbosity; at 1 each round's labels and held-out accuracy are printed.
    """

    def __init__(self, trainer: PreferenceTrainer, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.trainer = trainer
        self.reports: list[RoundReport] = []
        config = trainer.config
        # Round r starts once the model has taken starts[r] steps.
        self._starts = np.linspace(0, config.total_timesteps, config.num_rounds + 1)[:-1].round()

    def _on_training_start(self) -> None:
        if self.trainer.agent is not self.model:
            raise ValueError(
                "the PreferenceTrainer's agent must be the SB3 model that learns with this callback"
            )
        if not self.reports:  # a second learn() goes on with the rounds left
            self.trainer.start()
        self._run_due_rounds()

    def _on_rollout_end(self) -> None:
        self._run_due_rounds()

    def _on_step(self) -> bool:
        return True

    def _run_due_rounds(self) -> None:
        while len(self.reports) < len(self._starts) and self.num_timesteps >= self._starts[len(self.reports)]:
            self.trainer.timesteps = self.num_timesteps
            report = self.trainer.run_round(len(self.reports))
            self.reports.append(report)
            self._relabel_replay_buffer()
            self.logger.record("preferences/labels", report.labels)
            self.logger.record("preferences/round", report.round)
            if self.verbose:
                print(f"preference round {report.round}: {report.labels} labels, fit {report.fit}")
            if self.trainer.callback is not None:
                self.trainer.callback(report)

    def _relabel_replay_buffer(self) -> None:
        """Give the stored transitions of an off-policy model the refitted reward."""
        buffer = getattr(self.model, "replay_buffer", None)
        if not isinstance(buffer, ReplayBuffer):
            return
        stored = buffer.buffer_size if buffer.full else buffer.pos
        if stored == 0:
            return
        # With optimize_memory_usage SB3 keeps each next observation in the following slot.
        following = np.roll(buffer.observations, -1, axis=0) if buffer.optimize_memory_usage else None
        next_observations = buffer.next_observations if following is None else following

        def flat(values: np.ndarray, *shape: int) -> np.ndarray:
            return values[:stored].reshape(stored * buffer.n_envs, *shape)

        rewards = np.asarray(
            self.trainer.reward_model(
                flat(buffer.observations, *buffer.obs_shape),
                flat(buffer.actions, buffer.action_dim),
                flat(next_observations, *buffer.obs_shape),
            )
        )
        buffer.rewards[:stored] = rewards.reshape(stored, buffer.n_envs)
