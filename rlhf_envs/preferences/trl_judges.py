"""Adapters both ways between our text labelers and TRL's pairwise judges.

A text labeler answers ``(prompt, completion_a, completion_b) -> 1.0 | 0.0 | None`` (a preferred, b
preferred, skipped). A TRL pairwise judge (``trl.experimental.judges.BasePairwiseJudge``) answers a
batch: ``judge(prompts, completions: list of [a, b] pairs, shuffle_order) -> list[int]``, the index of
the better completion of each pair, or -1 where it failed.

- :class:`JudgeLabeler` makes a TRL judge (an LLM judge, PairRM...) label our pairs, e.g. with
  ``collect_text_preferences``; a failed judgement (-1) is a skipped pair.
- :class:`LabelerJudge` makes any of our labelers (``SyntheticTextLabeler``, ``TerminalTextLabeler``,
  the web labeler) a TRL ``BasePairwiseJudge``, for TRL code that takes a judge.

Needs TRL 1.0 (``pip install rlhf-envs[trl]``): TRL 1.1 removed its judges.
"""

from __future__ import annotations

import warnings

import numpy as np

from rlhf_envs.preferences.text_labelers import TextLabeler

with warnings.catch_warnings():
    # Importing trl.experimental warns that its API may change; the pinned version is what we test.
    warnings.simplefilter("ignore")
    try:
        from trl.experimental.judges import BasePairwiseJudge
    except ImportError as error:
        raise ImportError(
            "the TRL judge adapters need trl 1.0 (1.1 removed its judges): pip install 'rlhf-envs[trl]'"
        ) from error

__all__ = ["JudgeLabeler", "LabelerJudge"]

FAILED = -1


class JudgeLabeler:
    """A TRL pairwise judge as one of our text labelers: 1.0 when it picks a, 0.0 for b, None when it fails.

    Args:
        judge: a ``BasePairwiseJudge`` (or anything with its ``judge`` method).
        shuffle_order: let the judge shuffle each pair against position bias (TRL's option).
    """

    def __init__(self, judge: BasePairwiseJudge, shuffle_order: bool = True) -> None:
        if not callable(getattr(judge, "judge", None)):
            raise TypeError(
                f"judge must have a judge(prompts, completions) method, got {type(judge).__name__}"
            )
        self.judge = judge
        self.shuffle_order = shuffle_order

    def __call__(self, prompt: str, completion_a: str, completion_b: str) -> float | None:
        (choice,) = self.judge.judge(
            [prompt], [[completion_a, completion_b]], shuffle_order=self.shuffle_order
        )
        if choice == FAILED:
            return None
        if choice not in (0, 1):
            raise ValueError(f"a pairwise judge answers 0, 1 or -1 for a pair, got {choice!r}")
        return 1.0 if choice == 0 else 0.0


class LabelerJudge(BasePairwiseJudge):
    """One of our text labelers as a TRL ``BasePairwiseJudge``; a skipped pair is judged -1 (failed).

    Args:
        labeler: ``(prompt, completion_a, completion_b) -> 1.0 | 0.0 | None``.
        seed: seeds the order shuffling (``shuffle_order=True``), so a seeded run judges the same.
    """

    def __init__(self, labeler: TextLabeler, seed: int | None = None) -> None:
        if not callable(labeler):
            raise TypeError(f"labeler must be callable, got {type(labeler).__name__}")
        self.labeler = labeler
        self.rng = np.random.default_rng(seed)

    def judge(
        self, prompts: list[str], completions: list[list[str]], shuffle_order: bool = True
    ) -> list[int]:
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completion pairs")
        choices = []
        for prompt, pair in zip(prompts, completions, strict=True):
            if len(pair) != 2:
                raise ValueError(f"a pairwise judge compares two completions, got {len(pair)}")
            swap = shuffle_order and bool(self.rng.random() < 0.5)
            first, second = (pair[1], pair[0]) if swap else (pair[0], pair[1])
            label = self.labeler(prompt, first, second)
            if label is None:
                choices.append(FAILED)
                continue
            if label not in (0.0, 1.0):
                raise ValueError(f"a text label is 1 (a preferred) or 0 (b preferred), got {label!r}")
            first_wins = label == 1.0
            choices.append(int(first_wins == swap))  # index into the pair as given
        return choices
