"""Who says which of two completions of a prompt is better.

A text labeler is any callable ``(prompt, completion_a, completion_b) -> label | None`` with label
1.0 when a is preferred, 0.0 when b is, :data:`TIE` (0.5) when neither is better, and ``None`` for a
skipped pair; :func:`collect_text_preferences` turns its answers into ``(prompt, chosen, rejected)`` rows
of a :class:`TextPreferenceStore` (a tie is stored, marked as one, but carries no preference).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import TextIO

import numpy as np
import torch
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from rlhf_envs.preferences.text import TextPreferenceStore
from rlhf_envs.rewards.bradley_terry import preference_probability

TextLabeler = Callable[[str, str, str], "float | None"]
#: The label of a pair in which neither completion is better ("equal", as InstructGPT's and Anthropic's
#: labelers may answer).
TIE = 0.5

__all__ = [
    "TIE",
    "SyntheticTextLabeler",
    "TerminalTextLabeler",
    "TextLabeler",
    "VaderSentiment",
    "collect_text_preferences",
]


class VaderSentiment:
    """VADER's compound sentiment of the completion, in [−1, 1] (the default hidden score).

    VADER's authors call a text neutral when its compound lies within ±:attr:`NEUTRAL` of zero.
    """

    NEUTRAL = 0.05

    def __init__(self) -> None:
        self._analyzer = SentimentIntensityAnalyzer()

    def __call__(self, prompt: str, completion: str) -> float:
        return float(self._analyzer.polarity_scores(completion)["compound"])


class SyntheticTextLabeler:
    """Boltzmann-rational choices from a hidden score: P(a ≻ b) = σ(β (s(x, a) − s(x, b))).

    The stand-in for a human of Christiano et al. (2017) for text. With ``tie_below`` it also answers
    "equal" (:data:`TIE`), as a person asked to compare two texts without the quality in question would,
    instead of flipping a coin.

    Args:
        score: the hidden oracle ``(prompt, completion) -> float``; defaults to VADER's sentiment of
            the completion, so the labels prefer positive text.
        beta: rationality; larger is more consistent, 0 answers at random.
        seed: seeds the labeler's own ``numpy.random.Generator``.
        tie_below: a tie when both scores lie within ±``tie_below`` of zero (neither completion carries
            the score's signal; ``VaderSentiment.NEUTRAL`` is VADER's neutral band) or the two scores
            are equal; ``None``: never a tie.
    """

    def __init__(
        self,
        score: Callable[[str, str], float] | None = None,
        beta: float = 5.0,
        seed: int | None = None,
        tie_below: float | None = None,
    ) -> None:
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if tie_below is not None and not tie_below >= 0:
            raise ValueError(f"tie_below must be >= 0 or None, got {tie_below}")
        self.score = score or VaderSentiment()
        self.beta = beta
        self.tie_below = tie_below
        self.rng = np.random.default_rng(seed)

    def probability(self, prompt: str, completion_a: str, completion_b: str) -> float:
        """P(a ≻ b) under the hidden score."""
        return self._probability(self.score(prompt, completion_a), self.score(prompt, completion_b))

    def is_tie(self, prompt: str, completion_a: str, completion_b: str) -> bool:
        """Whether this labeler calls the pair equal (never without ``tie_below``)."""
        return self._tie(self.score(prompt, completion_a), self.score(prompt, completion_b))

    def __call__(self, prompt: str, completion_a: str, completion_b: str) -> float:
        # Each completion is scored once: the tie rule and the choice read the same two scores.
        score_a, score_b = self.score(prompt, completion_a), self.score(prompt, completion_b)
        if self._tie(score_a, score_b):
            return TIE
        return float(self.rng.random() < self._probability(score_a, score_b))

    def _probability(self, score_a: float, score_b: float) -> float:
        scores = torch.tensor([score_a, score_b], dtype=torch.float64)
        return float(preference_probability(scores[0], scores[1], self.beta))

    def _tie(self, score_a: float, score_b: float) -> bool:
        if self.tie_below is None:
            return False
        return score_a == score_b or max(abs(score_a), abs(score_b)) < self.tie_below


class TerminalTextLabeler:
    """Shows the prompt and two completions and reads the person's choice: ``1``, ``2``, ``=`` (equal:
    a tie) or ``s`` (skip).

    Args:
        input_stream: where answers are read from (standard input by default; a ``StringIO`` in tests).
        output_stream: where the pair and the question are written.
    """

    def __init__(self, input_stream: TextIO | None = None, output_stream: TextIO | None = None) -> None:
        self.input_stream = input_stream or sys.stdin
        self.output_stream = output_stream or sys.stdout

    def __call__(self, prompt: str, completion_a: str, completion_b: str) -> float | None:
        write = self.output_stream.write
        write(f"\n=== prompt ===\n{prompt}\n--- 1 ---\n{completion_a}\n--- 2 ---\n{completion_b}\n")
        while True:
            write("Which completion is better? [1/2, = equal, s = skip] ")
            self.output_stream.flush()
            line = self.input_stream.readline()
            if not line:  # end of input: nothing more will be answered
                return None
            answer = line.strip().lower()
            if answer in ("1", "2"):
                return 1.0 if answer == "1" else 0.0
            if answer == "=":
                return TIE
            if answer == "s":
                return None
            write(f"please answer 1, 2, = or s, not {answer!r}\n")


def collect_text_preferences(
    store: TextPreferenceStore,
    labeler: TextLabeler,
    prompts: Sequence[str],
    completions_a: Sequence[str],
    completions_b: Sequence[str],
) -> int:
    """Ask ``labeler`` about each pair and append every answered one to ``store`` (one fsync each); a
    tie is stored with the pair in the order shown, marked as a tie.

    Returns the number of comparisons added, ties included (skipped pairs are not stored).
    """
    if not len(prompts) == len(completions_a) == len(completions_b):
        raise ValueError(
            f"got {len(prompts)} prompts, {len(completions_a)} and {len(completions_b)} completions; "
            "they must be equally many"
        )
    added = 0
    for prompt, a, b in zip(prompts, completions_a, completions_b, strict=True):
        label = labeler(prompt, a, b)
        if label is None:
            continue
        if label not in (0.0, 1.0, TIE):
            raise ValueError(
                f"a text label is 1 (a preferred), 0 (b preferred) or {TIE} (a tie), got {label!r}"
            )
        chosen, rejected = (b, a) if label == 0.0 else (a, b)
        store.add(prompt, chosen, rejected, tie=label == TIE)
        added += 1
    return added
