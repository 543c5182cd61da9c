"""Token PPO with LoRA adapters (issue 15 item 2): one copy of the LM, the reference is the policy
with its adapters disabled, and saving writes the adapters and a merged Hugging Face folder."""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from tiny_lm import tiny_lm
from transformers import AutoModelForCausalLM

from agents import TokenPPO
from rlhf_envs.envs.token import TokenVectorEnv

PROMPTS = ["the cat sat", "a good day makes", "love and joy", "in the beginning"]
OPTIONS = {"device": "cpu", "n_steps": 6, "batch_size": 48, "learning_rate": 1e-2, "lora_rank": 4}


def low_ids_reward(tokenizer):
    def reward(prompts: list[str], completions: list[str]) -> torch.Tensor:
        ids = tokenizer(completions)["input_ids"]
        return torch.tensor([sum(i < 30 for i in row) / max(len(row), 1) for row in ids], dtype=torch.float)

    return reward


def make_env(tokenizer):
    return TokenVectorEnv(
        8,
        model=tiny_lm(tokenizer),
        tokenizer=tokenizer,
        prompts=PROMPTS,
        reward_model=low_ids_reward(tokenizer),
        max_new_tokens=6,
        stop_at_eos=False,
        device="cpu",
    )


def logits(model, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=tokens).logits


def test_lora_policy_shares_the_reference_weights_and_disabled_equals_it(tokenizer):
    env = make_env(tokenizer)
    reference = env.reference_model
    before = {name: tensor.clone() for name, tensor in reference.state_dict().items()}
    agent = TokenPPO(env, **OPTIONS).learn(6 * 8 * 3, progress_bar=False)
    policy = agent.policy
    # One copy: every weight of the reference is a tensor of the policy; only adapters and the value
    # head are trained.
    policy_tensors = {id(tensor) for tensor in policy.parameters()}
    assert all(id(tensor) in policy_tensors for tensor in reference.parameters())
    trained = [name for name, tensor in policy.named_parameters() if tensor.requires_grad]
    assert trained and all("lora_" in name or name.startswith("value_head") for name in trained)
    for name, tensor in reference.state_dict().items():  # the reference did not move
        assert torch.equal(tensor, before[name]), name

    tokens = torch.tensor([[5, 6, 7, 8, 9], [10, 11, 12, 13, 14]])
    with policy.model.disable_adapter():
        torch.testing.assert_close(logits(policy.model, tokens), logits(reference, tokens), rtol=0, atol=0)
    assert not torch.allclose(logits(policy.model, tokens), logits(reference, tokens), atol=1e-3)
    assert agent.kl_penalty.history[0].kl == pytest.approx(0.0, abs=1e-5)  # π = π_pt at the start


def test_lora_policy_saves_adapters_and_a_merged_model_and_resumes(tokenizer, tmp_path):
    agent = TokenPPO(make_env(tokenizer), **OPTIONS).learn(6 * 8 * 2, progress_bar=False)
    agent.save_pretrained(tmp_path / "policy")
    tokens = torch.tensor([[5, 6, 7, 8, 9]])
    expected = logits(agent.policy.model, tokens)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "policy")
    torch.testing.assert_close(logits(merged, tokens), expected, rtol=0, atol=1e-5)
    adapted = PeftModel.from_pretrained(tiny_lm(tokenizer), tmp_path / "policy" / "adapter")
    torch.testing.assert_close(logits(adapted, tokens), expected, rtol=0, atol=1e-5)

    agent.save(tmp_path / "checkpoint.pt")
    resumed = TokenPPO.load(tmp_path / "checkpoint.pt", env=make_env(tokenizer), device="cpu")
    assert resumed.config.lora_rank == 4
    torch.testing.assert_close(logits(resumed.policy.model, tokens), expected, rtol=0, atol=0)
    resumed.learn(6 * 8, progress_bar=False, reset_num_timesteps=False)


def test_lora_rank_must_be_positive(tokenizer):
    with pytest.raises(ValueError, match="lora_rank"):
        TokenPPO(make_env(tokenizer), **{**OPTIONS, "lora_rank": 0})
