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

``PreferenceStore`` builds the control store on it: each comparison's two segments go to one
``.npz`` file in a folder beside the JSONL file (written atomically, before the line that
references it), and the line holds the label and the file name.
"""

from __future__ import annotations

import json
import os
import uuid
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rlhf_envs.rewards.comparisons import LABELS, Comparison, Segment

__all__ = ["JsonlStore", "PreferenceFileError", "PreferenceStore"]


class PreferenceFileError(ValueError):
    """A line of a store file is corrupt; ``path`` and ``line`` (1-based) say where."""

    def __init__(self, path: str | os.PathLike, line: int, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}, line {line}: {reason}")


class JsonlStore:
    """An append-only JSON Lines file of records (dicts), each flushed to disk as it is appended.

    Args:
        path: the ``.jsonl`` file; it and its parent folder are created on the first append.
        skip_invalid: skip corrupt lines when reading (they are kept in ``errors`` and reported with a
            warning) instead of raising ``PreferenceFileError`` on the first one.

    The file is read once when the store is opened and kept in memory; ``reload()`` reads it again.
    Blank lines are ignored.
    """

    def __init__(self, path: str | os.PathLike, *, skip_invalid: bool = False) -> None:
        self.path = Path(path)
        self.skip_invalid = skip_invalid
        self.errors: list[PreferenceFileError] = []
        self._records: list[dict[str, Any]] = []
        self.reload()

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
        skip_invalid: skip corrupt lines (see ``JsonlStore``); a line whose ``.npz`` is missing counts
            as corrupt.
    """

    def __init__(self, path: str | os.PathLike, *, skip_invalid: bool = False) -> None:
        self.segment_dir = Path(f"{path}.segments")
        super().__init__(path, skip_invalid=skip_invalid)

    def validate_record(self, record: dict[str, Any]) -> None:
        missing = {"segments", "label"} - record.keys()
        if missing:
            raise ValueError(f"missing key(s) {sorted(missing)}")
        _check_label(record["label"])
        name = record["segments"]
        if not isinstance(name, str) or Path(name).name != name or not name.endswith(".npz"):
            raise ValueError(f"'segments' must be a .npz file name inside {self.segment_dir}, got {name!r}")
        if not (self.segment_dir / name).is_file():
            raise ValueError(f"segment file {self.segment_dir / name} does not exist")
        if not isinstance(record.get("meta", {}), dict):
            raise ValueError(f"'meta' must be a JSON object, got {record['meta']!r}")

    def decode(self, record: dict[str, Any]) -> Comparison:
        with np.load(self.segment_dir / record["segments"], allow_pickle=False) as arrays:
            segment_a = Segment.from_arrays({k[2:]: arrays[k] for k in arrays.files if k.startswith("a_")})
            segment_b = Segment.from_arrays({k[2:]: arrays[k] for k in arrays.files if k.startswith("b_")})
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
