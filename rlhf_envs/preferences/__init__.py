"""Preference data: segments and pairs, labelers, append-only stores, Bradley–Terry training."""

from rlhf_envs.preferences.labelers import HumanLabeler, SyntheticLabeler
from rlhf_envs.preferences.segments import (
    Segment,
    collect_segments,
    cut_segments,
    disagreement_pairs,
    uniform_pairs,
)
from rlhf_envs.preferences.store import Comparison, JsonlStore, PreferenceFileError, PreferenceStore

__all__ = [
    "Comparison",
    "HumanLabeler",
    "JsonlStore",
    "PreferenceFileError",
    "PreferenceStore",
    "Segment",
    "SyntheticLabeler",
    "collect_segments",
    "cut_segments",
    "disagreement_pairs",
    "uniform_pairs",
]
