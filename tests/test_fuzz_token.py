"""Issue 14, deliverable 2, for the TokenEnv: property-based fuzzing of its actions and constructor arguments.

The property, the oracle and the input strategies are in :mod:`fuzzing` (shared with the control
envs' suite, tests/test_fuzz.py): every action input or constructor argument gives the right step
(or a working env) or a ``ValueError``/``TypeError`` naming it, nothing else; a refused step
leaves no trace. A token id is an integer of any numpy or torch integer dtype, or a Python int, of
the right shape and inside the vocabulary; bools, floats (even 7.0) and complex numbers are refused.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from fuzzing import (
    ARGUMENT_VALUES,
    ENVS,
    FUZZ_ACTIONS,
    FUZZ_ARGUMENTS,
    Argument,
    Case,
    action_inputs,
    check_action,
    check_argument,
    is_positive_int,
    is_real,
    single_action_space,
)
from hypothesis import given
from hypothesis import strategies as st
from tiny_lm import length_reward, tiny_lm, tiny_tokenizer

from rlhf_envs.envs.token import TokenEnv, TokenVectorEnv

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning"]
TOKENIZER = tiny_tokenizer()
LM = tiny_lm(TOKENIZER)
CONTEXT = LM.config.n_positions
# The longest prompt decides how many new tokens fit the tiny model's context.
LONGEST_PROMPT = max(len(ids) for ids in TOKENIZER(PROMPTS)["input_ids"])


def token(**kwargs: Any) -> TokenEnv:
    options = {"model": LM, "tokenizer": TOKENIZER, "prompts": PROMPTS, "reward_model": length_reward}
    return TokenEnv(**options | {"device": "cpu", "max_new_tokens": 4} | kwargs)


def token_vector(**kwargs: Any) -> TokenVectorEnv:
    options = {"model": LM, "tokenizer": TOKENIZER, "prompts": PROMPTS, "reward_model": length_reward}
    return TokenVectorEnv(**options | {"device": "cpu", "max_new_tokens": 4} | kwargs)


CASES = [
    Case("TokenEnv", token),
    *(
        Case(
            f"TokenVectorEnv-{form}",
            lambda tensors=form == "tensors": token_vector(num_envs=3, as_tensors=tensors),
            num_envs=3,
            as_tensors=form == "tensors",
        )
        for form in ("numpy", "tensors")
    ),
    Case(
        "TokenVectorEnv-deferred",
        lambda: token_vector(num_envs=3, reference_scoring="episode_end"),
        num_envs=3,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=repr)
@FUZZ_ACTIONS
@given(data=st.data())
def test_any_action_input_steps_correctly_or_is_refused_naming_the_action(case, data):
    env, _ = ENVS(case)
    check_action(case, data.draw(action_inputs(single_action_space(env, case), case.num_envs)))


ARGUMENTS = [
    Argument(
        "max_new_tokens", token, lambda value: is_positive_int(value) and value <= CONTEXT - LONGEST_PROMPT
    ),
    Argument(
        "max_prompt_tokens",
        token,
        lambda value: value is None or (is_positive_int(value) and LONGEST_PROMPT <= value <= CONTEXT - 4),
    ),
    Argument("kl_coef", token, lambda value: is_real(value) and value >= 0),
    Argument("stop_at_eos", token, lambda value: isinstance(value, bool | np.bool_)),
    Argument("num_envs", token_vector, is_positive_int),
]


@pytest.mark.parametrize("argument", ARGUMENTS, ids=repr)
@FUZZ_ARGUMENTS
@given(value=ARGUMENT_VALUES)
def test_any_constructor_argument_builds_a_working_env_or_is_refused_by_name(argument, value):
    check_argument(argument, value)
