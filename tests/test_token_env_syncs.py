"""Issue 18, finding 9: the TokenEnv's host syncs per step, counted with fake CUDA on the CPU and on a GPU.

The budget (``TokenCore.step``'s docstring): a step of the tensor face that ends no episode makes ONE
blocking host sync, the copy of the actions to the host (range check, EOS, texts), in
``TokenCore.actions_to_host``. The single ``TokenEnv`` uploads its action and downloads one stack of
numbers. A step that ends episodes also pays the reward model's own transfers and the restart's
upload of the new prompts.
"""

from __future__ import annotations

import inspect
import re

import numpy as np
import pytest
import torch
from tiny_lm import length_reward, tiny_lm

from agents import TokenPPO
from rlhf_envs.envs.token import TokenCore, TokenEnv, TokenVectorEnv

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning"]
_lines, _first = inspect.getsourcelines(TokenCore.actions_to_host)
DOCUMENTED_SYNC_LINES = range(_first, _first + len(_lines))


def is_the_documented_sync(sync: str) -> bool:
    """Whether a sync the harness recorded ("what at file:line") is the one in ``actions_to_host``."""
    file, line = sync.rsplit(" at ", 1)[1].rsplit(":", 1)
    return file == "token.py" and int(line) in DOCUMENTED_SYNC_LINES


def options(tokenizer, **kwargs) -> dict:
    # A fresh model per env: the harness moves its weights to "cuda".
    model = tiny_lm(tokenizer)
    return {
        "model": model,
        "tokenizer": tokenizer,
        "prompts": PROMPTS,
        "reward_model": length_reward,
    } | kwargs


@pytest.mark.parametrize("scoring", ["per_step", "episode_end"])
def test_a_tensor_step_that_ends_no_episode_makes_one_sync(tokenizer, fake_cuda, scoring):
    """Before: four (the flags; transformers' ``padding_mask.all()`` on the 2-D mask; uploads of the
    terminated and truncated flags computed on the host)."""
    env = TokenVectorEnv(
        3, **options(tokenizer, max_new_tokens=6, reference_scoring=scoring), as_tensors=True
    )
    env.reset(seed=0)
    actions = torch.full((3,), 7, device="cuda")
    for _ in range(5):  # the sixth step would end every episode
        before = len(fake_cuda.syncs)
        _, reward, terminated, truncated, info = env.step(actions)
        syncs = fake_cuda.syncs[before:]
        assert len(syncs) == 1 and is_the_documented_sync(syncs[0]), syncs
        assert reward.device == terminated.device == truncated.device
        assert scoring == "episode_end" or info["ref_logprob"].device == reward.device


@pytest.mark.parametrize(("scoring", "syncs"), [("per_step", 2), ("episode_end", 1)])
def test_the_single_env_uploads_the_action_and_downloads_at_most_once(tokenizer, fake_cuda, scoring, syncs):
    """Before: about six (the flags, two uploads, four downloads of reward, log-prob and observation).
    Now the action's upload and, with per-step scoring, one download of reward and log-prob."""
    env = TokenEnv(**options(tokenizer, max_new_tokens=6, reference_scoring=scoring))
    env.reset(seed=0)
    for _ in range(5):
        before = len(fake_cuda.syncs)
        obs, *_ = env.step(7)
        assert len(fake_cuda.syncs) - before == syncs, fake_cuda.syncs[before:]
        assert obs["input_ids"][-1] == 7


def test_token_ppo_reads_deferred_reference_log_probs_without_a_sync_per_step(tokenizer, fake_cuda):
    """Issue 15: PPO's KL penalty under deferred scoring (the default with kl_coef=0) keeps the episodes'
    ref_logprobs on the device and their lengths on the host until the rollout's end, which uploads the
    lengths once and scores the running episodes in one pass: a rollout of 4 steps and one of 16 make
    the same syncs in the PPO loop and the KL penalty (none per step)."""
    counts = []
    for n_steps in (4, 16):
        env = TokenVectorEnv(4, **options(tokenizer, max_new_tokens=6, stop_at_eos=False, device="auto"))
        assert not env.core.per_step_reference
        agent = TokenPPO(env, device="auto", num_envs=4, n_steps=n_steps, batch_size=4 * n_steps, n_epochs=1)
        before = len(fake_cuda.syncs)
        agent.learn(4 * n_steps, progress_bar=False)
        syncs = [sync for sync in fake_cuda.syncs[before:] if re.search(r" at (ppo|kl_control)\.py:", sync)]
        counts.append(len(syncs))
        assert agent.kl_penalty.history[0].kl == pytest.approx(0.0, abs=1e-5)  # π = π_pt: aligned
    assert counts[0] == counts[1], counts


def test_the_single_envs_host_observation_is_the_cores(tokenizer):
    """The single env builds its observation on the host from the action; it must equal the core's window."""
    env = TokenEnv(**options(tokenizer, max_new_tokens=5, device="cpu"))
    for seed in range(2):
        env.reset(seed=seed)
        for action in (7, 8, 9, 10, 11):
            obs, *_ = env.step(action)
            window = env.core.observe(env._state)
            for key in obs:
                np.testing.assert_array_equal(obs[key], window[key][0].numpy())


@pytest.mark.gpu
@pytest.mark.parametrize("scoring", ["per_step", "episode_end"])
def test_on_a_gpu_a_tensor_step_syncs_only_where_documented(tokenizer, monkeypatch, scoring):
    """``torch.cuda.set_sync_debug_mode("error")`` around steps that end no episode; the one
    documented sync (``actions_to_host``) is allowed."""
    allowed = TokenCore.actions_to_host

    def documented_sync(self, action):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return allowed(self, action)
        finally:
            torch.cuda.set_sync_debug_mode("error")

    monkeypatch.setattr(TokenCore, "actions_to_host", documented_sync)
    env = TokenVectorEnv(
        4, **options(tokenizer, max_new_tokens=8, reference_scoring=scoring, device="cuda"), as_tensors=True
    )
    env.reset(seed=0)
    actions = torch.full((4,), 7, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(7):
            env.step(actions)
    finally:
        torch.cuda.set_sync_debug_mode(0)
