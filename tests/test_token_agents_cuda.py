"""The token agents on CUDA, checked on the CPU with the fake-CUDA harness (``tests/fake_cuda.py``).

Issue 18: finding 1 (``cuda`` vs ``cuda:0``), TokenQLearning's value head left on the CPU, the token
policy's per-step host sync and its KV cache, and finding 7 (half-precision models are trained with
float32 weights). Each agent runs one rollout + update with ``device="auto"``, CUDA under the harness.
"""

from __future__ import annotations

import pytest
import torch
from fake_cuda import is_fake_cuda
from tiny_lm import length_reward, tiny_lm, tiny_reward_model

from agents import TokenPPO, TokenQLearning
from rlhf_envs.envs.token import TokenEnv, TokenVectorEnv
from rlhf_envs.lm.reward_model import HFRewardModel

PROMPTS = ["the cat sat", "a good day", "love and joy", "in the beginning"]
SMALL_PPO = {"num_envs": 4, "n_steps": 4, "batch_size": 8, "n_epochs": 1}
SMALL_Q = {"num_envs": 4, "n_steps": 4, "batch_envs": 2, "gradient_steps": 1}


def token_env(tokenizer, face=TokenVectorEnv, model=None, **fields):
    fields = {"max_new_tokens": 4, "device": "auto", "reward_model": length_reward, **fields}
    model = tiny_lm(tokenizer) if model is None else model  # fresh: the harness moves it to "cuda"
    args = (4,) if face is TokenVectorEnv else ()
    return face(*args, model=model, tokenizer=tokenizer, prompts=PROMPTS, **fields)


def on_cuda(module: torch.nn.Module) -> bool:
    return all(is_fake_cuda(tensor) for tensor in [*module.parameters(), *module.buffers()])


@pytest.mark.parametrize("face", [TokenVectorEnv, TokenEnv])
def test_token_ppo_runs_on_cuda(tokenizer, face, fake_cuda):
    """Finding 1: the agent's ``cuda`` and the model's ``cuda:0`` are one device."""
    agent = TokenPPO(token_env(tokenizer, face), device="auto", **SMALL_PPO).learn(16, progress_bar=False)
    assert agent.num_timesteps == 16 and on_cuda(agent.policy)


def test_token_ppo_with_the_reward_model_as_critic_runs_on_cuda(tokenizer, fake_cuda):
    """r_φ reads every step's window on the device, and its scores become the critic's values there."""
    reward_model = HFRewardModel(tiny_reward_model(tokenizer), tokenizer, device="auto")
    env = token_env(tokenizer, reward_model=reward_model)
    agent = TokenPPO(env, device="auto", critic="reward_model", **SMALL_PPO).learn(16, progress_bar=False)
    assert agent.num_timesteps == 16 and on_cuda(agent.policy) and on_cuda(reward_model.model)
    assert is_fake_cuda(agent.buffer.values) and is_fake_cuda(agent.buffer.advantages)


def test_token_q_learning_runs_on_cuda(tokenizer, fake_cuda):
    """The Q-head's value head moves to the device with the LM (it stayed on the CPU)."""
    env = token_env(tokenizer, kl_coef=0.1)
    agent = TokenQLearning(env, device="auto", **SMALL_Q).learn(16, progress_bar=False)
    assert agent.num_timesteps == 16 and on_cuda(agent.q_net) and on_cuda(agent.target_net)


def test_sampling_adds_no_host_sync_to_a_step(tokenizer, fake_cuda):
    """A decoding step of the policy makes no host sync: it reads which episodes restarted from the env's
    host flags, and hands transformers a prepared mask. A step after restarts may upload their rows (and
    prefills them, where transformers checks the prompts' padding, as the env's prefill does)."""
    agent = TokenPPO(token_env(tokenizer, stop_at_eos=False), device="auto", **SMALL_PPO)
    obs, _ = agent.env.reset(seed=0)
    for step in range(10):  # episodes of 4 tokens: restarts at steps 4 and 8
        before = len(fake_cuda.syncs)
        action, _, _ = agent.policy.act(obs)
        syncs = fake_cuda.syncs[before:]
        own = [sync for sync in syncs if " at token_policy.py:" in sync]
        if step in (0, 4, 8):  # the first prefill, then restarts: at most the restarted rows' upload
            assert len(own) <= 1 and all("host-to-device" in sync for sync in own), own
        else:
            assert syncs == [], syncs
        obs, *_ = agent.env.step(action)


@pytest.mark.parametrize("agent_class", [TokenPPO, TokenQLearning])
def test_a_half_precision_model_is_trained_with_float32_weights(tokenizer, agent_class):
    """Finding 7 (CPU): a bf16 model (``from_pretrained(dtype="auto")`` of a bf16 hub model) is fine-tuned
    with float32 weights: Adam's steps at lr 1e-5 would round away in bf16."""
    model = tiny_lm(tokenizer).to(torch.bfloat16)
    kl_coef = 0.0 if agent_class is TokenPPO else 0.1  # soft Q-learning's temperature is the env's
    env = token_env(tokenizer, model=model, kl_coef=kl_coef, device="cpu")
    small = SMALL_PPO if agent_class is TokenPPO else SMALL_Q
    agent = agent_class(env, device="cpu", **small).learn(16, progress_bar=False)
    dtypes = {param.dtype for group in agent.optimizer.param_groups for param in group["params"]}
    assert dtypes == {torch.float32}
    assert env.reference_model.dtype == torch.bfloat16  # the env's reference is left as it is
