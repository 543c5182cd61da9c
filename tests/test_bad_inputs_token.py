"""Issue 14 for the TokenEnv: a bad input gets a clear error naming it; a step happens entirely or not at all.

Each test states the fixed behaviour: a ``ValueError``/``TypeError`` whose message names the argument,
or the right result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny_lm import length_reward

from rlhf_envs.envs.token import TokenEnv, TokenVectorEnv

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning", "the dog", "a bad day"]


def options(lm, tokenizer, **kwargs) -> dict:
    return {
        "model": lm,
        "tokenizer": tokenizer,
        "prompts": PROMPTS,
        "reward_model": length_reward,
        "max_new_tokens": 3,
        "device": "cpu",
    } | kwargs


def token_env(lm, tokenizer, **kwargs) -> TokenEnv:
    return TokenEnv(**options(lm, tokenizer, **kwargs))


def vector_env(lm, tokenizer, num_envs: int = 2, **kwargs) -> TokenVectorEnv:
    return TokenVectorEnv(num_envs, **options(lm, tokenizer, **kwargs))


# -- item 1: token ids of every integer dtype ------------------------------------------------------
@pytest.mark.parametrize(
    "action",
    [
        np.uint64(7),
        np.uint32(7),
        np.int8(7),
        torch.tensor(7, dtype=torch.int8),
        torch.tensor(7, dtype=torch.uint8),
    ],
    ids=["uint64", "uint32", "int8", "torch-int8", "torch-uint8"],
)
def test_token_env_reads_token_ids_of_any_integer_dtype(lm, tokenizer, action):
    """Before: a uint64 id raised NotImplementedError "lt_cpu", a torch int8 id RuntimeError in gather()."""
    # Per-step reference scoring: the step's log π_pt of the token is compared too.
    expected_env, env = (token_env(lm, tokenizer, reference_scoring="per_step") for _ in range(2))
    expected_env.reset(seed=0)
    env.reset(seed=0)
    expected = expected_env.step(np.int64(7))
    got = env.step(action)
    np.testing.assert_array_equal(got[0]["input_ids"], expected[0]["input_ids"])
    assert got[1:4] == expected[1:4] and got[4]["ref_logprob"] == expected[4]["ref_logprob"]


@pytest.mark.parametrize("as_tensors", [False, True])
@pytest.mark.parametrize("dtype", ["uint64", "uint32", "uint16", "int8", "int16"])
def test_token_vector_env_reads_token_ids_of_any_integer_dtype(lm, tokenizer, dtype, as_tensors):
    if as_tensors and dtype.startswith("uint") and dtype != "uint8":
        dtype = "uint8"  # torch computes little with uint16..64; uint8 is its common unsigned type
    ids = np.array([7, 8]).astype(dtype)
    actions = torch.as_tensor(ids) if as_tensors else ids
    expected_env, env = (vector_env(lm, tokenizer, as_tensors=as_tensors) for _ in range(2))
    expected_env.reset(seed=0)
    env.reset(seed=0)
    expected = expected_env.step(np.array([7, 8]) if not as_tensors else torch.tensor([7, 8]))
    got = env.step(actions)
    for got_part, expected_part in zip(got[:4], expected[:4], strict=True):
        if isinstance(got_part, dict):
            for key in got_part:
                np.testing.assert_array_equal(np.asarray(got_part[key]), np.asarray(expected_part[key]))
        else:
            np.testing.assert_array_equal(np.asarray(got_part), np.asarray(expected_part))


def test_a_torch_int8_id_is_compared_with_the_vocabulary_without_overflow(lm, tokenizer):
    """Before: ``tensor(44, dtype=int8) >= 300`` overflowed in int8, refusing a valid token."""
    env = vector_env(lm, tokenizer, as_tensors=True)
    env.reset(seed=0)
    env.step(torch.tensor([44, 127], dtype=torch.int8))
    with pytest.raises(ValueError, match="action -1 is outside the vocabulary"):
        env.step(torch.tensor([-1, 3], dtype=torch.int8))


@pytest.mark.parametrize(
    "action",
    [torch.tensor(7.0, dtype=torch.bfloat16), torch.tensor(True), np.float32(7), True, 7.0, 1 + 0j, "7", [7]],
    ids=["bfloat16", "torch-bool", "float32", "bool", "float", "complex", "str", "list"],
)
def test_token_env_refuses_what_is_not_one_token_id_naming_the_action(lm, tokenizer, action):
    env = token_env(lm, tokenizer)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    env.step(7)  # the refused step left no trace


@pytest.mark.parametrize("action", [np.uint64(2**64 - 1), np.int64(300), -1])
def test_token_ids_outside_the_vocabulary_are_named(lm, tokenizer, action):
    env = token_env(lm, tokenizer)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=f"action {action} is outside the vocabulary"):
        env.step(action)


# -- item 3: silently accepted values --------------------------------------------------------------
@pytest.mark.parametrize(
    ("kl_coef", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-0.1, ValueError),
        ("0.1", TypeError),
        (True, TypeError),
    ],
)
def test_token_env_refuses_a_bad_kl_coef(lm, tokenizer, kl_coef, error):
    """Before: ``kl_coef=nan`` was accepted and every reward was NaN."""
    with pytest.raises(error, match="kl_coef"):
        token_env(lm, tokenizer, kl_coef=kl_coef)
    with pytest.raises(error, match="kl_coef"):
        vector_env(lm, tokenizer, kl_coef=kl_coef)


@pytest.mark.parametrize(
    ("name", "value", "error"),
    [
        ("max_new_tokens", 2.5, TypeError),
        ("max_new_tokens", True, TypeError),
        ("max_new_tokens", 0, ValueError),
        ("max_new_tokens", 200, ValueError),  # longer than the tiny model's 96 positions
        ("stop_at_eos", 0, TypeError),
        ("max_prompt_tokens", 0, ValueError),
    ],
)
def test_token_env_refuses_bad_settings_by_name(lm, tokenizer, name, value, error):
    with pytest.raises(error, match=name):
        token_env(lm, tokenizer, **{name: value})


@pytest.mark.parametrize(("num_envs", "error"), [(0, ValueError), (2.5, TypeError), ("1", TypeError)])
def test_token_vector_env_refuses_a_bad_num_envs(lm, tokenizer, num_envs, error):
    with pytest.raises(error, match="num_envs"):
        vector_env(lm, tokenizer, num_envs=num_envs)


@pytest.mark.parametrize(
    "scores",
    [
        torch.tensor([1 + 0j]),
        torch.tensor([True]),
        torch.tensor([math.nan]),
        torch.tensor([1.0, 2.0]),
        torch.tensor(1.0),
        [1.0],
    ],
    ids=["complex", "bool", "nan", "two-scores", "0-d", "list"],
)
def test_token_env_refuses_bad_reward_model_output_naming_the_reward_model(lm, tokenizer, scores):
    """Before: complex and bool scores were cast to float."""
    env = token_env(lm, tokenizer, reward_model=lambda prompts, completions: scores, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises((TypeError, ValueError), match="reward model"):
        env.step(7)


# -- item 4: a step happens entirely or not at all -------------------------------------------------
class FailOnce:
    """A text reward model whose first call raises, as a flaky remote reward model might."""

    def __init__(self) -> None:
        self.failed = False

    def __call__(self, prompts: list[str], completions: list[str]) -> torch.Tensor:
        if not self.failed:
            self.failed = True
            raise ConnectionError("reward server unreachable")
        return length_reward(prompts, completions)


@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_token_env_step_that_fails_in_the_reward_model_leaves_no_trace(lm, tokenizer, kl_coef):
    """Before: the env had advanced when the reward model raised at the episode's end; the retried step
    ran past ``max_new_tokens`` with a stale reference log-prob and one token too many."""
    expected_env = token_env(lm, tokenizer, kl_coef=kl_coef)
    env = token_env(lm, tokenizer, kl_coef=kl_coef, reward_model=FailOnce())
    expected_env.reset(seed=0)
    env.reset(seed=0)
    for action in (7, 8):
        expected_env.step(action)
        env.step(action)
    with pytest.raises(ConnectionError):
        env.step(9)
    obs, reward, terminated, truncated, info = env.step(9)  # the reward model answers this time
    expected_obs, expected_reward, *expected_flags, expected_info = expected_env.step(9)
    np.testing.assert_array_equal(obs["input_ids"], expected_obs["input_ids"])
    assert (reward, terminated, truncated) == (expected_reward, *expected_flags)
    np.testing.assert_array_equal(info.pop("ref_logprobs"), expected_info.pop("ref_logprobs"))
    assert info == expected_info and info["response_length"] == 3


def test_token_vector_env_step_that_fails_in_the_reward_model_leaves_no_trace(lm, tokenizer):
    def make(reward_model):
        env = vector_env(
            lm, tokenizer, reward_model=reward_model, max_new_tokens=2, autoreset_mode="next_step"
        )
        env.reset(seed=0)
        return env

    expected_env, env = make(length_reward), make(FailOnce())
    expected_env.step(np.array([7, 8]))
    env.step(np.array([7, 8]))
    with pytest.raises(ConnectionError):
        env.step(np.array([9, 10]))
    got, expected = env.step(np.array([9, 10])), expected_env.step(np.array([9, 10]))
    np.testing.assert_array_equal(got[0]["input_ids"], expected[0]["input_ids"])
    for got_part, expected_part in zip(got[1:4], expected[1:4], strict=True):
        np.testing.assert_array_equal(got_part, expected_part)
    np.testing.assert_array_equal(got[4]["response_length"], [2, 2])
    np.testing.assert_array_equal(got[4]["score"], expected[4]["score"])


# -- item 8: errors that say what is wrong ---------------------------------------------------------
@pytest.mark.parametrize("argument", ["model", "reward_model"])
def test_a_missing_model_folder_is_named_as_missing(lm, tokenizer, argument):
    """Before: ``model="/nonexistent/model"`` said "Repo id must be in the form ..."."""
    missing = "/nonexistent/model"
    with pytest.raises(FileNotFoundError) as error:
        TokenEnv(**options(lm, tokenizer, **{argument: missing}))
    assert str(error.value).startswith(f"no such folder: {missing}")


def test_a_prompt_that_is_not_valid_unicode_is_named(lm, tokenizer):
    """Before: a lone surrogate gave the tokenizer's ``TypeError`` about ``TextEncodeInput``."""
    with pytest.raises(ValueError, match="prompt 1 is not valid Unicode"):
        token_env(lm, tokenizer, prompts=["the cat", "a lone \ud800 surrogate"])


# -- item 9: stepping a finished episode -----------------------------------------------------------
def test_token_env_refuses_to_step_a_finished_episode(lm, tokenizer):
    """The documented behaviour of every single env of the suite (Gymnasium leaves it undefined)."""
    env = token_env(lm, tokenizer, max_new_tokens=2)
    env.reset(seed=0)
    env.step(7)
    assert env.step(7)[3]
    with pytest.raises(RuntimeError, match=r"reset\(\)"):
        env.step(7)
    env.reset(seed=1)
    env.step(7)  # a new episode steps again
