"""A labelling session: the pairs waiting for labels, who is labelling which, and their answers.

A session lives in one folder, the *queue* (``<store>.queue/`` by default):

- ``journal.jsonl``: an append-only log, each line fsynced, of three events: a pair was added, a
  labeler answered a pair, an answer was undone. Reopening the session replays it: the pairs still
  waiting for labels are served again after a restart, and no acknowledged answer is lost.
- ``pairs/<pair id>.npz``: the two segments of a control pair (without their frames);
  ``clips/<pair id>_{left,right}.mp4`` (or ``.gif``): what the labeler watches.

An answer is ``left``, ``right``, ``tie`` or ``skip``. It is acknowledged once its journal line is on
disk, and goes into the preference store when it is final: when the same labeler answers again,
``undo_seconds`` after it was given, at ``flush()``, or when the session is reopened. Until then its
labeler may undo it (the pair is handed back to them). In the store a control label is P(left ≻
right) (1, 0 or 0.5); a text label is a TRL row, ``chosen`` the preferred continuation. Skips, and
ties between texts (TRL's format has no ties), stay in the journal only. Every stored row carries
``meta`` with the labeler's name, the time (ISO 8601, UTC), its ``label_id`` and ``pair_id``;
reopening a session writes only the final answers whose ``label_id`` the store lacks, so none is
stored twice.

Each pair wants ``labels_per_pair`` answers (a skip counts) from different labelers. A pair handed
to a labeler is leased to them for ``lease_seconds``: while the leases and answers cover the pair's
answers, nobody else gets it, so with one label per pair no two people see the same pair at once.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rlhf_envs.label.clips import MEDIA_TYPES, ClipFormat, write_clip
from rlhf_envs.preferences import JsonlStore, PreferenceStore, Segment
from rlhf_envs.preferences.text import TextPreferenceStore

__all__ = [
    "CHOICES",
    "Answer",
    "LabelConflict",
    "LabelSession",
    "Pair",
    "UnknownPair",
    "check_labeler_name",
]

Choice = Literal["left", "right", "tie", "skip"]
CHOICES: tuple[Choice, ...] = ("left", "right", "tie", "skip")
SIDES = ("left", "right")
#: P(left ≻ right) of a control answer.
CONTROL_LABELS = {"left": 1.0, "right": 0.0, "tie": 0.5}

_PAIR_ID = re.compile(r"[0-9a-f]{32}")
_LABELER = re.compile(r"[\w][\w .@+-]{0,63}")


class UnknownPair(LookupError):
    """No pair has this id."""


class LabelConflict(Exception):
    """The request is well formed but the session's state does not allow it (already answered, ...)."""


def check_labeler_name(name: Any) -> str:
    """A labeler's name: 1-64 letters, digits, spaces or ``_ . @ + -``, not starting with a symbol."""
    if not isinstance(name, str) or not _LABELER.fullmatch(name):
        raise ValueError(
            f"labeler must be 1-64 letters, digits, spaces or _ . @ + - (starting with a letter or digit), "
            f"got {name!r}"
        )
    return name


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Answer:
    """One labeler's answer to one pair; ``final`` once it can no longer be undone."""

    label_id: str
    pair_id: str
    labeler: str
    choice: Choice
    time: float
    final: bool = False


@dataclass
class Pair:
    """Two things to compare: two texts after a prompt, or two segments shown as clips."""

    pair_id: str
    kind: Literal["text", "control"]
    time: float
    meta: dict[str, Any]
    prompt: str | None = None
    texts: tuple[str, str] | None = None
    segments: str | None = None
    clips: dict[str, str] = field(default_factory=dict)
    #: labeler -> their answer (undone answers are removed).
    answers: dict[str, Answer] = field(default_factory=dict)
    #: labeler -> when their lease ends.
    leases: dict[str, float] = field(default_factory=dict)


