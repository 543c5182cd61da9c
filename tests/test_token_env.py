"""TokenEnv and TokenVectorEnv on a tiny GPT-2 and a tiny byte-level BPE tokenizer built in the test."""

from __future__ import annotations

import copy
import json
import pickle
import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from datasets import Dataset
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from tiny_lm import length_reward, tiny_lm, tiny_tokenizer

import rlhf_envs  # noqa: F401  (registers the env ids)
from rlhf_envs.envs.token import TokenEnv, TokenEnvConfig, TokenVectorEnv, length_buckets
from rlhf_envs.lm.assets import load_prompts
from rlhf_envs.preferences.tldr import format_tldr_prompt

DATA = Path(__file__).resolve().parent / "data"

PROMPTS = ["the cat sat", "a good day makes a happy heart, a bad", "love", "in the beginning was the word"]


def options(lm, tokenizer, **kwargs) -> dict:
    defaults = {"prompts": PROMPTS, "reward_model": length_reward, "max_new_tokens": 6, "device": "cpu"}
    return {"model": lm, "tokenizer": tokenizer} | defaults | kwargs


def make_env(lm, tokenizer, **kwargs) -> TokenEnv:
    return TokenEnv(**options(lm, tokenizer, **kwargs))


def full_forward_logprobs(lm, input_ids: np.ndarray, attention_mask: np.ndarray, count: int) -> np.ndarray:
    """log π(token) of the last ``count`` tokens from one forward pass over the whole left-padded sequence."""
    ids = torch.as_tensor(input_ids)[None]
    mask = torch.as_tensor(attention_mask, dtype=torch.long)[None]
    with torch.no_grad():
        logits = lm(
            input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp(min=0)
        ).logits
    logprobs = logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None])[:, 0]
    return logprobs[-count:].numpy()


def test_passes_gymnasium_and_sb3_env_checkers(lm, tokenizer):
    env = make_env(lm, tokenizer)
    check_env(env, skip_render_check=True)
    sb3_check_env(env)


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_kv_cached_ref_logprobs_equal_a_full_forward_pass(tokenizer, attention):
    """Each attention implementation gets the 4-D decoding mask it takes (boolean, additive)."""
    lm = tiny_lm(tokenizer)
    lm.set_attn_implementation(attention)
    env = make_env(lm, tokenizer, max_new_tokens=12, stop_at_eos=False, reference_scoring="per_step")
    rng = np.random.default_rng(0)
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        cached = []
        for _ in range(12):
            obs, _, terminated, truncated, info = env.step(rng.integers(env.action_space.n))
            cached.append(info["ref_logprob"])
        assert truncated and not terminated
        full = full_forward_logprobs(lm, obs["input_ids"], obs["attention_mask"], 12)
        np.testing.assert_allclose(cached, full, atol=1e-5)
        np.testing.assert_array_equal(info["ref_logprobs"], cached)


def test_length_buckets_cut_a_batch_where_it_saves_padding():
    """Rows grouped for forward passes on the CPU: by length, into the groups whose padded tokens plus
    a fixed cost per pass (PASS_COST_TOKENS, 64) are the fewest; every row in exactly one group."""
    cpu = torch.device("cpu")
    lengths = np.array([40, 5, 6, 41, 5, 7, 6, 5])
    # One pass: 8 × 41 + 64 = 392 tokens; two: 6 × 7 + 2 × 41 + 128 = 252; three: 310.
    short, long = length_buckets(lengths, cpu)
    assert sorted(short) == [1, 2, 4, 5, 6, 7] and sorted(long) == [0, 3]
    assert [sorted(group) for group in length_buckets(np.array([12, 12, 11, 12]), cpu)] == [[0, 1, 2, 3]]
    # 8 × 12 + 64 = 160 in one pass, 7 × 9 + 12 + 128 = 203 in two: not worth a second pass.
    assert len(length_buckets(np.array([9] * 7 + [12]), cpu)) == 1
    # 40 rows: one pass 40 × 60 + 64 = 2,464 tokens; two 20 × 10 + 20 × 60 + 128 = 1,528; three 1,292.
    lengths = np.repeat([10, 30, 60], [20, 10, 10])
    groups = length_buckets(lengths, cpu)
    assert [sorted(lengths[group]) for group in groups] == [[10] * 20, [30] * 10, [60] * 10]
    assert sorted(np.concatenate(groups)) == list(range(40))
    # On a GPU one pass, in the rows' order (a pass costs its launches more than its columns there).
    assert [list(group) for group in length_buckets(lengths[:8], torch.device("cuda"))] == [list(range(8))]


