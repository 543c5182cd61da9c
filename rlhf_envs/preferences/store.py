"""Append-only, crash-safe preference storage on disk.

``JsonlStore`` is the generic base: one JSON object per line, each line flushed and fsynced as it
is appended, so a killed process loses no record already appended. Reading validates every line;
a line that is not valid JSON or fails the subclass's ``validate_record`` raises a
``PreferenceFileError`` that names the file and the 1-based line number. With
``skip_invalid=True`` bad lines are skipped instead (collected in ``store.errors``), so the rest of
the file stays readable.

Subclassing ``JsonlStore`` takes two hooks:

- ``validate_record(record)``: raise ``ValueError`` when a record is malformed; it runs before a
  record is written and on every line read back.
- ``decode(record)``: what indexing and iteration return for a record (the dict itself by default).

A store may record its :class:`Provenance` — the model or policy that produced the pairs, the
prompts or env, the labeler and the seed — in a sidecar ``<path>.provenance.json`` (the lines stay
in their own format, e.g. TRL's). Labels of one model's samples say little about another's: opening
the file for another model raises :class:`ProvenanceMismatch` unless allowed.

``PreferenceStore`` builds the control store on it: each comparison's two segments go to one
``.npz`` file in a folder beside the JSONL file (written atomically, before the line that
references it), and the line holds the label and the file name.

What a killed writer can leave behind — a torn last line, a ``.npz`` no line references yet, a
``.tmp`` file — is cleaned by ``store.repair()`` (or ``repair=True`` when opening): the torn line is
cut off with a warning saying how many bytes were dropped, and the file as it was is kept beside it
as a backup. Repair a store only when no other process is writing to it: a live writer's
half-written line or its ``.npz`` waiting for its line look exactly like what a kill leaves.
"""

from __future__ import annotations

import json
import os
import time
import uuid
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_envs.rewards.comparisons import LABELS, Comparison, Segment

__all__ = ["JsonlStore", "PreferenceFileError", "PreferenceStore", "Provenance", "ProvenanceMismatch"]