class Journal(JsonlStore):
    """The session's event log (see the module docstring); every line is validated on write and read."""

    def validate_record(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        required = {
            "pair": {"pair_id", "kind", "time", "meta"},
            "answer": {"label_id", "pair_id", "labeler", "choice", "time"},
            "undo": {"label_id", "time"},
        }
        if event not in required:
            raise ValueError(f"unknown journal event {event!r}")
        missing = required[event] - record.keys()
        if missing:
            raise ValueError(f"{event} event lacks {sorted(missing)}")
        if event == "pair":
            if record["kind"] == "text":
                if not all(isinstance(record.get(key), str) for key in ("prompt", "left", "right")):
                    raise ValueError("a text pair needs string 'prompt', 'left' and 'right'")
            elif record["kind"] == "control":
                clips = record.get("clips")
                if not isinstance(record.get("segments"), str) or not isinstance(clips, dict):
                    raise ValueError("a control pair needs 'segments' and 'clips'")
                if set(clips) != set(SIDES) or not all(
                    Path(str(name)).name == name for name in clips.values()
                ):
                    raise ValueError(f"'clips' must name one file for each of {SIDES}, got {clips!r}")
            else:
                raise ValueError(f"pair kind must be 'text' or 'control', got {record['kind']!r}")
        if event == "answer" and record["choice"] not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {record['choice']!r}")


class LabelSession:
    """Pairs waiting for labels, handed out to labelers, their answers written to a preference store.

    Thread-safe: the web app's workers and a training loop share one session.

    Args:
        store: where final labels go: a ``PreferenceStore`` (control pairs, shown as clips) or a
            ``TextPreferenceStore`` (text pairs, TRL's columns).
        queue_dir: the session's folder (default ``<store path>.queue``); reopening it resumes the session.
        labels_per_pair: answers wanted per pair, each from a different labeler (> 1 for agreement studies).
        undo_seconds: how long an answer can be undone (also undone no more once its labeler answers
            again); 0 writes every answer to the store at once and disables undo.
        lease_seconds: how long a pair handed to a labeler is kept from the others.
        target: the number of labels the progress line counts towards (default: pairs × labels_per_pair).
        clip_format: ``"mp4"`` (falls back to GIF when ffmpeg fails) or ``"gif"``.
        clock: the time in seconds since the epoch (replaceable in tests).
    """

    def __init__(
        self,
        store: PreferenceStore | TextPreferenceStore,
        queue_dir: str | os.PathLike | None = None,
        *,
        labels_per_pair: int = 1,
        undo_seconds: float = 10.0,
        lease_seconds: float = 300.0,
        target: int | None = None,
        clip_format: ClipFormat = "mp4",
        clock: Callable[[], float] = time.time,
    ) -> None:
        if isinstance(store, PreferenceStore):
            self.kind: Literal["text", "control"] = "control"
        elif isinstance(store, TextPreferenceStore):
            self.kind = "text"
        else:
            raise TypeError(
                f"store must be a PreferenceStore or a TextPreferenceStore, got {type(store).__name__}"
            )
        if labels_per_pair < 1:
            raise ValueError(f"labels_per_pair must be >= 1, got {labels_per_pair}")
        if undo_seconds < 0 or lease_seconds <= 0:
            raise ValueError(
                f"undo_seconds must be >= 0 and lease_seconds > 0, got {undo_seconds}, {lease_seconds}"
            )
        if target is not None and target < 0:
            raise ValueError(f"target must be >= 0, got {target}")
        self.store = store
        self.queue_dir = Path(queue_dir) if queue_dir is not None else Path(f"{store.path}.queue")
        self.labels_per_pair = labels_per_pair
        self.undo_seconds = undo_seconds
        self.lease_seconds = lease_seconds
        self.target = target
        self.clip_format = clip_format
        self.clock = clock
        self._lock = threading.RLock()
        #: Notified whenever an answer becomes final or a pair is added.
        self.changed = threading.Condition(self._lock)
        self._pairs: dict[str, Pair] = {}
        self._open: dict[str, Pair] = {}  # pairs still wanting answers, oldest first
        self._held: dict[str, Answer] = {}  # labeler -> their answer that can still be undone
        # The session is the journal's only writer; a last line torn by a crash was never acknowledged.
        self.journal = Journal(self.queue_dir / "journal.jsonl", repair=True)
        with self._lock:
            self._replay()

    # -- opening --------------------------------------------------------------------------------
    def _replay(self) -> None:
        answers: dict[str, Answer] = {}
        for record in self.journal.records:
            if record["event"] == "pair":
                if record["kind"] != self.kind:
                    raise ValueError(
                        f"{self.journal.path} holds {record['kind']} pairs but the store {self.store.path} "
                        f"takes {self.kind} labels"
                    )
                self._register(self._pair_from_record(record))
            elif record["event"] == "answer" and record["pair_id"] in self._pairs:
                answer = Answer(
                    **{key: record[key] for key in ("label_id", "pair_id", "labeler", "choice", "time")}
                )
                answers[answer.label_id] = answer
                self._pairs[answer.pair_id].answers[answer.labeler] = answer
            elif record["event"] == "undo" and record["label_id"] in answers:
                answer = answers.pop(record["label_id"])
                self._pairs[answer.pair_id].answers.pop(answer.labeler, None)
        # After a restart every acknowledged answer is final; those a crash kept from the store go there now.
        stored = {record.get("meta", {}).get("label_id") for record in self.store.records}
        for answer in answers.values():
            self._finalize(answer, write=answer.label_id not in stored)
        self._open = {key: pair for key, pair in self._pairs.items() if self._wants_answers(pair)}

    def _pair_from_record(self, record: Mapping[str, Any]) -> Pair:
        pair = Pair(record["pair_id"], record["kind"], record["time"], dict(record["meta"]))
        if pair.kind == "text":
            pair.prompt, pair.texts = record["prompt"], (record["left"], record["right"])
        else:
            pair.segments, pair.clips = record["segments"], dict(record["clips"])
        return pair

    def _register(self, pair: Pair) -> None:
        self._pairs[pair.pair_id] = pair
        self._open[pair.pair_id] = pair

    # -- adding pairs ---------------------------------------------------------------------------
    def add_text_pair(self, prompt: str, left: str, right: str, meta: Mapping[str, Any] | None = None) -> str:
        """Queue two continuations of ``prompt`` for comparison; returns the pair's id."""
        if self.kind != "text":
            raise TypeError("this session labels control segments; text pairs need a TextPreferenceStore")
        if not all(isinstance(value, str) for value in (prompt, left, right)):
            raise TypeError("prompt, left and right must be strings")
        record = {"prompt": prompt, "left": left, "right": right}
        return self._add_pair("text", record, meta)

    def add_segment_pair(
        self, left: Segment, right: Segment, fps: float = 10.0, meta: Mapping[str, Any] | None = None
    ) -> str:
        """Queue two segments with image frames for comparison (rendered to clips now); returns the id.

        Collect them with ``collect_segments(env, ..., render=True)`` on an env made with
        ``render_mode="rgb_array"``; ``fps`` is the clips' frame rate (the env's ``render_fps``).
        """
        if self.kind != "control":
            raise TypeError("this session labels texts; segment pairs need a PreferenceStore")
        if not isinstance(left, Segment) or not isinstance(right, Segment):
            raise TypeError("left and right must be Segment objects")
        pair_id = uuid.uuid4().hex
        clips = {
            side: write_clip(
                segment.frames, self.queue_dir / "clips" / f"{pair_id}_{side}", fps, self.clip_format
            ).name
            for side, segment in zip(SIDES, (left, right), strict=True)
        }
        # The store gets the segments without their frames: the clips show them, the reward model never does.
        arrays = {f"a_{k}": v for k, v in dataclasses.replace(left, frames=None).to_arrays().items()}
        arrays |= {f"b_{k}": v for k, v in dataclasses.replace(right, frames=None).to_arrays().items()}
        segments = self.queue_dir / "pairs" / f"{pair_id}.npz"
        segments.parent.mkdir(parents=True, exist_ok=True)
        temporary = segments.with_suffix(".partial")
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, segments)
        return self._add_pair("control", {"segments": segments.name, "clips": clips}, meta, pair_id)

    def _add_pair(
        self, kind: str, fields: dict[str, Any], meta: Mapping[str, Any] | None, pair_id: str | None = None
    ) -> str:
        record = {"event": "pair", "pair_id": pair_id or uuid.uuid4().hex, "kind": kind, "time": self.clock()}
        record |= fields | {"meta": dict(meta or {})}
        with self._lock:
            self.journal.append(record)
            self._register(self._pair_from_record(record))
            self.changed.notify_all()
        return record["pair_id"]

    # -- labelling ------------------------------------------------------------------------------
    def pair(self, pair_id: str) -> Pair:
        """The pair with this id (``UnknownPair`` if there is none)."""
        with self._lock:
            if not isinstance(pair_id, str) or pair_id not in self._pairs:
                raise UnknownPair(f"no pair has the id {pair_id!r}")
            return self._pairs[pair_id]

    def next_pair(self, labeler: str) -> Pair | None:
        """The pair ``labeler`` should label now (leased to them), or ``None`` when none is waiting."""
        check_labeler_name(labeler)
        with self._lock:
            now = self.clock()
            self._commit_due(now)
            held = next((p for p in self._open.values() if p.leases.get(labeler, 0) > now), None)
            if held is None:
                held = next((p for p in self._open.values() if self._available(p, labeler, now)), None)
            if held is not None:
                held.leases[labeler] = now + self.lease_seconds
            return held

    def answer(self, labeler: str, pair_id: str, choice: str) -> tuple[Answer, bool]:
        """Record ``labeler``'s ``choice`` on a pair; returns the answer and whether it was a repeat.

        The answer is on disk (in the journal) when this returns. A repeat of the same answer by the
        same labeler (a double submit) returns the first answer and writes nothing.

        Raises ``UnknownPair``, ``ValueError`` (bad choice or name), ``LabelConflict`` (answered
        differently before, the pair has all its answers, or it is leased to someone else).
        """
        check_labeler_name(labeler)
        if choice not in CHOICES:
            raise ValueError(f"choice must be one of {CHOICES}, got {choice!r}")
        with self._lock:
            now = self.clock()
            self._commit_due(now)
            pair = self.pair(pair_id)
            previous = pair.answers.get(labeler)
            if previous is not None:
                if previous.choice == choice:
                    return previous, True
                raise LabelConflict(
                    f"{labeler} already answered {previous.choice!r} on pair {pair_id}; undo it first"
                )
            if not self._wants_answers(pair):
                raise LabelConflict(f"pair {pair_id} already has its {self.labels_per_pair} answer(s)")
            if pair.leases.get(labeler, 0) <= now and not self._available(pair, labeler, now):
                raise LabelConflict(f"pair {pair_id} is being labelled by someone else")
            answer = Answer(uuid.uuid4().hex, pair_id, labeler, choice, now)  # type: ignore[arg-type]
            fields = {
                key: getattr(answer, key) for key in ("label_id", "pair_id", "labeler", "choice", "time")
            }
            self.journal.append({"event": "answer", **fields})
            pair.answers[labeler] = answer
            pair.leases.pop(labeler, None)
            if not self._wants_answers(pair):
                self._open.pop(pair_id, None)
            earlier = self._held.pop(labeler, None)
            if earlier is not None:
                self._finalize(earlier)
            if self.undo_seconds > 0:
                self._held[labeler] = answer
            else:
                self._finalize(answer)
            return answer, False

    def undo(self, labeler: str) -> Answer:
        """Take back ``labeler``'s last answer while it is not final; its pair is handed back to them."""
        check_labeler_name(labeler)
        with self._lock:
            now = self.clock()
            self._commit_due(now)
            answer = self._held.pop(labeler, None)
            if answer is None:
                raise LabelConflict(
                    f"{labeler} has nothing to undo: an answer can be undone for {self.undo_seconds:g} s "
                    "and until the next one, then it is in the store"
                )
            self.journal.append({"event": "undo", "label_id": answer.label_id, "time": now})
            pair = self._pairs[answer.pair_id]
            del pair.answers[labeler]
            # The pair they were shown next goes back to the others: the undone one is theirs now.
            for other in self._open.values():
                other.leases.pop(labeler, None)
            pair.leases[labeler] = now + self.lease_seconds
            self._open[pair.pair_id] = pair
            return answer

    def answers(self, pair_id: str, final_only: bool = True) -> list[Answer]:
        """The answers a pair has (by default only the final ones)."""
        with self._lock:
            return [a for a in self.pair(pair_id).answers.values() if a.final or not final_only]

    def commit_due(self) -> int:
        """Make final the answers older than ``undo_seconds``; returns how many."""
        with self._lock:
            return self._commit_due(self.clock())

    def flush(self) -> int:
        """Make every answer final now (at shutdown); returns how many."""
        with self._lock:
            return self._commit_due(math.inf)

    def clip_path(self, pair_id: str, side: str) -> tuple[Path, str]:
        """The clip file of one side of a control pair and its media type."""
        pair = self.pair(pair_id)
        if side not in SIDES or pair.kind != "control":
            raise UnknownPair(f"pair {pair_id} has no {side!r} clip")
        path = self.queue_dir / "clips" / pair.clips[side]
        return path, MEDIA_TYPES[path.suffix]

    @property
    def pending(self) -> list[str]:
        """Ids of the pairs still wanting answers, oldest first."""
        with self._lock:
            return list(self._open)

    @property
    def unanswered(self) -> int:
        """Pairs whose answers are not all final: still waiting, or answered within the undo window."""
        with self._lock:
            return len(self._open) + sum(1 for a in self._held.values() if a.pair_id not in self._open)

    @property
    def settled(self) -> bool:
        """Every pair has its answers and every answer is final (in the store unless a skip or text tie)."""
        with self._lock:
            return not self._open and not self._held

    def __len__(self) -> int:
        return len(self._pairs)

    # -- progress -------------------------------------------------------------------------------
    def progress(self, labeler: str | None = None, window_seconds: float = 300.0) -> dict[str, Any]:
        """Labels given (skips not counted) out of the target, labels per minute, agreement.

        The rate counts the labels of the last ``window_seconds``, over at least a minute.
        """
        with self._lock:
            now = self.clock()
            self._commit_due(now)
            answers = [answer for pair in self._pairs.values() for answer in pair.answers.values()]
            report = {
                **self._counts(answers, now, window_seconds),
                "target": self.target if self.target is not None else len(self._pairs) * self.labels_per_pair,
                "pairs": len(self._pairs),
                "pending_pairs": len(self._open),
                "labels_per_pair": self.labels_per_pair,
                "agreement": self._agreement(),
            }
            if labeler is not None:
                report["labeler"] = {
                    "name": check_labeler_name(labeler),
                    **self._counts([a for a in answers if a.labeler == labeler], now, window_seconds),
                    "can_undo": labeler in self._held,
                }
            return report

    @staticmethod
    def _counts(answers: list[Answer], now: float, window_seconds: float) -> dict[str, Any]:
        labels = [answer for answer in answers if answer.choice != "skip"]
        recent = [answer.time for answer in labels if now - answer.time <= window_seconds]
        span = min(window_seconds, max(60.0, now - min(recent, default=now)))
        return {
            "labelled": len(labels),
            "skipped": len(answers) - len(labels),
            "per_minute": round(len(recent) * 60.0 / span, 2),
        }

    def _agreement(self) -> dict[str, Any] | None:
        """Pairwise agreement: of all pairs of labelers who labelled the same pair, the share who agree."""
        if self.labels_per_pair < 2:
            return None
        agreeing = compared = pairs = 0
        for pair in self._pairs.values():
            choices = [a.choice for a in pair.answers.values() if a.choice != "skip"]
            if len(choices) < 2:
                continue
            pairs += 1
            for first, second in itertools.combinations(choices, 2):
                compared += 1
                agreeing += first == second
        return {"pairs": pairs, "comparisons": compared, "rate": agreeing / compared if compared else None}

    # -- internals ------------------------------------------------------------------------------
    def _wants_answers(self, pair: Pair) -> bool:
        return len(pair.answers) < self.labels_per_pair

    def _available(self, pair: Pair, labeler: str, now: float) -> bool:
        if labeler in pair.answers:
            return False
        others = sum(1 for who, until in pair.leases.items() if who != labeler and until > now)
        return len(pair.answers) + others < self.labels_per_pair

    def _commit_due(self, now: float) -> int:
        due = [who for who, answer in self._held.items() if now - answer.time >= self.undo_seconds]
        for who in due:
            self._finalize(self._held.pop(who))
        return len(due)

    def _finalize(self, answer: Answer, write: bool = True) -> None:
        pair = self._pairs[answer.pair_id]
        if write:
            self._store(pair, answer)
        answer.final = True
        self.changed.notify_all()

    def _store(self, pair: Pair, answer: Answer) -> None:
        if answer.choice == "skip":
            return
        meta = pair.meta | {
            "labeler": answer.labeler,
            "time": _iso(answer.time),
            "label_id": answer.label_id,
            "pair_id": pair.pair_id,
        }
        if pair.kind == "control":
            left, right = self._segments(pair)
            self.store.add(left, right, CONTROL_LABELS[answer.choice], meta)  # type: ignore[union-attr]
        elif answer.choice != "tie":
            assert pair.prompt is not None and pair.texts is not None
            chosen, rejected = pair.texts if answer.choice == "left" else pair.texts[::-1]
            self.store.add(pair.prompt, chosen, rejected, meta)  # type: ignore[call-arg]

    def _segments(self, pair: Pair) -> tuple[Segment, Segment]:
        with np.load(self.queue_dir / "pairs" / str(pair.segments), allow_pickle=False) as arrays:
            return tuple(  # type: ignore[return-value]
                Segment.from_arrays({k[2:]: arrays[k] for k in arrays.files if k.startswith(prefix)})
                for prefix in ("a_", "b_")
            )

    def segments(self, pair_id: str) -> tuple[Segment, Segment]:
        """The two segments (without frames) of a control pair."""
        pair = self.pair(pair_id)
        if pair.kind != "control":
            raise TypeError(f"pair {pair_id} is a text pair")
        return self._segments(pair)
