"""Text preference data in TRL's format: one ``prompt`` and a ``chosen`` and a ``rejected`` completion.

:class:`TextPreferenceStore` is the append-only store (each comparison fsynced as it is added, a
corrupt line named by file and line number) built on :class:`~rlhf_envs.preferences.store.JsonlStore`;
:func:`load_text_preferences` reads the same format from a JSONL file or a ``datasets.Dataset``, so
public preference sets in TRL's format load unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlhf_envs.preferences.store import JsonlStore

COLUMNS = ("prompt", "chosen", "rejected")

__all__ = ["COLUMNS", "TextPreferenceStore", "is_tie", "load_text_preferences"]


def is_tie(record: Mapping[str, Any]) -> bool:
    """Whether a stored comparison is a tie: the labeler found neither completion better."""
    return bool(record.get("meta", {}).get("tie", False))


def _check_row(row: Mapping[str, Any]) -> None:
    missing = [column for column in COLUMNS if column not in row]
    if missing:
        raise ValueError(f"missing field(s) {missing}; a text preference has {list(COLUMNS)}")
    for column in COLUMNS:
        if not isinstance(row[column], str):
            raise ValueError(f"{column!r} must be a string, got {type(row[column]).__name__}")


class TextPreferenceStore(JsonlStore):
    """Append-only JSONL store of text comparisons; ``store.add(prompt, chosen, rejected)`` appends one.

    Each line is ``{"prompt": ..., "chosen": ..., "rejected": ...}`` plus an optional ``"meta"``
    object; indexing and iteration return those dicts. A label is on disk when ``add`` returns. A tie
    (``meta`` ``{"tie": true}``: neither completion is better, chosen and rejected are just the order
    shown) is kept, so that its pair counts as labelled, but :meth:`to_dataset` leaves it out.

    Args:
        path: the ``.jsonl`` file (created on the first ``add``).
        skip_invalid: skip corrupt lines instead of raising ``PreferenceFileError`` (file and line).
        repair, provenance, allow_provenance_mismatch: see ``JsonlStore``; the provenance sidecar
            keeps the JSONL itself in TRL's format.
    """

    def validate_record(self, record: dict[str, Any]) -> None:
        _check_row(record)
        if not isinstance(record.get("meta", {}), dict):
            raise ValueError(f"'meta' must be a JSON object, got {record['meta']!r}")
        if not isinstance(record.get("meta", {}).get("tie", False), bool):
            raise ValueError(f"'meta.tie' must be true or false, got {record['meta']['tie']!r}")

    def add(
        self,
        prompt: str,
        chosen: str,
        rejected: str,
        meta: Mapping[str, Any] | None = None,
        tie: bool = False,
    ) -> None:
        """Append one comparison: ``chosen`` was preferred to ``rejected`` as a completion of ``prompt``,
        or, with ``tie``, neither was."""
        record: dict[str, Any] = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
        if meta or tie:
            record["meta"] = dict(meta or {}) | ({"tie": True} if tie else {})
        self.append(record)

    @property
    def ties(self) -> int:
        """How many stored comparisons are ties."""
        return sum(map(is_tie, self._records))

    def to_dataset(self) -> Dataset:
        """The decisive comparisons (ties left out: they prefer neither completion) as a
        ``datasets.Dataset`` with TRL's columns (prompt, chosen, rejected)."""
        decisive = [record for record in self._records if not is_tie(record)]
        return Dataset.from_dict({column: [record[column] for record in decisive] for column in COLUMNS})


def load_text_preferences(source: str | Path | Dataset) -> Dataset:
    """TRL-format comparisons from a JSONL file (validated line by line) or a ``datasets.Dataset``."""
    if isinstance(source, Dataset):
        missing = [column for column in COLUMNS if column not in source.column_names]
        if missing:
            raise ValueError(
                f"the dataset lacks column(s) {missing}; TRL's preference format has {list(COLUMNS)}"
            )
        return source.select_columns(list(COLUMNS))
    path = Path(source)
    if not path.is_file():
        raise ValueError(f"preference file {path} does not exist")
    return TextPreferenceStore(path).to_dataset()