class PreferenceFileError(ValueError):
    """A line of a store file is corrupt; ``path`` and ``line`` (1-based) say where."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")


class ProvenanceMismatch(ValueError):
    """A store recorded pairs from another model than the one it is opened for."""

    def __init__(self, path: Path, recorded: str, given: str) -> None:
        self.path, self.recorded, self.given = path, recorded, given
        super().__init__(
            f"{path} holds pairs sampled from model {recorded!r}, not from model {given!r}: its labels "
            "say little about the other model's samples (allow_provenance_mismatch=True reuses them)"
        )


@dataclass(frozen=True)
class Provenance:
    """What produced a preference file's pairs.

    Args:
        model: the id or path of the model (or policy) that produced the pairs.
        prompts: where the prompts came from (a file path, ``"embedded"``), or the env id.
        labeler: who labelled, e.g. ``"synthetic:vader:beta=10.0"``, ``"human:terminal"``.
        seed: the sampling seed.
    """

    model: str
    prompts: str
    labeler: str
    seed: int

    @classmethod
    def read(cls, path: Path) -> Provenance:
        try:
            fields = json.loads(path.read_text(encoding="utf-8"))
            return cls(**{name: fields[name] for name in ("model", "prompts", "labeler", "seed")})
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} is not a provenance record ({error})") from error

    def write(self, path: Path) -> None:
        """Write atomically: a kill leaves no record or the whole one."""
        temporary = path.with_name(f"{path.name}.tmp")
        temporary.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)


class JsonlStore:
    """An append-only JSON Lines file of records (dicts), each flushed to disk as it is appended.

    Args:
        path: the ``.jsonl`` file; it and its parent folder are created on the first append.
        skip_invalid: skip corrupt lines when reading (they are kept in ``errors`` and reported with a
            warning) instead of raising ``PreferenceFileError`` on the first one.
        repair: run :meth:`repair` before reading (only when no other process writes to the file).
        provenance: what produces the pairs added now. A new file records it (in
            ``<path>.provenance.json``, with the first record); opening a file that recorded another
            ``model`` raises :class:`ProvenanceMismatch`. The other fields may differ (a resumed run
            may use another seed or labeler).
        allow_provenance_mismatch: open a file recorded for another model anyway, with a warning.

    The file is read once when the store is opened and kept in memory; ``reload()`` reads it again.
    Blank lines are ignored. ``store.provenance`` is the file's own record (None without one, e.g.
    a public preference set).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        skip_invalid: bool = False,
        repair: bool = False,
        provenance: Provenance | None = None,
        allow_provenance_mismatch: bool = False,
    ) -> None:
        self.path = Path(path)
        self.skip_invalid = skip_invalid
        self.errors: list[PreferenceFileError] = []
        self._records: list[dict[str, Any]] = []
        self.provenance_path = Path(f"{path}.provenance.json")
        self.provenance = Provenance.read(self.provenance_path) if self.provenance_path.is_file() else None
        self._unrecorded_provenance = None
        if provenance is not None and self.provenance is None:
            self._unrecorded_provenance = provenance
        elif provenance is not None and provenance.model != self.provenance.model:
            mismatch = ProvenanceMismatch(self.path, self.provenance.model, provenance.model)
            if not allow_provenance_mismatch:
                raise mismatch
            warnings.warn(str(mismatch), stacklevel=2)
        if repair:
            self.repair(reload=False)
        self.reload()
        if self._unrecorded_provenance is not None and self._records:
            # Records from before provenance was recorded: their origin is unknown, none is claimed.
            warnings.warn(f"{self.path} holds {len(self)} records of unknown provenance", stacklevel=2)
            self._unrecorded_provenance = None

    # -- hooks for subclasses -------------------------------------------------------------------
    def validate_record(self, record: dict[str, Any]) -> None:
        """Raise ``ValueError`` naming the problem when ``record`` is malformed."""

    def decode(self, record: dict[str, Any]) -> Any:
        """What ``store[i]`` and iteration return for a stored record."""
        return record

    # -- reading --------------------------------------------------------------------------------
    def reload(self) -> None:
        """Read the file again, validating every line."""
        self._records, self.errors = [], []
        if not self.path.exists():
            return
        # Lines are decoded one by one so that bad bytes on one line do not hide the others.
        for number, raw in enumerate(self.path.read_bytes().split(b"\n"), start=1):
            if not raw.strip():
                continue
            try:
                record = self._parse_line(raw)
            except ValueError as error:
                wrapped = PreferenceFileError(self.path, number, str(error))
                if not self.skip_invalid:
                    raise wrapped from error
                self.errors.append(wrapped)
                continue
            self._records.append(record)
        if self.errors:
            lines = ", ".join(str(error.line) for error in self.errors)
            warnings.warn(f"{self.path}: skipped {len(self.errors)} corrupt line(s): {lines}", stacklevel=2)

    # -- repairing what a killed writer left ----------------------------------------------------------
    def repair(self, reload: bool = True) -> list[Path]:
        """Cut off a torn last line (one a kill left without its newline that does not parse), keeping
        the file as it was in ``<path>.<time>.bak`` and warning how many bytes were dropped; returns the
        paths removed (none here; subclasses add their leftovers). Only for a store no other process is
        writing to."""
        if self.path.is_file():
            data = self.path.read_bytes()
            keep = data.rfind(b"\n") + 1  # 0 when the only line is torn
            torn = data[keep:]
            if torn.strip() and not self._parses(torn):
                backup = self.path.with_name(f"{self.path.name}.{time.strftime('%Y%m%dT%H%M%S')}.bak")
                backup.write_bytes(data)
                with open(self.path, "r+b") as handle:
                    handle.truncate(keep)
                    handle.flush()
                    os.fsync(handle.fileno())
                warnings.warn(
                    f"{self.path}: its last line was torn (a write was interrupted): dropped {len(torn)} "
                    f"bytes; the file as it was is kept in {backup}",
                    stacklevel=2,
                )
        if reload:
            self.reload()
        return []

    def _parses(self, raw: bytes) -> bool:
        try:
            self._parse_line(raw)
        except ValueError:
            return False
        return True

    def _parse_line(self, raw: bytes) -> dict[str, Any]:
        try:
            record = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"not UTF-8 ({error.reason})") from error
        except json.JSONDecodeError as error:
            raise ValueError(f"not valid JSON ({error.msg} at column {error.colno}), truncated?") from error
        if not isinstance(record, dict):
            raise ValueError(f"expected a JSON object, got {type(record).__name__}")
        self.validate_record(record)
        return record

    @property
    def records(self) -> list[dict[str, Any]]:
        """The raw records, in file order (a copy)."""
        return list(self._records)

    def __len__(self) -> int:
        return len(self._records)

    def __getitem__(self, index: int) -> Any:
        return self.decode(self._records[index])

    def __iter__(self) -> Iterator[Any]:
        for record in self._records:
            yield self.decode(record)

    # -- writing --------------------------------------------------------------------------------
    def append(self, record: Mapping[str, Any]) -> None:
        """Validate ``record``, write it as one line and fsync it before returning."""
        record = dict(record)
        self.validate_record(record)
        if self._unrecorded_provenance is not None:  # a new file: what produced it, before its first line
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._unrecorded_provenance.write(self.provenance_path)
            self.provenance, self._unrecorded_provenance = self._unrecorded_provenance, None
        # allow_nan=False: NaN/Infinity are not JSON and other readers would reject the file.
        line = json.dumps(record, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            # A process killed mid-write can leave a last line without its newline; start a fresh
            # line so that the new record is not glued onto the broken one.
            if handle.tell() > 0 and not self._ends_with_newline():
                handle.write(b"\n")
            handle.write(line.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self._records.append(record)

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, records={len(self)})"


def _check_label(label: Any) -> float:
    if isinstance(label, bool) or not isinstance(label, (int, float, np.integer, np.floating)):
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    if float(label) not in LABELS:
        raise ValueError(f"label must be one of {LABELS}, got {label!r}")
    return float(label)


class PreferenceStore(JsonlStore):
    """The control preference store: ``store.add(segment_a, segment_b, label)`` appends one comparison.

    Layout: ``path`` (JSON Lines, one comparison a line) and the folder ``<path>.segments/`` beside
    it with one ``.npz`` per comparison holding both segments' arrays. Each line is
    ``{"segments": "<file>.npz", "label": 0 | 0.5 | 1, "meta": {...}}``. Indexing and iteration
    return ``Comparison`` objects whose arrays are loaded from disk on access.

    Args:
        path: the ``.jsonl`` file.
        skip_invalid: skip corrupt lines (see ``JsonlStore``); a line whose ``.npz`` is missing or
            unreadable (truncated) counts as corrupt.
        repair: run :meth:`repair` before reading (only when no other process writes to the store).
        **options: the rest of ``JsonlStore``'s (provenance).
    """

    def __init__(self, path: str | os.PathLike, **options: Any) -> None:
        self.segment_dir = Path(f"{path}.segments")
        super().__init__(path, **options)

    def repair(self, reload: bool = True) -> list[Path]:
        """:meth:`JsonlStore.repair`, then delete the ``.npz`` files no line references (a kill between
        a segment file and its line) and leftover ``.tmp`` files; returns the deleted paths."""
        super().repair(reload=False)
        referenced = set()
        if self.path.is_file():
            for raw in self.path.read_bytes().split(b"\n"):
                try:
                    record = json.loads(raw)
                except ValueError:
                    continue  # a corrupt line references nothing readable
                if isinstance(record, dict) and isinstance(record.get("segments"), str):
                    referenced.add(record["segments"])
        removed = []
        if self.segment_dir.is_dir():
            for leftover in sorted(self.segment_dir.iterdir()):
                orphan = leftover.suffix == ".npz" and leftover.name not in referenced
                if orphan or leftover.name.endswith(".tmp"):
                    leftover.unlink()
                    removed.append(leftover)
        if reload:
            self.reload()
        return removed

    def validate_record(self, record: dict[str, Any]) -> None:
        missing = {"segments", "label"} - record.keys()
        if missing:
            raise ValueError(f"missing key(s) {sorted(missing)}")
        _check_label(record["label"])
        name = record["segments"]
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            raise ValueError(f"'segments' must be a .npz file name inside {self.segment_dir}, got {name!r}")
        segment_file = self.segment_dir / name
        if not segment_file.is_file():
            raise ValueError(f"segment file {segment_file} does not exist")
        if not zipfile.is_zipfile(segment_file):  # a truncated .npz has lost its zip directory
            raise ValueError(f"segment file {segment_file} is not a readable .npz (truncated?)")
        if not isinstance(record.get("meta", {}), dict):
            raise ValueError(f"'meta' must be a JSON object, got {record['meta']!r}")

    def decode(self, record: dict[str, Any]) -> Comparison:
        path = self.segment_dir / record["segments"]
        try:
            with np.load(path, allow_pickle=False) as arrays:
                segment_a = Segment.from_arrays(
                    {k[2:]: arrays[k] for k in arrays.files if k.startswith("a_")}
                )
                segment_b = Segment.from_arrays(
                    {k[2:]: arrays[k] for k in arrays.files if k.startswith("b_")}
                )
        except (zipfile.BadZipFile, EOFError, OSError) as error:
            raise ValueError(f"segment file {path} is not a readable .npz ({error})") from error
        return Comparison(segment_a, segment_b, float(record["label"]), dict(record.get("meta", {})))

    def add(
        self, segment_a: Segment, segment_b: Segment, label: float, meta: Mapping[str, Any] | None = None
    ) -> None:
        """Append one comparison; when this returns, it is on disk.

        ``meta`` is any JSON-serialisable extra information (labeler, round, query method...).
        """
        label = _check_label(label)
        if not isinstance(segment_a, Segment) or not isinstance(segment_b, Segment):
            raise TypeError("segment_a and segment_b must be Segment objects")
        arrays = {f"a_{k}": v for k, v in segment_a.to_arrays().items()}
        arrays |= {f"b_{k}": v for k, v in segment_b.to_arrays().items()}
        name = f"{uuid.uuid4().hex}.npz"
        self._write_atomically(self.segment_dir / name, arrays)
        self.append({"segments": name, "label": label, "meta": dict(meta or {})})

    def _write_atomically(self, target: Path, arrays: dict[str, np.ndarray]) -> None:
        # Written under a temporary name and renamed, so a line never references a half-written file.
        self.segment_dir.mkdir(parents=True, exist_ok=True)
        temporary = target.with_suffix(".npz.tmp")
        with open(temporary, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
        directory = os.open(self.segment_dir, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
