"""Issue 14, deliverable 2, for the TokenEnv: property-based fuzzing of its actions and constructor arguments.

The property: the env either does the right thing (the step of the token id the input stands for,
with an observation in the observation space, a finite float reward and bool flags; a constructed
env that resets and steps) or raises ``ValueError``/``TypeError`` naming the argument. Never a
silently wrong result, never another exception type; a refused step leaves no trace.

A token id is an integer of any numpy or torch integer dtype, or a Python int, of the right shape
and inside the vocabulary; bools, floats (even 7.0) and complex numbers are refused.

Hypothesis runs derandomized (the same examples every run, as CI needs) without a database.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_lm import tiny_lm, tiny_tokenizer

from rlhf_envs.envs.token import TokenEnv, TokenVectorEnv

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning"]
FUZZ_ACTIONS = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
FUZZ_ARGUMENTS = settings(FUZZ_ACTIONS, max_examples=30)

NUMPY_DTYPES = [
    np.dtype(name) for name in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")
]
NUMPY_DTYPES += [np.dtype(name) for name in ("float16", "float32", "float64", "complex64", "bool")]
TORCH_DTYPES = [torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8]
TORCH_DTYPES += [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.bool]

TOKENIZER = tiny_tokenizer()
LM = tiny_lm(TOKENIZER)
VOCAB = LM.config.vocab_size
# The longest prompt decides how many new tokens fit the tiny model's 96 positions.
LONGEST_PROMPT = max(len(ids) for ids in TOKENIZER(PROMPTS)["input_ids"])


def length_reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
    return torch.tensor([float(len(text)) for text in completions])


def token_kwargs() -> dict[str, Any]:
    return {
        "model": LM,
        "tokenizer": TOKENIZER,
        "prompts": PROMPTS,
        "reward_model": length_reward,
        "device": "cpu",
    }


@dataclass
class Case:
    name: str
    num_envs: int | None  # None: the single env
    as_tensors: bool = False

    def make(self) -> Any:
        if self.num_envs is None:
            return TokenEnv(**token_kwargs(), max_new_tokens=4)
        return TokenVectorEnv(self.num_envs, **token_kwargs(), max_new_tokens=4, as_tensors=self.as_tensors)

    def __repr__(self) -> str:
        return self.name


CASES = [Case("TokenEnv", None), Case("TokenVectorEnv-numpy", 3), Case("TokenVectorEnv-tensors", 3, True)]
#: One env under test and one reference per case, made once (construction is the slow part).
ENVS = {case.name: (case.make(), case.make()) for case in CASES}


@st.composite
def action_inputs(draw: st.DrawFn, shape: tuple[int, ...]) -> Any:
    """Numbers of every dtype in every container (Python, numpy scalars and arrays, torch), some of the
    wrong shape or outside the vocabulary."""
    shape = draw(st.sampled_from([shape] * 6 + [(), (1,), (*shape, 1), (2, *shape)]))
    container = draw(st.sampled_from(["python", "numpy", "torch"]))
    dtype = draw(
        st.sampled_from(
            {"numpy": NUMPY_DTYPES, "torch": TORCH_DTYPES, "python": [int, float, bool]}[container]
        )
    )
    is_int = dtype in (int,) or (container == "numpy" and dtype.kind in "iu") or dtype in TORCH_DTYPES[:5]
    low, high = -2, VOCAB + 2
    if is_int and container != "python":  # stay inside the dtype: numpy refuses to cast 300 to int8
        info = torch.iinfo(dtype) if container == "torch" else np.iinfo(dtype)
        low, high = max(low, info.min), min(high, info.max)
    elements = st.booleans() if dtype in (bool, np.dtype(bool), torch.bool) else st.integers(low, high)
    values = np.array(draw(st.lists(elements, min_size=math.prod(shape), max_size=math.prod(shape)))).reshape(
        shape
    )
    if container == "python":
        values = values.astype(dtype)
        return values.tolist() if shape else values.item()
    if container == "numpy":
        array = values.astype(dtype)
        return array[()] if shape == () and draw(st.booleans()) else array  # a numpy scalar or a 0-d array
    return torch.tensor(values.tolist(), dtype=dtype)


def intended_ids(value: Any, shape: tuple[int, ...]) -> np.ndarray | None:
    """The token ids ``value`` stands for as int64, or ``None`` when it must be refused."""
    if isinstance(value, torch.Tensor):
        integer = not (value.dtype == torch.bool or value.is_floating_point() or value.is_complex())
        array = value.numpy() if integer else None
    else:
        array = np.asarray(value)
        integer = array.dtype.kind in "iu"
    if not integer or array.shape != shape:
        return None
    exact = array.astype(object)  # Python ints: no overflow in the comparison
    return array.astype(np.int64) if ((exact >= 0) & (exact < VOCAB)).all() else None


def numpy_tree(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: numpy_tree(item) for key, item in value.items()}
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


def assert_steps_equal(got: tuple, expected: tuple) -> None:
    for key in expected[0]:
        np.testing.assert_array_equal(numpy_tree(got[0])[key], numpy_tree(expected[0])[key])
    for got_part, expected_part in zip(got[1:4], expected[1:4], strict=True):
        np.testing.assert_array_equal(numpy_tree(got_part), numpy_tree(expected_part))


def assert_well_formed(env: Any, step: tuple) -> None:
    obs, reward, terminated, truncated, _ = (numpy_tree(part) for part in step)
    assert env.observation_space.contains(obs), f"observation {obs!r} outside {env.observation_space}"
    assert np.issubdtype(reward.dtype, np.floating) and np.isfinite(reward).all()
    assert terminated.dtype == truncated.dtype == bool


def canonical(case: Case, ids: np.ndarray) -> Any:
    if case.num_envs is None:
        return ids.item()
    return torch.as_tensor(ids) if case.as_tensors else ids


@pytest.mark.parametrize("case", CASES, ids=repr)
@FUZZ_ACTIONS
@given(data=st.data())
def test_any_action_input_steps_correctly_or_is_refused_naming_the_action(case, data):
    env, reference = ENVS[case.name]
    shape = () if case.num_envs is None else (case.num_envs,)
    value = data.draw(action_inputs(shape))
    intended = intended_ids(value, shape)
    env.reset(seed=0)
    reference.reset(seed=0)
    try:
        step = env.step(value)
    except (ValueError, TypeError) as error:
        assert "action" in str(error).lower(), f"the error does not name the action: {error}"
        assert intended is None, f"refused the valid action {value!r}: {error}"
        # A refused step leaves no trace: the episode goes on as if it had not been tried.
        ones = canonical(case, np.ones(shape, np.int64))
        assert_steps_equal(env.step(ones), reference.step(ones))
        return
    assert intended is not None, f"accepted the invalid action {value!r}"
    assert_well_formed(env, step)
    assert_steps_equal(step, reference.step(canonical(case, intended)))


# -- constructor arguments -------------------------------------------------------------------------
ARGUMENT_VALUES = st.one_of(
    st.integers(-3, 120),
    st.integers(-3, 120).map(np.int64),
    st.floats(-1e3, 1e3, allow_subnormal=False),
    st.floats(0, 1).map(np.float32),
    st.sampled_from([math.nan, math.inf, -math.inf, np.float64("nan")]),
    st.booleans(),
    st.sampled_from(["1", "", None, [1], (0.5,)]),
)


def is_real(value: Any) -> bool:
    number = isinstance(value, int | float | np.integer | np.floating)
    return number and not isinstance(value, bool | np.bool_) and math.isfinite(value)


def is_positive_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_) and value >= 1


def token(**kwargs: Any) -> TokenEnv:
    return TokenEnv(**token_kwargs() | {"max_new_tokens": 4} | kwargs)


def token_vector(**kwargs: Any) -> TokenVectorEnv:
    return TokenVectorEnv(**token_kwargs() | {"max_new_tokens": 4} | kwargs)


ARGUMENTS = [
    ("max_new_tokens", token, lambda value: is_positive_int(value) and value <= 96 - LONGEST_PROMPT),
    ("max_prompt_tokens", token, lambda value: is_positive_int(value) and LONGEST_PROMPT <= value <= 92),
    ("kl_coef", token, lambda value: is_real(value) and value >= 0),
    ("stop_at_eos", token, lambda value: isinstance(value, bool | np.bool_)),
    ("num_envs", token_vector, is_positive_int),
]


@pytest.mark.parametrize(
    ("name", "make", "valid"), ARGUMENTS, ids=[f"{make.__name__}-{name}" for name, make, _ in ARGUMENTS]
)
@FUZZ_ARGUMENTS
@given(value=ARGUMENT_VALUES)
def test_any_constructor_argument_builds_a_working_env_or_is_refused_by_name(name, make, valid, value):
    try:
        env = make(**{name: value})
    except (ValueError, TypeError) as error:
        assert name in str(error), f"the error does not name {name}: {error}"
        assert not valid(value), f"refused the valid {name}={value!r}: {error}"
        return
    assert valid(value), f"accepted {name}={value!r}"
    env.reset(seed=0)
    assert_well_formed(env, env.step(env.action_space.sample()))
