"""A GPT-2-small-size language model for the token benchmarks, built from a config: no download.

GPT-2 small's shape (12 layers × 768, 12 heads; 92M parameters with the embedded tokenizer's
vocabulary of 8,192 tokens, 124M with GPT-2's 50,257) and random weights (seed 0): speed and memory
depend on the shape, not on what the weights learned. The context is 256 tokens, which the
benchmarks' prompts and continuations fit in.
"""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedModel, PreTrainedTokenizerBase

from rlhf_envs.lm.loading import load_causal_lm


def random_gpt2_small(
    device: str | torch.device = "auto",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)``: the model in eval mode on ``device``, with the embedded LM's tokenizer."""
    _, tokenizer = load_causal_lm("embedded", device="cpu")
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_layer=12,
        n_embd=768,
        n_head=12,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return load_causal_lm(GPT2LMHeadModel(config), tokenizer, device=device)
