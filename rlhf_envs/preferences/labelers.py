"""Labelers: who says which of two segments is better.

A labeler is any callable ``(segment_a, segment_b) -> label | None`` with label P(a ≻ b) in
{0, 0.5, 1} and ``None`` for a skipped pair.

- ``SyntheticLabeler``: the standard stand-in for a human (Christiano et al., 2017), Boltzmann-
  rational in the segments' true returns.
- ``HumanLabeler``: shows the two segments side by side (a GIF on disk for image frames, the
  terminal for text frames) and reads left / right / equal / skip from the keyboard.

A ``QueueLabeler`` takes many pairs at once and answers them later: people in the browser
(``rlhf_envs.label.WebLabeler``, an application on top of this layer).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import imageio.v3 as iio
import numpy as np
import torch

from rlhf_envs.preferences.store import PreferenceStore
from rlhf_envs.rewards.bradley_terry import preference_probability
from rlhf_envs.rewards.comparisons import Comparison, Segment

__all__ = ["HumanLabeler", "QueueLabeler", "SyntheticLabeler"]


@runtime_checkable
class QueueLabeler(Protocol):
    """A labeler that is handed pairs and answers them as it can.

    ``submit(pairs)`` queues pairs of segments; ``collect(at_least)`` returns the comparisons in
    the labeler's ``store`` not returned before (the first call returns an earlier run's too): a
    synchronous labeler first waits until every queued pair is answered, an asynchronous one only
    until ``at_least`` are there. ``outstanding`` counts the pairs whose labels have not been
    collected yet: queued, being answered, or answered since the last ``collect``.
    """

    @property
    def store(self) -> PreferenceStore: ...

    @property
    def outstanding(self) -> int: ...

    def submit(self, pairs: Sequence[tuple[Segment, Segment]], meta: dict[str, Any] | None = None) -> Any: ...

    def collect(self, at_least: int = 0) -> list[Comparison]: ...


class SyntheticLabeler:
    """Boltzmann-rational preferences from a hidden true score (by default the true return).

    For returns R_a and R_b:

    - if |R_a − R_b| <= ``tie_margin``, the label is 0.5 (equal);
    - else, with probability ``error_rate`` the label is a fair coin flip (a distracted labeler);
    - else the label is 1 (a preferred) with probability σ(β (R_a − R_b)), 0 otherwise.

    So P(label = 1) = (1 − error_rate) σ(β (R_a − R_b)) + error_rate / 2 outside the tie margin.

    Args:
        beta: rationality (inverse temperature); ``math.inf`` always picks the higher return, 0 picks
            at random.
        tie_margin: returns closer than this are labelled equal.
        error_rate: the probability of a uniformly random answer.
        seed: seeds the labeler's own ``numpy.random.Generator``.
        score: the hidden score of a segment; defaults to its true return.
    """

    def __init__(
        self,
        beta: float = 1.0,
        tie_margin: float = 0.0,
        error_rate: float = 0.0,
        seed: int | None = None,
        score: Callable[[Segment], float] | None = None,
    ) -> None:
        if not beta >= 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        if not tie_margin >= 0:
            raise ValueError(f"tie_margin must be >= 0, got {tie_margin}")
        if not 0 <= error_rate <= 1:
            raise ValueError(f"error_rate must be in [0, 1], got {error_rate}")
        self.beta = beta
        self.tie_margin = tie_margin
        self.error_rate = error_rate
        self.score = score or (lambda segment: segment.true_return)
        self.rng = np.random.default_rng(seed)

    def probability(self, return_a: np.ndarray, return_b: np.ndarray) -> np.ndarray:
        """P(label = 1) for returns outside the tie margin (the model the labels are drawn from)."""
        score_a = torch.as_tensor(np.asarray(return_a, dtype=np.float64))
        score_b = torch.as_tensor(np.asarray(return_b, dtype=np.float64))
        if math.isinf(self.beta):
            rational = (score_a > score_b).double()
        else:
            rational = preference_probability(score_a, score_b, self.beta)
        return ((1 - self.error_rate) * rational + self.error_rate / 2).numpy()

    def label_returns(self, return_a: np.ndarray, return_b: np.ndarray) -> np.ndarray:
        """Labels (0, 0.5 or 1) for arrays of returns, one draw each."""
        return_a = np.asarray(return_a, dtype=np.float64)
        return_b = np.asarray(return_b, dtype=np.float64)
        if return_a.shape != return_b.shape:
            raise ValueError(f"return_a {return_a.shape} and return_b {return_b.shape} differ in shape")
        chose_a = self.rng.random(return_a.shape) < self.probability(return_a, return_b)
        tie = np.abs(return_a - return_b) <= self.tie_margin
        return np.where(tie, 0.5, chose_a.astype(np.float64))

    def __call__(self, segment_a: Segment, segment_b: Segment) -> float:
        return float(self.label_returns(self.score(segment_a), self.score(segment_b)))


_ANSWERS = {"l": 1.0, "left": 1.0, "r": 0.0, "right": 0.0, "e": 0.5, "equal": 0.5, "s": None, "skip": None}


class HumanLabeler:
    """Shows two segments side by side and records the keyboard's answer.

    Image frames ([T, H, W, 3] uint8, from ``collect_segments(..., render=True)`` on an env with
    ``render_mode="rgb_array"``) are written as one GIF, left segment on the left, to
    ``output_dir``; text frames (``render_mode="ansi"``) are printed side by side in the terminal.
    The answer is ``l``/``left`` (left better, label 1), ``r``/``right`` (label 0),
    ``e``/``equal`` (0.5) or ``s``/``skip`` (``None``: no label).

    Args:
        output_dir: where the GIFs go.
        fps: GIF frame rate.
        input_fn: reads one answer (``input`` by default; replace it to drive the labeler from code).
        print_fn: shows text (``print`` by default).
    """

    def __init__(
        self,
        output_dir: str | Path = "preference_views",
        fps: float = 10.0,
        input_fn: Callable[[str], str] = input,
        print_fn: Callable[[str], None] = print,
    ) -> None:
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.output_dir = Path(output_dir)
        self.fps = fps
        self.input_fn = input_fn
        self.print_fn = print_fn
        self._shown = itertools.count()

    def __call__(self, segment_a: Segment, segment_b: Segment) -> float | None:
        self.show(segment_a, segment_b)
        while True:
            answer = self.input_fn("Which is better? [l]eft / [r]ight / [e]qual / [s]kip: ").strip().lower()
            if answer in _ANSWERS:
                return _ANSWERS[answer]
            self.print_fn(f"Please answer l, r, e or s (got {answer!r}).")

    def show(self, segment_a: Segment, segment_b: Segment) -> Path | None:
        """Display the pair; returns the GIF's path for image frames, ``None`` for text."""
        if segment_a.frames is None or segment_b.frames is None:
            raise ValueError(
                "both segments need frames: collect them with collect_segments(..., render=True)"
            )
        if segment_a.frames.dtype.kind == "U" and segment_b.frames.dtype.kind == "U":
            self.print_fn(side_by_side_text(segment_a.frames, segment_b.frames))
            return None
        path = self.output_dir / f"pair_{next(self._shown):05d}.gif"
        self.output_dir.mkdir(parents=True, exist_ok=True)
        iio.imwrite(
            path, side_by_side_frames(segment_a.frames, segment_b.frames), duration=1000 / self.fps, loop=0
        )
        self.print_fn(f"Left and right segments: {path}")
        return path