@pytest.mark.parametrize("split", [False, True], ids=["buckets-as-they-fall", "always-split"])
@pytest.mark.parametrize("as_tensors", [False, True])
def test_deferred_and_per_step_reference_logprobs_agree(lm, tokenizer, as_tensors, split, monkeypatch):
    """Issue 15: the reference log-probs of a finished episode from one batched forward at its end
    (reference_scoring="episode_end") equal the per-step KV-cached ones within 1e-5, for episodes that
    end at different steps (EOS, truncation) and restart; rewards and flags are the same. Also when
    every batch of episodes of different lengths is scored in a pass per length (length buckets)."""
    if split:
        monkeypatch.setattr("rlhf_envs.envs.token.PASS_COST_TOKENS", 0)
    max_new_tokens, steps, num_envs = 6, 30, 3
    rng = np.random.default_rng(3)
    actions = rng.integers(1, 60, (steps, num_envs))
    actions[rng.random((steps, num_envs)) < 0.15] = tokenizer.eos_token_id

    def run(scoring: str) -> list:
        env = TokenVectorEnv(
            num_envs,
            **options(lm, tokenizer, max_new_tokens=max_new_tokens, reference_scoring=scoring),
            as_tensors=as_tensors,
            autoreset_mode=AutoresetMode.NEXT_STEP,
        )
        env.reset(seed=0)
        outputs = []
        for step_actions in actions:
            _, reward, terminated, truncated, info = env.step(
                torch.as_tensor(step_actions) if as_tensors else step_actions
            )
            ended = as_numpy(terminated) | as_numpy(truncated)
            assert np.array_equal(info.get("_ref_logprobs", np.zeros(num_envs, bool)), ended)
            outputs.append(
                (as_numpy(reward), ended, as_numpy(info["ref_logprobs"])[ended] if ended.any() else None)
            )
        return outputs

    per_step, deferred = run("per_step"), run("episode_end")
    episodes = 0
    for (reward, ended, logprobs), (expected_reward, expected_ended, expected) in zip(
        deferred, per_step, strict=True
    ):
        np.testing.assert_array_equal(ended, expected_ended)
        np.testing.assert_allclose(
            reward, np.where(ended, expected_reward, 0.0), atol=1e-5
        )  # per step: the score only
        if ended.any():
            np.testing.assert_allclose(logprobs, expected, atol=1e-5)
            episodes += ended.sum()
    assert episodes >= 2 * num_envs


@pytest.mark.parametrize("mode", [AutoresetMode.SAME_STEP, AutoresetMode.NEXT_STEP])
def test_running_info_scores_the_episodes_in_progress_in_both_modes(lm, tokenizer, mode):
    """running_info(): log π_pt of the tokens the episodes in progress have so far, from one batched
    forward (deferred) or the per-step cache, equal within 1e-5; rows whose episode ended (NEXT_STEP)
    or has no token yet are 0. At the end the same log-probs come in the last step's ref_logprobs."""
    rng = np.random.default_rng(5)
    actions = rng.integers(1, 60, (14, 3))
    actions[rng.random((14, 3)) < 0.15] = tokenizer.eos_token_id

    def run(scoring: str) -> list[tuple[np.ndarray, np.ndarray]]:
        env = TokenVectorEnv(
            3, **options(lm, tokenizer, reference_scoring=scoring), as_tensors=True, autoreset_mode=mode
        )
        env.reset(seed=1)
        infos = []
        for step_actions in [None, *actions]:  # before the first step: no token yet
            if step_actions is not None:
                env.step(torch.as_tensor(step_actions))
            info = env.running_info()
            infos.append((info["ref_logprobs"].numpy(), info["response_length"]))
        return infos

    per_step, deferred = run("per_step"), run("episode_end")
    assert not per_step[0][0].any() and not per_step[0][1].any()
    lengths_seen = set()
    for (logprobs, lengths), (expected, expected_lengths) in zip(deferred, per_step, strict=True):
        np.testing.assert_array_equal(lengths, expected_lengths)
        np.testing.assert_allclose(logprobs, expected, atol=1e-5)
        columns = np.arange(logprobs.shape[1])
        assert (logprobs[columns >= lengths[:, None]] == 0).all()
        assert (logprobs[columns < lengths[:, None]] < 0).all()
        lengths_seen |= set(lengths.tolist())
    assert {0, 1, 5} <= lengths_seen  # restarted or ended rows, new and long episodes


