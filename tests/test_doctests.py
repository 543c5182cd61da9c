"""The examples in the env docstrings run and print what they say (as Gymnasium's env files do)."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "rlhf_envs.envs.tabular",
    "rlhf_envs.envs.car",
    "rlhf_envs.envs.half_cheetah",
    "rlhf_envs.envs.token",
    "rlhf_envs.rewards.learned",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.attempted > 0, f"{name} has no example"
    assert result.failed == 0, (
        f"{result.failed} of {result.attempted} examples of {name} failed (output above)"
    )
