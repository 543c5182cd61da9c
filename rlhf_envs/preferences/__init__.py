"""Preference data: segments and pairs, labelers, append-only stores, reward-model training.

``Segment`` and ``Comparison`` are defined one layer down, in :mod:`rlhf_envs.rewards.comparisons`
(the reward models fit on them), and re-exported here where users collect and label them.
"""

from rlhf_envs.preferences.labelers import HumanLabeler, QueueLabeler, SyntheticLabeler
from rlhf_envs.preferences.segments import collect_segments, cut_segments, disagreement_pairs, uniform_pairs
from rlhf_envs.preferences.store import (
    JsonlStore,
    PreferenceFileError,
    PreferenceStore,
    Provenance,
    ProvenanceMismatch,
)
from rlhf_envs.rewards.comparisons import Comparison, Segment

__all__ = [
    "Comparison",
    "HumanLabeler",
    "JsonlStore",
    "PreferenceFileError",
    "PreferenceStore",
    "Provenance",
    "ProvenanceMismatch",
    "QueueLabeler",
    "Segment",
    "SyntheticLabeler",
    "collect_segments",
    "cut_segments",
    "disagreement_pairs",
    "uniform_pairs",
]
