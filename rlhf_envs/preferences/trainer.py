"""The preference-learning loop of Christiano et al. (2017) for control envs.

Each round: roll out the current policy, cut the rollout into segments, query pairs of them
(uniformly, or where the reward ensemble disagrees), have the labeler label them (each label is
appended to the store as it is given), refit the reward model on every label so far, and train the
policy for a while on the learned reward. Labels follow a schedule that front-loads them: a share
of the budget is spent before any policy training, the rest over the rounds at a rate ∝ 1/round.

The labeler answers pair by pair (``SyntheticLabeler``, ``HumanLabeler``), or is a ``QueueLabeler``
that takes a round's pairs at once: people in the browser (``rlhf_envs.label.WebLabeler``), who
label while the loop waits (synchronous) or while the policy goes on training (asynchronous: a
round trains on the labels given so far, later labels join the following rounds).

The agent is anything with ``learn(steps)`` and ``predict(obs) -> (action, state)``: SB3's
algorithms and ``agents.PPO``. It must train on an env whose reward is the reward model's, e.g.
``LearnedReward(env, reward_model)``: the model is refitted in place, so that env follows it.
With SB3 the loop also runs inside ``model.learn`` as a callback (:meth:`PreferenceTrainer.as_callback`).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

import gymnasium as gym
import numpy as np

from rlhf_envs.preferences.labelers import QueueLabeler
from rlhf_envs.preferences.segments import collect_segments, disagreement_pairs, uniform_pairs
from rlhf_envs.preferences.store import PreferenceStore
from rlhf_envs.rewards.comparisons import Comparison, Segment
from rlhf_envs.rewards.trajectory import FitResult, TrajectoryRewardModel

if TYPE_CHECKING:
    from rlhf_envs.preferences.sb3_callback import PreferenceCallback

__all__ = ["PreferenceConfig", "PreferenceTrainer", "RoundReport", "label_schedule"]


class Agent(Protocol):
    """What the loop needs of an agent (SB3 algorithms and ``agents.PPO`` have both)."""

    def learn(self, total_timesteps: int, **kwargs: Any) -> Any: ...

    def predict(self, observation: Any, **kwargs: Any) -> tuple[Any, Any]: ...


@dataclass
class PreferenceConfig:
    """Settings of the preference-learning loop.

    Args:
        total_timesteps: policy training steps over all rounds.
        num_rounds: rounds of (rollout, query, label, refit, train).
        label_budget: pairs queried in total; a pair the labeler skips is not replaced.
        initial_label_fraction: the share of the budget labelled before any policy training, on the
            untrained policy's rollouts.
        segment_length: k, steps per segment.
        min_segment_length: the shortest truncated piece kept as a segment (``None``: k; see
            ``cut_segments``).
        rollout_steps: env steps rolled out per round to draw segments from.
        query: ``"uniform"`` pairs, or ``"disagreement"``: active queries where the ensemble
            disagrees most (uniform until the model is first fitted).
        oversample: candidate pairs per query for ``"disagreement"``.
        deterministic_rollouts: roll out the policy's most likely actions (else sample them).
        render: keep each rollout step's ``env.render()`` as the segments' frames, for people to
            look at (``HumanLabeler``, the browser app): the env needs ``render_mode="rgb_array"``,
            and a round's frames are held in memory, so make its images small.
        seed: seeds rollouts and pair sampling.
    """

    total_timesteps: int = 100_000
    num_rounds: int = 10
    label_budget: int = 500
    initial_label_fraction: float = 0.25
    segment_length: int = 25
    min_segment_length: int | None = None
    rollout_steps: int = 2_000
    query: Literal["uniform", "disagreement"] = "disagreement"
    oversample: int = 10
    deterministic_rollouts: bool = False
    render: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        if self.total_timesteps < 1 or self.num_rounds < 1 or self.label_budget < 2:
            raise ValueError(
                "total_timesteps and num_rounds must be >= 1 and label_budget >= 2, got "
                f"{self.total_timesteps}, {self.num_rounds}, {self.label_budget}"
            )
        if not 0 < self.initial_label_fraction <= 1:
            raise ValueError(f"initial_label_fraction must be in (0, 1], got {self.initial_label_fraction}")
        if self.query not in ("uniform", "disagreement"):
            raise ValueError(f"query must be 'uniform' or 'disagreement', got {self.query!r}")


@dataclass
class RoundReport:
    """What one round did: labels so far, the refit's held-out accuracy, the rollout's true return."""

    round: int
    timesteps: int
    labels: int
    fit: FitResult
    mean_segment_true_return: float
    extra: dict[str, Any] = field(default_factory=dict)


def label_schedule(budget: int, num_rounds: int, initial_fraction: float) -> list[int]:
    """Labels per round; sums to ``budget``.

    Round 0 (before any policy training) gets ``initial_fraction`` of the budget (all of it when
    there is one round), round r >= 1 a share ∝ 1/r of the rest, so labels are asked while the
    policy, and what the reward model must rank, changes most.
    """
    if num_rounds == 1:
        return [budget]
    later = 1.0 / np.arange(1, num_rounds)
    cumulative = initial_fraction + (1 - initial_fraction) * np.concatenate(
        [[0.0], later.cumsum() / later.sum()]
    )
    return np.diff(np.round(budget * cumulative), prepend=0).astype(int).tolist()


class PreferenceTrainer:
    """Learn a reward from preferences while training a policy on it.

    Args:
        agent: the policy learner; it trains on an env that reads ``reward_model``
            (``LearnedReward(env, reward_model)``).
        env: a single env the trainer rolls the agent out in to draw segments; the segments' true
            reward is ``info["true_reward"]`` when present, else the env's reward.
        reward_model: the model to fit; refitted in place every round.
        labeler: ``(segment_a, segment_b) -> label or None`` (``SyntheticLabeler``, ``HumanLabeler``),
            or a ``QueueLabeler`` (``rlhf_envs.label.WebLabeler``).
        store: where labels go as they are given (kept in memory only when ``None``); a
            ``QueueLabeler`` writes to its own store, which must be this one (or pass ``None``),
            and its ``collect`` returns the labels the store held before.
        config: the loop's settings.
        callback: called with each ``RoundReport`` (e.g. to evaluate or log).
        rollout_policy: observation -> action for the rollouts segments are cut from; by default the
            agent's ``predict`` (give one when the agent acts on transformed observations, such as an
            SB3 model behind ``VecNormalize``).
    """

    def __init__(
        self,
        agent: Agent,
        env: gym.Env,
        reward_model: TrajectoryRewardModel,
        labeler: Callable[[Segment, Segment], float | None] | QueueLabeler,
        store: PreferenceStore | None = None,
        config: PreferenceConfig | None = None,
        callback: Callable[[RoundReport], None] | None = None,
        rollout_policy: Callable[[Any], Any] | None = None,
    ) -> None:
        self.agent = agent
        self.rollout_policy = rollout_policy
        self.env = env
        self.reward_model = reward_model
        self.labeler = labeler
        if isinstance(labeler, QueueLabeler):
            if store is not None and store.path.resolve() != labeler.store.path.resolve():
                raise ValueError(
                    f"the labeler writes its labels to {labeler.store.path}, not to {store.path}: "
                    "pass store=None or the labeler's store"
                )
            store = labeler.store
        self.store = store
        self.config = config or PreferenceConfig()
        self.callback = callback
        self.rng = np.random.default_rng(self.config.seed)
        # Labels already in the store count towards the budget and are trained on (a queue labeler
        # hands them over with its first collect).
        queued = isinstance(labeler, QueueLabeler)
        self.comparisons: list[Comparison] = list(store) if store is not None and not queued else []
        self.timesteps = 0
        self._fitted = False
        # SB3 and agents.PPO restart their step counters (and schedules) on every learn() unless told
        # not to; their progress bars would be redrawn every round.
        parameters = inspect.signature(agent.learn).parameters
        wanted = {"reset_num_timesteps": False, "progress_bar": False}
        self._learn_kwargs = {name: value for name, value in wanted.items() if name in parameters}

    def policy(self, observation: Any) -> Any:
        """The agent's action for one observation, as rollouts take it."""
        if self.rollout_policy is not None:
            return self.rollout_policy(observation)
        return self.agent.predict(observation, deterministic=self.config.deterministic_rollouts)[0]

    def query(self, segments: list[Segment], count: int) -> int:
        """Ask the labeler about up to ``count`` pairs of ``segments``; returns the labels given.

        A ``QueueLabeler`` is handed the pairs, and the labels it collected this round are returned:
        asynchronously these may answer earlier rounds' pairs (it waits for at least the 2 labels a
        fit needs).
        """
        pairs = self._choose_pairs(segments, count) if count > 0 and len(segments) >= 2 else []
        if isinstance(self.labeler, QueueLabeler):
            if len(pairs):
                self.labeler.submit([(segments[i], segments[j]) for i, j in pairs])
            collected = self.labeler.collect(at_least=max(0, 2 - len(self.comparisons)))
            self.comparisons.extend(collected)
            return len(collected)
        given = 0
        for i, j in pairs:
            label = self.labeler(segments[i], segments[j])
            if label is None:
                continue
            if self.store is not None:
                self.store.add(segments[i], segments[j], label)
            self.comparisons.append(Comparison(segments[i], segments[j], float(label)))
            given += 1
        return given

    def _choose_pairs(self, segments: list[Segment], count: int) -> np.ndarray:
        if (
            self.config.query == "disagreement"
            and self._fitted
            and self.reward_model.config.ensemble_size > 1
        ):
            returns = self.reward_model.member_returns(segments)
            return disagreement_pairs(returns, count, self.rng, oversample=self.config.oversample)
        return uniform_pairs(len(segments), count, self.rng)

    def start(self) -> None:
        """Plan the rounds' labels; labels already in the store, and pairs still queued from an earlier
        run, are counted against the earliest rounds' shares."""
        config = self.config
        self._schedule = label_schedule(config.label_budget, config.num_rounds, config.initial_label_fraction)
        self._already = len(self.comparisons)
        if isinstance(self.labeler, QueueLabeler):
            self._already += self.labeler.outstanding

    def run_round(self, round_index: int) -> RoundReport:
        """One round but its policy training: roll out, query the round's labels, refit the reward model."""
        config = self.config
        segments = collect_segments(
            self.env,
            self.policy,
            config.rollout_steps,
            config.segment_length,
            seed=int(self.rng.integers(2**31)),
            min_length=config.min_segment_length,
            render=config.render,
        )
        labels_wanted = self._schedule[round_index]
        taken = min(self._already, labels_wanted)
        self._already -= taken
        self.query(segments, labels_wanted - taken)
        fit = self.reward_model.fit(self.comparisons)
        self._fitted = True
        return RoundReport(
            round=round_index,
            timesteps=self.timesteps,
            labels=len(self.comparisons),
            fit=fit,
            mean_segment_true_return=float(np.mean([s.true_return for s in segments])),
        )

    def as_callback(self) -> PreferenceCallback:
        """This loop as an SB3 callback, ``agent`` being the SB3 model: ``agent.learn(
        config.total_timesteps, callback=trainer.as_callback())`` runs the rounds as it trains."""
        from rlhf_envs.preferences.sb3_callback import PreferenceCallback

        return PreferenceCallback(self)

    def train(self) -> list[RoundReport]:
        """Run every round (rollout, query, label, refit, train the policy); returns their reports.

        Round r trains the agent up to r + 1 shares of ``total_timesteps``. An agent that counts its
        steps (``num_timesteps``) and trains in whole rollouts overshoots a share; the next round
        trains only to its own share, so the total is what one ``learn(total_timesteps)`` would take.
        """
        config = self.config
        ends = np.linspace(0, config.total_timesteps, config.num_rounds + 1)[1:].round().astype(int)
        first_step = getattr(self.agent, "num_timesteps", None)
        self.start()
        reports = []
        for round_index, end in enumerate(ends):
            report = self.run_round(round_index)
            if end > self.timesteps:
                self.agent.learn(int(end - self.timesteps), **self._learn_kwargs)
            if first_step is None:
                self.timesteps = int(end)
            else:
                self.timesteps = int(self.agent.num_timesteps - first_step)
            reports.append(report)
            if self.callback is not None:
                self.callback(report)
        return reports