def test_eos_terminates_and_max_new_tokens_truncates(lm, tokenizer):
    env = make_env(lm, tokenizer, max_new_tokens=5)
    obs, info = env.reset(seed=0)
    prompt_tokens = int(obs["attention_mask"].sum())
    _, reward, terminated, truncated, info = env.step(7)
    assert (reward, terminated, truncated) == (0.0, False, False)
    _, reward, terminated, truncated, info = env.step(tokenizer.eos_token_id)
    assert terminated and not truncated
    assert info["completion"] == tokenizer.decode([7]) and reward == info["score"] == 1.0
    assert (info["prompt_length"], info["response_length"]) == (prompt_tokens, 2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(7)

    env.reset(seed=1)
    for step in range(5):
        obs, reward, terminated, truncated, info = env.step(8)
        assert terminated is False and truncated is (step == 4)
    assert info["completion"] == tokenizer.decode([8] * 5) and reward == len(info["completion"])
    # The observation is left-padded: the newest token is last.
    assert obs["input_ids"][-1] == 8 and obs["attention_mask"][-1] == 1


def test_kl_coef_adds_beta_times_ref_logprob_each_step(lm, tokenizer):
    env = make_env(lm, tokenizer, kl_coef=0.5, max_new_tokens=3)
    env.reset(seed=0)
    for _ in range(3):
        _, reward, _, truncated, info = env.step(9)
    assert truncated
    assert reward == pytest.approx(info["score"] + 0.5 * info["ref_logprob"], abs=1e-5)


def as_numpy(value):
    if isinstance(value, dict):
        return {key: as_numpy(item) for key, item in value.items()}
    return value.cpu().numpy() if isinstance(value, torch.Tensor) else value


def assert_infos_equal(ours: dict, theirs: dict, as_tensors: bool) -> None:
    """Gymnasium's vector info layout: the same keys and masks, and the same values where a mask is set.

    The tensor face has its final_obs/final_info keys on every step (masks all False when no
    episode ended) and keeps final_obs a dict of batched tensors.
    """
    if as_tensors and "_final_obs" in ours and "_final_obs" not in theirs:
        assert not ours.pop("_final_obs").any() and not ours.pop("_final_info").any()
        ours.pop("final_obs"), ours.pop("final_info")
    assert set(ours) == set(theirs)
    for key in (key for key in theirs if not key.startswith("_")):
        mask = theirs[f"_{key}"]
        np.testing.assert_array_equal(ours[f"_{key}"], mask, err_msg=key)
        if key == "final_info":
            assert_infos_equal(as_numpy(ours[key]), theirs[key], as_tensors=False)
            continue
        for row in np.flatnonzero(mask):
            expected = theirs[key][row]
            got = (
                {name: value[row] for name, value in as_numpy(ours[key]).items()}
                if as_tensors and key == "final_obs"
                else as_numpy(ours[key])[row]
            )
            if isinstance(expected, dict):  # an observation
                for name in expected:
                    np.testing.assert_array_equal(got[name], expected[name], err_msg=key)
            elif isinstance(expected, str):
                assert got == expected, key
            else:
                assert got == pytest.approx(expected, abs=1e-5), key


@pytest.mark.parametrize(
    ("mode", "as_tensors", "scoring"),
    [(mode, as_tensors, "per_step") for mode in AutoresetMode for as_tensors in (False, True)]
    + [(mode, False, "episode_end") for mode in AutoresetMode],
    ids=lambda value: value.name if isinstance(value, AutoresetMode) else str(value),
)
def test_vector_env_follows_gymnasiums_vector_env_of_single_envs(lm, tokenizer, mode, as_tensors, scoring):
    """Step by step, TokenVectorEnv equals Gymnasium's own SyncVectorEnv over single TokenEnvs with the
    same seeds and autoreset mode: observations, rewards, flags and the info layout of each mode
    (NEXT_STEP: an ended episode restarts at the next step, which ignores its action and pays 0;
    SAME_STEP: it restarts at once, its last observation and info in final_obs/final_info; DISABLED:
    it waits for reset(options={"reset_mask": ...}))."""
    num_envs, steps, eos = 3, 40, tokenizer.eos_token_id
    kwargs = {"max_new_tokens": 4, "device": "cpu", "reference_scoring": scoring}
    vector = TokenVectorEnv(
        num_envs, **options(lm, tokenizer, **kwargs), as_tensors=as_tensors, autoreset_mode=mode
    )
    assert vector.metadata["autoreset_mode"] == mode
    reference = gym.vector.SyncVectorEnv(
        [lambda: make_env(lm, tokenizer, **kwargs)] * num_envs, autoreset_mode=mode
    )
    rng = np.random.default_rng(1)
    actions = rng.integers(1, 60, (steps, num_envs))
    # Episodes end at different steps, so rows restart one by one: episode 0 says EOS at steps 1, 5, 9...,
    # episode 1 is truncated, episode 2 says EOS at random other steps.
    actions[1::4, 0] = eos
    actions[:, 2] = np.where((rng.random(steps) < 0.3) & (np.arange(steps) % 4 != 1), eos, actions[:, 2])

    obs, info = vector.reset(seed=10)
    expected_obs, expected_info = reference.reset(seed=10)
    ended, slid_back = 0, False
    for step in range(steps):
        for key in expected_obs:
            np.testing.assert_array_equal(as_numpy(obs[key]), expected_obs[key])
        assert_infos_equal(info, expected_info, as_tensors)
        cache = vector._state.cache  # per-step scoring only
        layer = cache and cache.layers[0]
        start = layer and layer.start
        batch = torch.as_tensor(actions[step]) if as_tensors else actions[step]
        obs, rewards, terminated, truncated, info = vector.step(batch)
        # The KV window wrapped around its buffer (not a fresh start of every episode): it must stay exact.
        slid_back |= cache is not None and vector._state.cache.layers[0] is layer and layer.start < start
        expected_obs, expected_rewards, *expected_flags, expected_info = reference.step(actions[step])
        np.testing.assert_allclose(as_numpy(rewards), expected_rewards, atol=1e-5)
        for flags, expected in zip((terminated, truncated), expected_flags, strict=True):
            np.testing.assert_array_equal(as_numpy(flags), expected)
        done = expected_flags[0] | expected_flags[1]
        ended += done.sum()
        if mode == AutoresetMode.DISABLED and done.any():
            with pytest.raises(RuntimeError, match="reset_mask"):
                vector.step(batch)
            obs, info = vector.reset(options={"reset_mask": done})
            expected_obs, expected_info = reference.reset(options={"reset_mask": done})
    assert ended >= num_envs * 2 and (slid_back or scoring == "episode_end")


def test_gym_make_and_make_vec(lm, tokenizer):
    kwargs = {"model": lm, "tokenizer": tokenizer, "prompts": PROMPTS, "reward_model": length_reward}
    longest = max(len(ids) for ids in tokenizer(PROMPTS)["input_ids"])
    env = gym.make("rlhf_envs/TokenEnv-v0", max_new_tokens=3, device="cpu", **kwargs)
    assert env.reset(seed=0)[0]["input_ids"].shape == (longest + 3,)
    vector = gym.make_vec(
        "rlhf_envs/TokenEnv-v0", num_envs=2, vectorization_mode="vector_entry_point", device="cpu", **kwargs
    )
    assert isinstance(vector.unwrapped, TokenVectorEnv)
    assert vector.reset(seed=0)[0]["input_ids"].shape == (2, longest + 48)  # max_new_tokens defaults to 48


def test_sb3_ppo_runs_a_few_hundred_steps(lm, tokenizer):
    env = make_env(lm, tokenizer, max_new_tokens=4)
    model = PPO("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=256)
    assert model.num_timesteps == 256


def test_prompts_from_text_jsonl_and_dataset(tmp_path):
    text = tmp_path / "prompts.txt"
    text.write_text("first prompt\n\nsecond prompt\n")
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text("\n".join(json.dumps({"prompt": p}) for p in ["a\nmulti-line prompt", "b"]))
    assert load_prompts(text) == ["first prompt", "second prompt"]
    assert load_prompts(jsonl) == ["a\nmulti-line prompt", "b"]
    assert load_prompts(Dataset.from_dict({"prompt": ["x", "y"]})) == ["x", "y"]
    jsonl.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_prompts(jsonl)
    with pytest.raises(ValueError, match="'prompt' column"):
        load_prompts(Dataset.from_dict({"text": ["x"]}))


def test_tokenizer_that_does_not_fit_the_model_is_refused(tokenizer):
    small = tiny_lm(tiny_tokenizer(vocab_size=280))
    with pytest.raises(ValueError, match="vocabulary"):
        make_env(small, tokenizer)


def test_prompt_longer_than_the_context_is_refused(lm, tokenizer):
    with pytest.raises(ValueError, match="context.*truncation='left' or 'right' cuts the prompts to 90"):
        make_env(lm, tokenizer, prompts=["the cat sat on the mat " * 20])
    with pytest.raises(ValueError, match="prompt 1 has"):
        make_env(lm, tokenizer, max_prompt_tokens=5)
    with pytest.raises(ValueError, match="truncation must be one of"):
        make_env(lm, tokenizer, truncation="middle")


@pytest.mark.parametrize("side", ["left", "right"])
def test_truncation_cuts_long_prompts_and_says_how_many_and_by_how_much(lm, tokenizer, side):
    long_prompt = "the cat sat on the mat and the dog sat on the log " * 12 + "TL;DR:"
    ids = tokenizer(long_prompt)["input_ids"]
    budget = 96 - 6  # the tiny model's context minus max_new_tokens
    with pytest.warns(
        UserWarning, match=rf"truncation='{side}' cut 1 of 2 prompts to 90 tokens, by {len(ids) - budget} "
    ):
        env = make_env(lm, tokenizer, prompts=["the cat sat", long_prompt], truncation=side)
    kept = ids[-budget:] if side == "left" else ids[:budget]
    assert env.prompts == ["the cat sat", tokenizer.decode(kept)]
    assert env.config.max_prompt_tokens == budget and env.observation_space["input_ids"].shape == (96,)
    assert env.prompts[1].endswith("TL;DR:") == (side == "left")
    for seed in range(4):  # both prompts get drawn
        obs, info = env.reset(seed=seed)
        prompt_ids = obs["input_ids"][obs["attention_mask"] == 1]
        assert prompt_ids.tolist() == (
            kept if info["prompt"] == env.prompts[1] else tokenizer("the cat sat")["input_ids"]
        )
    with pytest.warns(UserWarning, match="cut 1 of 2 prompts to 20 tokens"):
        assert make_env(
            lm, tokenizer, prompts=["the cat sat", long_prompt], truncation=side, max_prompt_tokens=20
        )


def test_tldr_prompts_run_on_the_embedded_model_with_left_truncation():
    """Issue 12: a TL;DR prompt (~110–200 tokens) does not fit the embedded model's context with 48 new
    tokens; truncation='left' keeps each post's end and its ``TL;DR:``."""
    posts = [json.loads(line) for line in (DATA / "tldr_posts.jsonl").read_text().splitlines()]
    # Posts as long as real ones: each post's text five times over.
    prompts = [
        format_tldr_prompt(post["subreddit"], post["title"], (post["post"] + " ") * 5) for post in posts
    ]
    with pytest.raises(ValueError, match="truncation"):
        gym.make("rlhf_envs/TokenEnv-v0", prompts=prompts, max_new_tokens=48, device="cpu")
    with pytest.warns(UserWarning, match="truncation='left' cut"):
        env = gym.make(
            "rlhf_envs/TokenEnv-v0", prompts=prompts, max_new_tokens=48, truncation="left", device="cpu"
        )
    context = env.unwrapped.reference_model.config.n_positions
    assert env.observation_space["input_ids"].shape == (context,)
    assert all(prompt.endswith("TL;DR:") for prompt in env.unwrapped.prompts)
    env.reset(seed=0)
    for _ in range(48):
        *_, terminated, truncated, info = env.step(env.action_space.sample())
        if terminated or truncated:
            break
    assert info["prompt"].endswith("TL;DR:") and "score" in info


@pytest.mark.parametrize(
    ("reward_model", "message"),
    [
        (lambda prompts, completions: torch.full((len(completions),), float("nan")), "non-finite"),
        (lambda prompts, completions: torch.zeros(len(completions), 1), "shape"),
        (lambda prompts, completions: [0.0] * len(completions), "torch.Tensor"),
    ],
)
def test_bad_reward_model_output_is_refused(lm, tokenizer, reward_model, message):
    env = make_env(lm, tokenizer, reward_model=reward_model, max_new_tokens=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=message):
        env.step(5)


def test_action_outside_the_vocabulary_is_refused(lm, tokenizer):
    env = make_env(lm, tokenizer)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        env.step(env.action_space.n)
    vector = TokenVectorEnv(
        2,
        model=lm,
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=length_reward,
        device="cpu",
        as_tensors=True,
    )
    vector.reset(seed=0)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vector.step(torch.tensor([3, -1]))
    with pytest.raises(ValueError, match="integer"):
        vector.step(np.array([1.5, 2.0]))


def _token_run(env, actions):
    """Every output of stepping ``env`` through ``actions``, then of one unseeded reset."""
    outputs = [env.step(action) for action in actions]
    return outputs, env.reset()


def _assert_same(left, right):
    if isinstance(left, dict):
        assert left.keys() == right.keys()
        for key in left:
            _assert_same(left[key], right[key])
    elif isinstance(left, tuple | list) or (isinstance(left, np.ndarray) and left.dtype == object):
        assert len(left) == len(right)
        for a, b in zip(left, right, strict=True):
            _assert_same(a, b)
    else:
        np.testing.assert_array_equal(left, right)


def test_vector_state_dict_resumes_exactly_with_its_kv_cache(lm, tokenizer):
    def make(seed):
        env = TokenVectorEnv(
            3, model=lm, tokenizer=tokenizer, prompts=PROMPTS, reward_model=length_reward, max_new_tokens=5
        )
        env.reset(seed=seed)
        return env

    rng = np.random.default_rng(0)
    actions = rng.integers(1, 60, (40, 3))
    actions[rng.random((40, 3)) < 0.2] = tokenizer.eos_token_id  # rows end and restart at different steps
    env = make(seed=5)
    for action in actions[:9]:  # mid-episode: the cache holds prompts and continuations
        env.step(action)
    saved = pickle.loads(pickle.dumps(env.state_dict()))
    straight = _token_run(env, actions[9:])
    resumed = make(seed=6)
    resumed.load_state_dict(saved)
    _assert_same(straight, _token_run(resumed, actions[9:]))


def test_single_env_state_dict_resumes_exactly(lm, tokenizer):
    env = make_env(lm, tokenizer, max_new_tokens=6)
    env.reset(seed=2)
    env.step(7)
    env.step(8)
    saved = env.state_dict()
    straight = _token_run(env, [9, 10, 11, 12])
    other = make_env(lm, tokenizer, max_new_tokens=6)
    other.reset(seed=3)
    other.load_state_dict(saved)
    _assert_same(straight, _token_run(other, [9, 10, 11, 12]))
    with pytest.raises(ValueError, match="num_envs"):
        TokenVectorEnv(2, env.config).load_state_dict(saved)


def test_to_vector_shares_the_parts_and_leaves_the_callers_env(lm, tokenizer):
    env, twin = make_env(lm, tokenizer), make_env(lm, tokenizer)
    env.reset(seed=0)
    twin.reset(seed=0)
    vector = env.to_vector(4)
    assert vector.num_envs == 4 and vector.as_tensors
    assert vector.reference_model is env.reference_model is lm and vector.tokenizer is env.tokenizer
    assert vector.reward_model is env.reward_model and vector.prompts == env.prompts
    obs, _ = vector.reset(seed=0)
    assert obs["input_ids"].shape == (4, env.config.max_prompt_tokens + 6)
    for action in [5, 6, 7]:  # the caller's episode goes on as if nothing happened
        _assert_same(env.step(action), twin.step(action))

    numpy_vector = TokenVectorEnv(2, env.config)
    tensors = numpy_vector.to_vector()
    assert tensors is not numpy_vector and tensors.num_envs == 2
    assert tensors.as_tensors and not numpy_vector.as_tensors
    with pytest.raises(ValueError, match="device"):
        numpy_vector.to_vector(device="meta")


def test_one_config_for_both_faces_and_gym_make_keywords(lm, tokenizer):
    parts = dict(model=lm, tokenizer=tokenizer, prompts=PROMPTS, reward_model=length_reward, device="cpu")
    env = gym.make("rlhf_envs/TokenEnv-v0", max_new_tokens=3, kl_coef=0.25, **parts)
    assert env.get_wrapper_attr("config").max_new_tokens == 3
    assert env.get_wrapper_attr("kl_coef") == 0.25
    assert env.get_wrapper_attr("gamma") == 1.0
    config = TokenEnvConfig(max_new_tokens=4, **parts)
    assert TokenEnv(config, max_new_tokens=2).config.max_new_tokens == 2  # a keyword replaces the field
    vector = TokenVectorEnv(2, config)
    assert vector.config.max_new_tokens == 4 and vector.gamma == 1.0
    with pytest.raises(TypeError, match="TokenEnvConfig"):
        TokenEnv(lm)
    with pytest.raises(ValueError, match="max_new_tokens"):
        TokenEnvConfig(max_new_tokens=0)


def test_a_half_precision_checkpoint_loads_in_float32(lm, tokenizer, tmp_path):
    """transformers 5 keeps a checkpoint's dtype; a policy copied from a bf16 reference would train in
    bf16. A model given by path loads in float32; a loaded model keeps its own dtype."""
    lm.to(torch.bfloat16).save_pretrained(tmp_path)
    lm.float()
    tokenizer.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["dtype"] == "bfloat16"
    env = make_env(str(tmp_path), tokenizer)
    assert env.reference_model.dtype == torch.float32
    half = tiny_lm(tokenizer).to(torch.bfloat16)
    assert make_env(half, tokenizer).reference_model.dtype == torch.bfloat16


def test_pickled_and_deep_copied_envs_step_bit_identically():
    """Weights mapped from a safetensors file at an unaligned offset took another CPU kernel path than
    the (aligned) copy: the copies' rewards and log-probs differed in the last bits."""
    env = gym.make("rlhf_envs/TokenEnv-v0", max_new_tokens=8, device="cpu").unwrapped
    assert all(weight.data_ptr() % 64 == 0 for weight in env.reference_model.parameters())

    def run(env) -> list:
        env.reset(seed=0)
        return [env.step(action) for action in range(5, 13)]

    expected = run(env)
    _assert_same(run(pickle.loads(pickle.dumps(env))), expected)
    _assert_same(run(copy.deepcopy(env)), expected)


def test_metadata_declares_render_fps_and_the_autoreset_mode(lm, tokenizer):
    env = gym.make("rlhf_envs/TokenEnv-v0", render_mode="ansi", **options(lm, tokenizer))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the passive checker warns when render_fps is missing
        env.reset(seed=0)
        assert isinstance(env.render(), str)
    vector = TokenVectorEnv(2, **options(lm, tokenizer), autoreset_mode="disabled")
    assert vector.metadata["autoreset_mode"] == AutoresetMode.DISABLED and "render_fps" in vector.metadata
    assert TokenVectorEnv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP  # Gymnasium's default
    with pytest.raises(ValueError, match="autoreset_mode"):
        TokenVectorEnv(2, **options(lm, tokenizer), autoreset_mode="sometimes")


@pytest.mark.slow  # ~45 s: each spawned process imports torch and loads the embedded models
def test_async_vector_env_runs_token_envs_with_spawn():
    """AsyncVectorEnv's default fork context can deadlock in reset() once the parent has used torch's
    thread pool (the children inherit its locks); the TokenEnv docstring says to use spawn."""
    torch.ones(64, 64) @ torch.ones(64, 64)  # the parent has used torch
    envs = gym.make_vec(
        "rlhf_envs/TokenEnv-v0",
        num_envs=2,
        vectorization_mode="async",
        vector_kwargs={"context": "spawn"},
        max_new_tokens=3,
        device="cpu",
    )
    try:
        obs, _ = envs.reset(seed=0)
        for _ in range(3):
            obs, rewards, terminated, truncated, info = envs.step(np.array([5, 6]))
        assert truncated.all() and obs["input_ids"].shape[0] == 2
    finally:
        envs.close()