def side_by_side_frames(left: np.ndarray, right: np.ndarray, gap: int = 8) -> np.ndarray:
    """Join two image sequences [T, H, W, 3] side by side; the shorter one holds its last frame."""
    if left.ndim != 4 or right.ndim != 4 or left.shape[-1] != 3 or right.shape[-1] != 3:
        raise ValueError(f"image frames must be [T, H, W, 3], got {left.shape} and {right.shape}")
    steps = max(len(left), len(right))
    height = max(left.shape[1], right.shape[1])
    width = left.shape[2] + gap + right.shape[2]
    canvas = np.full((steps, height, width, 3), 255, dtype=np.uint8)
    for t in range(steps):
        canvas[t, : left.shape[1], : left.shape[2]] = left[min(t, len(left) - 1)]
        canvas[t, : right.shape[1], left.shape[2] + gap :] = right[min(t, len(right) - 1)]
    return canvas


def side_by_side_text(left: np.ndarray, right: np.ndarray) -> str:
    """Two sequences of text frames as one text, step by step, left and right in two columns."""
    blocks = []
    for t in range(max(len(left), len(right))):
        left_lines = str(left[t]).splitlines() if t < len(left) else []
        right_lines = str(right[t]).splitlines() if t < len(right) else []
        width = max((len(line) for line in left_lines), default=0)
        rows = itertools.zip_longest(left_lines, right_lines, fillvalue="")
        blocks.append(f"step {t}\n" + "\n".join(f"{a.ljust(width)} | {b}" for a, b in rows))
    return "\n".join(blocks)
